"""DeepMind Lab as a ``BatchedEnv``: a pool of worker processes.

Adapter over the public ``deepmind_lab`` Python API
(https://github.com/deepmind/lab/blob/master/docs/users/python_api.md):
``deepmind_lab.Lab(level, observations, config)``, ``reset(seed=...)``,
``step(action, num_steps)``, ``observations()``, ``is_running()``.
Settings are the IMPALA paper's (and deepmind/scalable_agent's
``environments.py``): the 9-action ``DEFAULT_ACTION_SET`` below, action
repeat 4 (``step(action, num_steps=4)``, which returns the reward summed
over the 4 frames), 72x96 RGB observations (``RGB_INTERLEAVED``, config
``width=96, height=72``), delivered channels-first ``[3, 72, 96]`` uint8 as
the conv torsos expect. A fresh random seed per episode from a per-env
``RandomState``, as scalable_agent does.

Instructions (the ``language_*`` levels): with ``instruction_len = L > 0``
the adapter also asks for the level's ``INSTR`` text, splits it into words,
maps each word to an id in ``[1, VOCAB_SIZE)`` (a stable CRC32 hash; 0 is
padding, as scalable_agent hashes words into 1000 buckets) and keeps the
first ``L``. So that a trajectory stays one uint8 array, the ids ride in an
extra image row: the observation is ``[3, 73, 96]``, its last row holding
id ``k`` as low byte ``[0, 72, k]`` and high byte ``[1, 72, k]``
(``pack_instruction``); the network splits it off again
(``networks.split_instruction``) and encodes the words with an LSTM, as the
paper's DMLab agent does.

Ids: ``dmlab:<level>``; a bare DMLab-30 name (``dmlab:rooms_watermaze``) is
looked up as ``contributed/dmlab30/<name>``, any other level path is passed
to ``Lab`` as is (``dmlab:seekavoid_arena_01``).

Semantics are envpool's (``impala_jax/envs/base.py``). DMLab gives no
observation once an episode has ended (``is_running()`` is False), so a
terminal row repeats the episode's last observation; it is ``terminated``
(discount 0, the level's own time limit included, as in the paper), so the
observation is never bootstrapped from. ``max_episode_steps > 0`` adds a
truncation in agent steps (default 0: the level's own limit). One episode
is one game (``game_over`` on every terminal row).

Processes: ``num_workers`` worker processes (default ``min(num_envs, CPU
count)``), each owning ``num_envs / num_workers`` environments, talk to the
parent over pipes; the default start method is ``spawn`` (safe after JAX
has started threads). ``close()`` (also on ``__exit__``, on garbage
collection and at interpreter exit) stops and joins every worker and
terminates any that do not exit.
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import multiprocessing as mp
import multiprocessing.connection
import os
import time
import weakref
import zlib
from typing import Any, Dict, List, Optional

import numpy as np

from impala_jax.config import DMLAB_PREFIX
from impala_jax.envs.base import BatchedEnv, EnvSpec, StepBatch

PREFIX = DMLAB_PREFIX
ACTION_REPEAT = 4
HEIGHT, WIDTH = 72, 96
OBS_NAME = 'RGB_INTERLEAVED'
INSTR_NAME = 'INSTR'
VOCAB_SIZE = 1000           # scalable_agent: DMLAB_VOCABULARY_SIZE
MAX_INSTRUCTION_LEN = 16    # scalable_agent: DMLAB_MAX_INSTRUCTION_LEN

# The paper's action set (deepmind/scalable_agent environments.py):
# [look left/right (pixels), look down/up, strafe left/right,
#  forward/backward, fire, jump, crouch].
DEFAULT_ACTION_SET = (
    (0, 0, 0, 1, 0, 0, 0),     # forward
    (0, 0, 0, -1, 0, 0, 0),    # backward
    (0, 0, -1, 0, 0, 0, 0),    # strafe left
    (0, 0, 1, 0, 0, 0, 0),     # strafe right
    (-20, 0, 0, 0, 0, 0, 0),   # look left
    (20, 0, 0, 0, 0, 0, 0),    # look right
    (-20, 0, 0, 1, 0, 0, 0),   # look left + forward
    (20, 0, 0, 1, 0, 0, 0),    # look right + forward
    (0, 0, 0, 0, 1, 0, 0),     # fire
)

DMLAB30_LEVELS = (
    'rooms_collect_good_objects_train', 'rooms_exploit_deferred_effects_train',
    'rooms_select_nonmatching_object', 'rooms_watermaze',
    'rooms_keys_doors_puzzle', 'language_select_described_object',
    'language_select_located_object', 'language_execute_random_task',
    'language_answer_quantitative_question', 'lasertag_one_opponent_small',
    'lasertag_three_opponents_small', 'lasertag_one_opponent_large',
    'lasertag_three_opponents_large', 'natlab_fixed_large_map',
    'natlab_varying_map_regrowth', 'natlab_varying_map_randomized',
    'skymaze_irreversible_path_hard', 'skymaze_irreversible_path_varied',
    'psychlab_arbitrary_visuomotor_mapping', 'psychlab_continuous_recognition',
    'psychlab_sequential_comparison', 'psychlab_visual_search',
    'explore_object_locations_small', 'explore_object_locations_large',
    'explore_obstructed_goals_small', 'explore_obstructed_goals_large',
    'explore_goal_locations_small', 'explore_goal_locations_large',
    'explore_object_rewards_few', 'explore_object_rewards_many',
)
# Held-out test variants used for evaluation of the two *_train levels.
DMLAB30_TEST_LEVELS = ('rooms_collect_good_objects_test',
                       'rooms_exploit_deferred_effects_test')

INSTALL_HINT = (
    'DeepMind Lab is not installed (no Python module "deepmind_lab"); it is '
    'not on PyPI: build it from https://github.com/deepmind/lab with bazel '
    '("bazel build -c opt //python/pip_package:build_pip_package", then '
    '"./bazel-bin/python/pip_package/build_pip_package /tmp/dmlab_pkg" and '
    '"pip install /tmp/dmlab_pkg/deepmind_lab-*.whl"), see '
    'docs/users/build.md there and BUILD_NOTES.md ("DeepMind Lab") here.')


class DmLabNotInstalledError(ImportError, ValueError):
  """``deepmind_lab`` cannot be imported (an ImportError and a ValueError,
  so config checks that catch ValueError report it as a bad --env)."""


def is_dmlab_id(env_id: str) -> bool:
  return isinstance(env_id, str) and env_id.startswith(PREFIX)


def level_name(env_id: str) -> str:
  """``dmlab:<name>`` -> the level path given to ``deepmind_lab.Lab``."""
  if not is_dmlab_id(env_id) or not env_id[len(PREFIX):]:
    raise ValueError(f'{env_id!r}: a DMLab id is "dmlab:<level>", e.g. '
                     'dmlab:rooms_watermaze.')
  name = env_id[len(PREFIX):]
  if name in DMLAB30_LEVELS or name in DMLAB30_TEST_LEVELS:
    return 'contributed/dmlab30/' + name
  return name


def tokenize_instruction(text, length: int) -> np.ndarray:
  """``INSTR`` text -> ``[length]`` uint16 word ids (0 = padding).

  Words are split on whitespace, lower-cased and hashed (CRC32) into
  ``[1, VOCAB_SIZE)``; words past ``length`` are dropped.
  """
  if isinstance(text, bytes):
    text = text.decode('utf-8', 'replace')
  words = str(text).lower().split()[:length]
  ids = np.zeros((length,), np.uint16)
  for i, word in enumerate(words):
    ids[i] = 1 + zlib.crc32(word.encode('utf-8')) % (VOCAB_SIZE - 1)
  return ids


def pack_instruction(image: np.ndarray, tokens: np.ndarray) -> np.ndarray:
  """``[3, H, W]`` uint8 image + ``[L]`` word ids -> ``[3, H + 1, W]``
  uint8: the extra last row holds id ``k``'s low byte in channel 0 and its
  high byte in channel 1, column ``k`` (``L <= W``)."""
  c, _, w = image.shape
  tokens = np.asarray(tokens, np.uint16)
  if tokens.shape[0] > w:
    raise ValueError(f'{tokens.shape[0]} instruction words do not fit in a '
                     f'row of {w}.')
  row = np.zeros((c, 1, w), np.uint8)
  row[0, 0, :len(tokens)] = tokens & 0xFF
  row[1, 0, :len(tokens)] = tokens >> 8
  return np.concatenate([image, row], axis=1)


def check_installed() -> None:
  """Raises ``DmLabNotInstalledError`` (with install steps) when missing."""
  if importlib.util.find_spec('deepmind_lab') is None:
    raise DmLabNotInstalledError(INSTALL_HINT)


def describe_dmlab(env_id: str, max_episode_steps: int = 0,
                   instruction_len: int = 0) -> EnvSpec:
  """The spec of a DMLab id (checks the module is installed, starts
  nothing). ``instruction_len > 0`` adds the instruction row:
  ``obs_shape`` ``[3, 73, 96]`` instead of ``[3, 72, 96]``."""
  level = level_name(env_id)
  if not 0 <= instruction_len <= WIDTH:
    raise ValueError(f'instruction_len must be in [0, {WIDTH}], got '
                     f'{instruction_len}.')
  check_installed()
  height = HEIGHT + (1 if instruction_len else 0)
  return EnvSpec(env_id=env_id, obs_shape=(3, height, WIDTH),
                 obs_dtype=np.dtype(np.uint8),
                 num_actions=len(DEFAULT_ACTION_SET),
                 action_repeat=ACTION_REPEAT,
                 max_episode_steps=int(max_episode_steps),
                 envpool_kwargs={'level': level,
                                 'action_repeat': ACTION_REPEAT,
                                 'width': WIDTH, 'height': HEIGHT,
                                 'instruction_len': int(instruction_len),
                                 'vocab_size': VOCAB_SIZE})


# ------------------------------------------------------------- worker ---
class _LabEnv:
  """One DMLab environment inside a worker process."""

  def __init__(self, lab_module, level, config, seed, max_episode_steps,
               renderer, instruction_len=0):
    kwargs = {} if renderer is None else {'renderer': renderer}
    self.instruction_len = instruction_len
    names = [OBS_NAME] + ([INSTR_NAME] if instruction_len else [])
    self.lab = lab_module.Lab(level, names, config=config, **kwargs)
    self.rng = np.random.RandomState(seed)
    self.actions = np.array(DEFAULT_ACTION_SET, dtype=np.intc)
    self.max_steps = max_episode_steps
    self.needs_reset = True
    self.last_obs = None
    self.game_return = 0.0
    self.steps = 0

  def _obs(self):
    observations = self.lab.observations()
    obs = np.asarray(observations[OBS_NAME], np.uint8)
    obs = np.ascontiguousarray(np.transpose(obs, (2, 0, 1)))
    if self.instruction_len:
      obs = pack_instruction(obs, tokenize_instruction(
          observations[INSTR_NAME], self.instruction_len))
    return obs

  def reset(self):
    self.lab.reset(seed=int(self.rng.randint(0, 2**31 - 1)))
    self.needs_reset = False
    self.game_return, self.steps = 0.0, 0
    self.last_obs = self._obs()
    return (self.last_obs, 0.0, False, False, False, 0.0, 0)

  def step(self, action):
    if self.needs_reset:
      return self.reset()
    reward = float(self.lab.step(self.actions[int(action)],
                                 num_steps=ACTION_REPEAT))
    self.game_return += reward
    self.steps += 1
    terminated = not self.lab.is_running()
    truncated = (not terminated and self.max_steps > 0
                 and self.steps >= self.max_steps)
    if terminated or truncated:
      self.needs_reset = True
      obs = self.last_obs          # no observation after the end
    else:
      obs = self.last_obs = self._obs()
    over = terminated or truncated
    return (obs, reward, terminated, truncated, over, self.game_return,
            self.steps)

  def close(self):
    close = getattr(self.lab, 'close', None)
    if close is not None:
      close()


def _worker(conn, env_ids, level, config, seeds, max_episode_steps,
            renderer, instruction_len=0):
  envs = {}
  try:
    import deepmind_lab  # pylint: disable=g-import-not-at-top
    for i, seed in zip(env_ids, seeds):
      envs[i] = _LabEnv(deepmind_lab, level, config, seed, max_episode_steps,
                        renderer, instruction_len)
    conn.send(('ok', None))
    while True:
      cmd, payload = conn.recv()
      if cmd == 'close':
        break
      if cmd == 'reset':
        rows = [(i,) + envs[i].reset() for i in payload]
      else:  # 'step': [(env, action), ...]
        rows = [(i,) + envs[i].step(a) for i, a in payload]
      conn.send(('rows', rows))
  except (KeyboardInterrupt, EOFError):
    pass
  except Exception as e:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    try:
      conn.send(('error', f'{type(e).__name__}: {e}\n'
                          f'{traceback.format_exc()}'))
    except (BrokenPipeError, OSError):
      pass
  finally:
    for env in envs.values():
      try:
        env.close()
      except Exception:  # pylint: disable=broad-except
        pass
    conn.close()


_LIVE: 'weakref.WeakSet[DmLabEnv]' = weakref.WeakSet()


@atexit.register
def _close_all():
  for env in list(_LIVE):
    env.close()


class DmLabEnv(BatchedEnv):
  """``num_envs`` DMLab environments in ``num_workers`` processes.

  Args:
    env_id: ``dmlab:<level>``.
    num_envs, batch_size, seed: as ``make_env``; env ``i``'s episode seeds
      come from ``RandomState(seed * 1_000_003 + i)``.
    num_workers: worker processes (default ``min(num_envs, os.cpu_count())``).
    max_episode_steps: truncation in agent steps; 0 = the level's limit.
    config: extra ``Lab`` config (string values), e.g.
      ``{'datasetPath': ...}`` for the psychlab levels; width/height are set.
    instruction_len: > 0: add the level's instruction, as up to this many
      word ids in an extra observation row (module docstring).
    renderer: passed to ``Lab`` when given ('software' or 'hardware').
    start_method: multiprocessing start method (default 'spawn').
  """

  def __init__(self, env_id: str, *, num_envs: int,
               batch_size: Optional[int] = None, seed: int = 0,
               num_workers: Optional[int] = None, max_episode_steps: int = 0,
               config: Optional[Dict[str, Any]] = None,
               renderer: Optional[str] = None, start_method: str = 'spawn',
               num_threads: int = 0, instruction_len: int = 0):
    del num_threads  # envpool's knob; processes are num_workers here.
    self.spec = describe_dmlab(env_id, max_episode_steps, instruction_len)
    if num_envs < 1:
      raise ValueError(f'num_envs must be >= 1, got {num_envs}.')
    self.num_envs = num_envs
    self.batch_size = num_envs if batch_size is None else batch_size
    if not 1 <= self.batch_size <= num_envs:
      raise ValueError(f'batch_size must be in [1, {num_envs}], got '
                       f'{self.batch_size}.')
    workers = num_workers or min(num_envs, os.cpu_count() or 1)
    workers = max(1, min(workers, num_envs))
    lab_config = {'width': str(WIDTH), 'height': str(HEIGHT),
                  'logLevel': 'WARN'}
    lab_config.update({k: str(v) for k, v in (config or {}).items()})
    self._owner = np.zeros(num_envs, np.int64)
    self._conns: List[mp.connection.Connection] = []
    self._procs: List[mp.process.BaseProcess] = []
    self._closed = False
    self._ready: collections.deque = collections.deque()
    self._in_flight = np.zeros(workers, np.int64)   # messages awaiting rows
    ctx = mp.get_context(start_method)
    _LIVE.add(self)
    try:
      for w, ids in enumerate(np.array_split(np.arange(num_envs), workers)):
        ids = [int(i) for i in ids]
        self._owner[ids] = w
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_worker, daemon=True,
            args=(child, ids, self.spec.envpool_kwargs['level'], lab_config,
                  [seed * 1_000_003 + i for i in ids], max_episode_steps,
                  renderer, instruction_len))
        proc.start()
        child.close()
        self._conns.append(parent)
        self._procs.append(proc)
      for w in range(workers):
        self._expect(w, 'ok')
    except BaseException:
      self.close()
      raise

  def _expect(self, w: int, kind: str):
    try:
      tag, payload = self._conns[w].recv()
    except EOFError:
      raise RuntimeError(f'DMLab worker {w} died (exit code '
                         f'{self._procs[w].exitcode}).') from None
    if tag == 'error':
      raise RuntimeError(f'DMLab worker {w} failed: {payload}')
    if tag != kind:
      raise RuntimeError(f'DMLab worker {w}: expected {kind!r}, got {tag!r}.')
    return payload

  def _check_open(self):
    if self._closed:
      raise RuntimeError('the DMLab environment is closed.')

  def async_reset(self) -> None:
    self._check_open()
    self._drain()
    for w, conn in enumerate(self._conns):
      conn.send(('reset', [int(i) for i in np.nonzero(self._owner == w)[0]]))
      self._in_flight[w] += 1

  def _drain(self):
    """Drops replies still in flight (before a reset)."""
    for w in range(len(self._conns)):
      while self._in_flight[w]:
        self._expect(w, 'rows')
        self._in_flight[w] -= 1
    self._ready.clear()

  def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
    self._check_open()
    actions = np.asarray(actions).reshape(-1)
    env_id = np.asarray(env_id).reshape(-1)
    if len(actions) != len(env_id):
      raise ValueError(f'{len(actions)} actions for {len(env_id)} env ids.')
    if np.any((actions < 0) | (actions >= len(DEFAULT_ACTION_SET))):
      raise ValueError(f'actions must be in [0, {len(DEFAULT_ACTION_SET)}), '
                       f'got {actions.tolist()}.')
    per_worker: Dict[int, list] = collections.defaultdict(list)
    for i, a in zip(env_id.tolist(), actions.tolist()):
      per_worker[int(self._owner[i])].append((int(i), int(a)))
    for w, payload in per_worker.items():
      self._conns[w].send(('step', payload))
      self._in_flight[w] += 1

  def recv(self) -> StepBatch:
    self._check_open()
    while len(self._ready) < self.batch_size:
      busy = [self._conns[w] for w in range(len(self._conns))
              if self._in_flight[w]]
      if not busy:
        raise RuntimeError(
            f'recv() needs {self.batch_size} environments but only '
            f'{len(self._ready)} have results and none is stepping: send() '
            'an action for every environment a recv() returned.')
      for conn in mp.connection.wait(busy):
        w = self._conns.index(conn)
        rows = self._expect(w, 'rows')
        self._in_flight[w] -= 1
        self._ready.extend(rows)
    rows = [self._ready.popleft() for _ in range(self.batch_size)]
    ids, obs, rew, term, trunc, over, ret, length = zip(*rows)
    return StepBatch(
        obs=np.stack(obs), reward=np.asarray(rew, np.float32),
        terminated=np.asarray(term, bool), truncated=np.asarray(trunc, bool),
        env_id=np.asarray(ids, np.int32), game_over=np.asarray(over, bool),
        game_return=np.asarray(ret, np.float32),
        game_length=np.asarray(length, np.int32))

  def close(self) -> None:
    if getattr(self, '_closed', True):
      return
    self._closed = True
    for conn in self._conns:
      try:
        conn.send(('close', None))
      except (BrokenPipeError, OSError):
        pass
    # Replies still in flight are read and dropped so that no worker blocks
    # on a full pipe before it reaches 'close'.
    deadline = time.monotonic() + 5.0
    while (any(p.is_alive() for p in self._procs)
           and time.monotonic() < deadline):
      for conn in self._conns:
        try:
          while conn.poll(0):
            conn.recv()
        except (EOFError, OSError):
          pass
      time.sleep(0.01)
    for proc in self._procs:
      if proc.is_alive():
        proc.terminate()
        proc.join(timeout=5)
      if proc.is_alive():
        proc.kill()
        proc.join()
    for conn in self._conns:
      conn.close()
    _LIVE.discard(self)

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


def make_dmlab_env(env_id: str, *, num_envs: int,
                   batch_size: Optional[int] = None, seed: int = 0,
                   num_threads: int = 0, max_episode_steps: int = 0,
                   **kwargs: Any) -> DmLabEnv:
  """``make_env`` for ``dmlab:`` ids (see ``DmLabEnv`` for ``kwargs``)."""
  return DmLabEnv(env_id, num_envs=num_envs, batch_size=batch_size,
                  seed=seed, num_threads=num_threads,
                  max_episode_steps=max_episode_steps, **kwargs)
