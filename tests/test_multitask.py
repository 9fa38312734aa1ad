"""Multi-task runs: task ids from actor to update, per-task metrics, the
multi-task Anakin program, and what PopArt buys on tasks of very different
reward scales."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from impala_jax import anakin
from impala_jax import config as config_lib
from impala_jax import presets
from impala_jax import runtime
from impala_jax.core import learner as learner_lib
from impala_jax.envs import factory
from impala_jax.envs import jax_envs
from impala_jax.envs.scripted import ScriptedEnv
from impala_jax.metrics import read_metrics

TASKS = ('task-a', 'task-b')
TASK_REWARD = {'task-a': 1.0, 'task-b': 7.0}


@pytest.fixture
def scripted_tasks(monkeypatch):
  """Two scripted envpool-like tasks whose every reward names the task."""
  def make(env_id, *, num_envs, batch_size=None, seed=0, num_threads=0,
           **_):
    reward = TASK_REWARD[env_id]
    return ScriptedEnv(num_envs, episode_lengths=4,
                       reward_fn=lambda e, ep, st, a: reward,
                       batch_size=batch_size)
  spec = ScriptedEnv(1, episode_lengths=4).spec
  monkeypatch.setattr(factory, 'make_env', make)
  monkeypatch.setattr(factory, 'describe_env',
                      lambda env_id, **_: dataclasses.replace(
                          spec, env_id=env_id))


def _sebulba_config(**kw):
  base = dict(env=','.join(TASKS), torso='mlp', mlp_sizes=(8,),
              unroll_length=5, batch_size=4, num_envs=2, env_batch_size=2,
              num_actors=2, total_frames=5 * 4 * 6, reward_clipping='none',
              log_every_seconds=0.0, checkpoint_every_seconds=1e9,
              noop_max=0)
  base.update(kw)
  return config_lib.Config(**base)


def test_task_ids_line_up_from_actor_to_update(tmp_path, scripted_tasks,
                                               monkeypatch):
  seen = []
  update = learner_lib.Learner.update
  def spy(self, trajectory):
    seen.append(jax.tree_util.tree_map(np.asarray, trajectory))
    return update(self, trajectory)
  monkeypatch.setattr(learner_lib.Learner, 'update', spy)
  config = _sebulba_config(task_reward_scales=(1.0, 3.0))
  runtime.train(config, str(tmp_path), sync=True, progress=False,
                handle_signals=False)
  assert len(seen) == 6
  for trajectory in seen:
    assert sorted(trajectory.task_id.tolist()) == [0, 0, 1, 1]
    for b, task in enumerate(trajectory.task_id):
      want = TASK_REWARD[TASKS[task]] * config.task_reward_scales[task]
      real = trajectory.mask[:, b] > 0
      np.testing.assert_allclose(trajectory.rewards[real, b], want)
  rows = read_metrics(str(tmp_path))
  last = rows[-1]
  # Per-task columns; each task's games return 4 rewards of its own size.
  assert float(last['episode_return/task-a']) == pytest.approx(4 * 1.0)
  assert float(last['episode_return/task-b']) == pytest.approx(4 * 21.0)


def test_sharding_keeps_each_column_with_its_task():
  rng = np.random.default_rng(0)
  from impala_jax.core.types import AgentInput, Trajectory
  t, b = 3, 8
  traj = Trajectory(
      inputs=AgentInput(np.zeros((t + 1, b, 2), np.float32),
                        np.zeros((t + 1, b), bool),
                        np.zeros((t + 1, b), np.int32),
                        np.zeros((t + 1, b), np.float32)),
      actions=np.zeros((t, b), np.int32),
      rewards=np.tile(np.arange(b, dtype=np.float32), (t, 1)),
      discounts=np.ones((t, b), np.float32),
      behaviour_logits=np.zeros((t, b, 2), np.float32),
      mask=np.ones((t, b), np.float32), core_state=(),
      param_version=np.zeros((b,), np.int32),
      task_id=rng.integers(0, 3, b).astype(np.int32))
  shards = learner_lib.shard_trajectory(traj, 2)
  for d in range(2):
    for j in range(b // 2):
      column = int(shards.rewards[d, 0, j])
      assert shards.task_id[d, j] == traj.task_id[column]


def test_multitask_config_errors_are_one_line(scripted_tasks, tmp_path):
  for kw, expected in [
      (dict(num_actors=3), 'multiple of the 2 tasks'),
      (dict(env='task-a,task-a'), 'twice'),
      (dict(env='task-a,gymnax:CartPole-v1'), 'mixes backends'),
      (dict(task_reward_scales=(1.0,)), 'one factor per task')]:
    with pytest.raises(ValueError, match=expected):
      runtime.train(_sebulba_config(**kw), str(tmp_path), sync=True,
                    progress=False, handle_signals=False)


def test_multitask_atari_needs_one_action_set(monkeypatch):
  specs = {'Pong-v5': 6, 'Breakout-v5': 4}
  base = ScriptedEnv(1).spec
  monkeypatch.setattr(factory, 'describe_env', lambda env_id, **_: (
      dataclasses.replace(base, env_id=env_id, num_actions=specs[env_id])))
  with pytest.raises(ValueError, match='full_action_space'):
    factory.env_spec(config_lib.Config(env='Pong-v5,Breakout-v5'))


# ------------------------------------------------------------ Anakin ---
def test_minatar_multitask_pads_observations_and_shares_actions():
  config = presets.get_preset('minatar_multitask')
  env = factory.jax_env(config)
  assert isinstance(env, jax_envs.MultiTaskJaxEnv)
  assert env.spec.obs_shape == (7, 10, 10) and env.spec.num_actions == 6
  state, obs = jax.jit(env.batch_reset)(
      jax.random.split(jax.random.PRNGKey(0), 8))
  assert obs.shape == (8, 7, 10, 10)
  np.testing.assert_array_equal(env.task_ids(8), [0, 0, 1, 1, 2, 2, 3, 3])
  # Breakout has 4 channels: the padding is zeros.
  assert float(np.abs(np.asarray(obs[:2, 4:])).sum()) == 0.0


def test_minatar_multitask_runs_and_resumes(tmp_path):
  config = dataclasses.replace(
      presets.get_preset('minatar_multitask'), batch_size=8,
      unroll_length=5, updates_per_call=2, total_frames=8 * 5 * 2 * 2,
      popart=True, log_every_seconds=0.0, checkpoint_every_seconds=1e9,
      lr_decay=False)   # so the resumed run reuses the compiled program
  first = anakin.train_anakin(config, str(tmp_path), progress=False,
                              handle_signals=False)
  assert first.updates == 4
  longer = dataclasses.replace(config, total_frames=8 * 5 * 2 * 3)
  second = anakin.train_anakin(longer, str(tmp_path), progress=False,
                               handle_signals=False)
  assert second.updates == 6 and second.frames == 8 * 5 * 2 * 3
  rows = read_metrics(str(tmp_path))
  for game in presets.MINATAR_GAMES:
    assert f'episode_return/{game}' in rows[-1]
    assert float(rows[-1][f'popart_sigma/{game}']) > 0


SCALE = 100.0
THRESHOLD = 300.0   # mean whole-game return in CartPole's own units


def scale_run(logdir, popart: bool, seed: int = 0):
  """CartPole twice in one agent, the second copy's rewards x100 (returns
  up to 500 and 50,000), raw rewards: the last 100 games' mean return of
  each task, in CartPole's units (the second divided by 100).
  ``experiments``-free, so BUILD_NOTES' measurement runs the same code."""
  config = dataclasses.replace(
      presets.get_preset('cartpole_anakin'),
      env='gymnax:CartPole-v1,gymnax:CartPole-v1',
      task_reward_scales=(1.0, SCALE), batch_size=32,
      total_frames=2 * 499_200, popart=popart, seed=seed,
      log_every_seconds=0.0, checkpoint_every_seconds=1e9)
  anakin.train_anakin(config, str(logdir), progress=False,
                      handle_signals=False)
  rows = read_metrics(str(logdir))[-5:]   # the last 5 calls' games
  def mean(task):
    n = np.array([float(r[f'episodes/CartPole-v1#{task}']) for r in rows])
    ret = np.array([float(r[f'episode_return/CartPole-v1#{task}'] or 'nan')
                    for r in rows])
    keep = n > 0
    return float(np.sum(ret[keep] * n[keep]) / max(np.sum(n[keep]), 1))
  return mean(0), mean(1) / SCALE


def test_popart_learns_both_tasks_of_very_different_scales(tmp_path):
  first, second = scale_run(tmp_path, popart=True)
  assert first >= THRESHOLD and second >= THRESHOLD, (first, second)


def test_dmlab30_multitask_preset_trains_on_fake_lab(tmp_path, monkeypatch):
  """The DMLab-30 multi-task preset, narrowed to two levels (one with an
  instruction), trains a few updates on the fake ``deepmind_lab`` with
  every trajectory tagged with its level."""
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  fake = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'fake_dmlab')
  monkeypatch.syspath_prepend(fake)
  sys.modules.pop('deepmind_lab', None)
  preset = presets.get_preset('dmlab30_multitask')
  assert config_lib.num_tasks(preset) == 30 and preset.num_actors == 30
  config = dataclasses.replace(
      preset, env='dmlab:rooms_watermaze,dmlab:language_answer_quantitative'
      '_question', num_actors=2, num_envs=1, env_batch_size=1,
      batch_size=2, unroll_length=4, torso='shallow',
      lstm_size=8, total_frames=2 * 4 * 4 * 3, log_every_seconds=0.0,
      checkpoint_every_seconds=1e9)
  seen = []
  update = learner_lib.Learner.update
  def spy(self, trajectory):
    seen.append(np.asarray(trajectory.task_id))
    return update(self, trajectory)
  monkeypatch.setattr(learner_lib.Learner, 'update', spy)
  try:
    result = runtime.train(config, str(tmp_path), sync=True, progress=False,
                           handle_signals=False)
  finally:
    sys.modules.pop('deepmind_lab', None)
  assert result.updates == 3
  assert all(sorted(t.tolist()) == [0, 1] for t in seen)
