"""SimCLRv2's label-efficiency table, in miniature, on the embedded digits data.

    python -m simclr_jax.experiments.digits_table --workdir=runs/digits_table

1. SimCLR pretraining on the 1257 train images, labels unused (configs/digits.py).
2. For each label fraction and seed (class-balanced subsets, as the pipeline's
   `label_fraction_indices`): a logistic-regression probe on frozen features h
   (standardised), SimCLRv2 fine-tuning from projection layer 1, and baselines
   (random-init encoder + probe, supervised training from scratch, logistic
   regression on raw pixels).
3. Distillation of the 10% fine-tuned network on all train images (labels
   unused) into a same-size student and a narrower one.
Writes results.md, results.json and a plot into the workdir, or into
--output_dir (`--output_dir=docs` refreshes the repository's docs/results.md;
never by default, so a trial run cannot overwrite the published table).
`--quick` runs every stage in a minute or two (two fractions, one seed, few
steps).
"""

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

from simclr_jax.configs import digits, digits_distill, digits_finetune
from simclr_jax import checkpoint, data, evaluators, train

FLAGS = flags.FLAGS


FRACTIONS = (0.02, 0.05, 0.1, 1.0)
SEEDS = (0, 1, 2, 3, 4)
METHODS = {
    'simclr_probe': 'SimCLR + linear probe (frozen h)',
    'simclr_finetune': 'SimCLR + fine-tune (from proj. layer 1)',
    'random_probe': 'Random-init encoder + linear probe',
    'supervised': 'Supervised from scratch (same arch.)',
    'pixels_probe': 'Logistic regression on raw pixels',
}


def prepare(config, data_dir, quick):
  """Sets the data_dir; --quick also shrinks the model and batches."""
  config.data_dir = data_dir
  if quick:
    config.model.width_multiplier /= 2
    config.train.batch_size = 32
    config.evals.batch_size = 64
  return config


def logistic_probe(train_x, train_y, test_x, test_y, scaler_x) -> float:
  """Accuracy of logistic regression on standardised features.

  The scaler is fit on all train features (no labels needed), the classifier
  on the labelled subset only.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  scaler = StandardScaler().fit(scaler_x)
  clf = LogisticRegression(max_iter=5000, C=1.0)
  clf.fit(scaler.transform(train_x), train_y)
  return float(np.mean(clf.predict(scaler.transform(test_x)) == test_y))


def features(exp, variables):
  extract = evaluators.Features(exp.model, exp.mesh, exp.dataset)
  variables = jax.device_put(variables)
  train_x, train_y = extract(variables, exp.config.train_split)
  test_x, test_y = extract(variables, exp.config.eval_split)
  return train_x, train_y, test_x, test_y


def raw_pixels(exp):
  """The model's eval inputs, flattened (the 8x8 digits, upsampled)."""
  def collect(split):
    xs, ys = [], []
    for batch in exp.dataset.eval_iter(split):
      keep = batch['label_mask'] > 0
      xs.append(batch['images'][keep, 0, ..., 0].reshape(keep.sum(), -1))
      ys.append(batch['labels'][keep])
    return np.concatenate(xs), np.concatenate(ys)
  return (*collect(exp.config.train_split), *collect(exp.config.eval_split))


def run(workdir, data_dir='', quick=False, pretrain_steps=0, finetune_steps=300,
        distill_steps=600):
  """All stages; returns the results dict (also written as JSON)."""
  fractions = (0.1, 1.0) if quick else FRACTIONS
  seeds = (0,) if quick else SEEDS
  if quick:
    finetune_steps, distill_steps = 6, 6
  timings, acc = {}, {m: {f: [] for f in fractions} for m in METHODS}

  # 1. SimCLR pretraining, labels unused.
  pre_config = prepare(digits.get_config(), data_dir, quick)
  pre_config.train.lineareval_while_pretraining = False
  if quick:
    pre_config.train.steps = 6
    pre_config.train.log_every_steps = 3
  elif pretrain_steps:
    pre_config.train.steps = pretrain_steps
  pre_dir = os.path.join(workdir, 'pretrain')
  t0 = time.time()
  train.train_and_evaluate(pre_config, pre_dir)
  timings['pretrain'] = time.time() - t0

  # 2a. Probes on frozen features and on pixels.
  t0 = time.time()
  loaded = checkpoint.load_weights(pre_dir)
  pre_exp = train.build_experiment(pre_config)
  simclr = features(pre_exp, {'params': loaded['params'],
                              'batch_stats': loaded['batch_stats']})
  random_state = train.create_train_state(pre_exp)
  random = features(pre_exp, {'params': random_state.params,
                              'batch_stats': random_state.batch_stats})
  pixels = raw_pixels(pre_exp)
  labels = simclr[1]
  for name, (tx, ty, ex, ey) in (('simclr_probe', simclr),
                                 ('random_probe', random),
                                 ('pixels_probe', pixels)):
    assert np.array_equal(ty, labels)
    for f in fractions:
      for seed in seeds:
        idx = data.label_fraction_indices(labels, f, seed)
        acc[name][f].append(logistic_probe(tx[idx], ty[idx], ex, ey, tx))
  timings['probes'] = time.time() - t0

  # 2b. Fine-tuning from the SimCLR checkpoint, and supervised from scratch.
  teacher_dir = None
  for method, mode in (('simclr_finetune', 'finetune'),
                       ('supervised', 'supervised')):
    t0 = time.time()
    for f in fractions:
      for seed in seeds:
        config = prepare(digits_finetune.get_config(), data_dir, quick)
        config.mode = mode
        config.init_checkpoint = pre_dir if mode == 'finetune' else ''
        config.label_fraction = f
        config.label_fraction_seed = seed
        config.train.steps = finetune_steps
        config.train.log_every_steps = max(1, finetune_steps // 5)
        config.train.checkpoint_every_steps = finetune_steps
        run_dir = os.path.join(workdir, f'{method}_{f}_{seed}')
        result = train.train_and_evaluate(config, run_dir)
        acc[method][f].append(result['eval/top1'])
        if method == 'simclr_finetune' and f == 0.1 and seed == 0:
          teacher_dir, teacher_acc = run_dir, result['eval/top1']
    timings[method] = time.time() - t0

  # 3. Distillation of the 10% fine-tuned teacher on all train images.
  distill = {'teacher (fine-tuned, 10% labels, seed 0)': teacher_acc}
  t0 = time.time()
  for label, width in (('self-distilled student (same size)',
                        pre_config.model.width_multiplier),
                       ('narrower student (half width)',
                        pre_config.model.width_multiplier / 2)):
    config = prepare(digits_distill.get_config(), data_dir, quick)
    config.distill.teacher_checkpoint = teacher_dir
    config.model.width_multiplier = width
    config.train.steps = distill_steps
    config.train.log_every_steps = max(1, distill_steps // 5)
    config.train.checkpoint_every_steps = distill_steps
    result = train.train_and_evaluate(
        config, os.path.join(workdir, f'distill_w{width}'))
    distill[label] = result['eval/top1']
  timings['distill'] = time.time() - t0

  results = {'fractions': list(fractions), 'seeds': list(seeds),
             'accuracy': {m: {str(f): v for f, v in per.items()}
                          for m, per in acc.items()},
             'distillation': distill, 'seconds': timings, 'quick': quick,
             'pretrain_steps': int(pre_config.train.steps or train.build_experiment(
                 pre_config).total_steps)}
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  return results


def _cell(values):
  values = np.asarray(values) * 100
  if len(values) == 1:
    return f'{values[0]:.1f}'
  return f'{values.mean():.1f} ± {values.std():.1f}'


def write_markdown(results, path, plot_name, command):
  fractions = results['fractions']
  lines = [
      '# Results on digits: label efficiency, SimCLRv2 style',
      '',
      'Measured by running, on this project\'s 2-core CPU machine:',
      '',
      f'```\n{command}\n```',
      '',
      'Digits: scikit-learn\'s 8x8 digits, fixed stratified split of 1257 train '
      '/ 540 test images, upsampled to 16x16. Test top-1 accuracy (%), mean ± '
      f'std over {len(results["seeds"])} class-balanced label subsets '
      f'(seeds {", ".join(map(str, results["seeds"]))}).',
      '',
      '| method | ' + ' | '.join(f'{f:.0%} labels' for f in fractions) + ' |',
      '|---|' + '---|' * len(fractions),
  ]
  for method, title in METHODS.items():
    per = results['accuracy'][method]
    lines.append(f'| {title} | ' +
                 ' | '.join(_cell(per[str(f)]) for f in fractions) + ' |')
  lines += ['', '## Distillation (all train images, labels unused)', '',
            '| network | test top-1 (%) |', '|---|---|']
  for name, value in results['distillation'].items():
    lines.append(f'| {name} | {100 * value:.1f} |')
  lines += ['', '## Wall time (seconds, 2 CPU cores)', '',
            '| stage | seconds |', '|---|---|']
  for stage, seconds in results['seconds'].items():
    lines.append(f'| {stage} | {seconds:.0f} |')
  lines += ['', f'![accuracy versus label fraction]({plot_name})', '']
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fractions = results['fractions']
  fig, ax = plt.subplots(figsize=(6, 4))
  for method, title in METHODS.items():
    per = results['accuracy'][method]
    mean = [100 * np.mean(per[str(f)]) for f in fractions]
    std = [100 * np.std(per[str(f)]) for f in fractions]
    ax.errorbar([100 * f for f in fractions], mean, yerr=std, marker='o',
                capsize=3, label=title)
  ax.set_xscale('log')
  ax.set_xticks([100 * f for f in fractions])
  ax.set_xticklabels([f'{f:.0%}' for f in fractions])
  save_figure(fig, ax, path, 'labelled fraction of the train split',
              'test top-1 accuracy (%)',
              'digits: accuracy versus label fraction', legend_size=7)


def save_figure(fig, ax, path, xlabel, ylabel, title, legend_size=8):
  """Labels, grid and legend, then the PNG (the experiments' common style)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=legend_size)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required.')
  results = run(FLAGS.workdir, FLAGS.data_dir, FLAGS.quick,
                FLAGS.pretrain_steps, FLAGS.finetune_steps, FLAGS.distill_steps)
  output_dir = FLAGS.output_dir or FLAGS.workdir
  os.makedirs(output_dir, exist_ok=True)
  command = 'python -m simclr_jax.experiments.digits_table ' + ' '.join(
      a for a in sys.argv[1:] if not a.startswith('--output_dir'))
  plot_name = 'results_digits.png'
  plot(results, os.path.join(output_dir, plot_name))
  write_markdown(results, os.path.join(output_dir, 'results.md'),
                 plot_name, command)
  logging.info('Wrote %s', os.path.join(output_dir, 'results.md'))


def define_flags():
  """The command line's flags (defined when run, not on import)."""
  flags.DEFINE_string('workdir', None, 'Where runs and checkpoints go.')
  flags.DEFINE_string('data_dir', '', 'tfds data_dir ("" = default).')
  flags.DEFINE_string('output_dir', '', 'Where results.md and the plot go '
                      '("" = the workdir; docs to refresh docs/results.md).')
  flags.DEFINE_bool('quick', False, 'Every stage, tiny budgets (for tests).')
  flags.DEFINE_integer('pretrain_steps', 0, 'Override the pretraining steps.')
  flags.DEFINE_integer('finetune_steps', 300, 'Steps per fine-tuning run.')
  flags.DEFINE_integer('distill_steps', 600, 'Steps per distillation run.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
