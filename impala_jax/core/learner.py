"""The learner: train state, optimizer and the pmapped IMPALA update.

One update is one compiled XLA program per learner device: unroll the
network over the ``[T+1, B/D]`` shard of the trajectory, V-trace, the masked
IMPALA loss, gradients, a cross-device reduction over the named axis
``AXIS``, RMSProp. The same program spans several hosts under
``jax.distributed`` because the reduction is a named-axis collective.

Gradients are **summed** across devices (``lax.psum``), not averaged: the
IMPALA loss is a sum over the batch (``losses.py`` says why), so the gradient
of the whole batch is the sum of its shards' gradients. Summing makes ``D``
devices with ``B/D`` trajectories each compute exactly the update one device
computes on ``B`` (tested), and keeps the paper's learning rate meaning the
same whatever the device count. Mean-type metrics are ``pmean``ed.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from impala_jax.core import losses
from impala_jax.core import networks
from impala_jax.core import popart as popart_lib
from impala_jax.config import Config, num_tasks
from impala_jax.core.types import Trajectory

AXIS = 'learner_devices'
Metrics = dict


class TrainState(NamedTuple):
  """Everything an update reads and writes; restored whole on resume.

  Attributes:
    params: network parameters.
    opt_state: optax state (RMSProp statistics, schedule position).
    rng: PRNG key, split once per update.
    update_count: ``[]`` int32, updates applied or skipped so far.
    skipped_updates: ``[]`` int32, updates skipped for a non-finite loss
      or gradient.
    frames: host-side Python int, environment frames consumed (env steps x
      action repeat). Kept off the device: an int32 would overflow at 2.1B
      frames, well inside a DMLab-30 run; it is not needed inside the update.
    popart: ``popart.PopArtState`` (``[K]`` moments of the value targets)
      with ``config.popart``, else None (an empty subtree: checkpoints of
      runs without PopArt keep their layout).
  """
  params: Any
  opt_state: Any
  rng: jax.Array
  update_count: jax.Array
  skipped_updates: jax.Array
  frames: Optional[int] = 0
  popart: Optional[popart_lib.PopArtState] = None


def frames_per_update(config: Config, action_repeat: int) -> int:
  """Frames one update consumes: ``T * B * action_repeat``."""
  return config.unroll_length * config.batch_size * action_repeat


def total_updates(config: Config, action_repeat: int) -> int:
  return max(1, -(-config.total_frames //
                  frames_per_update(config, action_repeat)))


def resolve_torso_chunk(config: Config, backend: Optional[str] = None) -> int:
  """``config.torso_chunk``, with -1 (auto) resolved: slices of 64 for the
  Atari conv torsos on a CPU backend (2.9x faster there, BUILD_NOTES.md),
  one batch on GPU/TPU and for the MLP and MinAtar torsos (the MinAtar
  conv is one matmul over patches)."""
  if config.torso_chunk >= 0:
    return config.torso_chunk
  backend = backend or jax.default_backend()
  return 64 if backend == 'cpu' and config.torso in ('shallow', 'deep') else 0


def make_network(config: Config, num_actions: int) -> networks.AgentNetwork:
  return networks.AgentNetwork(
      num_actions=num_actions, torso=config.torso, use_lstm=config.use_lstm,
      lstm_size=config.lstm_size, mlp_sizes=tuple(config.mlp_sizes),
      torso_chunk=resolve_torso_chunk(config),
      instruction_len=config.instruction_len,
      num_values=num_tasks(config))


def learning_rate_schedule(config: Config,
                           action_repeat: int) -> optax.Schedule:
  """Linear decay from ``learning_rate`` to 0 over the frame budget."""
  if not config.lr_decay:
    return optax.constant_schedule(config.learning_rate)
  return optax.linear_schedule(config.learning_rate, 0.0,
                               total_updates(config, action_repeat))


def make_optimizer(config: Config,
                   action_repeat: int) -> optax.GradientTransformation:
  """Global-norm clipping, then RMSProp as the paper's code runs it (TF1's
  ``RMSPropOptimizer``): ``ms = decay ms + (1 - decay) g^2`` starting at
  ``ms = rmsprop_initial_scale`` (TF1: 1.0), step ``lr g / sqrt(ms + eps)``
  (epsilon inside the square root), decay 0.99, epsilon 0.01, no momentum.
  """
  momentum = config.rmsprop_momentum or None
  return optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.rmsprop(learning_rate_schedule(config, action_repeat),
                    decay=config.rmsprop_decay, eps=config.rmsprop_epsilon,
                    initial_scale=config.rmsprop_initial_scale,
                    eps_in_sqrt=True, momentum=momentum))


def applied_learning_rate(config: Config, action_repeat: int,
                          opt_state) -> jax.Array:
  """The learning rate the next optimizer step applies: the schedule at
  optax's own step count, which does not advance on a skipped
  (non-finite) update, unlike ``TrainState.update_count``."""
  schedule = learning_rate_schedule(config, action_repeat)
  if not config.lr_decay:
    return jnp.asarray(config.learning_rate, jnp.float32)
  counts = optax.tree_utils.tree_get_all_with_path(opt_state, 'count')
  if len(counts) != 1:
    raise ValueError(f'expected one schedule count in the optimizer state, '
                     f'found {len(counts)}.')
  return schedule(counts[0][1])


def clip_rewards(rewards: jax.Array, mode: str) -> jax.Array:
  """``[T, B]`` rewards clipped as the paper does for each suite.

  'abs_one': ``clip(r, -1, 1)`` (Atari).
  'soft_asymmetric': DMLab's optimistic asymmetric clipping as the released
    code computes it (scalable_agent ``experiment.py``, flag
    ``--reward_clipping=soft_asymmetric``, the code behind the published
    runs): ``5 tanh(r / 5)`` for ``r >= 0``, ``1.5 tanh(r / 5)`` for
    ``r < 0``. The ``dmlab30:`` presets use this one.
  'soft_asymmetric_paper': the formula the paper prints (Espeholt et al.
    2018, section 5.3.1): ``0.3 min(tanh r, 0) + 5 max(tanh r, 0)``.
  'none': rewards unchanged.
  """
  if mode == 'none':
    return rewards
  if mode == 'abs_one':
    return jnp.clip(rewards, -1.0, 1.0)
  if mode == 'soft_asymmetric':
    squeezed = jnp.tanh(rewards / 5.0)
    return 5.0 * jnp.where(rewards < 0, 0.3 * squeezed, squeezed)
  if mode == 'soft_asymmetric_paper':
    squashed = jnp.tanh(rewards)
    return (0.3 * jnp.minimum(squashed, 0.0) +
            5.0 * jnp.maximum(squashed, 0.0))
  raise ValueError(f'unknown reward clipping {mode!r}')


def init_train_state(config: Config, network: networks.AgentNetwork,
                     observation_shape: Sequence[int], observation_dtype,
                     action_repeat: int, rng: jax.Array) -> TrainState:
  """Fresh parameters and optimizer state (unreplicated)."""
  init_rng, state_rng = jax.random.split(rng)
  dummy = networks.zero_inputs((1, 1), observation_shape, observation_dtype)
  params = network.init(init_rng, dummy, network.initial_state(1))
  opt_state = make_optimizer(config, action_repeat).init(params)
  return TrainState(params=params, opt_state=opt_state, rng=state_rng,
                    update_count=jnp.zeros((), jnp.int32),
                    skipped_updates=jnp.zeros((), jnp.int32), frames=0,
                    popart=(popart_lib.init(num_tasks(config))
                            if config.popart else None))


def task_values(value: jax.Array, task_id: jax.Array) -> jax.Array:
  """Each column's own task's value.

  Args:
    value: ``[T, B]`` (one value head) or ``[T, B, K]`` (one per task).
    task_id: ``[B]`` int32.

  Returns:
    ``[T, B]``.
  """
  if value.ndim == 2:
    return value
  chex.assert_rank([value, task_id], [3, 1])
  index = jnp.broadcast_to(task_id[None, :, None], value.shape[:2] + (1,))
  return jnp.take_along_axis(value, index.astype(jnp.int32), axis=-1)[..., 0]


def _popart_bounds(config: Config) -> dict:
  return dict(min_scale=config.popart_min_scale,
              max_scale=config.popart_max_scale)


def _loss_fn(params, trajectory: Trajectory, network, config: Config,
             popart_state: Optional[popart_lib.PopArtState] = None,
             axis_name: Optional[str] = None):
  """IMPALA loss of one (shard of a) trajectory batch.

  Returns ``(total_loss, (LossOutput, new PopArt state or None))``. With
  PopArt the value head's outputs are normalised: V-trace runs on ``sigma n
  + mu`` (current statistics), the statistics are updated from its targets
  (over ``axis_name``), and the loss is the normalised one under the new
  statistics (``core/popart.py`` says why this equals the loss at the
  rescaled head).
  """
  outputs, _ = network.apply(params, trajectory.inputs, trajectory.core_state,
                             method=networks.AgentNetwork.unroll)
  task_id = _task_id(trajectory)
  values = task_values(outputs.value, task_id)   # [T+1, B]
  if popart_state is not None:
    values = popart_lib.unnormalise(popart_state, values, task_id,
                                    **_popart_bounds(config))
  # x_0 .. x_{T-1} learn, x_T bootstraps.
  targets = losses.impala_targets(
      learner_logits=outputs.policy_logits[:-1],
      values=values[:-1],
      bootstrap_value=values[-1],
      behaviour_logits=trajectory.behaviour_logits,
      actions=trajectory.actions,
      rewards=clip_rewards(trajectory.rewards, config.reward_clipping),
      discounts=trajectory.discounts,
      mask=trajectory.mask,
      clip_rho_threshold=config.clip_rho_threshold,
      clip_c_threshold=config.clip_c_threshold,
      clip_pg_rho_threshold=config.clip_pg_rho_threshold,
      lambda_=config.vtrace_lambda)
  new_popart, value_scale = None, None
  if popart_state is not None:
    new_popart = popart_lib.update(
        popart_state, targets.returns.vs, task_id, targets.mask,
        beta=config.popart_beta, axis_name=axis_name)
    value_scale = popart_lib.scale(new_popart,
                                   **_popart_bounds(config))[task_id]
  out = losses.impala_loss_terms(
      targets, outputs.policy_logits[:-1], values[:-1], trajectory.actions,
      baseline_cost=config.baseline_cost, entropy_cost=config.entropy_cost,
      clip_rho_threshold=config.clip_rho_threshold, value_scale=value_scale)
  return out.total_loss, (out, new_popart)


def _task_id(trajectory: Trajectory) -> jax.Array:
  if trajectory.task_id is None:
    return jnp.zeros((trajectory.batch_size,), jnp.int32)
  return trajectory.task_id.astype(jnp.int32)


def _rescale_value_head(tree, fn):
  """``tree`` (params or gradients) with ``fn`` applied to the value head's
  ``{'kernel', 'bias'}``."""
  inner = dict(tree['params'])
  inner['value_head'] = fn(inner['value_head'])
  return {**tree, 'params': inner}


def update_step(state: TrainState, trajectory: Trajectory, *,
                network: networks.AgentNetwork, config: Config,
                action_repeat: int, axis_name: Optional[str] = AXIS
                ) -> Tuple[TrainState, Metrics]:
  """One IMPALA update on this device's shard (pure; to be pmapped).

  With ``state.popart`` (``--popart``) the update is PopArt's: statistics
  from this batch's targets (global, over ``axis_name``), the value head
  rescaled to preserve its outputs, the gradient step on normalised
  targets (``core/popart.py``); per-task ``popart_mu`` / ``popart_sigma``
  (``[K]``) join the metrics.

  Args:
    state: ``TrainState`` with ``frames=None`` (host counters stay on host).
    trajectory: ``Trajectory`` shard, time-major ``[T(+1), B/D, ...]``.
    network, config, action_repeat: static.
    axis_name: the pmapped axis to reduce over; None when not mapped.

  Returns:
    the new state and a dict of scalar metrics (identical on every device).
  """
  chex.assert_rank(trajectory.actions, 2)
  optimizer = make_optimizer(config, action_repeat)
  grad_fn = jax.grad(_loss_fn, has_aux=True)
  grads, (loss_out, new_popart) = grad_fn(
      state.params, trajectory, network, config, state.popart, axis_name)
  psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
  pmean = ((lambda x: jax.lax.pmean(x, axis_name)) if axis_name
           else (lambda x: x))
  grads = psum(grads)
  params = state.params
  if state.popart is not None:
    # Rescale the head so every unnormalised value is preserved, and move
    # the gradient to the rescaled head (core/popart.py).
    bounds = _popart_bounds(config)
    params = _rescale_value_head(params, lambda head: (
        popart_lib.preserve_outputs(head, state.popart, new_popart,
                                    **bounds)))
    grads = _rescale_value_head(grads, lambda head: (
        popart_lib.head_gradient_at_rescaled(head, state.popart, new_popart,
                                             **bounds)))
  summed = psum(jnp.stack([loss_out.total_loss, loss_out.pg_loss,
                           loss_out.baseline_loss, loss_out.entropy_loss]))
  means = pmean(jnp.stack([loss_out.mean_rho, loss_out.rho_clipped_fraction,
                           loss_out.mean_value, loss_out.mean_vs,
                           loss_out.mean_entropy]))
  grad_norm = optax.tree.norm(grads)

  updates, new_opt_state = optimizer.update(grads, state.opt_state, params)
  new_params = optax.apply_updates(params, updates)
  # A non-finite loss or gradient never reaches the parameters. The test is
  # on reduced values, so every device takes the same branch.
  finite = jnp.isfinite(summed[0]) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree_util.tree_map(
      lambda n, o: jnp.where(finite, n, o), new, old)
  rng, _ = jax.random.split(state.rng)
  new_state = TrainState(
      params=keep(new_params, state.params),
      opt_state=keep(new_opt_state, state.opt_state),
      rng=rng,
      update_count=state.update_count + 1,
      skipped_updates=state.skipped_updates + (1 - finite.astype(jnp.int32)),
      frames=None,
      popart=(None if state.popart is None
              else keep(new_popart, state.popart)))
  metrics = {
      'total_loss': summed[0], 'pg_loss': summed[1],
      'baseline_loss': summed[2], 'entropy_loss': summed[3],
      'mean_rho': means[0], 'rho_clipped_fraction': means[1],
      'mean_value': means[2], 'mean_vs': means[3], 'entropy': means[4],
      'grad_norm': grad_norm,
      # The rate this update's optimizer step used (the schedule at optax's
      # count, which a skipped update does not advance).
      'learning_rate': applied_learning_rate(config, action_repeat,
                                             state.opt_state),
      'skipped_updates': new_state.skipped_updates,
  }
  if new_state.popart is not None:
    # [K] arrays: the host names one column per task (popart_mu/<task>).
    metrics['popart_mu'] = new_state.popart.mu
    metrics['popart_sigma'] = popart_lib.scale(new_state.popart,
                                               **_popart_bounds(config))
  return new_state, metrics


def shard_trajectory(trajectory: Trajectory, num_shards: int) -> Trajectory:
  """Splits B into ``num_shards`` and puts the shard axis first.

  Time-major leaves ``[T(+1), B, ...]`` become ``[D, T(+1), B/D, ...]``;
  batch-major leaves (``core_state``, ``param_version``, ``task_id``:
  ``[B, ...]``) become ``[D, B/D, ...]`` (a missing ``task_id`` becomes
  zeros, so the pmapped program always sees one). Works on NumPy (host) arrays without copying to device.
  """
  b = trajectory.batch_size
  if b % num_shards:
    raise ValueError(f'batch of {b} trajectories does not split over '
                     f'{num_shards} learner devices.')
  def time_major(x):
    x = np.asarray(x)
    x = x.reshape((x.shape[0], num_shards, b // num_shards) + x.shape[2:])
    return np.swapaxes(x, 0, 1)
  def batch_major(x):
    x = np.asarray(x)
    return x.reshape((num_shards, b // num_shards) + x.shape[1:])
  return Trajectory(
      inputs=jax.tree_util.tree_map(time_major, trajectory.inputs),
      actions=time_major(trajectory.actions),
      rewards=time_major(trajectory.rewards),
      discounts=time_major(trajectory.discounts),
      behaviour_logits=time_major(trajectory.behaviour_logits),
      mask=time_major(trajectory.mask),
      core_state=jax.tree_util.tree_map(batch_major, trajectory.core_state),
      param_version=batch_major(trajectory.param_version),
      task_id=batch_major(np.zeros((b,), np.int32)
                          if trajectory.task_id is None
                          else trajectory.task_id))


class Learner:
  """Holds the replicated train state and applies pmapped updates.

  Usage::

    learner = Learner(config, network, devices, obs_shape, obs_dtype,
                      action_repeat, rng)
    metrics = learner.update(trajectory)   # host Trajectory [T+1, B]
    params = learner.params()              # unreplicated, for the actors

  Several processes (``jax.distributed``): ``devices`` lists the learner
  devices of *all* processes (global order); each process passes its own
  actors' trajectories ``[T+1, B / num_processes]`` to ``update`` and they
  become its devices' shards of the global batch. Every process must call
  ``update`` the same number of times (each is a collective). ``frames``
  counts the global batch, i.e. all processes' frames.
  """

  def __init__(self, config: Config, network: networks.AgentNetwork,
               devices: Sequence[jax.Device], observation_shape,
               observation_dtype, action_repeat: int, rng: jax.Array,
               state: Optional[TrainState] = None):
    self.config = config
    self.devices = list(devices)
    me = jax.process_index()
    self.local_devices = [d for d in self.devices if d.process_index == me]
    if not self.local_devices:
      raise ValueError(f'none of the learner devices belongs to process {me}.')
    self.action_repeat = action_repeat
    self.frames_per_update = frames_per_update(config, action_repeat)
    if state is None:
      state = init_train_state(config, network, observation_shape,
                               observation_dtype, action_repeat, rng)
    self.frames = int(state.frames or 0)
    self._sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(self.devices), (AXIS,)),
        jax.sharding.PartitionSpec(AXIS))
    self._state = self._put(jax.tree_util.tree_map(
        lambda x: np.stack([np.asarray(x)] * len(self.local_devices)),
        state._replace(frames=None)))
    step = functools.partial(update_step, network=network, config=config,
                             action_repeat=action_repeat, axis_name=AXIS)
    self._update = jax.pmap(step, axis_name=AXIS, devices=self.devices,
                            donate_argnums=(0,))

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def _put(self, tree):
    """Host pytree with leading axis ``D_local`` -> one shard per local
    learner device, as this process's part of global ``[D, ...]`` arrays."""
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(self._sharding, x),
        tree)

  def put_trajectory(self, trajectory: Trajectory) -> Trajectory:
    """Host ``[T(+1), B_local]`` trajectory -> local device shards along B."""
    return self._put(shard_trajectory(trajectory, len(self.local_devices)))

  def update(self, trajectory: Trajectory) -> Metrics:
    """One update; ``trajectory`` on host or from ``put_trajectory``."""
    if not isinstance(trajectory.actions, jax.Array) or (
        trajectory.actions.ndim == 2):
      trajectory = self.put_trajectory(trajectory)
    self._state, metrics = self._update(self._state, trajectory)
    self.frames += self.frames_per_update
    return _first_local(metrics)

  def params(self):
    """Current params on this process's first learner device."""
    return _first_local(self._state.params)

  def state(self) -> TrainState:
    """Unreplicated copy of the full state, fetched to host (checkpoints).
    Local: no collective, so process 0 can save alone."""
    host = jax.device_get(_first_local(self._state))
    return host._replace(frames=self.frames)


def _first_local(tree):
  """``[D, ...]`` replicated global arrays -> the ``[...]`` value held by
  this process's first device (never touches other processes' shards)."""
  return jax.tree_util.tree_map(lambda x: x.addressable_shards[0].data[0],
                                tree)
