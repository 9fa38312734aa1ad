r"""Runs games x seeds of ``experiments.train`` into one results tree.

  python -m experiments.sweep --games=Pong-v5,Breakout-v5 --seeds=1,2 \
      --preset=cpu_atari --total_frames=2000000 --root=runs/sweep --parallel=2
  python -m experiments.sweep --suite=atari57 --preset=paper_atari \
      --seeds=1,2,3 --root=runs/atari57

Each run is ``python -m experiments.train --env=GAME --seed=S
--logdir=ROOT/<game>/seed_<S>`` (its output goes to ``train.log`` in that
directory), one after another or up to ``--parallel`` processes at a time.
``--suite`` takes the suite's games (``impala_jax.suites``): Atari-57 envpool
ids, or the DMLab-30 levels as ``dmlab:<level>`` (their directories drop the
prefix). ``<game>`` is the environment id with ``/`` and ``:`` replaced by
``_``.

Resumable: a run is finished when its ``metrics.csv`` reaches
``--total_frames`` (the last row's ``frames``) or it has a ``DONE`` marker for
at least that many frames (written after ``train`` exits 0 at the frame
budget); finished runs are skipped. Any other run is started again with the
same logdir, and ``train`` resumes from its last checkpoint. So re-running
the same command after a crash, a reboot or Ctrl-C continues the sweep.

Ctrl-C stops the sweep: the running trainings get the signal too, write a
checkpoint and exit; the next invocation resumes them. Exit status: 0 when
every run finished, 1 when one failed, 2 for bad flags.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import flags

from . import _cli
from ._runs import (  # pylint: disable=unused-import
    DONE_NAME, LOG_NAME, Run, done_frames, execute, game_dir_name,
    is_finished, last_frames, mark_done, parse_seeds, plan, run_dir,
    summary, train_flag_error)
from impala_jax import presets
from impala_jax import suites

_GAMES = flags.DEFINE_list('games', None, 'Environment ids, comma separated.')
_SUITE = flags.DEFINE_string(
    'suite', None, 'Run every game of a suite instead of --games: '
    + ', '.join(suites.SUITES) + '.')
_SEEDS = flags.DEFINE_list('seeds', ['1'], 'Seeds, comma separated integers.')
_PRESET = flags.DEFINE_string(
    'preset', 'cpu_atari',
    'train preset: ' + ', '.join(presets.PRESETS) + '.')
_TOTAL_FRAMES = flags.DEFINE_integer(
    'total_frames', None, 'Frames per run (default: the preset\'s).')
_ROOT = flags.DEFINE_string('root', None, 'Results tree root (required).')
_PARALLEL = flags.DEFINE_integer('parallel', 1,
                                 'Runs at a time (separate processes).')
_TRAIN_FLAGS = flags.DEFINE_multi_string(
    'train_flag', [], 'Extra flag passed to every train run, e.g. '
    '--train_flag=--batch_size=8 (repeatable).')
_DRY_RUN = flags.DEFINE_boolean('dry_run', False,
                                'Print the commands and statuses only.')



def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _validate_games(env_ids: Sequence[str]):
  from impala_jax.envs import registry  # pylint: disable=g-import-not-at-top
  for env_id in env_ids:
    if env_id.startswith(suites.DMLAB_PREFIX):
      continue   # the DMLab backend checks its own levels
    try:
      registry.validate_env_id(env_id)
    except ValueError as e:
      _fail(str(e))


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _ROOT.value:
    _fail('--root is required (the results tree).')
  if bool(_GAMES.value) == bool(_SUITE.value):
    _fail('give exactly one of --games and --suite.')
  if _SUITE.value:
    if _SUITE.value not in suites.SUITES:
      _fail(f'--suite must be one of {", ".join(suites.SUITES)}, got '
            f'{_SUITE.value!r}.')
    env_ids = list(suites.env_ids(_SUITE.value))
  else:
    env_ids = [g.strip() for g in _GAMES.value if g.strip()]
    if not env_ids:
      _fail('--games is empty.')
  if len(set(env_ids)) != len(env_ids):
    _fail('--games lists a game twice.')
  seeds, error = parse_seeds(_SEEDS.value)
  if error:
    _fail(error)
  if _PRESET.value not in presets.PRESETS:
    _fail(f'--preset must be one of {", ".join(presets.PRESETS)}, got '
          f'{_PRESET.value!r}.')
  total_frames = _TOTAL_FRAMES.value
  if total_frames is None:
    total_frames = presets.get_preset(_PRESET.value).total_frames
  if total_frames <= 0:
    _fail(f'--total_frames must be > 0, got {total_frames}.')
  if _PARALLEL.value < 1:
    _fail(f'--parallel must be >= 1, got {_PARALLEL.value}.')
  error = train_flag_error(_TRAIN_FLAGS.value, 'the sweep')
  if error:
    _fail(error)
  _validate_games(env_ids)

  root = os.path.abspath(_ROOT.value)
  runs = plan(env_ids, seeds, root=root, preset=_PRESET.value,
              total_frames=total_frames, extra=_TRAIN_FLAGS.value)
  print(f'sweep: {len(env_ids)} games x {len(seeds)} seeds = {len(runs)} '
        f'runs of {total_frames:,} frames into {root} '
        f'({sum(r.status == "skipped" for r in runs)} already finished, '
        f'parallel {_PARALLEL.value})', flush=True)
  if _DRY_RUN.value:
    for run in runs:
      print(f'{run.status:8s} {" ".join(run.command)}')
    return 0
  # train must import this repository's packages whatever the caller's cwd.
  cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    execute(runs, parallel=_PARALLEL.value, total_frames=total_frames,
            cwd=cwd)
  except KeyboardInterrupt:
    print(f'sweep: stopped ({summary(runs)}); run the same command again '
          'to resume.', file=sys.stderr)
    return 130
  print(f'sweep: {summary(runs)}', flush=True)
  return 1 if any(run.status in ('failed', 'stopped') for run in runs) else 0


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
