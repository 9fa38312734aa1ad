"""Plotting: curves from a synthetic results tree, final scores, the
normalised aggregate curve, the Markdown table and the plot program."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from impala_jax import plotting
from impala_jax import scores

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(path, frames, returns):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'metrics.csv'), 'w') as f:
    f.write('frames,updates,episode_return,sps\n')
    for i, (fr, r) in enumerate(zip(frames, returns)):
      cell = '' if r is None else f'{r:.6g}'
      f.write(f'{fr},{i},{cell},100\n')


def make_tree(root):
  """Pong: seeds reach 0.5 and 1.0 x human linearly; Breakout: 2 seeds;
  CartPole (no references): 1 seed."""
  frames = np.arange(1, 21) * 1000
  pong = scores.reference_for('Pong-v5')
  for seed, top in ((1, 0.5), (2, 1.0)):
    norm = top * frames / frames[-1]
    returns = list(pong.random + norm * (pong.human - pong.random))
    returns[2] = None   # no game finished in that interval
    write_run(os.path.join(root, 'Pong-v5', f'seed_{seed}'), frames, returns)
  for seed in (1, 2):
    write_run(os.path.join(root, 'Breakout-v5', f'seed_{seed}'),
              frames + seed, [30.5] * 20)     # exactly human: 100%
  write_run(os.path.join(root, 'CartPole-v1', 'seed_1'), frames,
            list(np.linspace(10, 500, 20)))
  return root


def test_load_and_final_scores(tmp_path):
  results = plotting.load_results(make_tree(str(tmp_path / 'tree')))
  assert sorted(results) == ['Breakout-v5', 'CartPole-v1', 'Pong-v5']
  assert [c.run for c in results['Pong-v5']] == ['seed_1', 'seed_2']
  assert len(results['Pong-v5'][0].frames) == 19   # the empty row skipped
  finals = plotting.final_scores(results, fraction=0.1)
  # Last 10% of 20k frames: rows at 18k, 19k, 20k.
  pong = scores.reference_for('Pong-v5')
  expected = pong.random + np.mean([0.9, 0.95, 1.0]) * (pong.human -
                                                         pong.random)
  assert finals['Pong-v5'][1] == pytest.approx(expected)
  assert finals['Breakout-v5'] == [pytest.approx(30.5)] * 2


def test_smooth_and_interpolate():
  np.testing.assert_allclose(plotting.smooth([1, 2, 3, 4], 2),
                             [1, 1.5, 2.5, 3.5])
  curve = plotting.Curve('r', np.array([10.0, 20.0]), np.array([0.0, 1.0]))
  out = plotting.interpolate(curve, np.array([5.0, 15.0, 20.0, 25.0]))
  assert np.isnan(out[0]) and np.isnan(out[3])
  np.testing.assert_allclose(out[1:3], [0.5, 1.0])


def test_normalized_aggregate_curve(tmp_path):
  results = plotting.load_results(make_tree(str(tmp_path / 'tree')))
  grid, agg, games = plotting.normalized_aggregate_curve(results, points=11)
  assert games == ('Breakout-v5', 'Pong-v5')   # CartPole has no references
  assert grid[-1] == 20000   # the frames every game reaches
  # At the end: Breakout 1.0, Pong mean of 0.5 and 1.0 = 0.75 -> median.
  assert agg[-1] == pytest.approx((1.0 + 0.75) / 2)


def test_final_table_and_pngs(tmp_path):
  tree = make_tree(str(tmp_path / 'tree'))
  results = {'mine': plotting.load_results(tree)}
  table = plotting.final_table(results, reps=100)
  assert '| Game | mine score | mine normalised | paper score |' in table
  assert '| Breakout-v5 | 30.50 +- 0.00 (2) | 100.0% | 787.3 |' in table
  assert 'CartPole-v1' in table
  assert 'median' in table and 'iqm' in table
  paths = plotting.save_game_plots(results, str(tmp_path / 'out'), window=3)
  agg = plotting.save_aggregate_plot(results, str(tmp_path / 'out' /
                                                  'aggregate.png'))
  for path in paths + [agg]:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert sorted(os.path.basename(p) for p in paths) == [
      'Breakout-v5.png', 'CartPole-v1.png', 'Pong-v5.png', 'all_games.png']


def test_plot_program(tmp_path):
  tree = make_tree(str(tmp_path / 'tree'))
  out = str(tmp_path / 'plots')
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.plot', f'--roots={tree},{tree}',
       '--labels=a,b', f'--out={out}', '--bootstrap_reps=50'],
      cwd=_REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  for name in ('Pong-v5.png', 'all_games.png', 'aggregate.png',
               'aggregate_intervals.png', 'performance_profile.png',
               'final_scores.md'):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, 'final_scores.md')) as f:
    table = f.read()
  assert '| Game | a score | a normalised | b score |' in table
  assert 'optimality_gap' in table
  # The same tree twice: neither is better.
  assert '- P(a > b) = 0.50 [' in table
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.plot', f'--roots={tree}',
       f'--out={out}', '--paper_variant=best'],
      cwd=_REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith('error:')


def test_final_table_names_each_protocol(tmp_path):
  tree = make_tree(str(tmp_path / 'tree'))
  for seed, name in ((1, 'paper'), (2, 'machado')):
    with open(os.path.join(tree, 'Pong-v5', f'seed_{seed}', 'config.json'),
              'w') as f:
      json.dump({'atari_protocol': {'name': name, 'departures': {}}}, f)
  # A run from before the protocol was recorded: read from envpool's args.
  with open(os.path.join(tree, 'Breakout-v5', 'seed_1', 'config.json'),
            'w') as f:
    json.dump({'env_spec': {'envpool_kwargs': {
        'repeat_action_probability': 0.0, 'full_action_space': False,
        'noop_max': 30}}}, f)
  results = plotting.load_results(tree)
  assert [c.protocol for c in results['Pong-v5']] == ['paper', 'machado']
  assert results['Breakout-v5'][0].protocol == 'paper'
  assert results['CartPole-v1'][0].protocol == ''
  table = plotting.final_table({'mine': results}, reps=50)
  assert ('Atari protocols: mine: machado, paper; paper scores: paper (up '
          'to 30 no-op starts') in table
  assert 'Note: mine ran under machado, paper' in table
  # DMLab-only or paper-free tables say nothing about the paper's protocol.
  assert 'paper scores' not in plotting.final_table(
      {'mine': results}, reps=50, paper_variant='none')


def test_multitask_runs_give_one_curve_per_task(tmp_path):
  """A multi-task run's per-task columns become curves of their games
  (over each task's share of the frames), beside single-task runs, and
  feed the suite's normalised aggregate."""
  root = str(tmp_path)
  run = os.path.join(root, 'pong_breakout', 'seed_1')
  os.makedirs(run)
  pong, breakout = (scores.reference_for('Pong-v5'),
                    scores.reference_for('Breakout-v5'))
  with open(os.path.join(run, 'metrics.csv'), 'w') as f:
    f.write('frames,episode_return,episode_return/Pong-v5,'
            'episode_return/Breakout-v5\n')
    for i in range(1, 11):
      f.write(f'{2000 * i},0,{pong.human},{"" if i == 3 else breakout.human}'
              '\n')
  write_run(os.path.join(root, 'Pong-v5', 'seed_9'), np.arange(1, 11) * 1000,
            [pong.random] * 10)
  results = plotting.load_results(root)
  assert sorted(results) == ['Breakout-v5', 'Pong-v5']
  assert [c.run for c in results['Pong-v5']] == ['seed_9', 'seed_1']
  multi = results['Pong-v5'][1]
  np.testing.assert_array_equal(multi.frames, np.arange(1, 11) * 1000)
  assert len(results['Breakout-v5'][0].frames) == 9    # the empty cell
  grid, agg, games = plotting.normalized_aggregate_curve(
      {'Breakout-v5': results['Breakout-v5']}, points=5)
  np.testing.assert_allclose(agg, 1.0)
