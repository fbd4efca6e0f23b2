"""The embedded default: SimCLR pretraining on scikit-learn's digits (offline).

A small CIFAR-stem ResNet-18 (width 0.25) on 8x8 digits upsampled to 16x16:
393 steps (time and accuracy measured in README.md and docs/results.md).
Args: `epochs` (80; probe accuracy against time for 80 and 120 epochs is in
docs/results.md), `runlocal` (a few steps, for smoke tests).
"""

from simclr_jax.configs import default


def get_config(arg=None):
  args = default.parse_arg(arg, runlocal=False, epochs=80.0)
  config = default.get_config()
  config.dataset = 'digits'
  config.image_size = 16
  config.shuffle_buffer = 2048

  # A digit flipped is another shape; an 8x8 digit tolerates milder crops.
  config.augment.flip_prob = 0.0
  config.augment.crop_area_min = 0.25

  config.model.depth = 18
  config.model.width_multiplier = 0.25

  config.train.batch_size = 256
  config.train.epochs = args.epochs
  config.train.learning_rate = 1.0
  config.train.warmup_epochs = 10
  config.train.weight_decay = 1e-4
  config.train.temperature = 0.2
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 200
  config.evals.accuracy.every_steps = 200
  config.evals.batch_size = 256

  if args.runlocal:
    config.train.steps = 4
    config.train.warmup_epochs = 0
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 2
    config.evals.accuracy.every_steps = 0
  return config
