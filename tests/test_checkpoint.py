"""Checkpoints: exact round trip of a real TrainState, resume equivalence,
retention, non-primary processes, crash safety under SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from impala_jax.core import learner as learner_lib
from impala_jax.checkpoint import Checkpointer
from impala_jax.config import Config
from impala_jax.testing import synthetic_trajectory

OBS = (4,)
A = 3
T, B = 5, 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_trees_equal(x, y):
  assert (jax.tree_util.tree_structure(x) ==
          jax.tree_util.tree_structure(y))
  for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def setup():
  config = Config(torso='mlp', mlp_sizes=(16,), unroll_length=T,
                  batch_size=B, total_frames=100_000).validate()
  network = learner_lib.make_network(config, num_actions=A)
  def template(seed=1):
    return learner_lib.init_train_state(config, network, OBS, np.float32, 1,
                                        jax.random.PRNGKey(seed))
  def make_learner(state=None):
    return learner_lib.Learner(config, network, jax.devices()[:1], OBS,
                               np.float32, 1, jax.random.PRNGKey(0),
                               state=state)
  learner = make_learner()
  learner.update(synthetic_trajectory(0, T, B, OBS, np.float32, A))
  return config, template, make_learner, learner


def test_round_trip_and_resume_equivalence(setup, tmp_path):
  config, template, make_learner, learner = setup
  state = learner.state()
  assert int(state.update_count) == 1 and state.frames == T * B
  ckpt = Checkpointer(str(tmp_path))
  assert ckpt.restore(template()) is None
  assert ckpt.save(state, {'config': config, 'actor_seeds': [1, 2]})
  assert not ckpt.save(state, {})          # the same step is not rewritten
  assert Checkpointer.has_checkpoint(str(tmp_path))

  fresh = template()
  restored, meta = Checkpointer(str(tmp_path)).restore(fresh)
  assert_trees_equal(restored._replace(frames=None),
                     state._replace(frames=None))
  assert restored.frames == state.frames
  assert meta['frames'] == T * B and meta['update_count'] == 1
  assert meta['config']['mlp_sizes'] == [16]
  assert meta['actor_seeds'] == [1, 2]
  # optax's NamedTuple state types come back (schedule position included).
  rms, schedule = restored.opt_state[1][0], restored.opt_state[1][1]
  assert isinstance(rms, optax.ScaleByRmsState)
  assert isinstance(schedule, optax.ScaleByScheduleState)
  assert int(schedule.count) == 1
  # The restore did replace the fresh values.
  assert not np.array_equal(
      jax.tree_util.tree_leaves(fresh.params)[0],
      jax.tree_util.tree_leaves(restored.params)[0])

  # The update after a restore equals the update without one.
  resumed = make_learner(state=restored)
  nxt = synthetic_trajectory(1, T, B, OBS, np.float32, A)
  m1 = learner.update(nxt)
  m2 = resumed.update(nxt)
  assert_trees_equal(learner.state()._replace(frames=None),
                     resumed.state()._replace(frames=None))
  assert learner.state().frames == resumed.state().frames == 2 * T * B
  assert float(m1['total_loss']) == float(m2['total_loss'])


def test_max_to_keep_and_latest(setup, tmp_path):
  _, template, _, _ = setup
  base = template()
  ckpt = Checkpointer(str(tmp_path), max_to_keep=2)
  for step in range(1, 5):
    ckpt.save(base._replace(update_count=np.int32(step), frames=step * 10))
  assert ckpt.all_steps() == [3, 4]
  restored, meta = ckpt.restore(template())
  assert int(restored.update_count) == 4 and restored.frames == 40
  earlier, _ = ckpt.restore(template(), step=3)
  assert earlier.frames == 30


def test_not_primary_and_typed_keys(tmp_path):
  directory = str(tmp_path / 'ckpt')
  state = learner_lib.TrainState(
      params={'w': np.arange(6, dtype=np.float32).reshape(2, 3)},
      opt_state={'nu': np.ones(3, np.float32)}, rng=jax.random.key(7),
      update_count=np.int32(5), skipped_updates=np.int32(1), frames=2**40)
  template = state._replace(
      params={'w': np.zeros((2, 3), np.float32)}, rng=jax.random.key(0),
      update_count=np.int32(0), skipped_updates=np.int32(0), frames=0)
  reader = Checkpointer(directory, is_primary=False)
  assert not reader.save(state)
  assert not os.path.exists(directory)
  assert reader.restore(template) is None
  assert not Checkpointer.has_checkpoint(directory)

  assert Checkpointer(directory).save(state)
  restored, meta = reader.restore(template)
  assert jax.dtypes.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(state.rng))
  assert restored.frames == 2**40 and int(restored.skipped_updates) == 1
  np.testing.assert_array_equal(restored.params['w'], state.params['w'])
  # A raw uint32 template gets the raw key data back.
  raw, _ = reader.restore(template._replace(rng=jax.random.PRNGKey(0)))
  assert raw.rng.dtype == np.uint32
  np.testing.assert_array_equal(raw.rng, jax.random.key_data(state.rng))


def test_unfinished_temp_dir_is_ignored(tmp_path):
  state = learner_lib.TrainState(
      params={'w': np.ones(2, np.float32)}, opt_state={'m': np.ones(2)},
      rng=jax.random.PRNGKey(0), update_count=np.int32(3),
      skipped_updates=np.int32(0), frames=30)
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save(state)
  # What a crash in the middle of writing step 9 leaves behind.
  os.makedirs(tmp_path / '9.orbax-checkpoint-tmp' / 'state')
  assert Checkpointer(str(tmp_path)).latest_step() == 3
  restored, _ = Checkpointer(str(tmp_path)).restore(state)
  assert restored.frames == 30


_WRITER = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from impala_jax.checkpoint import Checkpointer
    from impala_jax.core.learner import TrainState
    ckpt = Checkpointer(sys.argv[1], max_to_keep=100)
    for step in range(1, 1000):
      state = TrainState(
          params={'w': np.full((512, 1024), step, np.float32),
                  'b': np.full((1024,), step, np.float32)},
          opt_state={'nu': np.full((512, 1024), -step, np.float32)},
          rng=jax.random.PRNGKey(step), update_count=np.int32(step),
          skipped_updates=np.int32(0), frames=step * 100)
      ckpt.save(state, {'step': step}, wait=False)
      print('writing', step, flush=True)   # orbax writes in the background
      ckpt.wait_until_finished()
''')


def test_sigkill_during_save_leaves_finished_steps_intact(tmp_path):
  directory = str(tmp_path / 'ckpt')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  env.pop('XLA_FLAGS', None)
  proc = subprocess.Popen([sys.executable, '-c', _WRITER, directory],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env=env, text=True)
  try:
    for line in proc.stdout:
      if line.startswith('writing 3'):
        break
    proc.send_signal(signal.SIGKILL)   # while step 3 is being written
  finally:
    proc.kill()
    proc.wait()
  steps = Checkpointer(directory, is_primary=False).all_steps()
  assert steps[:2] == [1, 2]
  template = learner_lib.TrainState(
      params={'w': np.zeros((512, 1024), np.float32),
              'b': np.zeros((1024,), np.float32)},
      opt_state={'nu': np.zeros((512, 1024), np.float32)},
      rng=jax.random.PRNGKey(0), update_count=np.int32(0),
      skipped_updates=np.int32(0), frames=0)
  reader = Checkpointer(directory, is_primary=False)
  for step in steps:   # every listed step is whole
    restored, meta = reader.restore(template, step=step)
    assert meta['step'] == step and restored.frames == step * 100
    assert (restored.params['w'] == step).all()
    assert (restored.opt_state['nu'] == -step).all()
  # The primary of the resumed run saves over whatever the kill left.
  last = steps[-1]
  state = restored._replace(update_count=np.int32(last + 1))
  assert Checkpointer(directory).save(state)
  assert reader.latest_step() == last + 1
