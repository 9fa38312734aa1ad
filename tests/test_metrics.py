"""Metrics: CSV round trip and resume truncation, TensorBoard events,
progress lines, episode statistics, rate meter."""

import io
import math
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from impala_jax import metrics as metrics_lib


def rows_of(logdir):
  return metrics_lib.read_metrics(logdir)


def test_csv_round_trip_header_once(tmp_path):
  logdir = str(tmp_path)
  with metrics_lib.MetricsWriter(logdir, tensorboard=False) as writer:
    writer.write({'frames': 100, 'loss': 0.5, 'sps': np.float32(12.25),
                  'updates': np.int32(3)})
    writer.write({'frames': 200, 'loss': 1e-9, 'sps': 3.0, 'updates': 4})
  with open(os.path.join(logdir, 'metrics.csv')) as f:
    lines = f.read().splitlines()
  assert lines[0] == 'frames,loss,sps,updates'
  assert lines[1:] == ['100,0.5,12.25,3', '200,1e-09,3,4']
  rows = rows_of(logdir)
  assert [r['frames'] for r in rows] == ['100', '200']


def test_missing_and_new_keys(tmp_path):
  logdir = str(tmp_path)
  with metrics_lib.MetricsWriter(logdir, tensorboard=False) as writer:
    writer.write({'frames': 1, 'a': 1.5})
    writer.write({'frames': 2})                      # missing 'a': empty
    writer.write({'frames': 3, 'a': 2, 'b': math.nan})   # new 'b': widen
    assert writer.columns == ['frames', 'a', 'b']
  with open(os.path.join(logdir, 'metrics.csv')) as f:
    lines = f.read().splitlines()
  assert lines == ['frames,a,b', '1,1.5,', '2,,', '3,2,nan']
  with pytest.raises(ValueError, match='frames'):
    metrics_lib.MetricsWriter(logdir, tensorboard=False,
                              resume_from_frames=3).write({'loss': 1.0})


def test_resume_drops_rows_after_checkpoint(tmp_path):
  logdir = str(tmp_path)
  writer = metrics_lib.MetricsWriter(logdir, tensorboard=False)
  for frames in (100, 200, 300, 400):
    writer.write({'frames': frames, 'x': frames / 10})
  writer.close()
  # A crash tore the last row in half.
  with open(os.path.join(logdir, 'metrics.csv'), 'a') as f:
    f.write('500,5')
  writer = metrics_lib.MetricsWriter(logdir, tensorboard=False,
                                     resume_from_frames=200)
  assert [r['frames'] for r in rows_of(logdir)] == ['100', '200']
  writer.write({'frames': 250, 'x': 25.0})
  writer.close()
  with open(os.path.join(logdir, 'metrics.csv')) as f:
    text = f.read()
  assert text.count('frames') == 1
  assert [r['frames'] for r in rows_of(logdir)] == ['100', '200', '250']
  assert not os.path.exists(os.path.join(logdir, 'metrics.csv.tmp'))
  # A new run (no resume) starts a fresh file.
  metrics_lib.MetricsWriter(logdir, tensorboard=False).close()
  assert rows_of(logdir) == []


def test_tensorboard_event_file(tmp_path):
  logdir = str(tmp_path)
  with metrics_lib.MetricsWriter(logdir) as writer:
    writer.write({'frames': 10, 'loss/total': 1.0, 'note': 'text'})
  events = [n for n in os.listdir(logdir) if 'tfevents' in n]
  assert events and os.path.getsize(os.path.join(logdir, events[0])) > 0


def test_tensorboard_viewer_is_installed():
  """README's `tensorboard --logdir runs` works in the venv as written."""
  viewer = shutil.which('tensorboard',
                        path=os.path.dirname(sys.executable))
  assert viewer, 'tensorboard is not installed beside this Python'
  proc = subprocess.run([viewer, '--version_tb'], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip()[:1].isdigit(), proc.stdout   # its version


def test_not_primary_writes_nothing(tmp_path):
  logdir = str(tmp_path / 'run')
  with metrics_lib.MetricsWriter(logdir, is_primary=False) as writer:
    writer.write({'frames': 1, 'loss': 1.0})
  assert not os.path.exists(logdir)


def test_progress_plain_lines():
  stream = io.StringIO()
  progress = metrics_lib.Progress(10_000_000, stream=stream)
  progress.update(1_230_000, 4100.0, 17.5, extra='lag 2')
  progress.update(2_000_000, 0.0, math.nan)
  progress.done()
  lines = stream.getvalue().split('\n')
  assert lines[-1] == '' and len(lines) == 3 and '\r' not in lines[0]
  first = lines[0]
  assert first.startswith('[ 12.3%]')
  for part in ('frames 1.23M/10.0M', 'sps 4.10K', 'return 17.5',
               'ETA 0:35:39', 'lag 2'):
    assert part in first, (part, first)
  assert 'return n/a' in lines[1] and 'ETA -:--:--' in lines[1]


def test_progress_tty_redraws():
  class Tty(io.StringIO):
    def isatty(self):
      return True
  stream = Tty()
  progress = metrics_lib.Progress(100, stream=stream)
  progress.update(10, 5.0, 1.0, extra='long extra text')
  progress.update(20, 5.0, 1.0)
  progress.done()
  out = stream.getvalue()
  assert out.count('\r') == 2 and out.count('\n') == 1 and out.endswith('\n')


def test_human():
  assert metrics_lib.human(999) == '999'
  assert metrics_lib.human(999_999) == '1.00M'
  assert metrics_lib.human(12.345) == '12.3'
  assert metrics_lib.format_duration(3723) == '1:02:03'


def test_episode_stats_threads_and_drain():
  stats = metrics_lib.EpisodeStats()
  assert math.isnan(stats.drain()['episode_return'])
  def work(k):
    for i in range(50):
      stats.add([float(k)], [10])
  threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  out = stats.drain()
  assert out['episodes'] == 200
  assert out['episode_return'] == pytest.approx(1.5)
  assert out['episode_length'] == 10
  assert stats.drain()['episodes'] == 0
  assert len(stats.last_returns(1000)) == 100
  stats.add(np.array([7.0, 8.0]), np.array([1, 2]))
  assert stats.last_returns(2) == [7.0, 8.0]


def test_rate_meter():
  now = [0.0]
  meter = metrics_lib.RateMeter(0, clock=lambda: now[0])
  now[0] = 2.0
  assert meter.rate(1000) == 500.0
  now[0] = 3.0
  assert meter.rate(1100) == 100.0


def test_task_episode_stats_per_task_columns_and_normalised_aggregates():
  from impala_jax import scores  # pylint: disable=g-import-not-at-top
  from impala_jax.metrics import TaskEpisodeStats  # pylint: disable=g-import-not-at-top
  pong, breakout = (scores.reference_for('Pong-v5'),
                    scores.reference_for('Breakout-v5'))
  stats = TaskEpisodeStats(['Pong-v5', 'Breakout-v5'],
                           ['Pong-v5', 'Breakout-v5'],
                           normalise=scores.normalized_score)
  stats.add([pong.human, breakout.random, breakout.random], [10, 20, 30],
            tasks=[0, 1, 1])
  row = stats.columns()
  assert row['episode_return/Pong-v5'] == pong.human
  assert row['episodes/Breakout-v5'] == 2
  assert row['hns_median'] == 0.5 and row['hns_mean'] == 0.5
  # Nothing new: per-task means are empty, the aggregate keeps the history.
  row = stats.columns()
  assert row['episodes/Pong-v5'] == 0 and row['hns_mean'] == 0.5
  # Tasks without references: no aggregate columns.
  other = TaskEpisodeStats(['a', 'b'], ['a', 'b'],
                           normalise=scores.normalized_score)
  other.add([1.0, 2.0], [1, 1], tasks=[0, 1])
  assert 'hns_median' not in other.columns()
