"""Shipped reference runs and the published baselines they are compared with.

The repository ships the runs behind its reported results as package data,
so a user can overlay their own run on them (``python -m experiments.plot
--roots=runs/mine --reference=minatar``) without re-running anything::

  impala_jax/data/reference_runs/<suite>/<game>/seed_<s>/
      config.json    the run's config (``experiments.train`` writes it)
      metrics.csv    its trimmed curve: ``frames``, ``episode_return``,
                     ``episode_length``, ``episodes`` (games per row),
                     ``wall_time``, ``entropy``, the evaluation
                     columns where logged; at most ``MAX_ROWS`` rows
      eval.json      the final evaluation (``experiments.evaluate --json``)
      DONE           the sweep's marker: frames, date, the training
                     process's wall time

A reference tree has the layout of a results tree (``impala_jax.plotting``
reads both). ``published(suite)`` gives the published numbers of a suite
(``impala_jax/data/<suite>_published.csv``, sources in its header) and the
issue's target per game.

Everything here is file handling and NumPy; nothing imports JAX.
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import math
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

from impala_jax import scores as scores_lib
from impala_jax.config import GYMNAX_PREFIX
from impala_jax.metrics import read_metrics

REFERENCE_SUITES = ('minatar', 'atari')
MAX_ROWS = 300
CURVE_COLUMNS = ('frames', 'episode_return', 'episode_length', 'episodes',
                 'wall_time', 'entropy', 'eval_return_mean',
                 'eval_return_median')
# The shipped games and their environment ids (--env of experiments.train).
SUITE_ENV_IDS = {
    'minatar': ('gymnax:Breakout-MinAtar', 'gymnax:SpaceInvaders-MinAtar',
                'gymnax:Asterix-MinAtar', 'gymnax:Freeway-MinAtar'),
    # Atari from pixels on a 2-core CPU: issue 14's Pong run and the
    # `make train` game.
    'atari': ('Pong-v5', 'Breakout-v5'),
}


def _check(suite: str) -> str:
  if suite not in REFERENCE_SUITES:
    raise ValueError(f'unknown reference suite {suite!r}; choose one of '
                     f'{", ".join(REFERENCE_SUITES)}.')
  return suite


def reference_root(suite: str) -> str:
  """The directory of a suite's shipped runs (inside the package)."""
  _check(suite)
  return str(importlib.resources.files('impala_jax') / 'data' /
             'reference_runs' / suite)


def game_key(game: str) -> str:
  """``'gymnax:Breakout-MinAtar'`` / ``'gymnax_Breakout-MinAtar'`` (a
  results-tree directory) -> ``'Breakout-MinAtar'``."""
  for prefix in (GYMNAX_PREFIX, GYMNAX_PREFIX.replace(':', '_')):
    if game.startswith(prefix):
      return game[len(prefix):]
  return game


def game_dir(suite: str, game: str) -> str:
  """The directory of a shipped game: ``gymnax:Breakout-MinAtar`` or
  ``Breakout-MinAtar`` -> ``<reference_root>/gymnax_Breakout-MinAtar``
  (``experiments.sweep``'s naming: ``:`` becomes ``_``)."""
  env_id = next(e for e in SUITE_ENV_IDS[_check(suite)]
                if game_key(e) == game_key(game))
  return os.path.join(reference_root(suite), env_id.replace(':', '_'))


def published(suite: str) -> Dict[str, Dict[str, Optional[float]]]:
  """``{game: {column: value or None}}`` of ``<suite>_published.csv``;
  games keyed without the ``gymnax:`` prefix."""
  header, rows = scores_lib.read_table(f'{_check(suite)}_published.csv')
  table = {}
  for row in rows:
    values = {}
    for name, cell in zip(header[1:], row[1:]):
      values[name] = float(cell) if cell.strip() else None
    table[row[0]] = values
  return table


def published_source(suite: str) -> str:
  return scores_lib.source_of(f'{_check(suite)}_published.csv')


def trim_rows(rows: Sequence[dict], max_rows: int = MAX_ROWS,
              columns: Sequence[str] = CURVE_COLUMNS) -> List[dict]:
  """About ``max_rows`` of ``rows``: evenly spaced, the first and last kept,
  plus every row with an evaluation result (so more when there are more
  evaluation rows than that); only the ``columns`` that any row has."""
  rows = list(rows)
  present = [c for c in columns if any(c in r and r[c] not in ('', None)
                                       for r in rows)]
  evals = {i for i, r in enumerate(rows)
           if r.get('eval_return_mean') not in (None, '')}
  if len(rows) > max_rows:
    keep = set(np.linspace(0, len(rows) - 1,
                           max(2, max_rows - len(evals))).round().astype(int))
  else:
    keep = set(range(len(rows)))
  keep |= evals
  return [{c: rows[i].get(c, '') for c in present} for i in sorted(keep)]


def write_rows(path: str, rows: Sequence[dict]):
  """A CSV of ``rows`` (columns of the first row), written atomically."""
  columns = list(rows[0]) if rows else list(CURVE_COLUMNS[:2])
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({c: row.get(c, '') for c in columns})
  os.replace(tmp, path)


def ship_run(logdir: str, dest: str, max_rows: int = MAX_ROWS) -> str:
  """Copies a run's ``config.json``, ``eval.json`` and ``DONE`` (those
  present) and a trimmed ``metrics.csv`` into ``dest``; returns ``dest``."""
  os.makedirs(dest, exist_ok=True)
  for name in ('config.json', 'eval.json', 'DONE'):
    src = os.path.join(logdir, name)
    if os.path.exists(src):
      shutil.copyfile(src, os.path.join(dest, name))
  write_rows(os.path.join(dest, 'metrics.csv'),
             trim_rows(read_metrics(os.path.join(logdir, 'metrics.csv')),
                       max_rows))
  return dest


def milestones(rows: Sequence[dict], thresholds: Sequence[float],
               window_games: int = 100) -> Dict[float, Optional[dict]]:
  """When a run's trailing mean game return first reached each threshold.

  ``rows``: a run's ``metrics.csv`` rows in order; each row's
  ``episode_return`` is the mean of the ``episodes`` games that ended in
  its interval. The trailing mean weights rows by their game counts and
  covers the last ``window_games`` games (at least that many, whole rows;
  fewer only before that many games have finished, which never counts as
  reaching a threshold). Returns ``{threshold: {'frames', 'wall_time',
  'mean'} or None}`` (None: never reached).
  """
  window: List[tuple] = []   # (games, return sum) per row, newest last
  reached: Dict[float, Optional[dict]] = {t: None for t in thresholds}
  for games, value, row in _game_rows(rows):
    window.append((games, value * games))
    while sum(g for g, _ in window[1:]) >= window_games:
      window.pop(0)
    total = sum(g for g, _ in window)
    if total < window_games:
      continue
    mean = sum(v for _, v in window) / total
    for t in thresholds:
      if reached[t] is None and mean >= t:
        reached[t] = {'frames': int(float(row['frames'])),
                      'wall_time': float(row.get('wall_time', 'nan') or 'nan'),
                      'mean': mean}
  return reached


def _game_rows(rows: Sequence[dict]) -> List[tuple]:
  """``(games, mean return, row)`` of the rows in which games ended."""
  out = []
  for row in rows:
    try:
      games = int(float(row.get('episodes', '') or 0))
      value = float(row.get('episode_return', ''))
    except ValueError:
      continue
    if games > 0 and math.isfinite(value):
      out.append((games, value, row))
  return out


def curve_ends(rows: Sequence[dict], games: int = 100
               ) -> Optional[tuple]:
  """``(first, last)``: mean return of a run's first and last ``games``
  finished games (whole rows, weighted by their game counts); None when
  fewer games finished."""
  ended = _game_rows(rows)
  if sum(n for n, _, _ in ended) < games:
    return None
  def mean_of(seq):
    total, acc = 0, 0.0
    for n, value, _ in seq:
      total += n
      acc += n * value
      if total >= games:
        break
    return acc / total
  return mean_of(ended), mean_of(reversed(ended))


def frames_per_second(rows: Sequence[dict]) -> Optional[float]:
  """Frames over the training loop's wall time at a run's last row."""
  for row in reversed(rows):
    try:
      frames, wall = float(row['frames']), float(row['wall_time'])
    except (KeyError, ValueError):
      continue
    if wall > 0:
      return frames / wall
  return None


def read_eval(run_dir: str) -> Optional[dict]:
  """A run's ``eval.json`` (``experiments.evaluate --json``), or None."""
  try:
    with open(os.path.join(run_dir, 'eval.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_process_seconds(run_dir: str) -> Optional[float]:
  """Wall time of the whole training process (start-up and compilation
  included) from the sweep's ``DONE`` marker, when the run finished in one
  process (no resume); None otherwise."""
  try:
    with open(os.path.join(run_dir, 'DONE')) as f:
      value = json.load(f).get('process_seconds')
  except (OSError, ValueError, AttributeError):
    return None
  return float(value) if value is not None else None


def read_wall_time(run_dir: str) -> Optional[float]:
  """The ``wall_time`` of the last row of a run's ``metrics.csv`` (the
  training loop's clock, first compilation included, summed over
  resumes)."""
  try:
    rows = read_metrics(os.path.join(run_dir, 'metrics.csv'))
  except OSError:
    return None
  for row in reversed(rows):
    try:
      value = float(row.get('wall_time', ''))
    except ValueError:
      continue
    if math.isfinite(value):
      return value
  return None


def atari_table(runs_by_game: Dict[str, Sequence[str]],
                presets: Dict[str, str], eval_games: int,
                milestone_values: Dict[str, Sequence[float]]) -> str:
  """Markdown ``results.md`` of the Atari reference runs.

  ``runs_by_game``: ``{env_id: [run directory per seed]}``. Per run: its
  final evaluation score (``eval.json``), its training curve's first and
  last 100-game means, the frames (training-loop minutes) at which the
  trailing 100-game mean first reached each of ``milestone_values[game]``,
  its frames per second; beside them the paper's scores and the target
  (``atari_published.csv``); ``met``: the evaluation score reaches it.
  """
  table = published('atari')
  lines = [
      f'Score: mean whole-game return of {eval_games} evaluation games '
      '(actions sampled, the run\'s own protocol: the paper\'s, up to 30 '
      'no-op starts) with the final checkpoint. Curve: mean whole-game '
      'return of the first and of the last 100 training games. Milestones: '
      'frames (and minutes of the training loop) when the trailing 100-game '
      'mean first reached the value. Paper: Espeholt et al. 2018, 200M '
      'frames, same protocol.', '',
      '| game | preset | seed | score | curve first -> last | milestones | '
      'frames/s | paper shallow / deep | target | met |',
      '|---|---|---|---|---|---|---|---|---|---|']
  for env_id, run_dirs in runs_by_game.items():
    key = game_key(env_id)
    pub = table.get(key, {})
    target = pub.get('target')
    for run in run_dirs:
      ev = read_eval(run)
      try:
        rows = read_metrics(os.path.join(run, 'metrics.csv'))
      except OSError:
        rows = []
      ends = curve_ends(rows, 100)
      marks = milestones(rows, milestone_values.get(key, ()), 100)
      mark_text = '; '.join(
          f'{t:g}: ' + ('not reached' if m is None else
                        f'{m["frames"] / 1e6:.1f}M '
                        f'({m["wall_time"] / 60:.0f} min)')
          for t, m in marks.items())
      fps = frames_per_second(rows)
      met = ('' if ev is None or target is None else
             'yes' if ev['mean'] >= target else 'no')
      paper = ' / '.join(f'{pub[c]:.1f}' if pub.get(c) is not None else '-'
                         for c in ('impala_shallow_200m', 'impala_deep_200m'))
      cells = [key, presets.get(env_id, ''), os.path.basename(run),
               f'{ev["mean"]:.1f}' if ev else '-',
               f'{ends[0]:.1f} -> {ends[1]:.1f}' if ends else '-',
               mark_text or '-', f'{fps:,.0f}' if fps else '-', paper,
               (f'{target:g} by {pub["target_frames"] / 1e6:.0f}M frames'
                if target is not None else '-'), met]
      lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', 'Sources: ' + published_source('atari')]
  return '\n'.join(lines) + '\n'
