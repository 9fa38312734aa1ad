r"""Learning curves, the suite's normalised-score curve and a final-score
table from one or more results trees.

  python -m experiments.plot --roots=runs/sweep --out=plots
  python -m experiments.plot --roots=runs/base,runs/mine --labels=base,mine \
      --out=plots/compare --paper_variant=impala_shallow
  python -m experiments.plot --roots=runs/mine --reference=minatar \
      --out=plots/minatar

``--reference=<suite>`` adds the runs this repository ships for the suite
(``impala_jax/data/reference_runs``, see ``impala_jax.reference_runs``) as
one more tree labelled ``reference``, so a user's curves are drawn over the
shipped ones (``--roots`` may then be left out), and ``final_scores.md``
also gets the suite's published baselines beside the final scores.

A results tree is ``ROOT/<game>/<run>/metrics.csv`` (what
``experiments.sweep`` writes; ``<run>`` is one seed). Writes to ``--out``:

* ``<game>.png``: return vs frames, mean over seeds (smoothed over
  ``--smooth`` logged points) with the min-max (or +-std, ``--spread``)
  band, one colour per tree, and the IMPALA paper's final score as a dashed
  line where the paper reports one;
* ``all_games.png``: every game in one grid (when there are several);
* ``aggregate.png``: the median (``--statistic``) over games of the
  human-normalised score vs frames, for the games with human/random
  reference scores (Atari-57, DMLab-30 capped at 100%);
* ``aggregate_intervals.png`` and ``performance_profile.png`` (suites with
  reference scores): rliable's median / IQM / mean / optimality gap of the
  final normalised scores with 95% stratified-bootstrap intervals, and the
  fraction of runs above each normalised score;
* ``final_scores.md``: per game the final score (mean return over the last
  ``--final_fraction`` of each run's frames, then over seeds), its
  normalised score and the paper's, the median / IQM / mean / optimality
  gap of the normalised scores with 95% stratified-bootstrap confidence
  intervals (rliable), and the probability of improvement between every
  two trees over the same games.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from . import _cli

_ROOTS = flags.DEFINE_list('roots', None, 'Results trees, comma separated.')
_LABELS = flags.DEFINE_list('labels', None,
                            'A name per tree (default: the trees\' names).')
_OUT = flags.DEFINE_string('out', None, 'Output directory (required).')
_SMOOTH = flags.DEFINE_integer('smooth', 5,
                               'Moving-average window, in logged points.')
_SPREAD = flags.DEFINE_enum('spread', 'minmax', ['minmax', 'std'],
                            'Band over seeds.')
_FINAL_FRACTION = flags.DEFINE_float(
    'final_fraction', 0.1, 'Final score: mean over this last fraction of '
    'each run\'s frames.')
_PAPER_VARIANT = flags.DEFINE_string(
    'paper_variant', None, 'Paper column to compare with: impala_shallow, '
    'impala_deep (Atari default), impala_deep_multitask, impala (DMLab), '
    'or none.')
_STATISTIC = flags.DEFINE_enum('statistic', 'median', ['median', 'mean'],
                               'Aggregate over games of the suite curve.')
_REPS = flags.DEFINE_integer('bootstrap_reps', 2000,
                             'Bootstrap replicates of the aggregates.')
_SEED = flags.DEFINE_integer('seed', 0, 'Bootstrap seed.')
_REFERENCE = flags.DEFINE_string(
    'reference', None, 'Overlay the shipped reference runs of a suite: '
    'minatar.')
REFERENCE_LABEL = 'reference'


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that --help and flag errors answer instantly.
  from impala_jax import plotting  # pylint: disable=g-import-not-at-top
  from impala_jax import scores  # pylint: disable=g-import-not-at-top
  from impala_jax import reference_runs  # pylint: disable=g-import-not-at-top
  reference = _REFERENCE.value
  if reference is not None and (reference not in
                                reference_runs.REFERENCE_SUITES):
    _fail(f'--reference must be one of '
          f'{", ".join(reference_runs.REFERENCE_SUITES)}, got {reference!r}.')
  if not _ROOTS.value and not reference:
    _fail('--roots is required (one or more results trees), or '
          '--reference=<suite>.')
  if not _OUT.value:
    _fail('--out is required (the output directory).')
  roots = [r for r in (_ROOTS.value or []) if r]
  labels = _LABELS.value or [os.path.basename(os.path.normpath(r))
                             for r in roots]
  if len(labels) != len(roots):
    _fail(f'--labels has {len(labels)} names for {len(roots)} trees.')
  if reference:
    reference_root = reference_runs.reference_root(reference)
    if not os.path.isdir(reference_root):
      _fail(f'no shipped reference runs for {reference!r} in this install '
            f'({reference_root}).')
    if REFERENCE_LABEL in labels:
      _fail(f'the label {REFERENCE_LABEL!r} is reserved for --reference.')
    # Drawn first, so the user's trees come on top in the legend order.
    roots.insert(0, reference_root)
    labels.insert(0, REFERENCE_LABEL)
  if len(set(labels)) != len(labels):
    _fail('labels must differ (give --labels when trees share a name).')
  if _SMOOTH.value < 1:
    _fail(f'--smooth must be >= 1, got {_SMOOTH.value}.')
  if not 0.0 < _FINAL_FRACTION.value <= 1.0:
    _fail(f'--final_fraction must be in (0, 1], got {_FINAL_FRACTION.value}.')
  if _SEED.value < 0:
    _fail(f'--seed must be >= 0, got {_SEED.value}.')
  if _REPS.value < 1:
    _fail(f'--bootstrap_reps must be >= 1, got {_REPS.value}.')
  variants = {v for vs in scores.PAPER_VARIANTS.values() for v in vs}
  variant = _PAPER_VARIANT.value
  if variant is not None and variant != 'none' and variant not in variants:
    _fail(f'--paper_variant must be one of {", ".join(sorted(variants))} '
          f'or none, got {variant!r}.')
  results = {}
  for label, root in zip(labels, roots):
    if not os.path.isdir(root):
      _fail(f'no results tree at {root!r}.')
    results[label] = plotting.load_results(root)
    if not results[label]:
      _fail(f'{root!r} has no ROOT/<game>/<run>/metrics.csv with episode '
            'returns.')
  out = _OUT.value
  os.makedirs(out, exist_ok=True)
  paths = plotting.save_game_plots(results, out, window=_SMOOTH.value,
                                   spread=_SPREAD.value,
                                   paper_variant=variant)
  aggregate = plotting.save_aggregate_plot(
      results, os.path.join(out, 'aggregate.png'), window=_SMOOTH.value,
      statistic=_STATISTIC.value)
  if aggregate:
    paths.append(aggregate)
  paths += plotting.save_rliable_plots(results, out,
                                       fraction=_FINAL_FRACTION.value,
                                       reps=_REPS.value, seed=_SEED.value)
  table = plotting.final_table(results, fraction=_FINAL_FRACTION.value,
                               paper_variant=variant, reps=_REPS.value,
                               seed=_SEED.value)
  if reference:
    table += '\n' + plotting.published_table(
        results, reference, fraction=_FINAL_FRACTION.value)
  table_path = os.path.join(out, 'final_scores.md')
  with open(table_path, 'w') as f:
    f.write(table)
  paths.append(table_path)
  games = sorted({g for res in results.values() for g in res})
  print(f'plot: {len(games)} games from {len(roots)} tree(s); wrote '
        f'{len(paths)} files to {out}')
  print(table)
  return 0


def run():
  """Console-command entry point (setup.cfg)."""
  _cli.run(main, __name__)


if __name__ == '__main__':
  run()
