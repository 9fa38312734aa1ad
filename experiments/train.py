"""Training program (placeholder until the runtime issue lands)."""

import sys


def main():
  print('impala_jax: the training program is not implemented yet; '
        'see the open issue "Actors on envpool, the asynchronous runtime, '
        'and the training program".')
  return 0


if __name__ == '__main__':
  sys.exit(main())
