"""Every bad flag is one line ``error: ...`` and exit code 2, no traceback.

Every ``Config`` field (a flag of ``experiments.train``) and every flag of
every program gets a value of the wrong type where its type has one, and a
value out of range unless a table says why it has none.
Each program's cases run in one process (``tests/flag_worker.py``: the real
flag parsing and start-up checks, the work itself replaced by a stand-in).
"""

import dataclasses
import json
import os
import subprocess
import sys
import typing

import pytest

from impala_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, 'tests', 'flag_worker.py')

# A value out of range for each Config field, or why the field has none.
OUT_OF_RANGE = {
    'env': 'NoSuchGame-v5', 'task_reward_scales': '-1', 'num_envs': '0',
    'env_batch_size': '0', 'num_actors': '0', 'env_threads': '-1',
    'atari_protocol': 'nope', 'noop_max': '-1', 'sticky_action_prob': '1.5',
    'dmlab_dataset_path': '/data', 'torso': 'nope', 'lstm_size': '0',
    'mlp_sizes': '0', 'torso_chunk': '-2', 'instruction_len': '-1',
    'total_frames': '0', 'unroll_length': '0', 'batch_size': '0',
    'discount': '1.5', 'reward_clipping': 'nope', 'baseline_cost': '-1',
    'entropy_cost': '-1', 'clip_rho_threshold': '0', 'clip_c_threshold': '0',
    'clip_pg_rho_threshold': '-1', 'vtrace_lambda': '2', 'learning_rate': '0',
    'rmsprop_decay': '1', 'rmsprop_epsilon': '0', 'rmsprop_momentum': '1',
    'rmsprop_initial_scale': '-1', 'max_grad_norm': '0', 'popart_beta': '0',
    'popart_min_scale': '0', 'popart_max_scale': '1e-9', 'runtime': 'nope',
    'updates_per_call': '0', 'seed': '-1', 'actor_devices': '-1',
    'learner_devices': '7', 'queue_size': '0', 'log_every_seconds': '-1',
    'eval_every_frames': '-1', 'eval_games': '0',
    'checkpoint_every_seconds': '0', 'keep_checkpoints': '0',
    'actor_timeout_seconds': '0', 'wandb_mode': 'cloudy',
}
NO_RANGE = {
    'full_action_space': 'a boolean', 'use_fire_reset': 'a boolean',
    'episodic_life': 'a boolean', 'use_lstm': 'a boolean',
    'lr_decay': 'a boolean', 'popart': 'a boolean',
    'max_episode_steps': '<= 0 keeps the environment\'s own limit',
    'wandb_project': 'any W&B project name',
    'wandb_entity': 'any W&B team or user',
}
# The programs' own flags, out of range (train, evaluate, plot).
PROGRAM_OUT_OF_RANGE = {
    'train': {'preset': 'nope', 'num_processes': '0', 'process_id': '-1',
              'heartbeat_timeout_seconds': '0'},
    'evaluate': {'num_games': '0', 'num_envs': '0', 'video': 'x.avi',
                 'video_fps': '0', 'step': '-1', 'seed': '-1',
                 'wandb_mode': 'cloudy', 'logdir': ''},
    'plot': {'smooth': '0', 'final_fraction': '0', 'bootstrap_reps': '0',
             'paper_variant': 'nope', 'reference': 'nope', 'spread': 'nope',
             'statistic': 'nope', 'labels': 'a,b,c', 'seed': '-1'},
    'sweep': {'games': 'NoSuchGame-v5', 'seeds': 'x', 'preset': 'nope',
              'total_frames': '0', 'parallel': '0', 'root': '',
              'train_flag': '--logdir=elsewhere'},
    'reproduce': {'suite': 'nope', 'games': 'nope', 'seeds': 'x',
                  'total_frames': '0', 'eval_games': '0',
                  'train_flag': '--logdir=elsewhere'},
    'soak': {'seconds': '0', 'interval': '0', 'warmup': '-1', 'out': ''},
    'gpu_suite': {'budget_seconds': '0', 'pipeline_seconds': '0',
                  'pong_seconds': '0', 'json': ''},
    'benchmark': {'preset': 'nope', 'env': 'NoSuchGame-v5',
                  'env_seconds': '0', 'pipeline_seconds': '0',
                  'learner_iters': '0', 'skip_updates': '0'},
    'benchmark_learner': {'torsos': 'nope', 'T': '0', 'B': '0',
                          'devices': '0', 'warmup': '-1', 'iters': '0',
                          'num_actions': '0'},
    'benchmark_vtrace': {'T': '0', 'B': 'x', 'iters': '0', 'inner': '0',
                         'repeats': '0'},
    'benchmark_anakin': {'cartpole_batch_sizes': '0',
                         'breakout_batch_sizes': 'x',
                         'envpool_batch_sizes': '0', 'updates_per_call': '0',
                         'seconds': '0', 'skip_updates': '0',
                         'anakin_devices': '0'},
}
# Flags whose every value is in range (free text, paths, booleans).
PROGRAM_NO_RANGE = {
    'train': {'logdir', 'resume', 'async', 'progress', 'coordinator_address',
              'distributed'},
    'evaluate': {'greedy', 'json', 'wandb_project'},
    'plot': {'roots', 'out'},
    'sweep': {'suite', 'dry_run'},
    'reproduce': {'root', 'ship'},
    'soak': {'preset', 'env', 'train_flag'},
    'gpu_suite': {'smoke'},
    'benchmark': {'json'},
    'benchmark_learner': {'json', 'use_lstm'},
    'benchmark_vtrace': {'json'},
    'benchmark_anakin': {'json'},
}
PROGRAMS = ('train', 'evaluate', 'plot', 'sweep', 'reproduce', 'benchmark',
            'benchmark_learner', 'benchmark_vtrace', 'benchmark_anakin',
            'soak', 'gpu_suite')
WRONG_TYPE = {'int': 'abc', 'float': 'abc', 'bool': 'maybe',
              'enum': None, 'list': None, 'multi_string': None, 'string': None}


def _run_worker(program, cases):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, WORKER, program],
                        input=json.dumps(cases), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout)


def _check(results, names):
  problems = []
  for name, result in zip(names, results):
    lines = result['stderr'].strip().splitlines()
    ok = (result['code'] == 2 and len(lines) == 1
          and lines[0].startswith('error: ') and 'Traceback' not in
          result['stderr'])
    if not ok:
      problems.append(f'{result["args"]}: code {result["code"]}, stderr '
                      f'{result["stderr"][-300:]!r}')
    elif name.split('=')[0].lstrip('-') not in lines[0] and not any(
        word in lines[0] for word in ('NoSuchGame', 'nope')):
      problems.append(f'{result["args"]}: the error does not name the flag: '
                      f'{lines[0]!r}')
  assert not problems, '\n'.join(problems)


def test_every_config_field_has_an_out_of_range_case_or_a_reason():
  fields = {f.name for f in dataclasses.fields(config_lib.Config)}
  assert set(OUT_OF_RANGE) | set(NO_RANGE) == fields
  assert not set(OUT_OF_RANGE) & set(NO_RANGE)


def _wrong_type(hint):
  if hint is bool:
    return 'maybe'
  if hint in (int, float, typing.Optional[float]):
    return 'abc'
  if typing.get_origin(hint) is tuple:
    return 'x,y'
  return None   # str: every value has the right type


@pytest.mark.slow
def test_every_config_field_bad_type_and_out_of_range(tmp_path):
  hints = typing.get_type_hints(config_lib.Config)
  base = ['--preset=cartpole', f'--logdir={tmp_path / "run"}', '--noprogress']
  cases, names = [], []
  for field in dataclasses.fields(config_lib.Config):
    wrong = _wrong_type(hints[field.name])
    if wrong is not None:
      cases.append(base + [f'--{field.name}={wrong}'])
      names.append(field.name)
    if field.name in OUT_OF_RANGE:
      cases.append(base + [f'--{field.name}={OUT_OF_RANGE[field.name]}'])
      names.append(field.name)
  for name, value in PROGRAM_OUT_OF_RANGE['train'].items():
    cases.append(base + [f'--{name}={value}'])
    names.append(name)
  _check(_run_worker('train', cases), names)
  assert not os.path.exists(tmp_path / 'run')   # nothing started


def _program_flags(program):
  """``{name: absl flag type}`` of the flags a program module defines."""
  code = (
      'import sys, json; sys.path.insert(0, "."); from absl import flags\n'
      f'import experiments.{program} as m\n'
      'out = {f.name: f.flag_type() for f in '
      f'flags.FLAGS.get_key_flags_for_module("experiments.{program}")}}\n'
      'print(json.dumps(out))')
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize('program', PROGRAMS)
def test_every_program_flag_bad_type_and_out_of_range(tmp_path, program):
  defined = _program_flags(program)
  if program == 'train':
    defined = {n: t for n, t in defined.items()
               if n not in {f.name for f in dataclasses.fields(
                   config_lib.Config)}}   # the fields: test above
  required = {'evaluate': [f'--logdir={tmp_path}'],
              'plot': [f'--roots={tmp_path}', f'--out={tmp_path / "out"}'],
              'sweep': [f'--root={tmp_path}', '--games=CartPole-v1'],
              'soak': [f'--out={tmp_path / "soak"}'],
              'gpu_suite': [f'--json={tmp_path / "suite.json"}'],
              }.get(program, [])
  ranged = PROGRAM_OUT_OF_RANGE.get(program, {})
  exempt = PROGRAM_NO_RANGE.get(program, set())
  assert set(ranged) | exempt == set(defined), (
      program, sorted(set(defined) - set(ranged) - exempt))
  cases, names = [], []
  for name, kind in sorted(defined.items()):
    wrong = WRONG_TYPE.get(kind.split()[0] if kind else '', None)
    if wrong is not None:
      cases.append(required + [f'--{name}={wrong}'])
      names.append(name)
  for name, value in PROGRAM_OUT_OF_RANGE.get(program, {}).items():
    assert name in defined, (program, name)
    cases.append([c for c in required if not c.startswith(f'--{name}=')]
                 + [f'--{name}={value}'])
    names.append(name)
  if not cases:
    pytest.skip(f'{program} has no typed flags')
  _check(_run_worker(program, cases), names)
