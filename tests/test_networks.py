"""Networks: shapes, parameter counts, ResNet wiring, LSTM resets, scaling.

Kept fast on a 2-core CPU: shapes and counts go through ``jax.eval_shape``
(no compute); only a few small real runs.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from impala_jax.core import networks
from impala_jax.core.networks import AgentNetwork
from impala_jax.core.types import AgentInput

T, B, A = 3, 2, 6
PIXELS = (4, 84, 84)


def _random_inputs(rng, leading, obs_shape, obs_dtype, num_actions=A,
                   first=None):
  if np.dtype(obs_dtype) == np.uint8:
    obs = rng.integers(0, 256, size=leading + obs_shape, dtype=np.uint8)
  else:
    obs = rng.normal(size=leading + obs_shape).astype(obs_dtype)
  if first is None:
    first = np.zeros(leading, bool)
  return AgentInput(
      observation=jnp.asarray(obs),
      first=jnp.asarray(first),
      last_action=jnp.asarray(rng.integers(0, num_actions, size=leading),
                              jnp.int32),
      last_reward=jnp.asarray(rng.normal(size=leading) * 2, jnp.float32))


def _index(tree, *idx):
  return jax.tree_util.tree_map(lambda x: x[idx], tree)


def _count(tree):
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------- shapes


@pytest.mark.parametrize('use_lstm', [False, True])
@pytest.mark.parametrize('torso,obs_shape,obs_dtype', [
    ('shallow', PIXELS, jnp.uint8),
    ('deep', PIXELS, jnp.uint8),
    ('mlp', (4,), jnp.float32),
    ('minatar', (4, 10, 10), jnp.float32),
])
def test_output_shapes(torso, obs_shape, obs_dtype, use_lstm):
  net = AgentNetwork(A, torso=torso, use_lstm=use_lstm, lstm_size=32)
  inputs_tb = networks.zero_inputs((T, B), obs_shape, obs_dtype)
  inputs_b = networks.zero_inputs((B,), obs_shape, obs_dtype)
  state = net.initial_state(B)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), inputs_tb, state)

  out, final_state = jax.eval_shape(net.apply, params, inputs_tb, state)
  assert out.policy_logits.shape == (T, B, A)
  assert out.value.shape == (T, B)
  out_b, new_state = jax.eval_shape(
      lambda p, x, s: net.apply(p, x, s, method=AgentNetwork.step),
      params, inputs_b, state)
  assert out_b.policy_logits.shape == (B, A)
  assert out_b.value.shape == (B,)
  for s in (final_state, new_state):
    if use_lstm:
      assert [x.shape for x in s] == [(B, 32), (B, 32)]
      assert all(x.dtype == jnp.float32 for x in s)
    else:
      assert s == ()


@pytest.mark.parametrize('torso', ['shallow', 'deep'])
def test_pixel_networks_run_on_uint8_and_step_matches_unroll(torso):
  """A real run on envpool-shaped uint8 frames; feed-forward step == unroll."""
  net = AgentNetwork(A, torso=torso)
  inputs = _random_inputs(np.random.default_rng(0), (2, B), PIXELS, np.uint8)
  params = net.init(jax.random.PRNGKey(1), inputs, ())
  out, state = net.apply(params, inputs, ())
  assert out.policy_logits.shape == (2, B, A) and out.value.shape == (2, B)
  assert state == ()
  assert np.all(np.isfinite(out.policy_logits))
  assert np.std(np.asarray(out.value)) > 0  # Inputs reach the output.
  for t in range(2):
    out_t, _ = net.apply(params, _index(inputs, t), (),
                         method=AgentNetwork.step)
    np.testing.assert_allclose(out_t.policy_logits, out.policy_logits[t],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_t.value, out.value[t], rtol=1e-5,
                               atol=1e-5)


def test_rank_checks_and_unknown_torso():
  net = AgentNetwork(3, torso='mlp')
  inputs_tb = networks.zero_inputs((T, B), (4,), jnp.float32)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), inputs_tb, ())
  with pytest.raises(AssertionError):  # [T, B] inputs given to step.
    jax.eval_shape(
        lambda p, x: net.apply(p, x, (), method=AgentNetwork.step),
        params, inputs_tb)
  with pytest.raises(AssertionError):  # [B] inputs given to unroll.
    jax.eval_shape(net.apply, params, _index(inputs_tb, 0), ())
  with pytest.raises(ValueError, match='shallow'):
    jax.eval_shape(AgentNetwork(3, torso='resnet').init,
                   jax.random.PRNGKey(0), inputs_tb, ())


# --------------------------------------------------------- parameter counts


def _abstract_params(net, obs_shape=PIXELS, obs_dtype=jnp.uint8):
  inputs = networks.zero_inputs((1, 1), obs_shape, obs_dtype)
  return jax.eval_shape(net.init, jax.random.PRNGKey(0), inputs,
                        net.initial_state(1))['params']


def _conv(k, c_in, c_out):
  return k * k * c_in * c_out + c_out


def _dense(n_in, n_out):
  return n_in * n_out + n_out


HEADS = _dense(256, A) + _dense(256, 1)  # policy logits + value.


def test_shallow_parameter_count():
  # 84 -(8x8 s4 VALID)-> (84 - 8) // 4 + 1 = 20 -(4x4 s2 VALID)-> 9.
  conv1 = _conv(8, 4, 16)  # 8*8*4*16 + 16 = 4112
  conv2 = _conv(4, 16, 32)  # 4*4*16*32 + 32 = 8224
  fc = _dense(9 * 9 * 32, 256)  # 2592*256 + 256 = 663808
  torso = conv1 + conv2 + fc
  assert torso == 676144
  params = _abstract_params(AgentNetwork(A, torso='shallow'))
  assert _count(params['torso_net']['conv1']) == conv1
  assert _count(params['torso_net']['conv2']) == conv2
  assert _count(params['torso_net']) == torso
  assert _count(params) == torso + HEADS
  assert networks.num_params(params) == torso + HEADS


def test_minatar_parameter_count():
  # Young & Tian 2019: conv 16 3x3 stride 1 VALID (10 -> 8), Dense 128.
  conv = _conv(3, 4, 16)  # 3*3*4*16 + 16 = 592
  fc = _dense(8 * 8 * 16, 128)  # 1024*128 + 128 = 131200
  params = _abstract_params(AgentNetwork(A, torso='minatar'), (4, 10, 10),
                            jnp.float32)
  assert params['torso_net']['kernel'].shape == (3, 3, 4, 16)
  assert conv == 592
  assert _count(params['torso_net']) - _count(params['torso_net']['fc']) == (
      conv)
  assert _count(params['torso_net']) == conv + fc
  assert _count(params) == conv + fc + _dense(128, A) + _dense(128, 1)


def test_minatar_patch_matmul_equals_a_valid_conv():
  torso = networks.MinAtarTorso()
  obs = jax.random.uniform(jax.random.PRNGKey(1), (5, 4, 10, 10))
  params = torso.init(jax.random.PRNGKey(0), obs)['params']
  params = jax.tree_util.tree_map(
      lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape),
      params)
  conv = jax.lax.conv_general_dilated(
      jnp.transpose(obs, (0, 2, 3, 1)), params['kernel'], (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + params['bias']
  dense = params['fc']
  expected = jax.nn.relu(jax.nn.relu(conv).reshape(5, -1) @ dense['kernel']
                         + dense['bias'])
  np.testing.assert_allclose(torso.apply({'params': params}, obs), expected,
                             rtol=1e-5, atol=1e-5)


def test_deep_parameter_count():
  # Each section: conv 3x3, then 2 residual blocks of 2 convs 3x3.
  # Spatial: 84 -(pool s2 SAME)-> 42 -> 21 -> 11.
  section0 = _conv(3, 4, 16) + 4 * _conv(3, 16, 16)  # 592 + 4*2320
  section1 = _conv(3, 16, 32) + 4 * _conv(3, 32, 32)  # 4640 + 4*9248
  section2 = _conv(3, 32, 32) + 4 * _conv(3, 32, 32)  # 9248 + 4*9248
  fc = _dense(11 * 11 * 32, 256)  # 3872*256 + 256 = 991488
  torso = section0 + section1 + section2 + fc
  assert torso == 1089232
  params = _abstract_params(AgentNetwork(A, torso='deep'))
  assert _count(params['torso_net']['section0']) == section0
  assert _count(params['torso_net']['section1']) == section1
  assert _count(params['torso_net']['section2']) == section2
  assert _count(params['torso_net']) == torso
  assert _count(params) == torso + HEADS


def test_mlp_and_lstm_parameter_count():
  h = 16
  torso = _dense(4, 64) + _dense(64, 64)
  # LSTM input: features 64 + one-hot action A + clipped reward 1.
  # Four gates, each with an input kernel, a recurrent kernel and a bias.
  core = 4 * ((64 + A + 1) * h + h * h + h)
  heads = _dense(h, A) + _dense(h, 1)
  params = _abstract_params(
      AgentNetwork(A, torso='mlp', use_lstm=True, lstm_size=h),
      (4,), jnp.float32)
  assert _count(params['torso_net']) == torso
  assert _count(params['core']) == core
  assert _count(params) == torso + core + heads


# ------------------------------------------------------ ResNet wiring


def _np_conv3x3_same(x, kernel, bias):
  """NumPy 3x3 stride-1 'SAME' cross-correlation, NHWC / HWIO."""
  _, height, width, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
  for dy in range(3):
    for dx in range(3):
      out += np.einsum('nhwc,co->nhwo', xp[:, dy:dy + height, dx:dx + width],
                       kernel[dy, dx])
  return out + bias


def _np_max_pool_3x3_s2_same(x):
  """TF 'SAME' rule: output ceil(n/2), padding split low = total // 2."""
  _, height, width, _ = x.shape
  pads, outs = [], []
  for n in (height, width):
    out = -(-n // 2)
    total = max((out - 1) * 2 + 3 - n, 0)
    pads.append((total // 2, total - total // 2))
    outs.append(out)
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
  y = np.full(x.shape[:1] + tuple(outs) + x.shape[3:], -np.inf)
  for i in range(outs[0]):
    for j in range(outs[1]):
      y[:, i, j] = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
  return y


def _np_residual_block(x, p):
  relu = lambda v: np.maximum(v, 0)
  y = _np_conv3x3_same(relu(x), p['conv1']['kernel'], p['conv1']['bias'])
  y = _np_conv3x3_same(relu(y), p['conv2']['kernel'], p['conv2']['bias'])
  return x + y


def _random_params_like(module, x, rng):
  """Hand-set params (random, biases too) with the module's own structure."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  return jax.tree_util.tree_map(
      lambda s: rng.normal(size=s.shape).astype(np.float32) * 0.3, shapes)


def test_residual_block_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  block = networks.ResidualBlock(3)
  params = _random_params_like(block, x, rng)
  want = _np_residual_block(x, params['params'])
  np.testing.assert_allclose(block.apply(params, x), want, rtol=1e-5,
                             atol=1e-5)
  # The residual branch is not trivially zero here: the block is no identity.
  assert np.abs(want - x).max() > 0.1


def test_residual_block_with_zeroed_branch_is_identity():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
  block = networks.ResidualBlock(2)
  params = _random_params_like(block, x, rng)
  # Zeroing the second conv zeroes the branch, whatever the first one does.
  conv2 = params['params']['conv2']
  params['params']['conv2'] = jax.tree_util.tree_map(np.zeros_like, conv2)
  np.testing.assert_allclose(block.apply(params, x), x, rtol=0, atol=0)


@pytest.mark.parametrize('size', [5, 6])  # Odd and even: SAME pads differ.
def test_resnet_section_matches_numpy(size):
  rng = np.random.default_rng(size)
  x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
  section = networks.ResNetSection(4)
  params = _random_params_like(section, x, rng)
  p = params['params']
  want = _np_conv3x3_same(x, p['conv']['kernel'], p['conv']['bias'])
  want = _np_max_pool_3x3_s2_same(want)
  want = _np_residual_block(want, p['block0'])
  want = _np_residual_block(want, p['block1'])
  got = section.apply(params, x)
  assert got.shape == (2, (size + 1) // 2, (size + 1) // 2, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------- LSTM


LSTM_T, LSTM_B, LSTM_A, LSTM_H, OBS = 6, 3, 3, 8, (5,)


@pytest.fixture(scope='module')
def lstm_setup():
  net = AgentNetwork(LSTM_A, torso='mlp', use_lstm=True, lstm_size=LSTM_H,
                     mlp_sizes=(16,))
  rng = np.random.default_rng(0)
  first = np.zeros((LSTM_T, LSTM_B), bool)
  first[2, 1] = first[4, 0] = first[3, 2] = first[5, 2] = True
  inputs = _random_inputs(rng, (LSTM_T, LSTM_B), OBS, np.float32,
                          num_actions=LSTM_A, first=first)
  params = net.init(jax.random.PRNGKey(0), inputs, net.initial_state(LSTM_B))
  # A non-zero starting state, so that a missing reset shows.
  state0 = tuple(jnp.asarray(rng.normal(size=(LSTM_B, LSTM_H)), jnp.float32)
                 for _ in range(2))
  unroll = jax.jit(net.apply)
  step = jax.jit(lambda p, x, s: net.apply(p, x, s, method=AgentNetwork.step))
  return net, params, inputs, state0, unroll, step


def test_lstm_unroll_equals_steps_with_manual_resets(lstm_setup):
  net, params, inputs, state0, unroll, step = lstm_setup
  out, final_state = unroll(params, inputs, state0)
  assert out.policy_logits.shape == (LSTM_T, LSTM_B, LSTM_A)

  first = np.asarray(inputs.first)
  state = tuple(np.asarray(s) for s in state0)
  for t in range(LSTM_T):
    # The test resets by hand and hides `first` from `step`.
    state = tuple(np.where(first[t][:, None], 0.0, s) for s in state)
    inputs_t = _index(inputs, t)._replace(first=jnp.zeros(LSTM_B, bool))
    out_t, state = step(params, inputs_t, state)
    np.testing.assert_allclose(out_t.policy_logits, out.policy_logits[t],
                               atol=1e-5)
    np.testing.assert_allclose(out_t.value, out.value[t], atol=1e-5)
  for got, want in zip(final_state, state):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_lstm_state_carries_and_first_resets_it(lstm_setup):
  net, params, inputs, state0, unroll, step = lstm_setup
  out, _ = unroll(params, inputs, state0)
  no_reset = inputs._replace(first=jnp.zeros_like(inputs.first))
  out_no_reset, _ = unroll(params, no_reset, state0)
  first = np.asarray(inputs.first)
  seen_reset = np.cumsum(first, axis=0) > 0  # [T, B]
  diff = np.abs(np.asarray(out.value) - np.asarray(out_no_reset.value))
  assert np.all(diff[~seen_reset] < 1e-6)  # Same until the first reset ...
  assert np.all(diff[seen_reset] > 1e-6)  # ... different from then on.

  # The starting state matters unless the episode starts at t = 0.
  zero = net.initial_state(LSTM_B)
  out_zero, _ = unroll(params, no_reset, zero)
  assert np.all(np.abs(out_zero.value - out_no_reset.value) > 1e-6)
  reset_all = inputs._replace(first=jnp.ones_like(inputs.first))
  out_a, _ = unroll(params, reset_all, state0)
  out_b, _ = unroll(params, reset_all, zero)
  np.testing.assert_allclose(out_a.value, out_b.value, atol=1e-6)


def test_step_resets_state_where_first(lstm_setup):
  net, params, inputs, state0, unroll, step = lstm_setup
  inputs_0 = _index(inputs, 0)._replace(
      first=jnp.array([True, False, True]))
  out, state = step(params, inputs_0, state0)
  want_out, want_state = step(
      params, inputs_0._replace(first=jnp.zeros(LSTM_B, bool)),
      tuple(np.where(np.array([1, 0, 1])[:, None], 0.0, s) for s in state0))
  np.testing.assert_allclose(out.value, want_out.value, atol=1e-6)
  for got, want in zip(state, want_state):
    np.testing.assert_allclose(got, want, atol=1e-6)
  # Column 1 kept its state: it differs from a reset one.
  reset_out, _ = step(params, inputs_0._replace(first=jnp.ones(LSTM_B, bool)),
                      state0)
  assert abs(float(reset_out.value[1] - out.value[1])) > 1e-6


def test_lstm_sees_clipped_reward_and_last_action(lstm_setup):
  net, params, inputs, state0, unroll, step = lstm_setup
  x = _index(inputs, 0)
  value = lambda **kw: np.asarray(step(params, x._replace(**kw), state0)[0]
                                  .value)
  ones = jnp.ones(LSTM_B, jnp.float32)
  np.testing.assert_allclose(value(last_reward=5 * ones),
                             value(last_reward=ones), atol=1e-6)
  np.testing.assert_allclose(value(last_reward=-7 * ones),
                             value(last_reward=-ones), atol=1e-6)
  assert np.all(np.abs(value(last_reward=0.5 * ones)
                       - value(last_reward=0 * ones)) > 1e-7)
  actions = jnp.zeros(LSTM_B, jnp.int32)
  assert np.all(np.abs(value(last_action=actions)
                       - value(last_action=actions + 1)) > 1e-7)


def test_feed_forward_ignores_last_action_and_reward():
  net = AgentNetwork(LSTM_A, torso='mlp')
  x = _random_inputs(np.random.default_rng(3), (B,), OBS, np.float32,
                     num_actions=LSTM_A)
  params = net.init(jax.random.PRNGKey(0), _index(x, None), ())
  out, _ = net.apply(params, x, (), method=AgentNetwork.step)
  out2, _ = net.apply(params, x._replace(
      last_action=(x.last_action + 1) % LSTM_A, last_reward=x.last_reward + 1,
      first=~x.first), (), method=AgentNetwork.step)
  chex.assert_trees_all_close(out, out2, atol=0)


def test_initial_state_needs_no_params():
  net = AgentNetwork(LSTM_A, torso='mlp', use_lstm=True, lstm_size=LSTM_H)
  want = (np.zeros((4, LSTM_H), np.float32),) * 2
  for state in (networks.initial_state(net, 4), net.initial_state(4)):
    chex.assert_trees_all_equal(tuple(np.asarray(s) for s in state), want)
    assert all(s.dtype == jnp.float32 for s in state)
  params = net.init(jax.random.PRNGKey(0),
                    networks.zero_inputs((1, 4), OBS, jnp.float32),
                    net.initial_state(4))
  chex.assert_trees_all_equal(
      net.apply(params, 4, method=AgentNetwork.initial_state),
      networks.initial_state(net, 4))
  assert networks.initial_state(AgentNetwork(3, torso='mlp'), 4) == ()


# ------------------------------------------------------------ scaling


@pytest.mark.parametrize('torso,obs_shape', [
    ('shallow', (4, 36, 36)),  # Small frames: same code path, faster test.
    ('mlp', (7,)),
])
def test_uint8_observation_equals_float_divided_by_255(torso, obs_shape):
  net = AgentNetwork(A, torso=torso)
  rng = np.random.default_rng(4)
  x = _random_inputs(rng, (B,), obs_shape, np.uint8)
  x_float = x._replace(observation=jnp.asarray(
      np.asarray(x.observation, np.float32) / 255.0))
  params = net.init(jax.random.PRNGKey(0), _index(x, None), ())
  out, _ = net.apply(params, x, (), method=AgentNetwork.step)
  out_float, _ = net.apply(params, x_float, (), method=AgentNetwork.step)
  np.testing.assert_allclose(out.policy_logits, out_float.policy_logits,
                             rtol=1e-5, atol=1e-6)
  # Not scaling at all would show: the raw 0..255 values give other outputs.
  out_raw, _ = net.apply(params, x._replace(
      observation=x.observation.astype(jnp.float32)), (),
                         method=AgentNetwork.step)
  assert np.abs(out_raw.policy_logits - out.policy_logits).max() > 1e-3


def test_torso_chunks_give_the_same_outputs_and_gradients():
  """``torso_chunk`` only changes how XLA runs the torso, not the math
  (uneven last slice included: 3 * 5 = 15 = 4 + 4 + 4 + 3)."""
  inputs = _random_inputs(np.random.default_rng(0), (3, 5), PIXELS,
                          jnp.uint8)
  whole = AgentNetwork(num_actions=A, torso='shallow')
  sliced = AgentNetwork(num_actions=A, torso='shallow', torso_chunk=4)
  params = whole.init(jax.random.PRNGKey(1), inputs, whole.initial_state(5))
  sliced_params = sliced.init(jax.random.PRNGKey(1), inputs,
                              sliced.initial_state(5))
  chex.assert_trees_all_equal_shapes(params, sliced_params)

  def loss(p, net):
    out, _ = net.apply(p, inputs, net.initial_state(5))
    return jnp.sum(out.policy_logits ** 2) + jnp.sum(out.value)

  (l1, g1), (l2, g2) = (jax.value_and_grad(loss)(params, net)
                        for net in (whole, sliced))
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------- instructions ---
def _with_instructions(images, sentences, length=16):
  """[N, 3, H, W] images + N sentences -> [N, 3, H + 1, W] (the DMLab
  adapter's packing)."""
  from impala_jax.envs import dmlab  # pylint: disable=g-import-not-at-top
  return np.stack([
      dmlab.pack_instruction(img, dmlab.tokenize_instruction(text, length))
      for img, text in zip(images, sentences)])


def test_split_instruction_inverts_the_packing():
  from impala_jax.envs import dmlab  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (3, 72, 96), dtype=np.uint8)
  tokens = np.array([999, 1, 256, 255, 513, 0, 0, 0], np.uint16)
  packed = dmlab.pack_instruction(image, tokens)
  assert packed.shape == (3, 73, 96) and packed.dtype == np.uint8
  got_image, got_tokens = networks.split_instruction(
      jnp.asarray(packed[None]), 8)
  np.testing.assert_array_equal(got_image[0], image)
  np.testing.assert_array_equal(got_tokens[0], tokens.astype(np.int32))
  ids = dmlab.tokenize_instruction(b'Pick the RED object', 6)
  assert ids.dtype == np.uint16 and (ids[:4] > 0).all() and (ids[4:] == 0).all()
  assert (ids < dmlab.VOCAB_SIZE).all()
  np.testing.assert_array_equal(   # stable across processes and case
      ids, dmlab.tokenize_instruction('pick the red object', 6))
  assert len(dmlab.tokenize_instruction(' '.join(['w'] * 40), 16)) == 16


def test_instruction_encoder_reads_words_and_ignores_padding():
  enc = networks.InstructionEncoder(vocab_size=50)
  a = jnp.array([[3, 7, 9, 0, 0, 0]])
  params = enc.init(jax.random.PRNGKey(0), a)
  apply = jax.jit(enc.apply)
  out = lambda t: apply(params, jnp.asarray(t))
  assert out(a).shape == (1, 64)
  # Padding leaves the state alone: the output is the state after the last
  # real word, however much padding follows.
  np.testing.assert_allclose(out(a)[:, :], out([[3, 7, 9, 0, 0, 0]]))
  np.testing.assert_allclose(out([[3, 7, 0, 9, 0, 0]])[0],
                             out([[3, 7, 9, 0, 0, 0]])[0], atol=1e-6)
  np.testing.assert_array_equal(out([[0] * 6]), 0.0)   # no instruction
  assert not np.allclose(out([[3, 7, 9, 0, 0, 0]]), out([[3, 7, 8, 0, 0, 0]]))
  assert not np.allclose(out([[3, 7, 9, 0, 0, 0]]), out([[7, 3, 9, 0, 0, 0]]))


def test_agent_network_uses_the_instruction():
  rng = np.random.default_rng(1)
  net = AgentNetwork(num_actions=9, torso='mlp', mlp_sizes=(8,),
                     use_lstm=True, lstm_size=16, instruction_len=16)
  images = rng.integers(0, 256, (T * B, 3, 72, 96), dtype=np.uint8)
  red = _with_instructions(images, ['pick the red object'] * (T * B))
  blue = _with_instructions(images, ['pick the blue object'] * (T * B))
  inputs = _random_inputs(rng, (T, B), (3, 73, 96), np.uint8, num_actions=9)
  as_red = inputs._replace(observation=jnp.asarray(red.reshape(
      (T, B) + red.shape[1:])))
  as_blue = as_red._replace(observation=jnp.asarray(blue.reshape(
      (T, B) + blue.shape[1:])))
  params = jax.jit(net.init)(jax.random.PRNGKey(0), as_red,
                             net.initial_state(B))
  assert 'instruction_net' in params['params']
  unroll = jax.jit(net.apply)
  step = jax.jit(lambda p, x, s: net.apply(p, x, s, method=AgentNetwork.step))
  out_red, _ = unroll(params, as_red, net.initial_state(B))
  out_blue, _ = unroll(params, as_blue, net.initial_state(B))
  assert out_red.policy_logits.shape == (T, B, 9)
  assert not np.allclose(out_red.policy_logits, out_blue.policy_logits)
  # step() over time equals unroll(), instruction included.
  state = net.initial_state(B)
  for t in range(T):
    out_t, state = step(params, _index(as_red, t), state)
    np.testing.assert_allclose(out_t.policy_logits,
                               out_red.policy_logits[t], rtol=1e-4,
                               atol=1e-5)
  # Gradients reach the word embeddings.
  def loss(p):
    return jnp.sum(net.apply(p, as_red, net.initial_state(B))[0].value)
  grads = jax.jit(jax.grad(loss))(params)
  emb = grads['params']['instruction_net']['embed']['embedding']
  assert float(jnp.abs(emb).sum()) > 0
