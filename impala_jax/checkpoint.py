"""Orbax checkpoints of the learner's ``TrainState`` (outer shell: does I/O).

Layout: ``directory/<update_count>/{state,meta}``: ``state`` holds params,
opt_state, rng, update_count and skipped_updates (host NumPy arrays,
``StandardSave``); ``meta`` is JSON: ``frames`` (the host counter of the
``TrainState``), ``update_count`` and whatever the runtime adds (config
dict, actor seeds, wall time, ...).

Crash safety: orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and
renames it to ``<step>`` only once every file is written (local file
systems; on GCS it writes ``commit_success.txt`` last). Unfinished temp
directories are never listed as steps and are removed when the step is saved
again. ``save`` waits for the write to finish by default, so once it has
returned a SIGKILL leaves either the new step whole or not at all; the
previous steps are untouched (tested with a real SIGKILL).

Multi-host: every process may restore; only ``is_primary`` writes. The
manager is confined to its own process (``active_processes={me}``), so
orbax's cross-process barriers are skipped and process 0 can save alone
(the state is replicated host NumPy, no sharded arrays).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from impala_jax.core.learner import TrainState

_ARRAY_FIELDS = ('params', 'opt_state', 'rng', 'update_count',
                 'skipped_updates')


def _is_typed_key(x) -> bool:
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _host_tree(state: TrainState) -> Dict[str, Any]:
  """The array part of a state as a dict of host NumPy pytrees."""
  rng = state.rng
  if _is_typed_key(rng):
    rng = jax.random.key_data(rng)
  tree = {name: getattr(state, name) for name in _ARRAY_FIELDS}
  tree['rng'] = rng
  if state.popart is not None:
    # PopArt's statistics (only in runs with --popart: the other runs'
    # checkpoints keep their layout).
    tree['popart'] = {'mu': state.popart.mu, 'nu': state.popart.nu}
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _jsonable(value: Any) -> Any:
  """Dataclasses, tuples, NumPy scalars/arrays -> plain JSON values."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _jsonable(dataclasses.asdict(value))
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (np.ndarray, jax.Array)):
    return np.asarray(value).tolist()
  return value


class CheckpointError(ValueError):
  """No checkpoint of a directory that has some can be restored (one line:
  the directory and each step's reason)."""


@dataclasses.dataclass
class Restored:
  """What ``Checkpointer.restore_newest`` found.

  Attributes:
    state, meta: as ``restore`` returns them.
    step: the step restored.
    extra: the ``extra`` item of that step (when a template was given).
    damaged: ``[(step, reason)]`` of the newer steps that did not restore,
      newest first (empty when the newest one did).
  """
  state: TrainState
  meta: Dict[str, Any]
  step: int
  extra: Optional[Dict[str, Any]] = None
  damaged: List[Tuple[int, str]] = dataclasses.field(default_factory=list)


def _one_line(error: BaseException, limit: int = 200) -> str:
  text = ' '.join(str(error).split()) or type(error).__name__
  text = f'{type(error).__name__}: {text}'
  return text if len(text) <= limit else text[:limit - 3] + '...'


DAMAGED_SUFFIX = '.damaged'


class Checkpointer:
  """Saves and restores the learner's ``TrainState`` with orbax.

  Args:
    directory: checkpoint root (made absolute; the primary creates it).
    max_to_keep: newest checkpoints kept; older ones are deleted.
    is_primary: False makes ``save`` a no-op (restore still works).
  """

  def __init__(self, directory: str, *, max_to_keep: Optional[int] = 3,
               is_primary: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self.is_primary = is_primary
    me = jax.process_index()
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        # orbax refuses create=True together with active_processes.
        create=False,
        read_only=not is_primary,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me},
            barrier_sync_key_prefix=f'impala_jax_ckpt_p{me}'))
    self._manager: Optional[ocp.CheckpointManager] = None
    if is_primary:
      os.makedirs(self.directory, exist_ok=True)
      self._manager = ocp.CheckpointManager(self.directory,
                                            options=self._options)

  def _refresh(self) -> Optional[ocp.CheckpointManager]:
    """The manager with an up-to-date step list (None: nothing to read)."""
    if self._manager is None:
      # A read-only manager wants an existing directory: made lazily.
      if not os.path.isdir(self.directory):
        return None
      self._manager = ocp.CheckpointManager(self.directory,
                                            options=self._options)
    else:
      self._manager.wait_until_finished()
      self._manager.reload()
    return self._manager

  @staticmethod
  def has_checkpoint(directory: str) -> bool:
    """Whether ``directory`` holds at least one finished checkpoint."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
      return False
    return bool(ocp.utils.checkpoint_steps(directory))

  def latest_step(self) -> Optional[int]:
    manager = self._refresh()
    return None if manager is None else manager.latest_step()

  def all_steps(self):
    manager = self._refresh()
    return [] if manager is None else list(manager.all_steps())

  def save(self, state: TrainState, meta: Optional[Dict[str, Any]] = None, *,
           wait: bool = True, extra: Optional[Dict[str, Any]] = None) -> bool:
    """Writes ``state`` at step ``update_count``; returns whether it wrote.

    ``meta`` (JSON-able; dataclasses such as ``Config`` are converted) is
    stored beside it with ``frames`` and ``update_count`` added. A step that
    already exists (e.g. the shutdown checkpoint right after a periodic one)
    is not written twice. ``wait=False`` returns while orbax still writes in
    the background: call ``wait_until_finished`` before trusting it.
    ``extra``: an optional dict of host arrays saved as a third item (the
    Anakin runtime's environment states and keys); see ``restore_extra``.
    """
    if not self.is_primary:
      return False
    tree = _host_tree(state)
    step = int(tree['update_count'])
    meta = dict(_jsonable(meta or {}))
    meta['frames'] = int(state.frames or 0)
    meta['update_count'] = step
    meta['skipped_updates'] = int(tree['skipped_updates'])
    meta['rng_typed'] = _is_typed_key(state.rng)
    self._manager.wait_until_finished()
    if step in self._manager.all_steps():
      return False
    items = dict(state=ocp.args.StandardSave(tree),
                 meta=ocp.args.JsonSave(meta))
    if extra is not None:
      items['extra'] = ocp.args.StandardSave(
          jax.tree_util.tree_map(np.asarray, jax.device_get(extra)))
    saved = self._manager.save(step, args=ocp.args.Composite(**items),
                               force=True)
    if wait:
      self._manager.wait_until_finished()
    return bool(saved)

  def restore(self, template: TrainState, step: Optional[int] = None
              ) -> Optional[Tuple[TrainState, Dict[str, Any]]]:
    """The latest (or given) checkpoint in the structure of ``template``.

    ``template`` is a freshly initialised ``TrainState`` of the same config:
    its pytree structure (optax's NamedTuples included), shapes and dtypes
    are the restore target, and its ``rng`` decides whether a typed key or
    a raw ``uint32`` key comes back. Arrays come back as host NumPy (like
    ``Learner.state()``); ``frames`` from the meta. None without checkpoint.
    """
    manager = self._refresh()
    if manager is None:
      return None
    if step is None:
      step = manager.latest_step()
    if step is None:
      return None
    target = _host_tree(template)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    leaves = jax.tree_util.tree_leaves(restored['state'])
    target_leaves, treedef = jax.tree_util.tree_flatten(target)
    if len(leaves) != len(target_leaves):
      raise ValueError(f'checkpoint step {step} in {self.directory} has '
                       f'{len(leaves)} arrays, the template {len(target_leaves)}:'
                       ' was it written with another network or optimizer?')
    for got, want in zip(leaves, target_leaves):
      if np.shape(got) != np.shape(want):
        raise ValueError(f'checkpoint step {step} in {self.directory}: array '
                         f'of shape {np.shape(got)} where the template has '
                         f'{np.shape(want)}; different network config?')
    leaves = [np.asarray(got, dtype=np.asarray(want).dtype)
              for got, want in zip(leaves, target_leaves)]
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    meta = dict(restored['meta'] or {})
    rng = tree['rng']
    if _is_typed_key(template.rng):
      rng = jax.random.wrap_key_data(rng, impl=jax.random.key_impl(
          template.rng))
    state = TrainState(params=tree['params'], opt_state=tree['opt_state'],
                       rng=rng, update_count=tree['update_count'],
                       skipped_updates=tree['skipped_updates'],
                       frames=int(meta.get('frames', 0)),
                       popart=(None if 'popart' not in tree else
                               type(template.popart)(**tree['popart'])))
    return state, meta

  def restore_extra(self, template: Dict[str, Any], step: int
                    ) -> Optional[Dict[str, Any]]:
    """The ``extra`` item saved at ``step`` in the structure of
    ``template`` (host NumPy), or None when that step has none."""
    manager = self._refresh()
    if manager is None:
      return None
    if not os.path.isdir(os.path.join(self.directory, str(step), 'extra')):
      return None
    target = jax.tree_util.tree_map(np.asarray, jax.device_get(template))
    restored = manager.restore(step, args=ocp.args.Composite(
        extra=ocp.args.StandardRestore(target)))
    return jax.tree_util.tree_map(np.asarray, dict(restored['extra']))

  def restore_newest(self, template: TrainState, *,
                     extra_template: Optional[Dict[str, Any]] = None,
                     check: Optional[Callable[[Restored], None]] = None
                     ) -> Optional[Restored]:
    """The newest checkpoint that restores whole, trying older ones when a
    newer one is damaged (files truncated or missing, arrays that do not
    match ``template``, no ``extra`` item when ``extra_template`` is given,
    or ``check`` raising ``ValueError``).

    None when the directory has no checkpoint. Raises ``CheckpointError``
    when it has some and none restores. On the primary, the damaged newer
    steps are renamed ``<step>.damaged`` (kept for inspection, no longer
    listed), so the resumed run's next saves are not shadowed by them.
    """
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      return None
    damaged: List[Tuple[int, str]] = []
    for step in steps:
      try:
        state, meta = self.restore(template, step=step)
        extra = None
        if extra_template is not None:
          extra = self.restore_extra(extra_template, step)
          if extra is None:
            raise ValueError('no environment state (not written by the '
                             'Anakin runtime)')
        found = Restored(state, meta, step, extra, damaged)
        if check is not None:
          check(found)
      except Exception as e:  # pylint: disable=broad-except
        # orbax and tensorstore raise many types for a damaged step.
        damaged.append((step, _one_line(e)))
        continue
      self._set_aside(step for step, _ in damaged)
      return found
    reasons = '; '.join(f'step {step}: {reason}' for step, reason in damaged)
    raise CheckpointError(
        f'no checkpoint in {self.directory} can be restored ({reasons}); '
        'move the directory away to start over, or pass another --logdir.')

  def _set_aside(self, steps) -> None:
    steps = list(steps)
    if not steps or not self.is_primary:
      return
    for step in steps:
      path = os.path.join(self.directory, str(step))
      target = path + DAMAGED_SUFFIX
      k = 1
      while os.path.exists(target):
        k += 1
        target = f'{path}{DAMAGED_SUFFIX}{k}'
      os.replace(path, target)
    self._manager.reload()

  def wait_until_finished(self):
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self):
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
