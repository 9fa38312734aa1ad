r"""Reproduces a shipped results table from scratch: train, evaluate, compare.

  python -m experiments.reproduce --suite=minatar --root=runs/minatar
  make reproduce-minatar                      # the same, into runs/minatar
  make reproduce-atari                        # --suite=atari into runs/atari

For ``--suite=minatar``: the four MinAtar games (``--preset=minatar``, each
game with its per-game settings from the preset) x ``--seeds`` (default
1,2,3), 10M steps each, one run at a time (``experiments.sweep``), then a
final evaluation of each run's last checkpoint (``experiments.evaluate``:
``--eval_games`` whole games, default 100, actions sampled from the policy),
then ``ROOT/results.md``: per game every seed's evaluation score and wall
time, the mean over seeds, the published baselines
(``impala_jax/data/minatar_published.csv``) and whether the target is met;
and ``ROOT/plots/`` (the curves overlaid on the shipped reference runs).

For ``--suite=atari``: Pong-v5 with ``--preset=cpu_pong`` (seed 1, 20M
frames) and the ``make train`` game with ``--preset=cpu_atari`` (seeds 1
and 2), each evaluated on 30 whole games; ``results.md`` has each run's
score, its curve's first and last 100-game means, the frames and minutes at
which the trailing 100-game mean first reached 0, 10 and 18 (Pong), its
frames/s, the paper's scores and the target (``atari_published.csv``).

Resumable: finished trainings and evaluations (``eval.json`` of the final
checkpoint) are skipped, an interrupted training resumes from its
checkpoint; re-run the same command after a crash or Ctrl-C. A run whose
saved ``config.json`` differs from what the preset gives now (an older
preset, other flags) stops the program before anything runs: use a new
``--root``. ``--ship`` (maintainers) copies the finished runs, trimmed, into
``impala_jax/data/reference_runs/<suite>`` and the curves PNG (drawn from
the shipped runs, as README's command draws it) into ``docs/``.

Exit status: 0 when every run trained and evaluated, 1 when one failed, 2
for bad flags or a results tree from other settings, 130 when stopped by
Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from absl import flags

from . import _cli
from impala_jax import reference_runs

_SUITE = flags.DEFINE_string('suite', 'minatar', 'Suite to reproduce: '
                             'minatar or atari.')
_ROOT = flags.DEFINE_string('root', None, 'Results tree (default '
                            'runs/<suite>).')
_SEEDS = flags.DEFINE_list('seeds', None, 'Seeds (default: the shipped '
                           'ones: MinAtar 1,2,3; Atari per game).')
_GAMES = flags.DEFINE_list('games', None, 'A subset of the suite\'s games '
                           '(default: all).')
_TOTAL_FRAMES = flags.DEFINE_integer('total_frames', None, 'Frames per run '
                                     '(default: the preset\'s).')
_EVAL_GAMES = flags.DEFINE_integer('eval_games', None, 'Whole games of the '
                                   'final evaluation of each run (default: '
                                   'MinAtar 100, Atari 30).')
_SHIP = flags.DEFINE_boolean('ship', False, 'Copy the finished runs into '
                             'the package\'s reference runs and docs/.')
_TRAIN_FLAGS = flags.DEFINE_multi_string(
    'train_flag', [], 'Extra flag for every training run (repeatable).')

# Per suite: each game's preset, the seeds shipped, the evaluation games.
SUITES = {
    'minatar': {
        'presets': {env: 'minatar'
                    for env in reference_runs.SUITE_ENV_IDS['minatar']},
        'seeds': {}, 'default_seeds': (1, 2, 3), 'eval_games': 100},
    'atari': {
        # Pong: issue 14's target run; Breakout: what `make train` runs.
        'presets': {'Pong-v5': 'cpu_pong', 'Breakout-v5': 'cpu_atari'},
        'seeds': {'Pong-v5': (1,), 'Breakout-v5': (1, 2)},
        'default_seeds': (1,), 'eval_games': 30},
}
# Atari: the trailing-mean returns whose first frames results.md lists.
MILESTONES = {'Pong-v5': (0.0, 10.0, 18.0)}
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


# Config fields that do not change what a run learns (a resumed run may
# differ in them).
_NOT_LEARNING = ('log_every_seconds', 'checkpoint_every_seconds',
                 'eval_every_frames', 'eval_games')


def _evaluate(run_dir: str, num_games: int, total_frames: int
              ) -> Optional[dict]:
  """``eval.json`` of a run, evaluating its last checkpoint unless the file
  already holds an evaluation of the final checkpoint with ``num_games``."""
  done = reference_runs.read_eval(run_dir)
  if (done is not None and done.get('num_games') == num_games and
      done.get('checkpoint_frames', -1) >= total_frames):
    return done
  out = os.path.join(run_dir, 'eval.json')
  command = [sys.executable, '-m', f'{__package__}.evaluate',
             f'--logdir={run_dir}', f'--num_games={num_games}',
             f'--num_envs={min(num_games, 50)}', f'--json={out}.tmp']
  with open(os.path.join(run_dir, 'eval.log'), 'a') as log:
    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT,
                           cwd=ROOT_DIR)
  if code != 0:
    print(f'failed to evaluate {run_dir} (exit {code}; see '
          f'{os.path.join(run_dir, "eval.log")})', flush=True)
    return None
  os.replace(out + '.tmp', out)
  return reference_runs.read_eval(run_dir)


def results_table(suite: str, root: str, seeds_by_game: Dict[str, List[int]],
                  eval_games: int) -> str:
  """The Markdown table of ``ROOT/results.md``."""
  if suite == 'atari':
    from . import _runs as sweep  # pylint: disable=g-import-not-at-top
    return reference_runs.atari_table(
        {e: [sweep.run_dir(root, e, seed) for seed in seeds]
         for e, seeds in seeds_by_game.items()},
        SUITES['atari']['presets'], eval_games, MILESTONES)
  return _minatar_table(root, seeds_by_game, eval_games)


def _minatar_table(root: str, seeds_by_game: Dict[str, List[int]],
                   eval_games: int) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from . import _runs as sweep  # pylint: disable=g-import-not-at-top
  suite = 'minatar'
  table = reference_runs.published(suite)
  lines = [
      f'Score: mean whole-game return of {eval_games} evaluation '
      'games (actions sampled) with the final checkpoint; wall time of the '
      'whole training process (start-up and compilation included; the '
      'training loop\'s own clock where the run was resumed).', '',
      '| game | seeds: score (wall s) | mean +- std | gymnax-blines PPO '
      '| MinAtar AC(lambda) 5M | PureJaxRL PPO here (wall s) | target '
      '(wall s) | met |',
      '|---|---|---|---|---|---|---|---|',
  ]
  def fmt(v, digits=1):
    return '' if v is None else f'{v:.{digits}f}'
  for env_id, seeds in seeds_by_game.items():
    key = reference_runs.game_key(env_id)
    cells, values, walls = [], [], []
    for seed in seeds:
      run = sweep.run_dir(root, env_id, seed)
      ev = reference_runs.read_eval(run)
      wall = reference_runs.read_process_seconds(run)
      if wall is None:
        wall = reference_runs.read_wall_time(run)
      if ev is None:
        cells.append(f's{seed}: -')
        continue
      values.append(float(ev['mean']))
      walls.append(wall)
      cells.append(f's{seed}: {ev["mean"]:.1f} ({fmt(wall, 0)})')
    pub = table.get(key, {})
    mean = float(np.mean(values)) if values else None
    met = ''
    if mean is not None and len(values) == len(seeds):
      ok_score = pub.get('target') is None or mean >= pub['target']
      ok_wall = pub.get('target_wall_s') is None or (
          None not in walls and max(walls) <= pub['target_wall_s'])
      met = ('yes' if ok_score and ok_wall else
             'no (' + ', '.join(w for w, bad in (
                 ('score', not ok_score), ('wall time', not ok_wall)) if bad)
             + ')')
    spread = (f'{mean:.1f} +- {float(np.std(values)):.1f}'
              if mean is not None else '')
    pj = pub.get('purejaxrl_ppo_10m_here')
    lines.append(
        f'| {key} | {"; ".join(cells)} | {spread} | '
        f'{fmt(pub.get("gymnax_blines_ppo_10m"))} | '
        f'{fmt(pub.get("minatar_ac_lambda_5m"))} | '
        + (f'{pj:.1f} ({pub["purejaxrl_wall_s_here"]:.0f})' if pj else '')
        + f' | {fmt(pub.get("target"))} ({fmt(pub.get("target_wall_s"), 0)})'
        f' | {met} |')
  lines += ['', 'Sources: ' + reference_runs.published_source(suite)]
  return '\n'.join(lines) + '\n'


def _game_settings(suite: str, games: List[str], seeds: Optional[List[int]],
                   total: Optional[int]) -> Dict[str, Tuple[str, List[int],
                                                            int]]:
  """``{env_id: (preset, seeds, total_frames)}``: ``--seeds`` and
  ``--total_frames`` when given, else the shipped runs' settings."""
  from impala_jax import presets  # pylint: disable=g-import-not-at-top
  spec = SUITES[suite]
  out = {}
  for env_id in games:
    preset = spec['presets'][env_id]
    game_seeds = seeds or list(spec['seeds'].get(env_id,
                                                 spec['default_seeds']))
    frames = total if total is not None else presets.get_preset(
        preset, env=env_id).total_frames
    out[env_id] = (preset, game_seeds, frames)
  return out


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  from . import _runs as sweep  # pylint: disable=g-import-not-at-top
  suite = _SUITE.value
  if suite not in SUITES:
    _fail(f'--suite must be one of {", ".join(SUITES)}, got {suite!r}.')
  all_games = list(SUITES[suite]['presets'])
  games = all_games
  if _GAMES.value:
    by_key = {_key(g): g for g in all_games}
    games = []
    for g in _GAMES.value:
      if _key(g) not in by_key:
        _fail(f'--games: {g!r} is not in the {suite} suite; choose from '
              f'{", ".join(by_key)}.')
      games.append(by_key[_key(g)])
  seeds = None
  if _SEEDS.value is not None:
    seeds, error = sweep.parse_seeds(_SEEDS.value)
    if error:
      _fail(error)
  eval_games = (SUITES[suite]['eval_games'] if _EVAL_GAMES.value is None
                else _EVAL_GAMES.value)
  if eval_games < 1:
    _fail(f'--eval_games must be >= 1, got {eval_games}.')
  error = sweep.train_flag_error(_TRAIN_FLAGS.value, 'reproduce')
  if error:
    _fail(error)
  if _TOTAL_FRAMES.value is not None and _TOTAL_FRAMES.value <= 0:
    _fail(f'--total_frames must be > 0, got {_TOTAL_FRAMES.value}.')
  settings = _game_settings(suite, games, seeds, _TOTAL_FRAMES.value)
  root = os.path.abspath(_ROOT.value or os.path.join('runs', suite))
  runs = []
  for env_id, (preset, game_seeds, total) in settings.items():
    for run in sweep.plan([env_id], game_seeds, root=root, preset=preset,
                          total_frames=total, extra=_TRAIN_FLAGS.value):
      stale = _stale_fields(run.logdir, preset, env_id, run.seed, total)
      if stale:
        _fail(f'{run.logdir} was trained with other settings ('
              f'{", ".join(stale)} differ from --preset={preset} now); use '
              'a new --root, or delete that run.')
      runs.append(run)
  n = len(runs)
  print(f'reproduce: {suite}, {len(games)} games, {n} runs ('
        + ', '.join(f'{_key(e)}: --preset={p}, seeds '
                    f'{",".join(map(str, sd))}, {t:,} frames'
                    for e, (p, sd, t) in settings.items())
        + f') into {root} ({sum(r.status == "skipped" for r in runs)} '
        'trained already)', flush=True)
  start = time.monotonic()
  failed = 0
  for i, run in enumerate(runs, 1):
    total = settings[run.env_id][2]
    if run.status == 'pending':
      print(f'[{i}/{n}] train {run.env_id} seed {run.seed}', flush=True)
      try:
        sweep.execute([run], parallel=1, total_frames=total, cwd=ROOT_DIR)
      except KeyboardInterrupt:
        print('reproduce: stopped; run the same command again to resume.',
              file=sys.stderr)
        return 130
      if run.status != 'done':
        failed += 1
        continue
    try:
      ev = _evaluate(run.logdir, eval_games, total)
    except KeyboardInterrupt:
      print('reproduce: stopped; run the same command again to resume.',
            file=sys.stderr)
      return 130
    if ev is None:
      failed += 1
      continue
    print(f'[{i}/{n}] {run.env_id} seed {run.seed}: evaluation mean '
          f'{ev["mean"]:.2f} over {ev["num_games"]} games '
          f'({time.monotonic() - start:.0f} s so far)', flush=True)
  seeds_by_game = {e: sd for e, (_, sd, _) in settings.items()}
  table = results_table(suite, root, seeds_by_game, eval_games)
  with open(os.path.join(root, 'results.md'), 'w') as f:
    f.write(table)
  print(table)
  _plots(suite, root, os.path.join(root, 'plots'),
         reference=os.path.isdir(reference_runs.reference_root(suite)))
  if _SHIP.value and not failed:
    _ship(suite, root, seeds_by_game, eval_games)
  return 1 if failed else 0


def _key(env_id: str) -> str:
  return reference_runs.game_key(env_id)


def _stale_fields(logdir: str, preset: str, env_id: str, seed: int,
                  total: int) -> List[str]:
  """The learning settings in which ``logdir/config.json`` differs from
  the preset's for this game (empty when no config was written yet)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from impala_jax import presets  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(logdir, 'config.json')) as f:
      saved = json.load(f).get('config', {})
  except (OSError, ValueError):
    return []
  want = dataclasses.asdict(dataclasses.replace(
      presets.get_preset(preset, env=env_id), seed=seed,
      total_frames=total))
  def norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value
  return sorted(k for k, v in want.items()
                if k in saved and k not in _NOT_LEARNING and
                norm(saved[k]) != norm(v))


def _plots(suite: str, root: str, out: str, reference: bool) -> bool:
  """Curves of ``root`` (and the shipped reference runs) into ``out``."""
  command = [sys.executable, '-m', f'{__package__}.plot',
             f'--out={out}', '--paper_variant=none']
  if root:
    command += [f'--roots={root}',
                f'--labels={os.path.basename(root) or "runs"}']
  if reference:
    command.append(f'--reference={suite}')
  done = subprocess.run(command, cwd=ROOT_DIR, capture_output=True,
                        text=True)
  if done.returncode != 0:
    print(f'reproduce: plotting failed (exit {done.returncode}): '
          f'{done.stderr.strip().splitlines()[-1:]}', file=sys.stderr)
  return done.returncode == 0


def _ship(suite: str, root: str, seeds_by_game: Dict[str, List[int]],
          eval_games: int):
  from . import _runs as sweep  # pylint: disable=g-import-not-at-top
  dest_root = os.path.join(ROOT_DIR, 'impala_jax', 'data', 'reference_runs',
                           suite)
  for env_id, seeds in seeds_by_game.items():
    for seed in seeds:
      src = sweep.run_dir(root, env_id, seed)
      dest = os.path.join(dest_root, sweep.game_dir_name(env_id),
                          f'seed_{seed}')
      reference_runs.ship_run(src, dest)
  with open(os.path.join(dest_root, 'results.md'), 'w') as f:
    f.write(results_table(suite, root, seeds_by_game, eval_games))
  docs = os.path.join(ROOT_DIR, 'docs')
  os.makedirs(docs, exist_ok=True)
  shipped_plots = os.path.join(root, 'plots_shipped')
  grid = os.path.join(shipped_plots, 'all_games.png')
  if _plots(suite, '', shipped_plots, reference=True) and os.path.exists(
      grid):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.copyfile(grid, os.path.join(docs, f'{suite}_curves.png'))
  n = sum(len(s) for s in seeds_by_game.values())
  print(f'reproduce: shipped {n} runs to {dest_root}', flush=True)


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(lambda argv: sys.exit(main(argv)), __name__)


if __name__ == '__main__':
  run()
