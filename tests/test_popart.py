"""PopArt (core/popart.py) and its place in the update (core/learner.py)."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax.config import Config
from impala_jax.core import learner as learner_lib
from impala_jax.core import networks
from impala_jax.core import popart
from impala_jax.core.types import AgentInput, Trajectory

BOUNDS = dict(min_scale=1e-4, max_scale=1e6)


def _random_state(rng, k):
  mu = rng.normal(0, 50, k).astype(np.float32)
  sigma = rng.uniform(0.5, 200, k).astype(np.float32)
  return popart.PopArtState(mu=jnp.asarray(mu),
                            nu=jnp.asarray(sigma ** 2 + mu ** 2))


def test_preserving_outputs_keeps_every_unnormalised_value():
  rng = np.random.default_rng(0)
  for trial in range(5):
    k, f = 4, 16
    head = {'kernel': jnp.asarray(rng.normal(size=(f, k)), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=(k,)), jnp.float32)}
    old = _random_state(rng, k)
    # A random statistics update, as the learner makes it.
    targets = jnp.asarray(rng.normal(30, 300, (20, 8)), jnp.float32)
    task_id = jnp.asarray(rng.integers(0, k, 8), jnp.int32)
    new = popart.update(old, targets, task_id, jnp.ones((20, 8)), beta=0.3)
    h = jnp.asarray(rng.normal(size=(32, f)), jnp.float32)
    def values(head, state):
      n = h @ head['kernel'] + head['bias']             # [N, K]
      return popart.scale(state, **BOUNDS) * n + state.mu
    before = values(head, old)
    after = values(popart.preserve_outputs(head, old, new, **BOUNDS), new)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(
        jnp.max(jnp.abs(before))))


def test_statistics_converge_to_each_tasks_mean_and_scale():
  rng = np.random.default_rng(1)
  means, scales = np.array([5.0, -300.0, 2000.0]), np.array([1.0, 30.0, 500])
  state = popart.init(3)
  for _ in range(3000):
    task_id = rng.integers(0, 3, 16)
    targets = rng.normal(means[task_id], scales[task_id], (10, 16))
    state = popart.update(state, jnp.asarray(targets, jnp.float32),
                          jnp.asarray(task_id, jnp.int32),
                          jnp.ones((10, 16)), beta=0.01)
  np.testing.assert_allclose(state.mu, means, rtol=0.05, atol=0.5)
  np.testing.assert_allclose(popart.scale(state), scales, rtol=0.1)


def test_absent_tasks_and_masked_steps_keep_their_statistics():
  old = popart.PopArtState(mu=jnp.array([1.0, 2.0, 3.0]),
                           nu=jnp.array([4.0, 5.0, 60.0]))
  task_id = jnp.array([0, 0, 2, 2], jnp.int32)
  mask = jnp.ones((5, 4)).at[:, 2:].set(0.0)      # task 2 fully masked
  new = popart.update(old, jnp.full((5, 4), 10.0), task_id, mask, beta=0.5)
  np.testing.assert_allclose(new.mu, [5.5, 2.0, 3.0])
  np.testing.assert_allclose(new.nu, [52.0, 5.0, 60.0])


def test_scale_is_clipped():
  state = popart.PopArtState(mu=jnp.array([3.0, 0.0]),
                             nu=jnp.array([9.0, 1e14]))
  np.testing.assert_allclose(popart.scale(state, 1e-4, 1e6), [1e-4, 1e6])


# ------------------------------------------------------------ the update ---
K, T, B, OBS = 2, 5, 4, (3,)


def _config(**kw):
  base = dict(env='gymnax:CartPole-v1,gymnax:Acrobot-v1', torso='mlp',
              mlp_sizes=(8,), unroll_length=T, batch_size=B,
              reward_clipping='none', popart=True, popart_beta=0.2,
              learning_rate=1e-2, total_frames=10_000)
  base.update(kw)
  return Config(**base)


def _trajectory(seed=0, b=B):
  rng = np.random.default_rng(seed)
  inputs = AgentInput(
      observation=rng.normal(size=(T + 1, b) + OBS).astype(np.float32),
      first=np.zeros((T + 1, b), bool),
      last_action=np.zeros((T + 1, b), np.int32),
      last_reward=np.zeros((T + 1, b), np.float32))
  return Trajectory(
      inputs=inputs, actions=rng.integers(0, 2, (T, b)).astype(np.int32),
      rewards=(rng.normal(size=(T, b)) * np.array([1.0, 100.0])[
          np.arange(b) % 2]).astype(np.float32),
      discounts=np.full((T, b), 0.99, np.float32),
      behaviour_logits=rng.normal(size=(T, b, 2)).astype(np.float32),
      mask=np.ones((T, b), np.float32), core_state=(),
      param_version=np.zeros((b,), np.int32),
      task_id=(np.arange(b) % 2).astype(np.int32))


def _state(config, seed=0):
  network = learner_lib.make_network(config, 2)
  state = learner_lib.init_train_state(config, network, OBS, np.float32, 1,
                                       jax.random.PRNGKey(seed))
  # Statistics away from the start, so that the rescale matters.
  state = state._replace(popart=popart.PopArtState(
      mu=jnp.array([3.0, -40.0]), nu=jnp.array([9.0 + 4.0, 1600.0 + 900.0])))
  return network, state._replace(frames=None)


def test_update_is_rescale_then_gradient_step_on_normalised_targets():
  """The one-pass update equals PopArt's Algorithm 1 done literally: new
  statistics from the targets, the head rescaled, then the gradient of the
  normalised loss at the rescaled parameters."""
  config = _config(max_grad_norm=1e9)
  network, state = _state(config)
  traj = jax.tree_util.tree_map(jnp.asarray, _trajectory())
  new_state, _ = learner_lib.update_step(state, traj, network=network,
                                         config=config, action_repeat=1,
                                         axis_name=None)

  # Literal version. 1) targets with the current parameters.
  out, _ = network.apply(state.params, traj.inputs, (),
                         method=networks.AgentNetwork.unroll)
  task_id = traj.task_id
  n = learner_lib.task_values(out.value, task_id)
  v = popart.unnormalise(state.popart, n, task_id)
  from impala_jax.core import losses
  targets = losses.impala_targets(
      out.policy_logits[:-1], v[:-1], v[-1], traj.behaviour_logits,
      traj.actions, traj.rewards, traj.discounts, traj.mask)
  # 2) statistics, 3) rescaled head.
  stats = popart.update(state.popart, targets.returns.vs, task_id, traj.mask,
                        beta=config.popart_beta)
  inner = dict(state.params['params'])
  inner['value_head'] = popart.preserve_outputs(inner['value_head'],
                                                state.popart, stats)
  rescaled = {**state.params, 'params': inner}
  sigma = popart.scale(stats)[task_id]
  mu = stats.mu[task_id]
  def loss(params):
    o, _ = network.apply(params, traj.inputs, (),
                         method=networks.AgentNetwork.unroll)
    n_new = learner_lib.task_values(o.value, task_id)[:-1]
    norm_targets = (targets.returns.vs - mu) / sigma
    baseline = 0.5 * jnp.sum(jnp.square(norm_targets - n_new))
    adv = targets.returns.pg_advantages / sigma
    pg = losses.policy_gradient_loss(o.policy_logits[:-1], traj.actions, adv,
                                     traj.mask)
    ent = losses.entropy_loss(o.policy_logits[:-1], traj.mask)
    return pg + config.baseline_cost * baseline + config.entropy_cost * ent
  grads = jax.grad(loss)(rescaled)
  optimizer = learner_lib.make_optimizer(config, 1)
  updates, _ = optimizer.update(grads, state.opt_state, rescaled)
  import optax
  expected = optax.apply_updates(rescaled, updates)

  np.testing.assert_allclose(new_state.popart.mu, stats.mu, rtol=1e-6)
  np.testing.assert_allclose(new_state.popart.nu, stats.nu, rtol=1e-6)
  for got, want in zip(jax.tree_util.tree_leaves(new_state.params),
                       jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_without_popart_state_the_update_is_unchanged():
  config = _config(popart=False)
  network = learner_lib.make_network(config, 2)
  state = learner_lib.init_train_state(config, network, OBS, np.float32, 1,
                                       jax.random.PRNGKey(0))
  assert state.popart is None
  new_state, metrics = learner_lib.update_step(
      state._replace(frames=None), jax.tree_util.tree_map(
          jnp.asarray, _trajectory()), network=network, config=config,
      action_repeat=1, axis_name=None)
  assert new_state.popart is None and 'popart_mu' not in metrics


@pytest.mark.skipif(jax.local_device_count() < 2,
                    reason='needs XLA_FLAGS=--xla_force_host_platform_'
                           'device_count=2 (set in conftest)')
def test_two_devices_equal_one_device_for_a_popart_update():
  config = _config()
  network, state = _state(config)
  traj = _trajectory(seed=3, b=8)
  config8 = dataclasses.replace(config, batch_size=8)
  one = learner_lib.Learner(config8, network, jax.local_devices()[:1], OBS,
                            np.float32, 1, jax.random.PRNGKey(0),
                            state=state._replace(frames=0))
  two = learner_lib.Learner(config8, network, jax.local_devices()[:2], OBS,
                            np.float32, 1, jax.random.PRNGKey(0),
                            state=state._replace(frames=0))
  for i in range(3):
    m1 = one.update(_trajectory(seed=10 + i, b=8))
    m2 = two.update(_trajectory(seed=10 + i, b=8))
  s1, s2 = one.state(), two.state()
  for a, b in zip(jax.tree_util.tree_leaves((s1.params, s1.popart)),
                  jax.tree_util.tree_leaves((s2.params, s2.popart))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m1['popart_sigma'], m2['popart_sigma'],
                             rtol=1e-5)
