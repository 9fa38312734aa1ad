"""Learner-only throughput on synthetic Atari batches (no environments).

For each torso x batch size, builds the real ``Learner`` (pmapped over
``--devices`` local devices) and times ``Learner.update`` on random uint8
trajectories ``[T+1, B, 4, 84, 84]`` from ``impala_jax.testing``:

* ``first_call_s``: the first update, which includes tracing and XLA
  compilation; ``compile_s`` estimates compilation alone as
  ``first_call_s - update_ms_median``;
* then ``--warmup`` untimed updates, then ``--iters`` timed updates, each
  blocked on its returned metrics (``jax.block_until_ready``);
* ``update_ms_median`` / ``update_ms_mean``: per-update time with the
  trajectories already on device (placed with ``Learner.put_trajectory``
  before timing), i.e. the learner alone, no host->device transfer;
* ``fps_with_transfer``: the same, but each update is handed the host
  (NumPy) trajectory, so the figure includes sharding it on the host and
  copying it to the devices (``Learner.update(host_traj)``). The two kinds of
  update are interleaved, so slow drift of a shared machine hits both alike.

Frames are counted the paper's way: environment steps x action repeat 4, so
``fps = T * B * 4 / seconds_per_update`` (from the median);
``env_steps_per_s = T * B / seconds_per_update``.

Usage::

  python -m experiments.benchmark_learner --json=bench_results/learner.json
  # several CPU "devices" (pmap over host cores):
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
    python -m experiments.benchmark_learner --devices=2 --B=32,64
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

import jax
import numpy as np

from . import _cli
from . import _bench_common as common
from impala_jax.config import TORSOS, Config

OBS_SHAPE = (4, 84, 84)
OBS_DTYPE = np.uint8
ACTION_REPEAT = 4

_TORSOS = flags.DEFINE_list('torsos', ['shallow', 'deep'],
                            f'Torsos to time; any of {", ".join(TORSOS)}.')
_T = flags.DEFINE_integer('T', 20, 'Unroll length (env steps per trajectory).')
_B = flags.DEFINE_list('B', ['32', '64'], 'Batch sizes (trajectories per '
                       'update) to time; each must divide by --devices.')
_DEVICES = flags.DEFINE_integer(
    'devices', None, 'Number of local devices to pmap the learner over '
    '(default: all local devices).')
_WARMUP = flags.DEFINE_integer(
    'warmup', 2, 'Untimed updates (of each kind: device-resident and host '
    'trajectory) after the first, compiling one.')
_ITERS = flags.DEFINE_integer(
    'iters', 10, 'Timed updates per setting (and as many again with host '
    'trajectories, for the with-transfer figure).')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')
_NUM_ACTIONS = flags.DEFINE_integer('num_actions', 6,
                                    'Policy logits (Pong has 6 actions).')
_USE_LSTM = flags.DEFINE_bool('use_lstm', False, 'Add the LSTM core.')


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_settings():
  """Checks every flag and builds every Config before anything compiles."""
  local = jax.local_devices()
  n = len(local) if _DEVICES.value is None else _DEVICES.value
  if not 1 <= n <= len(local):
    _fail(f'--devices={n} must be in [1, {len(local)}] (local devices: '
          f'{len(local)} x {local[0].device_kind}; on a CPU add '
          'XLA_FLAGS=--xla_force_host_platform_device_count=N for more).')
  torsos = [t.strip() for t in _TORSOS.value if t.strip()]
  if not torsos:
    _fail('--torsos is empty.')
  for torso in torsos:
    if torso not in TORSOS:
      _fail(f'unknown torso {torso!r} in --torsos; choose from '
            f'{", ".join(TORSOS)}.')
  batch_sizes = []
  for b in _B.value:
    try:
      batch_sizes.append(int(b))
    except ValueError:
      _fail(f'--B must be a comma-separated list of integers, got {b!r}.')
  if not batch_sizes:
    _fail('--B is empty.')
  for b in batch_sizes:
    if b < 1:
      _fail(f'--B values must be >= 1, got {b}.')
    if b % n:
      _fail(f'--B={b} is not divisible by the number of devices ({n}).')
  if _T.value < 1:
    _fail(f'--T must be >= 1, got {_T.value}.')
  if _ITERS.value < 1:
    _fail(f'--iters must be >= 1, got {_ITERS.value}.')
  if _WARMUP.value < 0:
    _fail(f'--warmup must be >= 0, got {_WARMUP.value}.')
  if _NUM_ACTIONS.value < 1:
    _fail(f'--num_actions must be >= 1, got {_NUM_ACTIONS.value}.')
  settings = []
  for torso in torsos:
    for b in batch_sizes:
      config = Config(torso=torso, unroll_length=_T.value, batch_size=b,
                      use_lstm=_USE_LSTM.value,
                      learner_devices=tuple(range(n)), total_frames=10**9)
      try:
        config.validate()
      except ValueError as e:
        _fail(str(e))
      settings.append(config)
  return n, settings


def bench_one(config: Config, n: int) -> dict:
  return common.time_learner(config, jax.local_devices()[:n], OBS_SHAPE,
                             OBS_DTYPE, ACTION_REPEAT, _NUM_ACTIONS.value,
                             warmup=_WARMUP.value, iters=_ITERS.value)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  n, settings = _parse_settings()
  dev = jax.local_devices()[0]
  machine = dict(common.machine_info(), devices_used=n)
  print(f'learner throughput: {n} x {dev.device_kind} ({machine["backend"]}),'
        f' jax {jax.__version__}, obs [T+1, B, 4, 84, 84] uint8, '
        f'{_NUM_ACTIONS.value} actions, lstm={_USE_LSTM.value}; '
        f'warmup={_WARMUP.value} iters={_ITERS.value}')
  print(f'frames = env steps x {ACTION_REPEAT} (action repeat); '
        'fps = T*B*4 / median update time; "+xfer" = update fed host NumPy '
        'trajectories (includes host->device copy)')
  header = (f'{"torso":8s} {"T":>3s} {"B":>4s} {"dev":>3s} '
            f'{"first_s":>8s} {"compile_s":>9s} {"med_ms":>9s} '
            f'{"mean_ms":>9s} {"fps":>9s} {"fps+xfer":>9s} {"steps/s":>9s}')
  print(header)
  print('-' * len(header))
  rows = []
  for config in settings:
    row = bench_one(config, n)
    rows.append(row)
    print(f'{row["torso"]:8s} {row["T"]:3d} {row["B"]:4d} {n:3d} '
          f'{row["first_call_s"]:8.2f} {row["compile_s"]:9.2f} '
          f'{row["update_ms_median"]:9.1f} {row["update_ms_mean"]:9.1f} '
          f'{row["fps"]:9.0f} {row["fps_with_transfer"]:9.0f} '
          f'{row["env_steps_per_s"]:9.0f}', flush=True)
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, 'w') as f:
      json.dump({'machine': machine,
                 'frames_definition': 'env steps x action repeat 4',
                 'observation': {'shape': list(OBS_SHAPE), 'dtype': 'uint8'},
                 'num_actions': _NUM_ACTIONS.value,
                 'warmup': _WARMUP.value, 'iters': _ITERS.value,
                 'results': rows}, f, indent=2)
    print('wrote', _JSON.value)


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
