"""The batched-environment interface every backend implements.

Semantics are envpool's (https://envpool.readthedocs.io), async form:

* ``async_reset()`` starts a reset of all ``num_envs`` environments. It
  returns nothing; the first observations come out of ``recv()``.
* ``recv()`` blocks until ``batch_size`` environments have finished their
  pending reset or step and returns them as one ``StepBatch``. Which
  environments a batch holds is given by ``StepBatch.env_id``; with
  ``batch_size < num_envs`` it changes from call to call.
* ``send(actions, env_id)`` queues one step for each listed environment.
  The usual loop is ``async_reset(); while True: b = recv();
  send(policy(b.obs), b.env_id)``: every environment returned by a
  ``recv()`` gets exactly one action in the following ``send()``.

Time alignment (this is the part that bites, envpool#257, cleanrl#562)::

  row k of env i:   obs_k  reward_k  terminated_k  truncated_k
                    reward_k, terminated_k and truncated_k belong to the
                    action sent after row k-1.

* A **reset row** is the first row of an episode: the one after
  ``async_reset()`` and the one after any row with ``terminated`` or
  ``truncated``. It holds the first observation of the new episode,
  ``reward == 0`` and ``terminated == truncated == False``.
* The action sent after a terminal row (``terminated or truncated``) is
  **ignored**: the environment resets instead and answers with a reset row.
  That (terminal obs, ignored action, reset row) step is therefore not a
  transition and must be masked out of every loss term.
* A terminal row holds the **real final observation** of the episode, so a
  truncated episode can bootstrap from its value.
* ``terminated`` and ``truncated`` are never both True: ``terminated``
  (discount 0) wins when an episode both ends and hits the time limit on the
  same step. ``truncated`` means "cut by the time limit, bootstrap".

Whole-game statistics (what curves show; docs/ARCHITECTURE.md, "Conventions"):
with Atari's ``episodic_life=True`` every life loss is a terminal row, but
the game goes on. ``game_over`` is True only on the row where the whole game
ends (all lives lost, or truncated), and ``game_return`` / ``game_length``
then hold the raw (unclipped) score and the number of transitions of the
whole game, over all lives. Reset rows are not transitions and are not
counted in ``game_length``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, NamedTuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """Static description of an environment, as the agent sees it.

  Attributes:
    env_id: the id the environment was made from, e.g. ``'Pong-v5'``.
    obs_shape: shape of one observation, e.g. ``(4, 84, 84)``.
    obs_dtype: ``np.dtype`` of observations (uint8 pixels, float32 features).
    num_actions: size of the discrete action set.
    action_repeat: frames per environment step (4 for Atari with
      ``frame_skip=4``, 1 for classic control). Frames = steps * this.
    max_episode_steps: time limit in environment (agent) steps.
    envpool_kwargs: the effective backend arguments (defaults included, pool
      sizing, seeds and machine-specific paths left out), to be written into
      a run's config file. Treat as read-only.
  """
  env_id: str
  obs_shape: tuple
  obs_dtype: np.dtype
  num_actions: int
  action_repeat: int
  max_episode_steps: int
  envpool_kwargs: dict = dataclasses.field(default_factory=dict)


class StepBatch(NamedTuple):
  """What ``BatchedEnv.recv()`` returns; each leaf is ``[b]`` unless noted.

  Attributes:
    obs: ``[b, *obs_shape]`` observations (see the module docstring for
      which observation a reset or terminal row holds).
    reward: float32, the reward used for training (what the backend
      returns; for Atari unclipped unless ``reward_clip`` was asked for).
    terminated: bool, the episode ended (discount 0 for this step). With
      ``episodic_life`` also on every life loss.
    truncated: bool, the episode was cut by the time limit (bootstrap from
      this row's observation). Never True together with ``terminated``.
    env_id: int32, which environment each row belongs to.
    game_over: bool, True on the row where a whole game ends (all lives
      lost, or truncated).
    game_return: float32, raw (unclipped) score of the whole game so far,
      over all lives; the full score where ``game_over``.
    game_length: int32, transitions of the whole game so far (reset rows
      not counted); the full length where ``game_over``.
  """
  obs: np.ndarray
  reward: np.ndarray
  terminated: np.ndarray
  truncated: np.ndarray
  env_id: np.ndarray
  game_over: np.ndarray
  game_return: np.ndarray
  game_length: np.ndarray


class BatchedEnv(abc.ABC):
  """``num_envs`` environments stepped ``batch_size`` at a time.

  See the module docstring for the exact (envpool) semantics. Attributes
  ``spec`` (``EnvSpec``), ``num_envs`` and ``batch_size`` are set by
  subclasses. Usable as a context manager (``close()`` on exit).
  """

  spec: EnvSpec
  num_envs: int
  batch_size: int

  @abc.abstractmethod
  def async_reset(self) -> None:
    """Starts a reset of every environment; results come from ``recv()``."""

  @abc.abstractmethod
  def recv(self) -> StepBatch:
    """Blocks until ``batch_size`` environments are ready; returns them."""

  @abc.abstractmethod
  def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
    """Queues one step: ``actions [b] int32`` for environments ``env_id [b]``.

    An action sent to an environment whose last row was terminal is ignored
    (the environment resets instead).
    """

  @abc.abstractmethod
  def close(self) -> None:
    """Releases the environments (idempotent)."""

  def __enter__(self) -> 'BatchedEnv':
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def joint_spec(specs, env_id: str) -> EnvSpec:
  """The ``EnvSpec`` one agent sees for several tasks (``specs``, in task
  order): they must agree on observations and actions; the time limit is
  the longest, ``envpool_kwargs['tasks']`` lists each task's own. Raises
  ``ValueError`` (one line) where two tasks differ."""
  first = specs[0]
  for spec in specs[1:]:
    for field, what in (('obs_shape', 'observations'),
                        ('obs_dtype', 'observation dtypes'),
                        ('num_actions', 'action counts'),
                        ('action_repeat', 'action repeats')):
      a, b = getattr(first, field), getattr(spec, field)
      if a != b:
        hint = (' (a multi-task agent needs one action set: '
                '--full_action_space)' if field == 'num_actions' else '')
        raise ValueError(f'tasks {first.env_id} and {spec.env_id} differ in '
                         f'{what}: {a} and {b}{hint}.')
  return dataclasses.replace(
      first, env_id=env_id,
      max_episode_steps=max(s.max_episode_steps for s in specs),
      envpool_kwargs={'tasks': [dict(s.envpool_kwargs, env_id=s.env_id)
                                for s in specs]})


class ScaledRewardEnv(BatchedEnv):
  """``env`` with every reward (and so every game return) multiplied by
  ``scale``: a multi-task run's ``--task_reward_scales`` entry for one task,
  applied before the actor, the metrics and the learner see anything."""

  def __init__(self, env: BatchedEnv, scale: float):
    self.env = env
    self.scale = float(scale)
    self.spec = env.spec
    self.num_envs = env.num_envs
    self.batch_size = env.batch_size

  def async_reset(self) -> None:
    self.env.async_reset()

  def recv(self) -> StepBatch:
    batch = self.env.recv()
    return batch._replace(reward=batch.reward * np.float32(self.scale),
                          game_return=batch.game_return * np.float32(
                              self.scale))

  def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
    self.env.send(actions, env_id)

  def close(self) -> None:
    self.env.close()
