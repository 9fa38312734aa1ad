"""V-trace kernel against the float64 sum-definition reference, and properties."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax.core import vtrace as vtrace_lib
from reference import n_step_returns_reference, vtrace_reference


def random_inputs(rng, T, B, trailing=(), gamma=0.99, done_prob=0.15,
                  log_rho_scale=2.0):
  shape = (T, B) + tuple(trailing)
  # Log-rhos well outside [log 1/e.., log 1]: many rhos > 1 and many << 1.
  log_rhos = rng.normal(scale=log_rho_scale, size=shape)
  done = rng.uniform(size=shape) < done_prob
  discounts = gamma * (1.0 - done)
  rewards = rng.normal(size=shape)
  values = rng.normal(size=shape)
  bootstrap = rng.normal(size=shape[1:])
  return log_rhos, discounts, rewards, values, bootstrap


THRESHOLDS = [
    dict(),  # all defaults (1.0)
    dict(clip_rho_threshold=3.7, clip_c_threshold=1.9,
         clip_pg_rho_threshold=2.5),
    dict(clip_rho_threshold=None, clip_c_threshold=None,
         clip_pg_rho_threshold=None),
    dict(clip_rho_threshold=None, clip_c_threshold=1.0,
         clip_pg_rho_threshold=None),
    dict(lambda_=0.9),
    dict(clip_rho_threshold=2.0, clip_c_threshold=None, lambda_=0.7),
]


@pytest.mark.parametrize('T,B', [(1, 1), (5, 3), (20, 8), (33, 2)])
@pytest.mark.parametrize('kwargs', THRESHOLDS)
def test_matches_reference_float64(T, B, kwargs):
  rng = np.random.default_rng(T * 100 + B)
  args = random_inputs(rng, T, B)
  want_vs, want_pg = vtrace_reference(*args, **kwargs)
  with jax.enable_x64(True):
    out = vtrace_lib.vtrace(*(jnp.asarray(a, jnp.float64) for a in args),
                            **kwargs)
    assert out.vs.dtype == jnp.float64
    np.testing.assert_allclose(out.vs, want_vs, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(out.pg_advantages, want_pg, atol=1e-6,
                               rtol=1e-6)


@pytest.mark.parametrize('kwargs', THRESHOLDS)
def test_matches_reference_float32(kwargs):
  rng = np.random.default_rng(7)
  args = random_inputs(rng, 20, 16)
  want_vs, want_pg = vtrace_reference(*args, **kwargs)
  out = jax.jit(lambda *a: vtrace_lib.vtrace(*a, **kwargs))(
      *(jnp.asarray(a, jnp.float32) for a in args))
  assert out.vs.dtype == jnp.float32
  # 1e-5 relative, with an absolute floor for entries that are near zero.
  np.testing.assert_allclose(out.vs, want_vs, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.pg_advantages, want_pg, rtol=1e-5, atol=1e-5)


def test_reference_itself_is_not_trivial():
  """Clipping settings must change the answer, or the tests above prove little."""
  rng = np.random.default_rng(0)
  args = random_inputs(rng, 10, 4)
  results = [vtrace_reference(*args, **kw)[0] for kw in THRESHOLDS[:3]]
  for a, b in itertools.combinations(results, 2):
    assert not np.allclose(a, b)


def test_on_policy_equals_n_step_return():
  rng = np.random.default_rng(1)
  _, discounts, rewards, values, bootstrap = random_inputs(rng, 15, 6)
  with jax.enable_x64(True):
    out = vtrace_lib.vtrace(np.zeros_like(rewards), discounts, rewards, values,
                            bootstrap)
    np.testing.assert_allclose(
        out.vs, n_step_returns_reference(discounts, rewards, bootstrap),
        atol=1e-10)
    # And the pg advantage is the one-step TD error on those returns.
    vs_tp1 = np.concatenate([np.asarray(out.vs)[1:], bootstrap[None]])
    np.testing.assert_allclose(out.pg_advantages,
                               rewards + discounts * vs_tp1 - values,
                               atol=1e-10)


def test_episode_boundary_splits_cleanly():
  """A terminal step cuts the trace: each episode alone gives the same targets."""
  rng = np.random.default_rng(2)
  log_rhos, discounts, rewards, values, bootstrap = random_inputs(
      rng, 12, 3, done_prob=0.0)
  k = 5  # episode 1 ends at step k (x_{k+1} is the first obs of episode 2)
  discounts[k] = 0.0
  with jax.enable_x64(True):
    whole = vtrace_lib.vtrace(log_rhos, discounts, rewards, values, bootstrap)
    first = vtrace_lib.vtrace(log_rhos[:k + 1], discounts[:k + 1],
                              rewards[:k + 1], values[:k + 1], values[k + 1])
    second = vtrace_lib.vtrace(log_rhos[k + 1:], discounts[k + 1:],
                               rewards[k + 1:], values[k + 1:], bootstrap)
  np.testing.assert_allclose(whole.vs[:k + 1], first.vs, atol=1e-12)
  np.testing.assert_allclose(whole.vs[k + 1:], second.vs, atol=1e-12)
  np.testing.assert_allclose(whole.pg_advantages[:k + 1], first.pg_advantages,
                             atol=1e-12)


def test_minus_inf_log_rho_makes_a_step_transparent():
  """log_rho = -inf (a non-transition) gives v_t = V(x_t) and cuts the trace."""
  rng = np.random.default_rng(3)
  log_rhos, discounts, rewards, values, bootstrap = random_inputs(
      rng, 8, 4, done_prob=0.0)
  log_rhos[4] = -np.inf
  with jax.enable_x64(True):
    out = vtrace_lib.vtrace(log_rhos, discounts, rewards, values, bootstrap)
    head = vtrace_lib.vtrace(log_rhos[:4], discounts[:4], rewards[:4],
                             values[:4], values[4])
  np.testing.assert_allclose(out.vs[4], values[4], atol=1e-12)
  np.testing.assert_allclose(out.pg_advantages[4], 0.0, atol=1e-12)
  np.testing.assert_allclose(out.vs[:4], head.vs, atol=1e-12)
  assert np.all(np.isfinite(out.vs))


def test_no_gradient_flows_into_outputs():
  rng = np.random.default_rng(4)
  args = [jnp.asarray(a, jnp.float32) for a in random_inputs(rng, 6, 3)]

  def f(values, bootstrap, log_rhos, rewards):
    out = vtrace_lib.vtrace(log_rhos, args[1], rewards, values, bootstrap)
    return jnp.sum(out.vs) + jnp.sum(out.pg_advantages)

  grads = jax.grad(f, argnums=(0, 1, 2, 3))(args[3], args[4], args[0], args[2])
  for g in grads:
    np.testing.assert_array_equal(g, np.zeros_like(g))


def test_jit_matches_eager():
  rng = np.random.default_rng(5)
  args = [jnp.asarray(a, jnp.float32) for a in random_inputs(rng, 20, 5)]
  kw = dict(clip_rho_threshold=2.0, lambda_=0.95)
  eager = vtrace_lib.vtrace(*args, **kw)
  jitted = jax.jit(lambda *a: vtrace_lib.vtrace(*a, **kw))(*args)
  np.testing.assert_allclose(eager.vs, jitted.vs, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(eager.pg_advantages, jitted.pg_advantages,
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('shape', [(9,), (9, 4, 3), (9, 2, 3, 2)])
def test_rank1_and_trailing_dims(shape):
  rng = np.random.default_rng(6)
  T, rest = shape[0], shape[1:]
  args = random_inputs(rng, T, 1)
  args = [rng.normal(size=shape) for _ in range(4)] + [rng.normal(size=rest)]
  args[1] = 0.9 * (rng.uniform(size=shape) > 0.1)
  want_vs, want_pg = vtrace_reference(*args, clip_rho_threshold=1.5)
  with jax.enable_x64(True):
    out = vtrace_lib.vtrace(*args, clip_rho_threshold=1.5)
  assert out.vs.shape == shape
  np.testing.assert_allclose(out.vs, want_vs, atol=1e-9)
  np.testing.assert_allclose(out.pg_advantages, want_pg, atol=1e-9)


@pytest.mark.parametrize('bad,name', [
    ('discounts', 'discounts'), ('rewards', 'rewards'), ('values', 'values'),
    ('bootstrap', 'bootstrap_value')])
def test_shape_mismatch_names_the_argument(bad, name):
  rng = np.random.default_rng(0)
  log_rhos, discounts, rewards, values, bootstrap = random_inputs(rng, 5, 3)
  args = dict(log_rhos=log_rhos, discounts=discounts, rewards=rewards,
              values=values, bootstrap_value=bootstrap)
  key = 'bootstrap_value' if bad == 'bootstrap' else bad
  args[key] = np.zeros((5, 4)) if key != 'bootstrap_value' else np.zeros((5,))
  with pytest.raises(AssertionError, match=f'`{name}`'):
    vtrace_lib.vtrace(**args)


def test_bad_threshold_is_rejected():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match='clip_c_threshold'):
    vtrace_lib.vtrace(*random_inputs(rng, 3, 2), clip_c_threshold=0.0)
