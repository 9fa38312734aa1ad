"""A tiny deterministic env with envpool's exact semantics, for tests.

Observations are float32 vectors that say where they come from::

  obs = [env_index, episode_index, step, last_action]

``step`` is 0 for the first observation of an episode (the reset row) and
``t`` after the ``t``-th action of the episode; ``last_action`` is the
action that produced this observation (-1 on a reset row). Episode ``k`` of
env ``i`` lasts ``L = length(i, k)`` actions: the row with ``step == L`` is
its terminal row (real final observation), flagged ``terminated`` or, if the
script says so, ``truncated``. As in envpool, the action sent after a
terminal row is ignored and answered with the reset row of episode ``k+1``
(``step == 0``, reward 0, no flags).

Example, one env, ``episode_lengths=2``, actions a0 a1 a2 a3 sent after
each recv::

  recv  obs[1:]        reward       terminated
  0     (0, 0, -1)     0            False   <- reset row (after async_reset)
  1     (0, 1, a0)     r(0,0,1,a0)  False
  2     (0, 2, a1)     r(0,0,2,a1)  True    <- terminal row, episode 0
  3     (1, 0, -1)     0            False   <- a2 ignored: reset row
  4     (1, 1, a3)     r(0,1,1,a3)  False

Rewards come from ``reward_fn(env, episode, step, action)`` (default: the
step, ``float(step)``, so every transition has a distinct reward). With
``episodes_per_game = n > 1`` a "game" spans ``n`` consecutive episodes,
like lives with Atari's ``episodic_life``: ``game_over`` fires at the end of
every ``n``-th episode, or at any truncated episode (a time limit ends the
game), and ``game_return`` / ``game_length`` sum over the game.

``recv()`` returns the ``batch_size`` oldest pending environments (reset or
step) in the order they were queued, so with ``batch_size == num_envs`` it
is synchronous and rows come in env order ``0..n-1`` when actions are sent
in that order; smaller batches round-robin deterministically.
"""

from __future__ import annotations

import collections
from typing import Callable, Optional, Sequence, Union

import numpy as np

from impala_jax.envs.base import BatchedEnv, EnvSpec, StepBatch

OBS_ENV, OBS_EPISODE, OBS_STEP, OBS_ACTION = 0, 1, 2, 3

_PerEnv = Union[int, bool, Sequence]
RewardFn = Callable[[int, int, int, int], float]


def _default_reward(env: int, episode: int, step: int, action: int) -> float:
  del env, episode, action
  return float(step)


def _is_scalar(value) -> bool:
  if isinstance(value, np.ndarray):
    return value.ndim == 0
  return not isinstance(value, (list, tuple))


def _per_env(value: _PerEnv, num_envs: int, name: str) -> list[list]:
  """Normalises a scalar / per-env / per-env-per-episode spec to lists."""
  if _is_scalar(value):
    return [[value]] * num_envs
  value = list(value)
  if len(value) != num_envs:
    raise ValueError(f'{name} has {len(value)} entries for {num_envs} envs.')
  out = []
  for v in value:
    v = [v] if _is_scalar(v) else list(v)
    if not v:
      raise ValueError(f'{name}: empty per-episode list.')
    out.append(v)
  return out


class ScriptedEnv(BatchedEnv):
  """Deterministic pure-Python ``BatchedEnv`` (see the module docstring).

  Args:
    num_envs: number of environments.
    episode_lengths: actions per episode, ``>= 1``: an int for every
      episode of every env, or one entry per env, each an int or a list
      cycled over that env's episodes.
    truncate: whether an episode ends by truncation (True) rather than
      termination (False); same forms as ``episode_lengths``.
    reward_fn: ``(env, episode, step, action) -> reward`` of the transition
      that reaches ``step`` (1-based); default ``float(step)``.
    num_actions: size of the action set (actions are range-checked).
    episodes_per_game: episodes (lives) per whole game, see above.
    batch_size: rows per ``recv()``; default ``num_envs``.
    max_episode_steps: reported in the spec; default the longest episode.
  """

  def __init__(self, num_envs: int,
               episode_lengths: _PerEnv = 5, *,
               truncate: _PerEnv = False,
               reward_fn: Optional[RewardFn] = None,
               num_actions: int = 2,
               episodes_per_game: int = 1,
               batch_size: Optional[int] = None,
               max_episode_steps: Optional[int] = None):
    self.num_envs = num_envs
    self.batch_size = num_envs if batch_size is None else batch_size
    if not 1 <= self.batch_size <= num_envs:
      raise ValueError('need 1 <= batch_size <= num_envs.')
    self._lengths = _per_env(episode_lengths, num_envs, 'episode_lengths')
    if any(int(l) < 1 for ls in self._lengths for l in ls):
      raise ValueError('episode lengths must be >= 1.')
    self._truncate = _per_env(truncate, num_envs, 'truncate')
    self._reward_fn = reward_fn or _default_reward
    self._episodes_per_game = episodes_per_game
    longest = max(int(l) for ls in self._lengths for l in ls)
    self.spec = EnvSpec(
        env_id='scripted', obs_shape=(4,), obs_dtype=np.dtype(np.float32),
        num_actions=num_actions, action_repeat=1,
        max_episode_steps=max_episode_steps or longest, envpool_kwargs={})
    self._queue: collections.deque = collections.deque()  # (env, action)
    self._episode = np.full(num_envs, -1, np.int64)
    self._step = np.zeros(num_envs, np.int64)
    self._needs_reset = np.ones(num_envs, bool)
    self._episodes_done_in_game = np.zeros(num_envs, np.int64)
    self._game_return = np.zeros(num_envs, np.float64)
    self._game_length = np.zeros(num_envs, np.int64)

  def length(self, env: int, episode: int) -> int:
    """Actions in episode ``episode`` of env ``env``."""
    ls = self._lengths[env]
    return int(ls[episode % len(ls)])

  def truncates(self, env: int, episode: int) -> bool:
    """Whether that episode ends by truncation."""
    ts = self._truncate[env]
    return bool(ts[episode % len(ts)])

  def async_reset(self) -> None:
    self._queue.clear()
    self._needs_reset[:] = True
    self._episodes_done_in_game[:] = 0
    self._game_return[:] = 0.0
    self._game_length[:] = 0
    self._queue.extend((i, None) for i in range(self.num_envs))

  def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
    actions = np.asarray(actions).reshape(-1)
    env_id = np.asarray(env_id).reshape(-1)
    if actions.shape != env_id.shape:
      raise ValueError('actions and env_id must have the same length.')
    pending = {i for i, _ in self._queue}
    for a, i in zip(actions.tolist(), env_id.tolist()):
      if not 0 <= i < self.num_envs or i in pending:
        raise ValueError(f'env {i} is out of range or already has a step '
                         'pending.')
      if not 0 <= a < self.spec.num_actions:
        raise ValueError(f'action {a} out of range [0, '
                         f'{self.spec.num_actions}).')
      pending.add(i)
      self._queue.append((int(i), int(a)))

  def recv(self) -> StepBatch:
    b = self.batch_size
    if len(self._queue) < b:
      raise RuntimeError(f'recv() needs {b} pending envs, only '
                         f'{len(self._queue)} queued (envpool would block).')
    rows = [self._advance(*self._queue.popleft()) for _ in range(b)]
    cols = list(zip(*rows))
    return StepBatch(
        obs=np.stack(cols[0]).astype(np.float32),
        reward=np.asarray(cols[1], np.float32),
        terminated=np.asarray(cols[2], bool),
        truncated=np.asarray(cols[3], bool),
        env_id=np.asarray(cols[4], np.int32),
        game_over=np.asarray(cols[5], bool),
        game_return=np.asarray(cols[6], np.float32),
        game_length=np.asarray(cols[7], np.int32))

  def _advance(self, i: int, action: Optional[int]):
    """One row for env ``i``: a reset row, or the step ``action`` makes."""
    if self._needs_reset[i]:  # after async_reset or a terminal row
      self._needs_reset[i] = False
      self._episode[i] += 1
      self._step[i] = 0
      obs = [i, self._episode[i], 0, -1]
      return (obs, 0.0, False, False, i, False, self._game_return[i],
              self._game_length[i])
    ep = int(self._episode[i])
    self._step[i] += 1
    t = int(self._step[i])
    reward = float(self._reward_fn(i, ep, t, action))
    done = t >= self.length(i, ep)
    truncated = done and self.truncates(i, ep)
    terminated = done and not truncated
    self._game_return[i] += reward
    self._game_length[i] += 1
    game_over = False
    if done:
      self._needs_reset[i] = True
      self._episodes_done_in_game[i] += 1
      game_over = (truncated or
                   self._episodes_done_in_game[i] >= self._episodes_per_game)
    row = ([i, ep, t, action], reward, terminated, truncated, i, game_over,
           self._game_return[i], self._game_length[i])
    if game_over:
      self._episodes_done_in_game[i] = 0
      self._game_return[i] = 0.0
      self._game_length[i] = 0
    return row

  def close(self) -> None:
    self._queue.clear()
