"""Environment ids: validation, cheap specs, construction."""

from __future__ import annotations

import difflib
from typing import Any, Optional

from impala_jax.config import DMLAB_PREFIX, GYMNAX_PREFIX
from impala_jax.envs.base import BatchedEnv, EnvSpec
from impala_jax.envs.envpool_env import (AtariOptions, EnvpoolEnv,
                                         make_envpool_spec, resolve_kwargs,
                                         spec_from_envpool)

# Prefixes reserved for backends other than envpool.
RESERVED_PREFIXES = (GYMNAX_PREFIX, DMLAB_PREFIX)


def _all_envpool_ids() -> list[str]:
  import envpool  # pylint: disable=g-import-not-at-top
  return list(envpool.list_all_envs())


def close_matches(env_id: str, n: int = 5) -> list[str]:
  """The valid envpool ids closest to ``env_id`` (case-insensitive)."""
  ids = _all_envpool_ids()
  by_lower: dict[str, str] = {}
  for i in ids:
    by_lower.setdefault(i.lower(), i)
  hits = difflib.get_close_matches(env_id.lower(), list(by_lower), n=n,
                                   cutoff=0.6)
  return [by_lower[h] for h in hits]


def validate_env_id(env_id: str) -> str:
  """Checks ``env_id`` without creating anything; returns it unchanged.

  ``gymnax:`` ids (JAX environments, the Anakin runtime) are checked
  against ``jax_envs.GYMNAX_IDS``.

  Raises:
    ValueError: (one line) for an id envpool (or gymnax) does not know,
      naming the closest valid ids, or a ``dmlab:`` id when
      ``deepmind_lab`` is not installed (saying how to build it).
  """
  if not isinstance(env_id, str) or not env_id:
    raise ValueError(f'env id must be a non-empty string, got {env_id!r}.')
  if env_id.startswith(GYMNAX_PREFIX):
    # JAX environments (the Anakin runtime): checked against their own list.
    from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
    return jax_envs.validate_gymnax_id(env_id)
  if env_id.startswith(DMLAB_PREFIX):
    # DeepMind Lab (impala_jax/envs/dmlab.py): a known level and an
    # installed deepmind_lab module, or a message saying how to build it.
    from impala_jax.envs import dmlab  # pylint: disable=g-import-not-at-top
    dmlab.level_name(env_id)
    dmlab.check_installed()
    return env_id
  if env_id in set(_all_envpool_ids()):
    return env_id
  matches = close_matches(env_id)
  if matches:
    hint = 'did you mean ' + ', '.join(matches) + '?'
  else:
    hint = ('see envpool.list_all_envs(), e.g. Pong-v5, Breakout-v5, '
            'CartPole-v1.')
  raise ValueError(f'unknown environment id {env_id!r}; {hint}')


def _not_envpool(env_id: str) -> None:
  if env_id.startswith(GYMNAX_PREFIX):
    raise ValueError(
        f'{env_id!r}: the \'gymnax\' backend is not available in the envpool '
        '(Sebulba) runtime; JAX environments run with --runtime=anakin '
        '(impala_jax.anakin, impala_jax.envs.jax_envs).')


def describe_env(env_id: str, *, atari: Optional[AtariOptions] = None,
                 **kwargs: Any) -> EnvSpec:
  """The ``EnvSpec`` that ``make_env`` with the same arguments would have.

  Cheap: builds envpool's spec only (no environments; for Atari it loads the
  ROM once to count actions, ~0.2 s). Raises ``ValueError`` for unknown ids,
  bad arguments, continuous actions or non-array observations.
  """
  validate_env_id(env_id)
  _not_envpool(env_id)
  if env_id.startswith(DMLAB_PREFIX):
    from impala_jax.envs import dmlab  # pylint: disable=g-import-not-at-top
    return dmlab.describe_dmlab(env_id, kwargs.get('max_episode_steps', 0),
                                kwargs.get('instruction_len', 0))
  _, make_kwargs = resolve_kwargs(env_id, atari, kwargs)
  return spec_from_envpool(env_id, make_envpool_spec(env_id, make_kwargs))


def make_env(env_id: str, *, num_envs: int, batch_size: Optional[int] = None,
             seed: int = 0, num_threads: int = 0,
             atari: Optional[AtariOptions] = None,
             **kwargs: Any) -> BatchedEnv:
  """Creates ``num_envs`` environments stepped ``batch_size`` at a time.

  Args:
    env_id: an envpool id (``Pong-v5``, ``CartPole-v1``, ...); validated
      first, nothing is created for a bad one.
    num_envs: environments in the pool.
    batch_size: environments per ``recv()``; ``None`` = ``num_envs``
      (synchronous). Smaller values give envpool's async mode.
    seed: base seed (envpool seeds env ``i`` from it).
    num_threads: envpool worker threads; 0 = envpool's default.
    atari: Atari preprocessing (default ``AtariOptions()``, the paper's);
      only for Atari ids.
    **kwargs: further envpool arguments; for Atari, names of
      ``AtariOptions`` fields override ``atari``.
  """
  validate_env_id(env_id)
  _not_envpool(env_id)
  if env_id.startswith(DMLAB_PREFIX):
    from impala_jax.envs import dmlab  # pylint: disable=g-import-not-at-top
    return dmlab.make_dmlab_env(env_id, num_envs=num_envs,
                                batch_size=batch_size, seed=seed,
                                num_threads=num_threads, **kwargs)
  return EnvpoolEnv(env_id, num_envs=num_envs, batch_size=batch_size,
                    seed=seed, num_threads=num_threads, atari=atari, **kwargs)
