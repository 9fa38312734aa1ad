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

Errors (missing logdir, no checkpoint, unusable config) print one
``error:`` line and exit with status 2.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

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
  try:
    config, network, params, meta = load_run(FLAGS.logdir, FLAGS.step)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2

  from impala_jax import evaluation  # pylint: disable=g-import-not-at-top
  start = time.time()
  result = evaluation.evaluate_config(
      config, params, num_games=FLAGS.num_games, greedy=FLAGS.greedy,
      seed=FLAGS.seed, num_envs=FLAGS.num_envs, record=bool(FLAGS.video),
      network=network)
  summary = result.summary()
  summary.update(env=config.env, greedy=FLAGS.greedy, seed=FLAGS.seed,
                 checkpoint_frames=int(meta.get('frames', 0)),
                 checkpoint_update=int(meta.get('update_count', 0)),
                 seconds=round(time.time() - start, 2),
                 returns=result.returns.tolist())
  norm = normalised_score(config.env, summary['mean'])
  if norm is not None:
    summary['normalised_mean'] = norm
    summary['normalised_median'] = normalised_score(config.env,
                                                    summary['median'])
  paper = paper_score(config.env)
  if paper is not None:
    summary['paper_score'] = paper
  mode = 'greedy' if FLAGS.greedy else 'sampled'
  print(f'{config.env}: {summary["num_games"]} games ({mode}) with the '
        f'checkpoint at frame {summary["checkpoint_frames"]}')
  for k in ('mean', 'median', 'std', 'min', 'max', 'mean_length'):
    print(f'{k}: {summary[k]:.2f}')
  if norm is not None:
    print(f'normalised_mean: {summary["normalised_mean"]:.4f}')
    print(f'normalised_median: {summary["normalised_median"]:.4f}')
  if paper is not None:
    print(f'paper_score: {paper:.2f}  (IMPALA paper, same game)')
  if FLAGS.video:
    try:
      evaluation.write_video(result.frames, FLAGS.video, fps=FLAGS.video_fps)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    summary['video'] = FLAGS.video
    print(f'video: {FLAGS.video} ({len(result.frames)} frames)')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(summary, f, indent=2)
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
