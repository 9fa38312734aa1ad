"""Shared pytest set-up: CPU only, repo root and tests/ importable."""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_TESTS))
sys.path.insert(0, _TESTS)
