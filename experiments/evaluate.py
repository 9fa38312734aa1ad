r"""Plays whole games with a trained run's latest checkpoint.

  python -m experiments.evaluate --logdir=runs/breakout --num_games=30 \
      --greedy --video=runs/breakout/game.gif

Reads the run's config (``LOGDIR/config.json``, else the checkpoint's
``meta['config']``), restores the newest checkpoint in ``LOGDIR/checkpoints``
and plays ``--num_games`` whole games on fresh environments built with the
run's settings (Atari: the same no-op starts, sticky actions, life handling
and time limit as training) and a seed of their own (``--seed``). Prints
one line per statistic (mean, median, ...; raw, unclipped whole-game
scores) and, when ``impala_jax.scores`` knows the game, the human-normalised
score. ``--video`` records environment 0's first game as a GIF or an MP4
(H.264). ``--json`` also writes the results as JSON.

Anakin runs (``gymnax:`` environments) are evaluated on the same JAX
environments stepped from the host (``JaxBatchedEnv``).

Multi-task runs (``--env=a,b,...``): every task plays ``--num_games``
games, each exactly as the agent trained on it (padded observations,
reward scale); one block per task is printed and, where every task has
reference scores, the median and mean normalised score over the tasks.
``--json`` then holds ``{'tasks': {name: results}, ...}``; ``--video``
records the first task.

Errors (missing logdir, no checkpoint, unusable config) print one
``error:`` line and exit with status 2.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
from absl import logging

from . import _cli

FLAGS = flags.FLAGS

flags.DEFINE_string('logdir', None, 'The run directory to evaluate.')
flags.DEFINE_integer('num_games', 10, 'Whole games to play.')
flags.DEFINE_boolean('greedy', False,
                     'argmax actions (default: sample from the policy).')
flags.DEFINE_integer('seed', 12345, 'Seed of the evaluation environments '
                     'and of the action sampling.')
flags.DEFINE_integer('num_envs', None,
                     'Parallel environments (default: min(num_games, 8)).')
flags.DEFINE_string('video', None, 'Record one game to this .gif/.mp4 path.')
flags.DEFINE_float('video_fps', 30.0, 'Frames per second of the video.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('json', None, 'Also write the results to this file.')
flags.DEFINE_string('wandb_project', None,
                    'Log the scores (and --video) to this Weights & Biases '
                    'project, in the run\'s own W&B run (LOGDIR/wandb_id). '
                    'Default: the project the run trained with, if any; '
                    '"" turns it off.')
flags.DEFINE_string('wandb_mode', None,
                    'online | offline | disabled (default: the run\'s).')


class UsageError(Exception):
  """A one-line error for the user (exit status 2)."""


def load_run(logdir: str, step=None):
  """``(config, network, params, meta)`` of the run in ``logdir``."""
  # Heavy imports after flag parsing so --help and errors stay fast.
  import jax  # pylint: disable=g-import-not-at-top
  from impala_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from impala_jax import evaluation  # pylint: disable=g-import-not-at-top
  from impala_jax.core import learner as learner_lib  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(logdir):
    raise UsageError(f'--logdir={logdir}: no such directory.')
  ckpt_dir = os.path.join(logdir, 'checkpoints')
  if not checkpoint_lib.Checkpointer.has_checkpoint(ckpt_dir):
    raise UsageError(f'--logdir={logdir}: no checkpoint in {ckpt_dir} (train '
                     'first, or point --logdir at a run directory).')
  config_dict = None
  config_path = os.path.join(logdir, 'config.json')
  if os.path.exists(config_path):
    with open(config_path) as f:
      config_dict = json.load(f).get('config')
  checkpointer = checkpoint_lib.Checkpointer(ckpt_dir, is_primary=False)
  if config_dict is None:
    # Fall back on the config saved with the checkpoint: orbax's JsonSave
    # keeps the meta as plain JSON in <step>/meta/metadata.
    meta_path = os.path.join(ckpt_dir, str(step or checkpointer.latest_step()),
                             'meta', 'metadata')
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        config_dict = json.load(f).get('config')
  if not config_dict:
    raise UsageError(f'--logdir={logdir}: no config.json and no config in '
                     'the checkpoint meta.')
  try:
    config = evaluation.config_from_dict(config_dict)
    spec = evaluation.env_spec(config)
  except (TypeError, ValueError) as e:
    raise UsageError(f'--logdir={logdir}: unusable config: {e}') from None
  network = learner_lib.make_network(config, spec.num_actions)
  template = learner_lib.init_train_state(
      config, network, spec.obs_shape, spec.obs_dtype, spec.action_repeat,
      jax.random.PRNGKey(config.seed))
  try:
    if step is None:   # the newest that restores, as a resumed run does
      found = checkpointer.restore_newest(template)
      restored = None if found is None else (found.state, found.meta)
      for bad, reason in (found.damaged if found else []):
        print(f'note: checkpoint {bad} is damaged ({reason}); evaluating '
              f'{found.step}', file=sys.stderr)
    else:
      restored = checkpointer.restore(template, step=step)
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(f'--logdir={logdir}: cannot restore the checkpoint: '
                     f'{e}') from None
  if restored is None:
    raise UsageError(f'--logdir={logdir}: no checkpoint to restore.')
  state, meta = restored
  return config, network, state.params, meta


def normalised_score(env_id: str, score: float):
  """Human-normalised score (DMLab-30: capped) when ``impala_jax.scores``
  has references for the run's environment; None otherwise (gymnax's
  MinAtar Breakout, for one, is not Atari's)."""
  from impala_jax import scores  # pylint: disable=g-import-not-at-top
  if scores.canonical_game(env_id)[0] is None:
    return None
  return float(scores.normalized_score(env_id, score))


def paper_score(env_id: str):
  """The IMPALA paper's final score for this game from
  ``impala_jax.scores.paper_score_for``, or None."""
  from impala_jax import scores  # pylint: disable=g-import-not-at-top
  value = scores.paper_score_for(env_id)
  return None if value is None else float(value)


def task_summary(env_id: str, result, meta, seconds: float,
                 scaled: float = 1.0) -> dict:
  """One task's results as the JSON and the printout give them. Scores of
  a task trained with a reward scale are in its scaled units (the
  normalised score divides the scale out)."""
  summary = result.summary()
  summary.update(env=env_id, greedy=FLAGS.greedy, seed=FLAGS.seed,
                 checkpoint_frames=int(meta.get('frames', 0)),
                 checkpoint_update=int(meta.get('update_count', 0)),
                 seconds=round(seconds, 2), returns=result.returns.tolist())
  if scaled != 1.0:
    summary['reward_scale'] = scaled
  norm = normalised_score(env_id, summary['mean'] / scaled)
  if norm is not None:
    summary['normalised_mean'] = norm
    summary['normalised_median'] = normalised_score(
        env_id, summary['median'] / scaled)
  paper = paper_score(env_id)
  if paper is not None:
    summary['paper_score'] = paper
  return summary


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax logs every restore step
  if not FLAGS.logdir:
    print('error: --logdir is required.', file=sys.stderr)
    return 2
  if FLAGS.num_games < 1:
    print(f'error: --num_games must be >= 1, got {FLAGS.num_games}.',
          file=sys.stderr)
    return 2
  if FLAGS.video and os.path.splitext(FLAGS.video)[1].lower() not in (
      '.gif', '.mp4'):
    print(f'error: --video={FLAGS.video}: must end in .gif or .mp4.',
          file=sys.stderr)
    return 2
  for name, ok, need in (
      ('num_envs', FLAGS.num_envs is None or FLAGS.num_envs >= 1, '>= 1'),
      ('video_fps', FLAGS.video_fps > 0, '> 0'),
      ('step', FLAGS.step is None or FLAGS.step >= 0, '>= 0'),
      ('seed', FLAGS.seed >= 0, '>= 0')):
    if not ok:
      print(f'error: --{name} must be {need}, got {FLAGS[name].value}.',
            file=sys.stderr)
      return 2
  if FLAGS.wandb_mode not in (None, 'online', 'offline', 'disabled'):
    print(f'error: --wandb_mode must be one of online, offline, disabled, '
          f'got {FLAGS.wandb_mode!r}.', file=sys.stderr)
    return 2
  try:
    config, network, params, meta = load_run(FLAGS.logdir, FLAGS.step)
    wandb_project = (config.wandb_project if FLAGS.wandb_project is None
                     else FLAGS.wandb_project)
    if wandb_project:
      from impala_jax import metrics  # pylint: disable=g-import-not-at-top
      try:
        metrics.require_wandb()
      except ValueError as e:
        raise UsageError(str(e)) from None
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2

  from impala_jax import evaluation  # pylint: disable=g-import-not-at-top
  from impala_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  ids, names = config_lib.tasks(config), config_lib.task_names(config)
  mode = 'greedy' if FLAGS.greedy else 'sampled'
  per_task, frames = {}, []
  for k, (env_id, name) in enumerate(zip(ids, names)):
    start = time.time()
    result = evaluation.evaluate_config(
        config, params, num_games=FLAGS.num_games, greedy=FLAGS.greedy,
        seed=FLAGS.seed, num_envs=FLAGS.num_envs,
        record=bool(FLAGS.video) and k == 0, network=network, task=k)
    frames = frames or result.frames
    summary = task_summary(env_id, result, meta, time.time() - start,
                           scaled=config_lib.task_reward_scale(config, k))
    per_task[name] = summary
    print(f'{env_id if len(ids) == 1 else name}: {summary["num_games"]} '
          f'games ({mode}) with the checkpoint at frame '
          f'{summary["checkpoint_frames"]}')
    for key in ('mean', 'median', 'std', 'min', 'max', 'mean_length'):
      print(f'{key}: {summary[key]:.2f}')
    if 'normalised_mean' in summary:
      print(f'normalised_mean: {summary["normalised_mean"]:.4f}')
      print(f'normalised_median: {summary["normalised_median"]:.4f}')
    if 'paper_score' in summary:
      print(f'paper_score: {summary["paper_score"]:.2f}  (IMPALA paper, '
            'same game)')
  if len(ids) == 1:
    summary = per_task[names[0]]
  else:
    summary = {'env': config.env, 'tasks': per_task, 'greedy': FLAGS.greedy,
               'seed': FLAGS.seed}
    normalised = [t.get('normalised_mean') for t in per_task.values()]
    if all(v is not None for v in normalised):
      import numpy as np  # pylint: disable=g-import-not-at-top
      summary['normalised_median_over_tasks'] = float(np.median(normalised))
      summary['normalised_mean_over_tasks'] = float(np.mean(normalised))
      print(f'over the {len(ids)} tasks: median normalised score '
            f'{summary["normalised_median_over_tasks"]:.4f}, mean '
            f'{summary["normalised_mean_over_tasks"]:.4f}')
  if FLAGS.video:
    try:
      evaluation.write_video(frames, FLAGS.video, fps=FLAGS.video_fps)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    summary['video'] = FLAGS.video
    print(f'video: {FLAGS.video} ({len(frames)} frames)')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(summary, f, indent=2)
  if wandb_project:
    log_to_wandb(config, wandb_project, per_task, meta)
  return 0


def log_to_wandb(config, project: str, per_task: dict, meta) -> None:
  """The evaluation's scores (``eval/<task>/mean`` ...) and video
  (``eval/video``) at the checkpoint's frames, in the run's W&B run."""
  from impala_jax import metrics  # pylint: disable=g-import-not-at-top
  logger = metrics.WandbLogger(
      FLAGS.logdir, project=project, entity=config.wandb_entity,
      mode=config.wandb_mode if FLAGS.wandb_mode is None else FLAGS.wandb_mode,
      job_type='eval')
  frames = int(meta.get('frames', 0))
  row = {'frames': frames}
  for name, summary in per_task.items():
    for key in ('mean', 'median', 'std', 'min', 'max', 'mean_length',
                'normalised_mean', 'normalised_median'):
      if key in summary:
        row[f'eval/{name}/{key}'] = summary[key]
  logger.log(row)
  if FLAGS.video:
    logger.log_video('eval/video', FLAGS.video, frames, fps=FLAGS.video_fps)
  print(f'wandb: logged to run {logger.run_id} ({logger.run_dir})')
  logger.close()


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(lambda argv: sys.exit(main(argv)), __name__)


if __name__ == '__main__':
  run()
