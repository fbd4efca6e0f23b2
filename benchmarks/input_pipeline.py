"""Throughput of the SimCLR training input pipeline on this machine's CPUs.

Measures two-view pretraining examples per second through the real pipeline
(index shuffling, stateless augmentation, batching), in three settings:
  * 224x224 from JPEG bytes of ImageNet-like size (500x375, smooth content so
    they compress like photos), which exercises the fused decode-and-crop;
  * the same with config.augment.on_device: the host crops, flips and ships
    uint8, colour jitter, colour drop and blur run in the train step
    (device_augment.py);
  * 32x32 from uint8 arrays in memory (CIFAR-like).
It divides by the cores tf.data may use, because that figure tells how many
host cores a given accelerator step rate needs.

  python benchmarks/input_pipeline.py --json_out=/tmp/input_pipeline.json
  python benchmarks/input_pipeline.py --tiny   # a few seconds, smoke test
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common
from simclr_jax import configs
from simclr_jax.configs import default
from simclr_jax.data import augment, iterators, sources


def photo_like_jpegs(count, height=375, width=500, seed=0):
  """JPEGs of smooth random content plus grain: realistic compressed sizes."""
  rng = np.random.default_rng(seed)
  encoded = []
  for _ in range(count):
    coarse = rng.uniform(0, 1, size=(height // 24, width // 24, 3))
    smooth = tf.image.resize(coarse[None], [height, width], method='bicubic')[0]
    grain = rng.normal(0, 0.04, size=(height, width, 3))
    pixels = np.clip(smooth.numpy() + grain, 0, 1) * 255
    encoded.append(tf.io.encode_jpeg(pixels.astype(np.uint8), quality=90)
                   .numpy())
  return np.array(encoded, dtype=object)


def measure(shard, image_size, batch_size, warmup_batches, seconds,
            colors_on_device=False):
  """Examples/s of the pretraining stream over `shard` after a warm-up."""
  config = default.get_config()
  config.image_size = image_size
  configs.fill_auto_fields(config)
  ds = iterators.train_dataset(
      shard, augment.pretrain_views(colors_on_device),
      augment.AugmentParams.from_config(config.augment), config,
      process_index=0, start_step=0, batch_size=batch_size)
  batches = iter(ds)
  for _ in range(warmup_batches):
    next(batches)
  start, examples = time.perf_counter(), 0
  while True:
    batch = next(batches)
    examples += batch['images'].shape[0]
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return examples / elapsed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tiny', action='store_true',
                      help='A few seconds in total; checks the script runs.')
  parser.add_argument('--seconds', type=float, default=20.0,
                      help='Timed seconds per setting (after warm-up).')
  parser.add_argument('--json_out', default='',
                      help='Also write the results here as JSON.')
  args = parser.parse_args(argv)

  seconds = 0.2 if args.tiny else args.seconds
  batch_size = 8 if args.tiny else 64
  warmup = 1 if args.tiny else 3
  num_jpegs = 4 if args.tiny else 64
  cores = common.usable_cores()

  jpegs = photo_like_jpegs(num_jpegs)
  labels = np.zeros(len(jpegs), np.int64)
  ones = np.ones(len(jpegs), np.float32)
  jpeg_shard = sources.MemoryShard('bytes', jpegs, labels, ones,
                                    np.arange(len(jpegs)))
  pixels = np.random.default_rng(0).integers(
      0, 256, size=(1024, 32, 32, 3), dtype=np.uint8)
  pixel_shard = sources.MemoryShard(
      'pixels', pixels, np.zeros(len(pixels), np.int64),
      np.ones(len(pixels), np.float32), np.arange(len(pixels)))

  settings = [
      ('jpeg_500x375_to_224', jpeg_shard, 224, False),
      ('jpeg_500x375_to_224_colors_on_device', jpeg_shard, 224, True),
      ('uint8_32_to_32', pixel_shard, 32, False),
  ]
  results = []
  for name, shard, size, colors_on_device in settings:
    rate = measure(shard, size, batch_size, warmup, seconds, colors_on_device)
    results.append({
        'setting': name,
        'image_size': size,
        'views_per_example': 2,
        'examples_per_s': round(rate, 1),
        'examples_per_s_per_core': round(rate / cores, 1),
    })
  report = {
      'cores': cores,
      'tf_version': tf.__version__,
      'tiny': args.tiny,
      'load_average_start': [round(x, 2) for x in common.LOAD_AT_START],
      'load_average_end': [round(x, 2) for x in os.getloadavg()],
      'batch_size': batch_size,
      'mean_jpeg_kb': round(float(np.mean([len(j) for j in jpegs])) / 1024, 1),
      'results': results,
  }

  print(f'cores used by tf.data: {cores}   TF {tf.__version__}   '
        f'mean JPEG size {report["mean_jpeg_kb"]} KiB')
  print(f'{"setting":<36} {"two-view examples/s":>20} {"per core":>10}')
  for r in results:
    print(f'{r["setting"]:<36} {r["examples_per_s"]:>20.1f} '
          f'{r["examples_per_s_per_core"]:>10.1f}')
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(report, f, indent=2)
  return report


if __name__ == '__main__':
  main()
