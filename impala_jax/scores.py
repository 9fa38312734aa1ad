"""Reference scores, human-normalised scores and suite aggregates (pure).

Tables (CSV files in ``impala_jax/data``, each naming its source in its
header comment):

* ``human_random_scores('atari57')``: random and human scores of the 57
  Atari games (DQN Zoo's ``atari_data.py``), keyed by envpool id
  (``'Alien-v5'``).
* ``human_random_scores('dmlab30')``: random and human scores of the 30
  DMLab-30 levels (scalable_agent's ``dmlab30.py``), keyed by the level an
  agent trains on (``'rooms_collect_good_objects_train'``; its score is
  compared with the reference of the test level, as scalable_agent does).
* ``paper_scores(suite, variant)``: the IMPALA paper's reported final score
  per game / level (``None`` where the table has no verified number).

Normalised scores are fractions: 0 is random, 1 is human (``format_percent``
shows them as percentages). DMLab-30 uses the capped variant
``min(normalised, 1)`` per level, as scalable_agent's
``compute_human_normalized_score(level_returns, per_level_cap=100)``.

Aggregates are computed by ``rliable`` (Agarwal et al. 2021, "Deep RL at
the Edge of the Statistical Precipice") on a ``[runs, games]`` array of
normalised scores: median and mean over games of the per-game mean over
runs, IQM (the mean of the middle 50% of all ``runs x games`` scores) and
the optimality gap; confidence intervals are rliable's stratified bootstrap
(runs resampled with replacement within each game), percentile intervals.
``performance_profile`` and ``probability_of_improvement`` are rliable's
too; this module adds the checks, the tables and the normalisation.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import importlib.resources
import io
import math
import warnings
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from impala_jax import config as config_lib
SUITES = ('atari57', 'dmlab30')
DMLAB_PREFIX = config_lib.DMLAB_PREFIX
# The paper's variant shown by default.
DEFAULT_VARIANT = {'atari57': 'impala_deep', 'dmlab30': 'impala'}
PAPER_VARIANTS = {
    'atari57': ('impala_shallow', 'impala_deep', 'impala_deep_multitask'),
    'dmlab30': ('impala',),
}
# The Atari protocol behind each published source we compare with (names as
# ``impala_jax.config.ATARI_PROTOCOLS``). The IMPALA paper's Atari-57 table
# (its 191.8% median for the deep agent) is paper-protocol; Cleanba's and
# most post-2018 papers' IMPALA/PPO figures are Machado-protocol (sticky
# actions), which scores lower on many games: compare like with like.
PUBLISHED_PROTOCOLS = {
    'impala_paper': 'paper (up to 30 no-op starts, no sticky actions, '
                    'minimal action set)',
    'cleanba': 'machado (sticky actions 0.25, full action set, no no-op '
               'starts)',
}
_FILES = {
    ('atari57', 'reference'): 'atari57_human_random.csv',
    ('atari57', 'paper'): 'atari57_impala_paper.csv',
    ('dmlab30', 'reference'): 'dmlab30_human_random.csv',
    ('dmlab30', 'paper'): 'dmlab30_impala_paper.csv',
}


@dataclasses.dataclass(frozen=True)
class Reference:
  """The random and human score of one game or level."""
  random: float
  human: float


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate with its confidence interval ``[low, high]``."""
  point: float
  low: float
  high: float


# ----------------------------------------------------------------- tables


def _check_suite(suite: str) -> str:
  if suite not in SUITES:
    raise ValueError(f'unknown suite {suite!r}; choose one of '
                     f'{", ".join(SUITES)}.')
  return suite


def read_table(name: str) -> Tuple[list, list]:
  """(header, rows) of ``impala_jax/data/<name>``; ``#`` lines skipped."""
  text = (importlib.resources.files('impala_jax') / 'data' /
          name).read_text(encoding='utf-8')
  lines = [line for line in text.splitlines()
           if line.strip() and not line.startswith('#')]
  rows = list(csv.reader(io.StringIO('\n'.join(lines))))
  return rows[0], rows[1:]


def source_of(name: str) -> str:
  """The header comment of a data file (its source), one string."""
  text = (importlib.resources.files('impala_jax') / 'data' /
          name).read_text(encoding='utf-8')
  return ' '.join(line[1:].strip() for line in text.splitlines()
                  if line.startswith('#'))


def _key_column(suite: str) -> str:
  return 'env_id' if suite == 'atari57' else 'level'


@functools.lru_cache(maxsize=None)
def _reference_table(suite: str) -> Dict[str, Reference]:
  header, rows = read_table(_FILES[(suite, 'reference')])
  key = header.index(_key_column(suite))
  random, human = header.index('random'), header.index('human')
  return {row[key]: Reference(float(row[random]), float(row[human]))
          for row in rows}


def human_random_scores(suite: str) -> Dict[str, Reference]:
  """``{game: Reference(random, human)}`` for ``'atari57'`` (keys: envpool
  ids, ``'Pong-v5'``) or ``'dmlab30'`` (keys: training level names)."""
  return dict(_reference_table(_check_suite(suite)))


def games(suite: str) -> Tuple[str, ...]:
  """The suite's games / levels in table order (Atari: alphabetical by
  DQN Zoo name; DMLab-30: scalable_agent's ``LEVEL_MAPPING`` order)."""
  return tuple(_reference_table(_check_suite(suite)))


@functools.lru_cache(maxsize=None)
def _paper_table(suite: str) -> Dict[str, Dict[str, Optional[float]]]:
  header, rows = read_table(_FILES[(suite, 'paper')])
  key = header.index(_key_column(suite))
  table = {}
  for variant in PAPER_VARIANTS[suite]:
    column = header.index(variant)
    table[variant] = {row[key]: (float(row[column]) if row[column].strip()
                                 else None) for row in rows}
  return table


def paper_scores(suite: str, variant: Optional[str] = None
                 ) -> Dict[str, Optional[float]]:
  """The IMPALA paper's final score per game / level (``None``: not
  available). ``variant``: Atari ``impala_shallow``, ``impala_deep``
  (default) or ``impala_deep_multitask``; DMLab-30 ``impala``."""
  _check_suite(suite)
  variant = variant or DEFAULT_VARIANT[suite]
  if variant not in PAPER_VARIANTS[suite]:
    raise ValueError(f'unknown paper variant {variant!r} for {suite}; choose '
                     f'one of {", ".join(PAPER_VARIANTS[suite])}.')
  return dict(_paper_table(suite)[variant])


def canonical_game(name: str) -> Tuple[Optional[str], str]:
  """(suite or None, table key) of a game name as runs spell it.

  Accepts envpool ids (``'Pong-v5'``), DQN Zoo names (``'pong'``,
  ``'ms_pacman'``), ``'ALE/Pong-v5'``, DMLab levels with or without the
  ``dmlab:`` prefix, and DMLab test-level names. Unknown names come back as
  ``(None, name)``.
  """
  text = name.strip()
  if text.startswith(DMLAB_PREFIX):
    text = text[len(DMLAB_PREFIX):]
  dmlab = _reference_table('dmlab30')
  if text in dmlab:
    return 'dmlab30', text
  header, rows = read_table(_FILES[('dmlab30', 'reference')])
  for row in rows:   # a test-level name -> its training level
    if row[header.index('test_level')] == text:
      return 'dmlab30', row[header.index('level')]
  atari = _reference_table('atari57')
  if text.startswith('ALE/'):
    text = text[4:]
  if text in atari:
    return 'atari57', text
  lowered = text.lower().replace('_', '').replace('-', '')
  for env_id in atari:
    stem = env_id[:-len('-v5')].lower()
    if lowered in (stem, stem + 'v5', stem + 'v4', stem + 'noframeskipv4'):
      return 'atari57', env_id
  return None, name


def reference_for(name: str) -> Optional[Reference]:
  """The random/human reference of any spelling of a game, or None."""
  suite, key = canonical_game(name)
  return None if suite is None else _reference_table(suite)[key]


def paper_score_for(name: str, variant: Optional[str] = None
                    ) -> Optional[float]:
  """The paper's final score of any spelling of a game, or None."""
  suite, key = canonical_game(name)
  if suite is None:
    return None
  return paper_scores(suite, variant if variant in PAPER_VARIANTS[suite]
                      else None).get(key)


# ------------------------------------------------------------ normalising


def human_normalized(score, random, human):
  """``(score - random) / (human - random)``, elementwise (broadcasts; a
  scalar in gives a float out). 0 = random, 1 = human."""
  score = np.asarray(score, dtype=np.float64)
  out = (score - np.asarray(random, np.float64)) / (
      np.asarray(human, np.float64) - np.asarray(random, np.float64))
  return float(out) if np.ndim(out) == 0 else out


def capped_human_normalized(score, random, human, cap: float = 1.0):
  """``min(human_normalized, cap)`` elementwise: DMLab-30's per-level cap
  (scalable_agent: ``per_level_cap=100`` percent, i.e. ``cap=1.0``)."""
  out = np.minimum(human_normalized(score, random, human), cap)
  return float(out) if np.ndim(out) == 0 else out


def normalized_score(name: str, score, capped: Optional[bool] = None):
  """The normalised score of ``score`` on game ``name`` (any spelling).

  ``capped``: None uses the suite's convention (DMLab-30 capped at 1,
  Atari-57 uncapped). Raises ``KeyError`` for a game without references.
  """
  suite, key = canonical_game(name)
  if suite is None:
    raise KeyError(f'no human/random reference scores for {name!r}.')
  ref = _reference_table(suite)[key]
  if capped is None:
    capped = suite == 'dmlab30'
  if capped:
    return capped_human_normalized(score, ref.random, ref.human)
  return human_normalized(score, ref.random, ref.human)


# ------------------------------------------------------------- aggregates


def _as_matrix(scores) -> np.ndarray:
  x = np.asarray(scores, dtype=np.float64)
  if x.ndim == 1:
    x = x[None, :]   # one run per game
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f'scores must be [runs, games] (or [games]), got shape '
                     f'{np.shape(scores)}.')
  if not np.all(np.isfinite(x)):
    raise ValueError('scores must be finite (one value per run and game).')
  return x


def _rliable():
  """rliable's ``library`` and ``metrics`` (imported on first use: it pulls
  in arch and statsmodels, which training never needs)."""
  from rliable import library, metrics  # pylint: disable=g-import-not-at-top
  return library, metrics


@contextlib.contextmanager
def _seeded(seed: int):
  """rliable's stratified bootstrap draws from NumPy's global generator
  (``np.random.choice``) whatever ``random_state`` says: seed it for the
  call and put the caller's state back. arch's deprecation warning for the
  ``random_state`` that rliable passes is silenced."""
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', message='random_state is deprecated',
                              category=FutureWarning)
      yield np.random.RandomState(seed)
  finally:
    np.random.set_state(state)


def aggregate_median(scores) -> float:
  """Median over games of the per-game mean over runs; ``[runs, games]``
  (``rliable.metrics.aggregate_median``)."""
  return float(_rliable()[1].aggregate_median(_as_matrix(scores)))


def aggregate_mean(scores) -> float:
  """Mean over games of the per-game mean over runs; ``[runs, games]``
  (``rliable.metrics.aggregate_mean``)."""
  return float(_rliable()[1].aggregate_mean(_as_matrix(scores)))


def aggregate_iqm(scores) -> float:
  """Interquartile mean over all ``runs x games`` scores: the 25% trimmed
  mean (``rliable.metrics.aggregate_iqm``)."""
  return float(_rliable()[1].aggregate_iqm(_as_matrix(scores)))


def aggregate_optimality_gap(scores, gamma: float = 1.0) -> float:
  """``gamma - mean(min(score, gamma))`` over all ``runs x games`` scores:
  how far below human level (``gamma = 1``) the runs fall on average
  (``rliable.metrics.aggregate_optimality_gap``); lower is better."""
  return float(_rliable()[1].aggregate_optimality_gap(_as_matrix(scores),
                                                        gamma))


AGGREGATES: Dict[str, Callable[[np.ndarray], float]] = {
    'median': aggregate_median,
    'iqm': aggregate_iqm,
    'mean': aggregate_mean,
    'optimality_gap': aggregate_optimality_gap,
}


def _check_names(names: Sequence[str]) -> Tuple[str, ...]:
  for name in names:
    if name not in AGGREGATES:
      raise ValueError(f'unknown aggregate {name!r}; choose one of '
                       f'{", ".join(AGGREGATES)}.')
  return tuple(names)


def _check_confidence(confidence: float):
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}.')


def _check_reps(reps: int):
  if reps < 1:
    raise ValueError(f'reps must be >= 1, got {reps}.')


def aggregates_with_ci(scores, *, reps: int = 2000, confidence: float = 0.95,
                       seed: int = 0,
                       names: Sequence[str] = ('median', 'iqm', 'mean',
                                               'optimality_gap')
                       ) -> Dict[str, Interval]:
  """``{name: Interval(point, low, high)}`` for each aggregate of
  ``[runs, games]`` normalised scores, with rliable's stratified-bootstrap
  percentile interval of level ``confidence`` (runs resampled within each
  game; ``reps`` replicates; ``seed``). With one run per game every
  replicate equals the data, so the interval collapses to the point."""
  _check_confidence(confidence)
  _check_reps(reps)
  names = _check_names(names)
  x = _as_matrix(scores)
  library, metrics = _rliable()
  functions = [getattr(metrics, f'aggregate_{name}') for name in names]
  def all_aggregates(m):   # [runs, games] -> [len(names)], per replicate
    return np.array([f(m) for f in functions])
  with _seeded(seed) as random_state:
    points, intervals = library.get_interval_estimates(
        {'x': x}, all_aggregates, reps=reps,
        confidence_interval_size=confidence, random_state=random_state)
  low, high = intervals['x']
  return {name: Interval(float(points['x'][i]), float(low[i]),
                         float(high[i]))
          for i, name in enumerate(names)}


def performance_profile(scores_by_label: Mapping[str, np.ndarray],
                        taus: Sequence[float], *, reps: int = 2000,
                        confidence: float = 0.95, seed: int = 0
                        ) -> Dict[str, Tuple[np.ndarray, np.ndarray,
                                             np.ndarray]]:
  """rliable's score-distribution performance profile: for each label's
  ``[runs, games]`` scores, the fraction of all runs x games above each
  threshold ``taus [N]``, with a stratified-bootstrap interval.

  Returns ``{label: (fraction [N], low [N], high [N])}``.
  """
  _check_confidence(confidence)
  _check_reps(reps)
  library, _ = _rliable()
  matrices = {label: _as_matrix(x) for label, x in scores_by_label.items()}
  tau_list = np.asarray(taus, np.float64)
  # rliable's create_performance_profile with its default score
  # distribution, through get_interval_estimates for a seeded bootstrap.
  with _seeded(seed) as random_state:
    profiles, cis = library.get_interval_estimates(
        matrices, lambda m: library.score_distributions(m, tau_list),
        reps=reps, confidence_interval_size=confidence,
        random_state=random_state)
  return {label: (np.asarray(profiles[label], np.float64),
                  np.asarray(cis[label][0], np.float64),
                  np.asarray(cis[label][1], np.float64))
          for label in matrices}


def probability_of_improvement(scores_x, scores_y, *, reps: int = 2000,
                               confidence: float = 0.95, seed: int = 0
                               ) -> Interval:
  """P(X > Y): the probability that a run of X beats a run of Y on a game
  drawn at random (Mann-Whitney U per game, averaged over games), for
  ``[runs_x, games]`` and ``[runs_y, games]`` scores of the same games in the
  same order, with rliable's stratified-bootstrap interval."""
  _check_confidence(confidence)
  _check_reps(reps)
  x, y = _as_matrix(scores_x), _as_matrix(scores_y)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f'both score matrices need the same games, got '
                     f'{x.shape[1]} and {y.shape[1]} columns.')
  library, metrics = _rliable()
  with _seeded(seed) as random_state:
    points, intervals = library.get_interval_estimates(
        {'xy': [x, y]}, metrics.probability_of_improvement, reps=reps,
        confidence_interval_size=confidence, random_state=random_state)
  low, high = np.asarray(intervals['xy']).reshape(-1)[:2]
  return Interval(float(points['xy']), float(low), float(high))


def normalized_matrix(final_scores: Mapping[str, Sequence[float]],
                      capped: Optional[bool] = None
                      ) -> Tuple[Tuple[str, ...], np.ndarray]:
  """(games, ``[runs, games]`` normalised scores) from ``{game: [score per
  run]}``. Games without references are left out; every kept game needs the
  same number of runs (else ``ValueError``)."""
  kept = [(game, values) for game, values in final_scores.items()
          if reference_for(game) is not None]
  if not kept:
    return (), np.zeros((0, 0))
  counts = {len(values) for _, values in kept}
  if len(counts) != 1:
    raise ValueError('every game needs the same number of runs for a '
                     f'[runs, games] matrix, got {sorted(counts)}.')
  matrix = np.stack([np.asarray(normalized_score(game, values, capped),
                                np.float64).reshape(-1)
                     for game, values in kept], axis=1)
  return tuple(game for game, _ in kept), matrix


def format_percent(value: Optional[float]) -> str:
  """A normalised score as a percentage: 1.234 -> '123.4%'."""
  if value is None or not math.isfinite(value):
    return 'n/a'
  return f'{100.0 * value:.1f}%'
