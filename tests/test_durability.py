"""Runs that survive days: damaged checkpoints, stalled actors, unwritable or
full log directories, what a resumed or stopped run says (CartPole,
``python -m experiments.train`` in subprocesses, one CPU device)."""

import csv
import errno
import glob
import os
import subprocess
import sys

import pytest

from impala_jax import checkpoint as checkpoint_lib
from impala_jax import config as config_lib
from impala_jax import metrics as metrics_lib
from impala_jax import presets
from impala_jax import run_loop
from impala_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES_PER_UPDATE = 20 * 16   # the cartpole preset's T x B


def _env(**extra):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env.pop(runtime.FAULT_ENV_VAR, None)
  env['JAX_PLATFORMS'] = 'cpu'
  env.update(extra)
  return env


def _train(logdir, *flags, timeout=240, **extra_env):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole',
       f'--logdir={logdir}', '--noprogress', *flags],
      cwd=ROOT, env=_env(**extra_env), capture_output=True, text=True,
      timeout=timeout)


def _steps(logdir):
  return sorted(int(os.path.basename(p)) for p in
                glob.glob(os.path.join(logdir, 'checkpoints', '*'))
                if os.path.basename(p).isdigit())


def _truncate_state(logdir, step):
  """Cuts every file of a checkpoint's arrays to half its size, as a
  pre-emption in the middle of a copy would leave it."""
  files = [p for p in glob.glob(os.path.join(logdir, 'checkpoints', str(step),
                                             'state', '**'), recursive=True)
           if os.path.isfile(p)]
  assert files
  for path in files:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


def _rows(logdir):
  with open(os.path.join(logdir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_and_says_so(tmp_path):
  logdir = str(tmp_path / 'run')
  first = _train(logdir, '--noasync', f'--total_frames={6 * FRAMES_PER_UPDATE}',
                 '--checkpoint_every_seconds=0.001', '--log_every_seconds=0')
  assert first.returncode == 0, first.stderr
  assert ', new run' in first.stdout.splitlines()[0]
  # The stop line says where it saved.
  assert os.path.join(logdir, 'checkpoints', '6') in first.stdout
  assert _steps(logdir) == [4, 5, 6]   # --keep_checkpoints=3 by default
  _truncate_state(logdir, 6)

  second = _train(logdir, '--noasync',
                  f'--total_frames={9 * FRAMES_PER_UPDATE}',
                  '--log_every_seconds=0')
  assert second.returncode == 0, second.stderr
  line = second.stdout.splitlines()[0]
  assert (f'resuming from the checkpoint at update 5 '
          f'({5 * FRAMES_PER_UPDATE:,} frames), falling back from damaged '
          'checkpoint 6 (') in line, line
  assert os.path.isdir(os.path.join(logdir, 'checkpoints',
                                    '6' + '.damaged'))   # kept aside
  assert 9 in _steps(logdir)            # saves after the fall-back landed
  frames = [int(r['frames']) for r in _rows(logdir)]
  resumed = [f for f in frames if f > 5 * FRAMES_PER_UPDATE]
  assert resumed and resumed[0] == 6 * FRAMES_PER_UPDATE   # from update 5
  assert frames[-1] == 9 * FRAMES_PER_UPDATE

  # Every checkpoint damaged: exit 2 before training, one line naming the
  # directory; nothing is renamed, nothing starts over.
  for step in _steps(logdir):
    _truncate_state(logdir, step)
  before = _steps(logdir)
  third = _train(logdir, '--noasync', f'--total_frames={12 * FRAMES_PER_UPDATE}')
  assert third.returncode == 2, third.stdout + third.stderr
  lines = third.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f'error: no checkpoint in {os.path.join(logdir, "checkpoints")} can be '
      'restored (step 9: '), lines
  assert 'Traceback' not in third.stdout + third.stderr
  assert _steps(logdir) == before


def _template(config):
  """A fresh CartPole ``TrainState`` (4 observations, 2 actions)."""
  import jax  # pylint: disable=g-import-not-at-top
  from impala_jax.core import learner as learner_lib  # pylint: disable=g-import-not-at-top
  network = learner_lib.make_network(config, 2)
  return learner_lib.init_train_state(config, network, (4,), 'float32', 1,
                                      jax.random.PRNGKey(0))


def test_noresume_over_checkpoints_is_refused(tmp_path):
  config = presets.cartpole()
  logdir = str(tmp_path / 'run')
  with checkpoint_lib.Checkpointer(os.path.join(logdir, 'checkpoints')) as c:
    assert c.save(_template(config))
  with pytest.raises(run_loop.ConfigError, match='--noresume'):
    runtime.train(config, logdir, sync=True, resume=False, progress=False,
                  handle_signals=False)


@pytest.mark.slow
def test_stalled_actor_ends_the_run_with_a_checkpoint(tmp_path):
  logdir = str(tmp_path / 'run')
  proc = _train(logdir, '--total_frames=100000000',
                '--actor_timeout_seconds=3', '--checkpoint_every_seconds=600',
                timeout=120, **{runtime.FAULT_ENV_VAR: 'stall:4'})
  assert proc.returncode == 1, proc.stdout + proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: actor-0 stalled: no trajectory for 3 s '
                         '(--actor_timeout_seconds)'), last
  assert 'Traceback' not in proc.stderr
  steps = _steps(logdir)
  assert steps, 'no checkpoint written on a stall'
  assert f'the last checkpoint is {os.path.join(logdir, "checkpoints")}' in last


def test_unwritable_logdir_fails_before_compiling(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  proc = _train(str(blocker / 'run'), timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines == [f'error: cannot write to --logdir={blocker / "run"}: '
                   'Not a directory.'], proc.stderr
  assert proc.stdout == ''   # not even the start line: nothing compiled


def test_full_disk_at_the_start_is_one_line(tmp_path, monkeypatch):
  real_open = open

  def full(path, mode='r', *args, **kwargs):
    if '.write-probe-' in os.fspath(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return real_open(path, mode, *args, **kwargs)
  monkeypatch.setattr('builtins.open', full)
  with pytest.raises(run_loop.ConfigError,
                     match='cannot write to --logdir=.*No space left'):
    run_loop.check_logdir(str(tmp_path / 'run'))


def test_full_disk_mid_run_stops_with_the_last_good_checkpoint(
    tmp_path, monkeypatch):
  """A metrics write that fails mid-run ends the run at once (the error
  propagates; the training program prints it in one line, exit 1) and the
  checkpoints written before it stay restorable."""
  real_write = metrics_lib.MetricsWriter.write
  calls = []

  def write(self, row):
    calls.append(row['frames'])
    if len(calls) > 3:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
    return real_write(self, row)
  monkeypatch.setattr(metrics_lib.MetricsWriter, 'write', write)
  config = config_lib.Config(**{
      **presets.cartpole().__dict__, 'total_frames': 20 * FRAMES_PER_UPDATE,
      'log_every_seconds': 0.0, 'checkpoint_every_seconds': 0.001})
  logdir = str(tmp_path / 'run')
  with pytest.raises(OSError, match='No space left'):
    runtime.train(config.validate(), logdir, sync=True, progress=False,
                  handle_signals=False)
  assert len(calls) == 4              # reported at once, no training on
  steps = _steps(logdir)
  assert steps and max(steps) <= 4
  with checkpoint_lib.Checkpointer(os.path.join(logdir, 'checkpoints')) as c:
    found = c.restore_newest(_template(config))
  assert found is not None and found.step == max(steps) and not found.damaged


@pytest.mark.slow
def test_soak_script_samples_memory_into_a_csv(tmp_path):
  out = str(tmp_path / 'soak')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.soak', '--preset=cartpole',
       '--seconds=30', '--warmup=10', '--interval=1', f'--out={out}',
       '--train_flag=--log_every_seconds=1'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.startswith('soak: resident memory '), proc.stdout
  with open(os.path.join(out, 'memory.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) >= 8
  assert list(rows[0]) == ['seconds', 'rss_mib', 'peak_rss_mib', 'frames']
  assert float(rows[-1]['rss_mib']) > 100   # JAX and a network loaded
  assert any(r['frames'] for r in rows)   # the run was training
  assert os.path.getsize(os.path.join(out, 'memory.png')) > 0
  assert os.path.exists(os.path.join(out, 'run', 'checkpoints'))  # SIGTERM
