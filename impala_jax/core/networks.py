"""The IMPALA agent network (Espeholt et al. 2018, section 5 and figure 3).

A torso turns one observation into a feature vector; an optional LSTM core,
fed with the features, the one-hot last action and the clipped last reward
(the paper's DMLab agent), carries memory across steps; two linear heads
give policy logits and a value.

Torsos:

- ``ShallowTorso``: the paper's small Atari network (figure 3, left).
- ``DeepTorso``: the paper's 15-layer ResNet (figure 3, right).
- ``MLPTorso``: for vector observations (CartPole and the like).
- ``MinAtarTorso``: the MinAtar paper's network (Young & Tian 2019): one
  3x3 conv with 16 channels, ReLU, Dense 128, ReLU, on ``[C, 10, 10]``
  grids.

Instructions (DMLab's language levels): with ``instruction_len = L > 0``
the last row of each ``[C, H + 1, W]`` observation carries ``L`` word ids
(``impala_jax.envs.dmlab.pack_instruction``); ``split_instruction`` takes
them off, an ``InstructionEncoder`` (word embedding 20, LSTM 64 over the
words, as the paper's DMLab agent) encodes them, and its output is
concatenated to the torso's features before the core.

Pixels arrive channel-first ``[N, C, H, W]`` uint8 (envpool stacks frames in
``C``); a torso casts them to float32 and scales them by 1/255 on the device,
so the host never holds a float copy. Float observations are used as given.

Speed: ``AgentNetwork.unroll`` runs the torso once over the flattened
``[T*B, ...]`` batch and scans only the LSTM core over time. Convolutions
inside ``lax.scan`` are about 10x slower on CPU (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from impala_jax import config as config_lib
from impala_jax.core.types import AgentInput, AgentOutput, CoreState

Array = jax.Array

TORSOS = config_lib.TORSOS
# The shallow torso (8x8 stride 4, then 4x4 stride 2) needs this many pixels.
SHALLOW_MIN_PIXELS = 36


def torso_fit_error(torso: str, obs_shape: Sequence[int], env_id: str = ''
                    ) -> Optional[str]:
  """Why ``torso`` cannot read observations of ``obs_shape`` (one line), or
  None. The conv torsos need images ``[C, H, W]``; the shallow one at least
  36 pixels a side; an MLP reads anything but is refused on Atari-sized
  images (a conv torso is what the paper uses there; small images such as
  MinAtar's 10x10 are fine)."""
  shape = tuple(int(d) for d in obs_shape)
  name = env_id or 'the environment'
  if len(shape) != 3:
    if torso != 'mlp':
      return f'{name} has vector observations {shape}; use --torso=mlp.'
    return None
  if torso == 'mlp' and min(shape[1:]) >= SHALLOW_MIN_PIXELS:
    return (f'{name} has pixel observations {shape}; use --torso=shallow or '
            '--torso=deep.')
  if torso == 'shallow' and min(shape[1:]) < SHALLOW_MIN_PIXELS:
    return (f'{name} observations {shape} are too small for the shallow '
            'torso (8x8 stride 4 then 4x4 stride 2); use --torso=minatar (the '
            'MinAtar network), --torso=mlp or --torso=deep.')
  return None


def preprocess_observation(observation: Array) -> Array:
  """uint8 pixels -> float32 in [0, 1]; any other dtype -> float32 as is."""
  if observation.dtype == jnp.uint8:
    return observation.astype(jnp.float32) * (1.0 / 255.0)
  return observation.astype(jnp.float32)


def _pixels_to_nhwc(observation: Array) -> Array:
  """``[N, C, H, W]`` (uint8 or float) -> ``[N, H, W, C]`` float32."""
  chex.assert_rank(observation, 4)
  return jnp.transpose(preprocess_observation(observation), (0, 2, 3, 1))


class ShallowTorso(nn.Module):
  """The paper's shallow Atari torso: ``[N, C, H, W] -> [N, 256]``.

  conv 16 8x8 stride 4, ReLU, conv 32 4x4 stride 2, ReLU, Dense 256, ReLU;
  'VALID' padding, as in the paper (84x84 -> 20x20 -> 9x9).
  """
  hidden_size: int = 256

  @nn.compact
  def __call__(self, observation: Array) -> Array:
    x = _pixels_to_nhwc(observation)
    x = nn.relu(nn.Conv(16, (8, 8), strides=(4, 4), padding='VALID',
                        name='conv1')(x))
    x = nn.relu(nn.Conv(32, (4, 4), strides=(2, 2), padding='VALID',
                        name='conv2')(x))
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(self.hidden_size, name='fc')(x))


class ResidualBlock(nn.Module):
  """``x + conv(relu(conv(relu(x))))``, 3x3 'SAME' convs: ``[N,H,W,C]``."""
  channels: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    chex.assert_rank(x, 4)
    y = nn.Conv(self.channels, (3, 3), padding='SAME', name='conv1')(
        nn.relu(x))
    y = nn.Conv(self.channels, (3, 3), padding='SAME', name='conv2')(
        nn.relu(y))
    return x + y


class ResNetSection(nn.Module):
  """One section of the deep torso: ``[N, H, W, C] -> [N, H/2, W/2, ch]``.

  Conv 3x3 stride 1, max-pool 3x3 stride 2 ('SAME' both), two residual
  blocks. H and W round up (84 -> 42 -> 21 -> 11).
  """
  channels: int
  num_blocks: int = 2

  @nn.compact
  def __call__(self, x: Array) -> Array:
    chex.assert_rank(x, 4)
    x = nn.Conv(self.channels, (3, 3), padding='SAME', name='conv')(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for i in range(self.num_blocks):
      x = ResidualBlock(self.channels, name=f'block{i}')(x)
    return x


class DeepTorso(nn.Module):
  """The paper's ResNet torso: ``[N, C, H, W] -> [N, 256]``.

  Three ``ResNetSection``s with (16, 32, 32) channels, then ReLU, flatten,
  Dense 256, ReLU.
  """
  channels: Sequence[int] = (16, 32, 32)
  hidden_size: int = 256

  @nn.compact
  def __call__(self, observation: Array) -> Array:
    x = _pixels_to_nhwc(observation)
    for i, channels in enumerate(self.channels):
      x = ResNetSection(channels, name=f'section{i}')(x)
    x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(self.hidden_size, name='fc')(x))


class MinAtarTorso(nn.Module):
  """The MinAtar paper's torso: ``[N, C, 10, 10] -> [N, 128]``.

  conv 16 3x3 stride 1 'VALID' (10x10 -> 8x8), ReLU, Dense 128, ReLU
  (Young & Tian 2019, the network of their DQN and AC(lambda) agents).

  The convolution is computed as one 2-D matmul over the 3x3 patches
  (im2col: the nine shifted ``[N, 8, 8, C]`` views concatenated to
  ``[N * 64, 9 C]``) with the usual ``[3, 3, C, 16]`` kernel: the same
  function as ``nn.Conv`` (tested), and on a CPU the fastest of the forms
  measured inside the rollout's ``lax.scan`` and the learner's gradient
  (BUILD_NOTES.md).
  """
  channels: int = 16
  hidden_size: int = 128

  @nn.compact
  def __call__(self, observation: Array) -> Array:
    x = _pixels_to_nhwc(observation)
    n, h, w, c = x.shape
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, c, self.channels))
    bias = self.param('bias', nn.initializers.zeros, (self.channels,))
    # Patch order (i, j, c) matches the kernel's [3, 3, C] row-major order.
    patches = jnp.concatenate([x[:, i:i + h - 2, j:j + w - 2, :]
                               for i in range(3) for j in range(3)], axis=-1)
    x = patches.reshape(-1, 9 * c) @ kernel.reshape(9 * c, self.channels)
    x = nn.relu(x + bias).reshape(n, -1)
    return nn.relu(nn.Dense(self.hidden_size, name='fc')(x))


class MLPTorso(nn.Module):
  """Dense + ReLU layers over the flattened observation: ``[N, ...] -> [N, F]``.

  ``F`` is ``hidden_sizes[-1]`` (the flattened input size if empty).
  """
  hidden_sizes: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, observation: Array) -> Array:
    chex.assert_rank(observation, {1, 2, 3, 4})
    x = preprocess_observation(observation)
    x = x.reshape(x.shape[0], -1)
    for i, size in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(size, name=f'fc{i}')(x))
    return x


def split_instruction(observation: Array, length: int
                      ) -> Tuple[Array, Array]:
  """``[N, C, H + 1, W]`` uint8 -> (image ``[N, C, H, W]``, word ids
  ``[N, length]`` int32): the inverse of ``dmlab.pack_instruction`` (ids'
  low bytes in channel 0, high bytes in channel 1 of the last row)."""
  chex.assert_rank(observation, 4)
  row = observation[:, :, -1, :length].astype(jnp.int32)
  return observation[:, :, :-1, :], row[:, 0] + 256 * row[:, 1]


class InstructionEncoder(nn.Module):
  """Word ids ``[N, L]`` int32 (0 = padding) -> ``[N, hidden_size]``.

  Embeds each word (``embed_size``) and runs an LSTM over the words in
  order; padding steps leave the LSTM state unchanged, so the output is the
  state after the last real word (zeros for an empty instruction).
  """
  vocab_size: int = 1000
  embed_size: int = 20
  hidden_size: int = 64

  @nn.compact
  def __call__(self, tokens: Array) -> Array:
    chex.assert_rank(tokens, 2)
    n, length = tokens.shape
    x = nn.Embed(self.vocab_size, self.embed_size, name='embed')(tokens)
    cell = nn.OptimizedLSTMCell(self.hidden_size, name='lstm')
    zeros = jnp.zeros((n, self.hidden_size), x.dtype)
    carry = (zeros, zeros)
    for i in range(length):   # L is small (16): written out, no scan
      new, _ = cell(carry, x[:, i])
      keep = (tokens[:, i] > 0)[:, None]
      carry = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b),
                                     new, carry)
    return carry[1]


def _reset_where_first(state: CoreState, first: Array) -> CoreState:
  """Zeros the ``[B, H]`` leaves of ``state`` where ``first [B]`` is True."""
  return jax.tree_util.tree_map(
      lambda s: jnp.where(first[:, None], jnp.zeros_like(s), s), state)


def _core_step(cell: nn.Module, state: CoreState,
               x_t: Array, first_t: Array) -> Tuple[CoreState, Array]:
  """One LSTM step after resetting the episodes that start at ``t``."""
  return cell(_reset_where_first(state, first_t), x_t)


class AgentNetwork(nn.Module):
  """IMPALA actor-critic, shared by actor (``step``) and learner (``unroll``).

  Attributes:
    num_actions: size ``A`` of the discrete action set.
    torso: 'shallow', 'deep', 'mlp' or 'minatar'.
    use_lstm: add the LSTM core (inputs: torso features, one-hot last
      action, last reward clipped to [-1, 1]). Without it the agent is
      feed-forward and ignores last action and reward, as in the paper's
      Atari experiments.
    lstm_size: LSTM hidden size ``H``.
    mlp_sizes: hidden sizes of the 'mlp' torso.
    torso_chunk: if > 0, the torso runs on consecutive slices of at most
      this many observations of the flattened batch (written out in the
      program, not a loop) and their features are concatenated. Same
      result; on a CPU much faster for conv torsos, because XLA's CPU
      convolutions (and their gradients) slow down sharply with large
      batches: the shallow net's gradient on 672 frames runs 2.9x faster in
      slices of 64 (BUILD_NOTES.md). 0 runs one batch (use on GPU/TPU).
    instruction_len: > 0: observations carry this many instruction word ids
      in an extra last row (``split_instruction``); they are encoded by an
      ``InstructionEncoder`` and joined to the torso features.
    vocab_size: word ids are in ``[0, vocab_size)``.
    num_values: outputs of the value head: 1 (``value`` is ``[...]``), or
      one per task of a multi-task run (``value`` is ``[..., K]``; the
      learner reads each trajectory's own task's column). Its parameters are
      ``params['params']['value_head']`` (``kernel [F, K]``, ``bias [K]``),
      which PopArt rescales (``core/popart.py``).

  ``init`` takes ``[T, B]`` inputs (``__call__`` is ``unroll``)::

    net = AgentNetwork(num_actions=6)
    params = net.init(rng, inputs_TB, net.initial_state(B))
    out, state = net.apply(params, inputs_B, state, method=AgentNetwork.step)
  """
  num_actions: int
  torso: str = 'shallow'
  use_lstm: bool = False
  lstm_size: int = 256
  mlp_sizes: Tuple[int, ...] = (64, 64)
  torso_chunk: int = 0
  instruction_len: int = 0
  vocab_size: int = 1000
  num_values: int = 1

  def setup(self):
    if self.torso == 'shallow':
      self.torso_net = ShallowTorso()
    elif self.torso == 'deep':
      self.torso_net = DeepTorso()
    elif self.torso == 'mlp':
      self.torso_net = MLPTorso(tuple(self.mlp_sizes))
    elif self.torso == 'minatar':
      self.torso_net = MinAtarTorso()
    else:
      raise ValueError(
          f'Unknown torso {self.torso!r}; use one of {", ".join(TORSOS)}.')
    if self.instruction_len > 0:
      self.instruction_net = InstructionEncoder(self.vocab_size)
    if self.use_lstm:
      self.core = nn.OptimizedLSTMCell(self.lstm_size)
    self.policy_head = nn.Dense(self.num_actions)
    self.value_head = nn.Dense(self.num_values)

  def initial_state(self, batch_size: int) -> CoreState:
    """``()`` without LSTM, else zero ``(c, h)``, each ``[B, H]`` float32.

    Needs no params: callable on an unbound module.
    """
    return initial_state(self, batch_size)

  def _core_inputs(self, features: Array, inputs: AgentInput) -> Array:
    """``[N, F]`` features -> ``[N, F + A + 1]`` LSTM inputs (leaves ``[N]``)."""
    one_hot = jax.nn.one_hot(inputs.last_action, self.num_actions,
                             dtype=features.dtype)
    reward = jnp.clip(inputs.last_reward.astype(features.dtype), -1., 1.)
    return jnp.concatenate([features, one_hot, reward[..., None]], axis=-1)

  def _torso(self, observation: Array) -> Array:
    """``[N, *obs_shape] -> [N, F]``, in slices of ``torso_chunk``."""
    n, chunk = observation.shape[0], self.torso_chunk
    if chunk <= 0 or n <= chunk:
      return self.torso_net(observation)
    return jnp.concatenate([self.torso_net(observation[i:i + chunk])
                            for i in range(0, n, chunk)], axis=0)

  def _features(self, observation: Array) -> Array:
    """``[N, *obs_shape] -> [N, F]``: torso features, joined by the
    instruction encoding when ``instruction_len > 0``."""
    if self.instruction_len <= 0:
      return self._torso(observation)
    image, tokens = split_instruction(observation, self.instruction_len)
    return jnp.concatenate([self._torso(image),
                            self.instruction_net(tokens)], axis=-1)

  def _heads(self, h: Array) -> AgentOutput:
    """``[N, F] -> AgentOutput(policy_logits [N, A], value [N])`` (value
    ``[N, K]`` when ``num_values = K > 1``)."""
    value = self.value_head(h)
    if self.num_values == 1:
      value = jnp.squeeze(value, axis=-1)
    return AgentOutput(policy_logits=self.policy_head(h), value=value)

  def step(self, inputs: AgentInput,
           state: CoreState) -> Tuple[AgentOutput, CoreState]:
    """One time step (acting).

    Args:
      inputs: leaves ``[B, ...]``: observation ``[B, *obs_shape]``, first,
        last_action, last_reward ``[B]``.
      state: core state before this step (``initial_state(B)`` at start).

    Returns:
      ``AgentOutput`` (policy_logits ``[B, A]``, value ``[B]``) and the new
      core state.
    """
    chex.assert_rank([inputs.first, inputs.last_action, inputs.last_reward],
                     1)
    chex.assert_equal_shape_prefix(list(inputs), 1)
    h = self._features(inputs.observation)
    if self.use_lstm:
      state, h = _core_step(self.core, state, self._core_inputs(h, inputs),
                            inputs.first)
    return self._heads(h), state

  def unroll(self, inputs: AgentInput,
             state: CoreState) -> Tuple[AgentOutput, CoreState]:
    """``T`` time steps (learning); equal to ``T`` calls of ``step``.

    The torso and heads run on the flattened ``[T*B]`` batch (the torso in
    slices of ``torso_chunk``); only the LSTM core is scanned over time.

    Args:
      inputs: leaves ``[T, B, ...]``: observation ``[T, B, *obs_shape]``,
        first, last_action, last_reward ``[T, B]``.
      state: core state before ``t = 0``, leaves ``[B, H]``.

    Returns:
      ``AgentOutput`` (policy_logits ``[T, B, A]``, value ``[T, B]``) and
      the core state after the last step.
    """
    chex.assert_rank([inputs.first, inputs.last_action, inputs.last_reward],
                     2)
    chex.assert_equal_shape_prefix(list(inputs), 2)
    t, b = inputs.first.shape
    flat = jax.tree_util.tree_map(
        lambda x: x.reshape((t * b,) + x.shape[2:]), inputs)
    h = self._features(flat.observation)  # [T*B, F]
    if self.use_lstm:
      core_inputs = self._core_inputs(h, flat)
      core_inputs = core_inputs.reshape((t, b) + core_inputs.shape[1:])
      scan = nn.scan(_core_step, variable_broadcast='params',
                     split_rngs={'params': False}, in_axes=0, out_axes=0)
      state, h = scan(self.core, state, core_inputs, inputs.first)
      h = h.reshape((t * b,) + h.shape[2:])
    out = self._heads(h)
    return jax.tree_util.tree_map(
        lambda x: x.reshape((t, b) + x.shape[1:]), out), state

  def __call__(self, inputs: AgentInput,
               state: CoreState) -> Tuple[AgentOutput, CoreState]:
    """Same as ``unroll``; ``init`` goes through here with ``[T, B]`` inputs."""
    return self.unroll(inputs, state)


def initial_state(network: AgentNetwork, batch_size: int) -> CoreState:
  """Zero core state for ``batch_size`` environments, without params.

  Returns ``()`` for a feed-forward network, else the LSTM carry ``(c, h)``
  with each ``[batch_size, lstm_size]`` float32.
  """
  if not network.use_lstm:
    return ()
  zeros = jnp.zeros((batch_size, network.lstm_size), jnp.float32)
  return (zeros, zeros)


def zero_inputs(leading_shape: Sequence[int], observation_shape: Sequence[int],
                observation_dtype=np.uint8) -> AgentInput:
  """An all-zero ``AgentInput`` with leaves ``[*leading_shape, ...]``.

  For ``init`` (``leading_shape = (T, B)``) and for compiling ``step``
  (``(B,)``) before the first real observation arrives.
  """
  leading_shape = tuple(leading_shape)
  return AgentInput(
      observation=jnp.zeros(leading_shape + tuple(observation_shape),
                            observation_dtype),
      first=jnp.ones(leading_shape, jnp.bool_),
      last_action=jnp.zeros(leading_shape, jnp.int32),
      last_reward=jnp.zeros(leading_shape, jnp.float32))


def num_params(params) -> int:
  """Total number of scalars in a params pytree."""
  return int(sum(math.prod(np.shape(p))
                 for p in jax.tree_util.tree_leaves(params)))
