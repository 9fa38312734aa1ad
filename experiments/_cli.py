"""Starting an absl program as ``python -m experiments.X`` or as its
installed console command (``impala-train`` ...; setup.cfg)."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app
from absl import flags


def run(main: Callable, module_name: str) -> None:
  """``app.run(main)`` for the program module ``module_name``.

  absl's ``--help`` prints ``__main__``'s docstring and the flags of the
  module named by ``sys.argv[0]``. Under a console command ``__main__`` is
  the generated wrapper, so the program's docstring and flags are lent to it
  first; under ``python -m`` the program already is ``__main__``.
  """
  module = sys.modules[module_name]
  main_module = sys.modules['__main__']
  if module is not main_module:
    main_module.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
