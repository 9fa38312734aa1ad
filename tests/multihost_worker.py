"""One process of a multi-process CartPole run (tests/test_multihost.py).

  python tests/multihost_worker.py PORT NUM_PROCESSES PROCESS_ID LOGDIR OUT \
      UPDATES

Forces 2 CPU devices, joins the run through ``jax.distributed`` (gloo),
trains in sync mode with actor device 0 and learner devices 0,1 on every
process, until UPDATES updates in all (resuming from LOGDIR's checkpoint if
there is one), then writes its final parameters and counters to ``OUT``.
"""

import os
import sys

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'

import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from impala_jax import distributed  # pylint: disable=wrong-import-position


def main(port, num_processes, process_id, logdir, out, updates):
  distributed.initialize(f'localhost:{port}', int(num_processes),
                         int(process_id), heartbeat_timeout_seconds=10)
  from impala_jax import presets  # pylint: disable=import-outside-toplevel
  from impala_jax import runtime  # pylint: disable=import-outside-toplevel
  config = dataclasses.replace(
      presets.cartpole(), total_frames=20 * 16 * int(updates),
      learner_devices=(0, 1),
      actor_devices=(0,), log_every_seconds=0.0).validate()
  result = runtime.train(config, logdir, sync=True, progress=False,
                         handle_signals=False)
  leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(result.params)]
  np.savez(out, *leaves, frames=result.frames, updates=result.updates,
           local_frames=result.local_frames,
           process_count=jax.process_count(),
           devices=jax.device_count())


if __name__ == '__main__':
  main(*sys.argv[1:])
