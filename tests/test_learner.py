"""The pmapped learner update: equivalence across devices, learning, NaN guard."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax.core import learner as learner_lib
from impala_jax.config import Config
from impala_jax.testing import synthetic_trajectory

OBS = (4,)
A = 3


def small_config(**kw):
  base = dict(torso='mlp', mlp_sizes=(32, 32), unroll_length=6, batch_size=8,
              total_frames=10_000_000, learning_rate=1e-3)
  base.update(kw)
  return Config(**base).validate()


def make(config, devices, seed=0):
  network = learner_lib.make_network(config, A)
  return learner_lib.Learner(config, network, devices, OBS, np.float32,
                             action_repeat=1, rng=jax.random.PRNGKey(seed))


def params_close(p1, p2, atol):
  for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol,
                               rtol=atol)


@pytest.mark.parametrize('use_lstm', [False, True])
def test_two_devices_equal_one_device(use_lstm):
  assert len(jax.devices()) >= 2, 'conftest forces 4 host devices'
  config = small_config(use_lstm=use_lstm, lstm_size=16)
  one = make(config, jax.devices()[:1])
  two = make(config, jax.devices()[:2])
  params_close(one.params(), two.params(), 0)
  for i in range(3):
    traj = synthetic_trajectory(i, 6, 8, OBS, np.float32, A,
                                lstm_size=16 if use_lstm else 0)
    m1 = one.update(traj)
    m2 = two.update(traj)
  params_close(one.params(), two.params(), 1e-5)
  np.testing.assert_allclose(m1['total_loss'], m2['total_loss'], rtol=1e-5)
  np.testing.assert_allclose(m1['grad_norm'], m2['grad_norm'], rtol=1e-5)
  # The updates did move the parameters (so the comparison means something).
  fresh = make(config, jax.devices()[:1])
  moved = sum(float(jnp.abs(a - b).sum()) for a, b in zip(
      jax.tree_util.tree_leaves(fresh.params()),
      jax.tree_util.tree_leaves(one.params())))
  assert moved > 1e-3


def test_repeated_updates_lower_the_loss():
  # 60 updates at lr 1e-3 from optax's accumulator start (0.0); from TF1's
  # (1.0, the default) the first hundreds of steps are deliberately smaller.
  config = small_config(learning_rate=1e-3, lr_decay=False,
                        rmsprop_initial_scale=0.0)
  learner = make(config, jax.devices()[:1])
  traj = synthetic_trajectory(0, 6, 8, OBS, np.float32, A, done_prob=0.2)
  # On a fixed batch the baseline loss (bounded below by 0) must fall, and
  # so must the total. (The pg term alone is unbounded below on a fixed
  # off-policy batch, so we look at the first updates, not at convergence.)
  metrics = [learner.update(traj) for _ in range(60)]
  total = [float(m['total_loss']) for m in metrics]
  baseline = [float(m['baseline_loss']) for m in metrics]
  assert baseline[-1] < 0.7 * baseline[0], baseline[::6]
  assert np.mean(total[-5:]) < np.mean(total[:5]) - 1.0, total[::6]
  assert learner.frames == 60 * 6 * 8


def test_nan_rewards_skip_the_update():
  config = small_config()
  learner = make(config, jax.devices()[:2])
  good = synthetic_trajectory(0, 6, 8, OBS, np.float32, A)
  learner.update(good)
  before = jax.device_get(learner.params())
  bad = good._replace(rewards=good.rewards.copy())
  bad.rewards[3, 5] = np.nan
  metrics = learner.update(bad)
  after = jax.device_get(learner.params())
  params_close(before, after, 0)
  assert int(metrics['skipped_updates']) == 1
  state = learner.state()
  assert int(state.skipped_updates) == 1 and int(state.update_count) == 2
  # Optimizer state untouched too: the next good update equals one made by a
  # learner that never saw the bad batch.
  clean = make(config, jax.devices()[:2])
  clean.update(good)
  learner.update(good)
  clean.update(good)
  params_close(learner.params(), clean.params(), 1e-6)


def test_reward_clipping_modes():
  r = jnp.array([[-3.0, -0.5, 0.0, 0.5, 3.0]])
  np.testing.assert_allclose(learner_lib.clip_rewards(r, 'abs_one'),
                             [[-1, -0.5, 0, 0.5, 1]])
  np.testing.assert_allclose(learner_lib.clip_rewards(r, 'none'), r)
  # The paper's printed formula: 0.3 min(tanh r, 0) + 5 max(tanh r, 0).
  soft = learner_lib.clip_rewards(r, 'soft_asymmetric_paper')
  np.testing.assert_allclose(soft[0, 0], 0.3 * np.tanh(-3.0), rtol=1e-6)
  np.testing.assert_allclose(soft[0, 4], 5.0 * np.tanh(3.0), rtol=1e-6)
  # scalable_agent's experiment.py (the released code): 5 tanh(r/5) for
  # r >= 0, 1.5 tanh(r/5) for r < 0.
  released = np.asarray(learner_lib.clip_rewards(r, 'soft_asymmetric'))
  raw = np.asarray(r, np.float64)
  expected = np.where(raw < 0, 1.5 * np.tanh(raw / 5), 5 * np.tanh(raw / 5))
  np.testing.assert_allclose(released, expected, rtol=1e-6, atol=1e-7)
  assert released[0, 2] == 0.0


def test_dmlab30_presets_use_the_released_codes_asymmetric_clipping():
  from impala_jax import suites  # pylint: disable=g-import-not-at-top
  for level in ('rooms_watermaze', 'language_select_described_object'):
    assert suites.preset('dmlab30', level).reward_clipping == 'soft_asymmetric'


def _tf1_rmsprop_step(params, grads, ms, lr, decay, eps):
  """TF1 ``RMSPropOptimizer`` (no momentum, not centered), float64:
  ``ms <- decay ms + (1 - decay) g^2``, ``p <- p - lr g / sqrt(ms + eps)``."""
  ms = decay * ms + (1.0 - decay) * grads**2
  return params - lr * grads / np.sqrt(ms + eps), ms


def test_one_update_equals_a_tf1_rmsprop_step():
  """TF1 starts the mean-square accumulator at 1 (optax's default is 0,
  which makes the first steps up to ~10x larger)."""
  config = small_config(learning_rate=1e-2, lr_decay=False,
                        max_grad_norm=1e9)
  assert config.rmsprop_initial_scale == 1.0
  network = learner_lib.make_network(config, A)
  state = learner_lib.init_train_state(config, network, OBS, np.float32, 1,
                                       jax.random.PRNGKey(0))
  traj = synthetic_trajectory(0, 6, 8, OBS, np.float32, A)
  traj = jax.tree_util.tree_map(jnp.asarray, traj)
  grads = jax.grad(lambda p: learner_lib._loss_fn(  # pylint: disable=protected-access
      p, traj, network, config)[0])(state.params)
  new_state, _ = learner_lib.update_step(
      state._replace(frames=None), traj, network=network, config=config,
      action_repeat=1, axis_name=None)
  expected = jax.tree_util.tree_map(
      lambda p, g: _tf1_rmsprop_step(
          np.asarray(p, np.float64), np.asarray(g, np.float64), 1.0,
          config.learning_rate, config.rmsprop_decay,
          config.rmsprop_epsilon)[0], state.params, grads)
  params_close(new_state.params, expected, 1e-6)
  # optax's own start (0.0) is a different, larger step.
  zero = dataclasses.replace(config, rmsprop_initial_scale=0.0)
  zero_init = learner_lib.init_train_state(zero, network, OBS, np.float32, 1,
                                           jax.random.PRNGKey(0))
  zero_state, _ = learner_lib.update_step(
      zero_init._replace(frames=None), traj, network=network, config=zero,
      action_repeat=1, axis_name=None)
  def step_size(after):
    return sum(float(np.abs(np.asarray(a) - np.asarray(b)).sum())
               for a, b in zip(jax.tree_util.tree_leaves(after),
                               jax.tree_util.tree_leaves(state.params)))
  assert step_size(zero_state.params) > 3 * step_size(new_state.params)


def test_logged_learning_rate_is_the_applied_one_after_a_skip():
  """A skipped (non-finite) update does not advance optax's schedule, so
  the rate logged afterwards must not run ahead of the one applied."""
  config = small_config(total_frames=6 * 8 * 10, learning_rate=1e-3)
  sched = learner_lib.learning_rate_schedule(config, action_repeat=1)
  learner = make(config, jax.devices()[:1])
  good = synthetic_trajectory(0, 6, 8, OBS, np.float32, A)
  bad = good._replace(rewards=good.rewards.copy())
  bad.rewards[0, 0] = np.nan
  logged = [float(learner.update(t)['learning_rate'])
            for t in (good, bad, good, good)]
  # Applied: sched(0), (skipped; optax still at 1), sched(1), sched(2).
  np.testing.assert_allclose(logged, [sched(0), sched(1), sched(1),
                                      sched(2)], rtol=1e-6)


def test_learning_rate_decays_linearly_to_zero():
  config = small_config(total_frames=6 * 8 * 10, learning_rate=1e-3)
  sched = learner_lib.learning_rate_schedule(config, action_repeat=1)
  assert learner_lib.total_updates(config, 1) == 10
  np.testing.assert_allclose(sched(0), 1e-3)
  np.testing.assert_allclose(sched(5), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(sched(10), 0.0, atol=1e-12)


def test_metrics_are_reported():
  learner = make(small_config(), jax.devices()[:1])
  metrics = learner.update(
      synthetic_trajectory(0, 6, 8, OBS, np.float32, A))
  for key in ('total_loss', 'pg_loss', 'baseline_loss', 'entropy_loss',
              'grad_norm', 'learning_rate', 'mean_rho', 'rho_clipped_fraction',
              'mean_value', 'mean_vs', 'skipped_updates'):
    assert np.isfinite(float(metrics[key])), key


def test_batch_must_split_over_devices():
  with pytest.raises(ValueError, match='divisible'):
    Config(batch_size=5, learner_devices=(0, 1)).validate()


def test_torso_chunk_auto_resolves_per_backend():
  config = Config(torso='shallow')  # torso_chunk=-1: auto
  assert learner_lib.resolve_torso_chunk(config, 'cpu') == 64
  assert learner_lib.resolve_torso_chunk(config, 'gpu') == 0
  mlp = Config(torso='mlp')
  assert learner_lib.resolve_torso_chunk(mlp, 'cpu') == 0
  assert learner_lib.resolve_torso_chunk(Config(torso='minatar'), 'cpu') == 0
  fixed = Config(torso='deep', torso_chunk=32)
  assert learner_lib.resolve_torso_chunk(fixed, 'tpu') == 32
