"""The actor's trajectories: time alignment, masks, overlap, hand-made V-trace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax import actor as actor_lib
from impala_jax.core import losses
from impala_jax.core import networks
from impala_jax.envs import ScriptedEnv
from impala_jax.envs.scripted import OBS_ACTION, OBS_ENV, OBS_EPISODE, OBS_STEP

GAMMA = 0.9


def make_actor(env, T, B, use_lstm=False, seed=0):
  net = networks.AgentNetwork(num_actions=env.spec.num_actions, torso='mlp',
                              mlp_sizes=(8,), use_lstm=use_lstm, lstm_size=4)
  params = net.init(jax.random.PRNGKey(0),
                    networks.zero_inputs((1, 1), env.spec.obs_shape,
                                         np.float32), net.initial_state(1))
  return actor_lib.Actor(env, net, lambda: (params, 7), unroll_length=T,
                         batch_size=B, discount=GAMMA, seed=seed)


def test_hand_computed_vtrace_targets_across_truncation_and_termination():
  # One env, episodes of 2 actions: episode 0 is truncated, episode 1
  # terminates. Reward of the transition reaching step s is s.
  env = ScriptedEnv(1, episode_lengths=2, truncate=[[True, False]])
  traj, stats = make_actor(env, T=6, B=1).next_trajectory()
  obs = traj.inputs.observation[:, 0]
  # Rows: x0 reset, x1, x2 truncated final obs, x3 reset, x4, x5 terminal,
  # x6 reset of episode 2.
  np.testing.assert_array_equal(obs[:, OBS_EPISODE], [0, 0, 0, 1, 1, 1, 2])
  np.testing.assert_array_equal(obs[:, OBS_STEP], [0, 1, 2, 0, 1, 2, 0])
  np.testing.assert_array_equal(traj.inputs.first[:, 0],
                                [1, 0, 0, 1, 0, 0, 1])
  np.testing.assert_array_equal(traj.rewards[:, 0], [1, 2, 0, 1, 2, 0])
  np.testing.assert_allclose(traj.discounts[:, 0],
                             [GAMMA, GAMMA, GAMMA, GAMMA, 0.0, GAMMA])
  np.testing.assert_array_equal(traj.mask[:, 0], [1, 1, 0, 1, 1, 0])

  # Values by hand for x0..x6; on-policy (log rho = 0).
  V = np.array([0.5, 0.6, 7.0, 0.3, 0.4, 9.0, 0.8])
  out = losses.masked_vtrace(
      jnp.zeros((6, 1)), jnp.asarray(traj.discounts), jnp.asarray(traj.rewards),
      jnp.asarray(V[:6, None]), jnp.asarray(V[6:]), jnp.asarray(traj.mask))
  vs = np.asarray(out.vs[:, 0])
  want = np.empty(6)
  want[5] = V[5]                    # masked: v = V, nothing read across
  want[4] = 2.0                     # terminal: r only
  want[3] = 1.0 + GAMMA * want[4]
  want[2] = V[2]                    # masked reset step
  want[1] = 2.0 + GAMMA * V[2]      # truncated: bootstrap from final obs
  want[0] = 1.0 + GAMMA * want[1]
  np.testing.assert_allclose(vs, want, rtol=1e-6)
  np.testing.assert_allclose(want[:2], [1 + GAMMA * (2 + GAMMA * 7.0),
                                        2 + GAMMA * 7.0])
  assert stats.env_steps == 7


def check_alignment(traj, env):
  """Every recorded field agrees with what the scripted obs says."""
  obs = traj.inputs.observation
  T, B = traj.actions.shape
  for b in range(B):
    for t in range(T):
      here, nxt = obs[t, b], obs[t + 1, b]
      env_i, ep, step = int(here[OBS_ENV]), int(here[OBS_EPISODE]), int(
          here[OBS_STEP])
      assert nxt[OBS_ENV] == env_i
      assert traj.inputs.first[t, b] == (step == 0)
      terminal = step == env.length(env_i, ep)
      if terminal:
        assert traj.mask[t, b] == 0
        assert nxt[OBS_STEP] == 0 and nxt[OBS_EPISODE] == ep + 1
        assert traj.rewards[t, b] == 0
      else:
        assert traj.mask[t, b] == 1
        assert nxt[OBS_STEP] == step + 1 and nxt[OBS_EPISODE] == ep
        # The recorded action is the one that produced the next obs.
        assert nxt[OBS_ACTION] == traj.actions[t, b]
        assert traj.rewards[t, b] == step + 1
        ends = step + 1 == env.length(env_i, ep)
        want_discount = 0.0 if ends and not env.truncates(env_i, ep) else GAMMA
        np.testing.assert_allclose(traj.discounts[t, b], want_discount)
        if not traj.inputs.first[t + 1, b]:
          assert traj.inputs.last_action[t + 1, b] == traj.actions[t, b]
          assert traj.inputs.last_reward[t + 1, b] == traj.rewards[t, b]


@pytest.mark.parametrize('num_envs,env_batch', [(4, 4), (6, 2), (5, 3)])
def test_columns_align_and_overlap_by_one(num_envs, env_batch):
  env = ScriptedEnv(num_envs, episode_lengths=[[2, 3], [4], [1, 5], [3], [2],
                                               [6]][:num_envs],
                    truncate=[[False, True]] * num_envs, batch_size=env_batch,
                    num_actions=3)
  actor = make_actor(env, T=5, B=4)
  last_row = {}
  for _ in range(4):
    traj, _ = actor.next_trajectory()
    assert traj.inputs.observation.shape == (6, 4, 4)
    assert traj.actions.shape == (5, 4)
    assert traj.behaviour_logits.shape == (5, 4, 3)
    np.testing.assert_array_equal(traj.param_version, 7)
    check_alignment(traj, env)
    obs = traj.inputs.observation
    for b in range(4):
      env_i = int(obs[0, b, OBS_ENV])
      # Consecutive columns of one env share their boundary observation.
      if env_i in last_row:
        np.testing.assert_array_equal(obs[0, b], last_row[env_i])
      last_row[env_i] = obs[-1, b]


def test_behaviour_logits_are_the_policy_that_acted():
  env = ScriptedEnv(3, episode_lengths=4, num_actions=3)
  actor = make_actor(env, T=4, B=3)
  traj, _ = actor.next_trajectory()
  out, _ = actor.network.apply(actor._params, jax.tree_util.tree_map(
      jnp.asarray, traj.inputs), (), method=networks.AgentNetwork.unroll)
  np.testing.assert_allclose(out.policy_logits[:-1], traj.behaviour_logits,
                             rtol=1e-5, atol=1e-6)


def test_lstm_core_state_is_carried_between_columns():
  env = ScriptedEnv(2, episode_lengths=7, num_actions=2)
  actor = make_actor(env, T=3, B=2, use_lstm=True)
  t1, _ = actor.next_trajectory()
  t2, _ = actor.next_trajectory()
  c0, h0 = t1.core_state
  assert c0.shape == (2, 4)
  np.testing.assert_array_equal(c0, 0.0)  # fresh start
  # The recorded start state of column 2 is the state the learner's unroll
  # of column 1 ends with just before x_T.
  params = actor._params
  out, state = actor.network.apply(
      params, jax.tree_util.tree_map(lambda x: jnp.asarray(x)[:-1], t1.inputs),
      t1.core_state, method=networks.AgentNetwork.unroll)
  for got, want in zip(t2.core_state, state):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(t2.core_state[1])).sum() > 0
  # And the learner's unroll of column 2 reproduces the behaviour logits.
  out2, _ = actor.network.apply(params, jax.tree_util.tree_map(
      jnp.asarray, t2.inputs), t2.core_state,
      method=networks.AgentNetwork.unroll)
  np.testing.assert_allclose(out2.policy_logits[:-1], t2.behaviour_logits,
                             rtol=1e-5, atol=1e-5)


def test_game_stats_reported_once_per_game():
  env = ScriptedEnv(2, episode_lengths=2, episodes_per_game=2)
  actor = make_actor(env, T=10, B=2)
  _, stats = actor.next_trajectory()
  # 11 rows per env: games of 2 episodes x 2 actions (+ resets) end at rows
  # 5 and 11 -> one finished game per env in the first 11 rows.
  assert stats.game_lengths == [4, 4]
  assert stats.game_returns == [6.0, 6.0]   # 1 + 2 per episode, 2 episodes
