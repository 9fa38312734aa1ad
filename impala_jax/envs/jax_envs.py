"""Environments written in JAX: a functional interface and a gymnax adapter.

A ``JaxEnv`` is one environment as two pure functions, to be ``vmap``ped over
a batch and ``scan``ned over time inside one compiled program (the Anakin
layout, ``impala_jax/anakin.py``)::

  state, obs = env.reset(key)
  state, obs, reward, terminated, truncated = env.step(state, action, key)

Shapes are for one environment: ``obs`` is ``[*spec.obs_shape]``, the rest
are scalars (``reward`` float32, ``terminated``/``truncated`` bool,
``action`` int32).

Semantics are envpool's (``impala_jax/envs/base.py``), so that the Anakin
trajectory has exactly the envpool actor's layout:

* ``step`` after a terminal (terminated or truncated) step **ignores the
  action** and resets instead: it returns the first observation of the next
  episode with reward 0 and no flags (the "reset row"). The terminal step
  itself returns the episode's **real final observation**, so a truncated
  episode bootstraps from its value. Resetting is automatic (inside
  ``step``); ``state.needs_reset`` says that the next step is a reset.
* ``truncated`` means "cut by the time limit" (``max_episode_steps`` agent
  steps, counted here in ``state.episode_step``), never together with
  ``terminated`` (a real end wins when both fall on one step). gymnax 1.0
  reports the two apart (``step_env``'s flag is the natural end only, its
  time limit is ``state.time >= max_steps_in_episode``); the adapter keeps
  gymnax's ``max_steps_in_episode`` as the time limit (or sets it to
  ``max_episode_steps``), so environments whose dynamics read it
  (``DiscountingChain-bsuite`` observes ``time / max_steps_in_episode``)
  behave exactly as gymnax's own (``tests/test_anakin.py::
  test_gymnax_adapter_matches_raw_gymnax`` steps every id beside the raw
  gymnax environment).
* ``state.game_return`` / ``state.game_length`` hold the raw score and the
  number of transitions of the current game so far (reset steps not
  counted); on a terminal step they are the whole game's. None of the
  gymnax environments has lives, so a game is an episode.

Environment ids are ``gymnax:<gymnax id>``, e.g. ``gymnax:CartPole-v1``;
``GYMNAX_IDS`` lists those with discrete actions and array observations.
Pinned and tested with gymnax 1.0.1.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import warnings
from typing import Any, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from impala_jax.config import GYMNAX_PREFIX
from impala_jax.envs.base import BatchedEnv, EnvSpec, StepBatch, joint_spec

# gymnax's MinAtar scatters ints into bool grids; jax warns about it at
# trace time (harmless today). Only that message is silenced.
warnings.filterwarnings('ignore', message='scatter inputs have incompatible',
                        category=FutureWarning)

PREFIX = GYMNAX_PREFIX

# gymnax environments with discrete actions and array observations that
# need no download (MNISTBandit does; the continuous-action ones are out).
GYMNAX_IDS = (
    'CartPole-v1', 'Acrobot-v1', 'MountainCar-v0',
    'Asterix-MinAtar', 'Breakout-MinAtar', 'Freeway-MinAtar',
    'SpaceInvaders-MinAtar',
    'Catch-bsuite', 'DeepSea-bsuite', 'MemoryChain-bsuite',
    'UmbrellaChain-bsuite', 'DiscountingChain-bsuite', 'SimpleBandit-bsuite',
)
_CONTINUOUS = ('Pendulum-v1', 'MountainCarContinuous-v0', 'Reacher-misc',
               'Swimmer-misc', 'PointRobot-misc')


class EnvState(NamedTuple):
  """The state of one environment (leaves ``[]`` unless noted).

  Attributes:
    inner: the backend's own state (e.g. a gymnax ``EnvState``).
    needs_reset: bool, the last step ended the episode: the next ``step``
      resets (ignoring its action).
    episode_step: int32, agent steps taken in the current episode.
    game_return: float32, raw score of the current game so far.
    game_length: int32, transitions of the current game so far.
  """
  inner: Any
  needs_reset: jax.Array
  episode_step: jax.Array
  game_return: jax.Array
  game_length: jax.Array


class JaxEnv(abc.ABC):
  """A single functional environment with envpool's auto-reset semantics.

  Subclasses implement ``_reset`` and ``_step`` (one episode, no time
  limit, no auto-reset); this class adds the time limit, the automatic
  reset and the whole-game statistics (see the module docstring).

  Attributes:
    spec: the ``EnvSpec`` (``action_repeat`` is 1; ``max_episode_steps`` is
      the time limit applied here).
  """

  spec: EnvSpec

  @property
  def max_episode_steps(self) -> int:
    return int(self.spec.max_episode_steps)

  @abc.abstractmethod
  def _reset(self, key: jax.Array, previous: Optional[Any]
             ) -> Tuple[Any, jax.Array]:
    """Starts an episode: ``(inner state, obs [*obs_shape])``.

    ``previous`` is the inner state of the episode that just ended (None for
    the very first reset); environments that number their episodes (the
    scripted test env) read it, gymnax ignores it.
    """

  @abc.abstractmethod
  def _step(self, inner: Any, action: jax.Array, key: jax.Array
            ) -> Tuple[Any, jax.Array, jax.Array, jax.Array]:
    """One step of a running episode: ``(inner, obs, reward, terminated)``,
    ``terminated`` meaning a real end (discount 0), never a time limit."""

  # --- a batch of environments (what the Anakin rollout calls) ---------
  num_tasks = 1

  def batch_reset(self, keys: jax.Array) -> Tuple[Any, jax.Array]:
    """``B`` fresh environments, one per key in ``keys [B, 2]``:
    ``(state, obs [B, *obs_shape])``."""
    return jax.vmap(self.reset)(keys)

  def batch_step(self, state: Any, actions: jax.Array, keys: jax.Array):
    """``step`` on ``B`` environments: actions ``[B]``, keys ``[B, 2]``;
    the outputs of ``step`` with a leading ``[B]``."""
    return jax.vmap(self.step)(state, actions, keys)

  def task_ids(self, batch_size: int) -> jax.Array:
    """``[B]`` int32: the task of each of ``B`` environments (all 0)."""
    return jnp.zeros((batch_size,), jnp.int32)

  def reset(self, key: jax.Array) -> Tuple[EnvState, jax.Array]:
    """A fresh environment: ``(state, obs [*obs_shape])``."""
    inner, obs = self._reset(key, None)
    return _fresh_state(inner), obs

  def step(self, state: EnvState, action: jax.Array, key: jax.Array
           ) -> Tuple[EnvState, jax.Array, jax.Array, jax.Array, jax.Array]:
    """One agent step, resetting instead where ``state.needs_reset``.

    Args:
      state: ``EnvState`` of one environment.
      action: ``[]`` int32 (ignored where ``state.needs_reset``).
      key: PRNG key for this step (and the reset it may do).

    Returns:
      ``(state, obs [*obs_shape], reward [] float32, terminated [] bool,
      truncated [] bool)``.
    """
    chex.assert_rank(action, 0)
    step_key, reset_key = jax.random.split(key)
    # Both branches are computed (a select under vmap anyway); cheap for the
    # small JAX environments this path is for.
    reset_inner, reset_obs = self._reset(reset_key, state.inner)
    inner, obs, reward, terminated = self._step(state.inner, action,
                                                step_key)
    episode_step = state.episode_step + 1
    terminated = jnp.asarray(terminated, jnp.bool_)
    truncated = ~terminated & (episode_step >= self.max_episode_steps)
    reward = jnp.asarray(reward, jnp.float32)
    stepped = EnvState(inner=inner, needs_reset=terminated | truncated,
                       episode_step=episode_step,
                       game_return=state.game_return + reward,
                       game_length=state.game_length + 1)
    resetting = state.needs_reset
    new_state = jax.tree_util.tree_map(
        lambda r, s: jnp.where(resetting, r, s), _fresh_state(reset_inner),
        stepped)
    obs = jnp.where(resetting, reset_obs, obs)
    zero = jnp.zeros((), jnp.bool_)
    return (new_state, obs, jnp.where(resetting, 0.0, reward),
            jnp.where(resetting, zero, terminated),
            jnp.where(resetting, zero, truncated))


def _fresh_state(inner: Any) -> EnvState:
  return EnvState(inner=inner, needs_reset=jnp.zeros((), jnp.bool_),
                  episode_step=jnp.zeros((), jnp.int32),
                  game_return=jnp.zeros((), jnp.float32),
                  game_length=jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------- gymnax ---
def is_jax_env_id(env_id: str) -> bool:
  return isinstance(env_id, str) and env_id.startswith(PREFIX)


def validate_gymnax_id(env_id: str) -> str:
  """Checks ``gymnax:<id>`` without importing gymnax; returns it unchanged.

  Raises:
    ValueError: (one line) naming the closest supported ids.
  """
  name = env_id[len(PREFIX):] if is_jax_env_id(env_id) else env_id
  if name in GYMNAX_IDS:
    return env_id
  if name in _CONTINUOUS:
    raise ValueError(f'{env_id!r} has continuous actions; the IMPALA agent '
                     'needs discrete ones. Supported: ' +
                     ', '.join(PREFIX + i for i in GYMNAX_IDS) + '.')
  by_lower = {i.lower(): i for i in GYMNAX_IDS}
  hits = difflib.get_close_matches(name.lower(), list(by_lower), n=5,
                                   cutoff=0.5)
  if hits:
    hint = 'did you mean ' + ', '.join(PREFIX + by_lower[h]
                                       for h in hits) + '?'
  else:
    hint = 'supported: ' + ', '.join(PREFIX + i for i in GYMNAX_IDS) + '.'
  raise ValueError(f'unknown JAX environment id {env_id!r}; {hint}')


class GymnaxEnv(JaxEnv):
  """A gymnax environment behind the ``JaxEnv`` interface.

  Args:
    env_id: ``gymnax:<id>`` (or the bare gymnax id), one of ``GYMNAX_IDS``.
    max_episode_steps: the time limit (truncation); ``None`` or ``<= 0``:
      gymnax's own ``max_steps_in_episode`` (CartPole 500, MinAtar 1000).
    env_kwargs: passed to ``gymnax.make`` (e.g. ``use_minimal_action_set``).
    **params: overrides of the gymnax ``EnvParams`` fields (e.g.
      ``memory_length=10`` for MemoryChain).

  Observations: float32; MinAtar's ``[10, 10, C]`` is transposed to
  channel-first ``[C, 10, 10]``, the networks' convention.
  """

  def __init__(self, env_id: str, *, max_episode_steps: Optional[int] = None,
               env_kwargs: Optional[dict] = None, **params: Any):
    validate_gymnax_id(env_id)
    import gymnax  # pylint: disable=g-import-not-at-top
    self.gymnax_id = env_id[len(PREFIX):] if is_jax_env_id(env_id) else env_id
    self._env, default = gymnax.make(self.gymnax_id, **(env_kwargs or {}))
    unknown = sorted(set(params) - set(default.__dataclass_fields__))
    if unknown:
      raise ValueError(f'{env_id}: unknown parameter(s) {unknown}; '
                       f'known: {sorted(default.__dataclass_fields__)}.')
    params = default.replace(**params)
    limit = int(params.max_steps_in_episode)
    if max_episode_steps is not None and max_episode_steps > 0:
      limit = int(max_episode_steps)
    # gymnax 1.0's step_env flag is the natural end only; the time limit is
    # applied here (``JaxEnv.step``) at the same step gymnax's would be.
    self._params = params.replace(max_steps_in_episode=limit)
    space = self._env.observation_space(params)
    shape = tuple(int(d) for d in space.shape)
    self._channel_first = len(shape) == 3
    if self._channel_first:
      shape = (shape[2], shape[0], shape[1])
    shown = {k: (v if np.ndim(v) == 0 else np.asarray(v).tolist())
             for k, v in vars(params).items()}
    shown = {k: (v.item() if hasattr(v, 'item') else v)
             for k, v in shown.items() if k != 'max_steps_in_episode'}
    self.spec = EnvSpec(
        env_id=PREFIX + self.gymnax_id, obs_shape=shape,
        obs_dtype=np.dtype(np.float32),
        num_actions=int(self._env.num_actions), action_repeat=1,
        max_episode_steps=limit,
        envpool_kwargs={'backend': 'gymnax',
                        'gymnax_version': _gymnax_version(),
                        'env_params': shown,
                        'env_kwargs': dict(env_kwargs or {})})

  def _obs(self, obs: jax.Array) -> jax.Array:
    obs = jnp.asarray(obs, jnp.float32)
    return jnp.transpose(obs, (2, 0, 1)) if self._channel_first else obs

  def _reset(self, key, previous):
    del previous
    obs, inner = self._env.reset_env(key, self._params)
    return inner, self._obs(obs)

  def _step(self, inner, action, key):
    obs, inner, reward, terminated, _ = self._env.step_env(
        key, inner, action, self._params)
    return inner, self._obs(obs), reward, terminated


def _gymnax_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version('gymnax')
  except Exception:  # pylint: disable=broad-except
    return 'unknown'


def make_jax_env(env_id: str, *, max_episode_steps: Optional[int] = None,
                 **params: Any) -> JaxEnv:
  """The ``JaxEnv`` for ``gymnax:<id>`` (validated first)."""
  if not is_jax_env_id(env_id):
    raise ValueError(f'{env_id!r} is not a JAX environment id; use '
                     f'{PREFIX}<id>, e.g. {PREFIX}CartPole-v1.')
  return GymnaxEnv(env_id, max_episode_steps=max_episode_steps, **params)


# ----------------------------------------------------------- multi-task ---
class TaskEnv(JaxEnv):
  """One task of a multi-task run: ``inner``'s dynamics with observations
  zero-padded to a common shape (MinAtar's games have 4 to 7 channels) and
  rewards multiplied by ``reward_scale`` (so its returns are too).

  Args:
    inner: the task's ``JaxEnv``.
    obs_shape: the common observation shape; every dimension ``>=``
      inner's (padding goes at the end of each axis).
    reward_scale: the task's reward factor (``--task_reward_scales``).
  """

  def __init__(self, inner: JaxEnv, obs_shape: Tuple[int, ...],
               reward_scale: float = 1.0):
    own = tuple(inner.spec.obs_shape)
    if len(own) != len(obs_shape) or any(
        o > c for o, c in zip(own, obs_shape)):
      raise ValueError(f'{inner.spec.env_id}: observations {own} do not fit '
                       f'the common shape {tuple(obs_shape)}.')
    self.inner = inner
    self.reward_scale = float(reward_scale)
    self._pad = tuple((0, c - o) for o, c in zip(own, obs_shape))
    kwargs = dict(inner.spec.envpool_kwargs)
    if self.reward_scale != 1.0:
      kwargs['reward_scale'] = self.reward_scale
    if own != tuple(obs_shape):
      kwargs['padded_from'] = list(own)
    self.spec = dataclasses.replace(inner.spec, obs_shape=tuple(obs_shape),
                                    envpool_kwargs=kwargs)

  def _obs(self, obs):
    return jnp.pad(obs, self._pad) if any(p for _, p in self._pad) else obs

  def _reset(self, key, previous):
    inner, obs = self.inner._reset(key, previous)  # pylint: disable=protected-access
    return inner, self._obs(obs)

  def _step(self, inner, action, key):
    inner, obs, reward, terminated = self.inner._step(inner, action, key)  # pylint: disable=protected-access
    return inner, self._obs(obs), reward * self.reward_scale, terminated


class MultiTaskState(NamedTuple):
  """The state of a multi-task batch: each task's batched ``EnvState``
  (leaves ``[B/K, ...]``) and, concatenated in task order, the fields the
  rollout reads (``[B]``)."""
  tasks: Tuple[EnvState, ...]
  needs_reset: jax.Array
  game_return: jax.Array
  game_length: jax.Array


class MultiTaskJaxEnv:
  """``K`` tasks behind the batch interface of ``JaxEnv`` (``batch_reset``,
  ``batch_step``, ``task_ids``, ``spec``), for the Anakin layout.

  A batch of ``B`` environments (on one device) is ``B/K`` of each task, in
  task order: rows ``k B/K .. (k+1) B/K - 1`` play task ``k``. Each task is
  ``vmap``ped over its own rows inside the one compiled program; the
  observations, rewards and flags are joined along ``B``. Every task must
  have the same observation shape (``TaskEnv`` pads) and action count.
  """

  def __init__(self, envs: Tuple[JaxEnv, ...]):
    envs = tuple(envs)
    if len(envs) < 2:
      raise ValueError('a multi-task environment needs two or more tasks.')
    self.envs = envs
    self.num_tasks = len(envs)
    self.spec = joint_spec([e.spec for e in envs],
                           ','.join(e.spec.env_id for e in envs))

  def _rows(self, batch_size: int) -> int:
    if batch_size % self.num_tasks:
      raise ValueError(f'{batch_size} environments do not split over '
                       f'{self.num_tasks} tasks.')
    return batch_size // self.num_tasks

  def batch_reset(self, keys: jax.Array):
    n = self._rows(keys.shape[0])
    parts = [env.batch_reset(keys[k * n:(k + 1) * n])
             for k, env in enumerate(self.envs)]
    states = tuple(p[0] for p in parts)
    obs = jnp.concatenate([p[1] for p in parts], axis=0)
    return self._join(states), obs

  def batch_step(self, state: MultiTaskState, actions: jax.Array,
                 keys: jax.Array):
    n = self._rows(actions.shape[0])
    parts = [env.batch_step(state.tasks[k], actions[k * n:(k + 1) * n],
                            keys[k * n:(k + 1) * n])
             for k, env in enumerate(self.envs)]
    states = tuple(p[0] for p in parts)
    joined = [jnp.concatenate([p[i] for p in parts], axis=0)
              for i in range(1, 5)]
    return (self._join(states), *joined)

  @staticmethod
  def _join(states: Tuple[EnvState, ...]) -> MultiTaskState:
    cat = lambda name: jnp.concatenate([getattr(s, name) for s in states])
    return MultiTaskState(tasks=states, needs_reset=cat('needs_reset'),
                          game_return=cat('game_return'),
                          game_length=cat('game_length'))

  def task_ids(self, batch_size: int) -> jax.Array:
    return jnp.repeat(jnp.arange(self.num_tasks, dtype=jnp.int32),
                      self._rows(batch_size))


def common_obs_shape(specs) -> Tuple[int, ...]:
  """The smallest shape every spec's observations fit (per-axis maximum)."""
  shapes = [tuple(s.obs_shape) for s in specs]
  if len({len(s) for s in shapes}) != 1:
    raise ValueError(f'tasks have observations of different ranks: '
                     f'{shapes}.')
  return tuple(max(dims) for dims in zip(*shapes))


# ------------------------------------------------- host-stepped batch ---
def _split_each(keys: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """``[N]`` keys -> (next ``[N]`` keys, ``[N]`` keys to use now)."""
  pairs = jax.vmap(jax.random.split)(keys)          # [N, 2, ...]
  return pairs[:, 0], pairs[:, 1]


class JaxBatchedEnv(BatchedEnv):
  """``num_envs`` copies of a ``JaxEnv`` behind the ``BatchedEnv`` interface.

  For code that steps environments from the host one batch at a time
  (evaluation, ``impala_jax/evaluation.py``), so a JAX environment plays the
  same games an envpool one would. Synchronous: ``batch_size == num_envs``
  and ``recv()`` returns every environment in order. One jitted, vmapped
  ``JaxEnv.step`` per ``send``; environment ``i`` draws its keys from
  ``fold_in(PRNGKey(seed), i)``. No lives: ``game_over`` is
  ``terminated | truncated``.
  """

  def __init__(self, env: JaxEnv, num_envs: int, seed: int = 0):
    if num_envs < 1:
      raise ValueError(f'num_envs must be >= 1, got {num_envs}.')
    self.env = env
    self.spec = env.spec
    self.num_envs = self.batch_size = int(num_envs)
    base = jax.random.PRNGKey(seed)
    self._keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.arange(self.num_envs))
    self._reset = jax.jit(jax.vmap(env.reset))

    def step(state, action, keys):
      keys, step_keys = _split_each(keys)
      state, obs, reward, terminated, truncated = jax.vmap(env.step)(
          state, action, step_keys)
      return keys, state, obs, reward, terminated, truncated
    self._step = jax.jit(step)
    self._state = None
    self._pending: Optional[StepBatch] = None
    self._ids = np.arange(self.num_envs, dtype=np.int32)

  def _batch(self, obs, reward, terminated, truncated) -> StepBatch:
    obs, reward, terminated, truncated, ret, length = jax.device_get(
        (obs, reward, terminated, truncated, self._state.game_return,
         self._state.game_length))
    terminated = np.asarray(terminated, bool)
    truncated = np.asarray(truncated, bool)
    return StepBatch(obs=np.asarray(obs), reward=np.asarray(reward, np.float32),
                     terminated=terminated, truncated=truncated,
                     env_id=self._ids.copy(), game_over=terminated | truncated,
                     game_return=np.asarray(ret, np.float32),
                     game_length=np.asarray(length, np.int32))

  def async_reset(self) -> None:
    self._keys, reset_keys = _split_each(self._keys)
    self._state, obs = self._reset(reset_keys)
    zeros = np.zeros((self.num_envs,), bool)
    self._pending = self._batch(obs, np.zeros((self.num_envs,), np.float32),
                                zeros, zeros)

  def recv(self) -> StepBatch:
    if self._pending is None:
      raise RuntimeError('recv() without a pending async_reset() or send().')
    batch, self._pending = self._pending, None
    return batch

  def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
    if self._state is None:
      raise RuntimeError('send() before async_reset().')
    if not np.array_equal(np.asarray(env_id), self._ids):
      raise ValueError('JaxBatchedEnv is synchronous: send one action for '
                       'every environment, in env_id order.')
    self._keys, self._state, obs, reward, terminated, truncated = self._step(
        self._state, jnp.asarray(actions, jnp.int32), self._keys)
    self._pending = self._batch(obs, reward, terminated, truncated)

  def close(self) -> None:
    self._state = self._pending = None


# -------------------------------------------------------------- scripted ---
class ScriptedJaxEnv(JaxEnv):
  """The JAX twin of ``impala_jax.envs.ScriptedEnv``, for tests.

  Observations ``[env_index, episode_index, step, last_action]`` (float32;
  ``last_action`` -1 on a reset row), reward ``float(step)``. Episode ``k``
  of env ``i`` ends after ``lengths[i][k % n]`` actions by termination, or,
  where ``truncate[i][k % n]``, never ends by itself and is cut by the time
  limit ``max_episode_steps`` (so ``ScriptedEnv`` with that episode length
  and ``truncate=True`` is its twin). ``reset_at(i)`` starts env ``i``;
  ``reset(key)`` starts env 0.

  Args:
    lengths: ``[num_envs][n]`` episode lengths (``n`` the same for all).
    truncate: ``[num_envs][n]`` bool.
    max_episode_steps: the time limit.
    num_actions: action set size.
  """

  def __init__(self, lengths, truncate, *, max_episode_steps: int,
               num_actions: int = 2):
    self._lengths = jnp.asarray(lengths, jnp.int32)
    self._truncate = jnp.asarray(truncate, jnp.bool_)
    chex.assert_rank([self._lengths, self._truncate], 2)
    chex.assert_equal_shape([self._lengths, self._truncate])
    self.spec = EnvSpec(env_id='scripted-jax', obs_shape=(4,),
                        obs_dtype=np.dtype(np.float32),
                        num_actions=num_actions, action_repeat=1,
                        max_episode_steps=max_episode_steps)

  @staticmethod
  def _inner(env, episode, step):
    return (jnp.asarray(env, jnp.int32), jnp.asarray(episode, jnp.int32),
            jnp.asarray(step, jnp.int32))

  def reset_at(self, env_index) -> Tuple[EnvState, jax.Array]:
    inner = self._inner(env_index, 0, 0)
    return _fresh_state(inner), self._observe(inner, -1)

  def _observe(self, inner, last_action):
    env, episode, step = inner
    return jnp.stack([env, episode, step,
                      jnp.asarray(last_action, jnp.int32)]).astype(
                          jnp.float32)

  def _reset(self, key, previous):
    del key
    if previous is None:
      inner = self._inner(0, 0, 0)
    else:
      inner = self._inner(previous[0], previous[1] + 1, 0)
    return inner, self._observe(inner, -1)

  def _step(self, inner, action, key):
    del key
    env, episode, step = inner
    step = step + 1
    n = self._lengths.shape[1]
    length = self._lengths[env, episode % n]
    terminated = (step >= length) & ~self._truncate[env, episode % n]
    inner = self._inner(env, episode, step)
    return inner, self._observe(inner, action), step.astype(
        jnp.float32), terminated
