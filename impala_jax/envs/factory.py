"""The one place that turns a ``Config`` into environments.

Every path that needs a run's environment comes here: the envpool (Sebulba)
runtime for its actor pools, the Anakin layout for its JAX environment,
evaluation for fresh games, the benchmarks. Which backend serves an id is
decided here and only here:

* ``gymnax:<id>``: a JAX environment (``jax_envs``); on the host for
  evaluation through ``JaxBatchedEnv``;
* ``dmlab:<level>``: DeepMind Lab worker processes (``dmlab``);
* anything else: envpool (``envpool_env``), with the Atari protocol's
  settings for Atari ids.
"""

from __future__ import annotations

import functools
from typing import Any, Dict

from impala_jax.config import DMLAB_PREFIX, Config
from impala_jax.envs.base import BatchedEnv, EnvSpec
from impala_jax.envs.envpool_env import AtariOptions, env_family
from impala_jax.envs.registry import describe_env, make_env


def is_jax_env(config: Config) -> bool:
  """True for ``gymnax:`` ids (JAX environments: the Anakin layout)."""
  from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
  return jax_envs.is_jax_env_id(config.env)


def env_options(config: Config) -> Dict[str, Any]:
  """Keyword arguments for ``make_env`` / ``describe_env`` from the config:
  the Atari protocol's settings (``AtariOptions``) for Atari ids, the time
  limit, instruction length and dataset path for DMLab levels, nothing
  otherwise."""
  if env_family(config.env) == 'atari':
    return {'atari': AtariOptions(
        noop_max=config.noop_max,
        repeat_action_probability=config.sticky_action_prob,
        full_action_space=config.full_action_space,
        use_fire_reset=config.use_fire_reset,
        episodic_life=config.episodic_life,
        max_episode_steps=config.max_episode_steps)}
  if config.env.startswith(DMLAB_PREFIX):
    options = {'max_episode_steps': max(0, config.max_episode_steps),
               'instruction_len': config.instruction_len}
    if config.dmlab_dataset_path:
      options['config'] = {'datasetPath': config.dmlab_dataset_path}
    return options
  return {}


def env_spec(config: Config) -> EnvSpec:
  """The ``EnvSpec`` of a run's environment, cheaply (envpool builds its
  spec only; a gymnax environment is built, which costs nothing). Raises
  ``ValueError`` (one line) for an unusable id or settings."""
  if is_jax_env(config):
    return jax_env(config).spec
  return describe_env(config.env, **env_options(config))


def make_pool(config: Config, *, num_envs: int, batch_size: int, seed: int,
              num_threads: int = 0) -> BatchedEnv:
  """An envpool or DMLab pool of ``num_envs`` environments with the run's
  settings, stepped ``batch_size`` at a time (the Sebulba actors)."""
  return make_env(config.env, num_envs=num_envs, batch_size=batch_size,
                  seed=seed, num_threads=num_threads, **env_options(config))


def jax_env(config: Config):
  """The run's JAX environment (``max_episode_steps <= 0``: the
  environment's own limit). Cached: the same id and limit give the same
  object, so a resumed run in the same process reuses its compiled
  program."""
  return _jax_env(config.env, config.max_episode_steps)


@functools.lru_cache(maxsize=32)
def _jax_env(env_id: str, max_episode_steps: int):
  from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
  return jax_envs.make_jax_env(env_id, max_episode_steps=max_episode_steps)


def make_host_env(config: Config, num_envs: int, seed: int) -> BatchedEnv:
  """Fresh synchronous environments with the run's settings, stepped from
  the host (evaluation): a pool for envpool/DMLab ids, a
  ``JaxBatchedEnv`` for ``gymnax:`` ids."""
  if is_jax_env(config):
    from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
    return jax_envs.JaxBatchedEnv(jax_env(config), num_envs, seed=seed)
  return make_pool(config, num_envs=num_envs, batch_size=num_envs, seed=seed)
