"""PopArt: per-task adaptive normalisation of the value (pure).

van Hasselt et al. 2016, "Learning values across many orders of magnitude"
(ART: adaptively rescale targets; POP: preserve outputs precisely), as
Hessel et al. 2019, "Multi-task Deep Reinforcement Learning with PopArt",
use it inside IMPALA:

* Per task ``k`` the learner tracks the first and second moments of the
  V-trace targets, ``mu_k <- (1 - beta) mu_k + beta E[v_s]`` and
  ``nu_k <- (1 - beta) nu_k + beta E[v_s^2]`` (``E``: the mean over this
  update's transitions of task ``k``, over the *global* batch: every device
  and host computes the same statistics through the named-axis collective
  that reduces the gradients). A task with no transition in a batch keeps
  its statistics. ``sigma_k = sqrt(nu_k - mu_k^2)``, clipped to
  ``[min_scale, max_scale]`` (the paper: ``[1e-4, 1e6]``, beta ``3e-4``).
  Start: ``mu = 0``, ``nu = 1`` (``sigma = 1``).
* The value head has one output per task and predicts *normalised* values
  ``n_k(x)``; the value is ``v_k(x) = sigma_k n_k(x) + mu_k``. V-trace runs
  on these unnormalised values; the baseline loss compares normalised
  quantities, ``((v_s - mu) / sigma - n(x))^2 = (v_s - v(x))^2 / sigma^2``;
  the policy-gradient advantage is divided by ``sigma``.
* After each statistics update the head's last layer is rescaled so that
  every unnormalised output is unchanged (``preserve_outputs``):
  ``W'_k = W_k sigma_k / sigma'_k``, ``b'_k = (sigma_k b_k + mu_k - mu'_k) /
  sigma'_k``.

Order inside one update, as PopArt's Algorithm 1 (statistics first, so the
gradient step already uses the new normalisation): compute the targets with
the current parameters, update the statistics, rescale the head (outputs
preserved), then the gradient step on the rescaled parameters with targets
normalised by the new statistics. The learner does this in one forward and
backward pass (``core/learner.py``): the loss is written on unnormalised
values with the new ``sigma'`` (which equals the normalised loss at the
rescaled parameters), and the head's gradient is moved to the rescaled
parameters with ``head_gradient_at_rescaled`` (the head is affine, so this
is exact; tested against rescale-then-differentiate).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


class PopArtState(NamedTuple):
  """Running statistics of the value targets, one entry per task.

  Attributes:
    mu: ``[K]`` float32, first moment.
    nu: ``[K]`` float32, second moment.
  """
  mu: Array
  nu: Array


def init(num_tasks: int) -> PopArtState:
  """``mu = 0``, ``nu = 1``: ``sigma = 1``, values start unnormalised."""
  return PopArtState(mu=jnp.zeros((num_tasks,), jnp.float32),
                     nu=jnp.ones((num_tasks,), jnp.float32))


def scale(state: PopArtState, min_scale: float = 1e-4,
          max_scale: float = 1e6) -> Array:
  """``[K]`` ``sigma = sqrt(nu - mu^2)`` clipped to ``[min_scale,
  max_scale]``."""
  variance = state.nu - jnp.square(state.mu)
  return jnp.sqrt(jnp.clip(variance, min_scale ** 2, max_scale ** 2))


def update(state: PopArtState, targets: Array, task_id: Array, mask: Array,
           *, beta: float, axis_name: Optional[str] = None) -> PopArtState:
  """The statistics after one batch of targets.

  Args:
    state: ``PopArtState`` with ``[K]`` leaves.
    targets: ``[T, B]`` unnormalised value targets (V-trace ``v_s``).
    task_id: ``[B]`` int32, each column's task.
    mask: ``[T, B]``, 1 for transitions (only those count).
    beta: the step size.
    axis_name: reduce the per-task sums over this named axis (pmap) so
      every device sees the global batch; None when not mapped.

  Returns:
    the new ``PopArtState``; tasks absent from the batch are unchanged.
  """
  chex.assert_rank([targets, task_id, mask], [2, 1, 2])
  chex.assert_equal_shape([targets, mask])
  num_tasks = state.mu.shape[0]
  targets = jax.lax.stop_gradient(targets).astype(jnp.float32)
  one_hot = jax.nn.one_hot(task_id, num_tasks, dtype=jnp.float32)  # [B, K]
  weights = mask.astype(jnp.float32)                               # [T, B]
  sums = jnp.stack([
      jnp.einsum('tb,bk->k', weights, one_hot),
      jnp.einsum('tb,bk->k', weights * targets, one_hot),
      jnp.einsum('tb,bk->k', weights * jnp.square(targets), one_hot)])
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  count, total, total_sq = sums
  present = count > 0
  safe = jnp.maximum(count, 1.0)
  mu = jnp.where(present, (1 - beta) * state.mu + beta * total / safe,
                 state.mu)
  nu = jnp.where(present, (1 - beta) * state.nu + beta * total_sq / safe,
                 state.nu)
  return PopArtState(mu=mu, nu=nu)


def preserve_outputs(head: Any, old: PopArtState, new: PopArtState, *,
                     min_scale: float = 1e-4,
                     max_scale: float = 1e6) -> Any:
  """The value head's last layer rescaled so that ``sigma n + mu`` is the
  same under ``new`` statistics as it was under ``old``.

  Args:
    head: ``{'kernel': [F, K], 'bias': [K]}`` (a ``nn.Dense``'s params).
    old, new: the statistics before and after ``update``.

  Returns:
    the rescaled ``{'kernel', 'bias'}``.
  """
  chex.assert_rank([head['kernel'], head['bias']], [2, 1])
  old_sigma = scale(old, min_scale, max_scale)
  new_sigma = scale(new, min_scale, max_scale)
  kernel = head['kernel'] * (old_sigma / new_sigma)[None, :]
  bias = (old_sigma * head['bias'] + old.mu - new.mu) / new_sigma
  return {**head, 'kernel': kernel, 'bias': bias}


def head_gradient_at_rescaled(head_grads: Any, old: PopArtState,
                              new: PopArtState, *, min_scale: float = 1e-4,
                              max_scale: float = 1e6) -> Any:
  """The loss's gradient with respect to the *rescaled* head, from its
  gradient with respect to the current one.

  The normalised output at the rescaled head is ``n' = h W' + b'`` with
  ``W' = W s / s'`` and ``b' = (s b + mu - mu') / s'``; as a function of
  ``(W, b)`` it is ``n' = (s / s') (h W + b) + const``, so ``dL/dW' =
  (s' / s) dL/dW`` and ``dL/db' = (s' / s) dL/db`` column by column (the
  gradient reaching the torso is the same either way).

  Args:
    head_grads: ``{'kernel': [F, K], 'bias': [K]}``, the gradient of a loss
      written through ``n' = (s n + mu - mu') / s'`` at the current head.
    old, new: the statistics before and after ``update``.
  """
  ratio = (scale(new, min_scale, max_scale) /
           scale(old, min_scale, max_scale))
  return {**head_grads, 'kernel': head_grads['kernel'] * ratio[None, :],
          'bias': head_grads['bias'] * ratio}


def unnormalise(state: PopArtState, normalised: Array, task_id: Array, *,
                min_scale: float = 1e-4, max_scale: float = 1e6) -> Array:
  """``sigma_k n + mu_k`` of each column's task.

  Args:
    normalised: ``[T, B]`` normalised values.
    task_id: ``[B]``.
  """
  chex.assert_rank([normalised, task_id], [2, 1])
  sigma = scale(state, min_scale, max_scale)[task_id]
  return sigma[None, :] * normalised + state.mu[task_id][None, :]
