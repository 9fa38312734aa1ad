"""The IMPALA loss (Espeholt et al. 2018, section 4.2), time-major.

Every loss here is **summed** over time and batch, as the paper and its
reference implementation (scalable_agent) do. The paper's hyperparameters
(learning rate 6e-4, RMSProp epsilon 0.01, global-norm clip 40) were tuned
for that scale of gradient; averaging would divide the gradient by ``T*B``
and silently change what those numbers mean. ``mask`` removes steps that are
not transitions (envpool's reset step): they add nothing to any term.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from impala_jax.core import vtrace as vtrace_lib

Array = jax.Array


def log_prob(logits: Array, actions: Array) -> Array:
  """``log pi(a|x)`` of a categorical policy.

  Args:
    logits: ``[..., A]`` unnormalised log-probabilities.
    actions: ``[...]`` integer actions in ``[0, A)``.

  Returns:
    ``[...]`` log-probabilities of ``actions``.
  """
  chex.assert_rank(actions, logits.ndim - 1,
                   custom_message='`actions` must be `logits` without [A]')
  chex.assert_equal_shape_prefix([logits, actions], actions.ndim)
  log_pi = jax.nn.log_softmax(logits)
  return jnp.take_along_axis(
      log_pi, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy(logits: Array) -> Array:
  """Entropy ``-sum_a pi(a|x) log pi(a|x)``: ``[..., A] -> [...]``."""
  chex.assert_rank(logits, {1, 2, 3, 4})
  log_pi = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)


def importance_log_ratios(target_logits: Array, behaviour_logits: Array,
                          actions: Array) -> Array:
  """``log pi(a|x) - log mu(a|x)``: logits ``[..., A]``, actions ``[...]``."""
  chex.assert_equal_shape([target_logits, behaviour_logits])
  return log_prob(target_logits, actions) - log_prob(behaviour_logits, actions)


def policy_gradient_loss(logits: Array, actions: Array, advantages: Array,
                         mask: Array) -> Array:
  """``-sum_{t,b} mask * A_t * log pi(a_t|x_t)``, advantages held constant.

  Args:
    logits: ``[T, B, A]`` learner logits.
    actions: ``[T, B]`` actions taken.
    advantages: ``[T, B]`` (V-trace pg advantages); gradient is stopped.
    mask: ``[T, B]`` 1 for transitions, 0 for steps to ignore.

  Returns:
    scalar loss.
  """
  chex.assert_rank([logits, actions, advantages, mask], [3, 2, 2, 2])
  chex.assert_equal_shape([actions, advantages, mask])
  advantages = jax.lax.stop_gradient(advantages)
  return -jnp.sum(mask * advantages * log_prob(logits, actions))


def baseline_loss(vs: Array, values: Array, mask: Array) -> Array:
  """``0.5 * sum_{t,b} mask * (v_s - V(x_s))^2``, targets held constant.

  Args:
    vs: ``[T, B]`` value targets (gradient stopped).
    values: ``[T, B]`` learner values.
    mask: ``[T, B]``.
  """
  chex.assert_rank([vs, values, mask], 2)
  chex.assert_equal_shape([vs, values, mask])
  return 0.5 * jnp.sum(mask * jnp.square(jax.lax.stop_gradient(vs) - values))


def entropy_loss(logits: Array, mask: Array) -> Array:
  """``-sum_{t,b} mask * H(pi(.|x_t))``: minimising it raises entropy.

  Args:
    logits: ``[T, B, A]``.
    mask: ``[T, B]``.
  """
  chex.assert_rank([logits, mask], [3, 2])
  return -jnp.sum(mask * entropy(logits))


def masked_vtrace(log_rhos: Array, discounts: Array, rewards: Array,
                  values: Array, bootstrap_value: Array, mask: Array,
                  **vtrace_kwargs) -> vtrace_lib.VTraceReturns:
  """V-trace over a trajectory with non-transitions masked out.

  A masked step gets importance weight 0 (``log_rho = -inf``): its target is
  ``V(x_t)`` and the trace does not read across it, so a step before an
  envpool reset bootstraps from ``V`` of the real final observation.

  Args:
    log_rhos, discounts, rewards, values: ``[T, B]``.
    bootstrap_value: ``[B]``.
    mask: ``[T, B]``, 0 at steps that are not transitions.
    **vtrace_kwargs: thresholds and ``lambda_`` for ``vtrace.vtrace``.
  """
  chex.assert_equal_shape([log_rhos, mask])
  masked_log_rhos = jnp.where(mask > 0, log_rhos, -jnp.inf)
  return vtrace_lib.vtrace(
      masked_log_rhos, discounts, rewards, jax.lax.stop_gradient(values),
      jax.lax.stop_gradient(bootstrap_value), **vtrace_kwargs)


class LossOutput(NamedTuple):
  """Scalar loss terms and diagnostics of one IMPALA loss evaluation."""
  total_loss: Array
  pg_loss: Array
  baseline_loss: Array
  entropy_loss: Array
  mean_rho: Array            # mean of pi/mu over transitions
  rho_clipped_fraction: Array  # fraction of transitions with rho > rho_bar
  mean_value: Array
  mean_vs: Array
  mean_entropy: Array


class TargetsOutput(NamedTuple):
  """V-trace's targets for one loss evaluation (all ``[T, B]``)."""
  log_rhos: Array
  returns: vtrace_lib.VTraceReturns   # vs, pg_advantages (unnormalised)
  mask: Array


def impala_targets(
    learner_logits: Array,
    values: Array,
    bootstrap_value: Array,
    behaviour_logits: Array,
    actions: Array,
    rewards: Array,
    discounts: Array,
    mask: Array,
    *,
    clip_rho_threshold: Optional[float] = 1.0,
    clip_c_threshold: Optional[float] = 1.0,
    clip_pg_rho_threshold: Optional[float] = 1.0,
    lambda_: float = 1.0,
) -> TargetsOutput:
  """The first half of the loss: importance ratios and masked V-trace.

  Arguments as ``impala_loss``. ``values`` are unnormalised (what V-trace
  bootstraps from); their gradient is stopped here.
  """
  chex.assert_rank([learner_logits, behaviour_logits, values, bootstrap_value],
                   [3, 3, 2, 1])
  chex.assert_equal_shape([learner_logits, behaviour_logits])
  chex.assert_equal_shape([values, actions, rewards, discounts, mask])
  mask = mask.astype(values.dtype)
  log_rhos = importance_log_ratios(
      jax.lax.stop_gradient(learner_logits), behaviour_logits, actions)
  returns = masked_vtrace(
      log_rhos, discounts, rewards, values, bootstrap_value, mask,
      clip_rho_threshold=clip_rho_threshold,
      clip_c_threshold=clip_c_threshold,
      clip_pg_rho_threshold=clip_pg_rho_threshold, lambda_=lambda_)
  return TargetsOutput(log_rhos=log_rhos, returns=returns, mask=mask)


def impala_loss_terms(
    targets: TargetsOutput,
    learner_logits: Array,
    values: Array,
    actions: Array,
    *,
    baseline_cost: float = 0.5,
    entropy_cost: float = 0.01,
    clip_rho_threshold: Optional[float] = 1.0,
    value_scale: Optional[Array] = None,
) -> LossOutput:
  """The second half of the loss, from ``impala_targets``' output.

  Args:
    targets: ``impala_targets(...)``.
    learner_logits: ``[T, B, A]``.
    values: ``[T, B]`` unnormalised learner values (differentiable).
    actions: ``[T, B]``.
    baseline_cost, entropy_cost, clip_rho_threshold: as ``impala_loss``.
    value_scale: ``[B]`` PopArt's ``sigma`` of each column's task, or None.
      With it the baseline loss is the normalised one, ``0.5 ((v_s - mu) /
      sigma - (V - mu) / sigma)^2 = 0.5 (v_s - V)^2 / sigma^2``, and the
      policy-gradient advantage is divided by ``sigma`` (``core/popart.py``).
  """
  mask = targets.mask
  pg_advantages, vs = targets.returns.pg_advantages, targets.returns.vs
  if value_scale is None:
    baseline = baseline_loss(vs, values, mask)
  else:
    chex.assert_rank(value_scale, 1)
    inverse = 1.0 / jax.lax.stop_gradient(value_scale)[None, :]
    baseline = baseline_loss(vs * inverse, values * inverse, mask)
    pg_advantages = pg_advantages * inverse
  pg = policy_gradient_loss(learner_logits, actions, pg_advantages, mask)
  ent = entropy_loss(learner_logits, mask)
  total = pg + baseline_cost * baseline + entropy_cost * ent

  count = jnp.maximum(jnp.sum(mask), 1.0)
  masked_mean = lambda x: jnp.sum(jnp.where(mask > 0, x, 0.0)) / count
  rhos = jnp.exp(targets.log_rhos)
  rho_bar = jnp.inf if clip_rho_threshold is None else clip_rho_threshold
  return LossOutput(
      total_loss=total, pg_loss=pg, baseline_loss=baseline, entropy_loss=ent,
      mean_rho=masked_mean(rhos),
      rho_clipped_fraction=masked_mean((rhos > rho_bar).astype(values.dtype)),
      mean_value=masked_mean(jax.lax.stop_gradient(values)),
      mean_vs=masked_mean(vs),
      mean_entropy=-ent / count)


def impala_loss(
    learner_logits: Array,
    values: Array,
    bootstrap_value: Array,
    behaviour_logits: Array,
    actions: Array,
    rewards: Array,
    discounts: Array,
    mask: Array,
    *,
    baseline_cost: float = 0.5,
    entropy_cost: float = 0.01,
    clip_rho_threshold: Optional[float] = 1.0,
    clip_c_threshold: Optional[float] = 1.0,
    clip_pg_rho_threshold: Optional[float] = 1.0,
    lambda_: float = 1.0,
) -> LossOutput:
  """``pg + baseline_cost * baseline + entropy_cost * entropy``, summed.

  ``impala_targets`` then ``impala_loss_terms`` (PopArt calls the two
  halves itself, updating its statistics between them).

  Args:
    learner_logits: ``[T, B, A]`` ``pi`` logits at ``x_0 .. x_{T-1}``.
    values: ``[T, B]`` ``V(x_0) .. V(x_{T-1})``.
    bootstrap_value: ``[B]`` ``V(x_T)``.
    behaviour_logits: ``[T, B, A]`` the actor's ``mu`` logits.
    actions: ``[T, B]``.
    rewards: ``[T, B]`` (already clipped if clipping is wanted).
    discounts: ``[T, B]`` ``gamma * (1 - terminated)``.
    mask: ``[T, B]`` 1 for transitions, 0 for non-transitions. A masked
      step gets a zero importance weight in V-trace, so the targets of the
      steps before it bootstrap from ``V`` there and do not read across it.
    baseline_cost, entropy_cost: loss coefficients (paper: 0.5, 0.01 for
      Atari).
    clip_rho_threshold, clip_c_threshold, clip_pg_rho_threshold, lambda_:
      passed to ``vtrace.vtrace``.

  Returns:
    ``LossOutput`` of scalars; differentiate ``total_loss``.
  """
  targets = impala_targets(
      learner_logits, values, bootstrap_value, behaviour_logits, actions,
      rewards, discounts, mask, clip_rho_threshold=clip_rho_threshold,
      clip_c_threshold=clip_c_threshold,
      clip_pg_rho_threshold=clip_pg_rho_threshold, lambda_=lambda_)
  return impala_loss_terms(targets, learner_logits, values, actions,
                           baseline_cost=baseline_cost,
                           entropy_cost=entropy_cost,
                           clip_rho_threshold=clip_rho_threshold)
