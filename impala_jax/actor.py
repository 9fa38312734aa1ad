"""The rollout loop for one batch of environments.

An ``Actor`` steps a ``BatchedEnv`` (envpool semantics, see
``impala_jax/envs/base.py``) with the jitted ``AgentNetwork.step`` on its
actor device and cuts the stream of every environment into time-major
columns of ``T+1`` observations that overlap by one: the last observation of
a column is the first of the next, so no step is ever dropped (RLlib#34779).
``batch_size`` finished columns make one ``Trajectory`` ``[T+1, B]``.

How one env's rows become a column (row ``k`` is what ``recv()`` returned)::

  inputs[t]      = (obs_k, first_k, last_action, last_reward)  t = 0..T
  actions[t]     = a_k            (sampled at obs_k)
  rewards[t]     = reward_{k+1}   (reward_{k+1} belongs to a_k)
  discounts[t]   = gamma * (1 - terminated_{k+1})
  mask[t]        = 0 if row k was terminal (a_k is ignored by the env, which
                   resets and answers with a reset row), else 1

``first_k`` is True on reset rows (the first row of each episode). A
truncated row keeps ``discount = gamma``: its real final observation is the
next input, whose value V-trace bootstraps from.

With asynchronous envpool (``batch_size < num_envs``) each ``recv()`` brings
a different subset of environments; the bookkeeping is per environment and
vectorised over the subset with NumPy fancy indexing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import jax
import numpy as np

from impala_jax.core import acting
from impala_jax.core import networks
from impala_jax.envs.base import BatchedEnv
from impala_jax.core.types import AgentInput, Trajectory

# () -> (params, version): the newest published parameters.
ParamsSource = Callable[[], Tuple[object, int]]


@dataclasses.dataclass
class RolloutStats:
  """What happened while one trajectory was collected."""
  env_steps: int = 0                 # recv rows processed (all envs)
  task_id: int = 0                   # the task the actor plays
  game_returns: List[float] = dataclasses.field(default_factory=list)
  game_lengths: List[int] = dataclasses.field(default_factory=list)


class Actor:
  """Produces ``Trajectory`` batches ``[T+1, batch_size]`` from one env.

  Args:
    env: a ``BatchedEnv``; the actor calls ``async_reset`` itself.
    network: the ``AgentNetwork`` (shared definition with the learner).
    params_source: returns the newest ``(params, version)``; called before
      each trajectory (the actor then acts with those params throughout).
    unroll_length: ``T``.
    batch_size: columns per trajectory (the learner's ``B``).
    discount: ``gamma``.
    device: the actor device; inputs and params are placed there.
    seed: seeds the action sampling.
    task_id: the task this actor's environments play (multi-task runs);
      stamped on every trajectory (``Trajectory.task_id``) and its stats.
  """

  def __init__(self, env: BatchedEnv, network: networks.AgentNetwork,
               params_source: ParamsSource, *, unroll_length: int,
               batch_size: int, discount: float,
               device: Optional[jax.Device] = None, seed: int = 0,
               policy_step=None, task_id: int = 0):
    self.env = env
    self.network = network
    self.params_source = params_source
    self.T = unroll_length
    self.batch_size = batch_size
    self.discount = discount
    self.task_id = int(task_id)
    self.device = device or jax.local_devices()[0]
    self._policy = policy_step or acting.make_policy_step(network)
    self._key = jax.device_put(jax.random.PRNGKey(seed), self.device)
    self._params = None
    self._params_version = -1
    self._started = False
    self._columns: List[Trajectory] = []
    self._stats = RolloutStats(task_id=self.task_id)

    n, T = env.num_envs, unroll_length
    spec = env.spec
    self._num_actions = spec.num_actions
    self._obs = np.zeros((n, T + 1) + tuple(spec.obs_shape), spec.obs_dtype)
    self._first = np.zeros((n, T + 1), bool)
    self._last_action = np.zeros((n, T + 1), np.int32)
    self._last_reward = np.zeros((n, T + 1), np.float32)
    self._actions = np.zeros((n, T), np.int32)
    self._rewards = np.zeros((n, T), np.float32)
    self._discounts = np.zeros((n, T), np.float32)
    self._logits = np.zeros((n, T, spec.num_actions), np.float32)
    self._mask = np.zeros((n, T), np.float32)
    self._version = np.zeros((n,), np.int32)
    self._pos = np.zeros((n,), np.int64)
    self._prev_terminal = np.ones((n,), bool)  # first row is a reset row
    self._prev_action = np.zeros((n,), np.int32)
    zero_state = networks.initial_state(network, n)
    self._core = jax.tree_util.tree_map(np.array, zero_state)
    self._core_start = jax.tree_util.tree_map(np.array, zero_state)

  # -- parameters --------------------------------------------------------
  def _refresh_params(self) -> None:
    params, version = self.params_source()
    if version != self._params_version:
      self._params = jax.device_put(params, self.device)
      self._params_version = int(version)

  # -- the loop ----------------------------------------------------------
  def next_trajectory(self) -> Tuple[Trajectory, RolloutStats]:
    """Steps the env until ``batch_size`` columns are complete.

    Returns the host (NumPy) trajectory and what happened meanwhile
    (env steps, finished games with their raw whole-game return).
    """
    self._refresh_params()
    if not self._started:
      self.env.async_reset()
      self._started = True
    while len(self._columns) < self.batch_size:
      self._step()
    columns = self._columns[:self.batch_size]
    self._columns = self._columns[self.batch_size:]
    stats, self._stats = self._stats, RolloutStats(task_id=self.task_id)
    return stack_columns(columns), stats

  def _step(self) -> None:
    batch = self.env.recv()
    ids = batch.env_id.astype(np.int64)
    p = self._pos[ids]
    terminal = batch.terminated | batch.truncated

    # The transition that led to this row: step p-1 of the column.
    has_prev = p > 0
    j, q = ids[has_prev], p[has_prev] - 1
    self._rewards[j, q] = batch.reward[has_prev]
    self._discounts[j, q] = self.discount * (
        1.0 - batch.terminated[has_prev].astype(np.float32))
    self._mask[j, q] = (~self._prev_terminal[j]).astype(np.float32)

    # This row as the network's input t = p.
    is_first = self._prev_terminal[ids]
    inputs = acting.agent_input(batch.obs, is_first, self._prev_action[ids],
                                batch.reward)
    self._obs[ids, p] = batch.obs
    self._first[ids, p] = is_first
    self._last_action[ids, p] = inputs.last_action
    self._last_reward[ids, p] = inputs.last_reward

    state_in = jax.tree_util.tree_map(lambda s: s[ids], self._core)
    self._key, key = jax.random.split(self._key)
    actions, logits, state_out = jax.device_get(self._policy(
        self._params, jax.device_put(inputs, self.device),
        jax.device_put(state_in, self.device), key))

    # Columns that now hold T+1 inputs are complete; the row they end on
    # starts the next column (overlap by one).
    full = p == self.T
    if np.any(full):
      self._emit(ids[full])
      p = np.where(full, 0, p)
    starting = p == 0
    if np.any(starting):
      s = ids[starting]
      self._version[s] = self._params_version
      for start, cur in zip(jax.tree_util.tree_leaves(self._core_start),
                            jax.tree_util.tree_leaves(state_in)):
        start[s] = cur[starting]
    self._version[ids] = np.minimum(self._version[ids], self._params_version)
    self._actions[ids, p] = actions
    self._logits[ids, p] = logits
    self._pos[ids] = p + 1
    self._prev_terminal[ids] = terminal
    self._prev_action[ids] = actions
    for core, new in zip(jax.tree_util.tree_leaves(self._core),
                         jax.tree_util.tree_leaves(state_out)):
      core[ids] = new

    self._stats.env_steps += len(ids)
    over = batch.game_over
    if np.any(over):
      self._stats.game_returns.extend(batch.game_return[over].tolist())
      self._stats.game_lengths.extend(batch.game_length[over].tolist())
    self.env.send(np.asarray(actions, np.int32), batch.env_id)

  def _emit(self, env_ids: np.ndarray) -> None:
    """Copies out the complete columns of ``env_ids`` and rolls them over."""
    T = self.T
    for i in env_ids:
      self._columns.append(Trajectory(
          inputs=AgentInput(observation=self._obs[i].copy(),
                            first=self._first[i].copy(),
                            last_action=self._last_action[i].copy(),
                            last_reward=self._last_reward[i].copy()),
          actions=self._actions[i].copy(), rewards=self._rewards[i].copy(),
          discounts=self._discounts[i].copy(),
          behaviour_logits=self._logits[i].copy(), mask=self._mask[i].copy(),
          core_state=jax.tree_util.tree_map(lambda s: s[i].copy(),
                                            self._core_start),
          param_version=np.int32(self._version[i]),
          task_id=np.int32(self.task_id)))
    for buf in (self._obs, self._first, self._last_action, self._last_reward):
      buf[env_ids, 0] = buf[env_ids, T]


def _join(trajectories: List[Trajectory], time_major, batch_major
          ) -> Trajectory:
  """One trajectory from several: ``time_major`` joins the leaves with time
  first, ``batch_major`` the per-column ones (``core_state``,
  ``param_version``, ``task_id``; a missing ``task_id`` counts as 0)."""
  first = trajectories[0]
  field = lambda name: time_major(*[getattr(t, name) for t in trajectories])
  return Trajectory(
      inputs=jax.tree_util.tree_map(time_major,
                                    *[t.inputs for t in trajectories]),
      actions=field('actions'), rewards=field('rewards'),
      discounts=field('discounts'),
      behaviour_logits=field('behaviour_logits'), mask=field('mask'),
      core_state=(jax.tree_util.tree_map(
          batch_major, *[t.core_state for t in trajectories])
                  if jax.tree_util.tree_leaves(first.core_state) else ()),
      param_version=batch_major(*[t.param_version for t in trajectories]),
      task_id=batch_major(*[np.zeros(np.shape(t.param_version), np.int32)
                            if t.task_id is None else t.task_id
                            for t in trajectories]).astype(np.int32))


def stack_columns(columns: List[Trajectory]) -> Trajectory:
  """Per-env columns (time leading) -> one ``[T(+1), B, ...]`` trajectory."""
  return _join(columns, lambda *xs: np.stack(xs, axis=1),
               lambda *xs: np.stack(xs, axis=0))


def concat_trajectories(trajectories: List[Trajectory]) -> Trajectory:
  """Trajectories ``[T(+1), B_i]`` joined along ``B`` (a multi-task update
  takes one piece from several actors)."""
  if len(trajectories) == 1:
    return trajectories[0]
  return _join(trajectories, lambda *xs: np.concatenate(xs, axis=1),
               lambda *xs: np.concatenate(xs, axis=0))
