r"""``impala-bench WHICH [flags]``: runs one of the benchmark programs.

  impala-bench vtrace --json=bench_results/vtrace.json
  impala-bench pipeline --help

WHICH is ``pipeline`` (``benchmark``: env, learner and the asynchronous
pipeline), ``learner`` (``benchmark_learner``), ``vtrace``
(``benchmark_vtrace``), ``anakin`` (``benchmark_anakin``) or ``soak``
(``soak``: resident memory over a long training run). Only the
chosen program is imported, so each keeps its own absl flags.
"""

from __future__ import annotations

import importlib
import os
import sys

BENCHMARKS = {
    'pipeline': 'benchmark',
    'learner': 'benchmark_learner',
    'vtrace': 'benchmark_vtrace',
    'anakin': 'benchmark_anakin',
    'soak': 'soak',
}


def run():
  """Console-command entry point (setup.cfg)."""
  argv = sys.argv
  which = argv[1] if len(argv) > 1 else None
  if which in BENCHMARKS:
    module = importlib.import_module(f'{__package__}.{BENCHMARKS[which]}')
    sys.argv = [f'{argv[0]} {which}'] + argv[2:]
    module.run()
    return
  name = os.path.basename(argv[0])
  usage = (f'usage: {name} {{{",".join(BENCHMARKS)}}} [flags]; '
           f'{name} WHICH --help lists its flags.')
  if which in ('-h', '--help', 'help'):
    print(__doc__.strip())
    print(usage)
    sys.exit(0)
  what = ('no benchmark named' if which is None
          else f'unknown benchmark {which!r}')
  print(f'error: {what}; {usage}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  run()
