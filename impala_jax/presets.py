"""The presets: named starting ``Config`` values, and the paper's suites.

``get_preset(name, env)`` is what ``--preset`` resolves through: a name from
``PRESETS`` (each a plain function returning a ``Config``), with the
preset's per-environment settings (``PRESET_ENV_OVERRIDES``) for ``env``;
or ``<suite>:<game>``: ``atari57:<game>`` / ``dmlab30:<level>`` with the
paper's hyperparameters, ``atari57_machado:<game>`` the same under the
Machado et al. (2018) protocol. ``AUTO_PRESETS`` is what
``--preset=auto`` picks by backend.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from impala_jax import scores
from impala_jax.config import DMLAB_PREFIX, Config, with_atari_protocol


def paper_atari() -> Config:
  """The paper's Atari settings: deep ResNet, unroll 20, batch 32, RMSProp
  lr 6e-4 decayed to 0 over 200M frames, entropy 0.01, reward clip [-1, 1].
  Sized for a GPU."""
  return Config(env='Pong-v5', torso='deep', unroll_length=20, batch_size=32,
                num_envs=64, env_batch_size=32, num_actors=2,
                total_frames=200_000_000)


def cpu_atari() -> Config:
  """What ``make train`` runs on a CPU-only machine: Breakout-v5 from
  pixels with the paper's protocol, the shallow net, batch 16 x T=20, 32
  environments, RMSProp lr 2e-3 decayed linearly to 0 over 4M frames
  (about 15 minutes on 2 cores). Of the candidates measured here (issue
  14, BUILD_NOTES.md) it gave the clearest rise: the whole-game return
  goes from ~1.3 (random play) to ~7 (lr 6e-4 reached only ~1.9 in 3M
  frames; Boxing stayed near 1). A lost life ends the training episode
  (``episodic_life``, as envpool's and Cleanba's Atari agents do; without
  it the policy was still uniform after 0.9M frames); the reported return
  is the whole-game score."""
  return Config(env='Breakout-v5', torso='shallow', unroll_length=20,
                batch_size=16, num_envs=32, env_batch_size=16, num_actors=1,
                total_frames=4_000_000, learning_rate=2e-3,
                episodic_life=True)


def cpu_pong() -> Config:
  """Pong-v5 from pixels on a 2-core CPU with the paper's protocol (no
  sticky actions, 30 no-op starts, the minimal action set, rewards clipped
  to [-1, 1] for learning, whole games): ``cpu_atari``'s shallow net and
  batch 16 x T=20, lr 2e-3 decayed linearly to 0 over 20M frames. Issue
  14's target: a mean whole-game return of 18 within 20M frames (not met:
  -3.8, BUILD_NOTES.md has the curve)."""
  return dataclasses.replace(cpu_atari(), env='Pong-v5',
                             total_frames=20_000_000, learning_rate=2e-3,
                             episodic_life=False)


def cartpole() -> Config:
  """CartPole-v1 with an MLP: learns in well under a minute on a CPU."""
  return Config(env='CartPole-v1', torso='mlp', mlp_sizes=(64, 64),
                unroll_length=20, batch_size=16, num_envs=16,
                env_batch_size=16, num_actors=1, total_frames=200_000,
                learning_rate=3e-3, entropy_cost=0.01, discount=0.99,
                reward_clipping='none', rmsprop_epsilon=0.01,
                max_episode_steps=500, noop_max=0)


def cartpole_anakin() -> Config:
  """gymnax CartPole-v1 in the Anakin layout (acting and learning in one
  compiled program): 16 environments x T=20 (the envpool ``cartpole``
  preset's batch, so as many updates per frame), an MLP, 499,200 frames
  (78 calls of 20 updates, inside 500K); reaches a mean return of 400 or
  more for every seed measured (0-10, BUILD_NOTES.md) in seconds on a
  2-core CPU (tests/test_anakin.py)."""
  return Config(env='gymnax:CartPole-v1', runtime='anakin', torso='mlp',
                mlp_sizes=(64, 64), unroll_length=20, batch_size=16,
                updates_per_call=20, total_frames=499_200,
                learning_rate=3e-3, entropy_cost=0.01, discount=0.99,
                reward_clipping='none', max_episode_steps=500, noop_max=0,
                log_every_seconds=5.0)


def minatar() -> Config:
  """MinAtar (gymnax) in the Anakin layout, tuned on this 2-core CPU against
  published baselines (issue 13; every probe in BUILD_NOTES.md): the MinAtar
  paper's network (conv 16 3x3 + Dense 128, ``torso='minatar'``), 32
  environments x T=20 (15.6K updates in 10M steps), RMSProp lr 6e-3
  decayed to 0 (with epsilon 0.01 inside the square root, small gradients
  get a nearly plain-SGD step, so the paper's Atari 6e-4 barely moves
  here), entropy 0.01, raw rewards (MinAtar's are already small integers),
  gymnax's own time limits, 10M steps. ``MINATAR_GAME_OVERRIDES`` holds
  the per-game settings; Breakout-MinAtar (the default game) runs an MLP
  64-64 at B=16 with entropy 0.1 (the conv net does not fit its wall-time
  budget on this CPU; lower entropy costs let some seeds collapse into a
  ~20-point local optimum)."""
  return Config(env='gymnax:Breakout-MinAtar', runtime='anakin',
                torso='minatar', unroll_length=20, batch_size=32,
                updates_per_call=10, total_frames=10_000_000,
                learning_rate=6e-3, entropy_cost=0.01, discount=0.99,
                reward_clipping='none', max_episode_steps=0, noop_max=0,
                log_every_seconds=1.0)


# Per-game settings of the ``minatar`` preset (``--env=gymnax:<game>``).
MINATAR_GAME_OVERRIDES: dict[str, dict] = {
    'gymnax:Breakout-MinAtar': dict(torso='mlp', mlp_sizes=(64, 64),
                                    batch_size=16, entropy_cost=0.1),
    'gymnax:SpaceInvaders-MinAtar': dict(entropy_cost=0.02),
}


MINATAR_GAMES = ('Breakout-MinAtar', 'SpaceInvaders-MinAtar',
                 'Asterix-MinAtar', 'Freeway-MinAtar')


def minatar_multitask() -> Config:
  """One agent on the four MinAtar games at once (Anakin layout): each game
  keeps its own vmapped batch of 32 environments inside the one compiled
  program (B = 128, so each game gets as many updates as the single-task
  ``minatar`` preset's B=32 in the same steps per game), observations
  zero-padded to MinAtar's largest, 7 channels, MinAtar's full action set of
  6 for every game, the ``minatar`` preset's conv net, RMSProp lr 6e-3
  decayed to 0, entropy 0.01, raw rewards, 10M steps per game (40M in
  all). A value output per game; ``--popart`` normalises them (Hessel et
  al. 2019)."""
  return dataclasses.replace(
      minatar(), env=','.join('gymnax:' + g for g in MINATAR_GAMES),
      full_action_space=True, batch_size=128, total_frames=40_000_000)


PRESETS: dict[str, Callable[[], Config]] = {
    'paper_atari': paper_atari,
    'cpu_atari': cpu_atari,
    'cpu_pong': cpu_pong,
    'cartpole': cartpole,
    'cartpole_anakin': cartpole_anakin,
    'minatar': minatar,
    'minatar_multitask': minatar_multitask,
}


# ``experiments.train --preset=auto`` (the default, what ``make train``
# runs): the recipe sized for the machine JAX finds.
AUTO_PRESETS = {'cpu': 'cpu_atari', 'accelerator': 'paper_atari'}


def auto_preset(backend: str, device_count: int = 1, device_kind: str = ''
                ) -> tuple[str, str]:
  """``(preset, why)`` for ``--preset=auto`` on a JAX ``backend``
  (``'cpu'``, ``'gpu'``, ``'tpu'``, ...): ``AUTO_PRESETS``, and the reason
  the first output line gives."""
  if backend == 'cpu':
    return AUTO_PRESETS['cpu'], 'no GPU or TPU found: the CPU recipe'
  return AUTO_PRESETS['accelerator'], (
      f'found {device_count} {backend} device(s) ({device_kind or backend}): '
      f'the {backend.upper()} recipe')


# Per-environment settings inside a preset: ``--preset=P --env=E`` starts
# from ``PRESETS[P]()`` with ``env=E`` and ``PRESET_ENV_OVERRIDES[P][E]``
# applied (explicit flags still override both).
PRESET_ENV_OVERRIDES: dict[str, dict[str, dict]] = {
    'minatar': MINATAR_GAME_OVERRIDES,
}


def get_preset(name: str, env: Optional[str] = None) -> Config:
  """A preset by name: one of ``PRESETS``, or ``<suite>:<game>`` for a
  suite game with the paper's settings (``atari57:Breakout-v5``,
  ``dmlab30:rooms_watermaze``; see ``impala_jax.suites``), or
  ``atari57_machado:<game>``: the same with the Machado et al. (2018)
  protocol (``ATARI_PROTOCOLS['machado']``).

  ``env``: the environment the preset will run (``--env``); the preset's
  per-environment settings (``PRESET_ENV_OVERRIDES``) for it are applied.
  """
  if ':' in name:
    suite, game = name.split(':', 1)
    if suite == 'atari57_machado':
      return with_atari_protocol(suite_preset('atari57', game), 'machado')
    if suite not in ('atari57', 'dmlab30'):
      raise ValueError(f'unknown suite {suite!r} in --preset={name}; use '
                       'atari57:<game>, atari57_machado:<game> or '
                       'dmlab30:<level>.')
    return suite_preset(suite, game)
  if name not in PRESETS:
    raise ValueError(f'unknown preset {name!r}; choose one of '
                     f'{", ".join(sorted(PRESETS))}, or atari57:<game> / '
                     'atari57_machado:<game> / dmlab30:<level>.')
  config = PRESETS[name]()
  env = env or config.env
  overrides = PRESET_ENV_OVERRIDES.get(name, {}).get(env, {})
  return dataclasses.replace(config, env=env, **overrides)


# ------------------------------------------------- the paper's suites ---
def atari57_preset(game: str, torso: str = 'deep') -> Config:
  """The paper's Atari settings (``config.paper_atari``: unroll 20, batch
  32, RMSProp lr 6e-4 decayed over 200M frames, entropy 0.01, rewards
  clipped to [-1, 1], 30 no-op starts) on ``game``; ``torso='shallow'`` for
  the paper's shallow network."""
  suite, key = scores.canonical_game(game)
  if suite != 'atari57':
    raise ValueError(f'{game!r} is not an Atari-57 game; see '
                     'impala_jax.suites.games("atari57").')
  if torso not in ('deep', 'shallow'):
    raise ValueError(f'torso must be deep or shallow, got {torso!r}.')
  return dataclasses.replace(paper_atari(), env=key, torso=torso)


def dmlab30_preset(level: str) -> Config:
  """DMLab settings of the paper's public agent (scalable_agent
  ``experiment.py``'s defaults, except the reward clipping: its
  non-default ``--reward_clipping=soft_asymmetric``, the paper's
  optimistic asymmetric clipping): deep ResNet + LSTM(256), unroll 100,
  RMSProp lr 4.8e-4, epsilon 0.1, decay 0.99, entropy 2.5e-4, baseline
  0.5, discount 0.99, the released code's optimistic asymmetric reward
  clipping (``soft_asymmetric``: ``5 tanh(r/5)``, ``1.5 tanh(r/5)`` below
  0; ``learner.clip_rewards`` also has the paper's printed formula and
  ``abs_one``), 1e9 frames, batch 32 as on
  Atari. DMLab has no no-op starts and keeps each level's own time limit.
  The ``language_*`` levels also encode the level's instruction (first 16
  words, ``instruction_len=16``, scalable_agent's maximum). Needs the
  DeepMind Lab backend."""
  suite, key = scores.canonical_game(level)
  if suite != 'dmlab30':
    raise ValueError(f'{level!r} is not a DMLab-30 level; see '
                     'impala_jax.suites.games("dmlab30").')
  return dataclasses.replace(
      paper_atari(), env=DMLAB_PREFIX + key, torso='deep',
      use_lstm=True, lstm_size=256, unroll_length=100, batch_size=32,
      learning_rate=4.8e-4, rmsprop_epsilon=0.1, rmsprop_decay=0.99,
      rmsprop_momentum=0.0, entropy_cost=2.5e-4, baseline_cost=0.5,
      discount=0.99, reward_clipping='soft_asymmetric',
      total_frames=1_000_000_000,
      noop_max=0, max_episode_steps=0,
      instruction_len=16 if key.startswith('language_') else 0)


def atari57_multitask() -> Config:
  """One agent on all 57 Atari games at once, as the paper's multi-task
  Atari-57 agent (Espeholt et al. 2018, section 5.3; Hessel et al. 2019
  keep these settings and add PopArt, ``--popart``): the paper's Atari
  settings (deep ResNet, unroll 20, batch 32, RMSProp lr 6e-4 decayed to
  0, entropy 0.01, rewards clipped to [-1, 1], 30 no-op starts) with the
  full action set of 18 for every game (one policy head), one value output
  per game, 200M frames per game (11.4B in all), one actor thread per game
  (``num_actors`` a multiple of 57 spreads the actors evenly). Each update
  joins 32 single-environment unrolls from whichever actors produced them.
  Sized for a large GPU machine."""
  return dataclasses.replace(
      paper_atari(), env=','.join(scores.games('atari57')),
      full_action_space=True, num_actors=57, num_envs=8, env_batch_size=4,
      total_frames=57 * 200_000_000)


def dmlab30_multitask() -> Config:
  """One agent on the 30 DMLab-30 levels at once, as the paper's DMLab-30
  agent: the ``dmlab30:`` preset's settings (scalable_agent
  ``experiment.py``, the released code behind the published runs, whose
  ``--level_name=dmlab30`` also assigns actor ``i`` to level ``i mod
  30``), the instruction encoder on for every level (so every level has
  the same ``[3, 73, 96]`` observations; levels without an instruction
  give an empty one), one value output per level, 10B frames in all (the
  paper's DMLab-30 budget), one actor thread per level. The paper's 49.4%
  also used population-based training, which this preset does not do.
  Needs DeepMind Lab."""
  levels = scores.games('dmlab30')
  return dataclasses.replace(
      dmlab30_preset(levels[0]),
      env=','.join(DMLAB_PREFIX + level for level in levels),
      instruction_len=16, num_actors=30, num_envs=4, env_batch_size=4,
      total_frames=10_000_000_000)


SUITE_PRESETS: dict[str, Callable[[], Config]] = {
    'atari57_multitask': atari57_multitask,
    'dmlab30_multitask': dmlab30_multitask,
}
PRESETS.update(SUITE_PRESETS)


def suite_preset(suite: str, game: str) -> Config:
  """The suite's preset for one of its games."""
  if suite == 'atari57':
    return atari57_preset(game)
  if suite == 'dmlab30':
    return dmlab30_preset(game)
  raise ValueError(f'unknown suite {suite!r}; choose one of '
                   f'{", ".join(scores.SUITES)}.')
