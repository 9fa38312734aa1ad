"""The envpool (Sebulba) layout: devices, actor threads, the queue and the
params store, as a ``run_loop.Trainer`` (the loop, metrics, checkpoints and
signals are ``run_loop``'s, shared with the Anakin layout).

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

Failure behaviour (docs/ARCHITECTURE.md): an exception in any thread ends the run with
that exception; SIGINT/SIGTERM finish the current update, write a
checkpoint and return normally; a run resumes from its latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from impala_jax.core import acting
from impala_jax import actor as actor_lib
from impala_jax.core import learner as learner_lib
from impala_jax.core import networks
from impala_jax import run_loop
from impala_jax.config import Config, num_tasks
from impala_jax.envs import factory as env_factory
# ConfigError and RunResult are also what callers catch and get from here.
from impala_jax.run_loop import (ConfigError, RunResult, select_devices,
                                 start_run, write_config)

log = logging.getLogger(__name__)

# Testing hook: "actor:N" makes actor 0 raise after N trajectories, to check
# that a failing thread ends the run (tests/test_runtime.py).
FAULT_ENV_VAR = 'IMPALA_JAX_FAULT_INJECTION'


# --------------------------------------------------------------- set-up ---
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
  k = num_tasks(config)
  if k > 1:
    if config.num_actors % k:
      raise ConfigError(
          f'--num_actors={config.num_actors} must be a multiple of the '
          f'{k} tasks: actors are spread evenly over the tasks.')
  return spec, actor_devices, learner_devices


def actor_piece(local_batch: int, num_tasks: int) -> int:
  """Columns per actor trajectory: the whole local batch for one task; for
  several, ``B / K`` when the tasks divide the batch (each update then
  joins ``K`` pieces, one per task in expectation), else single columns
  (``B`` pieces, as the paper's learner dequeues unrolls of single
  environments from whichever actors produced them)."""
  if num_tasks == 1:
    return local_batch
  return local_batch // num_tasks if local_batch % num_tasks == 0 else 1


def global_learner_devices(indices: Sequence[int]) -> List[jax.Device]:
  """The learner devices of every process: the same local ``indices`` on
  each (one process: just this host's), in process order."""
  devices = []
  for p in range(jax.process_count()):
    local = jax.local_devices(process_index=p)
    devices.extend(local[i] for i in indices)
  return devices


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
               stop: threading.Event, errors: list, fault: Tuple[str, int]):
    super().__init__(name=f'actor-{index}', daemon=True)
    self.actor, self.out, self.stop, self.errors = actor, out, stop, errors
    self.fault = fault
    self.last_output = time.monotonic()   # when it last queued a trajectory

  def run(self) -> None:
    try:
      produced = 0
      kind, after = self.fault
      while not self.stop.is_set():
        if kind == 'actor' and after <= produced:
          raise RuntimeError(f'injected fault in {self.name} after '
                             f'{produced} trajectories')
        if kind == 'stall' and after <= produced:
          threading.Event().wait()   # a stuck environment: never returns
        item = self.actor.next_trajectory()
        produced += 1
        while not self.stop.is_set():
          try:
            self.out.put(item, timeout=0.1)
            self.last_output = time.monotonic()
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


def _fault() -> Tuple[str, int]:
  """Test-only fault injection from ``$IMPALA_JAX_FAULT_INJECTION``:
  ``actor:N`` makes actor 0 raise after N trajectories, ``stall:N`` makes
  it block for ever (a stuck environment); ``('', -1)``: none."""
  spec = os.environ.get(FAULT_ENV_VAR, '')
  kind, _, after = spec.partition(':')
  if kind in ('actor', 'stall') and after.isdigit():
    return kind, int(after)
  return '', -1


class StalledActorError(RuntimeError):
  """The learner received nothing from the actors for the timeout."""


# --------------------------------------------------------------- train ---
class ActorPool:
  """The envpool actors as a trajectory source: ``next`` gives the next
  ``(trajectory, stats)`` from whichever actor thread finished one (or,
  with ``sync=True``, acts in the calling thread, actors in turn);
  ``close`` stops the threads and closes the environments."""

  def __init__(self, actors: Sequence[actor_lib.Actor], queue_size: int,
               sync: bool, timeout_seconds: float = 300.0):
    self.actors = list(actors)
    self.sync = sync
    self.timeout_seconds = timeout_seconds
    self._stop = threading.Event()
    self._errors: list = []
    self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
    self._fault = _fault()
    self._produced = 0
    self._threads = []

  def _start(self) -> None:
    """Starts the actor threads (on the first ``next``: inside the run
    loop, so a stop or a failure always reaches ``close``)."""
    self._threads = [
        _ActorThread(i, actor, self._queue, self._stop, self._errors,
                     self._fault if i == 0 else ('', -1))
        for i, actor in enumerate(self.actors)]
    for t in self._threads:
      t.start()

  def qsize(self) -> int:
    return self._queue.qsize()

  def next(self, stop: threading.Event):
    """The next ``(trajectory, stats)``; None when the run should stop:
    ``stop`` set, or an actor failed or stalled (nothing received for
    ``timeout_seconds``). The run loop then writes its checkpoint, and the
    error is raised at exit (``raise_errors``; with several processes after
    every process stopped)."""
    if stop.is_set():
      return None
    if self.sync:
      kind, after = self._fault
      if kind == 'actor' and after <= self._produced:
        raise RuntimeError(f'injected fault in actor-0 after '
                           f'{self._produced} trajectories')
      self._produced += 1
      actor = self.actors[self._produced % len(self.actors)]
      return actor.next_trajectory()
    if not self._threads:
      self._start()
    waiting_since = time.monotonic()
    while True:
      if self._errors:
        return None
      if stop.is_set():
        return None
      try:
        return self._queue.get(timeout=0.1)
      except queue.Empty:
        if time.monotonic() - waiting_since > self.timeout_seconds:
          self._stalled()
        continue

  def _stalled(self) -> None:
    """Records the actors that queued nothing within the timeout."""
    now = time.monotonic()
    silent = [t for t in self._threads
              if now - t.last_output > self.timeout_seconds] or self._threads
    names = ', '.join(t.name for t in silent)
    error = StalledActorError(
        f'no trajectory for {self.timeout_seconds:g} s (--actor_timeout_'
        f'seconds); a stuck environment? {names} last produced '
        f'{now - silent[0].last_output:.0f} s ago')
    self._errors.append((names, error))
    self._stop.set()

  def close(self) -> None:
    self._stop.set()
    for t in self._threads:
      t.join(timeout=5.0)
    stuck = {t.actor for t in self._threads if t.is_alive()}
    for actor in self.actors:
      if actor not in stuck:   # a stalled thread may still be inside it
        actor.env.close()

  def raise_errors(self) -> None:
    if self._errors:
      name, error = self._errors[0]
      if isinstance(error, StalledActorError):
        raise StalledActorError(f'{name} stalled: {error}')
      raise RuntimeError(f'{name} failed: {type(error).__name__}: {error}'
                         ) from error


class SebulbaTrainer:
  """The envpool layout as a ``run_loop.Trainer``: each ``step`` takes the
  next trajectory from the ``ActorPool`` (``pieces`` of them, joined along
  ``B``, in a multi-task run: the actors of every task feed one queue, so
  a batch mixes the tasks in the proportions the actors produce, evenly on
  average), makes one ``Learner.update`` and publishes the parameters to
  the actors."""

  def __init__(self, spec, learner, pool: ActorPool, store: ParamsStore,
               start_update: int, pieces: int = 1):
    self.spec, self.learner, self.pool, self.store = spec, learner, pool, store
    self.pieces = pieces
    self.updates = start_update
    self.local_frames = 0
    self._lags: List[int] = []
    self._multi_process = jax.process_count() > 1

  @property
  def frames(self) -> int:
    return self.learner.frames

  def params(self):
    return self.learner.params()

  def step(self, stop: threading.Event) -> Optional[run_loop.StepOutput]:
    items = []
    for _ in range(self.pieces):
      item = self.pool.next(stop)
      if item is None:
        break
      items.append(item)
    stopping = len(items) < self.pieces
    if self._multi_process and _any_process(stopping):
      return None  # every process leaves after the same update
    if stopping:
      return None
    trajectory = actor_lib.concat_trajectories([t for t, _ in items])
    self.local_frames += (int(np.prod(trajectory.actions.shape))
                          * self.spec.action_repeat)
    self._lags.extend((self.updates - trajectory.param_version).tolist())
    metrics = self.learner.update(trajectory)
    self.updates += 1
    self.store.publish(self.learner.params(), self.updates)
    returns, lengths, tasks = [], [], []
    for _, stats in items:
      returns.extend(stats.game_returns)
      lengths.extend(stats.game_lengths)
      tasks.extend([stats.task_id] * len(stats.game_returns))
    return run_loop.StepOutput(metrics, returns, lengths, game_tasks=tasks)

  def log_columns(self) -> Dict[str, Any]:
    lags, self._lags = self._lags, []
    return {'policy_lag': float(np.mean(lags)) if lags else 0.0,
            'policy_lag_max': int(np.max(lags)) if lags else 0,
            'queue_size': self.pool.qsize()}

  def progress_note(self, row: Dict[str, Any]) -> str:
    return f'lag {row["policy_lag"]:.1f}'

  def save(self, checkpointer, meta: Dict[str, Any]) -> None:
    state = self.learner.state()
    checkpointer.save(state, {'frames': state.frames,
                              'update_count': int(state.update_count),
                              **meta})

  def close(self) -> None:
    self.pool.close()

  def raise_errors(self) -> None:
    self.pool.raise_errors()


def train(config: Config, logdir: str, *, sync: bool = False,
          resume: Optional[bool] = None, progress: bool = True,
          handle_signals: bool = True,
          on_update: Optional[Callable[[int, dict], None]] = None,
          on_start: Optional[Callable[[Any], None]] = None) -> RunResult:
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
    on_start: optional callback with the ``checkpoint.Restored`` the run
      resumes from (None: a new run), before anything compiles.

  Returns:
    a ``RunResult``. Raises ``ConfigError`` for bad settings (before
    compiling) and re-raises the first exception of any actor thread.
  """
  spec, actor_devices, learner_devices = check_config(config)
  process, primary = jax.process_index(), jax.process_index() == 0
  local_batch = config.batch_size // jax.process_count()
  network, template, checkpointer, resume = start_run(
      config, spec, logdir, resume, is_primary=primary)
  meta: Dict[str, Any] = {}
  state = template
  restored = run_loop.restore_run(checkpointer, template) if resume else None
  if restored is not None:
    state, meta = restored.state, restored.meta
  if on_start is not None:
    on_start(restored)
  learner = learner_lib.Learner(
      config, network, learner_devices, spec.obs_shape, spec.obs_dtype,
      spec.action_repeat, template.rng, state=state)
  start_update = int(state.update_count)
  if primary:
    write_config(logdir, config, spec, start_update)

  store = ParamsStore(learner.params(), start_update)
  policy_step = acting.make_policy_step(network)
  k = num_tasks(config)
  piece = actor_piece(local_batch, k)
  actors = []
  for i in range(config.num_actors):
    task = i % k   # actors spread evenly over the tasks
    # Fresh, distinct streams per actor and per resume (envpool's own state
    # cannot be checkpointed; the action-sampling RNG is reseeded instead).
    seed = (config.seed * 10_007 + i * 101 + start_update * 7
            + process * 1_000_003)
    env = env_factory.make_task_pool(
        config, task, num_envs=config.num_envs,
        batch_size=config.env_batch_size, seed=seed,
        num_threads=config.env_threads)
    actors.append(actor_lib.Actor(
        env, network, store.get, unroll_length=config.unroll_length,
        batch_size=piece, discount=config.discount,
        device=actor_devices[i % len(actor_devices)], seed=seed,
        policy_step=policy_step, task_id=task))
  pieces = local_batch // piece
  pool = ActorPool(actors, config.queue_size * pieces, sync,
                   timeout_seconds=config.actor_timeout_seconds)
  trainer = SebulbaTrainer(spec, learner, pool, store, start_update,
                           pieces=pieces)
  return run_loop.run(
      config, trainer, logdir=logdir, checkpointer=checkpointer,
      network=network, resume=resume,
      wall_time_before=float(meta.get('wall_time', 0.0)), progress=progress,
      handle_signals=handle_signals, is_primary=primary, on_step=on_update)
