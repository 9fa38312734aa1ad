"""Multi-process set-up (outer shell): JAX's own multi-controller runtime.

Every process runs the same program; ``jax.distributed.initialize`` connects
them through a coordinator (process 0's address), after which
``jax.devices()`` lists every process's devices and the learner's ``pmap``
spans them all. It must run before anything touches a device, or JAX
silently sees only local devices (jax#12258): ``experiments/train.py``
calls ``initialize`` first thing.

On CPU the cross-process collectives use gloo
(``jax_cpu_collectives_implementation=gloo``); GPUs use NCCL and TPUs their
interconnect, chosen by JAX.

Failure detection: the coordination service expects a heartbeat from every
process; when one stops (killed, crashed, machine gone) for
``heartbeat_timeout_seconds``, the service reports it and the surviving
processes exit with an error instead of waiting forever in a collective.
A collective that loses its peer (gloo's connection closes) can also fail
sooner, raising in the learner; either way the exit code is non-zero.
"""

from __future__ import annotations

import os
from typing import Optional

import jax

def wants_distributed(coordinator_address: Optional[str],
                      num_processes: Optional[int]) -> bool:
  """True when flags or the environment ask for a multi-process run."""
  if coordinator_address or (num_processes or 1) > 1:
    return True
  return bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))


def check_args(num_processes: Optional[int], process_id: Optional[int],
               heartbeat_timeout_seconds: int) -> None:
  """Raises ``ValueError`` (one line) for out-of-range multi-host flags;
  the training program calls it for every run, multi-host or not."""
  if num_processes is not None and num_processes < 1:
    raise ValueError(f'--num_processes must be >= 1, got {num_processes}.')
  if process_id is not None and (process_id < 0 or (
      num_processes is not None and process_id >= num_processes)):
    raise ValueError(f'--process_id must be in [0, num_processes), got '
                     f'{process_id}.')
  if heartbeat_timeout_seconds < 1:
    raise ValueError('--heartbeat_timeout_seconds must be >= 1, got '
                     f'{heartbeat_timeout_seconds}.')


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               heartbeat_timeout_seconds: int = 60,
               initialization_timeout: int = 300) -> None:
  """Connects this process to the others (before any device use).

  Args:
    coordinator_address: ``host:port`` of process 0 (None: from the cluster
      environment, as ``jax.distributed.initialize`` detects it).
    num_processes: total processes (None: from the environment).
    process_id: this process, ``0 .. num_processes-1`` (None: environment).
    heartbeat_timeout_seconds: a process silent this long counts as dead;
      the others then exit with an error.
    initialization_timeout: seconds to wait for every process to connect.
  """
  check_args(num_processes, process_id, heartbeat_timeout_seconds)
  # Only affects collectives between CPU devices; GPUs/TPUs use their own.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id,
      heartbeat_timeout_seconds=heartbeat_timeout_seconds,
      initialization_timeout=initialization_timeout)


def describe() -> str:
  return (f'process {jax.process_index()}/{jax.process_count()}, '
          f'{jax.local_device_count()} local of {jax.device_count()} devices')
