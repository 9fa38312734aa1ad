"""Shipped reference runs: trimming and shipping a run, the published
baselines table, the plot overlay (--reference) and the reproduce program's
flag errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from impala_jax import plotting
from impala_jax import reference_runs
from impala_jax.metrics import read_metrics

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMES = [reference_runs.game_key(g)
         for g in reference_runs.SUITE_ENV_IDS['minatar']]


def write_run(path, n_rows, eval_every=0, final=10.0):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'metrics.csv'), 'w') as f:
    f.write('frames,updates,episode_return,episode_length,wall_time,sps,'
            'eval_return_mean\n')
    for i in range(n_rows):
      ev = f'{i / 10:.3f}' if eval_every and i % eval_every == 0 else ''
      ret = final * (i + 1) / n_rows
      f.write(f'{(i + 1) * 1000},{i},{ret:.6g},100,{i * 0.5},1e5,{ev}\n')
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'config': {'env': 'gymnax:Breakout-MinAtar'}}, f)
  return path


def test_published_table_has_every_game_and_its_target():
  table = reference_runs.published('minatar')
  assert sorted(table) == sorted(GAMES)
  for game, row in table.items():
    best = max(v for v in (row['gymnax_blines_ppo_10m'],
                           row['purejaxrl_ppo_10m_here']) if v is not None)
    assert row['target'] == best, game
  assert table['Breakout-MinAtar']['target_wall_s'] == 164
  assert 'gymnax' in reference_runs.published_source('minatar')


def test_trim_keeps_the_last_row_and_every_evaluation(tmp_path):
  run = write_run(str(tmp_path / 'run'), 2000, eval_every=100)
  rows = read_metrics(os.path.join(run, 'metrics.csv'))
  trimmed = reference_runs.trim_rows(rows, max_rows=300)
  assert len(trimmed) <= 300
  assert trimmed[-1]['frames'] == rows[-1]['frames']
  assert sum(r['eval_return_mean'] != '' for r in trimmed) == 20
  assert 'sps' not in trimmed[0] and 'updates' not in trimmed[0]
  frames = [float(r['frames']) for r in trimmed]
  assert frames == sorted(frames)


def test_ship_run_copies_config_eval_and_a_trimmed_curve(tmp_path):
  run = write_run(str(tmp_path / 'run'), 1000)
  with open(os.path.join(run, 'eval.json'), 'w') as f:
    json.dump({'mean': 12.5, 'num_games': 100}, f)
  dest = reference_runs.ship_run(run, str(tmp_path / 'ship' / 'seed_1'))
  assert sorted(os.listdir(dest)) == ['config.json', 'eval.json',
                                      'metrics.csv']
  assert reference_runs.read_eval(dest)['mean'] == 12.5
  assert len(read_metrics(os.path.join(dest, 'metrics.csv'))) <= 300
  assert reference_runs.read_wall_time(dest) == pytest.approx(999 * 0.5)
  curve = plotting.read_curve(os.path.join(dest, 'metrics.csv'))
  assert curve.returns[-1] == pytest.approx(10.0)


def test_published_table_overlays_a_user_run_on_a_reference_fixture(tmp_path):
  ref = tmp_path / 'ref'
  for seed, final in ((1, 20.0), (2, 30.0)):
    run = write_run(str(ref / 'gymnax_Breakout-MinAtar' / f'seed_{seed}'),
                    50, final=final)
    with open(os.path.join(run, 'eval.json'), 'w') as f:
      json.dump({'mean': final + 1, 'num_games': 100}, f)
  mine = tmp_path / 'mine'
  write_run(str(mine / 'gymnax_Breakout-MinAtar' / 'seed_1'), 50, final=5.0)
  results = {'reference': plotting.load_results(str(ref)),
             'mine': plotting.load_results(str(mine))}
  table = plotting.published_table(results, 'minatar', fraction=0.01,
                                   reference_root=str(ref))
  line = next(l for l in table.splitlines() if l.startswith('| Breakout'))
  cells = [c.strip() for c in line.strip('|').split('|')]
  # reference curve: mean of the two final rows 20 and 30; mine: 5;
  # evaluation: mean of 21 and 31 over 2 runs; then the published numbers.
  assert cells[1:4] == ['25.00', '5.00', '26.00 (2)']
  assert cells[4] == '28.00' and '28.80' in cells
  assert all(f'| {g} |' in table for g in GAMES)


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=_REPO,
                        capture_output=True, text=True, timeout=300)


def test_plot_reference_overlay_program(tmp_path):
  """``--reference=minatar`` draws the shipped runs under a user's tree."""
  if not os.path.isdir(reference_runs.reference_root('minatar')):
    pytest.skip('no shipped MinAtar runs in this checkout')
  mine = tmp_path / 'mine'
  write_run(str(mine / 'gymnax_Breakout-MinAtar' / 'seed_1'), 50)
  out = tmp_path / 'plots'
  done = _run('-m', 'experiments.plot', f'--roots={mine}',
              '--reference=minatar', f'--out={out}', '--paper_variant=none',
              '--bootstrap_reps=10')
  assert done.returncode == 0, done.stderr
  assert (out / 'gymnax_Breakout-MinAtar.png').stat().st_size > 1000
  table = (out / 'final_scores.md').read_text()
  assert 'reference score' in table and 'mine score' in table
  assert 'Published minatar baselines' in table
  for game in GAMES:
    assert f'| {game} |' in table
  # Shipped curves alone (no --roots) work too.
  alone = _run('-m', 'experiments.plot', '--reference=minatar',
               f'--out={tmp_path / "alone"}', '--paper_variant=none',
               '--bootstrap_reps=10')
  assert alone.returncode == 0, alone.stderr


def test_shipped_runs_are_complete_and_small():
  root = reference_runs.reference_root('minatar')
  if not os.path.isdir(root):
    pytest.skip('no shipped MinAtar runs in this checkout')
  for env_id in reference_runs.SUITE_ENV_IDS['minatar']:
    game_dir = reference_runs.game_dir('minatar', env_id)
    assert game_dir == os.path.join(root, env_id.replace(':', '_'))
    runs = sorted(os.listdir(game_dir))
    assert len(runs) >= 3, env_id
    for run in runs:
      path = os.path.join(game_dir, run)
      assert sorted(os.listdir(path)) == ['DONE', 'config.json',
                                          'eval.json', 'metrics.csv'], path
      seconds = reference_runs.read_process_seconds(path)
      assert seconds is not None and seconds > 0, path
      rows = read_metrics(os.path.join(path, 'metrics.csv'))
      assert 10 <= len(rows) <= reference_runs.MAX_ROWS
      assert float(rows[-1]['frames']) >= 10_000_000
      assert reference_runs.read_eval(path)['num_games'] >= 100
      assert os.path.getsize(os.path.join(path, 'metrics.csv')) < 64_000


@pytest.mark.parametrize('flags, message', [
    (['--suite=procgen'], '--suite must be one of'),
    (['--suite=atari', '--games=Asterix-MinAtar'], 'is not in the atari suite'),
    (['--games=Pong-v5'], 'is not in the minatar suite'),
    (['--seeds=a'], '--seeds must be integers'),
    (['--eval_games=0'], '--eval_games must be >= 1'),
    (['--total_frames=0'], '--total_frames must be > 0'),
    (['--train_flag=--seed=3'], 'reproduce sets --seed itself'),
])
def test_reproduce_flag_errors(flags, message, tmp_path):
  # --root in tmp_path: a flag wrongly accepted never trains in runs/.
  done = _run('-m', 'experiments.reproduce', f'--root={tmp_path}', *flags)
  assert done.returncode == 2
  assert message in done.stderr and 'Traceback' not in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1


def test_reproduce_refuses_a_tree_trained_with_other_settings(tmp_path):
  """A results tree from an older preset is never silently resumed."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from impala_jax import presets  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'gymnax_Breakout-MinAtar' / 'seed_1'
  run.mkdir(parents=True)
  config = dataclasses.replace(
      presets.get_preset('minatar', env='gymnax:Breakout-MinAtar'),
      seed=1, entropy_cost=0.05, log_every_seconds=99.0)
  (run / 'config.json').write_text(json.dumps(
      {'config': dataclasses.asdict(config)}))
  done = _run('-m', 'experiments.reproduce', f'--root={tmp_path}',
              '--games=Breakout-MinAtar', '--seeds=1')
  assert done.returncode == 2, done.stdout + done.stderr
  assert 'entropy_cost' in done.stderr and 'new --root' in done.stderr
  assert 'log_every_seconds' not in done.stderr  # not a learning setting
  assert 'Traceback' not in done.stderr


def test_milestones_use_a_trailing_window_of_games():
  rows = [{'frames': str(100 * i), 'wall_time': str(i), 'episodes': str(n),
           'episode_return': str(r)}
          for i, (n, r) in enumerate([(60, -21), (0, 'nan'), (60, -1),
                                      (60, 11), (30, 19), (30, 19),
                                      (50, 19)], 1)]
  got = reference_runs.milestones(rows, (0, 10, 18, 21), window_games=100)
  # Row 3: games 60 x -21 + 60 x -1 (120 >= 100): mean -11. Row 4: the
  # first row drops out (60 + 60 >= 100): (-60 + 660) / 120 = 5. Row 5:
  # (-60 + 660 + 570) / 150 = 7.8. Row 6: (660 + 1140) / 120 = 15 (the -1
  # row dropped as the others hold 120 >= 100). Row 7: 11 x 60 + 19 x 110
  # -> row 4 drops (30+30+50 = 110 >= 100): 19.
  assert got[0]['frames'] == 400 and got[0]['mean'] == pytest.approx(5.0)
  assert got[10]['frames'] == 600 and got[10]['mean'] == pytest.approx(15.0)
  assert got[18] == {'frames': 700, 'wall_time': 7.0, 'mean': 19.0}
  assert got[21] is None
  # Fewer games than the window never count.
  assert reference_runs.milestones(rows[:1], (-30,))[-30] is None


def test_atari_table_reports_score_curve_milestones_and_target(tmp_path):
  run = tmp_path / 'Pong-v5' / 'seed_1'
  run.mkdir(parents=True)
  rows = ['frames,wall_time,episodes,episode_return']
  # 10 rows of 20 games: -21 rising by 4 per row to 15, then 3 x 20 at 19.
  for i in range(10):
    rows.append(f'{(i + 1) * 1_000_000},{(i + 1) * 240},20,{-21 + 4 * i}')
  for i in range(3):
    rows.append(f'{(11 + i) * 1_000_000},{(11 + i) * 240},40,19')
  (run / 'metrics.csv').write_text('\n'.join(rows) + '\n')
  (run / 'eval.json').write_text(json.dumps({'mean': 18.4, 'num_games': 30}))
  missing = tmp_path / 'Pong-v5' / 'seed_2'   # not trained: dashes
  table = reference_runs.atari_table(
      {'Pong-v5': [str(run), str(missing)]}, {'Pong-v5': 'cpu_pong'}, 30,
      {'Pong-v5': (0, 18, 21)})
  line = next(l for l in table.splitlines() if '| seed_1 |' in l)
  cells = [c.strip() for c in line.strip('|').split('|')]
  assert cells[:4] == ['Pong-v5', 'cpu_pong', 'seed_1', '18.4']
  # First 100 games: rows 1-5 (-21..-5, mean -13); last 100: 3 x 40 at 19.
  assert cells[4] == '-13.0 -> 19.0'
  # Trailing 100 games = the last 5 rows of 20: at 8M frames -9..7 (mean
  # -1), at 9M -5..11 (mean 3): 0 reached at 9M. At 11M: 7, 11, 15 and 40 at
  # 19 (14.2); at 12M: 15 and 80 at 19 ((300 + 1520) / 100 = 18.2); 21
  # never.
  assert cells[5] == ('0: 9.0M (36 min); 18: 12.0M (48 min); '
                      '21: not reached')
  assert cells[6] == f'{13_000_000 / (13 * 240):,.0f}'
  assert cells[7] == '20.4 / 21.0'
  assert cells[8] == '18 by 20M frames' and cells[9] == 'yes'
  assert '| seed_2 | - | - |' in table
  assert 'Espeholt' in table and 'Sources:' in table


def test_shipped_atari_runs_name_the_paper_protocol():
  """Pong (issue 14's run) and the `make train` game ship with their
  evaluation; each ran under the protocol it names (config.json)."""
  root = reference_runs.reference_root('atari')
  if not os.path.isdir(root):
    pytest.skip('no shipped Atari runs in this checkout')
  expected = {'Pong-v5': (20_000_000, 1), 'Breakout-v5': (4_000_000, 2)}
  for env_id, (frames, seeds) in expected.items():
    game_dir = reference_runs.game_dir('atari', env_id)
    runs = sorted(os.listdir(game_dir))
    assert len(runs) >= seeds, env_id
    for run in runs:
      path = os.path.join(game_dir, run)
      assert sorted(os.listdir(path)) == ['DONE', 'config.json',
                                          'eval.json', 'metrics.csv'], path
      with open(os.path.join(path, 'config.json')) as f:
        saved = json.load(f)
      kwargs = saved['env_spec']['envpool_kwargs']
      assert (kwargs['noop_max'], kwargs['repeat_action_probability'],
              kwargs['full_action_space']) == (30, 0.0, False), path
      assert plotting.read_protocol(path) == 'paper'
      rows = read_metrics(os.path.join(path, 'metrics.csv'))
      assert float(rows[-1]['frames']) >= frames
      assert reference_runs.read_eval(path)['num_games'] >= 30
      assert os.path.getsize(os.path.join(path, 'metrics.csv')) < 64_000
  table = reference_runs.atari_table(
      {e: [os.path.join(reference_runs.game_dir('atari', e), r)
           for r in sorted(os.listdir(reference_runs.game_dir('atari', e)))]
       for e in expected}, {}, 30, {'Pong-v5': (0, 10, 18)})
  assert '| Pong-v5 |' in table and '| Breakout-v5 |' in table
