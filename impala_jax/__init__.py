"""impala_jax: IMPALA and V-trace in JAX/Flax (Espeholt et al., ICML 2018).

The pure half lives in ``impala_jax.core`` (docs/ARCHITECTURE.md); its
modules stay reachable under their earlier names (``from impala_jax import
vtrace, losses``), imported on first use.
"""

import importlib

__version__ = '0.1.0'

_CORE_MODULES = ('acting', 'learner', 'losses', 'networks', 'types', 'vtrace')


def __getattr__(name):
  if name in _CORE_MODULES:
    return importlib.import_module(f'impala_jax.core.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
