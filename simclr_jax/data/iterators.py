"""A dataset opened once, and the batches each process feeds the devices.

`Dataset(config)` opens config.dataset's train and eval splits once (label
fractions counted, folders checked) and holds what it has read; the trainer
then asks it for training batches (`train_iter`, from any step, bit-identical
to an uninterrupted run) and for evaluation passes (`eval_iter`, any split).
Augmented views are a pure function of (config.seed, process, position,
view), so a resumed run reproduces the original batches.
"""

import dataclasses
from typing import Optional

import jax
import tensorflow as tf
from absl import logging

from simclr_jax.data import augment
from simclr_jax.data import sources
from simclr_jax.errors import UserError


def keep_tf_off_accelerators():
  """TF only runs the input pipeline; the accelerators belong to JAX. Called
  once by the trainer (and by the command line before anything else)."""
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # Already initialised, or no such type.
      pass


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes the trainer needs to plan steps, heads and evaluation."""
  num_classes: int           # 0 when the dataset has no labels.
  num_train_examples: int    # The whole train split.
  num_train_labelled: int    # Known labels inside config.label_fraction.
  num_eval_examples: int
  image_shape: tuple         # (image_size, image_size, 3) fed to the model.
  # What evaluation reads, for log lines: the split's name, or the training
  # images when a folder has no split sub-folders.
  eval_source: str = ''


def _options():
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  options.experimental_optimization.map_parallelization = True
  return options


def _per_process_batch(global_batch, process_count, field):
  if global_batch <= 0 or global_batch % process_count:
    raise UserError(f'config.{field}={global_batch} must be a positive '
                    f'multiple of the process count {process_count}.')
  return global_batch // process_count


class Dataset:
  """config.dataset, opened once for this process.

  `config` must have its auto fields filled (configs.fill_auto_fields), as
  train.build_experiment does. `process_index` / `process_count` default to
  JAX's; tests pass others to see what each host of a pod would read.
  """

  def __init__(self, config, *, process_index: Optional[int] = None,
               process_count: Optional[int] = None):
    self.config = config
    self.process_index = (jax.process_index() if process_index is None
                          else process_index)
    self.process_count = (jax.process_count() if process_count is None
                          else process_count)
    if not 0 <= self.process_index < self.process_count:
      raise UserError(f'process_index {self.process_index} not in [0, '
                      f'{self.process_count}).')
    self.augment = augment.AugmentParams.from_config(config.augment)
    self.train_split = sources.open_train(config)
    evaluation = sources.open_eval(config)
    # Splits opened for evaluation, and this process's shard of each.
    self._eval_splits = {config.eval_split: evaluation}
    self._eval_shards = {}
    eval_source = str(config.eval_split)
    if sources.kind_and_root(config)[0] == 'folder' and (
        evaluation.directory == self.train_split.split.directory):
      eval_source = (f'the training images (folder {evaluation.directory} '
                     f'has no {config.train_split}/ and {config.eval_split}/ '
                     'sub-folders)')
      logging.warning('Evaluating on %s.', eval_source)
    self.info = DatasetInfo(
        num_classes=self.train_split.split.num_classes,
        num_train_examples=self.train_split.split.num_examples,
        num_train_labelled=self.train_split.num_labelled,
        num_eval_examples=evaluation.num_examples,
        image_shape=(config.image_size, config.image_size, 3),
        eval_source=eval_source)

  def train_iter(self, views: augment.Views, *, labelled_only: bool,
                 start_step: int = 0):
    """Infinite iterator of this process's training batches (numpy dicts).

    Keys: 'images' [b, views.count, H, W, 3] (float32 in [0, 1], or uint8
    when the views leave the colour part to the device), 'labels' int32 [b]
    (0 where unknown) and 'label_mask' float32 [b]. Batch k of a run started
    at start_step is batch start_step + k of a run started at 0.
    """
    config = self.config
    if start_step < 0:
      raise UserError(f'start_step must be >= 0, got {start_step}.')
    batch_size = _per_process_batch(config.train.batch_size,
                                    self.process_count, 'train.batch_size')
    shard = self.train_split.shard(
        self.process_index, self.process_count, labelled_only=labelled_only,
        cache=config.cache_train, shuffle_buffer=config.shuffle_buffer)
    if shard.num_examples == 0:
      raise UserError(f'Process {self.process_index} of {self.process_count}'
                      f' has no training examples in {config.dataset!r} '
                      f'{config.train_split!r}.')
    return train_dataset(shard, views, self.augment, config,
                         process_index=self.process_index,
                         start_step=start_step,
                         batch_size=batch_size).as_numpy_iterator()

  def _eval_shard(self, split):
    if split not in self._eval_splits:
      self._eval_splits[split] = sources.open_eval(self.config, split)
    opened = self._eval_splits[split]
    if split not in self._eval_shards:
      self._eval_shards[split] = sources.shard_for_process(
          opened, self.process_index, self.process_count)
    return opened, self._eval_shards[split]

  def eval_iter(self, split: Optional[str] = None):
    """One pass over this process's shard of a split (config.eval_split by
    default), eval preprocessing, padded.

    Keys: 'images' float32 [b, 1, H, W, 3], 'labels' int32 [b], 'mask'
    float32 [b] (0 for padding) and 'label_mask' (mask and label known).
    Every process yields the same number of batches, so collectives never
    wait on a finished host, and over all processes each example has mask 1
    exactly once.
    """
    config = self.config
    split = config.eval_split if split is None else split
    batch_size = _per_process_batch(config.evals.batch_size,
                                    self.process_count, 'evals.batch_size')
    opened, shard = self._eval_shard(split)
    num_batches = -(-max(opened.process_sizes(self.process_count)) //
                    batch_size)
    size, params = config.image_size, self.augment

    def preprocess(example):
      image = augment.preprocess_eval(example['image'], params, size)
      return {'images': image[None], 'labels': example['label'],
              'mask': tf.constant(1.0), 'label_mask': example['label_mask']}

    padding = {'images': tf.zeros([1, size, size, 3]),
               'labels': tf.constant(0, tf.int32), 'mask': tf.constant(0.0),
               'label_mask': tf.constant(0.0)}
    # take(): a stream never yields more than its metadata promised the others.
    ds = shard.eval_examples().take(shard.num_examples)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    ds = ds.take(num_batches * batch_size).batch(batch_size)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()


def train_dataset(shard, views: augment.Views, params: augment.AugmentParams,
                  config, *, process_index, start_step, batch_size):
  """Augmented, batched tf.data over a shard (shared with the benchmark)."""
  seed = sources.fold(tf.constant([config.seed, 0], tf.int64), process_index)
  size = config.image_size

  def augment_example(position, example):
    example_seed = sources.fold(seed, sources.AUGMENT_STREAM, position)
    images = [views.fn(example['image'], sources.fold(example_seed, view),
                       params, size)
              for view in range(views.count)]
    return {'images': tf.stack(images), 'labels': example['label'],
            'label_mask': example['label_mask']}

  ds = shard.train_examples(start_step * batch_size, seed)
  ds = ds.map(augment_example, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())
