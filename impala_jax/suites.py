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

from typing import Tuple

from impala_jax import scores
# The suites' presets live with the others (``impala_jax.presets``); the
# names README has always shown stay importable from here.
from impala_jax.presets import atari57_preset  # pylint: disable=unused-import
from impala_jax.presets import dmlab30_preset  # pylint: disable=unused-import
from impala_jax.presets import suite_preset as preset  # pylint: disable=unused-import

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
