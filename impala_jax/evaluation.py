"""Plays whole games with fixed parameters: scores and (optionally) a video.

``evaluate(params, network, env, num_games, greedy, seed)`` steps a
``BatchedEnv`` (envpool semantics, ``impala_jax/envs/base.py``) with the
agent's one-step policy until ``num_games`` whole games have ended
(``StepBatch.game_over``; with Atari's ``episodic_life`` a game spans several
episodes) and returns their raw (unclipped) ``game_return`` and
``game_length``.

* **Unbiased game count.** Stopping at the first ``num_games`` games that
  end would favour short games when several environments run in parallel.
  Instead environment ``i`` plays a fixed quota of games (the quotas sum to
  ``num_games``); an environment that has played its quota keeps being
  stepped (the batched interface steps every environment) but its games are
  not counted.
* **Recurrent state** is carried per environment and reset by the network on
  every reset row (``AgentInput.first``), exactly as the actor does; the
  previous action and reward are fed as in training.
* **Greedy** (``argmax`` of the policy logits) or **sampled** actions.
* **Video**: ``record=True`` keeps one frame per row of environment 0's first
  game. Pixel observations: RGB (``[H, W, 3]``, or DMLab's ``[3, H, W]``)
  as they are; stacked
  grayscale (``[4, 84, 84]``, Atari) as the *newest frame of the stack*
  (what the agent saw last, not the emulator's colour screen); MinAtar's
  channel-first object maps with one colour per channel. Vector
  observations (CartPole) are drawn from the state vector (cart position and
  pole angle); other vector observations as a bar chart. ``write_video``
  writes a GIF (Pillow) or an MP4 (H.264, with the ffmpeg binary that
  imageio-ffmpeg ships).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, List, Optional, Sequence

import jax
import numpy as np

from impala_jax.config import DMLAB_PREFIX, GYMNAX_PREFIX
from impala_jax.core import acting
from impala_jax.core import networks
from impala_jax.envs.base import BatchedEnv


@dataclasses.dataclass
class EvalResult:
  """Whole-game results of an evaluation.

  Attributes:
    returns: raw (unclipped) score of each game, in the order they ended.
    lengths: agent steps of each game (reset rows not counted).
    frames: rendered RGB frames (``uint8 [H, W, 3]``) of environment 0's
      first game when ``record=True``; else empty.
  """
  returns: np.ndarray
  lengths: np.ndarray
  frames: List[np.ndarray] = dataclasses.field(default_factory=list)

  @property
  def mean(self) -> float:
    return float(np.mean(self.returns)) if len(self.returns) else math.nan

  @property
  def median(self) -> float:
    return float(np.median(self.returns)) if len(self.returns) else math.nan

  def summary(self) -> dict:
    r = self.returns
    return {'num_games': int(len(r)), 'mean': self.mean,
            'median': self.median,
            'std': float(np.std(r)) if len(r) else math.nan,
            'min': float(np.min(r)) if len(r) else math.nan,
            'max': float(np.max(r)) if len(r) else math.nan,
            'mean_length': float(np.mean(self.lengths)) if len(r)
                           else math.nan}


def make_eval_step(network: networks.AgentNetwork, greedy: bool):
  """Jitted ``(params, inputs [b], state, key) -> (actions, logits, state)``
  (``acting.make_policy_step``)."""
  return acting.make_policy_step(network, greedy=greedy)


def game_quotas(num_games: int, num_envs: int) -> np.ndarray:
  """Games each environment plays: sums to ``num_games``, as even as can be."""
  if num_games < 1:
    raise ValueError(f'num_games must be >= 1, got {num_games}.')
  base, extra = divmod(num_games, num_envs)
  return np.array([base + (i < extra) for i in range(num_envs)], np.int64)


def evaluate(params: Any, network: networks.AgentNetwork, env: BatchedEnv,
             num_games: int, greedy: bool = False, seed: int = 0, *,
             record: bool = False, max_steps: Optional[int] = None,
             env_id: Optional[str] = None, step_fn=None) -> EvalResult:
  """Plays ``num_games`` whole games on ``env`` (which it resets).

  Args:
    params: the network's parameters (host or device pytree).
    network: the ``AgentNetwork`` the parameters belong to.
    env: a fresh ``BatchedEnv``; ``async_reset`` is called here. With
      ``batch_size < num_envs`` any subset may come back; that is handled.
      The caller closes it.
    num_games: whole games to count (split over the environments).
    greedy: ``argmax`` actions instead of sampling from the policy.
    seed: seeds the action sampling (unused when greedy).
    record: keep rendered frames of environment 0's first game.
    max_steps: safety limit on ``recv()`` calls (default: none); exceeding
      it raises ``RuntimeError`` (a game that never ends).
    env_id: used to pick the renderer for vector observations (default:
      ``env.spec.env_id``).
    step_fn: a prebuilt ``make_eval_step(network, greedy)`` (saves a
      compile when evaluating repeatedly).
  """
  n = env.num_envs
  quota = game_quotas(num_games, n)
  step_fn = step_fn or make_eval_step(network, greedy)
  env_id = env_id or env.spec.env_id
  key = jax.random.PRNGKey(seed)
  core = jax.tree_util.tree_map(np.array, networks.initial_state(network, n))
  prev_terminal = np.ones((n,), bool)
  prev_action = np.zeros((n,), np.int32)
  played = np.zeros((n,), np.int64)
  returns: List[float] = []
  lengths: List[int] = []
  frames: List[np.ndarray] = []
  recording = record
  calls = 0
  env.async_reset()
  while np.any(played < quota):
    if max_steps is not None and calls >= max_steps:
      raise RuntimeError(f'evaluation did not finish {num_games} games in '
                         f'{max_steps} steps ({int(played.sum())} done).')
    calls += 1
    batch = env.recv()
    ids = batch.env_id.astype(np.int64)
    is_first = prev_terminal[ids]
    inputs = acting.agent_input(batch.obs, is_first, prev_action[ids],
                                batch.reward)
    state_in = jax.tree_util.tree_map(lambda s: s[ids], core)
    key, sub = jax.random.split(key)
    actions, _, state_out = jax.device_get(step_fn(params, inputs,
                                                   state_in, sub))
    actions = np.asarray(actions, np.int32)
    for c, new in zip(jax.tree_util.tree_leaves(core),
                      jax.tree_util.tree_leaves(state_out)):
      c[ids] = new
    prev_terminal[ids] = batch.terminated | batch.truncated
    prev_action[ids] = actions

    if recording:
      rows = np.nonzero(ids == 0)[0]
      if len(rows):
        r = rows[0]
        frames.append(render_observation(batch.obs[r], env_id))
        if batch.game_over[r]:
          recording = False
    for r in np.nonzero(batch.game_over)[0]:
      i = ids[r]
      if played[i] < quota[i]:
        returns.append(float(batch.game_return[r]))
        lengths.append(int(batch.game_length[r]))
      played[i] += 1
    env.send(actions, batch.env_id)
  return EvalResult(returns=np.asarray(returns, np.float64),
                    lengths=np.asarray(lengths, np.int64), frames=frames)


# ----------------------------------------------------------- rendering ---
def _upscale(img: np.ndarray, min_size: int = 168) -> np.ndarray:
  h, w = img.shape[:2]
  k = max(1, int(math.ceil(min_size / max(1, min(h, w)))))
  return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


def render_observation(obs: np.ndarray, env_id: str = '') -> np.ndarray:
  """One observation as an RGB ``uint8 [H, W, 3]`` frame (see module doc)."""
  obs = np.asarray(obs)
  if obs.ndim == 3 and obs.shape[0] == 3 and env_id.startswith(DMLAB_PREFIX):
    if obs.shape[1] % 2:                           # the instruction row
      obs = obs[:, :-1]
    img = np.transpose(obs, (1, 2, 0))             # CHW RGB (DMLab)
  elif obs.ndim == 3 and obs.shape[-1] == 3:        # HWC RGB
    img = obs
  elif obs.ndim == 3 and env_id.startswith(GYMNAX_PREFIX):
    img = _colour_channels(obs)                     # MinAtar [C, 10, 10]
  elif obs.ndim == 3:                               # stacked gray (Atari)
    img = np.repeat(obs[-1][..., None], 3, axis=-1)
  elif obs.ndim == 2:
    img = np.repeat(obs[..., None], 3, axis=-1)
  elif (obs.ndim == 1 and env_id.split(':')[-1].startswith('CartPole')
        and obs.size >= 3):
    return _draw_cartpole(obs)
  elif obs.ndim == 1:
    return _draw_bars(obs)
  else:
    raise ValueError(f'cannot render an observation of shape {obs.shape}.')
  if img.dtype != np.uint8:
    lo, hi = float(np.min(img)), float(np.max(img))
    img = ((img - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
  return _upscale(np.ascontiguousarray(img))


def _colour_channels(obs: np.ndarray) -> np.ndarray:
  """Channel-first object maps (MinAtar ``[C, H, W]``, 0/1) as one RGB image:
  channel ``c`` gets its own hue, the last present channel wins a pixel."""
  c = obs.shape[0]
  hues = np.linspace(0.0, 1.0, c, endpoint=False)
  palette = (127.5 * (1 + np.stack([np.cos(2 * np.pi * (hues + k / 3))
                                    for k in range(3)], axis=-1))
             ).astype(np.uint8)                      # [C, 3]
  img = np.zeros(obs.shape[1:] + (3,), np.uint8)
  for i in range(c):
    img[np.asarray(obs[i]) > 0] = palette[i]
  return img


def _draw_cartpole(state: np.ndarray, width: int = 320,
                   height: int = 200) -> np.ndarray:
  """Cart and pole from CartPole's state ``(x, x_dot, theta, theta_dot)``."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  x, theta = float(state[0]), float(state[2])
  img = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(img)
  x_limit = 2.4                       # gym's termination threshold
  scale = width / (2 * x_limit * 1.2)
  track_y = int(height * 0.75)
  draw.line([(0, track_y), (width, track_y)], fill=(0, 0, 0), width=1)
  cx = width / 2 + x * scale
  cart_w, cart_h = 40, 20
  draw.rectangle([cx - cart_w / 2, track_y - cart_h / 2,
                  cx + cart_w / 2, track_y + cart_h / 2], fill=(0, 0, 0))
  pole_len = 1.0 * scale              # gym: pole length 2 * 0.5
  tip = (cx + pole_len * math.sin(theta), track_y - pole_len * math.cos(theta))
  draw.line([(cx, track_y), tip], fill=(202, 152, 101), width=8)
  draw.ellipse([cx - 4, track_y - 4, cx + 4, track_y + 4],
               fill=(129, 132, 203))
  return np.asarray(img, np.uint8)


def _draw_bars(vector: np.ndarray, width: int = 320,
               height: int = 200) -> np.ndarray:
  """A generic vector observation as a bar chart (centred at zero)."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  v = np.asarray(vector, np.float64).ravel()
  img = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(img)
  mid = height / 2
  scale = (height / 2 - 5) / max(float(np.max(np.abs(v))), 1e-6)
  bar = width / max(len(v), 1)
  for i, value in enumerate(v):
    top, bottom = sorted((mid, mid - value * scale))
    draw.rectangle([i * bar + 2, top, (i + 1) * bar - 2, bottom],
                   fill=(70, 110, 200))
  draw.line([(0, mid), (width, mid)], fill=(0, 0, 0))
  return np.asarray(img, np.uint8)


def write_video(frames: Sequence[np.ndarray], path: str,
                fps: float = 30.0) -> str:
  """Writes RGB frames ``[H, W, 3]`` uint8 to ``path``: ``.gif`` (Pillow) or
  ``.mp4`` (H.264 with the ffmpeg binary that imageio-ffmpeg ships; set
  ``IMAGEIO_FFMPEG_EXE`` to use another).

  Returns the path. Raises ``ValueError`` for an unknown suffix, no frames,
  or ``.mp4`` without imageio-ffmpeg.
  """
  if not frames:
    raise ValueError('no frames to write.')
  suffix = os.path.splitext(path)[1].lower()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if suffix == '.gif':
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=max(20, int(round(1000 / fps))), loop=0)
    return path
  if suffix == '.mp4':
    try:
      import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(f'{path}: writing MP4 needs the imageio-ffmpeg package '
                       '(pip install imageio-ffmpeg); use a .gif path '
                       'instead.') from e
    # H.264 in yuv420p needs even sides: pad the last row/column if odd.
    h, w = np.asarray(frames[0]).shape[:2]
    ph, pw = h % 2, w % 2
    writer = imageio_ffmpeg.write_frames(
        path, (w + pw, h + ph), fps=fps, codec='libx264',
        pix_fmt_out='yuv420p', macro_block_size=1, quality=8)
    writer.send(None)  # starts ffmpeg
    try:
      for f in frames:
        f = np.asarray(f, np.uint8)
        if ph or pw:
          f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode='edge')
        writer.send(np.ascontiguousarray(f))
    finally:
      writer.close()
    return path
  raise ValueError(f'{path}: video path must end in .gif or .mp4.')


# ------------------------------------------------- from a run's config ---
def config_from_dict(d: dict):
  """A ``Config`` from a run's ``config.json`` / checkpoint ``meta['config']``
  dict: unknown keys (from a newer or older version) are dropped, lists
  become tuples where the field is a tuple."""
  from impala_jax.config import Config  # pylint: disable=g-import-not-at-top
  defaults = Config()
  kwargs = {}
  for field in dataclasses.fields(Config):
    if field.name in d:
      value = d[field.name]
      if isinstance(getattr(defaults, field.name), tuple) and isinstance(
          value, list):
        value = tuple(value)
      kwargs[field.name] = value
  return Config(**kwargs)


def env_spec(config):
  """The ``EnvSpec`` of a run's environment (``envs.factory.env_spec``)."""
  from impala_jax.envs import factory  # pylint: disable=g-import-not-at-top
  return factory.env_spec(config)


def make_eval_env(config, num_envs: int, seed: int,
                  task: int = 0) -> BatchedEnv:
  """Fresh environments with a run's settings (``envs.factory``): an
  envpool/DMLab pool, or for ``gymnax:`` ids a host-stepped
  ``JaxBatchedEnv``; task ``task`` of a multi-task run."""
  from impala_jax.envs import factory  # pylint: disable=g-import-not-at-top
  return factory.make_host_env(config, num_envs, seed, task=task)


def evaluate_config(config, params, *, num_games: int, greedy: bool = False,
                    seed: int = 0, num_envs: Optional[int] = None,
                    record: bool = False, network=None,
                    step_fn=None, task: int = 0) -> EvalResult:
  """Evaluates ``params`` on fresh environments made from a run's ``config``
  (``make_eval_env``; the hook periodic evaluation in ``train`` calls, for
  both runtimes). ``num_envs`` defaults to ``min(num_games, 8)``;
  environments are seeded from ``seed`` and closed before returning.
  ``step_fn``: a prebuilt ``make_eval_step(network, greedy)``. ``task``:
  which task of a multi-task run (``evaluate_tasks`` plays them all)."""
  from impala_jax.core import learner as learner_lib  # pylint: disable=g-import-not-at-top
  if network is None:
    network = learner_lib.make_network(config, env_spec(config).num_actions)
  n = num_envs or min(num_games, 8)
  env = make_eval_env(config, n, seed, task=task)
  try:
    return evaluate(params, network, env, num_games, greedy=greedy,
                    seed=seed, record=record, step_fn=step_fn)
  finally:
    env.close()


def evaluate_tasks(config, params, **kwargs) -> dict:
  """``{task name: EvalResult}``: ``evaluate_config`` on every task of a
  run (one entry for a single-task run), ``num_games`` games each."""
  from impala_jax.config import task_names  # pylint: disable=g-import-not-at-top
  return {name: evaluate_config(config, params, task=k, **kwargs)
          for k, name in enumerate(task_names(config))}


class PeriodicEvaluator:
  """Evaluation during training (both layouts): ``config.eval_games`` whole
  games on fresh environments with the current params, actions sampled.
  Built once per run, so its acting step compiles once."""

  def __init__(self, config, network: networks.AgentNetwork):
    self.config = config
    self.network = network
    self.step_fn = make_eval_step(network, greedy=False)

  def row(self, learner, updates: int) -> dict:
    """A ``metrics.csv`` row; ``learner``: anything with ``params()`` and
    ``frames`` (the envpool runtime's ``Learner``, the Anakin
    ``AnakinRunner``)."""
    results = evaluate_tasks(
        self.config, learner.params(), num_games=self.config.eval_games,
        seed=self.config.seed + 7919 * updates, network=self.network,
        step_fn=self.step_fn)
    row = {'frames': learner.frames, 'updates': updates}
    if len(results) == 1:
      (result,) = results.values()
      row.update(eval_return_mean=result.mean,
                 eval_return_median=result.median)
    else:   # one pair of columns per task
      for name, result in results.items():
        row[f'eval_return_mean/{name}'] = result.mean
        row[f'eval_return_median/{name}'] = result.median
    return row
