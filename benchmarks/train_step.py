"""Throughput and FLOP utilisation of the SimCLR pretraining step.

Builds the step users run (`train.build_experiment`, `create_train_state`,
`make_train_step`: jit(shard_map), state donated) from configs/default.py and
feeds it a synthetic two-view batch already on the devices, so only the step
is timed. FLOPs come from XLA's cost analysis of the compiled step; utilisation
is given against a matmul peak measured in the same run and, on a known
accelerator, against its nominal peak.

  python benchmarks/train_step.py --json_out=/tmp/train_step.json  # ~4 min, CPU
  python benchmarks/train_step.py --models=r50_224 --batch_sizes=128,256 \
      --dtypes=bfloat16 --matmul_size=8192          # on a GPU/TPU host
  python benchmarks/train_step.py --tiny            # seconds, smoke test

A model is NAME or NAME:WIDTH, e.g. r50_224:0.25 (a quarter-width ResNet-50).
"""

import argparse
import dataclasses
import os
import sys
import time
import warnings

if __package__ in (None, ''):  # Run as a script: make the repo importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common

import jax
import numpy as np

from simclr_jax import configs, parallel, train
from simclr_jax.configs import default
from simclr_jax.data import augment as augment_lib
from simclr_jax.data import device_augment

MODELS = common.MODELS


def make_config(name, width, batch_size, dtype, colors_on_device=False):
  depth, image_size = MODELS[name]
  config = default.get_config()
  config.dataset = 'digits'  # Embedded: only sizes are read; batches are synthetic.
  config.image_size = image_size
  config.model.depth = depth
  config.model.width_multiplier = width
  config.model.dtype = dtype
  config.train.batch_size = batch_size
  config.train.steps = 1000
  config.train.warmup_epochs = 0
  config.augment.on_device = colors_on_device
  return config


def synthetic_batch(mesh, batch_size, image_size, views=2, uint8=False):
  """Random views: float32 in [0, 1], or the uint8 crops that
  config.augment.on_device has the host ship."""
  rng = np.random.default_rng(0)
  shape = (batch_size, views, image_size, image_size, 3)
  images = (rng.integers(0, 256, size=shape, dtype=np.uint8) if uint8 else
            rng.uniform(size=shape).astype(np.float32))
  return parallel.global_batch(mesh, {
      'images': images,
      'labels': rng.integers(0, 10, size=batch_size).astype(np.int32),
      'label_mask': np.ones(batch_size, np.float32)})


def measure(name, width, batch_size, dtype, devices, *, warmup, repeats,
            steps, profile_dir='', colors_on_device=False):
  """One row: compile time, step time statistics, FLOPs, warnings."""
  config = make_config(name, width, batch_size, dtype, colors_on_device)
  exp = train.build_experiment(config)
  exp = dataclasses.replace(exp, mesh=parallel.make_mesh(devices))
  state = train.create_train_state(exp)
  step = train.make_train_step(exp)
  batch = synthetic_batch(exp.mesh, batch_size, config.image_size,
                          uint8=colors_on_device)

  start = time.perf_counter()
  compiled = step.lower(state, batch, {}, exp.schedule).compile()
  compile_s = time.perf_counter() - start
  flops = common.xla_cost(compiled) * len(devices)
  bytes_accessed = common.xla_cost(compiled, 'bytes accessed') * len(devices)

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    live = {'state': state}

    def window():
      for _ in range(steps):
        live['state'], live['metrics'] = step(live['state'], batch, {},
                                              exp.schedule)
      jax.block_until_ready(live['state'])

    timing = common.time_windows(window, warmup=warmup, repeats=repeats)
    if profile_dir:
      with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
        window()
  donation = [str(w.message) for w in caught if 'donat' in str(w.message)]
  loss = float(jax.device_get(live['metrics']['loss']))
  step_s = timing['median_s'] / steps
  return dict(
      model=name, depth=MODELS[name][0], image_size=MODELS[name][1],
      width=width, batch_size=batch_size, dtype=dtype, devices=len(devices),
      colors_on_device=colors_on_device,
      compile_s=compile_s, step_s=step_s,
      step_s_min=timing['min_s'] / steps, step_s_max=timing['max_s'] / steps,
      spread=timing['spread'], repeats=repeats, steps_per_window=steps,
      images_per_s=batch_size / step_s, views_per_s=2 * batch_size / step_s,
      xla_flops_per_step=flops, achieved_tflops=flops / step_s / 1e12,
      xla_bytes_per_step=bytes_accessed,
      flops_per_byte=flops / bytes_accessed if bytes_accessed else None,
      op_time_shares=common.trace_op_shares(profile_dir) if profile_dir else None,
      donation_warnings=donation, loss=loss,
      param_dtype=str(jax.tree.leaves(live['state'].params)[0].dtype))


def measure_device_augment(config, batch_size, *, warmup, repeats):
  """Cost of device_augment.device_color_augment on both views of a batch:
  what moving colour and blur off the host would add to the step."""
  views = jax.random.uniform(jax.random.key(0), (
      2 * batch_size, config.image_size, config.image_size, 3))
  configs.fill_auto_fields(config)
  params = augment_lib.AugmentParams.from_config(config.augment)
  augment = jax.jit(lambda x, key: device_augment.device_color_augment(
      x, key, params, config.image_size))
  compiled = augment.lower(views, jax.random.key(1)).compile()
  timing = common.time_windows(
      lambda: compiled(views, jax.random.key(1)).block_until_ready(),
      warmup=warmup, repeats=repeats)
  return dict(image_size=config.image_size, views=2 * batch_size,
              time_s=timing['median_s'], spread=timing['spread'],
              views_per_s=2 * batch_size / timing['median_s'],
              gflop_per_view=common.xla_cost(compiled) / views.shape[0] / 1e9,
              mb_accessed_per_view=common.xla_cost(
                  compiled, 'bytes accessed') / views.shape[0] / 1e6)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='r18_cifar32,r50_224:0.25',
                      help=f'Comma-separated NAME[:WIDTH]; names {sorted(MODELS)}.')
  parser.add_argument('--batch_sizes', default='8,16,32',
                      help='Global batch sizes (images; each gives two views).')
  parser.add_argument('--dtypes', default='float32',
                      help='Compute dtypes, e.g. float32,bfloat16 (parameters '
                      'stay float32).')
  parser.add_argument('--devices', type=int, default=0,
                      help='Use the first N devices; 0 = all.')
  parser.add_argument('--warmup', type=int, default=1,
                      help='Untimed windows after compilation.')
  parser.add_argument('--repeats', type=int, default=3, help='Timed windows.')
  parser.add_argument('--steps', type=int, default=2,
                      help='Steps per timed window (one device sync each).')
  parser.add_argument('--matmul_size', type=int, default=2048,
                      help='Side of the square matmul that measures the peak.')
  parser.add_argument('--profile_dir', default='',
                      help='Trace one window of each config here and report '
                      'the share of device time by op kind.')
  parser.add_argument('--colors_on_device', action='store_true',
                      help='Time the step with config.augment.on_device: uint8 '
                      'crops in, colour distortion and blur inside the step.')
  parser.add_argument('--tiny', action='store_true',
                      help='Seconds: a 16 px ResNet-18 at width 1/8, one config.')
  parser.add_argument('--json_out', default='')
  args = parser.parse_args(argv)
  if args.tiny:
    args.models, args.batch_sizes, args.dtypes = 'r18_16:0.125', '8', 'float32'
    args.warmup, args.repeats, args.steps, args.matmul_size = 1, 2, 1, 256

  devices = jax.devices()[:args.devices or None]
  kind = devices[0].device_kind
  dtypes = common.str_list(args.dtypes)

  def measure_peaks(previous=None):
    """All devices' matmul FLOP/s; the best of now and `previous`, since a
    busy shared host can only make a measured peak lower than the truth."""
    return {d: max(common.matmul_peak_flops(d, args.matmul_size) *
                   len(devices), (previous or {}).get(d, 0.0))
            for d in dtypes}

  def add_utilisation(row, peaks):
    nominal = common.nominal_peak_flops(kind, row['dtype'])
    nominal = nominal and nominal * len(devices)
    achieved = row['achieved_tflops'] * 1e12
    row.update(measured_peak_tflops=peaks[row['dtype']] / 1e12,
               mfu_measured=achieved / peaks[row['dtype']],
               nominal_peak_tflops=nominal and nominal / 1e12,
               mfu_nominal=nominal and achieved / nominal)

  peaks = measure_peaks()
  rows = []
  report = {'benchmark': 'train_step', 'tiny': args.tiny,
            'machine': common.machine(), 'args': vars(args), 'results': rows}
  for spec in common.str_list(args.models):
    name, width = common.parse_model(spec)
    for dtype in dtypes:
      for batch_size in common.int_list(args.batch_sizes):
        row = measure(name, width, batch_size, dtype, devices,
                      warmup=args.warmup, repeats=args.repeats,
                      steps=args.steps, profile_dir=args.profile_dir and
                      os.path.join(args.profile_dir,
                                   f'{name}_{width}_{dtype}_{batch_size}'),
                      colors_on_device=args.colors_on_device)
        add_utilisation(row, peaks)
        rows.append(row)
        common.write_json(args.json_out, report, final=False)
        print(f'  {spec} {dtype} batch {batch_size}: '
              f'{row["images_per_s"]:.1f} img/s', flush=True)
  # On one device: the augmentation is per image, so it shards trivially.
  report['device_augment'] = [
      measure_device_augment(
          make_config(name, 1.0, max(common.int_list(args.batch_sizes)),
                      'float32'),
          max(common.int_list(args.batch_sizes)), warmup=args.warmup,
          repeats=args.repeats)
      for name in sorted({common.parse_model(spec)[0]
                          for spec in common.str_list(args.models)})]
  peaks = measure_peaks(peaks)
  for row in rows:
    add_utilisation(row, peaks)
  report['measured_peak_tflops'] = {d: p / 1e12 for d, p in peaks.items()}

  print(f'{kind} x{len(devices)}; measured matmul peak (TFLOP/s): ' +
        ', '.join(f'{d} {p / 1e12:.3f}' for d, p in peaks.items()))
  common.print_table(rows, [
      ('model', 'model', 's'), ('width', 'width', '.3g'),
      ('batch_size', 'batch', 'd'), ('dtype', 'dtype', 's'),
      ('compile_s', 'compile s', '.1f'), ('step_s', 'step s', '.4f'),
      ('spread', 'spread', '.2f'), ('images_per_s', 'img/s', '.1f'),
      ('achieved_tflops', 'TFLOP/s', '.4f'),
      ('flops_per_byte', 'FLOP/B', '.1f'),
      ('mfu_measured', 'MFU meas', '.2f'), ('mfu_nominal', 'MFU nom', '.3f')])
  for row in rows:
    if row['op_time_shares']:
      print(f'{row["model"]} {row["dtype"]} batch {row["batch_size"]}, device '
            'time by op kind: ' + ', '.join(
                f'{k} {v:.0%}' for k, v in row['op_time_shares'].items()))
  for row in report['device_augment']:
    print(f'device_color_augment at {row["image_size"]} px: '
          f'{row["views_per_s"]:.0f} views/s, {row["gflop_per_view"]:.3f} '
          f'GFLOP and {row["mb_accessed_per_view"]:.1f} MB accessed per view')
  common.write_json(args.json_out, report)
  return report


if __name__ == '__main__':
  main()
