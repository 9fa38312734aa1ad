"""Reference tables, normalised-score arithmetic, suite aggregates with
bootstrap intervals, and the suites' game lists and presets."""

import math

import numpy as np
import pytest

from impala_jax import presets
from impala_jax import scores
from impala_jax import suites


# ------------------------------------------------------------------ tables


def test_atari57_table_complete_and_known_values():
  table = scores.human_random_scores('atari57')
  assert len(table) == 57
  assert table['Alien-v5'] == scores.Reference(random=227.8, human=7127.7)
  assert table['Pong-v5'] == scores.Reference(random=-20.7, human=14.6)
  assert table['MontezumaRevenge-v5'] == scores.Reference(0.0, 4753.3)
  assert table['VideoPinball-v5'] == scores.Reference(16256.9, 17667.9)
  for ref in table.values():
    assert math.isfinite(ref.random) and math.isfinite(ref.human)
    assert ref.human > ref.random


def test_every_atari57_id_exists_in_envpool():
  envpool = pytest.importorskip('envpool')
  known = set(envpool.list_all_envs())
  missing = [g for g in suites.games('atari57') if g not in known]
  assert not missing, missing


def test_dmlab30_table_complete_and_known_values():
  table = scores.human_random_scores('dmlab30')
  assert len(table) == 30
  assert table['rooms_collect_good_objects_train'] == scores.Reference(
      0.073, 10.0)
  assert table['language_execute_random_task'] == scores.Reference(
      -5.913, 254.05)
  assert table['explore_object_rewards_many'] == scores.Reference(
      2.438, 106.7)
  assert all(ref.human > ref.random for ref in table.values())


def test_paper_tables_cover_the_suites():
  for variant in scores.PAPER_VARIANTS['atari57']:
    paper = scores.paper_scores('atari57', variant)
    assert set(paper) == set(scores.games('atari57'))
    assert all(v is not None for v in paper.values()), variant
  deep = scores.paper_scores('atari57')   # default: IMPALA (deep)
  assert deep['Breakout-v5'] == 787.34
  assert deep['Pong-v5'] == 20.98
  assert scores.paper_scores('atari57', 'impala_shallow')['Pong-v5'] == 20.40
  dmlab = scores.paper_scores('dmlab30')
  assert set(dmlab) == set(scores.games('dmlab30'))
  assert dmlab['rooms_watermaze'] == 31.1
  assert all(v is not None for v in dmlab.values())
  assert dmlab['lasertag_three_opponents_small'] == 11.3
  with pytest.raises(ValueError, match='unknown paper variant'):
    scores.paper_scores('dmlab30', 'impala_deep')
  with pytest.raises(ValueError, match='unknown suite'):
    scores.human_random_scores('atari100k')


def test_paper_dmlab30_mean_capped_matches_paper_headline():
  """IMPALA (deep, multi-task): mean capped human-normalised score 49.4%
  on DMLab-30 (paper Table 4). Holds only if each lasertag score sits with
  the human/random pair of the same row of the paper's table."""
  paper = scores.paper_scores('dmlab30')
  levels, matrix = scores.normalized_matrix({g: [v] for g, v in paper.items()})
  assert len(levels) == 30 and matrix.max() <= 1.0        # capped per level
  assert scores.aggregate_mean(matrix) == pytest.approx(0.494, abs=5e-4)
  ref = scores.human_random_scores('dmlab30')
  assert ref['lasertag_three_opponents_small'].human == 31.5   # as printed
  assert ref['lasertag_one_opponent_large'].human == 12.65


def test_paper_deep_median_matches_paper_headline():
  """IMPALA (deep): median human-normalised score 191.8% (paper Table 4)."""
  paper = scores.paper_scores('atari57', 'impala_deep')
  _, matrix = scores.normalized_matrix({g: [v] for g, v in paper.items()})
  assert matrix.shape == (1, 57)
  assert scores.aggregate_median(matrix) == pytest.approx(1.9182, abs=1e-4)


def test_sources_are_named():
  for name in ('atari57_human_random.csv', 'atari57_impala_paper.csv',
               'dmlab30_human_random.csv', 'dmlab30_impala_paper.csv'):
    assert 'Source:' in scores.source_of(name)


def test_canonical_game_spellings():
  assert scores.canonical_game('Pong-v5') == ('atari57', 'Pong-v5')
  assert scores.canonical_game('ms_pacman') == ('atari57', 'MsPacman-v5')
  assert scores.canonical_game('ALE/Pong-v5') == ('atari57', 'Pong-v5')
  assert scores.canonical_game('BreakoutNoFrameskip-v4') == (
      'atari57', 'Breakout-v5')
  assert scores.canonical_game('dmlab:rooms_watermaze') == (
      'dmlab30', 'rooms_watermaze')
  assert scores.canonical_game('rooms_collect_good_objects_test') == (
      'dmlab30', 'rooms_collect_good_objects_train')
  assert scores.canonical_game('CartPole-v1') == (None, 'CartPole-v1')
  assert scores.reference_for('CartPole-v1') is None


# ------------------------------------------------------------- arithmetic


def test_human_normalized_hand_computed():
  # Pong: (0 - -20.7) / (14.6 - -20.7) = 20.7 / 35.3
  assert scores.human_normalized(0.0, -20.7, 14.6) == pytest.approx(
      20.7 / 35.3)
  assert scores.human_normalized(14.6, -20.7, 14.6) == pytest.approx(1.0)
  assert scores.human_normalized(-20.7, -20.7, 14.6) == pytest.approx(0.0)
  out = scores.human_normalized(np.array([10.0, 30.0, 0.0]), 10.0, 20.0)
  np.testing.assert_allclose(out, [0.0, 2.0, -1.0])
  assert scores.normalized_score('Breakout-v5', 30.5) == pytest.approx(1.0)
  assert scores.normalized_score('Breakout-v5', 59.3) == pytest.approx(2.0)


def test_capped_variant_and_suite_convention():
  assert scores.capped_human_normalized(30.0, 10.0, 20.0) == 1.0
  assert scores.capped_human_normalized(15.0, 10.0, 20.0) == 0.5
  # DMLab-30 is capped by default, Atari-57 is not.
  assert scores.normalized_score('rooms_watermaze', 1000.0) == 1.0
  assert scores.normalized_score('rooms_watermaze', 1000.0,
                                 capped=False) > 1.0
  # (29.0325 - 4.065) / (54 - 4.065) = 0.5.
  assert scores.normalized_score('rooms_watermaze', 29.0325) == (
      pytest.approx(0.5))
  assert scores.normalized_score('Pong-v5', 100.0) > 1.0
  with pytest.raises(KeyError):
    scores.normalized_score('CartPole-v1', 1.0)


def test_dmlab_capped_mean_like_scalable_agent():
  """scalable_agent: mean over levels of min(100 * normalised, 100)."""
  table = scores.human_random_scores('dmlab30')
  returns = {level: 2.0 * ref.human if i % 2 else ref.random + 0.25 * (
      ref.human - ref.random) for i, (level, ref) in enumerate(table.items())}
  ours = np.mean([scores.normalized_score(level, r)
                  for level, r in returns.items()])
  assert 100 * ours == pytest.approx((15 * 100 + 15 * 25) / 30)


# ------------------------------------------------------------- aggregates


def test_aggregates_hand_computed():
  # 2 runs x 4 games.
  x = np.array([[0.0, 1.0, 2.0, 10.0],
                [2.0, 3.0, 4.0, 30.0]])
  # Per-game means: 1, 2, 3, 20.
  assert scores.aggregate_median(x) == pytest.approx(2.5)
  assert scores.aggregate_mean(x) == pytest.approx(6.5)
  # IQM over the 8 values: sorted 0 1 2 2 3 4 10 30, drop 2 each end.
  assert scores.aggregate_iqm(x) == pytest.approx((2 + 2 + 3 + 4) / 4)
  # [games] is one run.
  assert scores.aggregate_iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)


def test_iqm_matches_scipy_trim_mean():
  stats = pytest.importorskip('scipy.stats')
  x = np.random.default_rng(3).normal(size=(5, 13))
  assert scores.aggregate_iqm(x) == pytest.approx(
      stats.trim_mean(x, 0.25, axis=None))


def test_bootstrap_ci_known_data():
  # Constant within each game: every resample equals the data.
  x = np.tile(np.array([[0.5, 1.0, 2.0]]), (4, 1))
  cis = scores.aggregates_with_ci(x, reps=200, seed=1)
  for name, expected in (('median', 1.0), ('mean', 3.5 / 3),
                         ('iqm', scores.aggregate_iqm(x)),
                         ('optimality_gap', (0.5 + 0 + 0) / 3)):
    assert cis[name].point == pytest.approx(expected)
    assert cis[name].low == pytest.approx(expected)
    assert cis[name].high == pytest.approx(expected)


def test_bootstrap_ci_covers_and_is_reproducible():
  rng = np.random.default_rng(0)
  x = rng.normal(loc=1.0, scale=0.5, size=(10, 20))
  a = scores.aggregates_with_ci(x, reps=1000, seed=7)
  b = scores.aggregates_with_ci(x, reps=1000, seed=7)
  c = scores.aggregates_with_ci(x, reps=1000, seed=8)
  assert a == b
  assert a['mean'] != c['mean']
  for ci in a.values():
    assert ci.low < ci.point < ci.high
  # Mean: standard error of the mean of 200 N(1, 0.5) draws ~ 0.035, so
  # the 95% interval is ~ +-0.07 wide on each side.
  half = (a['mean'].high - a['mean'].low) / 2
  assert 0.04 < half < 0.1
  assert a['mean'].low < 1.0 < a['mean'].high


def test_bootstrap_resamples_runs_within_games():
  # One game only: every replicate's mean is a mean of that game's runs, so
  # the interval lies inside the runs' range (rliable's stratified bootstrap).
  x = np.array([[1.0], [2.0], [3.0]])
  ci = scores.aggregates_with_ci(x, reps=300, seed=0, names=('mean',))['mean']
  assert ci.point == pytest.approx(2.0)
  assert 1.0 <= ci.low < 2.0 < ci.high <= 3.0


def test_optimality_gap_hand_computed():
  # min(score, 1): 0, 0.5, 1, 1 -> mean 0.625 -> gap 0.375.
  x = np.array([[0.0, 0.5], [1.0, 3.0]])
  assert scores.aggregate_optimality_gap(x) == pytest.approx(0.375)
  assert scores.aggregate_optimality_gap(x, gamma=2.0) == pytest.approx(
      2.0 - (0.0 + 0.5 + 1.0 + 2.0) / 4)


def test_probability_of_improvement_hand_computed():
  # Game 1: x runs {1, 2} vs y runs {0, 3}: 2 of 4 pairs won -> 0.5.
  # Game 2: x always higher -> 1.0. Averaged over games: 0.75.
  x = np.array([[1.0, 5.0], [2.0, 6.0]])
  y = np.array([[0.0, 1.0], [3.0, 2.0]])
  poi = scores.probability_of_improvement(x, y, reps=200, seed=1)
  assert poi.point == pytest.approx(0.75)
  assert poi.low <= 0.75 <= poi.high
  assert poi == scores.probability_of_improvement(x, y, reps=200, seed=1)
  with pytest.raises(ValueError, match='same games'):
    scores.probability_of_improvement(x, y[:, :1])


def test_performance_profile_hand_computed():
  x = np.array([[0.0, 0.5, 1.0, 2.0]])   # one run, four games
  profile = scores.performance_profile({'a': x}, [-1.0, 0.25, 1.0, 5.0],
                                       reps=50)
  fraction, low, high = profile['a']
  # Fraction of runs x games scoring above each threshold.
  np.testing.assert_allclose(fraction, [1.0, 0.75, 0.25, 0.0])
  # One run per game: every replicate equals the data.
  np.testing.assert_allclose(low, fraction)
  np.testing.assert_allclose(high, fraction)


def test_rliable_leaves_global_numpy_state_alone():
  np.random.seed(123)
  want = np.random.random()
  np.random.seed(123)
  scores.aggregates_with_ci(np.random.default_rng(0).normal(size=(3, 4)),
                            reps=20, seed=5)
  assert np.random.random() == want


def test_aggregate_errors():
  with pytest.raises(ValueError, match='finite'):
    scores.aggregate_mean([[1.0, np.nan]])
  with pytest.raises(ValueError, match='shape'):
    scores.aggregate_mean(np.zeros((2, 2, 2)))
  with pytest.raises(ValueError, match='confidence'):
    scores.aggregates_with_ci([[1.0]], confidence=1.5)
  with pytest.raises(ValueError, match='same number of runs'):
    scores.normalized_matrix({'Pong-v5': [1.0], 'Breakout-v5': [1.0, 2.0]})


# ----------------------------------------------------------------- suites


def test_suites_and_presets():
  assert len(suites.games('atari57')) == 57
  assert len(suites.games('dmlab30')) == 30
  assert suites.env_ids('dmlab30')[3] == 'dmlab:rooms_watermaze'
  config = suites.preset('atari57', 'Breakout-v5')
  paper = presets.paper_atari()
  assert config.env == 'Breakout-v5'
  assert (config.unroll_length, config.batch_size, config.learning_rate,
          config.total_frames) == (paper.unroll_length, paper.batch_size,
                                   paper.learning_rate, paper.total_frames)
  config.validate()
  assert suites.atari57_preset('pong', torso='shallow').torso == 'shallow'
  dmlab = suites.preset('dmlab30', 'rooms_watermaze')
  assert dmlab.env == 'dmlab:rooms_watermaze'
  assert (dmlab.unroll_length, dmlab.use_lstm, dmlab.rmsprop_epsilon) == (
      100, True, 0.1)
  dmlab.validate()
  with pytest.raises(ValueError, match='not an Atari-57 game'):
    suites.atari57_preset('CartPole-v1')
  with pytest.raises(ValueError, match='not a DMLab-30 level'):
    suites.dmlab30_preset('Pong-v5')


def test_suite_presets_by_name():
  from impala_jax import presets  # pylint: disable=import-outside-toplevel
  atari = presets.get_preset('atari57:Breakout-v5')
  assert atari.env == 'Breakout-v5' and atari.torso == 'deep'
  dmlab = presets.get_preset('dmlab30:rooms_watermaze')
  assert dmlab.env == 'dmlab:rooms_watermaze' and dmlab.use_lstm
  assert dmlab.unroll_length == 100
  with pytest.raises(ValueError, match='atari57:<game>'):
    presets.get_preset('procgen:coinrun')
