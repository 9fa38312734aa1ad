"""Two processes on localhost, each with 2 forced CPU devices, joined by
``jax.distributed`` with gloo CPU collectives (the multi-host path)."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, 'tests', 'multihost_worker.py')

pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  return env


def _communicate_all(procs, timeout):
  outputs = []
  deadline = time.monotonic() + timeout
  for proc in procs:
    try:
      out, err = proc.communicate(
          timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail('a process hung')
    outputs.append((proc.returncode, out, err))
  return outputs


def _run_workers(tmp_path, logdir, updates, tag):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, WORKER, str(port), '2', str(i), logdir,
       str(tmp_path / f'{tag}{i}.npz'), str(updates)], cwd=ROOT, env=_env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for code, out, err in _communicate_all(procs, 300):
    assert code == 0, out + err[-3000:]
  results = [dict(np.load(tmp_path / f'{tag}{i}.npz')) for i in range(2)]
  leaves = [[r[f'arr_{k}'] for k in range(len(r) - 5)] for r in results]
  assert len(leaves[0]) == len(leaves[1]) > 0
  for a, b in zip(*leaves):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  return results, leaves[0]


def test_two_processes_train_with_identical_parameters(tmp_path):
  logdir = str(tmp_path / 'run')
  results, params = _run_workers(tmp_path, logdir, 8, 'first')
  for r in results:
    assert int(r['process_count']) == 2 and int(r['devices']) == 4
  # The learner's counter is the global one: the sum of both processes'.
  frames = [int(r['frames']) for r in results]
  assert frames[0] == frames[1] == sum(int(r['local_frames'])
                                       for r in results)
  assert frames[0] == int(results[0]['updates']) * 20 * 16 == 8 * 20 * 16
  # Only process 0 writes metrics and checkpoints.
  assert os.path.exists(os.path.join(logdir, 'metrics.csv'))
  assert os.path.isdir(os.path.join(logdir, 'checkpoints', '8'))

  # Both processes resume from process 0's checkpoint and continue.
  results, resumed = _run_workers(tmp_path, logdir, 12, 'second')
  for r in results:
    assert int(r['updates']) == 12 and int(r['frames']) == 12 * 20 * 16
    assert int(r['local_frames']) == 4 * 20 * 8  # only the new updates
  assert any(not np.array_equal(a, b) for a, b in zip(params, resumed))


def _start_pair(logdir):
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole',
       f'--logdir={logdir}', '--noprogress', '--total_frames=100000000',
       '--log_every_seconds=0.5', '--learner_devices=0,1',
       f'--coordinator_address=localhost:{port}', '--num_processes=2',
       f'--process_id={i}', '--heartbeat_timeout_seconds=5'],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]


def _wait_for_rows(procs, metrics, rows=3, timeout=180):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= rows:
      break
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.2)
  assert all(p.poll() is None for p in procs), 'a process ended early'


@pytest.mark.slow
def test_sigterm_to_every_process_stops_them_after_the_same_update(tmp_path):
  logdir = str(tmp_path / 'run')
  procs = _start_pair(logdir)
  _wait_for_rows(procs, os.path.join(logdir, 'metrics.csv'))
  for proc in procs:   # as a cluster scheduler's pre-emption does
    proc.send_signal(signal.SIGTERM)
  outputs = _communicate_all(procs, 120)
  done = []
  for code, out, err in outputs:
    assert code == 0, out + err[-3000:]
    line = [l for l in out.splitlines() if l.startswith('done:')]
    assert line and 'stopped by signal' in line[0], out
    done.append(int(line[0].split(' updates')[0].rsplit(' ', 1)[-1]))
  assert done[0] == done[1], done    # the same update on both
  steps = sorted(int(n) for n in os.listdir(os.path.join(logdir,
                                                         'checkpoints'))
                 if n.isdigit())
  assert steps and steps[-1] == done[0]   # process 0 saved it


def test_killing_one_process_ends_the_other(tmp_path):
  logdir = str(tmp_path / 'run')
  procs = _start_pair(logdir)
  _wait_for_rows(procs, os.path.join(logdir, 'metrics.csv'))
  procs[1].kill()
  killed_at = time.monotonic()
  (code, out, err), = _communicate_all(procs[:1], 120)
  procs[1].communicate()
  assert code != 0, out + err[-3000:]
  print(f'survivor exited {code} after {time.monotonic() - killed_at:.1f} s')
