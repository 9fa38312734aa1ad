"""Synthetic data for tests and benchmarks (no environment needed)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from impala_jax.core.types import AgentInput, Trajectory


def synthetic_trajectory(seed: int, unroll_length: int, batch_size: int,
                         observation_shape: Sequence[int], observation_dtype,
                         num_actions: int, *, lstm_size: int = 0,
                         discount: float = 0.99, done_prob: float = 0.05,
                         ) -> Trajectory:
  """A random host (NumPy) ``Trajectory`` with ``[T+1, B]`` observations.

  Episode ends are sprinkled with probability ``done_prob``; the step after
  each end is masked out (envpool's reset step) and its next observation is
  flagged ``first``. ``lstm_size > 0`` adds a random ``(c, h)`` core state.
  """
  rng = np.random.default_rng(seed)
  T, B = unroll_length, batch_size
  obs_shape = (T + 1, B) + tuple(observation_shape)
  if np.dtype(observation_dtype) == np.uint8:
    observation = rng.integers(0, 256, size=obs_shape, dtype=np.uint8)
  else:
    observation = rng.normal(size=obs_shape).astype(observation_dtype)
  done = rng.uniform(size=(T, B)) < done_prob
  mask = np.ones((T, B), np.float32)
  mask[1:][done[:-1]] = 0.0      # step after a terminal step: reset step
  first = np.zeros((T + 1, B), bool)
  first[2:][done[:-1]] = True    # observation after the reset step
  actions = rng.integers(0, num_actions, size=(T, B)).astype(np.int32)
  rewards = rng.normal(size=(T, B)).astype(np.float32) * (rng.uniform(
      size=(T, B)) < 0.3)
  rewards[mask == 0] = 0.0
  last_action = np.zeros((T + 1, B), np.int32)
  last_action[1:] = actions
  last_reward = np.zeros((T + 1, B), np.float32)
  last_reward[1:] = rewards
  core_state = ()
  if lstm_size:
    core_state = tuple(rng.normal(size=(B, lstm_size)).astype(np.float32)
                       for _ in range(2))
  return Trajectory(
      inputs=AgentInput(observation=observation, first=first,
                        last_action=last_action, last_reward=last_reward),
      actions=actions, rewards=rewards,
      discounts=(discount * (1.0 - done)).astype(np.float32),
      behaviour_logits=rng.normal(size=(T, B, num_actions)).astype(
          np.float32),
      mask=mask, core_state=core_state,
      param_version=np.zeros((B,), np.int32))
