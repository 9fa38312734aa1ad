"""The DMLab adapter against a fake ``deepmind_lab`` (tests/fake_dmlab)."""

import os
import sys

import numpy as np
import pytest

from impala_jax.envs import dmlab

FAKE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'fake_dmlab')


@pytest.fixture
def fake_lab(monkeypatch):
  # Spawned workers get the parent's sys.path, so they import the fake too.
  monkeypatch.syspath_prepend(FAKE_DIR)
  sys.modules.pop('deepmind_lab', None)
  yield
  sys.modules.pop('deepmind_lab', None)


def _decode(obs):
  """[3, 72, 96] observation -> (action vector, num_steps, frames)."""
  return (obs[0, 0, :7].astype(int) - 128, int(obs[0, 1, 0]),
          int(obs[0, 2, 0]))


def test_missing_module_says_how_to_install(monkeypatch):
  monkeypatch.setattr(dmlab.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(dmlab.DmLabNotInstalledError, match='bazel build') as e:
    dmlab.DmLabEnv('dmlab:rooms_watermaze', num_envs=1)
  assert isinstance(e.value, ValueError) and isinstance(e.value, ImportError)


def test_level_names():
  assert dmlab.level_name('dmlab:rooms_watermaze') == (
      'contributed/dmlab30/rooms_watermaze')
  assert dmlab.level_name('dmlab:seekavoid_arena_01') == 'seekavoid_arena_01'
  assert len(dmlab.DMLAB30_LEVELS) == len(set(dmlab.DMLAB30_LEVELS)) == 30
  assert len(dmlab.DEFAULT_ACTION_SET) == 9
  with pytest.raises(ValueError):
    dmlab.level_name('dmlab:')


def test_steps_with_action_mapping_repeat_and_episode_ends(fake_lab):
  env = dmlab.DmLabEnv('dmlab:rooms_watermaze', num_envs=3, num_workers=2,
                       seed=3, config={'fakeEpisodeFrames': 12})
  with env:
    assert env.spec.obs_shape == (3, 72, 96)
    assert env.spec.num_actions == 9 and env.spec.action_repeat == 4
    env.async_reset()
    b = env.recv()
    assert sorted(b.env_id.tolist()) == [0, 1, 2]
    assert b.obs.shape == (3, 3, 72, 96) and b.obs.dtype == np.uint8
    assert np.all(b.obs[:, 0, 4, 0] == 1)          # dmlab30 level path
    assert not b.terminated.any() and np.all(b.reward == 0)
    # Episodes last 12 frames = 3 agent steps of 4 frames.
    for t in range(1, 4):
      actions = (b.env_id + t) % 9
      env.send(actions, b.env_id)
      b2 = env.recv()
      order = np.argsort(b2.env_id)
      sent = dict(zip(b.env_id.tolist(), actions.tolist()))
      for r in order:
        vec, num_steps, frames = _decode(b2.obs[r])
        if t < 3:
          np.testing.assert_array_equal(
              vec, dmlab.DEFAULT_ACTION_SET[sent[int(b2.env_id[r])]])
          assert num_steps == 4 and frames == 4 * t
      np.testing.assert_allclose(b2.reward, 2.0)    # 4 frames x 0.5
      assert b2.terminated.tolist() == [t == 3] * 3
      assert not b2.truncated.any()
      assert b2.game_over.tolist() == [t == 3] * 3
      np.testing.assert_allclose(b2.game_return, 2.0 * t)
      np.testing.assert_array_equal(b2.game_length, t)
      b = b2
    # The action after a terminal row is ignored: a reset row comes back.
    env.send(np.zeros(3, np.int32), b.env_id)
    b = env.recv()
    assert not b.terminated.any() and np.all(b.reward == 0)
    assert all(_decode(o)[2] == 0 for o in b.obs)
    with pytest.raises(ValueError):
      env.send(np.array([9]), np.array([0]))
  assert all(not p.is_alive() for p in env._procs)


def test_async_batches_and_truncation(fake_lab):
  with dmlab.DmLabEnv('dmlab:seekavoid_arena_01', num_envs=4, batch_size=2,
                      num_workers=2, max_episode_steps=2,
                      config={'fakeEpisodeFrames': 1000}) as env:
    env.async_reset()
    seen = []
    for _ in range(12):
      b = env.recv()
      assert len(b.env_id) == 2
      seen.extend(b.env_id.tolist())
      assert np.all(b.terminated == False)   # pylint: disable=g-explicit-bool-comparison
      assert np.all(b.game_over == b.truncated)
      assert np.all(b.game_length[b.truncated] == 2)
      env.send(np.ones(2, np.int32), b.env_id)
    assert sorted(set(seen)) == [0, 1, 2, 3]
  assert all(not p.is_alive() for p in env._procs)


def test_pool_shuts_down_on_errors(fake_lab):
  env = dmlab.DmLabEnv('dmlab:rooms_watermaze', num_envs=2, num_workers=2)
  procs = list(env._procs)
  try:
    env.async_reset()
    env.recv()
    raise KeyboardInterrupt  # an exception in the caller's loop
  except KeyboardInterrupt:
    env.close()
  assert all(not p.is_alive() for p in procs)
  assert all(p.exitcode == 0 for p in procs)
  env.close()                                   # idempotent
  with pytest.raises(RuntimeError, match='closed'):
    env.recv()


def test_worker_failure_is_reported_and_cleaned_up(fake_lab):
  # A config value the fake cannot parse makes Lab() fail in the worker.
  with pytest.raises(RuntimeError, match='worker .* failed'):
    dmlab.DmLabEnv('dmlab:rooms_watermaze', num_envs=2, num_workers=2,
                   config={'fakeEpisodeFrames': 'many'})
  import multiprocessing  # pylint: disable=g-import-not-at-top
  assert not multiprocessing.active_children()


def test_evaluation_plays_fake_dmlab_games(fake_lab):
  import jax  # pylint: disable=g-import-not-at-top
  from impala_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from impala_jax import evaluation  # pylint: disable=g-import-not-at-top
  from impala_jax.core import learner as learner_lib  # pylint: disable=g-import-not-at-top
  from impala_jax.core import networks  # pylint: disable=g-import-not-at-top
  network = learner_lib.make_network(
      config_lib.Config(torso='shallow', use_lstm=True, lstm_size=16), 9)
  params = network.init(jax.random.PRNGKey(0),
                        networks.zero_inputs((1, 1), (3, 72, 96), np.uint8),
                        network.initial_state(1))
  with dmlab.DmLabEnv('dmlab:rooms_watermaze', num_envs=2, num_workers=2,
                      config={'fakeEpisodeFrames': 8}) as env:
    result = evaluation.evaluate(params, network, env, num_games=3,
                                 record=True)
  np.testing.assert_allclose(result.returns, 4.0)   # 8 frames x 0.5
  np.testing.assert_array_equal(result.lengths, 2)
  assert len(result.frames) == 3 and result.frames[0].shape[-1] == 3


def test_close_with_replies_in_flight_is_quick_and_clean(fake_lab):
  import time  # pylint: disable=g-import-not-at-top
  env = dmlab.DmLabEnv('dmlab:rooms_watermaze', num_envs=4, num_workers=2)
  env.async_reset()
  env.recv()
  for _ in range(20):   # more replies than a pipe buffer holds
    env.send(np.zeros(4, np.int32), np.arange(4))
  start = time.monotonic()
  env.close()
  assert time.monotonic() - start < 2.0
  assert [p.exitcode for p in env._procs] == [0, 0]


def test_language_levels_carry_the_instruction_to_the_network(fake_lab):
  """The dmlab30 preset of a language level, through env_options, make_env
  and the adapter: observations gain the instruction row, the network
  encodes it, and evaluation plays the games."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from impala_jax import evaluation  # pylint: disable=g-import-not-at-top
  from impala_jax.core import learner as learner_lib  # pylint: disable=g-import-not-at-top
  from impala_jax.core import networks  # pylint: disable=g-import-not-at-top
  from impala_jax import suites  # pylint: disable=g-import-not-at-top
  from impala_jax.envs import describe_env, make_env  # pylint: disable=g-import-not-at-top
  from impala_jax.envs.factory import env_options  # pylint: disable=g-import-not-at-top
  assert suites.preset('dmlab30', 'rooms_watermaze').instruction_len == 0
  config = dataclasses.replace(
      suites.preset('dmlab30', 'language_select_described_object'),
      torso='mlp', mlp_sizes=(8,), lstm_size=8,
      dmlab_dataset_path='/data/brady_konkle').validate()
  assert config.instruction_len == 16 and config.max_episode_steps == 0
  options = env_options(config)
  assert options['config'] == {'datasetPath': '/data/brady_konkle'}
  spec = describe_env(config.env, **options)
  assert spec.obs_shape == (3, 73, 96)
  assert spec.envpool_kwargs['instruction_len'] == 16
  options['config']['fakeEpisodeFrames'] = 8
  with make_env(config.env, num_envs=2, seed=5, num_workers=1,
                **options) as env:
    env.async_reset()
    batch = env.recv()
    assert batch.obs.shape == (2, 3, 73, 96)
    assert np.all(batch.obs[:, 0, 5, 0] == 1)        # datasetPath reached Lab
    image, tokens = networks.split_instruction(batch.obs, 16)
    assert image.shape == (2, 3, 72, 96)
    colours = ('red', 'green', 'blue', 'yellow')
    for i in range(2):
      seed = int(batch.obs[i, 0, 3, 0])              # reset seed % 256
      np.testing.assert_array_equal(tokens[i], dmlab.tokenize_instruction(
          f'Pick the {colours[seed % 4]} object', 16))
    network = learner_lib.make_network(config, spec.num_actions)
    params = network.init(jax.random.PRNGKey(0),
                          networks.zero_inputs((1, 1), spec.obs_shape),
                          network.initial_state(1))
    assert 'instruction_net' in params['params']
  with make_env(config.env, num_envs=2, seed=5, num_workers=1,
                **options) as env:
    result = evaluation.evaluate(params, network, env, num_games=2,
                                 record=True)
  np.testing.assert_allclose(result.returns, 4.0)   # 8 frames x 0.5
  assert result.frames[0].shape[:2] == (72 * 3, 96 * 3)  # row dropped


def test_instruction_settings_are_checked():
  from impala_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='needs a DMLab level'):
    config_lib.Config(env='Pong-v5', instruction_len=16).validate()
  with pytest.raises(ValueError, match='instruction_len must be in'):
    config_lib.Config(env='dmlab:x', instruction_len=97).validate()
  with pytest.raises(ValueError, match='dmlab_dataset_path'):
    config_lib.Config(env='Pong-v5', dmlab_dataset_path='/d').validate()
