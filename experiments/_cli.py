"""Starting an absl program as ``python -m experiments.X`` or as its
installed console command (``impala-train`` ...; setup.cfg)."""

from __future__ import annotations

import sys
from typing import Callable, List

from absl import app
from absl import flags


def parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing, with a user's mistake (a value of the wrong type,
  an unknown flag) reported as one line ``error: ...`` and exit code 2 --
  the convention of every other bad input of these programs -- instead of
  absl's two-line ``FATAL Flags parsing error`` and exit code 1."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    reason = ' '.join(str(e).split())
    print(f'error: {reason} (--help lists the flags)', file=sys.stderr)
    sys.exit(2)


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
  app.run(main, flags_parser=parse_flags)
