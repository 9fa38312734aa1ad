"""How the agent acts: one policy step and the input bookkeeping (pure).

Every path that chooses actions uses these: the envpool actors
(``actor.py``), the Anakin rollout (``anakin.py``) and evaluation
(``evaluation.py``).

* ``policy_step``: ``AgentNetwork.step`` on a batch of inputs, then one
  action per row, sampled from the policy (or its argmax).
* ``agent_input``: the network's input for a row given what came before it.
  On a reset row (the first observation of an episode) the previous action
  and reward belong to the old episode, so both are zeroed; the network sees
  ``first=True`` and resets its core state.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from impala_jax.core import networks
from impala_jax.core.types import AgentInput

# (params, inputs [b], core_state, key) -> (actions [b] int32,
#  logits [b, A], core_state)
PolicyStep = Callable[..., Tuple[jax.Array, jax.Array, Any]]


def policy_step(network: networks.AgentNetwork, params, inputs: AgentInput,
                core_state, key: jax.Array, *, greedy: bool = False):
  """One step of the agent on ``b`` rows.

  Args:
    network: the ``AgentNetwork``.
    params: its parameters.
    inputs: ``AgentInput`` with leaves ``[b, ...]``.
    core_state: the core state, leaves ``[b, ...]``.
    key: ``[2]`` one key for the whole batch, or ``[b, 2]`` one per row (the
      Anakin layout, so a row's actions do not depend on the batch size).
    greedy: ``argmax`` instead of sampling.

  Returns:
    ``(actions [b] int32, policy_logits [b, A], new core_state)``.
  """
  out, core_state = network.apply(params, inputs, core_state,
                                  method=networks.AgentNetwork.step)
  logits = out.policy_logits
  if greedy:
    actions = jnp.argmax(logits, axis=-1)
  elif key.ndim == 2:
    actions = jax.vmap(jax.random.categorical)(key, logits)
  else:
    actions = jax.random.categorical(key, logits)
  return actions.astype(jnp.int32), logits, core_state


def make_policy_step(network: networks.AgentNetwork, *, greedy: bool = False,
                     jit: bool = True) -> PolicyStep:
  """``policy_step`` bound to ``network``: ``(params, inputs, core_state,
  key) -> (actions, logits, core_state)``; jitted unless ``jit=False`` (for
  use inside a compiled program)."""
  def step(params, inputs, core_state, key):
    return policy_step(network, params, inputs, core_state, key,
                       greedy=greedy)
  return jax.jit(step) if jit else step


def agent_input(observation, first, prev_action, reward, xp=np
                ) -> AgentInput:
  """The network's input for rows ``[b]``.

  Args:
    observation: ``[b, *obs_shape]``.
    first: ``[b]`` bool, the row is the first of an episode (a reset row).
    prev_action: ``[b]`` the action taken before this row.
    reward: ``[b]`` the reward that came with this row.
    xp: ``numpy`` (host actors, evaluation) or ``jax.numpy`` (Anakin).

  Returns:
    ``AgentInput`` with ``last_action`` (int32) and ``last_reward``
    (float32) zeroed where ``first``.
  """
  return AgentInput(
      observation=observation, first=first,
      last_action=xp.where(first, 0, prev_action).astype(xp.int32),
      last_reward=xp.where(first, 0.0, reward).astype(xp.float32))
