"""Optional Weights & Biases logging, offline (no network here): a training
run and its evaluation write one W&B run into the run directory, and the
records read back from its ``.wandb`` log hold the config, the scalars
against ``frames``, the evaluation scores and the video."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest

pytest.importorskip('wandb')
from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BLOCK = 32768
_HEADER = 7   # b':W&B', magic 0xBEE1 (little endian), version 0


def read_records(path):
  """The protobuf records of a ``run-<id>.wandb`` file: W&B writes the
  LevelDB log format (32 KiB blocks; each chunk a masked-free CRC32, a
  2-byte length, a 1-byte type: full, first, middle, last)."""
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:4] == b':W&B', data[:8]
  records, pending, pos = [], b'', _HEADER
  while pos + 7 <= len(data):
    room = _BLOCK - pos % _BLOCK
    if room < 7:            # the block's tail is padding
      pos += room
      continue
    _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
    chunk = data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind == 0 and length == 0:
      pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
      continue
    pending += chunk
    if kind in (1, 4):      # full or last: a whole record
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append(record)
      pending = b''
  return records


def _records_of(logdir):
  files = glob.glob(os.path.join(logdir, 'wandb', '*run-*', 'run-*.wandb'))
  assert files, os.listdir(logdir)
  return {path: read_records(path) for path in sorted(files)}


def _env():
  env = dict(os.environ, WANDB_SILENT='true')
  env.pop('XLA_FLAGS', None)
  env.pop('WANDB_MODE', None)
  return env


def _history(records):
  """The logged rows; a media value's fields (W&B's nested keys) come back
  as a dict under its key."""
  rows = []
  for record in records:
    if record.WhichOneof('record_type') != 'history':
      continue
    row = {}
    for item in record.history.item:
      keys = [item.key] if item.key else list(item.nested_key)
      target = row
      for key in keys[:-1]:
        target = target.setdefault(key, {})
      target[keys[-1]] = json.loads(item.value_json)
    rows.append(row)
  return rows


@pytest.mark.slow
def test_offline_run_logs_config_scalars_eval_and_video(tmp_path):
  logdir = str(tmp_path / 'run')
  train = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole',
       '--total_frames=3200', f'--logdir={logdir}', '--noprogress',
       '--log_every_seconds=0', '--wandb_project=impala-test',
       '--wandb_mode=offline'],
      cwd=_REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert train.returncode == 0, train.stdout + train.stderr
  with open(os.path.join(logdir, 'wandb_id')) as f:
    run_id = f.read().strip()
  video = str(tmp_path / 'game.gif')
  evaluate = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate', f'--logdir={logdir}',
       '--num_games=2', f'--video={video}'],
      cwd=_REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
  assert f'wandb: logged to run {run_id}' in evaluate.stdout

  logs = _records_of(logdir)
  assert len(logs) == 2 and all(run_id in path for path in logs)
  train_records, eval_records = logs.values()
  kinds = {r.WhichOneof('record_type') for r in train_records}
  assert {'run', 'history'} <= kinds
  (run,) = [r.run for r in train_records
            if r.WhichOneof('record_type') == 'run']
  assert run.run_id == run_id and run.project == 'impala-test'
  config = {item.key: json.loads(item.value_json) for item in run.config.update}
  assert config['env'] == 'CartPole-v1'
  assert config['wandb_project'] == 'impala-test'
  rows = _history(train_records)
  with open(os.path.join(logdir, 'metrics.csv')) as f:
    csv_frames = [int(line.split(',')[0]) for line in f.readlines()[1:]]
  assert [row['frames'] for row in rows] == csv_frames
  for key in ('updates', 'sps', 'total_loss', 'grad_norm'):
    assert key in rows[-1], rows[-1]
  eval_rows = _history(eval_records)
  scores = [row for row in eval_rows if 'eval/CartPole-v1/mean' in row]
  assert scores and scores[0]['frames'] == csv_frames[-1]
  videos = [row['eval/video'] for row in eval_rows if 'eval/video' in row]
  assert videos and videos[0]['_type'] == 'video-file'
  eval_dir = os.path.dirname(list(logs)[1])
  assert os.path.getsize(os.path.join(eval_dir, 'files', videos[0]['path'])
                         ) == os.path.getsize(video)


def test_flag_without_the_extra_is_a_one_line_hint(tmp_path):
  # A wandb package that fails to import stands for a missing extra.
  shadow = tmp_path / 'shadow' / 'wandb'
  os.makedirs(shadow)
  (shadow / '__init__.py').write_text(
      'raise ImportError("No module named wandb")\n')
  env = dict(_env(), PYTHONPATH=str(tmp_path / 'shadow'))
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole',
       f'--logdir={tmp_path / "run"}', '--wandb_project=p'],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      "error: --wandb_project needs Weights & Biases: pip install "
      "'impala_jax[wandb]' (or pip install wandb).")
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--preset=cartpole',
       f'--logdir={tmp_path / "run"}', '--wandb_mode=cloudy'],
      cwd=_REPO, env=_env(), capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.strip().startswith('error: --wandb_mode must be one of')
