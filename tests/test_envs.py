"""Tests for impala_jax.envs: ids, specs, envpool time alignment, game stats."""

from __future__ import annotations

import collections

import os

import numpy as np
import pytest

from impala_jax import config as config_lib
from impala_jax.envs import factory as env_factory
from impala_jax.envs import (AtariOptions, ScriptedEnv, StepBatch,
                             describe_env, make_env, validate_env_id)
from impala_jax.envs import scripted

# envpool rebuilds gymnasium spaces on each recv(); gymnasium warns about
# float64 bounds. impala_jax.envs silences it, but pytest resets filters.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*precision lowered:UserWarning")


def check_conventions(batches: list[StepBatch], num_envs: int) -> dict:
  """Asserts the envpool conventions on a stream of batches; returns rows
  per env as lists of (batch index, row index, is_reset_row)."""
  needs_reset = np.ones(num_envs, bool)
  rows = collections.defaultdict(list)
  for k, b in enumerate(batches):
    assert len(set(b.env_id.tolist())) == len(b.env_id)
    assert b.reward.dtype == np.float32 and b.env_id.dtype == np.int32
    assert b.game_return.dtype == np.float32
    assert b.game_length.dtype == np.int32
    for r, i in enumerate(b.env_id.tolist()):
      assert 0 <= i < num_envs
      term, trunc = bool(b.terminated[r]), bool(b.truncated[r])
      assert not (term and trunc)
      if b.game_over[r]:
        assert term or trunc
      if needs_reset[i]:  # reset row
        assert b.reward[r] == 0 and not term and not trunc
        assert not b.game_over[r]
      rows[i].append((k, r, bool(needs_reset[i])))
      needs_reset[i] = term or trunc
  return rows


def run(env, steps: int, policy=None, seed: int = 0) -> list[StepBatch]:
  rng = np.random.default_rng(seed)
  env.async_reset()
  out = []
  for _ in range(steps):
    b = env.recv()
    out.append(b)
    if policy is None:
      actions = rng.integers(0, env.spec.num_actions, len(b.env_id))
    else:
      actions = policy(b)
    env.send(actions.astype(np.int32), b.env_id)
  return out


# ----------------------------------------------------------------- ids, specs


def test_validate_env_id_accepts_known_ids():
  for env_id in ('Pong-v5', 'CartPole-v1', 'Acrobot-v1', 'MountainCar-v0'):
    assert validate_env_id(env_id) == env_id


def test_unknown_id_lists_close_matches_before_creating(monkeypatch):
  import envpool

  def no_make(*a, **k):
    raise AssertionError('envpool.make must not be called')

  monkeypatch.setattr(envpool, 'make', no_make)
  with pytest.raises(ValueError) as e:
    make_env('Pongg-v5', num_envs=2)
  msg = str(e.value)
  assert 'Pong-v5' in msg and 'Pongg-v5' in msg and '\n' not in msg
  with pytest.raises(ValueError, match='CartPole-v1'):
    validate_env_id('cartpole-v1')
  with pytest.raises(ValueError, match='list_all_envs'):
    validate_env_id('qqqqqqqq')


def test_gymnax_ids_are_not_envpool_envs():
  with pytest.raises(ValueError, match="'gymnax' backend is not available"):
    make_env('gymnax:CartPole-v1', num_envs=1)
  with pytest.raises(ValueError, match='not available'):
    describe_env('gymnax:CartPole-v1')


def test_dmlab_ids_route_to_the_dmlab_adapter(monkeypatch):
  """Without deepmind_lab: one ValueError that says how to build it;
  with it (the fake module of tests/fake_dmlab): the adapter's spec."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  if importlib.util.find_spec('deepmind_lab') is None:
    with pytest.raises(ValueError, match='deepmind_lab'):
      describe_env('dmlab:rooms_watermaze')
    with pytest.raises(ValueError, match='deepmind_lab'):
      make_env('dmlab:rooms_watermaze', num_envs=1)
  monkeypatch.syspath_prepend(
      os.path.join(os.path.dirname(__file__), 'fake_dmlab'))
  spec = describe_env('dmlab:rooms_watermaze')
  assert spec.obs_shape == (3, 72, 96) and spec.num_actions == 9
  assert spec.action_repeat == 4


def test_specs():
  cp = describe_env('CartPole-v1')
  assert cp.obs_shape == (4,) and cp.obs_dtype == np.float32
  assert (cp.num_actions, cp.action_repeat, cp.max_episode_steps) == (2, 1, 500)

  pong = describe_env('Pong-v5')
  assert pong.obs_shape == (4, 84, 84) and pong.obs_dtype == np.uint8
  assert (pong.num_actions, pong.action_repeat) == (6, 4)
  assert pong.max_episode_steps == 27000  # agent steps = 108k frames
  kw = pong.envpool_kwargs
  assert kw['noop_max'] == 30 and kw['repeat_action_probability'] == 0.0
  assert kw['full_action_space'] is False and kw['episodic_life'] is False
  assert kw['reward_clip'] is False and kw['frame_skip'] == 4
  assert 'base_path' not in kw and 'num_envs' not in kw and 'seed' not in kw

  machado = describe_env('Pong-v5', **env_factory.env_options(
      config_lib.with_atari_protocol(config_lib.Config(), 'machado')))
  assert machado.num_actions == 18
  assert machado.envpool_kwargs['repeat_action_probability'] == 0.25
  assert machado.envpool_kwargs['use_fire_reset'] is False
  assert machado.envpool_kwargs['noop_max'] == 1
  # kwargs naming AtariOptions fields override them.
  small = describe_env('Pong-v5', stack_num=2, max_episode_steps=100)
  assert small.obs_shape == (2, 84, 84) and small.max_episode_steps == 100

  with make_env('CartPole-v1', num_envs=2) as env:
    assert env.spec == cp and (env.num_envs, env.batch_size) == (2, 2)


def test_rejects_what_it_cannot_run():
  with pytest.raises(ValueError, match='discrete'):
    describe_env('Pendulum-v1')
  with pytest.raises(ValueError, match='not an Atari env'):
    describe_env('CartPole-v1', atari=AtariOptions())
  with pytest.raises(ValueError, match='invalid envpool argument'):
    describe_env('CartPole-v1', no_such_option=1)
  with pytest.raises(ValueError, match='batch_size'):
    make_env('CartPole-v1', num_envs=2, batch_size=3)


# ------------------------------------------------------------ envpool stepping


def test_async_stepping_with_small_batches():
  num_envs, batch_size = 6, 2
  with make_env('CartPole-v1', num_envs=num_envs, batch_size=batch_size,
                num_threads=2, seed=3) as env:
    batches = run(env, 90)
  rows = check_conventions(batches, num_envs)
  assert all(len(b.env_id) == batch_size for b in batches)
  assert all(b.obs.shape == (batch_size, 4) for b in batches)
  assert sorted(rows) == list(range(num_envs))  # every env got stepped
  counts = [len(rows[i]) for i in range(num_envs)]
  assert min(counts) >= 10, counts
  assert sum(counts) == 90 * batch_size


def test_cartpole_reset_row_convention():
  """After a terminal row the next row of that env is a fresh episode."""
  max_steps = 15
  with make_env('CartPole-v1', num_envs=3, seed=1,
                max_episode_steps=max_steps) as env:
    assert env.spec.max_episode_steps == max_steps
    batches = run(env, 120)
  rows = check_conventions(batches, 3)
  seen = collections.Counter()
  for i, env_rows in rows.items():
    length = 0
    for (k, r, is_reset), nxt in zip(env_rows, env_rows[1:] + [None]):
      b = batches[k]
      if is_reset:
        # CartPole resets to uniform(-0.05, 0.05) in every coordinate.
        assert np.all(np.abs(b.obs[r]) <= 0.05)
        length = 0
        continue
      length += 1
      assert b.reward[r] == 1.0
      if b.terminated[r] or b.truncated[r]:
        seen['terminated' if b.terminated[r] else 'truncated'] += 1
        assert b.game_over[r]
        assert b.game_length[r] == length and b.game_return[r] == length
        if b.truncated[r]:
          assert length == max_steps
        else:
          assert length < max_steps
          assert np.abs(b.obs[r][2]) > 0.2 or np.abs(b.obs[r][0]) > 2.4
        if nxt is not None:
          nb = batches[nxt[0]]
          assert nxt[2] and nb.reward[nxt[1]] == 0
          assert not np.array_equal(nb.obs[nxt[1]], b.obs[r])
  assert seen['terminated'] > 0 and seen['truncated'] > 0, seen


def _side_by_side(env_id, steps, num_envs, seed, policy, **kwargs):
  """Runs make_env and a raw envpool pool with the same seed and actions;
  returns (our batches, raw per-step dicts), both sorted by env id."""
  import envpool
  ours = make_env(env_id, num_envs=num_envs, seed=seed, **kwargs)
  make_kwargs = dict(AtariOptions().to_kwargs(), **kwargs)
  raw = envpool.make(env_id, env_type='gymnasium', num_envs=num_envs,
                     seed=seed, **make_kwargs)
  ours.async_reset()
  raw.async_reset()
  mine, theirs = [], []
  for t in range(steps):
    b = ours.recv()
    o, rew, te, tr, info = raw.recv()
    ob, orw = np.argsort(b.env_id), np.argsort(info['env_id'])
    b = StepBatch(*(x[ob] for x in b))
    step = dict(obs=o[orw], reward=rew[orw], lives=info['lives'][orw],
                raw_reward=info['reward'][orw],
                game_over=info['terminated'][orw].astype(bool),
                elapsed=info['elapsed_step'][orw], done=(te | tr)[orw])
    np.testing.assert_array_equal(b.obs, step['obs'])
    mine.append(b)
    theirs.append(step)
    actions = policy(t, num_envs).astype(np.int32)
    ids = np.arange(num_envs, dtype=np.int32)
    ours.send(actions, ids)
    raw.send(actions, ids)
  ours.close()
  raw.close()
  return mine, theirs


def _random(seed):
  rng = np.random.default_rng(seed)
  return lambda t, n: rng.integers(0, 4, n)


@pytest.mark.parametrize('env_id,max_steps,kwargs', [
    # Truncates after a few lives are lost.
    ('Breakout-v5', 100, dict(episodic_life=True)),
    # Whole games end by losing all lives.
    ('Breakout-v5', 1000, dict(episodic_life=True)),
    # Clipped training reward; the game score stays raw.
    ('SpaceInvaders-v5', 150, dict(episodic_life=True, reward_clip=True)),
])
def test_atari_whole_game_stats_span_lives(env_id, max_steps, kwargs):
  num_envs, steps = 2, 400
  mine, theirs = _side_by_side(env_id, steps, num_envs, seed=7,
                               policy=_random(7),
                               max_episode_steps=max_steps, **kwargs)
  check_conventions(mine, num_envs)
  games = total_life_losses = 0
  for i in range(num_envs):
    raw_sum, prev_lives = 0.0, None
    after_done = True
    for b, s in zip(mine, theirs):
      if after_done:  # reset row: nothing to count
        after_done = bool(s['done'][i])
        assert not after_done
        prev_lives = s['lives'][i]
        continue
      raw_sum += float(s['raw_reward'][i])
      assert b.reward[i] == s['reward'][i]  # training reward = envpool's
      after_done = bool(s['done'][i])
      lost = s['lives'][i] < prev_lives
      prev_lives = s['lives'][i]
      if not after_done:
        assert not b.game_over[i]
        continue
      whole_game = bool(s['game_over'][i]) or s['elapsed'][i] >= max_steps
      assert b.game_over[i] == whole_game
      if not whole_game:  # a life lost with episodic_life: game goes on
        assert lost and b.terminated[i]
        total_life_losses += 1
        continue
      games += 1
      assert b.game_return[i] == pytest.approx(raw_sum)
      assert b.game_length[i] == s['elapsed'][i]  # counter spans all lives
      assert b.terminated[i] == bool(s['game_over'][i])
      assert b.truncated[i] == (not s['game_over'][i])
      raw_sum = 0.0
  assert games >= 2 and total_life_losses >= 2, (games, total_life_losses)
  if kwargs.get('reward_clip'):
    returns = np.concatenate([b.game_return[b.game_over] for b in mine])
    rewards = np.concatenate([b.reward for b in mine])
    assert np.abs(rewards).max() <= 1 and returns.max() > 1


def test_game_over_on_the_last_allowed_step_is_terminated():
  """Breakout with NOOPs loses a life every 24 steps: with a limit of 120
  steps the game ends exactly at the limit. envpool calls that truncated;
  the game is over, so we report terminated (discount 0)."""
  mine, theirs = _side_by_side('Breakout-v5', 130, 2, seed=0,
                               policy=lambda t, n: np.zeros(n),
                               episodic_life=True, max_episode_steps=120)
  check_conventions(mine, 2)
  ends = [(b, s) for b, s in zip(mine, theirs) if s['done'][0]]
  assert len(ends) == 5
  for b, s in ends[:4]:  # life losses
    assert b.terminated[0] and not b.game_over[0] and s['lives'][0] > 0
  b, s = ends[4]
  assert s['elapsed'][0] == 120 and s['lives'][0] == 0 and s['game_over'][0]
  assert b.terminated[0] and not b.truncated[0] and b.game_over[0]
  assert b.game_length[0] == 120


# ----------------------------------------------------------------- ScriptedEnv


def test_scripted_env_follows_envpool_conventions():
  env = ScriptedEnv(2, episode_lengths=[2, [1, 3]], truncate=[False, [True, False]],
                    reward_fn=lambda e, k, t, a: 10 * e + t + 0.5 * a,
                    num_actions=3)
  assert env.spec.obs_shape == (4,) and env.spec.max_episode_steps == 3
  env.async_reset()
  # Env 0 always sends action 1, env 1 action 2.
  actions = np.array([1, 2], np.int32)
  got = []
  for _ in range(7):
    b = env.recv()
    got.append(b)
    assert b.env_id.tolist() == [0, 1]
    env.send(actions, b.env_id)
  check_conventions(got, 2)
  obs = np.stack([b.obs for b in got])  # [T, env, 4]
  # Env 0: episodes of 2 steps; steps 0,1,2 | 0,1,2 | 0.
  np.testing.assert_array_equal(obs[:, 0, scripted.OBS_STEP],
                                [0, 1, 2, 0, 1, 2, 0])
  np.testing.assert_array_equal(obs[:, 0, scripted.OBS_EPISODE],
                                [0, 0, 0, 1, 1, 1, 2])
  np.testing.assert_array_equal(obs[:, 0, scripted.OBS_ACTION],
                                [-1, 1, 1, -1, 1, 1, -1])
  np.testing.assert_array_equal([b.reward[0] for b in got],
                                [0, 1.5, 2.5, 0, 1.5, 2.5, 0])
  np.testing.assert_array_equal([b.terminated[0] for b in got],
                                [0, 0, 1, 0, 0, 1, 0])
  # Env 1: episode 0 has 1 step and is truncated, episode 1 has 3 steps.
  np.testing.assert_array_equal(obs[:, 1, scripted.OBS_STEP],
                                [0, 1, 0, 1, 2, 3, 0])
  np.testing.assert_array_equal([b.truncated[1] for b in got],
                                [0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal([b.terminated[1] for b in got],
                                [0, 0, 0, 0, 0, 1, 0])
  assert all(obs[:, 1, scripted.OBS_ENV] == 1)
  np.testing.assert_array_equal([b.game_return[1] for b in got],
                                [0, 12, 0, 12, 25, 39, 0])
  np.testing.assert_array_equal([b.game_over[1] for b in got],
                                [0, 1, 0, 0, 0, 1, 0])


def test_scripted_env_games_span_episodes():
  env = ScriptedEnv(1, episode_lengths=2, episodes_per_game=3,
                    truncate=[[False, False, False, False, True]])
  batches = run(env, 20, policy=lambda b: np.zeros(len(b.env_id)))
  check_conventions(batches, 1)
  over = [(k, b.game_return[0], b.game_length[0], bool(b.truncated[0]))
          for k, b in enumerate(batches) if b.game_over[0]]
  # 3 terminated episodes of rewards 1+2, then a game cut short by the
  # truncated 5th episode after 2 episodes.
  assert over[0] == (8, 9.0, 6, False)
  assert over[1] == (14, 6.0, 4, True)
  assert sum(bool(b.terminated[0]) for b in batches[:9]) == 3


def test_scripted_env_async_round_robin_and_errors():
  env = ScriptedEnv(4, episode_lengths=3, batch_size=2)
  batches = run(env, 12)
  check_conventions(batches, 4)
  assert [b.env_id.tolist() for b in batches[:4]] == [[0, 1], [2, 3],
                                                       [0, 1], [2, 3]]
  env = ScriptedEnv(2, batch_size=2)
  env.async_reset()
  b = env.recv()
  env.send(np.zeros(2, np.int32), b.env_id)
  with pytest.raises(ValueError, match='pending'):
    env.send(np.zeros(1, np.int32), np.array([0]))
  env.recv()
  with pytest.raises(RuntimeError, match='block'):
    env.recv()
  with pytest.raises(ValueError, match='out of range'):
    env.send(np.array([5]), np.array([0]))
