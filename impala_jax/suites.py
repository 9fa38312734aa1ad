"""The paper's suites: Atari-57 and DMLab-30 game lists and their presets.

``games('atari57')`` lists the 57 envpool ids (``'Alien-v5'`` ...),
``games('dmlab30')`` the 30 DMLab-30 training levels, both read from the
reference-score tables in ``impala_jax/data`` (so a suite and its scores
never disagree). ``preset(suite, game)`` returns the paper's
hyperparameters for one game as an ``impala_jax.config.Config``.

DMLab levels are addressed as ``'dmlab:<level>'`` (the prefix that
``impala_jax.envs.registry`` reserves for the DeepMind Lab backend).
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from impala_jax import config as config_lib
from impala_jax import scores

SUITES = scores.SUITES
DMLAB_PREFIX = scores.DMLAB_PREFIX


def games(suite: str) -> Tuple[str, ...]:
  """Atari-57: envpool ids; DMLab-30: level names (no prefix)."""
  return scores.games(suite)


def env_ids(suite: str) -> Tuple[str, ...]:
  """The environment ids a run takes as ``--env``: envpool ids for
  Atari-57, ``dmlab:<level>`` for DMLab-30."""
  if suite == 'dmlab30':
    return tuple(DMLAB_PREFIX + level for level in games(suite))
  return games(suite)


def atari57_preset(game: str, torso: str = 'deep') -> config_lib.Config:
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
  return dataclasses.replace(config_lib.paper_atari(), env=key, torso=torso)


def dmlab30_preset(level: str) -> config_lib.Config:
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
      config_lib.paper_atari(), env=DMLAB_PREFIX + key, torso='deep',
      use_lstm=True, lstm_size=256, unroll_length=100, batch_size=32,
      learning_rate=4.8e-4, rmsprop_epsilon=0.1, rmsprop_decay=0.99,
      rmsprop_momentum=0.0, entropy_cost=2.5e-4, baseline_cost=0.5,
      discount=0.99, reward_clipping='soft_asymmetric',
      total_frames=1_000_000_000,
      noop_max=0, max_episode_steps=0,
      instruction_len=16 if key.startswith('language_') else 0)


def preset(suite: str, game: str) -> config_lib.Config:
  """The suite's preset for one of its games."""
  if suite == 'atari57':
    return atari57_preset(game)
  if suite == 'dmlab30':
    return dmlab30_preset(game)
  raise ValueError(f'unknown suite {suite!r}; choose one of '
                   f'{", ".join(SUITES)}.')
