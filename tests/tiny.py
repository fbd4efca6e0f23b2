"""The tiny digits setup the trainer tests share: 16 px, ResNet-18 at width
1/8, batch 32. Compiles in seconds on a CPU; every mode runs on it."""

import copy

from simclr_jax import configs, data, tasks
from simclr_jax.configs import digits

# Seconds before a test gives up on a subprocess: only a hang detector. A
# cold-cache run under the suite's load takes minutes on a slow 2-core
# machine, so the limit is far above that rather than near it.
PROCESS_TIMEOUT_S = 900


def tiny_config(data_dir, mode='pretrain', **train_overrides):
  config = digits.get_config('runlocal')
  config.mode = mode
  config.data_dir = data_dir
  config.model.width_multiplier = 0.125
  config.train.batch_size = 32
  config.evals.batch_size = 64
  config.train.warmup_epochs = 0
  config.train.update(train_overrides)
  return config


def open_data(config, **process):
  """data.Dataset of `config` with its auto fields filled, as the trainer
  opens it (`process` = process_index / process_count to emulate a host)."""
  config = copy.deepcopy(config)
  configs.fill_auto_fields(config)
  return data.Dataset(config, **process)


def train_batches(config, start_step=0, **process):
  """The training batches of config.mode's task, as the trainer reads them."""
  dataset = open_data(config, **process)
  task = tasks.for_config(dataset.config, dataset.info)
  return dataset.train_iter(task.views, labelled_only=task.labelled_only,
                            start_step=start_step)


def eval_batches(config, split=None, **process):
  return open_data(config, **process).eval_iter(split)
