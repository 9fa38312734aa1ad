"""The Anakin layout: JAX environments, the compiled act+learn program, the
trainer and the training program (CPU; 4 forced devices, see conftest)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax import actor as actor_lib
from impala_jax import anakin
from impala_jax import config as config_lib
from impala_jax import presets
from impala_jax.core import anakin_program
from impala_jax.core import learner as learner_lib
from impala_jax.core import networks
from impala_jax import runtime
from impala_jax.checkpoint import Checkpointer
from impala_jax.envs import ScriptedEnv, describe_env, make_env, validate_env_id
from impala_jax.envs import jax_envs
from impala_jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _small_cartpole(**overrides) -> config_lib.Config:
  settings = dict(unroll_length=8, batch_size=8, updates_per_call=3,
                  total_frames=8 * 8 * 3 * 2, log_every_seconds=0.0)
  settings.update(overrides)
  config = dataclasses.replace(presets.cartpole_anakin(), **settings)
  return config.validate()


# ------------------------------------------------------------- env ids ---
def test_gymnax_ids_are_validated_with_close_matches():
  assert validate_env_id('gymnax:CartPole-v1') == 'gymnax:CartPole-v1'
  with pytest.raises(ValueError, match='gymnax:CartPole-v1') as e:
    validate_env_id('gymnax:CartPol-v1')
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='gymnax:Breakout-MinAtar'):
    validate_env_id('gymnax:breakout-minatar')
  with pytest.raises(ValueError, match='continuous actions'):
    validate_env_id('gymnax:Pendulum-v1')
  # The envpool runtime refuses them, pointing at the Anakin one.
  with pytest.raises(ValueError, match='--runtime=anakin'):
    describe_env('gymnax:CartPole-v1')
  with pytest.raises(ValueError, match='--runtime=anakin'):
    make_env('gymnax:CartPole-v1', num_envs=1)


def test_bad_anakin_configs_fail_before_compiling(tmp_path):
  cases = [
      (_small_cartpole(env='gymnax:CartPol-v1'), 'gymnax:CartPole-v1'),
      (_small_cartpole(env='CartPole-v1'), 'needs a JAX environment id'),
      (_small_cartpole(runtime='sebulba'), '--runtime=anakin'),
      (_small_cartpole(torso='deep'), '--torso=mlp'),
      (_small_cartpole(learner_devices=(0, 9)), 'out of range'),
  ]
  for config, message in cases:
    with pytest.raises(runtime.ConfigError, match=message):
      anakin.train_anakin(config, str(tmp_path), progress=False,
                          handle_signals=False)
  assert not os.path.exists(tmp_path / 'checkpoints')


# ------------------------------------------------------ env semantics ---
def test_gymnax_adapter_truncation_termination_and_reset_rows():
  env = jax_envs.GymnaxEnv('gymnax:CartPole-v1', max_episode_steps=5)
  assert env.spec.obs_shape == (4,) and env.spec.num_actions == 2
  assert env.spec.max_episode_steps == 5
  reset, step = jax.jit(env.reset), jax.jit(env.step)
  state, obs = reset(jax.random.PRNGKey(0))
  keys = jax.random.split(jax.random.PRNGKey(1), 16)
  rows = []
  for k in keys[:7]:
    state, obs, reward, terminated, truncated = step(state, jnp.int32(1), k)
    rows.append((float(reward), bool(terminated), bool(truncated),
                 float(state.game_return), int(state.game_length),
                 int(state.episode_step)))
  # 5 steps, the 5th truncated (not terminated: the pole is still up), then
  # a reset row (action ignored, reward 0, no flags, stats cleared).
  assert [r[:3] for r in rows[:5]] == [(1.0, False, False)] * 4 + [
      (1.0, False, True)]
  assert rows[4][3:5] == (5.0, 5)
  assert rows[5] == (0.0, False, False, 0.0, 0, 0)
  assert rows[6][:2] == (1.0, False) and rows[6][5] == 1

  # Always pushing right drops the pole: a real termination, well before
  # gymnax's own 500-step limit (which the adapter replaces).
  env = jax_envs.GymnaxEnv('gymnax:CartPole-v1')
  assert env.spec.max_episode_steps == 500
  state, _ = env.reset(jax.random.PRNGKey(0))
  step = jax.jit(env.step)
  for i, k in enumerate(jax.random.split(jax.random.PRNGKey(2), 100)):
    state, _, _, terminated, truncated = step(state, jnp.int32(1), k)
    if terminated:
      break
  assert bool(terminated) and not bool(truncated) and i < 50
  assert int(state.game_length) == i + 1


@pytest.mark.parametrize('env_id', ['gymnax:Acrobot-v1',
                                    'gymnax:Breakout-MinAtar',
                                    'gymnax:MemoryChain-bsuite'])
def test_gymnax_families_step(env_id):
  env = jax_envs.make_jax_env(env_id)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  state, obs = jax.vmap(env.reset)(keys)
  assert obs.shape == (3,) + env.spec.obs_shape
  assert obs.dtype == jnp.float32
  state, obs, reward, terminated, truncated = jax.jit(jax.vmap(env.step))(
      state, jnp.zeros((3,), jnp.int32), keys)
  assert obs.shape == (3,) + env.spec.obs_shape and reward.shape == (3,)
  if 'MinAtar' in env_id:
    assert len(env.spec.obs_shape) == 3 and env.spec.obs_shape[1:] == (10, 10)


@pytest.mark.parametrize('gymnax_id', jax_envs.GYMNAX_IDS)
def test_gymnax_adapter_matches_raw_gymnax(gymnax_id):
  """Random actions through the adapter and through gymnax's own ``step``
  (its default params, auto-reset inside the step) give the same
  observations, rewards and episode ends. The adapter ends an episode on one
  step and starts the next on the following (reset) row; it is given the
  terminal step's key there, so both draw the same reset. After each step
  the adapter continues from gymnax's state (so float32 rounding
  differences cannot accumulate); its own counters (episode step, time
  limit) run on."""
  import gymnax  # pylint: disable=g-import-not-at-top
  raw, params = gymnax.make(gymnax_id)
  env = jax_envs.make_jax_env(jax_envs.PREFIX + gymnax_id)
  assert env.spec.max_episode_steps == int(params.max_steps_in_episode)
  to_ours = env._obs  # pylint: disable=protected-access
  raw_step = jax.jit(lambda k, s, a: raw.step(k, s, a, params))
  our_step = jax.jit(env.step)
  key = jax.random.PRNGKey(7)
  key, reset_key = jax.random.split(key)
  raw_obs, raw_state = raw.reset(reset_key, params)
  state, obs = env.reset(reset_key)
  np.testing.assert_array_equal(obs, to_ours(raw_obs))
  actions = np.random.default_rng(0).integers(0, env.spec.num_actions, 300)
  ends = 0
  for action in actions:
    key, step_key = jax.random.split(key)
    action = jnp.int32(action)
    raw_obs, raw_state, raw_reward, raw_term, raw_trunc, info = raw_step(
        step_key, raw_state, action)
    state, obs, reward, terminated, truncated = our_step(state, action,
                                                         step_key)
    assert float(reward) == pytest.approx(float(raw_reward), abs=1e-6)
    assert bool(terminated) == bool(raw_term)
    assert bool(truncated) == (bool(raw_trunc) and not bool(raw_term))
    if bool(raw_term) or bool(raw_trunc):
      ends += 1
      np.testing.assert_allclose(obs, to_ours(info['final_observation']),
                                 rtol=1e-5, atol=1e-5)
      state, obs, reward, terminated, truncated = our_step(state, action,
                                                           step_key)
      assert float(reward) == 0.0 and not bool(terminated | truncated)
    # float32 dynamics (Acrobot) differ in the last bit between the two
    # compiled programs; everything discrete must match exactly.
    np.testing.assert_allclose(obs, to_ours(raw_obs), rtol=1e-5, atol=1e-5)
    # Continue from gymnax's own state, so those last bits cannot grow over
    # the steps of a chaotic system (each step is compared on its own).
    state = state._replace(inner=raw_state)
  if gymnax_id in ('Catch-bsuite', 'SimpleBandit-bsuite', 'DeepSea-bsuite',
                   'DiscountingChain-bsuite', 'MemoryChain-bsuite',
                   'UmbrellaChain-bsuite'):
    assert ends >= 1  # episode ends were compared, not only mid-episode


# --------------------------------------- the trajectory vs the actor's ---
NUM_ACTIONS = 3


def _scripted_policy(params, inputs, core_state, keys):
  """Deterministic in the observation ``[env, episode, step, last_action]``:
  the same actions and logits whichever path calls it."""
  del params, keys
  obs = jnp.asarray(inputs.observation, jnp.float32)
  actions = (2 * obs[:, 2] + obs[:, 0] + obs[:, 1]).astype(jnp.int32) % (
      NUM_ACTIONS)
  logits = jnp.stack([obs[:, 0], obs[:, 2] * 0.5, -obs[:, 1]], axis=-1)
  return actions, logits, core_state


def test_scripted_trajectory_equals_envpool_actor():
  """Termination, truncation (by the time limit on the Anakin side), reset
  rows and unroll overlap: observations, inputs, rewards, discounts, masks,
  logits and finished games all equal the envpool actor's."""
  lengths = [[3, 5], [5, 2]]
  truncate = [[False, True], [True, False]]
  T, n, gamma = 4, 2, 0.9
  network = networks.AgentNetwork(num_actions=NUM_ACTIONS, torso='mlp',
                                  mlp_sizes=(4,))
  pool = ScriptedEnv(n, lengths, truncate=truncate, num_actions=NUM_ACTIONS,
                     max_episode_steps=5)
  envpool_actor = actor_lib.Actor(
      pool, network, lambda: (None, 0), unroll_length=T, batch_size=n,
      discount=gamma, policy_step=_scripted_policy)

  env = jax_envs.ScriptedJaxEnv(lengths, truncate, max_episode_steps=5,
                                num_actions=NUM_ACTIONS)
  env_state, obs = jax.vmap(env.reset_at)(jnp.arange(n))
  actor_state = anakin_program.actor_state_from_reset(
      env_state, obs, network, jax.random.split(jax.random.PRNGKey(0), n))
  roll = jax.jit(lambda s: anakin_program.rollout(
      None, s, env=env, policy=_scripted_policy, unroll_length=T,
      discount=gamma, param_version=jnp.int32(0)))

  saw_truncation = saw_termination = False
  for _ in range(5):   # 20 steps: both envs cross several episode ends
    expected, stats = envpool_actor.next_trajectory()
    actor_state, got, (over, returns, lengths_) = roll(actor_state)
    got = jax.device_get(got)
    for name in ('observation', 'first', 'last_action', 'last_reward'):
      np.testing.assert_array_equal(getattr(got.inputs, name),
                                    getattr(expected.inputs, name), name)
    for name in ('actions', 'rewards', 'discounts', 'mask',
                 'behaviour_logits', 'param_version'):
      np.testing.assert_allclose(getattr(got, name), getattr(expected, name),
                                 rtol=0, atol=1e-6, err_msg=name)
    over = np.asarray(over)
    np.testing.assert_array_equal(
        sorted(np.asarray(returns)[over]), sorted(stats.game_returns))
    np.testing.assert_array_equal(
        sorted(np.asarray(lengths_)[over]), sorted(stats.game_lengths))
    saw_termination |= bool(np.any(got.discounts == 0))
    # Only the truncated episodes (time limit 5) reach step 5; that step
    # keeps discount gamma and bootstraps from its real final observation.
    steps = got.inputs.observation[1:, :, 2]
    saw_truncation |= bool(np.any((steps == 5) & (got.discounts == gamma)))
  assert saw_termination and saw_truncation


# ----------------------------------------------------- devices, resume ---
def _setup(config, seed=0):
  env = anakin.make_env(config)
  network = learner_lib.make_network(config, env.spec.num_actions)
  state = learner_lib.init_train_state(config, network, env.spec.obs_shape,
                                       env.spec.obs_dtype, 1,
                                       jax.random.PRNGKey(seed))
  actor_state = anakin.init_actor_state(
      env, network, jax.random.split(jax.random.PRNGKey(seed + 1),
                                     config.batch_size))
  return env, network, state, actor_state


def test_two_devices_equal_one_device():
  # lr_decay off: the 1-device program is the resume test's (compiled once).
  config = _small_cartpole(lr_decay=False)
  env, network, state, actor_state = _setup(config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:2]):
    runner = anakin.AnakinRunner(config, env, network, devices, state,
                                 actor_state)
    metrics, _ = runner.run()
    metrics, _ = runner.run()
    results.append((runner.train_state(), runner.actor_state(),
                    jax.device_get(metrics)))
  (one, one_actors, m1), (two, two_actors, m2) = results
  assert int(one.update_count) == int(two.update_count) == 6
  for a, b in zip(jax.tree_util.tree_leaves(one.params),
                  jax.tree_util.tree_leaves(two.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  # Same environments, same keys: the same data on both layouts.
  np.testing.assert_array_equal(one_actors.key, two_actors.key)
  np.testing.assert_allclose(one_actors.inputs.observation,
                             two_actors.inputs.observation, atol=1e-5)
  # Per-task game counts ([K], here K = 1).
  np.testing.assert_array_equal(m1['games'], m2['games'])
  np.testing.assert_allclose(m1['total_loss'], m2['total_loss'], rtol=1e-4)


def test_resume_continues_step_count_and_env_rng(tmp_path):
  calls = 3
  per_call = 8 * 8 * 3
  config = _small_cartpole(total_frames=calls * per_call, lr_decay=False,
                           seed=4)
  whole = str(tmp_path / 'whole')
  result = anakin.train_anakin(config, whole, progress=False,
                               handle_signals=False)
  assert result.updates == 3 * calls and result.frames == calls * per_call

  split = str(tmp_path / 'split')
  first = anakin.train_anakin(
      dataclasses.replace(config, total_frames=per_call), split,
      progress=False, handle_signals=False)
  assert first.updates == 3
  resumed = anakin.train_anakin(config, split, progress=False,
                                handle_signals=False)
  assert resumed.updates == 3 * calls and resumed.frames == calls * per_call

  def last_checkpoint(logdir):
    env, network, template, actor_state = _setup(config)
    ckpt = Checkpointer(os.path.join(logdir, 'checkpoints'))
    state, meta = ckpt.restore(template)
    extra = ckpt.restore_extra(anakin._flat_leaves(actor_state),  # pylint: disable=protected-access
                               meta['update_count'])
    return state, meta, extra
  a_state, a_meta, a_env = last_checkpoint(whole)
  b_state, b_meta, b_env = last_checkpoint(split)
  assert a_meta['update_count'] == b_meta['update_count'] == 3 * calls
  assert a_meta['frames'] == b_meta['frames'] == calls * per_call
  # Environment states and keys continue exactly (not reseeded), and so
  # does learning.
  for key in a_env:
    np.testing.assert_array_equal(a_env[key], b_env[key], key)
  for a, b in zip(jax.tree_util.tree_leaves(a_state),
                  jax.tree_util.tree_leaves(b_state)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  rows = read_metrics(split)
  assert [int(r['updates']) for r in rows] == [3, 6, 9]
  assert [int(r['frames']) for r in rows] == [per_call * k for k in (1, 2, 3)]
  saved = json.loads(open(os.path.join(split, 'config.json')).read())
  assert saved['started_at_update'] == 3
  assert saved['env_spec']['envpool_kwargs']['backend'] == 'gymnax'


# ------------------------------------------------------------ learning ---
# gymnax CartPole-v1, preset cartpole_anakin, seed 0: 16 envs x T=20, 1560
# updates = 499,200 frames (env steps), inside 500K. Random play scores ~22.
CARTPOLE_LEARNED = 400.0


@pytest.mark.slow
def test_cartpole_learns_in_anakin_layout(tmp_path):
  config = dataclasses.replace(presets.cartpole_anakin(), seed=0,
                               log_every_seconds=5.0)
  # Trained the way a user trains it: `experiments.train` in its own
  # process with one host device. (The learning trajectory is chaotic in
  # float rounding: under this suite's 4 forced host devices XLA's CPU
  # code differs, and on the AMD EPYC machine of issue 16 seed 0 then
  # reached only 233.9; one device gives 500. BUILD_NOTES.md, known limits.)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  start = time.monotonic()
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole_anakin',
       '--seed=0', '--log_every_seconds=5', f'--logdir={tmp_path}',
       '--noprogress'], env=env, capture_output=True, text=True, timeout=600,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  elapsed = time.monotonic() - start
  assert out.returncode == 0, out.stderr[-2000:]
  done = [l for l in out.stdout.splitlines() if l.startswith('done:')]
  assert done and '499,200 frames' in done[0], out.stdout
  mean = float(done[0].rsplit(' ', 1)[-1])
  print(f'anakin cartpole: {done[0]} ({elapsed:.1f} s)')
  assert mean >= CARTPOLE_LEARNED, done[0]
  rows = read_metrics(str(tmp_path))
  for key in ('frames', 'updates', 'sps', 'episode_return', 'total_loss',
              'mean_rho', 'skipped_updates', 'policy_lag'):
    assert key in rows[-1], key
  # The final checkpoint, played greedily on fresh (host-stepped) envs.
  from impala_jax import evaluation  # pylint: disable=g-import-not-at-top
  _, network, template, _ = _setup(config)
  state, _ = Checkpointer(os.path.join(str(tmp_path), 'checkpoints'),
                          is_primary=False).restore(template)
  scores = evaluation.evaluate_config(config, state.params, num_games=8,
                                      greedy=True, seed=99, network=network)
  print(f'anakin cartpole: greedy evaluation {scores.returns.tolist()}')
  assert scores.mean >= CARTPOLE_LEARNED, scores.returns


# The tuned minatar preset on Breakout-MinAtar, seed 0, cut to 1M steps
# (~10 s here). Random play scores ~0.5 a game; see BUILD_NOTES.md for the
# measured curve (the threshold leaves a wide margin below it).
MINATAR_STEPS = 1_024_000
MINATAR_LEARNED = 4.0


@pytest.mark.slow
def test_minatar_preset_learns_breakout(tmp_path):
  config = dataclasses.replace(
      presets.get_preset('minatar', env='gymnax:Breakout-MinAtar'),
      seed=0, total_frames=MINATAR_STEPS, log_every_seconds=1e9)
  result = anakin.train_anakin(config, str(tmp_path), progress=False,
                               handle_signals=False)
  assert result.frames == MINATAR_STEPS
  mean = float(np.mean(result.recent_returns[-100:]))
  print(f'minatar breakout: mean return of the last 100 games {mean:.2f} '
        f'after {result.frames} steps')
  assert mean >= MINATAR_LEARNED


def _memory_chain_return(tmp_path, use_lstm: bool, memory_length: int):
  env = jax_envs.GymnaxEnv('gymnax:MemoryChain-bsuite',
                           memory_length=memory_length)
  config = config_lib.Config(
      env='gymnax:MemoryChain-bsuite', runtime='anakin', torso='mlp',
      mlp_sizes=(32,), use_lstm=use_lstm, lstm_size=32, unroll_length=20,
      batch_size=32, updates_per_call=50, total_frames=20 * 32 * 200,
      learning_rate=2e-3, entropy_cost=0.01, discount=0.99,
      reward_clipping='none', seed=0, log_every_seconds=1e9).validate()
  result = anakin.train_anakin(config, str(tmp_path / f'lstm{use_lstm}'),
                               env=env, progress=False, handle_signals=False)
  return float(np.mean(result.recent_returns[-100:]))


@pytest.mark.slow
def test_lstm_solves_memory_chain_where_feedforward_is_at_chance(tmp_path):
  """Return +1 for recalling the context bit shown ``memory_length`` steps
  earlier, -1 otherwise: chance is 0. Needs the core state carried across
  steps and unroll boundaries and reset at episode starts."""
  memory_length = 8
  lstm = _memory_chain_return(tmp_path, True, memory_length)
  feedforward = _memory_chain_return(tmp_path, False, memory_length)
  print(f'MemoryChain L={memory_length}: LSTM {lstm:.2f}, '
        f'feed-forward {feedforward:.2f}')
  assert lstm >= 0.8
  assert abs(feedforward) <= 0.3


# -------------------------------------------------- the real program ---
def test_train_program_runs_anakin_and_stops_on_sigint(tmp_path):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env['JAX_PLATFORMS'] = 'cpu'
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole_anakin',
       '--env=gymnax:CartPol-v1', f'--logdir={tmp_path / "bad"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'gymnax:CartPole-v1' in bad.stderr and 'Traceback' not in bad.stderr

  logdir = str(tmp_path / 'run')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole_anakin',
       '--total_frames=1000000000', '--log_every_seconds=0.2',
       '--updates_per_call=2', f'--logdir={logdir}', '--noprogress'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  metrics = os.path.join(logdir, 'metrics.csv')
  deadline = time.monotonic() + 120
  while not (os.path.exists(metrics) and len(read_metrics(metrics)) >= 2):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      out, err = proc.communicate()
      pytest.fail(f'no metrics rows ({proc.returncode}):\n{out}\n{err}')
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert 'stopped by signal' in out
  rows = read_metrics(metrics)
  preset = presets.cartpole_anakin()
  assert int(rows[-1]['frames']) == int(rows[-1]['updates']) * (
      preset.unroll_length * preset.batch_size)
  assert Checkpointer.has_checkpoint(os.path.join(logdir, 'checkpoints'))
  saved = json.loads(open(os.path.join(logdir, 'config.json')).read())
  assert saved['config']['runtime'] == 'anakin'
  assert saved['env_spec']['max_episode_steps'] == 500
