"""The metrics of a run: one CSV/TensorBoard writer, a progress line, and the
small thread-safe accumulators the runtime feeds (outer shell: does I/O).

CSV design (``logdir/metrics.csv``)
-----------------------------------
* Every row must carry ``frames`` (env steps x action repeat); it is the
  TensorBoard step and the key that resume truncates on.
* Columns are the union of all keys ever written, in first-seen order
  (``columns=`` fixes the order of the first ones). A row missing a column
  writes an empty cell. A row bringing a *new* key widens the header: the
  file is rewritten once, atomically (temp file + ``os.replace``), with the
  new column empty in the old rows. This is rare (the set of metrics is fixed
  after the first log or two), keeps a single header line, and never drops a
  value.
* Each row is flushed and ``fsync``'d, so a crash loses at most the row
  being written; a torn last line (no trailing newline) is discarded when the
  file is read back.
* ``resume_from_frames=F`` keeps the existing rows with ``frames <= F`` (the
  last checkpoint) and drops the later ones, written after that checkpoint
  and before the crash, so the curve continues where the restored state is.
  ``resume_from_frames=None`` starts a new file (an existing one is replaced:
  nothing in it is backed by a checkpoint).
* Values: ints (Python, NumPy, bools) as ints, floats in ``%.7g``, 0-d
  arrays as their scalar, ``None`` as empty, strings as they are.

TensorBoard gets every numeric key except ``frames`` as a scalar at step
``frames`` (keys with a ``/``, e.g. ``loss/total``, group in the UI). On
resume the writer is opened with ``purge_step=F+1`` so TensorBoard hides
the stale events past the checkpoint. Events are flushed with every row.
"""

from __future__ import annotations

import collections
import csv
import io
import logging
import math
import numbers
import os
import secrets
import sys
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

CSV_NAME = 'metrics.csv'
FRAMES = 'frames'


def _scalar(value: Any) -> Any:
  """NumPy / JAX scalars and 0-d arrays -> Python scalars."""
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if isinstance(value, np.generic):
    return value.item()
  if hasattr(value, 'shape') and hasattr(value, 'dtype'):
    array = np.asarray(value)
    if array.ndim == 0:
      return array.item()
  return value


def format_value(value: Any) -> str:
  """One CSV cell: ints as ints, floats compact (``%.7g``), None empty."""
  value = _scalar(value)
  if value is None:
    return ''
  if isinstance(value, bool):
    return str(int(value))
  if isinstance(value, numbers.Integral):
    return str(int(value))
  if isinstance(value, numbers.Real):
    return format(float(value), '.7g')
  return str(value)


def _read_csv(path: str):
  """(header, rows as lists of str) of an existing file; torn tail dropped."""
  with open(path, newline='') as f:
    text = f.read()
  if text and not text.endswith('\n'):
    text = text[:text.rfind('\n') + 1]   # a row cut by a crash mid-write
  lines = list(csv.reader(io.StringIO(text)))
  if not lines:
    return [], []
  return lines[0], lines[1:]


def _parse_frames(cell: str) -> Optional[float]:
  try:
    return float(cell)
  except (TypeError, ValueError):
    return None


def _write_atomically(path: str, header: Sequence[str],
                      rows: Iterable[Sequence[str]]):
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  _fsync_dir(os.path.dirname(path))


def _write_text_atomically(path: str, text: str):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  _fsync_dir(os.path.dirname(path))


def _fsync_dir(directory: str):
  try:
    fd = os.open(directory or '.', os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


WANDB_HINT = ("--wandb_project needs Weights & Biases: pip install "
              "'impala_jax[wandb]' (or pip install wandb).")
WANDB_ID_FILE = 'wandb_id'


def require_wandb() -> None:
  """Raises ``ValueError`` with a one-line install hint when the ``wandb``
  extra is missing (called before anything compiles)."""
  try:
    import wandb  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ValueError(WANDB_HINT) from None


class WandbLogger:
  """One Weights & Biases run per run directory.

  The run's id is kept in ``logdir/wandb_id``, so a resumed run, and
  ``experiments.evaluate`` on the same directory, continue the same W&B run;
  its local files go to ``logdir/wandb``. Scalars are logged against the
  ``frames`` metric (TensorBoard's step axis), so rows replayed after a
  resume do not fight W&B's own step counter.

  Args:
    logdir: the run directory.
    project, entity: W&B project and team/user (entity empty: the default).
    mode: ``online``, ``offline`` or ``disabled``; empty: ``$WANDB_MODE``,
      else online.
    config: the run's config (a dict) for W&B's config panel.
    job_type: W&B's job type (``train``, ``eval``).
  """

  def __init__(self, logdir: str, *, project: str, entity: str = '',
               mode: str = '', config: Optional[Dict[str, Any]] = None,
               job_type: str = 'train'):
    require_wandb()
    import wandb  # pylint: disable=g-import-not-at-top
    self._wandb = wandb
    os.makedirs(logdir, exist_ok=True)
    id_path = os.path.join(logdir, WANDB_ID_FILE)
    if os.path.exists(id_path):
      with open(id_path) as f:
        run_id = f.read().strip()
    else:
      run_id = secrets.token_hex(4)   # W&B ids: lower-case letters, digits
      _write_text_atomically(id_path, run_id + '\n')
    self.run_id = run_id
    self._run = wandb.init(
        project=project, entity=entity or None, mode=mode or None,
        dir=logdir, id=run_id, resume='allow', job_type=job_type,
        name=os.path.basename(os.path.normpath(logdir)),
        config=config or {}, settings=wandb.Settings(silent=True))
    self._run.define_metric(FRAMES)
    self._run.define_metric('*', step_metric=FRAMES)

  @property
  def run_dir(self) -> str:
    """W&B's local directory of this run (under ``logdir/wandb``)."""
    return os.path.dirname(self._run.dir)

  def log(self, values: Dict[str, Any]):
    """Logs the finite numbers of a metrics row (must hold ``frames``)."""
    row = {key: float(value) for key, value in values.items()
           if isinstance(value, numbers.Real) and not isinstance(value, bool)
           and math.isfinite(float(value))}
    row[FRAMES] = int(values[FRAMES])
    self._run.log(row)

  def log_video(self, key: str, path: str, frames: int, fps: float = 30.0):
    """Logs a ``.gif``/``.mp4`` file as a W&B video at ``frames``."""
    del fps   # a file carries its own frame rate
    self._run.log({key: self._wandb.Video(path), FRAMES: int(frames)})

  def close(self):
    self._run.finish()


class MetricsWriter:
  """The one metrics writer of a run: ``logdir/metrics.csv`` + TensorBoard.

  Args:
    logdir: directory (created) for ``metrics.csv`` and TensorBoard events.
    resume_from_frames: frames of the checkpoint being resumed; rows past it
      are dropped. None: a new run, a fresh file.
    tensorboard: also write TensorBoard scalars (tensorboardX).
    is_primary: False makes every method a no-op (non-zero processes of a
      multi-host run).
    columns: optional initial column order; more keys may still come.
    wandb: also log every row to this W&B run (closed with the writer).
  """

  def __init__(self, logdir: str, *, resume_from_frames: Optional[int] = None,
               tensorboard: bool = True, is_primary: bool = True,
               columns: Optional[Sequence[str]] = None,
               wandb: Optional['WandbLogger'] = None):
    self.logdir = logdir
    self._wandb = wandb if is_primary else None
    self.is_primary = is_primary
    self.path = os.path.join(logdir, CSV_NAME)
    self._lock = threading.Lock()
    self._file: Optional[TextIO] = None
    self._csv = None
    self._tb = None
    self._columns: List[str] = []
    self._closed = False
    if not is_primary:
      return
    os.makedirs(logdir, exist_ok=True)
    initial = list(columns or [])
    if resume_from_frames is not None and os.path.exists(self.path):
      header, rows = _read_csv(self.path)
      if header:
        index = header.index(FRAMES) if FRAMES in header else None
        def keep(row):
          if index is None or index >= len(row):
            return True
          frames = _parse_frames(row[index])
          return frames is None or frames <= resume_from_frames
        kept = [row for row in rows if keep(row)]
        self._columns = list(header)
        _write_atomically(self.path, header, kept)
      else:
        os.remove(self.path)
    elif os.path.exists(self.path):
      os.remove(self.path)
    for key in initial:
      if key not in self._columns:
        self._columns.append(key)
    self._open()
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      except ImportError:  # pragma: no cover - tensorboardX is a dependency
        logging.warning('tensorboardX missing: no TensorBoard events.')
      else:
        purge = None if resume_from_frames is None else resume_from_frames + 1
        # pid suffix: a resumed run in the same second gets its own file.
        self._tb = SummaryWriter(logdir, purge_step=purge,
                                 filename_suffix=f'.{os.getpid()}')

  @property
  def columns(self) -> List[str]:
    return list(self._columns)

  def _open(self):
    exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
    self._file = open(self.path, 'a', newline='')
    self._csv = csv.writer(self._file)
    if not exists and self._columns:
      self._csv.writerow(self._columns)
      self._sync()

  def _sync(self):
    self._file.flush()
    os.fsync(self._file.fileno())

  def _widen(self, new_keys: Sequence[str]):
    """Adds columns: rewrites the file once with the wider header."""
    self._file.close()
    old = list(self._columns)
    self._columns.extend(new_keys)
    if os.path.getsize(self.path) > 0:
      _, rows = _read_csv(self.path)
      pad = [''] * (len(self._columns) - len(old))
      _write_atomically(self.path, self._columns,
                        (list(row) + pad for row in rows))
      self._file = open(self.path, 'a', newline='')
      self._csv = csv.writer(self._file)
    else:
      self._open()

  def write(self, row: Dict[str, Any]):
    """Appends one row (must contain ``frames``) to CSV and TensorBoard."""
    if not self.is_primary:
      return
    if FRAMES not in row:
      raise ValueError(f'metrics row needs a {FRAMES!r} key, got '
                       f'{sorted(row)}.')
    values = {key: _scalar(value) for key, value in row.items()}
    frames = int(values[FRAMES])
    with self._lock:
      if self._closed:
        raise ValueError('MetricsWriter is closed.')
      new_keys = [key for key in values if key not in self._columns]
      if new_keys:
        if not self._columns:   # first row of a fresh file
          self._columns.extend(new_keys)
          self._csv.writerow(self._columns)
        else:
          self._widen(new_keys)
      self._csv.writerow([format_value(values.get(key))
                          for key in self._columns])
      self._sync()
      if self._tb is not None:
        for key, value in values.items():
          if key == FRAMES or isinstance(value, (str, bool)) or not isinstance(
              value, numbers.Real):
            continue
          if not math.isfinite(float(value)):
            continue  # e.g. no game finished in the interval: a gap, not NaN
          self._tb.add_scalar(key, float(value), global_step=frames)
        self._tb.flush()   # rows are seconds apart: keep TB as fresh as CSV
      if self._wandb is not None:
        self._wandb.log(values)

  def close(self):
    if not self.is_primary:
      return
    with self._lock:
      if self._closed:
        return
      self._closed = True
      if self._file is not None and not self._file.closed:
        self._sync()
        self._file.close()
      if self._tb is not None:
        self._tb.close()
      if self._wandb is not None:
        self._wandb.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_metrics(path: str) -> List[Dict[str, str]]:
  """Rows of a ``metrics.csv`` (or a logdir) as dicts of strings."""
  if os.path.isdir(path):
    path = os.path.join(path, CSV_NAME)
  header, rows = _read_csv(path)
  return [dict(zip(header, row)) for row in rows]


def human(x: float) -> str:
  """3 significant digits with a K/M/G/T suffix: 1234567 -> '1.23M'."""
  if x is None or not math.isfinite(x):
    return 'n/a'
  sign = '-' if x < 0 else ''
  x = abs(x)
  for unit in ('', 'K', 'M', 'G', 'T', 'P'):
    if unit == '' and x == int(x) and x < 1000:
      return f'{sign}{int(x)}'
    if x < 999.5 or unit == 'P':
      if x < 9.995:
        return f'{sign}{x:.2f}{unit}'
      if x < 99.95:
        return f'{sign}{x:.1f}{unit}'
      return f'{sign}{x:.0f}{unit}'
    x /= 1000.0
  raise AssertionError('unreachable')


def format_duration(seconds: float) -> str:
  if seconds is None or not math.isfinite(seconds) or seconds < 0:
    return '-:--:--'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}'


class Progress:
  """A live one-line progress display on ``stream``.

  On a TTY the line is redrawn in place with ``'\\r'``; otherwise (CI logs,
  files) each ``update`` prints one plain line.
  """

  def __init__(self, total_frames: int, *, stream: TextIO = sys.stdout):
    self.total_frames = total_frames
    self.stream = stream
    try:
      self.is_tty = bool(stream.isatty())
    except (AttributeError, ValueError):
      self.is_tty = False
    self._width = 0
    self._open_line = False

  def line(self, frames: int, sps: float, episode_return: float,
           extra: str = '') -> str:
    total = max(self.total_frames, 1)
    percent = 100.0 * frames / total
    eta = (self.total_frames - frames) / sps if sps and sps > 0 else None
    ret = ('n/a' if episode_return is None or not math.isfinite(
        episode_return) else f'{episode_return:.1f}')
    text = (f'[{percent:5.1f}%] frames {human(frames)}/'
            f'{human(self.total_frames)}  sps {human(sps)}  return {ret}  '
            f'ETA {format_duration(max(eta, 0.0) if eta is not None else None)}')
    if extra:
      text += '  ' + extra
    return text

  def update(self, frames: int, sps: float, episode_return: float,
             extra: str = ''):
    text = self.line(frames, sps, episode_return, extra)
    if self.is_tty:
      pad = max(self._width - len(text), 0)
      self.stream.write('\r' + text + ' ' * pad)
      self._width = len(text)
      self._open_line = True
    else:
      self.stream.write(text + '\n')
    self.stream.flush()

  def done(self):
    if self.is_tty and self._open_line:
      self.stream.write('\n')
      self.stream.flush()
    self._open_line = False
    self._width = 0


class EpisodeStats:
  """Accumulator of finished episodes: the run loop adds the games each
  learned-from batch reports and drains them when it logs (locked, so
  another thread may read ``last_returns`` meanwhile)."""

  def __init__(self, history: int = 100):
    self._lock = threading.Lock()
    self._pending = [0, 0.0, 0.0]   # games, return sum, length sum
    self._recent = collections.deque(maxlen=history)
    self.total_episodes = 0

  def add(self, returns: Sequence[float], lengths: Sequence[float], *,
          tally: Optional[Tuple[int, float, float]] = None):
    """Games that ended: their returns and lengths (kept as the recent
    history). ``tally``: ``(count, return_sum, length_sum)`` of all games
    that ended, when that is more than the lists hold (the Anakin layout
    counts every game on the device but lists only the last few); by
    default the lists are the tally."""
    returns = [float(r) for r in np.asarray(returns).reshape(-1)]
    lengths = [float(n) for n in np.asarray(lengths).reshape(-1)]
    if len(returns) != len(lengths):
      raise ValueError(f'{len(returns)} returns but {len(lengths)} lengths.')
    if tally is None:
      tally = (len(returns), float(sum(returns)), float(sum(lengths)))
    with self._lock:
      self._recent.extend(returns)
      self._pending[0] += int(tally[0])
      self._pending[1] += float(tally[1])
      self._pending[2] += float(tally[2])
      self.total_episodes += int(tally[0])

  def drain(self) -> Dict[str, float]:
    """Means since the last drain (nan when none) and the count; clears."""
    with self._lock:
      (n, return_sum, length_sum), self._pending = self._pending, [0, 0.0,
                                                                   0.0]
    return {
        'episode_return': return_sum / n if n else math.nan,
        'episode_length': length_sum / n if n else math.nan,
        'episodes': n,
    }

  def last_returns(self, n: int = 100) -> List[float]:
    """The last ``n`` returns (at most ``history``), oldest first."""
    with self._lock:
      recent = list(self._recent)
    return recent[-n:] if n > 0 else []


class RateMeter:
  """Frames per second over the interval since the previous ``rate`` call."""

  def __init__(self, frames: int = 0, *, clock=time.monotonic):
    self._clock = clock
    self._frames = frames
    self._time = clock()

  def rate(self, frames_now: int) -> float:
    now = self._clock()
    elapsed = now - self._time
    delta = frames_now - self._frames
    self._time, self._frames = now, frames_now
    return delta / elapsed if elapsed > 0 else 0.0


class TaskEpisodeStats:
  """Finished games of a multi-task run, per task: each task's mean return
  and game count since the last row, and the human-normalised median and
  mean over the tasks of each task's last ``history`` games (the curve the
  paper plots for a suite), where every task has reference scores.

  Args:
    task_ids: the run's task ids (``config.tasks``), in task-id order.
    names: their column names (``config.task_names``).
    normalise: ``(task_id_string, score) -> float`` (raises ``KeyError``
      for a task without references); None: no aggregate columns.
    history: games per task in the aggregate.
  """

  def __init__(self, task_ids: Sequence[str], names: Sequence[str],
               normalise=None, history: int = 100):
    self.task_ids = list(task_ids)
    self.names = list(names)
    self.enabled = len(self.task_ids) > 1
    self._stats = [EpisodeStats(history) for _ in self.task_ids]
    self._normalise = normalise

  def add(self, returns: Sequence[float], lengths: Sequence[float],
          tasks: Optional[Sequence[int]] = None,
          tallies: Optional[Sequence[Tuple[int, float, float]]] = None):
    """Games that ended, with the task of each (``tasks``; None: task 0)
    and optionally each task's full tally (``EpisodeStats.add``)."""
    if not self.enabled:
      return
    returns = np.asarray(returns, np.float64).reshape(-1)
    lengths = np.asarray(lengths, np.float64).reshape(-1)
    tasks = (np.zeros(len(returns), np.int64) if tasks is None
             else np.asarray(tasks, np.int64).reshape(-1))
    if len(tasks) != len(returns):
      raise ValueError(f'{len(returns)} returns but {len(tasks)} task ids.')
    for k, stats in enumerate(self._stats):
      pick = tasks == k
      stats.add(returns[pick], lengths[pick],
                tally=None if tallies is None else tallies[k])

  def columns(self) -> Dict[str, float]:
    """``episode_return/<task>``, ``episodes/<task>`` since the last call,
    and ``hns_median`` / ``hns_mean`` (fractions: 1.0 = human) when every
    task has references and games."""
    row: Dict[str, float] = {}
    recent = []
    for name, task_id, stats in zip(self.names, self.task_ids, self._stats):
      ep = stats.drain()
      row[f'episode_return/{name}'] = ep['episode_return']
      row[f'episodes/{name}'] = ep['episodes']
      last = stats.last_returns()
      recent.append((task_id, float(np.mean(last)) if last else math.nan))
    if self._normalise is not None:
      try:
        values = [self._normalise(t, r) for t, r in recent]
      except KeyError:
        values = None
      if values is not None and all(math.isfinite(v) for v in values):
        row['hns_median'] = float(np.median(values))
        row['hns_mean'] = float(np.mean(values))
    return row
