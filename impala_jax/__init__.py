"""impala_jax: IMPALA and V-trace in JAX/Flax (Espeholt et al., ICML 2018)."""

__version__ = '0.1.0'
