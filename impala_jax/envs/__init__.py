"""Batched environments with envpool's semantics (see ``base``).

``make_env`` / ``describe_env`` / ``validate_env_id`` import envpool lazily,
so ``ScriptedEnv`` and the interface types cost nothing to import.
"""

from impala_jax.envs.base import BatchedEnv, EnvSpec, StepBatch
from impala_jax.envs.envpool_env import AtariOptions, EnvpoolEnv, env_family
from impala_jax.envs.registry import (RESERVED_PREFIXES, close_matches,
                                      describe_env, make_env, validate_env_id)
from impala_jax.envs.scripted import ScriptedEnv

__all__ = [
    'AtariOptions',
    'BatchedEnv',
    'EnvSpec',
    'EnvpoolEnv',
    'RESERVED_PREFIXES',
    'ScriptedEnv',
    'StepBatch',
    'close_matches',
    'describe_env',
    'env_family',
    'make_env',
    'validate_env_id',
]
