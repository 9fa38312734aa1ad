"""Runs one program's flag parsing and start-up checks over many argument
lists in one process (tests/test_flags.py): reads ``[[arg, ...], ...]`` as
JSON on stdin, writes ``[{code, stderr}, ...]`` as JSON on stdout.

A case that passes every check would start the real work; that work is
replaced by a stand-in that reports ``code: "passed"`` instead.
"""

import contextlib
import importlib
import io
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top


class Passed(BaseException):
  """Every check passed: the program would now start its work (a
  BaseException, so a program's own ``except Exception`` lets it through)."""


def _stand_in(*args, **kwargs):
  raise Passed()


def main():
  program = sys.argv[1]
  cases = json.load(sys.stdin)
  from experiments import _cli  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'experiments.{program}')
  if program == 'train':
    from impala_jax import run_loop, runtime  # pylint: disable=g-import-not-at-top
    runtime.start_run = _stand_in
    run_loop.start_run = _stand_in
  elif program == 'evaluate':
    module.load_run = _stand_in
  elif program == 'plot':
    from impala_jax import plotting  # pylint: disable=g-import-not-at-top
    plotting.load_results = _stand_in
  elif program == 'sweep':
    module.plan = _stand_in
  elif program == 'reproduce':
    module._game_settings = _stand_in  # pylint: disable=protected-access
  elif program == 'soak':
    import subprocess  # pylint: disable=g-import-not-at-top
    subprocess.Popen = _stand_in
  elif program == 'gpu_suite':
    module.learner_section = _stand_in
  elif program == 'benchmark':
    module.common.random_env_fps = _stand_in
  elif program == 'benchmark_learner':
    module.bench_one = _stand_in
  elif program == 'benchmark_vtrace':
    module.make_candidates = _stand_in
  elif program == 'benchmark_anakin':
    module.common.time_anakin = _stand_in
    module.common.time_envpool = _stand_in
  results = []
  for args in cases:
    flags.FLAGS.unparse_flags()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        argv = _cli.parse_flags([program] + args)
        code = module.main(argv)
      except SystemExit as e:
        code = e.code
      except Passed:
        code = 'passed'
      except Exception:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 'exception'
    results.append({'args': args, 'code': code, 'stderr': err.getvalue()})
  json.dump(results, sys.__stdout__)


if __name__ == '__main__':
  main()
