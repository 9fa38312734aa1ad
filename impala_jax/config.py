"""Every knob of a run in one typed dataclass.

``Config`` is flat on purpose (one absl flag per field, one line per field in
a run's ``config.json``). Beside it: the names its fields take (torsos,
reward clippings, runtimes), the Atari protocols by name and the env-id
prefixes of the non-envpool backends. The presets (named starting values)
are ``impala_jax.presets``. This module imports nothing else of the
package.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

# 'soft_asymmetric': scalable_agent's experiment.py (the released code
# behind the paper's DMLab runs); 'soft_asymmetric_paper': the formula the
# paper prints. ``impala_jax.core.learner.clip_rewards`` gives both.
REWARD_CLIPPING = ('none', 'abs_one', 'soft_asymmetric',
                   'soft_asymmetric_paper')
# 'auto': Anakin for JAX environment ids (gymnax:...), Sebulba otherwise.
RUNTIMES = ('auto', 'sebulba', 'anakin')
TORSOS = ('shallow', 'deep', 'mlp', 'minatar')
# Environment ids served by a backend other than envpool start with these
# (``impala_jax.envs.factory`` routes them).
GYMNAX_PREFIX = 'gymnax:'
DMLAB_PREFIX = 'dmlab:'

# Atari evaluation protocols by name (``--atari_protocol``): the Config
# fields each one fixes. Both train and report on whole games (a lost life
# may still end a *training* episode with ``episodic_life``; the reported
# score is the game's) with a limit of 108K frames (``max_episode_steps``).
#   'paper':   Espeholt et al. 2018 (after Mnih et al. 2015): up to 30 no-op
#              starts, no sticky actions, the minimal action set, FIRE
#              pressed after a reset in games that need it. The IMPALA
#              paper's Atari-57 numbers (e.g. 191.8% median) use it.
#   'machado': Machado et al. 2018, as Cleanba and most recent papers
#              report: sticky actions (repeat probability 0.25), the full 18
#              actions, no no-op starts (envpool's ``noop_max=1``), no FIRE
#              reset. Cleanba's IMPALA Atari-57 figures (~165% median) use it.
ATARI_PROTOCOLS = {
    'paper': {'noop_max': 30, 'sticky_action_prob': 0.0,
              'full_action_space': False, 'use_fire_reset': True},
    'machado': {'noop_max': 1, 'sticky_action_prob': 0.25,
                'full_action_space': True, 'use_fire_reset': False},
}


WANDB_MODES = ('', 'online', 'offline', 'disabled')


@dataclasses.dataclass(frozen=True)
class Config:
  """A run's configuration. Defaults are the paper's Atari settings
  (Espeholt et al. 2018, table G.1) except the network, which is set by the
  presets."""

  # --- environment ---
  env: str = 'Pong-v5'          # one id, or a comma-separated list of ids
                                # for one agent trained on several tasks
                                # (``tasks``; e.g. 'Pong-v5,Breakout-v5')
  task_reward_scales: Tuple[float, ...] = ()  # multi-task: one factor per
                                # task multiplying its rewards (and returns)
                                # before anything sees them; () = all 1
  num_envs: int = 32            # environments per actor thread
  env_batch_size: int = 16      # envpool async batch (< num_envs overlaps
                                # stepping with inference)
  num_actors: int = 1           # actor threads, each with its own envpool
  env_threads: int = 0          # envpool C++ threads per actor (0 = auto)
  # Atari protocol: a name from ATARI_PROTOCOLS and the fields it sets
  # (``with_atari_protocol``; defaults: the paper's). Setting a field apart
  # from its protocol is allowed and recorded in config.json.
  atari_protocol: str = 'paper'
  noop_max: int = 30
  sticky_action_prob: float = 0.0
  full_action_space: bool = False
  use_fire_reset: bool = True
  episodic_life: bool = False
  max_episode_steps: int = 27_000  # agent steps (= 108K frames at repeat 4)
                                   # gymnax, DMLab: <= 0 keeps the env's own
                                   # limit
  dmlab_dataset_path: str = ''     # DMLab 'datasetPath' (the psychlab levels'
                                   # image dataset)

  # --- agent ---
  torso: str = 'deep'
  use_lstm: bool = False
  lstm_size: int = 256
  mlp_sizes: Tuple[int, ...] = (64, 64)
  torso_chunk: int = -1         # torso batch slices: -1 auto (64 on CPU for
                                # the Atari conv torsos, else off), 0 off,
                                # N slices
  instruction_len: int = 0      # DMLab: > 0 encodes the first N words of the
                                # level's instruction (language_* levels)

  # --- learning ---
  total_frames: int = 200_000_000   # env steps x action repeat
  unroll_length: int = 20           # T
  batch_size: int = 32              # B trajectories per update
  discount: float = 0.99
  reward_clipping: str = 'abs_one'
  baseline_cost: float = 0.5
  entropy_cost: float = 0.01
  clip_rho_threshold: Optional[float] = 1.0
  clip_c_threshold: Optional[float] = 1.0
  clip_pg_rho_threshold: Optional[float] = 1.0
  vtrace_lambda: float = 1.0
  learning_rate: float = 6e-4
  lr_decay: bool = True             # linear decay to 0 over total_frames
  rmsprop_decay: float = 0.99
  rmsprop_epsilon: float = 0.01
  rmsprop_momentum: float = 0.0
  rmsprop_initial_scale: float = 1.0  # the mean-square accumulator's start:
                                      # 1.0 as TF1's RMSPropOptimizer (the
                                      # paper's code), 0.0 as optax's default
  max_grad_norm: float = 40.0
  # PopArt (Hessel et al. 2019): per-task value normalisation, off by
  # default. ``core/popart.py`` has the rules; the bounds clip sigma.
  popart: bool = False
  popart_beta: float = 3e-4         # step size of the running moments
  popart_min_scale: float = 1e-4
  popart_max_scale: float = 1e6

  # --- runtime ---
  runtime: str = 'auto'             # auto | sebulba (envpool) | anakin (JAX
                                    # envs: act + learn in one program)
  updates_per_call: int = 10        # Anakin: updates per compiled call
  seed: int = 0
  actor_devices: Tuple[int, ...] = (0,)
  learner_devices: Tuple[int, ...] = (0,)
  queue_size: int = 4               # trajectories (of env_batch_size) queued
  log_every_seconds: float = 10.0
  eval_every_frames: int = 0        # > 0: play eval_games whole games with
  eval_games: int = 10              # the current params every this many
                                    # frames (both runtimes; metrics.csv
                                    # columns eval_return_mean/median)
  checkpoint_every_seconds: float = 600.0
  keep_checkpoints: int = 3         # newest checkpoints kept; a damaged
                                    # newest one falls back on the others
  actor_timeout_seconds: float = 300.0  # envpool: the learner receiving
                                    # nothing this long ends the run (a
                                    # stalled actor), with a checkpoint
  # Weights & Biases (the ``wandb`` extra): off while the project is empty.
  # The same scalars as TensorBoard, the config, evaluation videos.
  wandb_project: str = ''
  wandb_entity: str = ''            # team or user; empty: wandb's default
  wandb_mode: str = ''              # online | offline | disabled; empty:
                                    # $WANDB_MODE, else online

  def validate(self) -> 'Config':
    """Raises ``ValueError`` with a one-line reason for an invalid field."""
    def need(ok: bool, message: str):
      if not ok:
        raise ValueError(message)
    names = self.env.split(',')
    need(all(n.strip() == n and n for n in names),
         f'--env must be one id or ids separated by commas (no spaces, no '
         f'empty entries), got {self.env!r}.')
    families = {_backend(n) for n in names}
    need(len(families) == 1,
         f'--env mixes backends ({", ".join(sorted(families))}): every task '
         f'of a run must come from the same one, got {self.env!r}.')
    need(not self.task_reward_scales or
         len(self.task_reward_scales) == len(names),
         f'--task_reward_scales needs one factor per task ({len(names)}), '
         f'got {len(self.task_reward_scales)}.')
    scales = self.task_reward_scales or (1.0,) * len(names)
    need(len(set(zip(names, scales))) == len(names),
         f'--env lists a task twice: {self.env!r} (the same id may appear '
         'twice only with different --task_reward_scales).')
    need(all(s > 0 for s in self.task_reward_scales),
         f'--task_reward_scales must be > 0, got '
         f'{list(self.task_reward_scales)}.')
    need(0.0 < self.popart_beta <= 1.0,
         f'--popart_beta must be in (0, 1], got {self.popart_beta}.')
    need(0.0 < self.popart_min_scale < self.popart_max_scale,
         f'--popart_min_scale must be > 0 and below --popart_max_scale, '
         f'got {self.popart_min_scale} and {self.popart_max_scale}.')
    need(self.wandb_mode in WANDB_MODES,
         f'--wandb_mode must be one of {", ".join(m for m in WANDB_MODES if m)}'
         f' (or empty), got {self.wandb_mode!r}.')
    need(self.total_frames > 0,
         f'--total_frames must be > 0, got {self.total_frames}.')
    need(self.unroll_length >= 1,
         f'--unroll_length must be >= 1, got {self.unroll_length}.')
    need(self.batch_size >= 1,
         f'--batch_size must be >= 1, got {self.batch_size}.')
    need(self.num_envs >= 1, f'--num_envs must be >= 1, got {self.num_envs}.')
    need(1 <= self.env_batch_size <= self.num_envs,
         f'--env_batch_size must be in [1, num_envs={self.num_envs}], got '
         f'{self.env_batch_size}.')
    need(self.num_actors >= 1,
         f'--num_actors must be >= 1, got {self.num_actors}.')
    need(0.0 <= self.discount <= 1.0,
         f'--discount must be in [0, 1], got {self.discount}.')
    need(self.reward_clipping in REWARD_CLIPPING,
         f'--reward_clipping must be one of {", ".join(REWARD_CLIPPING)}, '
         f'got {self.reward_clipping!r}.')
    need(self.atari_protocol in ATARI_PROTOCOLS,
         f'--atari_protocol must be one of {", ".join(ATARI_PROTOCOLS)}, '
         f'got {self.atari_protocol!r}.')
    need(0.0 <= self.sticky_action_prob <= 1.0,
         f'--sticky_action_prob must be in [0, 1], got '
         f'{self.sticky_action_prob}.')
    need(self.torso in TORSOS,
         f'--torso must be one of {", ".join(TORSOS)}, got {self.torso!r}.')
    need(self.learning_rate > 0,
         f'--learning_rate must be > 0, got {self.learning_rate}.')
    need(self.max_grad_norm > 0,
         f'--max_grad_norm must be > 0, got {self.max_grad_norm}.')
    need(0.0 <= self.rmsprop_decay < 1.0,
         f'--rmsprop_decay must be in [0, 1), got {self.rmsprop_decay}.')
    need(self.rmsprop_initial_scale >= 0,
         f'--rmsprop_initial_scale must be >= 0, got '
         f'{self.rmsprop_initial_scale}.')
    need(self.rmsprop_epsilon > 0,
         f'--rmsprop_epsilon must be > 0, got {self.rmsprop_epsilon}.')
    need(0.0 <= self.vtrace_lambda <= 1.0,
         f'--vtrace_lambda must be in [0, 1], got {self.vtrace_lambda}.')
    for name in ('clip_rho_threshold', 'clip_c_threshold',
                 'clip_pg_rho_threshold'):
      value = getattr(self, name)
      need(value is None or value > 0,
           f'--{name} must be > 0 (or "none"), got {value}.')
    need(self.torso_chunk >= -1,
         f'--torso_chunk must be -1 (auto), 0 (off) or a slice size, got '
         f'{self.torso_chunk}.')
    need(self.runtime in RUNTIMES,
         f'--runtime must be one of {", ".join(RUNTIMES)}, got '
         f'{self.runtime!r}.')
    need(self.updates_per_call >= 1,
         f'--updates_per_call must be >= 1, got {self.updates_per_call}.')
    need(self.eval_every_frames >= 0 and self.eval_games >= 1,
         f'--eval_every_frames must be >= 0 and --eval_games >= 1, got '
         f'{self.eval_every_frames} and {self.eval_games}.')
    need(0 <= self.instruction_len <= 96,
         f'--instruction_len must be in [0, 96], got {self.instruction_len}.')
    need(self.instruction_len == 0 or self.env.startswith(DMLAB_PREFIX),
         f'--instruction_len={self.instruction_len} needs a DMLab level '
         f'(--env=dmlab:<level>), got --env={self.env}.')
    need(not self.dmlab_dataset_path or self.env.startswith(DMLAB_PREFIX),
         f'--dmlab_dataset_path is for DMLab levels, got --env={self.env}.')
    def above(name: str, low: float, strict: bool = False):
      value = getattr(self, name)
      need(value > low if strict else value >= low,
           f'--{name} must be {">" if strict else ">="} {low:g}, got '
           f'{value}.')
    above('env_threads', 0)
    above('noop_max', 0)
    above('lstm_size', 1)
    above('baseline_cost', 0)
    above('entropy_cost', 0)
    above('seed', 0)
    above('keep_checkpoints', 1)
    above('actor_timeout_seconds', 0, strict=True)
    above('checkpoint_every_seconds', 0, strict=True)
    above('log_every_seconds', 0)
    need(len(self.mlp_sizes) >= 1 and all(n >= 1 for n in self.mlp_sizes),
         f'--mlp_sizes needs one or more layer widths >= 1, got '
         f'{list(self.mlp_sizes)}.')
    need(0.0 <= self.rmsprop_momentum < 1.0,
         f'--rmsprop_momentum must be in [0, 1), got {self.rmsprop_momentum}.')
    need(all(i >= 0 for i in self.actor_devices + self.learner_devices),
         f'--actor_devices and --learner_devices are indices >= 0, got '
         f'{list(self.actor_devices)} and {list(self.learner_devices)}.')
    need(self.queue_size >= 1,
         f'--queue_size must be >= 1, got {self.queue_size}.')
    need(len(self.learner_devices) >= 1 and len(self.actor_devices) >= 1,
         '--actor_devices and --learner_devices need at least one index.')
    need(self.batch_size % len(self.learner_devices) == 0,
         f'--batch_size={self.batch_size} must be divisible by the number of '
         f'learner devices ({len(self.learner_devices)}).')
    return self


def _backend(env_id: str) -> str:
  for prefix in (GYMNAX_PREFIX, DMLAB_PREFIX):
    if env_id.startswith(prefix):
      return prefix[:-1]
  return 'envpool'


def tasks(config: Config) -> Tuple[str, ...]:
  """The run's task ids, in task-id order (one for a single-task run)."""
  return tuple(config.env.split(','))


def num_tasks(config: Config) -> int:
  return len(tasks(config))


def task_name(env_id: str) -> str:
  """A task's short name for metric columns: the id without its backend
  prefix (``gymnax:Breakout-MinAtar`` -> ``Breakout-MinAtar``)."""
  return env_id.split(':', 1)[1] if ':' in env_id else env_id


def task_names(config: Config) -> Tuple[str, ...]:
  """Each task's name for metric columns: ``task_name`` of its id, with
  ``#k`` (its task index) added where an id appears more than once (the
  same game at different reward scales)."""
  ids = tasks(config)
  return tuple(task_name(t) + (f'#{k}' if ids.count(t) > 1 else '')
               for k, t in enumerate(ids))


def task_config(config: Config, task: int) -> Config:
  """The single-task config of task ``task`` (its id as ``env``; every
  other field shared). Environments are built per task from these."""
  return dataclasses.replace(config, env=tasks(config)[task],
                             task_reward_scales=())


def task_reward_scale(config: Config, task: int) -> float:
  return (float(config.task_reward_scales[task])
          if config.task_reward_scales else 1.0)


def with_atari_protocol(config: Config, name: str) -> Config:
  """``config`` with Atari protocol ``name`` (``ATARI_PROTOCOLS``): sets
  ``atari_protocol`` and every field the protocol fixes."""
  if name not in ATARI_PROTOCOLS:
    raise ValueError(f'unknown Atari protocol {name!r}; choose one of '
                     f'{", ".join(ATARI_PROTOCOLS)}.')
  return dataclasses.replace(config, atari_protocol=name,
                             **ATARI_PROTOCOLS[name])


def atari_protocol_changes(config: Config) -> dict:
  """``{field: value}`` where ``config`` departs from its named protocol
  (empty: the run follows ``config.atari_protocol`` exactly)."""
  fixed = ATARI_PROTOCOLS.get(config.atari_protocol, {})
  return {k: getattr(config, k) for k, v in fixed.items()
          if getattr(config, k) != v}


def describe_atari_protocol(config: Config) -> str:
  """One line: the protocol's name and settings, and any departures."""
  c = config
  parts = [f'sticky actions {c.sticky_action_prob:g}'
           if c.sticky_action_prob else 'no sticky actions',
           ('full' if c.full_action_space else 'minimal') + ' action set',
           f'up to {c.noop_max} no-op starts' if c.noop_max > 1
           else 'no no-op starts',
           'FIRE reset' if c.use_fire_reset else 'no FIRE reset']
  text = f'Atari protocol {c.atari_protocol!r}: ' + ', '.join(parts)
  changes = atari_protocol_changes(config)
  if changes:
    text += ' (departs from the protocol: ' + ', '.join(
        f'{k}={v}' for k, v in changes.items()) + ')'
  return text
