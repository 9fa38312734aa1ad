"""Shipped reference runs and the published baselines they are compared with.

The repository ships the runs behind its reported results as package data,
so a user can overlay their own run on them (``python -m experiments.plot
--roots=runs/mine --reference=minatar``) without re-running anything::

  impala_jax/data/reference_runs/<suite>/<game>/seed_<s>/
      config.json    the run's config (``experiments.train`` writes it)
      metrics.csv    its trimmed curve: ``frames``, ``episode_return``,
                     ``episode_length``, ``wall_time``, the evaluation
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
from impala_jax.metrics import read_metrics

REFERENCE_SUITES = ('minatar',)
MAX_ROWS = 300
CURVE_COLUMNS = ('frames', 'episode_return', 'episode_length', 'wall_time',
                 'entropy', 'eval_return_mean', 'eval_return_median')
# The shipped games and their environment ids (--env of experiments.train).
SUITE_ENV_IDS = {
    'minatar': ('gymnax:Breakout-MinAtar', 'gymnax:SpaceInvaders-MinAtar',
                'gymnax:Asterix-MinAtar', 'gymnax:Freeway-MinAtar'),
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
  for prefix in ('gymnax:', 'gymnax_'):
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
