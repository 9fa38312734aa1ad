r"""Memory soak: trains for a wall time while sampling the training process's
resident memory, and prints how much it grew after the warm-up.

  python -m experiments.soak --preset=cpu_atari --seconds=1800 \
      --out=bench_results/soak_cpu_atari
  python -m experiments.soak --preset=minatar --env=gymnax:Breakout-MinAtar \
      --seconds=600 --out=bench_results/soak_anakin

Starts ``experiments.train`` (``--preset``, ``--env``, a frame budget it
will not reach, its own ``--logdir`` under ``--out``, and any
``--train_flag``) as a child process; every ``--interval`` seconds writes
one row to ``OUT/memory.csv``: seconds since start, the child's resident
memory (``VmRSS``, MiB), its peak (``VmHWM``) and the frames of the last
``metrics.csv`` row. After ``--seconds`` it sends SIGTERM (the run
checkpoints and exits), writes ``OUT/memory.png`` and prints the growth of
resident memory from the first sample after ``--warmup`` to the last, in
MiB and per cent (the target: under 3%). Device memory is not sampled
(this CPU has none; on an accelerator, ``jax.local_devices()[0]
.memory_stats()`` inside the run is the figure to add).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

from absl import flags

from . import _cli

_PRESET = flags.DEFINE_string('preset', 'cpu_atari', 'Training preset.')
_ENV = flags.DEFINE_string('env', None, 'Environment id (default: preset).')
_SECONDS = flags.DEFINE_float('seconds', 1800.0, 'Wall time of the run.')
_WARMUP = flags.DEFINE_float('warmup', 300.0,
                             'Seconds before the growth baseline.')
_INTERVAL = flags.DEFINE_float('interval', 5.0, 'Seconds between samples.')
_OUT = flags.DEFINE_string('out', None, 'Output directory (required).')
_TRAIN_FLAGS = flags.DEFINE_multi_string(
    'train_flag', [], 'Extra flag for the training run (repeatable).')


def _status(pid: int) -> dict:
  """``VmRSS`` and ``VmHWM`` of a process in MiB (Linux ``/proc``)."""
  out = {}
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      key, _, value = line.partition(':')
      if key in ('VmRSS', 'VmHWM'):
        out[key] = int(value.split()[0]) / 1024.0
  return out


def _last_frames(logdir: str):
  path = os.path.join(logdir, 'metrics.csv')
  if not os.path.exists(path):
    return ''
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  return rows[-1].get('frames', '') if rows else ''


def growth(samples, warmup: float):
  """``(baseline_mib, last_mib, growth_mib, growth_percent)`` from
  ``[(seconds, rss_mib), ...]``: the first sample at or after ``warmup``
  against the last one (None when no sample is past the warm-up)."""
  after = [(t, rss) for t, rss in samples if t >= warmup]
  if len(after) < 2:
    return None
  base, last = after[0][1], after[-1][1]
  return base, last, last - base, 100.0 * (last - base) / base


def _plot(samples, warmup: float, path: str, title: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot([t / 60 for t, _ in samples], [rss for _, rss in samples])
  ax.axvline(warmup / 60, color='k', linestyle=':', linewidth=1,
             label='end of warm-up')
  ax.set_xlabel('minutes')
  ax.set_ylabel('resident memory (MiB)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  if not _OUT.value:
    print('error: --out is required.', file=sys.stderr)
    return 2
  for name, flag, low in (('seconds', _SECONDS, 0.0), ('interval', _INTERVAL,
                                                       0.0)):
    if not flag.value > low:
      print(f'error: --{name} must be > 0, got {flag.value}.',
            file=sys.stderr)
      return 2
  if _WARMUP.value < 0:
    print(f'error: --warmup must be >= 0, got {_WARMUP.value}.',
          file=sys.stderr)
    return 2
  out = _OUT.value
  logdir = os.path.join(out, 'run')
  os.makedirs(out, exist_ok=True)
  command = [sys.executable, '-m', f'{__package__}.train',
             f'--preset={_PRESET.value}', f'--logdir={logdir}',
             '--total_frames=100000000000', '--noprogress',
             *([f'--env={_ENV.value}'] if _ENV.value else []),
             *_TRAIN_FLAGS.value]
  log = open(os.path.join(out, 'train.log'), 'w')
  child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  start = time.monotonic()
  samples = []
  csv_path = os.path.join(out, 'memory.csv')
  try:
    with open(csv_path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['seconds', 'rss_mib', 'peak_rss_mib', 'frames'])
      while time.monotonic() - start < _SECONDS.value:
        if child.poll() is not None:
          break
        now = time.monotonic() - start
        try:
          status = _status(child.pid)
        except (FileNotFoundError, ProcessLookupError):
          break
        samples.append((now, status['VmRSS']))
        writer.writerow([f'{now:.1f}', f'{status["VmRSS"]:.1f}',
                         f'{status["VmHWM"]:.1f}', _last_frames(logdir)])
        f.flush()
        time.sleep(_INTERVAL.value)
  finally:
    if child.poll() is None:
      child.send_signal(signal.SIGTERM)
      try:
        child.wait(timeout=120)
      except subprocess.TimeoutExpired:
        child.kill()
    log.close()
  if child.returncode not in (0, -signal.SIGTERM):
    print(f'error: the training run exited with {child.returncode}; see '
          f'{os.path.join(out, "train.log")}', file=sys.stderr)
    return 1
  title = f'{_PRESET.value}' + (f' {_ENV.value}' if _ENV.value else '')
  _plot(samples, _WARMUP.value, os.path.join(out, 'memory.png'), title)
  result = growth(samples, _WARMUP.value)
  summary = {'preset': _PRESET.value, 'env': _ENV.value,
             'seconds': _SECONDS.value, 'warmup': _WARMUP.value,
             'samples': len(samples), 'frames': _last_frames(logdir)}
  if result is None:
    print(f'soak: {len(samples)} samples, none past the {_WARMUP.value:g} s '
          f'warm-up: no growth figure; {csv_path}')
  else:
    base, last, mib, percent = result
    summary.update(baseline_mib=base, last_mib=last, growth_mib=mib,
                   growth_percent=percent)
    print(f'soak: resident memory {base:.1f} MiB after the warm-up, '
          f'{last:.1f} MiB at the end: {mib:+.1f} MiB ({percent:+.2f}%) over '
          f'{samples[-1][0] - _WARMUP.value:.0f} s; {csv_path}')
  with open(os.path.join(out, 'soak.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  return 0


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
