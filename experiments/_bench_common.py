"""Pieces shared by the benchmark programs (no flags here)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Sequence

import jax
import numpy as np

from impala_jax import anakin
from impala_jax.core import learner as learner_lib
from impala_jax import runtime
from impala_jax import testing
from impala_jax.config import Config

NUM_TRAJECTORIES = 2  # pre-generated synthetic batches, used in turn


def machine_info() -> dict:
  """Where a figure was measured."""
  dev = jax.local_devices()[0]
  return {
      'platform': platform.platform(),
      'processor': platform.processor() or platform.machine(),
      'cpu_count': os.cpu_count(), 'python': sys.version.split()[0],
      'jax': jax.__version__, 'backend': jax.default_backend(),
      'device_kind': dev.device_kind,
      'local_device_count': len(jax.local_devices()),
  }


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def time_learner(config: Config, devices: Sequence[jax.Device],
                 obs_shape, obs_dtype, action_repeat: int, num_actions: int,
                 *, warmup: int, iters: int) -> dict:
  """Times ``Learner.update`` on synthetic trajectories ``[T+1, B, *obs]``.

  The first update (tracing + compilation) is timed on its own; then
  ``warmup`` untimed updates of each kind, then ``iters`` timed updates
  with device-resident trajectories interleaved with ``iters`` fed host
  NumPy trajectories (so the latter include sharding and the copy).
  Frames = env steps x ``action_repeat``; rates use the median.
  """
  T, B = config.unroll_length, config.batch_size
  network = learner_lib.make_network(config, num_actions)
  learner = learner_lib.Learner(config, network, list(devices), obs_shape,
                                obs_dtype, action_repeat=action_repeat,
                                rng=jax.random.PRNGKey(0))
  lstm_size = config.lstm_size if config.use_lstm else 0
  host = [testing.synthetic_trajectory(seed, T, B, obs_shape, obs_dtype,
                                       num_actions, lstm_size=lstm_size)
          for seed in range(NUM_TRAJECTORIES)]
  on_device = [jax.block_until_ready(learner.put_trajectory(t))
               for t in host]

  first_call = _timed(lambda: learner.update(on_device[0]))
  for i in range(warmup):
    learner.update(on_device[i % NUM_TRAJECTORIES])
    jax.block_until_ready(learner.update(host[i % NUM_TRAJECTORIES]))

  device_s, transfer_s = [], []
  cpu0, wall0 = time.process_time(), time.perf_counter()
  for i in range(iters):
    k = i % NUM_TRAJECTORIES
    device_s.append(_timed(lambda: learner.update(on_device[k])))
    transfer_s.append(_timed(lambda: learner.update(host[k])))

  cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
  median = statistics.median(device_s)
  median_transfer = statistics.median(transfer_s)
  steps = T * B
  return {
      'torso': config.torso, 'T': T, 'B': B, 'devices': len(devices),
      'use_lstm': config.use_lstm,
      'compile_s': first_call - median,
      'first_call_s': first_call,
      'update_ms_median': 1e3 * median,
      'update_ms_mean': 1e3 * statistics.mean(device_s),
      'update_ms_median_with_transfer': 1e3 * median_transfer,
      'fps': steps * action_repeat / median,
      'fps_with_transfer': steps * action_repeat / median_transfer,
      'env_steps_per_s': steps / median,
      # Process CPU time per frame over the timed updates (all threads):
      # what an update costs in core-seconds, whatever its parallelism.
      'cpu_s_per_frame': cpu_s / (2 * iters * steps * action_repeat),
      'cores_busy': cpu_s / wall_s,
  }


def random_env_fps(make_env_fn, num_actions: int, seconds: float,
                   action_repeat: int, seed: int = 0) -> dict:
  """Steps a ``BatchedEnv`` with uniform random actions (async send/recv)
  for ``seconds`` after a short warm-up; the acting ceiling."""
  rng = np.random.default_rng(seed)
  env = make_env_fn()
  try:
    env.async_reset()
    def step():
      batch = env.recv()
      actions = rng.integers(0, num_actions, size=len(batch.env_id))
      env.send(actions, batch.env_id)
      return len(batch.env_id)
    warm_until = time.perf_counter() + min(2.0, seconds / 5)
    while time.perf_counter() < warm_until:
      step()
    steps, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
      steps += step()
    elapsed = time.perf_counter() - start
    cpu_s = time.process_time() - cpu0
  finally:
    env.close()
  return {'env_steps': steps, 'seconds': elapsed,
          'env_steps_per_s': steps / elapsed,
          'fps': steps * action_repeat / elapsed,
          'cpu_s_per_frame': cpu_s / (steps * action_repeat),
          'cores_busy': cpu_s / elapsed}


def time_anakin(config: Config, seconds: float) -> dict:
  """Steps/s of ``AnakinRunner.run`` on one device, compile excluded."""
  env, devices = anakin.check_config(config)
  network = learner_lib.make_network(config, env.spec.num_actions)
  state = learner_lib.init_train_state(
      config, network, env.spec.obs_shape, env.spec.obs_dtype, 1,
      jax.random.PRNGKey(0))
  actor_state = jax.jit(lambda k: anakin.init_actor_state(env, network, k))(
      jax.random.split(jax.random.PRNGKey(1), config.batch_size))
  runner = anakin.AnakinRunner(config, env, network, devices, state,
                               actor_state)
  start = time.perf_counter()
  jax.block_until_ready(runner.run())
  compile_s = time.perf_counter() - start
  jax.block_until_ready(runner.run())   # one more untimed call
  calls, start = 0, time.perf_counter()
  while True:
    jax.block_until_ready(runner.run())
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      break
  steps = calls * config.updates_per_call * config.unroll_length * (
      config.batch_size)
  return {'batch_size': config.batch_size, 'T': config.unroll_length,
          'devices': len(devices),
          'updates_per_call': config.updates_per_call, 'calls': calls,
          'seconds': elapsed, 'first_call_s': compile_s,
          'env_steps_per_s': steps / elapsed, 'fps': steps / elapsed}


class _Enough(Exception):
  """Ends a timed ``runtime.train`` run from its update callback."""


def time_envpool(config: Config, seconds: float,
                 skip_updates: int) -> dict:
  """Steps/s of the asynchronous envpool pipeline (``runtime.train``)."""
  stamps = []
  per_update = config.unroll_length * config.batch_size

  def on_update(n, metrics):
    del metrics
    stamps.append((n, time.perf_counter()))
    if (len(stamps) > skip_updates and
        stamps[-1][1] - stamps[skip_updates - 1][1] >= seconds):
      raise _Enough()
  with tempfile.TemporaryDirectory() as logdir:
    try:
      runtime.train(config, logdir, sync=False, resume=False, progress=False,
                    handle_signals=False, on_update=on_update)
    except _Enough:
      pass
  (u0, t0), (u1, t1) = stamps[skip_updates - 1], stamps[-1]
  rate = (u1 - u0) * per_update / (t1 - t0)
  return {'num_envs': config.num_envs, 'env_batch_size':
          config.env_batch_size, 'batch_size': config.batch_size,
          'T': config.unroll_length, 'updates_timed': u1 - u0,
          'seconds': t1 - t0, 'env_steps_per_s': rate, 'fps': rate}
