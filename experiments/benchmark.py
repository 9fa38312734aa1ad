r"""Acting ceiling, learning ceiling and the whole pipeline, in one run.

  python -m experiments.benchmark --json=bench_results/pipeline.json

For one preset (default ``cpu_atari``), on this machine, one after another
(never concurrently: each would steal the other's cores):

1. ``env_fps``: the preset's envpool pool (same ``num_envs``,
   ``env_batch_size``, threads and Atari protocol) stepped with uniform
   random actions through async ``send``/``recv``: the ceiling for acting.
2. ``learner_fps``: ``Learner.update`` alone on synthetic batches of the
   preset's ``[T+1, B]`` shape, fed host NumPy trajectories (so it includes
   the host->device copy the pipeline also pays): the ceiling for learning.
3. ``pipeline_fps``: ``runtime.train`` in its asynchronous layout (actor
   threads, bounded queue, learner, params store), measured from the
   ``--skip_updates``-th update to the last, so compilation is excluded.

``ratio = pipeline_fps / min(env_fps, learner_fps)``. Frames are env steps x
action repeat (4 for Atari) everywhere.

Each ceiling is measured with the whole machine to itself, but the pipeline
must run both on the same cores. So the program also reports the CPU time
per frame of each ceiling (process time, all threads) and
``shared_cores_fps = cores / (cpu_per_frame_env + cpu_per_frame_learner)``:
what acting plus learning could reach if every core were busy all the time
and nothing else cost anything. On an accelerator machine, where the learner
does not use the CPU cores, it is not a bound; on a CPU-only machine it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time

from absl import flags
from absl import logging

import jax

from . import _cli
from . import _bench_common as common
from impala_jax import presets
from impala_jax import run_loop
from impala_jax import runtime
from impala_jax.envs import factory as env_factory
from impala_jax.metrics import read_metrics

_PRESET = flags.DEFINE_string('preset', 'cpu_atari', 'Config preset.')
_ENV = flags.DEFINE_string('env', None, 'Environment id (default: preset).')
_ENV_SECONDS = flags.DEFINE_float('env_seconds', 20.0,
                                  'Seconds of random-action stepping.')
_LEARNER_ITERS = flags.DEFINE_integer('learner_iters', 10,
                                      'Timed learner updates.')
_PIPELINE_SECONDS = flags.DEFINE_float(
    'pipeline_seconds', 60.0, 'Approximate length of the pipeline run (its '
    'frame budget is this times the smaller ceiling).')
_SKIP_UPDATES = flags.DEFINE_integer(
    'skip_updates', 5, 'Pipeline updates left out of the timing (compile, '
    'queue fill).')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _ENV_SECONDS.value <= 0 or _PIPELINE_SECONDS.value <= 0:
    _fail('--env_seconds and --pipeline_seconds must be > 0.')
  if _LEARNER_ITERS.value < 1 or _SKIP_UPDATES.value < 1:
    _fail('--learner_iters and --skip_updates must be >= 1.')
  try:
    config = presets.get_preset(_PRESET.value, env=_ENV.value)
    spec, actor_devices, learner_devices = runtime.check_config(config)
  except (ValueError, runtime.ConfigError) as e:
    _fail(str(e))
  T, B, repeat = config.unroll_length, config.batch_size, spec.action_repeat
  print(f'benchmark: preset {_PRESET.value}, {config.env}, torso '
        f'{config.torso}, T={T} B={B}, {config.num_envs} envs '
        f'(batch {config.env_batch_size}) x {config.num_actors} actor(s); '
        f'{jax.local_device_count()} x {jax.local_devices()[0].device_kind};'
        f' frames = env steps x {repeat}', flush=True)

  # 1. acting ceiling
  env = common.random_env_fps(
      lambda: env_factory.make_pool(config, num_envs=config.num_envs,
                                    batch_size=config.env_batch_size, seed=0,
                                    num_threads=config.env_threads),
      spec.num_actions, _ENV_SECONDS.value, repeat)
  print(f'env (random actions)   {env["fps"]:9.0f} frames/s', flush=True)

  # 2. learning ceiling (host trajectories, as the pipeline feeds them)
  learner = common.time_learner(config, learner_devices, spec.obs_shape,
                                spec.obs_dtype, repeat, spec.num_actions,
                                warmup=2, iters=_LEARNER_ITERS.value)
  learner_fps = learner['fps_with_transfer']
  print(f'learner (synthetic)    {learner_fps:9.0f} frames/s '
        f'(device-resident batches: {learner["fps"]:.0f}; compile '
        f'{learner["compile_s"]:.1f} s)', flush=True)

  # 3. the asynchronous pipeline
  ceiling = min(env['fps'], learner_fps)
  per_update = T * B * repeat
  updates = max(_SKIP_UPDATES.value + 10,
                int(ceiling * _PIPELINE_SECONDS.value / per_update))
  run_config = dataclasses.replace(
      config, total_frames=updates * per_update, log_every_seconds=5.0,
      checkpoint_every_seconds=1e9)
  stamps = []
  with tempfile.TemporaryDirectory() as logdir:
    start = time.perf_counter()
    result = runtime.train(
        run_config, logdir, sync=False, resume=False, progress=False,
        on_update=lambda n, m: stamps.append((n, time.perf_counter())))
    wall = time.perf_counter() - start
    rows = read_metrics(os.path.join(logdir, 'metrics.csv'))
  (u0, t0), (u1, t1) = stamps[_SKIP_UPDATES.value - 1], stamps[-1]
  pipeline_fps = (u1 - u0) * per_update / (t1 - t0)
  ratio = pipeline_fps / ceiling
  lag = float(rows[-1]['policy_lag']) if rows else float('nan')
  print(f'pipeline (async)       {pipeline_fps:9.0f} frames/s '
        f'({result.updates} updates, {wall:.0f} s wall incl. start-up; '
        f'policy lag {lag:.1f})', flush=True)
  cores = os.cpu_count() or 1
  shared = cores / (env['cpu_s_per_frame'] + learner['cpu_s_per_frame'])
  queue_mean = (sum(float(r['queue_size']) for r in rows) / len(rows)
                if rows else float('nan'))
  print(f'ratio pipeline / min(env, learner) = {ratio:.2f} (target >= 0.7)')
  print(f'cores busy: env {env["cores_busy"]:.2f}, learner '
        f'{learner["cores_busy"]:.2f} of {cores}; both on shared cores at '
        f'most {shared:.0f} frames/s -> pipeline at '
        f'{pipeline_fps / shared:.2f} of that')

  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, 'w') as f:
      json.dump({
          'machine': common.machine_info(), 'preset': _PRESET.value,
          'env': config.env, 'frames_definition':
              f'env steps x action repeat {repeat}',
          'config': run_loop.config_dict(config),
          'env_fps': env['fps'], 'learner_fps': learner_fps,
          'learner_fps_device_resident': learner['fps'],
          'pipeline_fps': pipeline_fps, 'ratio': ratio,
          'pipeline_updates': result.updates, 'pipeline_wall_s': wall,
          'policy_lag': lag, 'shared_cores_fps': shared,
          'ratio_to_shared_cores': pipeline_fps / shared,
          'queue_size_mean': queue_mean, 'env_detail': env, 'learner_detail': learner,
      }, f, indent=2)
    print('wrote', _JSON.value)


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
