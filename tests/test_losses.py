"""Loss core: categorical helpers, the three IMPALA terms and masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax.core import losses
from reference import vtrace_reference


@pytest.mark.parametrize('num_actions', [2, 6, 18])
def test_entropy_of_uniform_logits_is_log_num_actions(num_actions):
  logits = jnp.full((3, 4, num_actions), 1.7)
  np.testing.assert_allclose(losses.entropy(logits), np.log(num_actions),
                             rtol=1e-6)


def test_log_prob_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 3, 4))
  actions = rng.integers(0, 4, size=(5, 3))
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = np.log(np.take_along_axis(p, actions[..., None], -1)[..., 0])
  np.testing.assert_allclose(
      losses.log_prob(jnp.asarray(logits, jnp.float32), jnp.asarray(actions)),
      want, rtol=1e-5)


def test_importance_log_ratios():
  rng = np.random.default_rng(1)
  target = jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)
  behaviour = jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)
  actions = jnp.asarray(rng.integers(0, 3, size=(4, 2)))
  np.testing.assert_allclose(
      losses.importance_log_ratios(target, behaviour, actions),
      losses.log_prob(target, actions) - losses.log_prob(behaviour, actions),
      rtol=1e-6)
  np.testing.assert_allclose(
      losses.importance_log_ratios(target, target, actions), 0.0, atol=1e-6)


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_pg_gradient_step_moves_log_prob_with_the_advantage(sign):
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(1, 1, 4)), jnp.float32)
  actions = jnp.array([[2]])
  adv = jnp.array([[sign]])
  mask = jnp.ones((1, 1))
  grad = jax.grad(losses.policy_gradient_loss)(logits, actions, adv, mask)
  new_logits = logits - 0.1 * grad
  before = losses.log_prob(logits, actions)[0, 0]
  after = losses.log_prob(new_logits, actions)[0, 0]
  assert sign * (after - before) > 1e-4


def test_pg_loss_does_not_differentiate_the_advantage():
  logits = jnp.zeros((2, 1, 3))
  actions = jnp.zeros((2, 1), jnp.int32)
  grad_adv = jax.grad(losses.policy_gradient_loss, argnums=2)(
      logits, actions, jnp.ones((2, 1)), jnp.ones((2, 1)))
  np.testing.assert_array_equal(grad_adv, 0.0)


def test_baseline_loss_is_half_squared_error_sum():
  vs = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  values = jnp.array([[0.0, 2.5], [1.0, 4.0]])
  mask = jnp.array([[1.0, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(losses.baseline_loss(vs, values, mask),
                             0.5 * (1.0 + 0.25 + 0.0), rtol=1e-6)
  g = jax.grad(losses.baseline_loss, argnums=1)(vs, values, mask)
  np.testing.assert_allclose(g, -(vs - values) * mask, rtol=1e-6)


def _random_batch(rng, T=7, B=3, A=4):
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return dict(
      learner_logits=f32(rng.normal(size=(T, B, A))),
      values=f32(rng.normal(size=(T, B))),
      bootstrap_value=f32(rng.normal(size=(B,))),
      behaviour_logits=f32(rng.normal(size=(T, B, A))),
      actions=jnp.asarray(rng.integers(0, A, size=(T, B)), jnp.int32),
      rewards=f32(rng.normal(size=(T, B))),
      discounts=f32(0.99 * (rng.uniform(size=(T, B)) > 0.2)),
      mask=jnp.ones((T, B), jnp.float32))


def test_impala_loss_matches_numpy_reference():
  rng = np.random.default_rng(3)
  batch = _random_batch(rng)
  out = losses.impala_loss(**batch, baseline_cost=0.5, entropy_cost=0.01)
  b = {k: np.asarray(v, np.float64) for k, v in batch.items()}
  logp = lambda lg: np.log(np.exp(lg) / np.exp(lg).sum(-1, keepdims=True))
  a = batch['actions'][..., None]
  lp_pi = np.take_along_axis(logp(b['learner_logits']), np.asarray(a), -1)[..., 0]
  lp_mu = np.take_along_axis(logp(b['behaviour_logits']), np.asarray(a), -1)[..., 0]
  vs, adv = vtrace_reference(lp_pi - lp_mu, b['discounts'], b['rewards'],
                             b['values'], b['bootstrap_value'])
  pi = np.exp(logp(b['learner_logits']))
  ent = -(pi * np.log(pi)).sum(-1)
  pg = -(adv * lp_pi).sum()
  base = 0.5 * ((vs - b['values']) ** 2).sum()
  want = pg + 0.5 * base - 0.01 * ent.sum()
  np.testing.assert_allclose(out.pg_loss, pg, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.baseline_loss, base, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.entropy_loss, -ent.sum(), rtol=1e-5)
  np.testing.assert_allclose(out.total_loss, want, rtol=1e-4, atol=1e-4)


def test_masked_steps_contribute_nothing():
  """Changing anything at a masked step leaves loss and gradient unchanged."""
  rng = np.random.default_rng(4)
  batch = _random_batch(rng, T=8, B=2)
  mask = np.ones((8, 2), np.float32)
  mask[3, 0] = 0.0
  mask[6, 1] = 0.0
  batch['mask'] = jnp.asarray(mask)
  # The reset step: reward 0 and discount as produced by the actor.
  perturbed = dict(batch)
  for key, scale in [('rewards', 50.0), ('behaviour_logits', 9.0)]:
    arr = np.array(batch[key])
    arr[3, 0] += scale
    arr[6, 1] += scale
    perturbed[key] = jnp.asarray(arr)
  actions = np.array(batch['actions'])
  actions[3, 0] = (actions[3, 0] + 1) % 4
  perturbed['actions'] = jnp.asarray(actions)

  def loss_and_grad(b):
    f = lambda lg, v: losses.impala_loss(
        **{**b, 'learner_logits': lg, 'values': v}).total_loss
    return jax.value_and_grad(f, argnums=(0, 1))(b['learner_logits'],
                                                 b['values'])

  l1, (gl1, gv1) = loss_and_grad(batch)
  l2, (gl2, gv2) = loss_and_grad(perturbed)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(gl1, gl2, atol=1e-6)
  np.testing.assert_allclose(gv1, gv2, atol=1e-6)
  # No gradient at the masked steps themselves...
  np.testing.assert_array_equal(gl1[3, 0], 0.0)
  np.testing.assert_array_equal(gv1[6, 1], 0.0)
  # ...while unmasked steps do get one (the test can fail).
  assert np.abs(gl1[2, 0]).sum() > 0 and np.abs(gv1[2, 0]) > 0


def test_loss_and_metrics_finite_with_garbage_at_masked_step():
  rng = np.random.default_rng(5)
  batch = _random_batch(rng)
  # A masked step may hold anything (envpool's ignored reset-step action):
  # an overflowing importance ratio there must not leak inf/NaN anywhere.
  behaviour = np.array(batch['behaviour_logits'])
  behaviour[2, 1] = [-500.0, 500.0, -500.0, 500.0]
  batch['behaviour_logits'] = jnp.asarray(behaviour)
  batch['actions'] = batch['actions'].at[2, 1].set(0)
  mask = np.ones((7, 3), np.float32)
  mask[2, 1] = 0.0
  batch['mask'] = jnp.asarray(mask)
  out = losses.impala_loss(**batch)
  for name, value in out._asdict().items():
    assert np.isfinite(value), name
  assert 0.0 <= out.rho_clipped_fraction <= 1.0
