"""Pytrees shared by the actor, the learner and the networks.

All arrays are time-major. A trajectory of unroll length ``T`` holds ``T+1``
observations ``x_0 .. x_T`` (the last one bootstraps, and is ``x_0`` of the
next unroll: consecutive unrolls overlap by one step) and ``T`` actions,
rewards, discounts, behaviour logits and masks.

Step ``t`` of a trajectory is the transition ``(x_t, a_t, r_t, x_{t+1})``:
``a_t`` was chosen at ``x_t``, ``r_t`` and ``discount_t`` came back with
``x_{t+1}``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax

Array = jax.Array
# A recurrent core's state: ``()`` for a feed-forward agent, an LSTM
# ``(c, h)`` pair of ``[B, H]`` arrays otherwise.
CoreState = Any


class AgentInput(NamedTuple):
  """What the network sees at each time step.

  Shapes are ``[B, ...]`` for one step (acting) and ``[T, B, ...]`` for an
  unroll (learning).

  Attributes:
    observation: ``[..., *obs_shape]``, uint8 pixels (scaled inside the
      network) or float32 features.
    first: ``[...]`` bool, True where ``observation`` is the first one of an
      episode; the recurrent core resets its state there.
    last_action: ``[...]`` int32, the action taken before this observation
      (0 at an episode start).
    last_reward: ``[...]`` float32, the raw reward received with this
      observation (0 at an episode start); the network clips it to [-1, 1].
  """
  observation: Array
  first: Array
  last_action: Array
  last_reward: Array


class AgentOutput(NamedTuple):
  """Network outputs: ``policy_logits [..., A]`` and ``value [...]`` (or
  ``[..., K]``, one per task, for a multi-task network)."""
  policy_logits: Array
  value: Array


class Trajectory(NamedTuple):
  """One time-major unroll of ``B`` environments, produced by an actor.

  Attributes:
    inputs: ``AgentInput`` with leading dims ``[T+1, B]``.
    actions: ``[T, B]`` int32, ``a_t`` taken at ``x_t``.
    rewards: ``[T, B]`` float32, raw (unclipped) reward of step ``t``.
    discounts: ``[T, B]`` float32, ``gamma * (1 - terminated_t)``; a
      truncated step keeps ``gamma`` and bootstraps from the value of its
      real final observation.
    behaviour_logits: ``[T, B, A]`` float32, the actor's logits at ``x_t``.
    mask: ``[T, B]`` float32, 0 where step ``t`` is not a transition (the
      step after an episode end, whose action the environment ignores while
      it resets), 1 elsewhere.
    core_state: the recurrent state before ``x_0``, leaves ``[B, ...]``
      (``()`` for a feed-forward agent).
    param_version: ``[B]`` int32, version of the parameters that acted.
    task_id: ``[B]`` int32, the task each column was played on (index into
      ``config.tasks``); None means task 0 everywhere (single-task runs).
  """
  inputs: AgentInput
  actions: Array
  rewards: Array
  discounts: Array
  behaviour_logits: Array
  mask: Array
  core_state: CoreState
  param_version: Array
  task_id: Optional[Array] = None

  @property
  def unroll_length(self) -> int:
    return self.actions.shape[0]

  @property
  def batch_size(self) -> int:
    return self.actions.shape[1]
