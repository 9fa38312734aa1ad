r"""Anakin layout vs the envpool (Sebulba) pipeline: training throughput.

  python -m experiments.benchmark_anakin --json=bench_results/anakin.json

One after another (never concurrently), each at several environment batch
sizes, the best one reported with its size:

1. ``anakin_cartpole``: gymnax ``CartPole-v1`` in the Anakin layout
   (``AnakinRunner``: ``K`` rollouts + updates per compiled call), the
   ``cartpole_anakin`` network (MLP 64-64) and unroll (``T`` = 20 since
   issue 13; 16 before). ``B`` environments = the batch of each update.
2. ``anakin_breakout``: gymnax ``Breakout-MinAtar``, the ``minatar``
   preset's Breakout settings (MLP 64-64 since issue 13; 256-256 before),
   ``T`` = 20.
3. ``envpool_cartpole``: ``runtime.train`` in its asynchronous layout
   (actor thread, envpool, bounded queue, learner) on envpool
   ``CartPole-v1`` with the same network and ``T``; the first
   ``--skip_updates`` updates (compilation, queue fill) are not timed.

Everything trains: acting and learning, steps/s = learned-from env steps
per second of wall time. Frames = env steps x action repeat, which is 1 for
all three (MinAtar has no frame skip), so frames/s = steps/s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from typing import List

from absl import flags
from absl import logging

import jax

from . import _cli
from . import _bench_common as common
from impala_jax import config as config_lib
from impala_jax import presets

_CARTPOLE_B = flags.DEFINE_list(
    'cartpole_batch_sizes', ['64', '256', '1024', '4096'],
    'Anakin CartPole environment counts to try.')
_BREAKOUT_B = flags.DEFINE_list(
    'breakout_batch_sizes', ['64', '256', '1024'],
    'Anakin Breakout-MinAtar environment counts to try.')
_ENVPOOL_B = flags.DEFINE_list(
    'envpool_batch_sizes', ['16', '32', '64', '128'],
    'envpool CartPole: environments per pool (= learner batch; the envpool '
    'async batch is half of it) to try.')
_UPDATES_PER_CALL = flags.DEFINE_integer('updates_per_call', 10,
                                         'Anakin updates per call (K).')
_DEVICES = flags.DEFINE_integer(
    'anakin_devices', 1, 'Devices the Anakin runs pmap over. On a CPU, more '
    'than 1 needs XLA_FLAGS=--xla_force_host_platform_device_count=N.')
_SECONDS = flags.DEFINE_float('seconds', 8.0,
                              'Timed seconds per setting (after compiling).')
_SKIP_UPDATES = flags.DEFINE_integer(
    'skip_updates', 10, 'envpool: updates left out of the timing.')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _sizes(values: List[str], name: str) -> List[int]:
  try:
    sizes = [int(v) for v in values]
  except ValueError:
    _fail(f'--{name} takes integers, got {values}.')
  if not sizes or min(sizes) < 1:
    _fail(f'--{name} needs sizes >= 1.')
  return sizes


def _best(rows: List[dict]) -> dict:
  return max(rows, key=lambda r: r['env_steps_per_s'])


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if _SECONDS.value <= 0 or _UPDATES_PER_CALL.value < 1:
    _fail('--seconds must be > 0 and --updates_per_call >= 1.')
  if _SKIP_UPDATES.value < 1:
    _fail('--skip_updates must be >= 1.')
  cartpole_sizes = _sizes(_CARTPOLE_B.value, 'cartpole_batch_sizes')
  breakout_sizes = _sizes(_BREAKOUT_B.value, 'breakout_batch_sizes')
  envpool_sizes = _sizes(_ENVPOOL_B.value, 'envpool_batch_sizes')
  k, seconds = _UPDATES_PER_CALL.value, _SECONDS.value
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every step at INFO
  # gymnax's MinAtar scatters ints into bool arrays (a FutureWarning).
  warnings.filterwarnings('ignore', category=FutureWarning,
                          module='jax._src.ops.scatter')
  print(f'benchmark_anakin: {jax.local_device_count()} x '
        f'{jax.local_devices()[0].device_kind}, {os.cpu_count()} CPUs; '
        'steps/s of training (acting + learning); frames = env steps x 1',
        flush=True)

  results = {}
  if not 1 <= _DEVICES.value <= jax.local_device_count():
    _fail(f'--anakin_devices={_DEVICES.value}: this host has '
          f'{jax.local_device_count()} device(s); on a CPU set XLA_FLAGS='
          '--xla_force_host_platform_device_count=N.')
  anakin_devices = tuple(range(_DEVICES.value))

  def sweep(preset: config_lib.Config, sizes: List[int]) -> dict:
    base = dataclasses.replace(preset, updates_per_call=k,
                               learner_devices=anakin_devices)
    rows = []
    for b in sizes:
      rows.append(common.time_anakin(dataclasses.replace(base, batch_size=b),
                              seconds))
      print(f'anakin  {base.env:<23s} B={b:5d}  '
            f'{rows[-1]["env_steps_per_s"]:11,.0f} steps/s  (compile '
            f'{rows[-1]["first_call_s"]:.1f} s)', flush=True)
    return {'best': _best(rows), 'all': rows,
            'network': list(base.mlp_sizes)}

  results['anakin_cartpole'] = sweep(presets.cartpole_anakin(),
                                     cartpole_sizes)
  results['anakin_breakout'] = sweep(
      presets.get_preset('minatar', env='gymnax:Breakout-MinAtar'),
      breakout_sizes)

  anakin_cp = presets.cartpole_anakin()
  rows = []
  for b in envpool_sizes:
    config = dataclasses.replace(
        presets.cartpole(), mlp_sizes=anakin_cp.mlp_sizes,
        unroll_length=anakin_cp.unroll_length, num_envs=b,
        env_batch_size=max(1, b // 2), batch_size=b, total_frames=10**9,
        lr_decay=False, log_every_seconds=1e9, checkpoint_every_seconds=1e9).validate()
    rows.append(common.time_envpool(config, seconds, _SKIP_UPDATES.value))
    print(f'envpool CartPole-v1 (async)   B={b:5d}  '
          f'{rows[-1]["env_steps_per_s"]:11,.0f} steps/s  (envpool batch '
          f'{config.env_batch_size})', flush=True)
  results['envpool_cartpole'] = {'best': _best(rows), 'all': rows,
                                 'network': list(anakin_cp.mlp_sizes)}

  ratio = (results['anakin_cartpole']['best']['env_steps_per_s'] /
           results['envpool_cartpole']['best']['env_steps_per_s'])
  results['anakin_over_envpool_cartpole'] = ratio
  for name, label in (('anakin_cartpole', 'anakin  gymnax:CartPole-v1'),
                      ('anakin_breakout', 'anakin  gymnax:Breakout-MinAtar'),
                      ('envpool_cartpole', 'envpool CartPole-v1')):
    best = results[name]['best']
    print(f'best {label:32s} {best["env_steps_per_s"]:11,.0f} steps/s = '
          f'frames/s at B={best["batch_size"]}')
  print(f'Anakin / envpool on CartPole = {ratio:.1f}x (target >= 10x)')

  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, 'w') as f:
      json.dump({'machine': common.machine_info(),
                 'frames_definition': 'env steps x action repeat (1 here)',
                 'updates_per_call': k, 'seconds_per_setting': seconds,
                 'anakin_devices': _DEVICES.value,
                 **results}, f, indent=2)
    print('wrote', _JSON.value)


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
