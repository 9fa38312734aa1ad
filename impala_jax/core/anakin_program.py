"""The Anakin layout's compiled program (pure): acting and learning in one
``lax.scan``, for environments written in JAX.

One call runs ``K = config.updates_per_call`` IMPALA updates with no Python
between steps::

  lax.scan over K updates:
    lax.scan over T steps:                          (rollout)
      policy: acting.policy_step on the [B/D] batch, one key per env
      env:    vmap(env.step) over the [B/D] environments
    learner.update_step(train_state, trajectory)    (the envpool path's
                                                      update)

``env`` is any object with the batch interface of
``impala_jax.envs.jax_envs.JaxEnv`` (``batch_reset``, ``batch_step``,
``task_ids``, ``num_tasks``, ``spec``; a ``MultiTaskJaxEnv`` runs each task
on its own rows of the batch); this module does not import the
environments. ``impala_jax.anakin`` runs the program on devices and drives
it; its docstring has the layout's conventions (the trajectory layout, the
games counted on the device, the known limits).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from impala_jax.config import Config
from impala_jax.core import acting
from impala_jax.core import learner as learner_lib
from impala_jax.core import networks
from impala_jax.core.types import AgentInput, CoreState, Trajectory

AXIS = learner_lib.AXIS
RECENT_GAMES = 64  # per device, returned by every call

# (params, inputs [B], core_state, keys [B, 2]) -> (actions [B] int32,
#   logits [B, A], core_state): how the agent acts. ``make_policy`` gives
# the network's; tests plug in scripted ones.
Policy = Callable[[Any, AgentInput, CoreState, jax.Array],
                  Tuple[jax.Array, jax.Array, CoreState]]


class ActorState(NamedTuple):
  """What the acting half carries between steps (leaves ``[B, ...]``).

  Attributes:
    env_state: ``Any`` of the ``B`` environments.
    inputs: ``AgentInput`` for the next step: the current observation,
      whether it starts an episode, the last action and reward.
    core_state: the agent's recurrent state before ``inputs``.
    key: ``[B, 2]`` uint32, one PRNG key per environment (actions, env
      steps and resets).
  """
  env_state: Any
  inputs: AgentInput
  core_state: CoreState
  key: jax.Array


class Games(NamedTuple):
  """Games that ended, accumulated on one device over a call, per task.

  Attributes:
    count: ``[K]`` int32, games ended.
    return_sum, length_sum: ``[K]`` float32, sums of their raw returns and
      lengths (transitions).
    recent_return, recent_length: ``[K, R]`` float32 rings of each task's
      last ``R`` games (NaN where empty); game ``n`` (0-based) of a task
      sits at ``n % R``.
  """
  count: jax.Array
  return_sum: jax.Array
  length_sum: jax.Array
  recent_return: jax.Array
  recent_length: jax.Array


def make_policy(network: networks.AgentNetwork) -> Policy:
  """The agent's policy inside the compiled program
  (``acting.policy_step``): one categorical sample per environment with
  that environment's key."""
  return acting.make_policy_step(network, jit=False)


def _strong(tree):
  """Arrays with fixed (not weak) dtypes, so that scan carries match."""
  return jax.tree_util.tree_map(
      lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


def init_actor_state(env: Any, network: networks.AgentNetwork,
                     keys: jax.Array) -> ActorState:
  """Resets ``B`` environments, one per key in ``keys [B, 2]``."""
  chex.assert_rank(keys, 2)
  keys = jax.vmap(lambda k: jax.random.split(k))(keys)  # [B, 2, 2]
  env_state, obs = env.batch_reset(keys[:, 0])
  return actor_state_from_reset(env_state, obs, network, keys[:, 1])


def actor_state_from_reset(env_state: Any, obs: jax.Array,
                           network: networks.AgentNetwork,
                           keys: jax.Array) -> ActorState:
  """The actor state that acts first on freshly reset environments.

  Args:
    env_state: leaves ``[B, ...]``, freshly reset.
    obs: ``[B, *obs_shape]``, their first observations.
    network: for the zero core state.
    keys: ``[B, 2]`` per-environment keys.
  """
  b = obs.shape[0]
  inputs = AgentInput(observation=obs, first=jnp.ones((b,), jnp.bool_),
                      last_action=jnp.zeros((b,), jnp.int32),
                      last_reward=jnp.zeros((b,), jnp.float32))
  return _strong(ActorState(env_state=env_state, inputs=inputs,
                            core_state=networks.initial_state(network, b),
                            key=keys))


def rollout(params, actor_state: ActorState, *, env: Any,
            policy: Policy, unroll_length: int, discount: float,
            param_version: jax.Array
            ) -> Tuple[ActorState, Trajectory, Tuple[jax.Array, ...]]:
  """``T`` steps of ``B`` environments: one ``[T+1, B]`` trajectory.

  Args:
    params: the acting parameters.
    actor_state: ``ActorState``, leaves ``[B, ...]``.
    env, policy: the environment (its ``batch_step`` steps all ``B``) and
      the policy.
    unroll_length: ``T``.
    discount: ``gamma``.
    param_version: ``[]`` int32, recorded in the trajectory.

  Returns:
    the actor state after ``T`` steps (its ``inputs`` are ``x_T``, the first
    input of the next unroll), the ``Trajectory`` (envpool actor layout) and
    ``(game_over, game_return, game_length)``, each ``[T, B]``: games that
    ended at each step and their whole-game return and length.
  """
  chex.assert_rank(actor_state.key, 2)
  b = actor_state.key.shape[0]
  start_core = actor_state.core_state

  def step(carry: ActorState, _):
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(carry.key)  # [B,3,2]
    actions, logits, core_state = policy(params, carry.inputs,
                                         carry.core_state, keys[:, 1])
    env_state, obs, reward, terminated, truncated = env.batch_step(
        carry.env_state, actions, keys[:, 2])
    # The env ignored the action where the last observation was terminal
    # and answered with the first observation of a new episode.
    was_terminal = carry.env_state.needs_reset
    next_inputs = acting.agent_input(obs, was_terminal, actions, reward,
                                     xp=jnp)
    record = (carry.inputs, actions, reward,
              discount * (1.0 - terminated.astype(jnp.float32)), logits,
              1.0 - was_terminal.astype(jnp.float32),
              terminated | truncated, env_state.game_return,
              env_state.game_length.astype(jnp.float32))
    new = ActorState(env_state=env_state, inputs=next_inputs,
                     core_state=core_state, key=keys[:, 0])
    return new, record

  final, record = jax.lax.scan(step, actor_state, None, length=unroll_length)
  (inputs, actions, rewards, discounts, logits, mask, game_over,
   game_return, game_length) = record
  inputs = jax.tree_util.tree_map(
      lambda xs, x: jnp.concatenate([xs, x[None]], axis=0), inputs,
      final.inputs)
  trajectory = Trajectory(
      inputs=inputs, actions=actions, rewards=rewards,
      discounts=discounts.astype(jnp.float32), behaviour_logits=logits,
      mask=mask, core_state=start_core,
      param_version=jnp.full((b,), param_version, jnp.int32),
      task_id=env.task_ids(b))
  return final, trajectory, (game_over, game_return, game_length)


def empty_games(num_tasks: int = 1, recent: int = RECENT_GAMES) -> Games:
  nan = jnp.full((num_tasks, recent), jnp.nan, jnp.float32)
  zeros = jnp.zeros((num_tasks,), jnp.float32)
  return Games(count=jnp.zeros((num_tasks,), jnp.int32), return_sum=zeros,
               length_sum=zeros, recent_return=nan, recent_length=nan)


def add_games(games: Games, game_over: jax.Array, game_return: jax.Array,
              game_length: jax.Array, task_id: jax.Array) -> Games:
  """Adds the games that ended in a ``[T, B]`` block (time order kept) to
  their tasks' tallies (``task_id [B]``)."""
  chex.assert_rank([game_over, game_return, game_length, task_id],
                   [2, 2, 2, 1])
  per_task = [_add_task_games(jax.tree_util.tree_map(lambda x: x[k], games),
                              game_over & (task_id == k)[None, :],
                              game_return, game_length)
              for k in range(games.count.shape[0])]
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_task)


def _add_task_games(games: Games, game_over: jax.Array,
                    game_return: jax.Array, game_length: jax.Array) -> Games:
  """``add_games`` for one task's ``Games`` (leaves without ``[K]``)."""
  over = game_over.reshape(-1)
  returns = jnp.where(over, game_return.reshape(-1), 0.0)
  lengths = jnp.where(over, game_length.reshape(-1), 0.0)
  n = jnp.sum(over.astype(jnp.int32))
  rank = jnp.cumsum(over.astype(jnp.int32)) - 1   # order among the ended
  r = games.recent_return.shape[0]
  # Only the last R of this block are written: no index is written twice.
  keep = over & (rank >= n - r)
  index = jnp.where(keep, (games.count + rank) % r, r)   # r: dropped
  return Games(
      count=games.count + n, return_sum=games.return_sum + returns.sum(),
      length_sum=games.length_sum + lengths.sum(),
      recent_return=games.recent_return.at[index].set(returns, mode='drop'),
      recent_length=games.recent_length.at[index].set(lengths, mode='drop'))


def make_train_fn(env: Any, network: networks.AgentNetwork,
                  config: Config, *, updates_per_call: int,
                  axis_name: Optional[str] = AXIS,
                  policy: Optional[Policy] = None):
  """The per-device function of one call: ``K`` rollouts + updates.

  ``(train_state, actor_state) -> (train_state, actor_state, metrics,
  games)``: ``train_state`` with ``frames=None``; ``actor_state`` leaves
  ``[B/D, ...]``; ``metrics`` are the last update's (identical on every
  device) plus the call's per-task game counts and sums (``[K]``)
  ``psum``med over ``axis_name``; ``games`` is this device's ``Games``. To be ``pmap``ped
  with ``axis_name`` (or jitted with ``axis_name=None``).
  """
  policy = policy or make_policy(network)
  action_repeat = env.spec.action_repeat
  psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (
      lambda x: x)

  def one_update(carry, _):
    train_state, actor_state, games = carry
    actor_state, trajectory, ended = rollout(
        train_state.params, actor_state, env=env, policy=policy,
        unroll_length=config.unroll_length, discount=config.discount,
        param_version=train_state.update_count)
    # The very update the envpool learner applies: no second copy of the
    # loss here.
    train_state, metrics = learner_lib.update_step(
        train_state, trajectory, network=network, config=config,
        action_repeat=action_repeat, axis_name=axis_name)
    return (train_state, actor_state,
            add_games(games, *ended, trajectory.task_id)), metrics

  def train_fn(train_state, actor_state):
    (train_state, actor_state, games), metrics = jax.lax.scan(
        one_update, (train_state, actor_state, empty_games(env.num_tasks)),
        None,
        length=updates_per_call)
    metrics = jax.tree_util.tree_map(lambda x: x[-1], metrics)
    metrics['games'] = psum(games.count)
    metrics['games_return_sum'] = psum(games.return_sum)
    metrics['games_length_sum'] = psum(games.length_sum)
    return train_state, actor_state, metrics, games

  return train_fn
