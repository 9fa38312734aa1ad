"""The Anakin layout: acting and learning in one compiled program.

The program itself (pure) is ``impala_jax.core.anakin_program``; this module
runs it on devices (``AnakinRunner``) and drives it through the shared run
loop (``AnakinTrainer``, ``train_anakin``).

For environments written in JAX (``impala_jax/envs/jax_envs.py``) there is
no host round trip to pay for (Hessel et al. 2021, "Podracer architectures
for scalable reinforcement learning", the Anakin layout). One call of the
``pmap``ped function runs ``K = config.updates_per_call`` IMPALA updates,
with no Python between steps::

  lax.scan over K updates:
    lax.scan over T steps:                          (rollout)
      policy: AgentNetwork.step on the [B/D] batch, one action per env
      env:    vmap(JaxEnv.step) over the [B/D] environments
    learner.update_step(train_state, trajectory)    (the envpool path's
                                                      update: unroll,
                                                      V-trace, loss, psum,
                                                      RMSProp)

Each device owns ``B/D`` environments with their own state and PRNG key
(one key per environment, so the data do not depend on how environments
are split over devices: 2 devices compute what 1 computes, tested).

The trajectory has exactly the envpool actor's layout (``actor.py``; tested
on a scripted sequence): ``inputs[t] = (obs_t, first_t, last_action,
last_reward)`` for ``t = 0..T``, ``rewards[t]`` and ``discounts[t] = gamma
(1 - terminated)`` from the step that followed ``obs_t``, ``mask[t] = 0``
where ``obs_t`` was terminal (the environment ignores that action and
resets), truncated episodes bootstrapping from their real final
observation; consecutive unrolls overlap by one observation. The policy is
on-policy by construction: the parameters that act are the ones that learn
(policy lag 0; V-trace's weights are 1 up to float error).

Whole-game statistics are reduced on the device: the number of games that
ended in a call, the sums of their returns and lengths (``psum`` over
devices), and the returns and lengths of the last ``RECENT_GAMES`` games of
each device.

Known limits: frames are rounded up to whole calls of ``K`` updates; the
policy's torso runs inside ``lax.scan`` (fine for MLPs, slow on CPU for
convolutions, see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from impala_jax import run_loop
from impala_jax.config import Config, num_tasks
from impala_jax.core import learner as learner_lib
from impala_jax.core import networks
from impala_jax.core.anakin_program import (AXIS, ActorState, Games, Policy,
                                            init_actor_state, make_train_fn)
from impala_jax.envs import factory as env_factory
from impala_jax.envs import jax_envs

log = logging.getLogger(__name__)


# ----------------------------------------------------------- the runner ---
def _shard(tree, num_shards: int):
  """Host ``[B, ...]`` leaves -> ``[D, B/D, ...]``."""
  def split(x):
    x = np.asarray(x)
    return x.reshape((num_shards, x.shape[0] // num_shards) + x.shape[1:])
  return jax.tree_util.tree_map(split, tree)


def _unshard(tree):
  """Device ``[D, B/D, ...]`` leaves -> host ``[B, ...]``."""
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]),
      jax.device_get(tree))


class AnakinRunner:
  """Holds the replicated train state and sharded environments; ``run()``
  makes one call of ``K`` updates on every device.

  Args:
    config: the run's config (``batch_size`` environments in all,
      ``updates_per_call`` updates per call).
    env: the ``JaxEnv``.
    network: the ``AgentNetwork``.
    devices: the devices to ``pmap`` over; ``batch_size`` must divide.
    train_state: unreplicated ``TrainState`` (host or device arrays).
    actor_state: unsharded ``ActorState``, leaves ``[B, ...]``.
    policy: optional scripted policy (tests).
  """

  def __init__(self, config: Config, env: jax_envs.JaxEnv,
               network: networks.AgentNetwork, devices: Sequence[jax.Device],
               train_state: learner_lib.TrainState, actor_state: ActorState,
               policy: Optional[Policy] = None):
    self.config = config
    self.devices = list(devices)
    d = len(self.devices)
    if config.batch_size % d:
      raise ValueError(f'--batch_size={config.batch_size} environments do '
                       f'not split over {d} devices.')
    self.updates_per_call = config.updates_per_call
    self.frames_per_call = (config.updates_per_call *
                            learner_lib.frames_per_update(
                                config, env.spec.action_repeat))
    self.frames = int(train_state.frames or 0)
    self._sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(self.devices), (AXIS,)),
        jax.sharding.PartitionSpec(AXIS))
    self._train_state = self._put(jax.tree_util.tree_map(
        lambda x: np.stack([np.asarray(x)] * d),
        train_state._replace(frames=None)))
    self._actor_state = self._put(_shard(jax.device_get(actor_state), d))
    if policy is None:
      # Cached: runs of the same program in one process compile it once.
      self._fn = _pmapped_train_fn(env, network, program_config(config),
                                   tuple(self.devices))
    else:
      fn = make_train_fn(env, network, config,
                         updates_per_call=config.updates_per_call,
                         axis_name=AXIS, policy=policy)
      self._fn = jax.pmap(fn, axis_name=AXIS, devices=self.devices,
                          donate_argnums=(0, 1))

  def _put(self, tree):
    return jax.device_put(tree, self._sharding)

  def run(self) -> Tuple[Dict[str, Any], Games]:
    """One call: ``K`` updates on every device. Returns the metrics (device
    arrays, not waited for) and the per-device ``Games`` (leaves
    ``[D, ...]``)."""
    (self._train_state, self._actor_state, metrics,
     games) = self._fn(self._train_state, self._actor_state)
    self.frames += self.frames_per_call
    return jax.tree_util.tree_map(lambda x: x[0], metrics), games

  def params(self):
    return jax.tree_util.tree_map(lambda x: x[0], self._train_state.params)

  def train_state(self) -> learner_lib.TrainState:
    """Unreplicated host copy, ``frames`` set (for checkpoints)."""
    host = jax.device_get(jax.tree_util.tree_map(lambda x: x[0],
                                                 self._train_state))
    return host._replace(frames=self.frames)

  def actor_state(self) -> ActorState:
    """Host copy with leaves ``[B, ...]`` (devices concatenated)."""
    return _unshard(self._actor_state)


def recent_games(games: Games
                 ) -> Tuple[List[float], List[float], List[int]]:
  """Host lists (returns, lengths, task ids) from per-device ``Games``
  (leaves ``[D, K, ...]``): each device's, task by task, oldest first."""
  games = jax.device_get(games)
  returns, lengths, task_ids = [], [], []
  num_devices, num_tasks = np.shape(games.count)
  r = games.recent_return.shape[-1]
  for d in range(num_devices):
    for k in range(num_tasks):
      count = int(games.count[d, k])
      order = np.roll(np.arange(r), -(count % r)) if count >= r else (
          np.arange(count))
      returns.extend(games.recent_return[d, k][order].tolist())
      lengths.extend(games.recent_length[d, k][order].tolist())
      task_ids.extend([k] * len(order))
  return returns, lengths, task_ids


# ------------------------------------------------------------ set-up ---
def make_env(config: Config) -> jax_envs.JaxEnv:
  """The config's JAX environment (``envs.factory.jax_env``: cached, so a
  resumed run in the same process reuses the compiled program)."""
  return env_factory.jax_env(config)


def program_config(config: Config) -> Config:
  """``config`` with the fields that do not change the compiled program
  set to fixed values (seed, logging, checkpoints, devices; the frame budget
  and batch size unless the learning rate decays over the updates they
  make). Shapes are the compiler's business."""
  fixed = dict(seed=0, log_every_seconds=0.0, checkpoint_every_seconds=0.0,
               learner_devices=(0,), actor_devices=(0,), env='', num_envs=1,
               env_batch_size=1, num_actors=1, env_threads=0, queue_size=1)
  if not config.lr_decay:
    fixed.update(total_frames=1, batch_size=1)
  return dataclasses.replace(config, **fixed)


@functools.lru_cache(maxsize=16)
def _pmapped_train_fn(env: jax_envs.JaxEnv, network: networks.AgentNetwork,
                      config: Config, devices: Tuple[jax.Device, ...]):
  fn = make_train_fn(env, network, config,
                     updates_per_call=config.updates_per_call,
                     axis_name=AXIS)
  return jax.pmap(fn, axis_name=AXIS, devices=list(devices),
                  donate_argnums=(0, 1))


def check_config(config: Config, env: Optional[jax_envs.JaxEnv] = None
                 ) -> Tuple[jax_envs.JaxEnv, List[jax.Device]]:
  """Validates an Anakin run before anything compiles.

  Returns ``(env, devices)``; raises ``run_loop.ConfigError`` (one line).
  """
  try:
    config.validate()
    if jax.process_count() > 1:
      raise ValueError('the Anakin runtime runs in one process (its pmap '
                       'spans this host\'s devices); drop the multi-host '
                       'flags.')
    if config.runtime == 'sebulba':
      raise ValueError(f'{config.env} is a JAX environment: it runs in the '
                       'Anakin runtime only; use --runtime=anakin (or auto).')
    if env is None:
      if not jax_envs.is_jax_env_id(config.env):
        raise ValueError(
            f'--runtime=anakin needs a JAX environment id such as '
            f'gymnax:CartPole-v1, got {config.env!r}; envpool ids run with '
            '--runtime=sebulba.')
      env = env_factory.jax_env(config)
  except ValueError as e:
    raise run_loop.ConfigError(str(e)) from None
  devices = run_loop.select_devices(config.learner_devices, 'learner_devices')
  k = num_tasks(config)
  if config.batch_size % (len(devices) * k):
    raise run_loop.ConfigError(
        f'--batch_size={config.batch_size} environments must split evenly '
        f'over {len(devices)} device(s) x {k} task(s) (every device runs '
        'every task).')
  error = networks.torso_fit_error(config.torso, env.spec.obs_shape,
                                   config.env)
  if error:
    raise run_loop.ConfigError(error)
  return env, devices


def initial_actor_state(env, network: networks.AgentNetwork, config: Config,
                        num_devices: int) -> ActorState:
  """Freshly reset environments for a run on ``num_devices`` devices, as the
  devices' ``[B/D, ...]`` states concatenated along the first axis (what
  ``AnakinRunner`` splits again): each device resets its own batch, so a
  multi-task env puts every task on every device."""
  keys = _env_keys(config.seed, config.batch_size)
  per_device = keys.reshape((num_devices, -1) + keys.shape[1:])
  state = jax.jit(jax.vmap(functools.partial(init_actor_state, env,
                                             network)))(per_device)
  return jax.tree_util.tree_map(
      lambda x: x.reshape((-1,) + x.shape[2:]), state)


def _env_keys(seed: int, batch_size: int) -> jax.Array:
  """``[B, 2]`` per-environment keys, independent of the device count."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)
  return jax.random.split(base, batch_size)


# ---------------------------------------------------- checkpoint extras ---
def _flat_leaves(tree) -> Dict[str, np.ndarray]:
  """Leaves as ``{'leaf_00000': array, ...}`` (bools stored as uint8)."""
  leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
  out = {}
  for i, x in enumerate(leaves):
    x = np.asarray(x)
    out[f'leaf_{i:05d}'] = x.astype(np.uint8) if x.dtype == np.bool_ else x
  return out


def _from_flat(flat: Dict[str, Any], template):
  leaves, treedef = jax.tree_util.tree_flatten(jax.device_get(template))
  if len(flat) != len(leaves):
    raise ValueError(f'checkpoint holds {len(flat)} environment arrays, '
                     f'this run has {len(leaves)}: another environment?')
  out = []
  for i, want in enumerate(leaves):
    got = np.asarray(flat[f'leaf_{i:05d}'])
    want = np.asarray(want)
    if got.shape != want.shape:
      raise ValueError(f'checkpointed environment array {i} has shape '
                       f'{got.shape}, this run {want.shape}: another '
                       '--batch_size or environment?')
    out.append(got.astype(want.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


# ------------------------------------------------------------- training ---
def train_anakin(config: Config, logdir: str, *,
                 resume: Optional[bool] = None, progress: bool = True,
                 handle_signals: bool = True,
                 env: Optional[jax_envs.JaxEnv] = None,
                 on_call: Optional[Callable[[int, dict], None]] = None,
                 on_start: Optional[Callable[[Any], None]] = None):
  """Trains in the Anakin layout until ``config.total_frames`` (rounded up
  to whole calls of ``updates_per_call`` updates).

  Same outputs as ``runtime.train``: ``logdir/config.json``,
  ``metrics.csv``, TensorBoard events, the progress line, orbax
  checkpoints (every ``checkpoint_every_seconds`` and at exit) that also
  hold the environments' state and keys, so a resumed run continues the
  step count and the environments' RNG. SIGINT/SIGTERM: finish the call,
  checkpoint, return.

  Args:
    config: the run's config; ``env`` a ``gymnax:`` id unless ``env`` given.
    logdir: the run directory.
    resume: continue from ``logdir/checkpoints`` (default: when present).
    progress: print the progress line.
    handle_signals: install SIGINT/SIGTERM handlers (main thread only).
    env: a ready ``JaxEnv`` instead of ``config.env`` (e.g. gymnax with
      non-default parameters).
    on_call: optional callback ``(update_count, metrics)`` after each call.
    on_start: optional callback with the ``checkpoint.Restored`` the run
      resumes from (None: a new run), before anything compiles.

  Returns:
    ``run_loop.RunResult``. Raises ``run_loop.ConfigError`` before compiling
    for bad settings.
  """
  env, devices = check_config(config, env)
  spec = env.spec
  network, train_state, checkpointer, resume = run_loop.start_run(
      config, spec, logdir, resume)
  actor_state = initial_actor_state(env, network, config, len(devices))
  meta: Dict[str, Any] = {}

  def check(found) -> None:   # the environment state fits this config
    found.extra = _from_flat(found.extra, actor_state)

  restored = (run_loop.restore_run(
      checkpointer, train_state, extra_template=_flat_leaves(actor_state),
      check=check) if resume else None)
  if restored is not None:
    train_state, meta, actor_state = (restored.state, restored.meta,
                                      restored.extra)
  if on_start is not None:
    on_start(restored)
  start_update = int(train_state.update_count)
  run_loop.write_config(logdir, config, spec, start_update)
  runner = AnakinRunner(config, env, network, devices, train_state,
                        actor_state)
  return run_loop.run(
      config, AnakinTrainer(runner, start_update), logdir=logdir,
      checkpointer=checkpointer, network=network, resume=resume,
      wall_time_before=float(meta.get('wall_time', 0.0)), progress=progress,
      handle_signals=handle_signals, on_step=on_call)


class AnakinTrainer:
  """The Anakin layout as a ``run_loop.Trainer``: each ``step`` is one call
  of the compiled program (``updates_per_call`` updates, acting included);
  checkpoints also hold the environments' state and keys."""

  def __init__(self, runner: AnakinRunner, start_update: int):
    self.runner = runner
    self.updates = start_update
    self.local_frames = 0      # one process: RunResult.frames says it all

  @property
  def frames(self) -> int:
    return self.runner.frames

  def params(self):
    return self.runner.params()

  def step(self, stop) -> Optional[run_loop.StepOutput]:
    if stop.is_set():
      return None
    metrics, games = self.runner.run()
    self.updates += self.runner.updates_per_call
    host = jax.device_get(metrics)
    counts = np.asarray(host.pop('games'))
    return_sums = np.asarray(host.pop('games_return_sum'))
    length_sums = np.asarray(host.pop('games_length_sum'))
    returns, lengths, task_ids = recent_games(games)
    tallies = [(int(n), float(r), float(l))
               for n, r, l in zip(counts, return_sums, length_sums)]
    tally = (int(counts.sum()), float(return_sums.sum()),
             float(length_sums.sum()))
    return run_loop.StepOutput(host, returns, lengths, game_tally=tally,
                               game_tasks=task_ids, task_tallies=tallies)

  def log_columns(self) -> Dict[str, Any]:
    return {'policy_lag': 0.0, 'policy_lag_max': 0}

  def progress_note(self, row: Dict[str, Any]) -> str:
    return 'anakin'

  def save(self, checkpointer, meta: Dict[str, Any]) -> None:
    checkpointer.save(self.runner.train_state(), {
        'frames': self.runner.frames, 'update_count': self.updates,
        'runtime': 'anakin', **meta},
        extra=_flat_leaves(self.runner.actor_state()))

  def close(self) -> None:
    pass

  def raise_errors(self) -> None:
    pass
