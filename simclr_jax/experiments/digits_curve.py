"""Representation quality against wall time, for the default digits run.

    python -m simclr_jax.experiments.digits_curve --workdir=runs/curve

Pretrains with a config (default: the README's `digits`), keeping a
checkpoint every --every steps, then scores each checkpoint with the label
efficiency protocol of `digits_table` (logistic regression on frozen,
standardised h at 2/5/10/100% of the labels, mean over 5 class-balanced
subsets). Each point's time is the wall seconds from the start of
`train.train_and_evaluate` to that step (start-up, compilation, evaluations
and checkpoints included; the Python and TensorFlow imports before it are
not). Writes curve.json, curve.md and curve.png into the workdir, or into
--output_dir. `--quick` is a smoke test.
"""

import importlib.util
import json
import os
import sys

import numpy as np
from absl import app, flags, logging

from simclr_jax import checkpoint, configs, data, train
from simclr_jax.experiments import digits_table

FLAGS = flags.FLAGS


def _load_config(spec):
  """'name-or-path[:arg]' as --config takes it (configs.find names a typo)."""
  path, _, arg = configs.find(spec).partition(':')
  module_spec = importlib.util.spec_from_file_location('curve_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def run(workdir, config_spec='digits', data_dir='', every=50, quick=False):
  """Pretrains, then scores every kept checkpoint; returns the results."""
  config = digits_table.prepare(_load_config(config_spec), data_dir, quick)
  if quick:
    # digits_table's quick pretraining: the same compiled programs.
    config.train.steps, every = 6, 3
    config.train.lineareval_while_pretraining = False
  config.train.checkpoint_every_steps = every
  config.train.log_every_steps = every
  config.train.keep_checkpoints = 10_000
  run_dir = os.path.join(workdir, 'pretrain')
  result = train.train_and_evaluate(config, run_dir)
  seconds = {h['step']: h['seconds'] for h in result['history']}

  exp = train.build_experiment(config)
  fractions = (0.1, 1.0) if quick else digits_table.FRACTIONS
  seeds = (0,) if quick else digits_table.SEEDS
  points = []
  steps = sorted(int(s) for s in os.listdir(os.path.join(run_dir, 'checkpoints'))
                 if s.isdigit())
  for step in steps:
    loaded = checkpoint.load_weights(os.path.join(run_dir, 'checkpoints',
                                                  str(step)))
    train_x, train_y, test_x, test_y = digits_table.features(
        exp, {'params': loaded['params'], 'batch_stats': loaded['batch_stats']})
    probe = {}
    for f in fractions:
      scores = [digits_table.logistic_probe(
          train_x[idx], train_y[idx], test_x, test_y, train_x)
                for idx in (data.label_fraction_indices(train_y, f, seed)
                            for seed in seeds)]
      probe[str(f)] = [float(np.mean(scores)), float(np.std(scores))]
    points.append({'step': step, 'seconds': seconds.get(step), 'probe': probe})
    logging.info('Step %d (%.0f s): logistic probe %s', step,
                 seconds.get(step) or -1, {k: round(v[0], 4)
                                           for k, v in probe.items()})
  results = {'config': config_spec, 'total_steps': exp.total_steps,
             'fractions': list(fractions), 'seeds': list(seeds),
             'online_probe_top1': result.get('eval/top1'),
             'run_seconds': seconds.get(exp.total_steps), 'points': points}
  with open(os.path.join(workdir, 'curve.json'), 'w') as f:
    json.dump(results, f, indent=2)
  return results


def write_markdown(results, path, plot_name, command):
  fractions = results['fractions']
  lines = [
      '| step | seconds | ' + ' | '.join(f'{f:.0%} labels' for f in fractions)
      + ' |', '|---|---|' + '---|' * len(fractions)]
  for point in results['points']:
    cells = [f'{100 * point["probe"][str(f)][0]:.1f} ± '
             f'{100 * point["probe"][str(f)][1]:.1f}' for f in fractions]
    seconds = point['seconds']
    lines.append(f'| {point["step"]} | '
                 f'{"-" if seconds is None else f"{seconds:.0f}"} | ' +
                 ' | '.join(cells) + ' |')
  text = '\n'.join([
      '# Probe accuracy against wall time (digits)', '',
      f'```\n{command}\n```', '',
      f'Config `{results["config"]}` ({results["total_steps"]} steps). '
      'Logistic-regression probe on frozen h, test top-1 (%), mean ± std '
      f'over label subsets (seeds {", ".join(map(str, results["seeds"]))}). '
      'Seconds: from the start of train_and_evaluate to that step.', '',
      *lines, '', f'![probe accuracy against wall time]({plot_name})', ''])
  with open(path, 'w') as f:
    f.write(text)


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  points = [p for p in results['points'] if p['seconds'] is not None]
  fig, ax = plt.subplots(figsize=(6, 4))
  for f in results['fractions']:
    ax.plot([p['seconds'] for p in points],
            [100 * p['probe'][str(f)][0] for p in points], marker='o',
            label=f'{f:.0%} labels')
  digits_table.save_figure(
      fig, ax, path, 'wall seconds (2 CPU cores)',
      'logistic probe test top-1 (%)',
      f'digits: probe accuracy during {results["config"]}')


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required.')
  results = run(FLAGS.workdir, FLAGS.config, FLAGS.data_dir, FLAGS.every,
                FLAGS.quick)
  output_dir = FLAGS.output_dir or FLAGS.workdir
  os.makedirs(output_dir, exist_ok=True)
  command = 'python -m simclr_jax.experiments.digits_curve ' + ' '.join(
      a for a in sys.argv[1:] if not a.startswith('--output_dir'))
  plot(results, os.path.join(output_dir, 'curve.png'))
  write_markdown(results, os.path.join(output_dir, 'curve.md'), 'curve.png',
                 command)
  logging.info('Wrote %s', os.path.join(output_dir, 'curve.md'))


def define_flags():
  """The command line's flags (defined when run, not on import)."""
  flags.DEFINE_string('workdir', None, 'Where the run and its checkpoints go.')
  flags.DEFINE_string('config', 'digits', 'A packaged config name[:arg].')
  flags.DEFINE_string('data_dir', '', 'tfds data_dir ("" = default).')
  flags.DEFINE_integer('every', 50, 'Checkpoint (and score) every N steps.')
  flags.DEFINE_string('output_dir', '', 'Where curve.md and curve.png go '
                      '("" = the workdir).')
  flags.DEFINE_bool('quick', False, 'A few steps, one seed (for tests).')


if __name__ == '__main__':
  define_flags()
  app.run(main)
