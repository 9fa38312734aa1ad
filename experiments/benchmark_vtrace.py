"""Times our V-trace kernel against the common per-trajectory formulations.

Three implementations of the same computation, each jitted, warmed up, and
timed as the median of many calls with ``block_until_ready``, two ways:

* ``per_call``: one jitted call per kernel evaluation. On a CPU this includes
  JAX's fixed dispatch cost (about 30 us here, the same for every candidate),
  which dominates small batches;
* ``in_program``: ``--inner`` evaluations chained inside one jitted
  ``fori_loop`` (each feeds the next, so nothing is hoisted), time divided by
  ``--inner``. This is what the kernel costs where it actually runs, inside
  the learner's single compiled update, and is the figure the target is
  judged on.

The candidates:

* ``ours``: ``impala_jax.core.vtrace.vtrace``, one reverse-time ``lax.scan`` over
  the time-major ``[T, B]`` batch;
* ``vmap_unrolled``: V-trace for one ``[T]`` trajectory written with a Python
  loop over time (unrolled at trace time), ``vmap``ped over the batch -- the
  common approach in JAX agents;
* ``rlax``: ``rlax.vtrace_td_error_and_advantage`` ``vmap``ped over the batch
  (only when rlax is installed: ``pip install -e '.[bench]'``).

Usage::

  python -m experiments.benchmark_vtrace --json=bench_results/vtrace.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

from absl import flags

import jax
import jax.numpy as jnp
import numpy as np

from . import _cli
from impala_jax.core import vtrace as vtrace_lib

_T = flags.DEFINE_list('T', ['20', '80'], 'Unroll lengths to time.')
_B = flags.DEFINE_list('B', ['32', '256', '4096'], 'Batch sizes to time.')
_ITERS = flags.DEFINE_integer('iters', 200, 'Timed calls per measurement.')
_INNER = flags.DEFINE_integer(
    'inner', 50, 'Kernel evaluations per jitted call in the in-program timing.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 5, 'Interleaved rounds; each figure is the median over all '
    'rounds and calls, so slow drift of a shared machine hits every '
    'implementation alike.')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')


def vtrace_one_trajectory(log_rhos, discounts, rewards, values,
                          bootstrap_value):
  """V-trace for one ``[T]`` trajectory with a Python loop over time."""
  rhos = jnp.exp(log_rhos)
  clipped_rhos = jnp.minimum(1.0, rhos)
  cs = jnp.minimum(1.0, rhos)
  values_tp1 = jnp.concatenate([values[1:], bootstrap_value[None]])
  deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)
  acc = jnp.zeros_like(bootstrap_value)
  out = []
  for t in reversed(range(values.shape[0])):
    acc = deltas[t] + discounts[t] * cs[t] * acc
    out.append(acc)
  vs = values + jnp.stack(out[::-1])
  vs_tp1 = jnp.concatenate([vs[1:], bootstrap_value[None]])
  pg_adv = clipped_rhos * (rewards + discounts * vs_tp1 - values)
  return jax.lax.stop_gradient(vs), jax.lax.stop_gradient(pg_adv)


def make_candidates():
  """Name -> fn(log_rhos, discounts, rewards, values, bootstrap) -> (vs, pg)."""
  candidates = {
      'ours': lambda *a: tuple(vtrace_lib.vtrace(*a)),
      'vmap_unrolled': jax.vmap(
          vtrace_one_trajectory, in_axes=(1, 1, 1, 1, 0), out_axes=1),
  }
  try:
    import rlax  # pylint: disable=import-outside-toplevel
  except ImportError:
    print('rlax not installed (pip install -e ".[bench]"): skipping it.')
  else:
    def rlax_vtrace(log_rhos, discounts, rewards, values, bootstrap_value):
      v_t = jnp.concatenate([values[1:], bootstrap_value[None]])
      out = rlax.vtrace_td_error_and_advantage(
          values, v_t, rewards, discounts, jnp.exp(log_rhos))
      return out.errors + values, out.pg_advantage
    candidates['rlax'] = jax.vmap(
        rlax_vtrace, in_axes=(1, 1, 1, 1, 0), out_axes=1)
  return candidates


def chained(kernel, inner):
  """``inner`` dependent kernel evaluations in one program."""
  def run(log_rhos, discounts, rewards, values, bootstrap_value):
    def body(_, carry):
      vs, pg = kernel(log_rhos, discounts, rewards, values + 1e-3 * carry,
                      bootstrap_value)
      return vs + pg
    return jax.lax.fori_loop(0, inner, body, jnp.zeros_like(values))
  return run


def make_inputs(T, B, seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return (f32(rng.normal(size=(T, B))),
          f32(0.99 * (rng.uniform(size=(T, B)) > 0.05)),
          f32(rng.normal(size=(T, B))), f32(rng.normal(size=(T, B))),
          f32(rng.normal(size=(B,))))


def time_calls(fn, args, iters):
  samples = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    samples.append(time.perf_counter() - start)
  return samples


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  for name, values in (('T', _T.value), ('B', _B.value)):
    if not values or not all(v.isdigit() and int(v) >= 1 for v in values):
      _fail(f'--{name} takes integers >= 1, got {",".join(values or [])}.')
  for flag in (_ITERS, _INNER, _REPEATS):
    if flag.value < 1:
      _fail(f'--{flag.name} must be >= 1, got {flag.value}.')
  candidates = make_candidates()
  modes = {'per_call': 1, 'in_program': _INNER.value}
  results = []
  for T in map(int, _T.value):
    for B in map(int, _B.value):
      args = make_inputs(T, B)
      fns = {}
      reference = None
      for name, kernel in candidates.items():
        out = jax.block_until_ready(jax.jit(kernel)(*args))
        if reference is None:
          reference = out
        else:  # every candidate must compute the same thing
          for got, want in zip(out, reference):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
        fns[(name, 'per_call')] = jax.jit(kernel)
        fns[(name, 'in_program')] = jax.jit(chained(kernel, _INNER.value))
      samples = {key: [] for key in fns}
      for fn in fns.values():  # compile + warm-up
        time_calls(fn, args, 3)
      for _ in range(_REPEATS.value):
        for key, fn in fns.items():
          iters = max(1, _ITERS.value // modes[key[1]] * 4)
          samples[key] += [t / modes[key[1]]
                           for t in time_calls(fn, args, iters)]
      row = {'T': T, 'B': B}
      for (name, mode), values in samples.items():
        row[f'{name}_{mode}_us'] = 1e6 * statistics.median(values)
      for mode in modes:
        for name in candidates:
          if name != 'ours':
            row[f'{mode}_ratio_vs_{name}'] = (row[f'ours_{mode}_us'] /
                                              row[f'{name}_{mode}_us'])
      results.append(row)
      for mode in modes:
        cells = '  '.join(f'{n}={row[f"{n}_{mode}_us"]:8.1f}us'
                          for n in candidates)
        ratios = '  '.join(f'{k.split("_vs_")[1]}={v:.2f}'
                           for k, v in row.items()
                           if k.startswith(f'{mode}_ratio'))
        print(f'T={T:3d} B={B:5d} {mode:10s} {cells}  ours/other: {ratios}',
              flush=True)

  worst = {k: max(r[k] for r in results) for k in results[0]
           if '_ratio_vs_' in k}
  print('worst ratios (ours / other; target <= 0.8 in_program):',
        ', '.join(f'{k}={v:.2f}' for k, v in worst.items()))
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, 'w') as f:
      json.dump({'machine': platform.processor() or platform.machine(),
                 'cpu_count': os.cpu_count(), 'jax': jax.__version__,
                 'device': str(jax.devices()[0]), 'python': sys.version,
                 'inner': _INNER.value, 'results': results,
                 'worst_ratios': worst}, f, indent=2)
    print('wrote', _JSON.value)


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
