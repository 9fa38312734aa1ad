r"""Trains an IMPALA agent on envpool, DMLab or JAX (gymnax) environments.

  python -m experiments.train --preset=cpu_atari --env=Breakout-v5 \
      --total_frames=2000000 --logdir=runs/breakout --seed=1

Every ``impala_jax.config.Config`` field is a flag (``--batch_size``,
``--learning_rate``, ``--torso`` ...); ``--preset`` picks the starting values
(``paper_atari``, ``cpu_atari``, ``cpu_pong``, ``cartpole``, ...,
``atari57:<game>``, ``atari57_machado:<game>``) and explicit flags override
them. ``--atari_protocol=paper|machado`` sets the Atari evaluation protocol's
fields (no-op starts, sticky actions, action set, FIRE reset); a flag naming
one of those fields still overrides it, and ``config.json`` records the
departure. Thresholds that may be disabled take ``none``
(``--clip_rho_threshold=none``). Device lists are comma separated indices
into this host's devices (``--actor_devices=0 --learner_devices=1,2``).

Writes ``LOGDIR/config.json``, ``LOGDIR/metrics.csv``, TensorBoard events
(and, with ``--wandb_project=P``, a Weights & Biases run in ``LOGDIR/wandb``;
``--wandb_mode=offline`` without a network) and orbax checkpoints in
``LOGDIR/checkpoints`` (every
``--checkpoint_every_seconds`` and at exit). Re-running with the same
``--logdir`` resumes (``--noresume`` starts over in a new directory).
Ctrl-C (SIGINT) or SIGTERM: finish the update, checkpoint, exit 0.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import traceback
import typing

from absl import flags
from absl import logging

from . import _cli
from impala_jax import config as config_lib
from impala_jax import presets

FLAGS = flags.FLAGS

flags.DEFINE_string('preset', 'auto',
                    'Starting values: ' + ', '.join(presets.PRESETS) +
                    ', atari57:<game>, atari57_machado:<game>, '
                    'dmlab30:<level>; auto (default): '
                    f'{presets.AUTO_PRESETS["cpu"]} on a CPU-only '
                    f'machine, {presets.AUTO_PRESETS["accelerator"]} '
                    'when JAX sees a GPU or TPU.')
flags.DEFINE_string('logdir', None,
                    'Run directory (default: runs/<env>-<time>).')
flags.DEFINE_boolean('resume', None,
                     'Resume from LOGDIR/checkpoints (default: when present).')
flags.DEFINE_boolean('async', True,
                     'Actor threads + learner in parallel. --noasync: one '
                     'thread alternates acting and learning (deterministic).')
flags.DEFINE_boolean('progress', True, 'Print the live progress line.')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-host: host:port of process 0 (jax.distributed).')
flags.DEFINE_integer('num_processes', None,
                     'Multi-host: number of processes (default: 1, or from '
                     'the cluster environment with --distributed).')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
flags.DEFINE_boolean('distributed', False,
                     'Call jax.distributed.initialize() even without the '
                     'flags above (SLURM, Open MPI, Cloud TPU: JAX reads the '
                     'cluster environment).')
flags.DEFINE_integer('heartbeat_timeout_seconds', 60,
                     'Multi-host: a process silent this long counts as dead '
                     'and the others exit with an error.')


def _optional_float(text: str):
  return None if text.lower() in ('none', 'off', '') else float(text)


def _define_config_flags() -> dict:
  """One flag per ``Config`` field, default None meaning "from the preset"."""
  hints = typing.get_type_hints(config_lib.Config)
  parsers = {}
  for field in dataclasses.fields(config_lib.Config):
    name, hint = field.name, hints[field.name]
    help_text = f'Config.{name} (default from --preset).'
    if hint is bool:
      flags.DEFINE_boolean(name, None, help_text)
      parsers[name] = lambda v: v
    elif hint is int:
      flags.DEFINE_integer(name, None, help_text)
      parsers[name] = lambda v: v
    elif hint is float:
      flags.DEFINE_float(name, None, help_text)
      parsers[name] = lambda v: v
    elif hint is str:
      flags.DEFINE_string(name, None, help_text)
      parsers[name] = lambda v: v
    elif hint == typing.Optional[float]:
      flags.DEFINE_string(name, None, help_text + ' "none" disables.')
      parsers[name] = _optional_float
    elif typing.get_origin(hint) is tuple:
      flags.DEFINE_list(name, None, help_text + ' Comma separated.')
      item = typing.get_args(hint)[0]
      parsers[name] = lambda v, item=item: tuple(item(x) for x in v)
    else:
      raise TypeError(f'no flag type for Config.{name}: {hint}')
  return parsers


_PARSERS = _define_config_flags()


def preset_name() -> tuple[str, str]:
  """``(preset, why)``: ``--preset``, or for ``auto`` the recipe sized for
  this machine's JAX backend (call after ``jax.distributed``)."""
  if FLAGS.preset != 'auto':
    return FLAGS.preset, ''
  import jax  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  return presets.auto_preset(jax.default_backend(), jax.device_count(),
                             getattr(device, 'device_kind', ''))


def config_from_flags(preset: str) -> config_lib.Config:
  """The preset, overridden by every flag given on the command line."""
  config = presets.get_preset(preset, env=FLAGS.env)
  if FLAGS.atari_protocol is not None:
    # A protocol sets several fields; flags naming one of them still win.
    config = config_lib.with_atari_protocol(config, FLAGS.atari_protocol)
  overrides = {}
  for name, parse in _PARSERS.items():
    value = FLAGS[name].value
    if value is not None:
      try:
        overrides[name] = parse(value)
      except ValueError:
        raise ValueError(f'--{name}={value!r} is not valid for this flag.'
                         ) from None
  return dataclasses.replace(config, **overrides).validate()


def _run_name(config) -> str:
  """The default run directory's stem: the env id, or for several tasks
  the first and the count (``Breakout-MinAtar+3``)."""
  ids = config_lib.tasks(config)
  if len(ids) == 1:
    return config.env
  return f'{config_lib.task_name(ids[0])}+{len(ids) - 1}'


def _last_checkpoint(logdir: str) -> str:
  """Where a failed run can resume from, for its last line."""
  directory = os.path.join(logdir, 'checkpoints')
  steps = sorted(int(name) for name in (os.listdir(directory)
                                        if os.path.isdir(directory) else [])
                 if name.isdigit())
  if not steps:
    return 'no checkpoint was written'
  return (f'the last checkpoint is {os.path.join(directory, str(steps[-1]))}'
          ' (run again with the same --logdir to resume)')


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}; flags look like '
          '--name=value.', file=sys.stderr)
    return 2
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  # Before anything touches a device (jax#12258).
  from impala_jax import distributed  # pylint: disable=import-outside-toplevel
  try:
    distributed.check_args(FLAGS.num_processes, FLAGS.process_id,
                           FLAGS.heartbeat_timeout_seconds)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if FLAGS.distributed or distributed.wants_distributed(
      FLAGS.coordinator_address, FLAGS.num_processes):
    try:
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                             FLAGS.process_id, heartbeat_timeout_seconds=
                             FLAGS.heartbeat_timeout_seconds)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  # Imported here so that --help and flag errors answer instantly.
  from impala_jax import runtime  # pylint: disable=import-outside-toplevel
  preset, why = preset_name()
  try:
    config = config_from_flags(preset)
    if config.wandb_project:
      from impala_jax import metrics  # pylint: disable=import-outside-toplevel
      metrics.require_wandb()
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  logdir = FLAGS.logdir or os.path.join(
      'runs', f'{_run_name(config)}-{datetime.datetime.now():%Y%m%d-%H%M%S}')
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1 and not FLAGS.logdir:
    print('error: multi-host runs need an explicit --logdir shared by every '
          'process.', file=sys.stderr)
    return 2
  from impala_jax.envs import env_family  # pylint: disable=import-outside-toplevel
  from impala_jax import run_loop  # pylint: disable=import-outside-toplevel

  def announce(restored):
    """The first lines, once the start is known (new run or resume)."""
    print(f'impala_jax: {config.env}, preset {preset}'
          + (f' ({why})' if why else '') + ', '
          f'{config.total_frames:,} frames (env steps x action repeat), '
          f'logdir {logdir}, {run_loop.describe_start(restored)}'
          + (f', {distributed.describe()}' if jax.process_count() > 1
             else ''), flush=True)
    if env_family(config_lib.tasks(config)[0]) == 'atari':
      print(config_lib.describe_atari_protocol(config), flush=True)
    if config_lib.num_tasks(config) > 1:
      print(f'{config_lib.num_tasks(config)} tasks, one agent'
            + (', PopArt' if config.popart else ', no PopArt')
            + ': per-task columns episode_return/<task> in metrics.csv',
            flush=True)

  try:
    if config.runtime == 'anakin' or config.env.startswith(config_lib.GYMNAX_PREFIX):
      # JAX environments: acting and learning in one compiled program.
      from impala_jax import anakin  # pylint: disable=import-outside-toplevel
      result = anakin.train_anakin(config, logdir, resume=FLAGS.resume,
                                   progress=FLAGS.progress, on_start=announce)
    else:
      result = runtime.train(config, logdir, sync=not FLAGS['async'].value,
                             resume=FLAGS.resume, progress=FLAGS.progress,
                             on_start=announce)
  except runtime.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except (OSError, runtime.StalledActorError) as e:
    # A full disk, a vanished directory, a stuck environment: the reason
    # and where the run can resume from; a traceback would add nothing.
    print(f'error: {e}; {_last_checkpoint(logdir)}', file=sys.stderr)
    return 1
  except Exception as e:  # pylint: disable=broad-except
    # A failure inside the run (an actor thread, the learner): the full
    # traceback for debugging, then the one-line reason last.
    traceback.print_exc()
    print(f'error: {e}; {_last_checkpoint(logdir)}', file=sys.stderr)
    return 1
  recent = result.recent_returns[-20:]
  mean = sum(recent) / len(recent) if recent else float('nan')
  print(f'done: {result.frames:,} frames, {result.updates} updates, '
        f'{result.episodes} games, mean return of the last {len(recent)} '
        f'games {mean:.1f}' + (' (stopped by signal; checkpoint written)'
                               if result.stopped_by_signal else ''),
        flush=True)
  print('checkpoint: '
        + os.path.join(logdir, 'checkpoints', str(result.updates))
        + ' (run again with the same --logdir to resume)', flush=True)
  return 0


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
