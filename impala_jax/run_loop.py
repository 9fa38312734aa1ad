"""The run shell both layouts share: start-up, the loop, and shutdown.

A layout (the envpool actors of ``runtime``, the compiled program of
``anakin``) is a ``Trainer``: something that makes learning steps and
reports what each learned from. ``run`` drives one through a run:

* resume bookkeeping, ``config.json`` (``write_config``) and the metrics
  writer (CSV + TensorBoard, truncated to the checkpoint on resume);
* the schedule: a metrics row every ``log_every_seconds`` and at the end,
  an evaluation every ``eval_every_frames`` (``evaluation
  .PeriodicEvaluator``), a checkpoint every ``checkpoint_every_seconds`` and
  at exit;
* SIGINT/SIGTERM (``set_on_signals``): finish the step, checkpoint, return;
* shutdown in every case (the trainer closed, handlers restored, files
  closed), then the trainer's own errors re-raised;
* the ``RunResult``.

Failure behaviour is in docs/ARCHITECTURE.md ("When things go wrong").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import (Any, Callable, Dict, List, Optional, Protocol, Sequence,
                    Tuple)

import jax
import numpy as np

from impala_jax import checkpoint as checkpoint_lib
from impala_jax import evaluation
from impala_jax.core import learner as learner_lib
from impala_jax import metrics as metrics_lib
from impala_jax import scores
from impala_jax.config import (Config, atari_protocol_changes,
                               describe_atari_protocol, task_names,
                               task_reward_scale, tasks)
from impala_jax.envs import env_family

log = logging.getLogger(__name__)


class ConfigError(ValueError):
  """A bad flag or an inconsistent set-up, found before anything compiles."""


@dataclasses.dataclass
class RunResult:
  frames: int
  updates: int
  episodes: int
  recent_returns: List[float]
  stopped_by_signal: bool = False
  local_frames: int = 0     # frames this process's actors contributed
  params: Any = None        # final parameters (host NumPy pytree)


@dataclasses.dataclass
class StepOutput:
  """What one ``Trainer.step`` learned from.

  ``metrics``: the last update's
  metrics (device or host scalars); ``game_returns`` / ``game_lengths``:
  games that ended in the data (the recent-games history);
  ``game_tally``: ``(count, return_sum, length_sum)`` of *all* games that
  ended when the trainer counts more than it lists (Anakin), else None;
  ``game_tasks``: the task id of each listed game (None: task 0);
  ``task_tallies``: one ``game_tally`` per task (Anakin), else None.
  """
  metrics: Dict[str, Any]
  game_returns: Sequence[float]
  game_lengths: Sequence[float]
  game_tally: Optional[Tuple[int, float, float]] = None
  game_tasks: Optional[Sequence[int]] = None
  task_tallies: Optional[Sequence[Tuple[int, float, float]]] = None


class Trainer(Protocol):
  """A layout, as ``run`` sees it."""
  frames: int          # frames learned from so far (all processes)
  updates: int         # learner updates so far (the checkpoint's count)
  local_frames: int    # frames this process's actors contributed

  def step(self, stop: threading.Event) -> Optional[StepOutput]:
    """Learns from the next batch(es); None when the run should stop
    (``stop`` set, or, with several processes, any process stopping)."""

  def params(self) -> Any:
    """The current parameters (for evaluation)."""

  def log_columns(self) -> Dict[str, Any]:
    """The layout's own metrics columns since the last row."""

  def progress_note(self, row: Dict[str, Any]) -> str:
    """A few words for the live progress line."""

  def save(self, checkpointer, meta: Dict[str, Any]) -> None:
    """Checkpoints the learner state (and the layout's extras) with
    ``meta`` (wall time, config)."""

  def close(self) -> None:
    """Releases threads and environments; never raises for their errors."""

  def raise_errors(self) -> None:
    """Re-raises the first error of a thread the trainer ran, if any."""


# --------------------------------------------------------------- set-up ---
def select_devices(indices: Sequence[int], what: str) -> List[jax.Device]:
  devices = jax.local_devices()
  bad = [i for i in indices if not 0 <= i < len(devices)]
  if bad:
    raise ConfigError(
        f'--{what}={",".join(map(str, indices))}: index {bad[0]} is out of '
        f'range; this host has {len(devices)} device(s) '
        f'(valid indices 0..{len(devices) - 1}).')
  if len(set(indices)) != len(indices):
    raise ConfigError(f'--{what} lists a device twice: {list(indices)}.')
  return [devices[i] for i in indices]


def set_on_signals(event: threading.Event,
                   enabled: bool = True) -> Callable[[], None]:
  """SIGINT/SIGTERM set ``event`` (the run then finishes its update,
  checkpoints and returns) instead of raising. Only from the main thread
  (elsewhere, or with ``enabled=False``, nothing is installed). Returns a
  function that restores the previous handlers."""
  previous = {}
  if enabled and threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGINT, signal.SIGTERM):
      previous[sig] = signal.signal(sig, lambda signum, frame: event.set())
  def restore():
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  return restore


def check_logdir(logdir: str) -> None:
  """Raises ``ConfigError`` unless ``logdir`` can be created and written
  (a probe file is written, synced and removed): an unwritable or full
  directory is found before anything compiles."""
  probe = os.path.join(logdir, f'.write-probe-{os.getpid()}')
  try:
    os.makedirs(logdir, exist_ok=True)
    with open(probe, 'wb') as f:
      f.write(b'\0' * 4096)
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f'cannot write to --logdir={logdir}: '
                      f'{e.strerror or e}.') from None


def start_run(config: Config, spec, logdir: str, resume: Optional[bool],
              is_primary: bool = True):
  """The start every layout shares: the run directory, the network, the
  freshly initialised ``TrainState`` (the template a checkpoint restores
  into) and the checkpointer of ``logdir/checkpoints`` (keeping the newest
  ``config.keep_checkpoints``).

  Returns ``(network, template_state, checkpointer, resume)``, where
  ``resume`` is resolved (None: True when a checkpoint exists). Raises
  ``ConfigError`` for an unwritable ``logdir`` and for ``resume=False``
  over a directory that has checkpoints (never a silent fresh start over a
  run).
  """
  if is_primary:
    check_logdir(logdir)
  ckpt_dir = os.path.join(logdir, 'checkpoints')
  has_checkpoint = checkpoint_lib.Checkpointer.has_checkpoint(ckpt_dir)
  if resume is None:
    resume = has_checkpoint
  elif not resume and has_checkpoint:
    raise ConfigError(f'{ckpt_dir} has checkpoints and --noresume was given: '
                      'start over in a new --logdir (or remove that '
                      'directory).')
  network = learner_lib.make_network(config, spec.num_actions)
  template = learner_lib.init_train_state(
      config, network, spec.obs_shape, spec.obs_dtype, spec.action_repeat,
      jax.random.PRNGKey(config.seed))
  checkpointer = checkpoint_lib.Checkpointer(
      ckpt_dir, is_primary=is_primary, max_to_keep=config.keep_checkpoints)
  return network, template, checkpointer, resume


def restore_run(checkpointer, template, *, extra_template=None, check=None
                ) -> Optional[checkpoint_lib.Restored]:
  """``checkpointer.restore_newest`` for a resuming run: falls back past
  damaged checkpoints (logged as a warning, and in the start line through
  ``describe_start``); ``ConfigError`` when none restores."""
  try:
    restored = checkpointer.restore_newest(
        template, extra_template=extra_template, check=check)
  except checkpoint_lib.CheckpointError as e:
    raise ConfigError(str(e)) from None
  if restored is not None:
    for step, reason in restored.damaged:
      log.warning('checkpoint %d is damaged (%s); set aside as %d%s', step,
                  reason, step, checkpoint_lib.DAMAGED_SUFFIX)
    log.info('resumed from update %d, frame %d', restored.step,
             restored.state.frames)
  return restored


def describe_start(restored: Optional[checkpoint_lib.Restored]) -> str:
  """What the first line of a run says about its start: ``new run``, or the
  checkpoint it resumes from and any damaged ones it fell back from."""
  if restored is None:
    return 'new run'
  text = (f'resuming from the checkpoint at update {restored.step:,} '
          f'({restored.state.frames:,} frames)')
  if restored.damaged:
    steps = ', '.join(str(step) for step, _ in restored.damaged)
    text += (f', falling back from damaged checkpoint {steps} '
             f'({restored.damaged[0][1]})')
  return text


def config_dict(config: Config) -> Dict[str, Any]:
  """The config as a JSON-ready dict (tuples become lists)."""
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in dataclasses.asdict(config).items()}


def write_config(logdir: str, config: Config, spec, start_update: int):
  """``logdir/config.json``: the config, the environment's spec (with the
  effective envpool arguments), the Atari protocol, JAX and devices
  (written atomically)."""
  path = os.path.join(logdir, 'config.json')
  payload = {
      'config': config_dict(config),
      'env_spec': {'env_id': spec.env_id, 'obs_shape': list(spec.obs_shape),
                   'obs_dtype': str(np.dtype(spec.obs_dtype)),
                   'num_actions': spec.num_actions,
                   'action_repeat': spec.action_repeat,
                   'max_episode_steps': spec.max_episode_steps,
                   'envpool_kwargs': spec.envpool_kwargs},
      'jax': jax.__version__, 'devices': [str(d) for d in jax.devices()],
      'started_at_update': start_update,
  }
  if len(tasks(config)) > 1:
    payload['tasks'] = [{'id': t, 'name': n,
                         'reward_scale': task_reward_scale(config, k)}
                        for k, (t, n) in enumerate(zip(tasks(config),
                                                       task_names(config)))]
  if env_family(tasks(config)[0]) == 'atari':
    # The protocol by name, and where this run departs from it (the
    # effective envpool arguments are in env_spec.envpool_kwargs).
    payload['atari_protocol'] = {
        'name': config.atari_protocol,
        'departures': atari_protocol_changes(config),
        'description': describe_atari_protocol(config)}
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, default=str)
  os.replace(tmp, path)


# ----------------------------------------------------------------- loop ---
def run(config: Config, trainer: Trainer, *, logdir: str, checkpointer,
        network, resume: bool, wall_time_before: float,
        progress: bool = True, handle_signals: bool = True,
        is_primary: bool = True,
        on_step: Optional[Callable[[int, Any], None]] = None) -> RunResult:
  """Drives ``trainer`` until ``config.total_frames`` frames were learned
  from (or a signal, or an error).

  Args:
    config: the run's config (its schedule fields).
    trainer: the layout.
    logdir: the run directory (``metrics.csv``, TensorBoard events).
    checkpointer: the run's ``Checkpointer``; closed at the end.
    network: the ``AgentNetwork`` (periodic evaluation).
    resume: the run resumed from a checkpoint (the metrics files are then
      cut back to its frames).
    wall_time_before: wall-clock seconds of the run before this process
      (from the checkpoint; 0 for a fresh run).
    progress: print the live progress line (primary process only).
    handle_signals: SIGINT/SIGTERM stop the run cleanly (main thread only).
    is_primary: this process writes files and evaluates.
    on_step: ``(update_count, metrics)`` after every step.
  """
  wandb = (metrics_lib.WandbLogger(
      logdir, project=config.wandb_project, entity=config.wandb_entity,
      mode=config.wandb_mode, config=config_dict(config))
           if config.wandb_project and is_primary else None)
  writer = metrics_lib.MetricsWriter(
      logdir, resume_from_frames=trainer.frames if resume else None,
      is_primary=is_primary, wandb=wandb)
  progress_line = (metrics_lib.Progress(config.total_frames)
                   if progress and is_primary else None)
  episodes = metrics_lib.EpisodeStats()
  per_task = metrics_lib.TaskEpisodeStats(tasks(config), task_names(config),
                                          normalise=scores.normalized_score)
  rate = metrics_lib.RateMeter(trainer.frames)
  evaluator = (evaluation.PeriodicEvaluator(config, network)
               if config.eval_every_frames else None)
  stop_signal = threading.Event()
  restore_signals = set_on_signals(stop_signal, handle_signals)
  wall_start = time.time() - wall_time_before
  last_log = last_ckpt = time.monotonic()
  next_eval = trainer.frames + config.eval_every_frames
  metrics: Dict[str, Any] = {}

  def save():
    trainer.save(checkpointer, {'wall_time': time.time() - wall_start,
                                'config': config_dict(config)})

  try:
    try:
      while trainer.frames < config.total_frames:
        out = trainer.step(stop_signal)
        if out is None:
          break
        metrics = out.metrics
        episodes.add(out.game_returns, out.game_lengths,
                     tally=out.game_tally)
        per_task.add(out.game_returns, out.game_lengths, out.game_tasks,
                     out.task_tallies)
        if on_step is not None:
          on_step(trainer.updates, metrics)
        now = time.monotonic()
        done = trainer.frames >= config.total_frames
        if now - last_log >= config.log_every_seconds or done:
          last_log = now
          row = _row(trainer, metrics, episodes, rate,
                     time.time() - wall_start, per_task)
          writer.write(row)
          if progress_line:
            progress_line.update(row['frames'], row['sps'],
                                 row['episode_return'],
                                 extra=trainer.progress_note(row))
        if evaluator is not None and trainer.frames >= next_eval:
          next_eval += config.eval_every_frames
          if is_primary:
            writer.write(evaluator.row(trainer, trainer.updates))
        if now - last_ckpt >= config.checkpoint_every_seconds:
          last_ckpt = now
          save()
      save()
    finally:
      trainer.close()
  finally:
    restore_signals()
    if progress_line:
      progress_line.done()
    writer.close()
    _close_quietly_if_failing(checkpointer)
  trainer.raise_errors()
  return RunResult(frames=trainer.frames, updates=trainer.updates,
                   episodes=episodes.total_episodes,
                   recent_returns=list(episodes.last_returns(100)),
                   stopped_by_signal=stop_signal.is_set(),
                   local_frames=trainer.local_frames,
                   params=jax.device_get(trainer.params()))


def _close_quietly_if_failing(checkpointer) -> None:
  """Closes the checkpointer (waits for pending writes); while another
  exception is on its way out, an error here must not replace it."""
  failing = sys.exc_info()[0] is not None
  try:
    checkpointer.close()
  except Exception:  # pylint: disable=broad-except
    if not failing:
      raise


def host_metrics(metrics: Dict[str, Any],
                 task_names: Sequence[str]) -> Dict[str, float]:
  """The last update's metrics as host floats; ``[K]`` per-task arrays
  (PopArt's ``popart_mu``, ``popart_sigma``) become one column per task,
  ``popart_mu/<task>``."""
  out = {}
  for key, value in jax.device_get(metrics).items():
    value = np.asarray(value)
    if value.ndim == 0:
      out[key] = float(value)
    else:
      for name, v in zip(task_names, value.reshape(-1)):
        out[f'{key}/{name}'] = float(v)
  return out


def _row(trainer: Trainer, metrics, episodes, rate, wall_time: float,
         per_task: metrics_lib.TaskEpisodeStats) -> Dict[str, Any]:
  """One ``metrics.csv`` row: progress, the games since the last row, the
  layout's columns, the wall time, the last update's metrics (and, for
  several tasks, each task's games and the suite's human-normalised
  aggregates)."""
  host = host_metrics(metrics, per_task.names)
  ep = episodes.drain()
  row = {
      'frames': trainer.frames, 'updates': trainer.updates,
      'sps': rate.rate(trainer.frames),
      'episode_return': ep['episode_return'],
      'episode_length': ep['episode_length'], 'episodes': ep['episodes'],
  }
  if per_task.enabled:
    row.update(per_task.columns())
  row.update(**trainer.log_columns(), wall_time=wall_time)
  row.update(host)
  row['skipped_updates'] = int(host.get('skipped_updates', 0))
  return row
