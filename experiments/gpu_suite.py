r"""The accelerator suite: one command, at most ~8 minutes, one JSON and one
Markdown table (issue 17).

  python -m experiments.gpu_suite --json=bench_results/gpu_suite.json
  make bench-gpu                                   # the same
  python -m experiments.gpu_suite --smoke --json=/tmp/smoke.json   # CPU, tiny

Sections, one after another (never concurrently), each timed on its own:

* ``learner``: ``Learner.update`` frames/s on synthetic Atari batches
  ``[T+1, B, 4, 84, 84]`` (T = 20), shallow and deep torso, B in
  {32, 64, 256}, on one device (``_bench_common.time_learner``).
* ``pipeline``: ``paper_atari`` on Pong-v5 through ``runtime.train``
  (actor threads, envpool, queue, learner) for ``--pipeline_seconds``:
  actor and learner sharing device 0, and, with several devices, actor on
  0 and learner on the rest (the split layout).
* ``anakin``: CartPole (``cartpole_anakin``) and Breakout-MinAtar
  (``minatar``) in one compiled program over a doubling batch size; the
  best batch and the first within 10% of it (where throughput saturates).
* ``pong_learning``: ``paper_atari`` Pong-v5 from pixels for
  ``--pong_seconds`` wall (180), the mean whole-game return of the games
  finished in the last logged interval at the end.

``--smoke`` runs the same code paths at tiny sizes (T=2, B=2, a few
seconds each) so a CPU test can check that every section runs and writes
its fields. A section that would start after ``--budget_seconds`` is
recorded as skipped, so a short device lease still gets a JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time

from absl import flags
from absl import logging

from . import _bench_common as common
from . import _cli

_JSON = flags.DEFINE_string('json', None, 'Write the results here (required); '
                            'the Markdown table goes beside it (.md).')
_SMOKE = flags.DEFINE_boolean('smoke', False,
                              'Tiny sizes: every code path in about a minute '
                              'on a CPU.')
_BUDGET = flags.DEFINE_float('budget_seconds', 480.0,
                             'Sections that would start later are skipped.')
_PIPELINE_SECONDS = flags.DEFINE_float('pipeline_seconds', 30.0,
                                       'Timed seconds of each pipeline run.')
_PONG_SECONDS = flags.DEFINE_float('pong_seconds', 180.0,
                                   'Wall seconds of the Pong learning run.')

SECTIONS = ('learner', 'pipeline', 'anakin', 'pong_learning')


class _Enough(Exception):
  """Ends a timed ``runtime.train`` run from its update callback."""


def _sizes(smoke: bool) -> dict:
  if smoke:
    # The pipeline and Pong runs use the shallow torso and one actor here:
    # the deep one's compilation alone would take most of a minute on a CPU.
    return dict(T=2, learner_B=(2,), learner_iters=2, pipeline_B=2,
                num_envs=4, pipeline_seconds=2.0, skip_updates=1,
                pipeline_overrides=dict(torso='shallow', num_actors=1),
                anakin_B=(8,), anakin_seconds=0.5, pong_seconds=5.0)
  return dict(T=20, learner_B=(32, 64, 256), learner_iters=10,
              pipeline_B=32, num_envs=64, pipeline_seconds=
              _PIPELINE_SECONDS.value, skip_updates=5,
              pipeline_overrides={},
              anakin_B=(256, 512, 1024, 2048, 4096, 8192),
              anakin_seconds=5.0, pong_seconds=_PONG_SECONDS.value)


def learner_section(size: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from impala_jax import presets  # pylint: disable=g-import-not-at-top
  rows = []
  for torso in ('shallow', 'deep'):
    for batch in size['learner_B']:
      config = dataclasses.replace(
          presets.paper_atari(), torso=torso, batch_size=batch,
          unroll_length=size['T'], torso_chunk=-1)
      r = common.time_learner(config, jax.local_devices()[:1], (4, 84, 84),
                              np.uint8, 4, 6, warmup=1,
                              iters=size['learner_iters'])
      rows.append({k: r[k] for k in ('torso', 'T', 'B', 'compile_s',
                                     'update_ms_median', 'fps',
                                     'fps_with_transfer')})
      print(f'learner {torso:7s} B={batch:4d}: {r["fps"]:10.0f} frames/s '
            f'({r["fps_with_transfer"]:.0f} fed from the host)', flush=True)
  return {'rows': rows}


def _pipeline_config(size: dict, **overrides):
  from impala_jax import presets  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(
      presets.get_preset('paper_atari', env='Pong-v5'),
      unroll_length=size['T'], batch_size=size['pipeline_B'],
      num_envs=size['num_envs'], env_batch_size=size['num_envs'] // 2,
      **{**size['pipeline_overrides'], **overrides}).validate()


def pipeline_section(size: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  layouts = {'shared': dict(actor_devices=(0,), learner_devices=(0,))}
  n = jax.local_device_count()
  if n > 1:
    learners = tuple(range(1, n))
    batch = size['pipeline_B'] - size['pipeline_B'] % len(learners)
    layouts['split'] = dict(actor_devices=(0,), learner_devices=learners,
                            batch_size=max(batch, len(learners)))
  rows = []
  for name, layout in layouts.items():
    config = _pipeline_config(size, **layout)
    r = common.time_envpool(config, size['pipeline_seconds'],
                            size['skip_updates'])
    rows.append({'layout': name, 'actor_devices': list(config.actor_devices),
                 'learner_devices': list(config.learner_devices),
                 'batch_size': config.batch_size,
                 'frames_per_s': 4 * r['env_steps_per_s'],
                 'env_steps_per_s': r['env_steps_per_s'],
                 'updates_timed': r['updates_timed']})
    print(f'pipeline {name}: {rows[-1]["frames_per_s"]:.0f} frames/s',
          flush=True)
  return {'rows': rows}


def _saturation(rows):
  best = max(rows, key=lambda r: r['env_steps_per_s'])
  saturated = next(r for r in rows
                   if r['env_steps_per_s'] >= 0.9 * best['env_steps_per_s'])
  return best, saturated


def anakin_section(size: dict) -> dict:
  from impala_jax import presets  # pylint: disable=g-import-not-at-top
  out = {}
  for name, preset, env in (('cartpole', 'cartpole_anakin', None),
                            ('breakout_minatar', 'minatar',
                             'gymnax:Breakout-MinAtar')):
    rows = []
    for batch in size['anakin_B']:
      config = dataclasses.replace(presets.get_preset(preset, env=env),
                                   batch_size=batch).validate()
      r = common.time_anakin(config, size['anakin_seconds'])
      rows.append({k: r[k] for k in ('batch_size', 'T', 'updates_per_call',
                                     'first_call_s', 'env_steps_per_s')})
    best, saturated = _saturation(rows)
    out[name] = {'rows': rows, 'best_batch': best['batch_size'],
                 'best_steps_per_s': best['env_steps_per_s'],
                 'saturation_batch': saturated['batch_size']}
    print(f'anakin {name}: {best["env_steps_per_s"]:.0f} steps/s at '
          f'B={best["batch_size"]} (within 10% from B='
          f'{saturated["batch_size"]})', flush=True)
  return out


def pong_section(size: dict) -> dict:
  from impala_jax import runtime  # pylint: disable=g-import-not-at-top
  from impala_jax.metrics import read_metrics  # pylint: disable=g-import-not-at-top
  config = _pipeline_config(
      size, log_every_seconds=min(10.0, size['pong_seconds'] / 10),
      checkpoint_every_seconds=1e9)
  start = time.perf_counter()
  updates = []

  def on_update(n, metrics):
    del metrics
    updates.append(n)
    if time.perf_counter() - start >= size['pong_seconds']:
      raise _Enough()
  with tempfile.TemporaryDirectory() as logdir:
    try:
      runtime.train(config, logdir, sync=False, resume=False, progress=False,
                    handle_signals=False, on_update=on_update)
    except _Enough:
      pass
    rows = read_metrics(os.path.join(logdir, 'metrics.csv'))
  wall = time.perf_counter() - start
  games = [r for r in rows if r.get('episode_return') not in ('', None)
           and math.isfinite(float(r['episode_return']))]
  frames = len(updates) * config.unroll_length * config.batch_size * 4
  result = {'seconds': wall, 'updates': len(updates), 'frames': frames,
            'final_return': (float(games[-1]['episode_return'])
                             if games else None)}
  print(f'pong learning: {result["frames"]:,} frames in {wall:.0f} s, final '
        f'return {result["final_return"]}', flush=True)
  return result


def markdown(results: dict) -> str:
  """The suite's figures as Markdown tables."""
  lines = [f'# GPU suite ({results["machine"].get("device_kind", "")}, '
           f'{"smoke" if results["smoke"] else "full"})', '']
  learner = results['sections'].get('learner', {})
  if 'rows' in learner:
    lines += ['| torso | T | B | update (ms) | frames/s | frames/s from host |',
              '|---|---|---|---|---|---|']
    lines += [f'| {r["torso"]} | {r["T"]} | {r["B"]} | '
              f'{r["update_ms_median"]:.1f} | {r["fps"]:,.0f} | '
              f'{r["fps_with_transfer"]:,.0f} |' for r in learner['rows']]
    lines.append('')
  pipeline = results['sections'].get('pipeline', {})
  if 'rows' in pipeline:
    lines += ['| pipeline layout | actor devices | learner devices | '
              'frames/s |', '|---|---|---|---|']
    lines += [f'| {r["layout"]} | {r["actor_devices"]} | '
              f'{r["learner_devices"]} | {r["frames_per_s"]:,.0f} |'
              for r in pipeline['rows']]
    lines.append('')
  anakin = results['sections'].get('anakin', {})
  if 'cartpole' in anakin:
    lines += ['| Anakin | best B | steps/s | saturates at B |',
              '|---|---|---|---|']
    lines += [f'| {name} | {a["best_batch"]} | {a["best_steps_per_s"]:,.0f} '
              f'| {a["saturation_batch"]} |' for name, a in anakin.items()
              if isinstance(a, dict)]
    lines.append('')
  pong = results['sections'].get('pong_learning', {})
  if 'frames' in pong:
    lines += [f'Pong-v5 from pixels: {pong["frames"]:,} frames in '
              f'{pong["seconds"]:.0f} s, final return {pong["final_return"]}.',
              '']
  for name, section in results['sections'].items():
    if 'skipped' in section or 'error' in section:
      lines.append(f'- {name}: {section.get("skipped") or section["error"]}')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  if not _JSON.value:
    print('error: --json is required.', file=sys.stderr)
    return 2
  for flag in (_BUDGET, _PIPELINE_SECONDS, _PONG_SECONDS):
    if flag.value <= 0:
      print(f'error: --{flag.name} must be > 0, got {flag.value}.',
            file=sys.stderr)
      return 2
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  size = _sizes(_SMOKE.value)
  machine = common.machine_info()
  machine['device_kind'] = jax.local_devices()[0].device_kind
  results = {'machine': machine, 'smoke': _SMOKE.value, 'sizes': size,
             'sections': {}}
  functions = {'learner': learner_section, 'pipeline': pipeline_section,
               'anakin': anakin_section, 'pong_learning': pong_section}
  start = time.perf_counter()
  for name in SECTIONS:
    elapsed = time.perf_counter() - start
    if elapsed > _BUDGET.value:
      results['sections'][name] = {
          'skipped': f'budget of {_BUDGET.value:g} s spent ({elapsed:.0f} s)'}
      continue
    section_start = time.perf_counter()
    try:
      results['sections'][name] = functions[name](size)
    except Exception as e:  # pylint: disable=broad-except
      # One failing section must not cost the others' figures.
      results['sections'][name] = {'error': f'{type(e).__name__}: {e}'}
      print(f'{name}: failed: {type(e).__name__}: {e}', file=sys.stderr)
    results['sections'][name]['section_seconds'] = (
        time.perf_counter() - section_start)
  results['wall_seconds'] = time.perf_counter() - start
  os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
  with open(_JSON.value, 'w') as f:
    json.dump(results, f, indent=2)
  md_path = os.path.splitext(_JSON.value)[0] + '.md'
  with open(md_path, 'w') as f:
    f.write(markdown(results))
  print(f'gpu_suite: {results["wall_seconds"]:.0f} s; wrote {_JSON.value} '
        f'and {md_path}')
  failed = [n for n, s in results['sections'].items() if 'error' in s]
  return 1 if failed else 0


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
