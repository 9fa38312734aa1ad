"""Learning curves and final-score tables from results trees.

A results tree (``experiments/sweep.py`` writes one) is
``ROOT/<game>/<run>/metrics.csv`` with one directory per seed (``seed_1``
...), each ``metrics.csv`` having ``frames`` and ``episode_return`` columns
(``impala_jax.metrics``). Everything here but the ``plot_*`` / ``save_*``
functions is pure NumPy; those draw with Matplotlib's Agg backend (no
display needed).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from impala_jax import config as config_lib
from impala_jax import reference_runs
from impala_jax import scores as scores_lib
from impala_jax.metrics import read_metrics

RETURN_KEY = 'episode_return'
FRAMES_KEY = 'frames'


@dataclasses.dataclass
class Curve:
  """One run's learning curve: ``frames[i]`` and ``returns[i]`` (finite);
  ``protocol``: the run's Atari protocol (``config.json``; '' if unknown or
  not Atari)."""
  run: str
  frames: np.ndarray
  returns: np.ndarray
  protocol: str = ''


def read_protocol(run_dir: str) -> str:
  """The Atari protocol a run's ``config.json`` names: ``'paper'``,
  ``'machado'``, ``'paper+changes'`` when it departs from it; '' when not
  an Atari run or no config. Runs written before the protocol was recorded
  (no ``atari_protocol`` entry) followed the paper's unless their envpool
  arguments say otherwise."""
  try:
    with open(os.path.join(run_dir, 'config.json')) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return ''
  recorded = saved.get('atari_protocol')
  if isinstance(recorded, dict):
    name = str(recorded.get('name', ''))
    return name + ('+changes' if recorded.get('departures') else '')
  kwargs = (saved.get('env_spec') or {}).get('envpool_kwargs') or {}
  if 'repeat_action_probability' not in kwargs:
    return ''
  # The effective envpool arguments, in the protocols' field names.
  effective = {'noop_max': kwargs.get('noop_max'),
               'sticky_action_prob': kwargs.get('repeat_action_probability'),
               'full_action_space': kwargs.get('full_action_space'),
               'use_fire_reset': kwargs.get('use_fire_reset', True)}
  return next((name for name, fixed in config_lib.ATARI_PROTOCOLS.items()
               if effective == fixed), 'custom')


# Results of one tree: {game: [Curve per seed]}.
Results = Dict[str, List[Curve]]


def read_curve(path: str, run: str = '', key: str = RETURN_KEY,
               frames_divisor: int = 1) -> Optional[Curve]:
  """A ``Curve`` from a ``metrics.csv`` (or its directory); rows without a
  finite return (no game finished in the interval) are skipped. None when
  the file has no such row. ``key``: the return column (a multi-task run's
  ``episode_return/<task>``); ``frames_divisor``: frames are divided by it
  (a task's share of a multi-task run's frames)."""
  try:
    rows = read_metrics(path)
  except OSError:
    return None
  frames, returns = [], []
  for row in rows:
    try:
      f = float(row.get(FRAMES_KEY, '')) / frames_divisor
      r = float(row.get(key, ''))
    except ValueError:
      continue
    if math.isfinite(f) and math.isfinite(r):
      frames.append(f)
      returns.append(r)
  if not frames:
    return None
  order = np.argsort(frames, kind='stable')
  run_dir = path if os.path.isdir(path) else os.path.dirname(path)
  return Curve(run or os.path.basename(run_dir),
               np.asarray(frames)[order], np.asarray(returns)[order],
               read_protocol(run_dir))


TASK_PREFIX = RETURN_KEY + '/'


def task_curves(path: str, run: str = '') -> Dict[str, Curve]:
  """A multi-task run's curves, ``{task: Curve}`` from its
  ``episode_return/<task>`` columns, each over the task's share of the
  frames (``frames / K``: the tasks get equal shares). Empty for a
  single-task run."""
  try:
    rows = read_metrics(path)
  except OSError:
    return {}
  names = [k[len(TASK_PREFIX):] for k in (rows[0] if rows else {})
           if k.startswith(TASK_PREFIX)]
  curves = {}
  for name in names:
    curve = read_curve(path, run, key=TASK_PREFIX + name,
                       frames_divisor=len(names))
    if curve is not None:
      curves[name] = curve
  return curves


def load_results(root: str) -> Results:
  """``{game: [Curve, ...]}`` of ``ROOT/<game>/<run>/metrics.csv`` (runs
  sorted by name; games and runs without data left out). A multi-task run
  (``ROOT/<any name>/<run>/``, per-task columns) adds one curve to each of
  its tasks instead (``task_curves``), so its games are plotted and tabled
  beside single-task runs of the same games."""
  results: Results = {}
  if not os.path.isdir(root):
    raise FileNotFoundError(f'no results tree at {root!r}.')
  for game in sorted(os.listdir(root)):
    game_dir = os.path.join(root, game)
    if not os.path.isdir(game_dir):
      continue
    curves = []
    for run in sorted(os.listdir(game_dir)):
      path = os.path.join(game_dir, run, 'metrics.csv')
      if os.path.isfile(path):
        per_task = task_curves(path, run)
        for task, curve in per_task.items():
          results.setdefault(task, []).append(curve)
        curve = None if per_task else read_curve(path, run)
        if curve is not None:
          curves.append(curve)
    if curves:
      results.setdefault(game, []).extend(curves)
  return {game: results[game] for game in sorted(results)}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing moving average over ``window`` points (shorter at the
  start); ``window <= 1`` returns a copy."""
  values = np.asarray(values, dtype=np.float64)
  if window <= 1 or values.size == 0:
    return values.copy()
  cumsum = np.cumsum(np.insert(values, 0, 0.0))
  idx = np.arange(1, values.size + 1)
  start = np.maximum(idx - window, 0)
  return (cumsum[idx] - cumsum[start]) / (idx - start)


def interpolate(curve: Curve, grid: np.ndarray, window: int = 1
                ) -> np.ndarray:
  """The (smoothed) curve linearly interpolated at ``grid`` frames; NaN
  outside the frames the run covered."""
  values = smooth(curve.returns, window)
  out = np.interp(grid, curve.frames, values)
  out[(grid < curve.frames[0]) | (grid > curve.frames[-1])] = np.nan
  return out


def common_grid(curves: Sequence[Curve], points: int = 100,
                overlap: bool = True) -> np.ndarray:
  """``points`` frame values from the first logged frame to the last frame
  all curves reach (``overlap``) or any curve reaches."""
  starts = [c.frames[0] for c in curves]
  ends = [c.frames[-1] for c in curves]
  start = max(starts) if overlap else min(starts)
  end = min(ends) if overlap else max(ends)
  if end <= start:
    return np.asarray([end], dtype=np.float64)
  return np.linspace(start, end, points)


def seed_band(curves: Sequence[Curve], window: int = 1, points: int = 200,
              spread: str = 'minmax'
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(grid, mean, low, high) over seeds on a common grid covering every
  seed's range (at each frame, over the seeds that reached it). ``spread``:
  ``'minmax'`` (low = min, high = max) or ``'std'`` (mean -/+ std)."""
  if spread not in ('minmax', 'std'):
    raise ValueError(f'spread must be minmax or std, got {spread!r}.')
  grid = common_grid(curves, points, overlap=False)
  stack = np.stack([interpolate(c, grid, window) for c in curves])
  with np.errstate(invalid='ignore'), _quiet_nan():
    mean = np.nanmean(stack, axis=0)
    if spread == 'minmax':
      low, high = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
    else:
      std = np.nanstd(stack, axis=0)
      low, high = mean - std, mean + std
  return grid, mean, low, high


class _quiet_nan:
  """Silences NumPy's all-NaN-slice RuntimeWarnings inside a block."""

  def __enter__(self):
    import warnings  # pylint: disable=g-import-not-at-top
    self._ctx = warnings.catch_warnings()
    self._ctx.__enter__()
    warnings.simplefilter('ignore', category=RuntimeWarning)

  def __exit__(self, *exc):
    return self._ctx.__exit__(*exc)


def final_score(curve: Curve, fraction: float = 0.1) -> float:
  """Mean return over the last ``fraction`` of the run's frames (rows with
  ``frames >= (1 - fraction) * last``; at least the last row)."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'fraction must be in (0, 1], got {fraction}.')
  last = curve.frames[-1]
  keep = curve.frames >= (1.0 - fraction) * last
  keep[-1] = True
  return float(np.mean(curve.returns[keep]))


def final_scores(results: Results, fraction: float = 0.1
                 ) -> Dict[str, List[float]]:
  """``{game: [final score per seed]}``."""
  return {game: [final_score(c, fraction) for c in curves]
          for game, curves in results.items()}


def normalized_aggregate_curve(results: Results, points: int = 100,
                               window: int = 1, capped: Optional[bool] = None,
                               statistic: str = 'median'
                               ) -> Optional[Tuple[np.ndarray, np.ndarray,
                                                   Tuple[str, ...]]]:
  """(grid, aggregate, games) of the suite's normalised-score curve.

  Each seed's (smoothed) curve is normalised with its game's human/random
  scores and interpolated on a grid the runs of every game cover (up to
  the shortest game's last frame); per game the mean over seeds, then the
  ``statistic`` (``median`` or ``mean``) over games. Games without
  reference scores are left out; None when none has them.
  """
  if statistic not in ('median', 'mean'):
    raise ValueError(f'statistic must be median or mean, got {statistic!r}.')
  games = [g for g in results if scores_lib.reference_for(g) is not None]
  if not games:
    return None
  all_curves = [c for g in games for c in results[g]]
  grid = common_grid(all_curves, points, overlap=True)
  per_game = []
  for game in games:
    stack = np.stack([np.asarray(scores_lib.normalized_score(
        game, interpolate(c, grid, window), capped), np.float64).reshape(-1)
                      for c in results[game]])
    with _quiet_nan():
      per_game.append(np.nanmean(stack, axis=0))
  per_game = np.stack(per_game)
  with _quiet_nan():
    agg = (np.nanmedian(per_game, axis=0) if statistic == 'median'
           else np.nanmean(per_game, axis=0))
  return grid, agg, tuple(games)


# ------------------------------------------------------------------ tables


def _fmt(value: Optional[float]) -> str:
  if value is None or not math.isfinite(value):
    return 'n/a'
  if abs(value) >= 1000:
    return f'{value:,.0f}'
  return f'{value:.2f}' if abs(value) < 100 else f'{value:.1f}'


def _protocol_lines(results_by_label: Mapping[str, Results],
                    paper_atari: bool) -> List[str]:
  """Which Atari protocol each label's runs and the paper's scores used,
  and a warning where they differ (``paper_atari``: the table shows the
  paper's Atari scores)."""
  protocols = {label: sorted({c.protocol for curves in res.values()
                              for c in curves if c.protocol})
               for label, res in results_by_label.items()}
  parts = [f'{label}: {", ".join(p)}' for label, p in protocols.items() if p]
  if paper_atari:
    parts.append('paper scores: '
                 + scores_lib.PUBLISHED_PROTOCOLS['impala_paper'])
  if not parts:
    return []
  lines = ['Atari protocols: ' + '; '.join(parts) + '.', '']
  for label, p in protocols.items():
    if paper_atari and p and p != ['paper']:
      lines += [f'Note: {label} ran under {", ".join(p)}, the paper\'s '
                'scores under the paper protocol: not like for like.', '']
  return lines


def suite_matrices(finals: Mapping[str, Mapping[str, Sequence[float]]]
                   ) -> Dict[str, Tuple[Tuple[str, ...], np.ndarray]]:
  """Per label, ``(games, [runs, games] normalised scores)`` from
  ``{label: {game: [final score per run]}}``, over the games with
  human/random references; every game keeps the first ``n`` runs, ``n``
  the fewest any game has. Labels with no such game are left out."""
  out = {}
  for label, by_game in finals.items():
    kept = {g: list(v) for g, v in by_game.items()
            if v and scores_lib.reference_for(g) is not None}
    if not kept:
      continue
    n = min(len(v) for v in kept.values())
    games, matrix = scores_lib.normalized_matrix(
        {g: v[:n] for g, v in sorted(kept.items())})
    out[label] = (games, matrix)
  return out


def final_table(results_by_label: Mapping[str, Results], *,
                fraction: float = 0.1, paper_variant: Optional[str] = None,
                reps: int = 2000, seed: int = 0) -> str:
  """A Markdown table of final scores per game (mean over seeds of each
  seed's final score, +- std, number of seeds), its normalised score, and
  the paper's score when known; then the suite aggregates (median, IQM,
  mean of normalised scores, with 95% stratified-bootstrap intervals)
  per label over the games that have reference scores.

  ``paper_variant``: ``'none'`` leaves the paper columns out; None the
  suite's default (Atari: IMPALA deep).
  """
  labels = list(results_by_label)
  finals = {label: final_scores(res, fraction)
            for label, res in results_by_label.items()}
  games = sorted({g for res in results_by_label.values() for g in res})
  show_paper = paper_variant != 'none'
  header = ['Game']
  for label in labels:
    header += [f'{label} score', f'{label} normalised']
  if show_paper:
    header += ['paper score', 'paper normalised']
  lines = [
      f'Final score: mean return over the last {100 * fraction:g}% of each '
      'run\'s frames, then mean +- std over seeds (n). Normalised: '
      '(score - random) / (human - random), DMLab-30 capped at 100%.',
      '']
  lines += _protocol_lines(results_by_label, show_paper and any(
      scores_lib.canonical_game(g)[0] == 'atari57' for g in games))
  lines += [
      '| ' + ' | '.join(header) + ' |',
      '|' + '---|' * len(header),
  ]
  for game in games:
    row = [game]
    for label in labels:
      values = finals[label].get(game)
      if not values:
        row += ['', '']
        continue
      mean = float(np.mean(values))
      std = float(np.std(values))
      cell = _fmt(mean) + (f' +- {_fmt(std)}' if len(values) > 1 else '')
      row.append(f'{cell} ({len(values)})')
      norm = (scores_lib.normalized_score(game, values)
              if scores_lib.reference_for(game) else None)
      row.append(scores_lib.format_percent(float(np.mean(norm)))
                 if norm is not None else '')
    if show_paper:
      paper = scores_lib.paper_score_for(game, paper_variant)
      row.append(_fmt(paper) if paper is not None else '')
      row.append(scores_lib.format_percent(
          scores_lib.normalized_score(game, paper))
                 if paper is not None else '')
    lines.append('| ' + ' | '.join(row) + ' |')
  aggregate_lines = []
  matrices = suite_matrices(finals)
  for label, (kept, matrix) in matrices.items():
    n = matrix.shape[0]
    cis = scores_lib.aggregates_with_ci(matrix, reps=reps, seed=seed)
    parts = [f'{name} {scores_lib.format_percent(ci.point)} '
             f'[{scores_lib.format_percent(ci.low)}, '
             f'{scores_lib.format_percent(ci.high)}]'
             for name, ci in cis.items()]
    aggregate_lines.append(f'- **{label}** ({len(kept)} games, {n} '
                           f'run{"s" if n > 1 else ""} each): '
                           + ', '.join(parts))
  for (a, (games_a, x)), (b, (games_b, y)) in itertools.combinations(
      matrices.items(), 2):
    if games_a != games_b:
      continue
    poi = scores_lib.probability_of_improvement(x, y, reps=reps, seed=seed)
    aggregate_lines.append(
        f'- P({a} > {b}) = {poi.point:.2f} [{poi.low:.2f}, {poi.high:.2f}] '
        f'(probability of improvement, {len(games_a)} games)')
  if show_paper:
    for suite in scores_lib.SUITES:
      keys = [scores_lib.canonical_game(g) for g in games]
      keys = [k for s, k in keys if s == suite]
      if not keys:
        continue
      paper = scores_lib.paper_scores(
          suite, paper_variant if paper_variant in
          scores_lib.PAPER_VARIANTS[suite] else None)
      values = {k: [paper[k]] for k in keys if paper.get(k) is not None}
      if values:
        _, matrix = scores_lib.normalized_matrix(values)
        protocol = (', paper protocol' if suite == 'atari57' else '')
        aggregate_lines.append(
            f'- **paper ({suite}{protocol}, same {len(values)} games)**: median '
            f'{scores_lib.format_percent(scores_lib.aggregate_median(matrix))}'
            f', mean '
            f'{scores_lib.format_percent(scores_lib.aggregate_mean(matrix))}')
  if aggregate_lines:
    lines += ['', 'Human-normalised aggregates (rliable: 95% stratified '
              'bootstrap confidence intervals; optimality gap: lower is '
              'better):', ''] + aggregate_lines
  return '\n'.join(lines) + '\n'


def published_table(results_by_label: Mapping[str, Results], suite: str, *,
                    fraction: float = 0.1,
                    reference_root: Optional[str] = None) -> str:
  """Markdown: per game of a reference suite (``reference_runs``), each
  label's final training-curve score (mean over seeds), the shipped runs'
  final evaluation score (mean over their ``eval.json``), and the suite's
  published baselines."""
  published = reference_runs.published(suite)
  columns = [c for c in next(iter(published.values()))] if published else []
  labels = list(results_by_label)
  finals = {label: {reference_runs.game_key(g): v
                    for g, v in final_scores(res, fraction).items()}
            for label, res in results_by_label.items()}
  root = reference_root or reference_runs.reference_root(suite)
  header = (['game'] + [f'{label} (curve)' for label in labels] +
            ['shipped runs (evaluation)'] + columns)
  lines = [f'Published {suite} baselines beside the final scores (curve: '
           f'mean return over the last {100 * fraction:g}% of frames, mean '
           'over seeds; evaluation: the shipped runs\' final evaluation).',
           '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for game, values in published.items():
    row = [game]
    for label in labels:
      v = finals[label].get(game)
      row.append(_fmt(float(np.mean(v))) if v else '')
    evals = []
    game_dir = os.path.join(root, os.path.basename(
        reference_runs.game_dir(suite, game)))
    if os.path.isdir(game_dir):
      for run in sorted(os.listdir(game_dir)):
        ev = reference_runs.read_eval(os.path.join(game_dir, run))
        if ev is not None:
          evals.append(float(ev['mean']))
    row.append(f'{_fmt(float(np.mean(evals)))} ({len(evals)})' if evals
               else '')
    row += [_fmt(values[c]) if values[c] is not None else '' for c in columns]
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- drawing


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_game(ax, game: str, curves_by_label: Mapping[str, Sequence[Curve]],
              *, window: int = 5, spread: str = 'minmax',
              paper_variant: Optional[str] = None, legend: bool = True):
  """Draws one game's curves (mean line, spread band per label) and the
  paper's final score as a dashed line, on a Matplotlib axes."""
  for i, (label, curves) in enumerate(curves_by_label.items()):
    if not curves:
      continue
    grid, mean, low, high = seed_band(curves, window, spread=spread)
    color = f'C{i}'
    ax.plot(grid, mean, color=color, label=f'{label} ({len(curves)} seeds)',
            marker='o' if grid.size < 3 else None)
    if len(curves) > 1:
      ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
  if paper_variant != 'none':
    paper = scores_lib.paper_score_for(game, paper_variant)
    if paper is not None:
      ax.axhline(paper, color='k', linestyle='--', linewidth=1,
                 label=(f'IMPALA paper: {_fmt(paper)}' if legend
                        else 'IMPALA paper final score'))
  ax.set_title(game)
  ax.set_xlabel('frames')
  ax.set_ylabel('episode return')
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(fontsize='small')


def save_game_plots(results_by_label: Mapping[str, Results], out_dir: str,
                    **kwargs) -> List[str]:
  """One PNG per game (``<game>.png``) plus ``all_games.png`` with every
  game in a grid when there are several. Returns the paths written."""
  plt = _pyplot()
  os.makedirs(out_dir, exist_ok=True)
  games = sorted({g for res in results_by_label.values() for g in res})
  paths = []
  for game in games:
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_game(ax, game, {label: res.get(game, [])
                         for label, res in results_by_label.items()}, **kwargs)
    fig.tight_layout()
    path = os.path.join(out_dir, f'{_file_name(game)}.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  if len(games) > 1:
    cols = min(len(games), 4 if len(games) <= 16 else 8)
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows),
                             squeeze=False)
    for ax, game in zip(axes.flat, games):
      plot_game(ax, game, {label: res.get(game, [])
                           for label, res in results_by_label.items()},
                legend=False, **kwargs)
      ax.set_xlabel('')
      ax.set_ylabel('')
      ax.title.set_fontsize('small')
      ax.tick_params(labelsize='x-small')
    for ax in list(axes.flat)[len(games):]:
      ax.axis('off')
    legend = {}
    for ax in axes.flat:   # every label once, whichever game has it
      for handle, text in zip(*ax.get_legend_handles_labels()):
        legend.setdefault(text.split(' (')[0], handle)
    if legend:
      fig.legend(list(legend.values()), list(legend), loc='lower center',
                 ncol=min(len(legend), 4), fontsize='small')
    fig.tight_layout(rect=(0, 0.12 / rows if legend else 0, 1, 1))
    path = os.path.join(out_dir, 'all_games.png')
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)
  return paths


def save_aggregate_plot(results_by_label: Mapping[str, Results], path: str,
                        *, window: int = 5, statistic: str = 'median'
                        ) -> Optional[str]:
  """The normalised-score aggregate curve of each label in one PNG; None
  (nothing written) when no game has reference scores."""
  curves = {}
  for label, results in results_by_label.items():
    agg = normalized_aggregate_curve(results, window=window,
                                     statistic=statistic)
    if agg is not None:
      curves[label] = agg
  if not curves:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (label, (grid, values, games)) in enumerate(curves.items()):
    ax.plot(grid, 100.0 * values, color=f'C{i}',
            label=f'{label} ({len(games)} games)')
  ax.axhline(100.0, color='k', linestyle=':', linewidth=1, label='human')
  ax.set_xlabel('frames')
  ax.set_ylabel(f'{statistic} human-normalised score (%)')
  ax.set_title(f'{statistic.capitalize()} human-normalised score')
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def save_rliable_plots(results_by_label: Mapping[str, Results], out_dir: str,
                       *, fraction: float = 0.1, reps: int = 2000,
                       seed: int = 0) -> List[str]:
  """rliable's suite figures from each label's final scores (the games with
  human/random references): ``aggregate_intervals.png`` (median, IQM, mean
  and optimality gap with 95% stratified-bootstrap intervals) and
  ``performance_profile.png`` (fraction of runs above each normalised
  score, with its band). Returns the paths written (none without such
  games)."""
  finals = {label: final_scores(res, fraction)
            for label, res in results_by_label.items()}
  matrices = {label: matrix for label, (_, matrix)
              in suite_matrices(finals).items()}
  if not matrices:
    return []
  plt = _pyplot()
  from rliable import plot_utils  # pylint: disable=g-import-not-at-top
  names = tuple(scores_lib.AGGREGATES)
  points, intervals = {}, {}
  for label, matrix in matrices.items():
    cis = scores_lib.aggregates_with_ci(matrix, reps=reps, seed=seed,
                                        names=names)
    points[label] = np.array([cis[n].point for n in names])
    intervals[label] = np.array([[cis[n].low for n in names],
                                 [cis[n].high for n in names]])
  colors = {label: f'C{i}' for i, label in enumerate(matrices)}
  os.makedirs(out_dir, exist_ok=True)
  fig, _ = plot_utils.plot_interval_estimates(
      points, intervals, metric_names=['Median', 'IQM', 'Mean',
                                       'Optimality gap'],
      algorithms=list(matrices), colors=colors,
      xlabel='Human-normalised score',
      # rliable places the label for tall figures; short ones need it lower.
      xlabel_y_coordinate=-0.1 - 1.0 / len(matrices))
  agg_path = os.path.join(out_dir, 'aggregate_intervals.png')
  fig.savefig(agg_path, dpi=100, bbox_inches='tight')
  plt.close(fig)
  top = max(2.0, max(float(np.max(m)) for m in matrices.values()))
  taus = np.linspace(0.0, top, 41)
  profiles = scores_lib.performance_profile(matrices, taus, reps=reps,
                                            seed=seed)
  fig, ax = plt.subplots(figsize=(6, 4))
  plot_utils.plot_performance_profiles(
      {label: p[0] for label, p in profiles.items()}, taus,
      performance_profile_cis={label: np.stack([p[1], p[2]])
                               for label, p in profiles.items()},
      colors=colors, ax=ax, xlabel=r'Human-normalised score ($\tau$)')
  ax.legend([plt.Line2D([0], [0], color=colors[label]) for label in matrices],
            list(matrices), fontsize='small')
  fig.tight_layout()
  profile_path = os.path.join(out_dir, 'performance_profile.png')
  fig.savefig(profile_path, dpi=100)
  plt.close(fig)
  return [agg_path, profile_path]


def _file_name(game: str) -> str:
  return ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in game)
