"""Sweep: planning, resumability (finished runs skipped, unfinished ones
re-run) and one real CartPole run through experiments.train."""

import json
import os
import subprocess
import sys

import pytest

from experiments import sweep

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_metrics(logdir, frames):
  os.makedirs(logdir, exist_ok=True)
  with open(os.path.join(logdir, 'metrics.csv'), 'w') as f:
    f.write('frames,episode_return\n')
    for fr in frames:
      f.write(f'{fr},1.0\n')


def test_plan_skips_finished_runs(tmp_path):
  root = str(tmp_path)
  write_metrics(sweep.run_dir(root, 'Pong-v5', 1), [100, 2000])   # done
  write_metrics(sweep.run_dir(root, 'Pong-v5', 2), [100, 1500])   # partial
  marked = sweep.run_dir(root, 'Breakout-v5', 1)
  write_metrics(marked, [100])
  with open(os.path.join(marked, sweep.DONE_NAME), 'w') as f:
    json.dump({'total_frames': 2000}, f)
  runs = sweep.plan(['Pong-v5', 'Breakout-v5', 'dmlab:rooms_watermaze'],
                    [1, 2], root=root, preset='cpu_atari', total_frames=2000)
  status = {(r.env_id, r.seed): r.status for r in runs}
  assert status == {('Pong-v5', 1): 'skipped', ('Pong-v5', 2): 'pending',
                    ('Breakout-v5', 1): 'skipped',
                    ('Breakout-v5', 2): 'pending',
                    ('dmlab:rooms_watermaze', 1): 'pending',
                    ('dmlab:rooms_watermaze', 2): 'pending'}
  run = [r for r in runs if r.env_id == 'dmlab:rooms_watermaze'][0]
  assert run.logdir == os.path.join(root, 'rooms_watermaze', 'seed_1')
  assert '--env=dmlab:rooms_watermaze' in run.command
  assert f'--logdir={run.logdir}' in run.command
  # A larger budget makes the finished runs pending again.
  runs = sweep.plan(['Pong-v5'], [1], root=root, preset='cpu_atari',
                    total_frames=3000)
  assert runs[0].status == 'pending'


def _sweep(root, *extra):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', '--preset=cartpole',
       '--games=CartPole-v1', '--seeds=3', '--total_frames=2000',
       f'--root={root}', *extra],
      cwd=_REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sweep_runs_then_skips(tmp_path):
  root = str(tmp_path / 'tree')
  first = _sweep(root)
  assert first.returncode == 0, first.stdout + first.stderr
  logdir = os.path.join(root, 'CartPole-v1', 'seed_3')
  assert 'done   CartPole-v1 seed 3' in first.stdout
  with open(os.path.join(logdir, sweep.DONE_NAME)) as f:
    assert json.load(f)['total_frames'] == 2000
  assert sweep.last_frames(logdir) >= 2000
  assert os.path.exists(os.path.join(logdir, 'train.log'))
  second = _sweep(root)
  assert second.returncode == 0, second.stderr
  assert '1 already finished' in second.stdout
  assert 'sweep: 1 skipped' in second.stdout


def test_sweep_flag_errors(tmp_path):
  for args, message in (
      (['--games=Pong-v5', '--suite=atari57'], 'exactly one of'),
      (['--games=Pong-v5', '--seeds=a'], '--seeds must be integers'),
      (['--games=Pongg-v5'], 'unknown environment id'),
      (['--games=Pong-v5', '--train_flag=--seed=3'], 'sets --seed itself'),
      (['--games=Pong-v5', '--parallel=0'], '--parallel must be >= 1')):
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.sweep', f'--root={tmp_path}',
         *args], cwd=_REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (args, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error:') and message in last, last


def test_sweep_suite_dry_run(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', '--suite=atari57',
       '--seeds=1,2', f'--root={tmp_path}', '--dry_run'],
      cwd=_REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert '57 games x 2 seeds = 114 runs' in result.stdout
  assert 'pending' in result.stdout and '--env=Zaxxon-v5' in result.stdout


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/status') as f:
      return not any(line.startswith('State:') and 'Z' in line.split()[1]
                     for line in f)
  except OSError:
    return False


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='PR_SET_PDEATHSIG is Linux only')
def test_a_killed_runner_takes_its_trainings_with_it(tmp_path):
  """SIGKILL of a sweep/reproduce process must not orphan its trainings."""
  import signal  # pylint: disable=import-outside-toplevel
  import textwrap  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  pid_file = tmp_path / 'pid'
  child = ('import os, time; open(%r, "w").write(str(os.getpid())); '
           'time.sleep(120)' % str(pid_file))
  script = tmp_path / 'runner.py'
  script.write_text(textwrap.dedent(f'''
      import sys
      sys.path.insert(0, {_REPO!r})
      from experiments import _runs
      run = _runs.Run('x', 1, {str(tmp_path / 'run')!r},
                      [sys.executable, '-c', {child!r}])
      _runs.execute([run], parallel=1, total_frames=1, cwd={_REPO!r})
      '''))
  runner = subprocess.Popen([sys.executable, str(script)])
  deadline = time.monotonic() + 60
  while not (pid_file.exists() and pid_file.read_text()):
    assert time.monotonic() < deadline and runner.poll() is None
    time.sleep(0.05)
  pid = int(pid_file.read_text())
  assert _alive(pid)
  runner.send_signal(signal.SIGKILL)
  runner.wait()
  deadline = time.monotonic() + 10
  while _alive(pid) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not _alive(pid), 'the training outlived its killed runner'
