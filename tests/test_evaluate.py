"""impala_jax.evaluation and experiments/evaluate.py.

The end-to-end tests train tiny CartPole runs in-process (envpool runtime
~10 s, Anakin runtime ~15 s), then evaluate their checkpoints through the
command line and check the printed score and the GIF / MP4.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from impala_jax import config as config_lib
from impala_jax import presets
from impala_jax import evaluation
from impala_jax.core import learner as learner_lib
from impala_jax.core import networks
from impala_jax.envs import jax_envs
from impala_jax.envs.scripted import ScriptedEnv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_network(num_actions=2, use_lstm=True):
  config = config_lib.Config(torso='mlp', mlp_sizes=(8,), use_lstm=use_lstm,
                             lstm_size=8)
  network = learner_lib.make_network(config, num_actions)
  params = network.init(jax.random.PRNGKey(0),
                        networks.zero_inputs((1, 1), (4,), np.float32),
                        network.initial_state(1))
  return network, params


def test_game_quotas():
  np.testing.assert_array_equal(evaluation.game_quotas(10, 4), [3, 3, 2, 2])
  np.testing.assert_array_equal(evaluation.game_quotas(2, 4), [1, 1, 0, 0])
  assert evaluation.game_quotas(7, 3).sum() == 7
  with pytest.raises(ValueError):
    evaluation.game_quotas(0, 2)


def test_counts_whole_games_without_short_game_bias():
  network, params = _tiny_network()
  # env 0: games of 2 steps (return 1+2=3), env 1: 10 steps (return 55).
  # Counting the first 4 games to end would give four short ones.
  env = ScriptedEnv(2, episode_lengths=[2, 10])
  result = evaluation.evaluate(params, network, env, num_games=4, seed=1)
  assert sorted(result.returns.tolist()) == [3.0, 3.0, 55.0, 55.0]
  assert sorted(result.lengths.tolist()) == [2, 2, 10, 10]
  assert result.mean == pytest.approx(29.0)
  assert result.median == pytest.approx(29.0)
  assert result.frames == []


def test_games_span_episodes_and_async_batches():
  network, params = _tiny_network(use_lstm=False)
  # 3 episodes of 3 steps per game (like lives); async batches of 2 of 3.
  env = ScriptedEnv(3, episode_lengths=3, episodes_per_game=3, batch_size=2)
  result = evaluation.evaluate(params, network, env, num_games=5, seed=0,
                               record=True)
  assert len(result.returns) == 5
  assert result.returns.tolist() == [18.0] * 5      # 3 x (1+2+3)
  assert result.lengths.tolist() == [9] * 5
  # env 0's first game: 3 episodes x (reset row + 3 steps) rows.
  assert len(result.frames) == 12
  assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[-1] == 3
             for f in result.frames)


def test_jax_environments_are_evaluated_through_the_batched_interface():
  network, params = _tiny_network()
  # Both envs play episodes of 2 then 4 steps (returns 1+2=3, 1+..+4=10).
  env = jax_envs.ScriptedJaxEnv([[2, 4]], [[False, False]],
                                max_episode_steps=100)
  batched = jax_envs.JaxBatchedEnv(env, num_envs=2, seed=3)
  assert batched.num_envs == batched.batch_size == 2
  result = evaluation.evaluate(params, network, batched, num_games=4, seed=0,
                               record=True)
  assert sorted(result.returns.tolist()) == [3.0, 3.0, 10.0, 10.0]
  assert sorted(result.lengths.tolist()) == [2, 2, 4, 4]
  assert len(result.frames) == 3        # env 0's first game: reset + 2 rows
  with pytest.raises(ValueError, match='synchronous'):
    batched.send(np.zeros(1, np.int32), np.zeros(1, np.int32))
  batched.close()


def test_greedy_is_deterministic_and_sampling_is_not():
  network, params = _tiny_network(num_actions=4)
  reward = lambda env, episode, step, action: float(action)
  def run(greedy, seed):
    env = ScriptedEnv(2, episode_lengths=20, reward_fn=reward, num_actions=4)
    return evaluation.evaluate(params, network, env, num_games=4,
                               greedy=greedy, seed=seed).returns
  np.testing.assert_array_equal(run(True, 0), run(True, 1))
  assert not np.array_equal(run(False, 0), run(False, 1))


def test_max_steps_guard():
  network, params = _tiny_network()
  env = ScriptedEnv(1, episode_lengths=100)
  with pytest.raises(RuntimeError, match='did not finish'):
    evaluation.evaluate(params, network, env, num_games=1, max_steps=10)


def test_render_observations():
  atari = np.zeros((4, 84, 84), np.uint8)
  atari[-1, 10:20] = 200                       # newest frame of the stack
  frame = evaluation.render_observation(atari)
  assert frame.shape == (168, 168, 3) and frame.max() == 200
  dmlab = np.full((72, 96, 3), 7, np.uint8)
  assert evaluation.render_observation(dmlab).shape[-1] == 3
  cart = evaluation.render_observation(np.array([0.5, 0, 0.1, 0]),
                                       'CartPole-v1')
  assert cart.shape == (200, 320, 3)
  bars = evaluation.render_observation(np.array([1.0, -2.0, 3.0]))
  assert bars.shape == (200, 320, 3)


def test_write_video(tmp_path):
  frames = [np.full((8, 8, 3), i * 20, np.uint8) for i in range(5)]
  path = evaluation.write_video(frames, str(tmp_path / 'a.gif'))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    assert im.n_frames == 5
  # MP4 (H.264) through imageio-ffmpeg; odd sides are padded to even ones.
  odd = [np.full((9, 7, 3), i * 20, np.uint8) for i in range(5)]
  mp4 = evaluation.write_video(odd, str(tmp_path / 'a.mp4'), fps=10)
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  reader = imageio_ffmpeg.read_frames(mp4)
  meta = next(reader)
  assert tuple(meta['size']) == (8, 10) and meta['codec'] == 'h264'
  assert sum(1 for _ in reader) == 5
  with pytest.raises(ValueError, match='.gif or .mp4'):
    evaluation.write_video(frames, str(tmp_path / 'a.avi'))
  with pytest.raises(ValueError, match='no frames'):
    evaluation.write_video([], str(tmp_path / 'b.gif'))


def test_config_from_dict_roundtrip():
  config = presets.cartpole()
  d = json.loads(json.dumps(dataclasses.asdict(config)))
  d['field_from_the_future'] = 1
  assert evaluation.config_from_dict(d) == config


@pytest.fixture(scope='module')
def cartpole_run(tmp_path_factory):
  from impala_jax import runtime  # pylint: disable=g-import-not-at-top
  logdir = str(tmp_path_factory.mktemp('cartpole_run'))
  runtime.train(dataclasses.replace(presets.cartpole(), total_frames=3200),
                logdir, sync=True, progress=False, handle_signals=False)
  return logdir


def _evaluate_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', *args], cwd=REPO,
      env=env, capture_output=True, text=True, timeout=300)


def test_cli_scores_and_records_a_cartpole_checkpoint(cartpole_run, tmp_path):
  video = str(tmp_path / 'game.gif')
  out_json = str(tmp_path / 'eval.json')
  proc = _evaluate_cli(f'--logdir={cartpole_run}', '--num_games=4',
                       '--greedy', f'--video={video}', f'--json={out_json}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'mean:' in proc.stdout and 'median:' in proc.stdout
  with open(out_json) as f:
    summary = json.load(f)
  assert summary['num_games'] == 4 and len(summary['returns']) == 4
  assert summary['checkpoint_frames'] == 3200
  # CartPole pays 1 per step: a whole game's return is its length (>= 8).
  assert summary['mean'] == pytest.approx(summary['mean_length'])
  assert 8 <= summary['mean'] <= 500
  assert os.path.getsize(video) > 1000
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(video) as im:
    assert im.n_frames >= 2 and im.size == (320, 200)


def test_cli_errors(tmp_path):
  proc = _evaluate_cli(f'--logdir={tmp_path / "missing"}')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'no such directory' in proc.stderr
  proc = _evaluate_cli(f'--logdir={tmp_path}')          # exists, no ckpt
  assert proc.returncode == 2 and 'no checkpoint' in proc.stderr


def test_anakin_run_evaluates_periodically_and_from_the_command_line(
    tmp_path):
  from impala_jax import anakin  # pylint: disable=g-import-not-at-top
  from impala_jax.metrics import read_metrics  # pylint: disable=g-import-not-at-top
  per_call = 8 * 8 * 2
  config = dataclasses.replace(
      presets.cartpole_anakin(), unroll_length=8, batch_size=8,
      updates_per_call=2, total_frames=2 * per_call, log_every_seconds=0.0,
      eval_every_frames=per_call, eval_games=2).validate()
  logdir = str(tmp_path / 'anakin_run')
  anakin.train_anakin(config, logdir, progress=False, handle_signals=False)
  evals = [r for r in read_metrics(logdir) if r.get('eval_return_mean')]
  assert [int(r["frames"]) for r in evals] == [per_call, 2 * per_call], evals
  assert all(8 <= float(r['eval_return_mean']) <= 500 for r in evals)

  video = str(tmp_path / 'game.mp4')
  out_json = str(tmp_path / 'eval.json')
  proc = _evaluate_cli(f'--logdir={logdir}', '--num_games=3', '--greedy',
                       f'--video={video}', f'--json={out_json}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out_json) as f:
    summary = json.load(f)
  assert summary['env'] == 'gymnax:CartPole-v1'
  assert summary['num_games'] == 3 and summary['checkpoint_frames'] == (
      2 * per_call)
  assert summary['mean'] == pytest.approx(summary['mean_length'])
  assert 'normalised_mean' not in summary and 'paper_score' not in summary
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  reader = imageio_ffmpeg.read_frames(video)
  assert tuple(next(reader)['size']) == (320, 200)
  assert sum(1 for _ in reader) >= 2


def test_cli_normalises_only_games_with_references():
  from experiments import evaluate as evaluate_cli  # pylint: disable=g-import-not-at-top
  # Atari-57: (score - random) / (human - random), uncapped.
  assert evaluate_cli.normalised_score('Breakout-v5', 100.0) == (
      pytest.approx((100.0 - 1.7) / (30.5 - 1.7)))
  assert evaluate_cli.paper_score('Breakout-v5') == 787.34
  # DMLab-30 is capped at 1; MinAtar's Breakout and CartPole have no
  # references (not Atari's Breakout).
  assert evaluate_cli.normalised_score('dmlab:rooms_watermaze', 1e3) == 1.0
  for env_id in ('gymnax:Breakout-MinAtar', 'CartPole-v1'):
    assert evaluate_cli.normalised_score(env_id, 5.0) is None
    assert evaluate_cli.paper_score(env_id) is None
