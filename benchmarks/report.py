"""Figures and Markdown tables from the benchmarks' JSON files.

Reads every train_step*.json, torch_step*.json and loss*.json in a folder (as
written by the scripts' --json_out, or by gpu.sh) and writes
  FIGURES/train_step_images_per_s.png  images/s versus batch size
  FIGURES/loss_time.png                NT-Xent time and memory versus batch
then prints the tables that docs/benchmarks.md shows.

  python benchmarks/report.py docs/results --figures=docs/figures
"""

import argparse
import glob
import json
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top


def _plain_log_y(ax):
  """Log y axis labelled 0.5, 2, 10 rather than 5 x 10^-1."""
  ax.set_yscale('log')
  ax.yaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
  ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter('%g'))


def load(folder, prefix):
  rows = []
  for path in sorted(glob.glob(os.path.join(folder, prefix + '*.json'))):
    with open(path) as f:
      report = json.load(f)
    if not report.get('tiny'):
      rows += [dict(r, source=os.path.basename(path))
               for r in report['results']]
  return rows


def _key(row):
  return (row['model'], row['width'], row['batch_size'],
          row.get('dtype', 'float32'))


def plot_train_step(jax_rows, torch_rows, path):
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  series = {}
  for r in jax_rows:
    series.setdefault((f'JAX {r["model"]} w{r["width"]:g} {r["dtype"]}'),
                      {})[r['batch_size']] = r['images_per_s']
  for r in torch_rows:
    series.setdefault(f'PyTorch {r["model"]} w{r["width"]:g} '
                      f'{r.get("dtype", "float32")}',
                      {})[r['batch_size']] = r['images_per_s']
  for label, points in sorted(series.items()):
    batches = sorted(points)
    ax.plot(batches, [points[b] for b in batches], marker='o',
            linestyle='--' if label.startswith('PyTorch') else '-',
            label=label)
  ax.set_xscale('log', base=2)
  _plain_log_y(ax)
  ax.set_xlabel('global batch (images, two views each)')
  ax.set_ylabel('images / s')
  ax.set_title('SimCLR pretraining step throughput')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_loss(rows, path):
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
  for queue in sorted({r['queue_size'] for r in rows}):
    sel = sorted((r for r in rows if r['queue_size'] == queue),
                 key=lambda r: r['global_batch'])
    label = f'queue K={queue}' if queue else 'no queue'
    timed = [r for r in sel if r.get('timed')]
    left.plot([r['global_batch'] for r in timed], [r['time_s'] for r in timed],
              marker='o', label=label)
    right.plot([r['global_batch'] for r in sel],
               [r['peak_mib_per_device'] for r in sel], marker='o',
               label=label)
  for ax, ylabel in ((left, 'loss + gradient time (s)'),
                     (right, 'peak memory per device (MiB)')):
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('global batch (rows per view)')
    ax.set_ylabel(ylabel)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
  devices = rows[0]['devices'] if rows else 0
  fig.suptitle(f'NT-Xent with global negatives over {devices} devices')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def table(rows, columns):
  lines = ['| ' + ' | '.join(h for _, h, _ in columns) + ' |',
           '|' + '---|' * len(columns)]
  for r in rows:
    cells = []
    for key, _, fmt in columns:
      value = key(r) if callable(key) else r.get(key)
      cells.append('-' if value is None else format(value, fmt))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('folder', help='Folder of benchmark JSON files.')
  parser.add_argument('--figures', default='',
                      help='Where the PNGs go (default: the folder).')
  args = parser.parse_args(argv)
  figures = args.figures or args.folder
  os.makedirs(figures, exist_ok=True)
  jax_rows = load(args.folder, 'train_step')
  torch_rows = load(args.folder, 'torch_step')
  loss_rows = load(args.folder, 'loss')

  if jax_rows:
    plot_train_step(jax_rows, torch_rows,
                    os.path.join(figures, 'train_step_images_per_s.png'))
    print(table(jax_rows, [
        ('model', 'model', 's'), ('width', 'width', 'g'),
        ('batch_size', 'batch', 'd'), ('dtype', 'dtype', 's'),
        ('compile_s', 'compile (s)', '.1f'), ('step_s', 'step (s)', '.3f'),
        ('spread', 'spread', '.0%'), ('images_per_s', 'images/s', '.2f'),
        (lambda r: r['xla_flops_per_step'] / 1e9, 'GFLOP/step', '.1f'),
        (lambda r: r['achieved_tflops'] * 1e3, 'GFLOP/s', '.1f'),
        ('mfu_measured', 'MFU vs matmul', '.0%')]))
  torch_by_key = {_key(r): r for r in torch_rows}
  pairs = [(r, torch_by_key[_key(r)]) for r in jax_rows
           if _key(r) in torch_by_key]
  if pairs:
    print()
    print(table(pairs, [
        (lambda p: p[0]['model'], 'model', 's'),
        (lambda p: p[0]['width'], 'width', 'g'),
        (lambda p: p[0]['batch_size'], 'batch', 'd'),
        (lambda p: p[0]['dtype'], 'dtype', 's'),
        (lambda p: p[0]['images_per_s'], 'JAX images/s', '.2f'),
        (lambda p: p[1]['images_per_s'], 'PyTorch images/s', '.2f'),
        (lambda p: p[0]['images_per_s'] / p[1]['images_per_s'],
         'JAX / PyTorch', '.2f'),
        # The fastest repeat is the one least disturbed on a shared host.
        (lambda p: p[1]['step_s_min'] / p[0]['step_s_min'],
         'same, best repeats', '.2f')]))
  if loss_rows:
    plot_loss(loss_rows, os.path.join(figures, 'loss_time.png'))
    print()
    print(table(loss_rows, [
        ('global_batch', 'global batch', 'd'), ('queue_size', 'queue K', 'd'),
        ('rows_per_device', 'rows/device', 'd'), ('gflop', 'GFLOP', '.1f'),
        ('time_s', 'loss+grad (s)', '.4f'), ('spread', 'spread', '.0%'),
        ('achieved_tflops', 'TFLOP/s', '.3f'),
        ('peak_mib_per_device', 'MiB/device', '.0f')]))


if __name__ == '__main__':
  main()
