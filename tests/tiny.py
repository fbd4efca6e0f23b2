"""The tiny digits setup the trainer tests share: 16 px, ResNet-18 at width
1/8, batch 32. Compiles in seconds on a CPU; every mode runs on it."""

from simclr_jax.configs import digits


def tiny_config(data_dir, mode='pretrain', **train_overrides):
  config = digits.get_config('runlocal')
  config.mode = mode
  config.data_dir = data_dir
  config.model.width_multiplier = 0.125
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.warmup_epochs = 0
  config.train.update(train_overrides)
  return config
