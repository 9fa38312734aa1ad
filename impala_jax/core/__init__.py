"""The pure half: V-trace, the IMPALA loss, the networks, the update step
and optimizer, the acting step, and the types they share.

Nothing here imports threads, environments, files, flags or the runtimes;
the only module outside ``core`` it imports is ``impala_jax.config``
(``tests/test_structure.py`` checks both). docs/ARCHITECTURE.md draws the
two halves.
"""
