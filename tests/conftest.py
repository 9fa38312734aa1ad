"""Shared pytest set-up: CPU only, 4 forced host devices, paths.

XLA_FLAGS must be set before jax is first imported, which is why it lives
here: multi-device tests (pmap over 2 learner devices, the 1 actor + 2
learner split) run on a CPU-only machine.
"""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if '--xla_force_host_platform_device_count' not in os.environ.get(
    'XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=4')
_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_TESTS))
sys.path.insert(0, _TESTS)
