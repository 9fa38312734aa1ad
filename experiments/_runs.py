"""Runs of ``experiments.train`` in a results tree: where each lives, whether
it finished, and running them as subprocesses (``experiments.sweep`` and
``experiments.reproduce`` share this; it defines no flags)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from impala_jax import suites
from impala_jax.metrics import read_metrics

# Flags of experiments.train that a runner sets itself for every run.
RESERVED_FLAGS = ('--env', '--seed', '--logdir', '--total_frames',
                  '--preset')


def train_flag_error(extra: Sequence[str], who: str) -> Optional[str]:
  """A one-line reason why the extra train flags cannot be used, or None."""
  for flag in extra:
    if not flag.startswith('--'):
      return f'--train_flag values look like --name=value, got {flag!r}.'
    if flag.split('=')[0] in RESERVED_FLAGS:
      return (f'--train_flag={flag}: {who} sets {flag.split("=")[0]} '
              'itself.')
  return None


def parse_seeds(values: Sequence[str]) -> Tuple[List[int], Optional[str]]:
  """``--seeds`` as ints, and a one-line reason when they are unusable."""
  try:
    seeds = [int(s) for s in values]
  except ValueError:
    return [], f'--seeds must be integers, got {",".join(values)!r}.'
  if not seeds or len(set(seeds)) != len(seeds):
    return [], '--seeds must list at least one seed, each once.'
  return seeds, None


DONE_NAME = 'DONE'
LOG_NAME = 'train.log'


def game_dir_name(env_id: str) -> str:
  """The directory of a game in the tree: ``Pong-v5``; DMLab levels
  without their ``dmlab:`` prefix; ``/`` and ``:`` become ``_``."""
  if env_id.startswith(suites.DMLAB_PREFIX):
    env_id = env_id[len(suites.DMLAB_PREFIX):]
  return env_id.replace('/', '_').replace(':', '_')


def run_dir(root: str, env_id: str, seed: int) -> str:
  return os.path.join(root, game_dir_name(env_id), f'seed_{seed}')


def last_frames(logdir: str) -> Optional[int]:
  """The ``frames`` of the last row of ``logdir/metrics.csv`` (None: no
  file or no rows)."""
  path = os.path.join(logdir, 'metrics.csv')
  if not os.path.exists(path):
    return None
  try:
    rows = read_metrics(path)
  except (OSError, ValueError):
    return None
  for row in reversed(rows):
    try:
      return int(float(row.get('frames', '')))
    except ValueError:
      continue
  return None


def done_frames(logdir: str) -> Optional[int]:
  """Frames recorded in the ``DONE`` marker, or None."""
  try:
    with open(os.path.join(logdir, DONE_NAME)) as f:
      return int(json.load(f)['total_frames'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def is_finished(logdir: str, total_frames: int) -> bool:
  marker = done_frames(logdir)
  if marker is not None and marker >= total_frames:
    return True
  frames = last_frames(logdir)
  return frames is not None and frames >= total_frames


def mark_done(logdir: str, total_frames: int,
              seconds: Optional[float] = None):
  """Writes the ``DONE`` marker; ``seconds``: the wall time of the training
  process that finished the run (start-up and compilation included)."""
  frames = last_frames(logdir)
  tmp = os.path.join(logdir, DONE_NAME + '.tmp')
  with open(tmp, 'w') as f:
    json.dump({'total_frames': total_frames, 'frames': frames,
               'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
               'process_seconds': seconds}, f)
  os.replace(tmp, os.path.join(logdir, DONE_NAME))


@dataclasses.dataclass
class Run:
  env_id: str
  seed: int
  logdir: str
  command: List[str]
  status: str = 'pending'     # pending | skipped | running | done | failed
  returncode: Optional[int] = None
  process: Optional[subprocess.Popen] = None
  log: Optional[object] = None
  started: float = 0.0
  seconds: float = 0.0
  fresh: bool = True          # started with no metrics: one process


def plan(env_ids: Sequence[str], seeds: Sequence[int], *, root: str,
         preset: str, total_frames: int, extra: Sequence[str] = (),
         python: str = sys.executable) -> List[Run]:
  """One ``Run`` per (game, seed); finished ones already ``skipped``."""
  runs = []
  for env_id in env_ids:
    for seed in seeds:
      logdir = run_dir(root, env_id, seed)
      command = [python, '-m', f'{__package__}.train', f'--preset={preset}',
                 f'--env={env_id}', f'--seed={seed}',
                 f'--total_frames={total_frames}', f'--logdir={logdir}',
                 '--noprogress', *extra]
      run = Run(env_id, seed, logdir, command)
      if is_finished(logdir, total_frames):
        run.status = 'skipped'
      runs.append(run)
  return runs


def _parent_death_signal():
  """A function for ``Popen(preexec_fn=...)`` that, in the child before
  exec (Linux), asks for SIGTERM when the runner dies, so a killed sweep
  never leaves a training running unseen (the training checkpoints on
  SIGTERM and a re-run resumes it); None elsewhere. libc is loaded here,
  in the parent: the child only makes the one call."""
  if not sys.platform.startswith('linux'):
    return None
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    prctl = ctypes.CDLL('libc.so.6', use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  def set_signal():
    prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
  return set_signal


def _start(run: Run, cwd: str):
  os.makedirs(run.logdir, exist_ok=True)
  run.fresh = last_frames(run.logdir) is None
  run.log = open(os.path.join(run.logdir, LOG_NAME), 'a')
  run.log.write(f'\n=== {time.strftime("%Y-%m-%d %H:%M:%S")} '
                f'{" ".join(run.command)}\n')
  run.log.flush()
  run.process = subprocess.Popen(run.command, stdout=run.log,
                                 stderr=subprocess.STDOUT, cwd=cwd,
                                 preexec_fn=_parent_death_signal())
  run.status = 'running'
  run.started = time.monotonic()
  print(f'start  {run.env_id} seed {run.seed} -> {run.logdir}', flush=True)


def _finish(run: Run, total_frames: int):
  run.returncode = run.process.returncode
  run.seconds = time.monotonic() - run.started
  run.log.close()
  run.process = None
  if run.returncode == 0 and is_finished(run.logdir, total_frames):
    # A resumed run's process time covers its last segment only.
    mark_done(run.logdir, total_frames,
              round(run.seconds, 1) if run.fresh else None)
    run.status = 'done'
  elif run.returncode == 0:
    run.status = 'stopped'     # exited early (a signal): resumes next time
  else:
    run.status = 'failed'
  print(f'{run.status:6s} {run.env_id} seed {run.seed} '
        f'(exit {run.returncode}, {run.seconds:.0f} s'
        + (f'; see {os.path.join(run.logdir, LOG_NAME)}'
           if run.status == 'failed' else '') + ')', flush=True)


def execute(runs: List[Run], *, parallel: int, total_frames: int,
            cwd: str, poll_seconds: float = 0.2) -> List[Run]:
  """Runs the pending runs, at most ``parallel`` at a time."""
  pending = [run for run in runs if run.status == 'pending']
  active: List[Run] = []
  try:
    while pending or active:
      while pending and len(active) < parallel:
        run = pending.pop(0)
        _start(run, cwd)
        active.append(run)
      time.sleep(poll_seconds)
      for run in list(active):
        if run.process.poll() is not None:
          _finish(run, total_frames)
          active.remove(run)
  except KeyboardInterrupt:
    # The children got the same SIGINT from the terminal: they checkpoint
    # and exit. Wait for them so no run is left half-written.
    print('sweep: interrupted; waiting for the running trainings to '
          'checkpoint and exit.', file=sys.stderr, flush=True)
    for run in active:
      try:
        run.process.wait(timeout=120)
      except subprocess.TimeoutExpired:
        run.process.kill()
        run.process.wait()
      _finish(run, total_frames)
    raise
  return runs


def summary(runs: Sequence[Run]) -> str:
  counts = {}
  for run in runs:
    counts[run.status] = counts.get(run.status, 0) + 1
  return ', '.join(f'{n} {status}' for status, n in sorted(counts.items()))
