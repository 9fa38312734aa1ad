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

from impala_jax.config import (DMLAB_PREFIX, Config, num_tasks, task_config,
                               task_reward_scale, tasks)
from impala_jax.envs.base import (BatchedEnv, EnvSpec, ScaledRewardEnv,
                                  joint_spec)
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
  if num_tasks(config) == 1:
    return describe_env(config.env, **env_options(config))
  return joint_spec([env_spec(task_config(config, k))
                     for k in range(num_tasks(config))], config.env)


def make_pool(config: Config, *, num_envs: int, batch_size: int, seed: int,
              num_threads: int = 0) -> BatchedEnv:
  """An envpool or DMLab pool of ``num_envs`` environments with the run's
  settings, stepped ``batch_size`` at a time (the Sebulba actors). A
  multi-task config must be narrowed to one task first: ``make_task_pool``
  does that and applies the task's ``task_reward_scales`` factor."""
  if num_tasks(config) > 1:
    raise ValueError('make_pool builds one task\'s pool; pass '
                     'config.task_config(config, k).')
  return make_env(config.env, num_envs=num_envs, batch_size=batch_size,
                  seed=seed, num_threads=num_threads, **env_options(config))


def make_task_pool(config: Config, task: int, *, num_envs: int,
                   batch_size: int, seed: int,
                   num_threads: int = 0) -> BatchedEnv:
  """The pool of task ``task`` of a (multi-task) run: ``make_pool`` of its
  ``task_config``, rewards scaled by its ``task_reward_scales`` entry."""
  env = make_pool(task_config(config, task), num_envs=num_envs,
                  batch_size=batch_size, seed=seed, num_threads=num_threads)
  scale = task_reward_scale(config, task)
  return env if scale == 1.0 else ScaledRewardEnv(env, scale)


def jax_env(config: Config):
  """The run's JAX environment (``max_episode_steps <= 0``: the
  environment's own limit); for several tasks a ``MultiTaskJaxEnv`` of
  their ``task_jax_env``s. Cached: the same settings give the same object,
  so a resumed run in the same process reuses its compiled program."""
  if num_tasks(config) == 1:
    return task_jax_env(config, 0)
  return _multi_task_env(tuple(task_jax_env(config, k)
                               for k in range(num_tasks(config))))


def task_jax_env(config: Config, task: int):
  """Task ``task`` of a (multi-task) JAX run as its agent sees it:
  observations padded to the tasks' common shape, rewards scaled by its
  ``task_reward_scales`` entry (``jax_envs.TaskEnv``; the gymnax env itself
  where neither applies). Training and evaluation both build their
  environments here."""
  from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
  inners = [_jax_env(t, config.max_episode_steps, config.full_action_space)
            for t in tasks(config)]
  shape = jax_envs.common_obs_shape([e.spec for e in inners])
  inner, scale = inners[task], task_reward_scale(config, task)
  if scale == 1.0 and tuple(inner.spec.obs_shape) == shape:
    return inner
  return _task_env(inner, shape, scale)


@functools.lru_cache(maxsize=32)
def _jax_env(env_id: str, max_episode_steps: int, full_action_space: bool):
  from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if full_action_space and env_id.endswith('-MinAtar'):
    kwargs['env_kwargs'] = {'use_minimal_action_set': False}
  return jax_envs.make_jax_env(env_id, max_episode_steps=max_episode_steps,
                               **kwargs)


@functools.lru_cache(maxsize=32)
def _task_env(inner, obs_shape, reward_scale: float):
  from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
  return jax_envs.TaskEnv(inner, obs_shape, reward_scale)


@functools.lru_cache(maxsize=16)
def _multi_task_env(envs):
  from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
  return jax_envs.MultiTaskJaxEnv(envs)


def make_host_env(config: Config, num_envs: int, seed: int,
                  task: int = 0) -> BatchedEnv:
  """Fresh synchronous environments with the run's settings, stepped from
  the host (evaluation): a pool for envpool/DMLab ids, a
  ``JaxBatchedEnv`` for ``gymnax:`` ids. For a multi-task run, task
  ``task`` exactly as its agent trained on it (padding, reward scale)."""
  if is_jax_env(config):
    from impala_jax.envs import jax_envs  # pylint: disable=g-import-not-at-top
    return jax_envs.JaxBatchedEnv(task_jax_env(config, task), num_envs,
                                  seed=seed)
  return make_task_pool(config, task, num_envs=num_envs, batch_size=num_envs,
                        seed=seed)
