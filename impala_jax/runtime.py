"""The outer shell: devices, actor threads, the queue, the params store, the
learner loop, metrics, checkpoints, signals and error propagation.

Sebulba layout (one host)::

  actor thread i: envpool_i ── jitted policy on actor device ──▶ Trajectory
        │ (bounded queue: actors block when the learner falls behind)
        ▼
  main thread: Learner.update (pmapped over learner devices)
        │ publish (params, version), block_until_ready first
        ▼
  ParamsStore ──▶ actors fetch the newest before each trajectory

``sync=True`` runs acting and learning alternately in the main thread: for a
given seed the run is deterministic (tests use it).

Failure behaviour (DESIGN.md): an exception in any thread ends the run with
that exception; SIGINT/SIGTERM finish the current update, write a
checkpoint and return normally; a run resumes from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from impala_jax import acting
from impala_jax import actor as actor_lib
from impala_jax import checkpoint as checkpoint_lib
from impala_jax import evaluation
from impala_jax import learner as learner_lib
from impala_jax import metrics as metrics_lib
from impala_jax import networks
from impala_jax.config import (Config, atari_protocol_changes,
                               describe_atari_protocol)
from impala_jax.envs import env_family
from impala_jax.envs import factory as env_factory

log = logging.getLogger(__name__)

# Testing hook: "actor:N" makes actor 0 raise after N trajectories, to check
# that a failing thread ends the run (tests/test_runtime.py).
FAULT_ENV_VAR = 'IMPALA_JAX_FAULT_INJECTION'


class ConfigError(ValueError):
  """A bad flag or an inconsistent set-up, found before anything compiles."""


@dataclasses.dataclass
class RunResult:
  frames: int
  updates: int
  episodes: int
  recent_returns: List[float]
  stopped_by_signal: bool = False
  local_frames: int = 0     # frames this process's actors contributed
  params: Any = None        # final parameters (host NumPy pytree)


# --------------------------------------------------------------- set-up ---
def select_devices(indices: Sequence[int], what: str) -> List[jax.Device]:
  devices = jax.local_devices()
  bad = [i for i in indices if not 0 <= i < len(devices)]
  if bad:
    raise ConfigError(
        f'--{what}={",".join(map(str, indices))}: index {bad[0]} is out of '
        f'range; this host has {len(devices)} device(s) '
        f'(valid indices 0..{len(devices) - 1}).')
  if len(set(indices)) != len(indices):
    raise ConfigError(f'--{what} lists a device twice: {list(indices)}.')
  return [devices[i] for i in indices]


def check_config(config: Config):
  """Validates everything that can be checked before compiling.

  Returns ``(env_spec, actor_devices, learner_devices)``.
  """
  try:
    config.validate()
    if env_factory.is_jax_env(config):
      raise ValueError(
          f'{config.env!r}: JAX environments run in the Anakin layout '
          '(--runtime=anakin or auto), not with envpool actors.')
    spec = env_factory.env_spec(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  actor_devices = select_devices(config.actor_devices, 'actor_devices')
  select_devices(config.learner_devices, 'learner_devices')
  learner_devices = global_learner_devices(config.learner_devices)
  if config.batch_size % len(learner_devices):
    raise ConfigError(
        f'--batch_size={config.batch_size} must be divisible by the number '
        f'of learner devices over all {jax.process_count()} process(es) '
        f'({len(learner_devices)}).')
  error = networks.torso_fit_error(config.torso, spec.obs_shape, config.env)
  if error:
    raise ConfigError(error)
  return spec, actor_devices, learner_devices


def global_learner_devices(indices: Sequence[int]) -> List[jax.Device]:
  """The learner devices of every process: the same local ``indices`` on
  each (one process: just this host's), in process order."""
  devices = []
  for p in range(jax.process_count()):
    local = jax.local_devices(process_index=p)
    devices.extend(local[i] for i in indices)
  return devices


def set_on_signals(event: threading.Event,
                   enabled: bool = True) -> Callable[[], None]:
  """SIGINT/SIGTERM set ``event`` (the run then finishes its update,
  checkpoints and returns) instead of raising. Only from the main thread
  (elsewhere, or with ``enabled=False``, nothing is installed). Returns a
  function that restores the previous handlers."""
  previous = {}
  if enabled and threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGINT, signal.SIGTERM):
      previous[sig] = signal.signal(sig, lambda signum, frame: event.set())
  def restore():
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  return restore


def start_run(config: Config, spec, logdir: str, resume: Optional[bool],
              is_primary: bool = True):
  """The start every runtime shares: the run directory, the network, the
  freshly initialised ``TrainState`` (the template a checkpoint restores
  into) and the checkpointer of ``logdir/checkpoints``.

  Returns ``(network, template_state, checkpointer, resume)``, where
  ``resume`` is resolved (None: True when a checkpoint exists).
  """
  os.makedirs(logdir, exist_ok=True)
  ckpt_dir = os.path.join(logdir, 'checkpoints')
  if resume is None:
    resume = checkpoint_lib.Checkpointer.has_checkpoint(ckpt_dir)
  network = learner_lib.make_network(config, spec.num_actions)
  template = learner_lib.init_train_state(
      config, network, spec.obs_shape, spec.obs_dtype, spec.action_repeat,
      jax.random.PRNGKey(config.seed))
  checkpointer = checkpoint_lib.Checkpointer(ckpt_dir, is_primary=is_primary)
  return network, template, checkpointer, resume


# ------------------------------------------------------- params store ---
class ParamsStore:
  """The newest parameters and their version (= learner update count)."""

  def __init__(self, params, version: int = 0):
    self._lock = threading.Lock()
    self.publish(params, version)

  def publish(self, params, version: int) -> None:
    # Ready before readable: actors must never wait on an unfinished
    # computation (noted in Cleanba's code: it can hang actor threads).
    params = jax.block_until_ready(params)
    with self._lock:
      self._params, self._version = params, int(version)

  def get(self) -> Tuple[Any, int]:
    with self._lock:
      return self._params, self._version


# ------------------------------------------------------------- actors ---
class _ActorThread(threading.Thread):
  """Runs one Actor, pushing (trajectory, stats) into the queue."""

  def __init__(self, index: int, actor: actor_lib.Actor, out: queue.Queue,
               stop: threading.Event, errors: list, fail_after: int):
    super().__init__(name=f'actor-{index}', daemon=True)
    self.actor, self.out, self.stop, self.errors = actor, out, stop, errors
    self.fail_after = fail_after

  def run(self) -> None:
    try:
      produced = 0
      while not self.stop.is_set():
        if 0 <= self.fail_after <= produced:
          raise RuntimeError(f'injected fault in {self.name} after '
                             f'{produced} trajectories')
        item = self.actor.next_trajectory()
        produced += 1
        while not self.stop.is_set():
          try:
            self.out.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # pylint: disable=broad-except
      self.errors.append((self.name, e))
      self.stop.set()


def _any_process(flag: bool) -> bool:
  """True on every process when ``flag`` is True on any (a collective, so
  a stop or a failure on one process ends the run after the same update
  everywhere instead of leaving the others waiting in the next one)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def _fault_after() -> int:
  spec = os.environ.get(FAULT_ENV_VAR, '')
  if spec.startswith('actor:'):
    return int(spec.split(':', 1)[1])
  return -1


# --------------------------------------------------------------- train ---
def train(config: Config, logdir: str, *, sync: bool = False,
          resume: Optional[bool] = None, progress: bool = True,
          handle_signals: bool = True,
          on_update: Optional[Callable[[int, dict], None]] = None
          ) -> RunResult:
  """Trains until ``config.total_frames`` frames have been learned from.

  Args:
    config: the run's configuration.
    logdir: where ``config.json``, ``metrics.csv``, TensorBoard events and
      ``checkpoints/`` go.
    sync: act and learn alternately in this thread (deterministic).
    resume: continue from ``logdir/checkpoints`` (default: when one exists).
    progress: print the one-line progress display.
    handle_signals: SIGINT/SIGTERM stop the run cleanly (main thread only).
    on_update: optional callback ``(update_count, metrics)``.

  Returns:
    a ``RunResult``. Raises ``ConfigError`` for bad settings (before
    compiling) and re-raises the first exception of any actor thread.
  """
  spec, actor_devices, learner_devices = check_config(config)
  process, primary = jax.process_index(), jax.process_index() == 0
  local_batch = config.batch_size // jax.process_count()
  network, template, checkpointer, resume = start_run(
      config, spec, logdir, resume, is_primary=primary)
  rng = template.rng
  meta: Dict[str, Any] = {}
  state = template
  if resume:
    restored = checkpointer.restore(template)
    if restored is not None:
      state, meta = restored
      log.info('resumed from update %d, frame %d', int(state.update_count),
               state.frames)
  learner = learner_lib.Learner(
      config, network, learner_devices, spec.obs_shape, spec.obs_dtype,
      spec.action_repeat, rng, state=state)
  start_update = int(state.update_count)
  if primary:
    _write_config(logdir, config, spec, start_update)

  store = ParamsStore(learner.params(), start_update)
  policy_step = acting.make_policy_step(network)
  actors = []
  for i in range(config.num_actors):
    # Fresh, distinct streams per actor and per resume (envpool's own state
    # cannot be checkpointed; the action-sampling RNG is reseeded instead).
    seed = (config.seed * 10_007 + i * 101 + start_update * 7
            + process * 1_000_003)
    env = env_factory.make_pool(config, num_envs=config.num_envs,
                                batch_size=config.env_batch_size, seed=seed,
                                num_threads=config.env_threads)
    actors.append(actor_lib.Actor(
        env, network, store.get, unroll_length=config.unroll_length,
        batch_size=local_batch, discount=config.discount,
        device=actor_devices[i % len(actor_devices)], seed=seed,
        policy_step=policy_step))

  writer = metrics_lib.MetricsWriter(
      logdir, resume_from_frames=learner.frames if resume else None,
      is_primary=primary)
  progress_line = (metrics_lib.Progress(config.total_frames)
                   if progress and primary else None)
  episodes = metrics_lib.EpisodeStats()
  rate = metrics_lib.RateMeter()
  rate.rate(learner.frames)

  stop = threading.Event()
  stop_signal = threading.Event()
  errors: list = []
  trajectories: queue.Queue = queue.Queue(maxsize=config.queue_size)
  threads = []
  restore_signals = set_on_signals(stop_signal, handle_signals)

  fail_after = _fault_after()
  multi_process = jax.process_count() > 1
  if not sync:
    for i, actor in enumerate(actors):
      threads.append(_ActorThread(i, actor, trajectories, stop, errors,
                                  fail_after if i == 0 else -1))
    for t in threads:
      t.start()

  def next_item():
    """The next (trajectory, stats); None when the run should stop."""
    if stop_signal.is_set():
      return None
    if sync:
      if 0 <= fail_after <= sync_state['produced']:
        raise RuntimeError(f'injected fault in actor-0 after '
                           f'{sync_state["produced"]} trajectories')
      sync_state['produced'] += 1
      actor = actors[sync_state['produced'] % len(actors)]
      return actor.next_trajectory()
    while True:
      if errors:
        if multi_process:
          return None  # stop with the others; the error is raised below
        name, error = errors[0]
        raise RuntimeError(f'{name} failed: {type(error).__name__}: '
                           f'{error}') from error
      if stop_signal.is_set():
        return None
      try:
        return trajectories.get(timeout=0.1)
      except queue.Empty:
        continue

  sync_state = {'produced': 0}
  last_log = last_ckpt = time.monotonic()
  metrics: Dict[str, Any] = {}
  lags: List[int] = []
  updates = start_update
  local_frames = 0
  next_eval = learner.frames + config.eval_every_frames
  evaluator = (evaluation.PeriodicEvaluator(config, network)
               if config.eval_every_frames else None)
  wall_start = time.time() - float(meta.get('wall_time', 0.0))
  try:
    while learner.frames < config.total_frames:
      item = next_item()
      if multi_process and _any_process(item is None):
        break  # every process leaves after the same update
      if item is None:
        break
      trajectory, stats = item
      local_frames += (int(np.prod(trajectory.actions.shape))
                       * spec.action_repeat)
      lags.extend((updates - trajectory.param_version).tolist())
      episodes.add(stats.game_returns, stats.game_lengths)
      metrics = learner.update(trajectory)
      updates += 1
      store.publish(learner.params(), updates)
      if on_update is not None:
        on_update(updates, metrics)
      now = time.monotonic()
      done = learner.frames >= config.total_frames
      if now - last_log >= config.log_every_seconds or done:
        last_log = now
        row = _log_row(learner, updates, metrics, episodes, lags, rate,
                       trajectories.qsize(), time.time() - wall_start)
        lags = []
        writer.write(row)
        if progress_line:
          progress_line.update(row['frames'], row['sps'],
                               row['episode_return'],
                               extra=f'lag {row["policy_lag"]:.1f}')
      if config.eval_every_frames and learner.frames >= next_eval:
        next_eval += config.eval_every_frames
        if primary:
          writer.write(evaluator.row(learner, updates))
      if now - last_ckpt >= config.checkpoint_every_seconds:
        last_ckpt = now
        _save(checkpointer, learner, config, wall_start)
    _save(checkpointer, learner, config, wall_start)
  finally:
    stop.set()
    for t in threads:
      t.join(timeout=5.0)
    for actor in actors:
      actor.env.close()
    restore_signals()
    if progress_line:
      progress_line.done()
    writer.close()
  if errors:
    name, error = errors[0]
    raise RuntimeError(f'{name} failed: {type(error).__name__}: {error}'
                       ) from error
  return RunResult(frames=learner.frames, updates=updates,
                   episodes=episodes.total_episodes, recent_returns=list(
                       episodes.last_returns(100)),
                   stopped_by_signal=stop_signal.is_set(),
                   local_frames=local_frames,
                   params=jax.device_get(learner.params()))


def _log_row(learner, updates, metrics, episodes, lags, rate, queue_size,
             wall_time) -> Dict[str, Any]:
  host = {k: float(v) for k, v in jax.device_get(metrics).items()}
  ep = episodes.drain()
  row = {
      'frames': learner.frames, 'updates': updates,
      'sps': rate.rate(learner.frames),
      'episode_return': ep['episode_return'],
      'episode_length': ep['episode_length'], 'episodes': ep['episodes'],
      'policy_lag': float(np.mean(lags)) if lags else 0.0,
      'policy_lag_max': int(np.max(lags)) if lags else 0,
      'queue_size': queue_size, 'wall_time': wall_time,
  }
  row.update(host)
  row['skipped_updates'] = int(host.get('skipped_updates', 0))
  return row


def _save(checkpointer, learner, config, wall_start) -> None:
  state = learner.state()
  checkpointer.save(state, {
      'frames': state.frames, 'update_count': int(state.update_count),
      'wall_time': time.time() - wall_start,
      'config': config_dict(config)})


def config_dict(config: Config) -> Dict[str, Any]:
  """The config as a JSON-ready dict (tuples become lists)."""
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in dataclasses.asdict(config).items()}


def _write_config(logdir: str, config: Config, spec, start_update: int):
  path = os.path.join(logdir, 'config.json')
  payload = {
      'config': config_dict(config),
      'env_spec': {'env_id': spec.env_id, 'obs_shape': list(spec.obs_shape),
                   'obs_dtype': str(np.dtype(spec.obs_dtype)),
                   'num_actions': spec.num_actions,
                   'action_repeat': spec.action_repeat,
                   'max_episode_steps': spec.max_episode_steps,
                   'envpool_kwargs': spec.envpool_kwargs},
      'jax': jax.__version__, 'devices': [str(d) for d in jax.devices()],
      'started_at_update': start_update,
  }
  if env_family(config.env) == 'atari':
    # The protocol by name, and where this run departs from it (the
    # effective envpool arguments are in env_spec.envpool_kwargs).
    payload['atari_protocol'] = {
        'name': config.atari_protocol,
        'departures': atari_protocol_changes(config),
        'description': describe_atari_protocol(config)}
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, default=str)
  os.replace(tmp, path)
