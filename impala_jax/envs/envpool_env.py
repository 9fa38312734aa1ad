"""envpool backend: Atari, classic control, Procgen, ViZDoom.

What envpool 1.2.5 actually returns (gymnasium API, verified here):

* ``info`` keys: ``env_id``, ``elapsed_step`` and ``players`` for every
  family; Atari adds ``lives``, ``reward`` (the raw reward, before
  ``reward_clip``), ``terminated`` (1 where the ALE reports game over, even
  with ``episodic_life``) and ``ram``. Classic control has nothing more.
* A reset row has ``reward == 0``, ``terminated == truncated == False`` and
  ``elapsed_step == 0`` -- except the life-continue "reset" after a life loss
  with ``episodic_life=True``, which keeps the game's ``elapsed_step`` (the
  step counter spans all lives; the game is not reset).
* ``max_episode_steps`` counts agent steps (27000 = 108k frames,
  envpool#195); the done row of a time-limited episode has
  ``elapsed_step == max_episode_steps``.
* envpool computes ``truncated = done & (elapsed_step >= max_episode_steps)``
  and ``terminated = done & ~truncated``. So when an Atari game ends (game
  over) on the very step the time limit is reached, envpool says
  ``truncated`` although the game is over. We correct that with
  ``info['terminated']``; likewise a life lost on that step with
  ``episodic_life`` counts as terminated.
* Older envpool versions reported the wrong flag with ``episodic_life``
  (envpool#239); we therefore derive the time limit from ``elapsed_step``
  ourselves and only use envpool's ``done = terminated | truncated`` to know
  which rows end an episode (it is what makes envpool reset the env).

Resulting rules (``done`` = envpool's terminated | truncated)::

  time_limit = elapsed_step >= max_episode_steps
  terminated = done & (game_over_from_ale | life_lost_with_episodic_life
                       | (envpool_terminated & ~time_limit))
  truncated  = done & ~terminated
  game_over  = done & (game_over_from_ale | time_limit | envpool_truncated)
               (Atari; every done row for other families)
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional

import numpy as np

from impala_jax.envs.base import BatchedEnv, EnvSpec, StepBatch

# envpool rebuilds its gymnasium spaces on every recv(); for specs with
# float64 bounds (CartPole, ...) gymnasium then warns about float32 casting.
# Harmless; silenced here once rather than per call (catch_warnings is not
# thread-safe).
warnings.filterwarnings(
    'ignore', message=r".*Box (low|high)'s precision lowered",
    category=UserWarning)

# Config entries that describe the pool or the machine, not the environment.
_POOL_KEYS = frozenset({
    'num_envs', 'batch_size', 'num_threads', 'max_num_players',
    'thread_affinity_offset', 'base_path', 'seed', 'env_seed',
    'gym_reset_return_info',
})


@dataclasses.dataclass(frozen=True)
class AtariOptions:
  """Atari preprocessing, passed to envpool as keyword arguments.

  The defaults are the IMPALA paper's protocol (DQN preprocessing): 84x84
  gray frames, 4 stacked, frame skip 4 with max-pooling of the last two
  frames, up to 30 no-op starts, no sticky actions, the minimal action set,
  whole-game episodes, unclipped rewards (the learner clips) and a limit of
  27,000 agent steps = 108,000 frames. ``use_fire_reset`` keeps envpool's
  default (press FIRE after a reset in games that have it). Named
  protocols (the paper's, Machado et al. 2018's) are
  ``impala_jax.config.ATARI_PROTOCOLS``; ``envs.factory.env_options`` builds these
  options from a ``Config``.
  """
  img_height: int = 84
  img_width: int = 84
  gray_scale: bool = True
  stack_num: int = 4
  frame_skip: int = 4
  noop_max: int = 30
  repeat_action_probability: float = 0.0
  full_action_space: bool = False
  episodic_life: bool = False
  reward_clip: bool = False
  use_fire_reset: bool = True
  max_episode_steps: int = 27000

  def to_kwargs(self) -> dict:
    return dataclasses.asdict(self)


_ATARI_FIELDS = frozenset(f.name for f in dataclasses.fields(AtariOptions))

# Defaults for other families: the agent needs a discrete action set.
_FAMILY_DEFAULTS = {
    'vizdoom': {'use_combined_action': True},
}


def env_family(env_id: str) -> str:
  """envpool's module for ``env_id``: 'atari', 'classic_control', 'procgen',
  'vizdoom', ... ('' if envpool does not know the id)."""
  from envpool.registration import registry  # pylint: disable=g-import-not-at-top
  entry = registry.specs.get(env_id)
  if entry is None:
    return ''
  return str(entry[0]).rsplit('.', 1)[-1]


def resolve_kwargs(env_id: str, atari: Optional[AtariOptions],
                   kwargs: dict) -> tuple[str, dict]:
  """Returns ``(family, envpool keyword arguments)`` for ``env_id``.

  For Atari, ``kwargs`` naming an ``AtariOptions`` field override ``atari``;
  other ``kwargs`` go to envpool unchanged.
  """
  family = env_family(env_id)
  kwargs = dict(kwargs)
  if family == 'atari':
    atari = atari if atari is not None else AtariOptions()
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _ATARI_FIELDS}
    atari = dataclasses.replace(atari, **overrides)
    return family, {**atari.to_kwargs(), **kwargs}
  if atari is not None:
    raise ValueError(f'atari options were given for {env_id!r}, which is not '
                     f'an Atari env (envpool family {family!r}).')
  return family, {**_FAMILY_DEFAULTS.get(family, {}), **kwargs}


def spec_from_envpool(env_id: str, espec: Any) -> EnvSpec:
  """Builds an ``EnvSpec`` from an envpool spec; rejects what IMPALA here
  cannot act in (continuous actions, dict observations)."""
  import gymnasium  # pylint: disable=g-import-not-at-top
  obs_space = espec.observation_space
  act_space = espec.action_space
  if not isinstance(obs_space, gymnasium.spaces.Box):
    raise ValueError(f'{env_id!r} has observations of type '
                     f'{type(obs_space).__name__}; only Box (array) '
                     'observations are supported.')
  if not isinstance(act_space, gymnasium.spaces.Discrete):
    raise ValueError(f'{env_id!r} has a {type(act_space).__name__} action '
                     'space; IMPALA here needs discrete actions.')
  config = espec.config._asdict()
  effective = {k: v for k, v in config.items()
               if k not in _POOL_KEYS and not k.endswith('_path')}
  return EnvSpec(
      env_id=env_id,
      obs_shape=tuple(int(d) for d in obs_space.shape),
      obs_dtype=np.dtype(obs_space.dtype),
      num_actions=int(act_space.n),
      action_repeat=int(config.get('frame_skip', 1)),
      max_episode_steps=int(config['max_episode_steps']),
      envpool_kwargs=effective)


def _bad_kwargs(env_id: str, err: TypeError) -> ValueError:
  return ValueError(f'invalid envpool argument for {env_id!r}: {err}')


def make_envpool_spec(env_id: str, make_kwargs: dict) -> Any:
  """``envpool.make_spec`` with a readable error for unknown arguments."""
  import envpool  # pylint: disable=g-import-not-at-top
  try:
    return envpool.make_spec(env_id, **make_kwargs)
  except TypeError as e:
    raise _bad_kwargs(env_id, e) from e


class EnvpoolEnv(BatchedEnv):
  """An ``envpool.make(..., env_type='gymnasium')`` pool, async send/recv.

  See ``impala_jax.envs.base`` for the semantics and this module's docstring
  for how the flags are derived from what envpool returns.
  """

  def __init__(self, env_id: str, *, num_envs: int,
               batch_size: Optional[int] = None, seed: int = 0,
               num_threads: int = 0, atari: Optional[AtariOptions] = None,
               **kwargs: Any):
    import envpool  # pylint: disable=g-import-not-at-top
    batch_size = num_envs if batch_size is None else batch_size
    if not 1 <= batch_size <= num_envs:
      raise ValueError(f'need 1 <= batch_size <= num_envs, got '
                       f'batch_size={batch_size}, num_envs={num_envs}.')
    self._family, make_kwargs = resolve_kwargs(env_id, atari, kwargs)
    try:
      pool = envpool.make(env_id, env_type='gymnasium', num_envs=num_envs,
                          batch_size=batch_size, seed=seed,
                          num_threads=num_threads, **make_kwargs)
    except TypeError as e:
      raise _bad_kwargs(env_id, e) from e
    try:
      self.spec = spec_from_envpool(env_id, pool.spec)
    except Exception:
      pool.close()
      raise
    self._pool = pool
    self._closed = False
    self.num_envs = num_envs
    self.batch_size = batch_size
    self._is_atari = self._family == 'atari'
    self._episodic_life = bool(self.spec.envpool_kwargs.get('episodic_life'))
    self._max_steps = self.spec.max_episode_steps
    self._needs_reset = np.ones(num_envs, bool)
    self._lives = np.zeros(num_envs, np.int64)
    self._game_return = np.zeros(num_envs, np.float64)
    self._game_length = np.zeros(num_envs, np.int64)

  def async_reset(self) -> None:
    self._needs_reset[:] = True
    self._game_return[:] = 0.0
    self._game_length[:] = 0
    self._pool.async_reset()

  def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
    actions = np.asarray(actions, np.int32)
    env_id = np.asarray(env_id, np.int32)
    if actions.ndim != 1 or actions.shape != env_id.shape:
      raise ValueError(f'actions {actions.shape} and env_id {env_id.shape} '
                       'must be equal 1-D shapes.')
    self._pool.send(actions, env_id)

  def recv(self) -> StepBatch:
    obs, reward, env_term, env_trunc, info = self._pool.recv()
    ids = np.asarray(info['env_id'], np.int32)
    reset_row = self._needs_reset[ids]
    env_term = np.asarray(env_term, bool) & ~reset_row
    env_trunc = np.asarray(env_trunc, bool) & ~reset_row
    done = env_term | env_trunc
    time_limit = np.asarray(info['elapsed_step']) >= self._max_steps
    reward = np.asarray(reward, np.float32)
    raw_reward = reward
    if self._is_atari:
      lives = np.asarray(info['lives'], np.int64)
      ale_game_over = np.asarray(info['terminated']).astype(bool)
      life_lost = (self._episodic_life & (lives > 0)
                   & (lives < self._lives[ids]) & ~reset_row)
      self._lives[ids] = lives
      terminated = done & (ale_game_over | life_lost | (env_term & ~time_limit))
      game_over = done & (ale_game_over | time_limit | env_trunc)
      raw_reward = np.asarray(info.get('reward', reward), np.float32)
    else:
      terminated = done & env_term & ~time_limit
      game_over = done
    truncated = done & ~terminated

    stepped = ~reset_row
    self._game_return[ids] += np.where(stepped, raw_reward, 0.0)
    self._game_length[ids] += stepped
    game_return = self._game_return[ids].astype(np.float32)
    game_length = self._game_length[ids].astype(np.int32)
    ended = ids[game_over]
    self._game_return[ended] = 0.0
    self._game_length[ended] = 0
    # envpool resets an env after any row with done; mirror that.
    self._needs_reset[ids] = done
    return StepBatch(obs=obs, reward=reward, terminated=terminated,
                     truncated=truncated, env_id=ids, game_over=game_over,
                     game_return=game_return, game_length=game_length)

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      self._pool.close()
