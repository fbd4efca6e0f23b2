"""Where training and evaluation examples come from: splits, label fractions
and the shard each process reads.

  * any prepared tfds image classification dataset (never downloaded here);
  * 'digits': sklearn's digits as a tfds dataset, prepared on first use;
  * 'folder:/path': the user's own JPEG/PNG files (see `_FolderSplit`).

Every process reads one contiguous shard of a split. Small shards live in
host memory and are addressed by index; large tfds shards are streamed from
their files. Either way the training stream is a pure function of
(config.seed, process, position): epochs are shuffled with seeds derived from
the epoch number, so a resumed run skips to its position before any image is
decoded (`data/iterators.py` builds the batches).
"""

import dataclasses
import difflib
import functools
import math
import os

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax import console
from simclr_jax.data import digits
from simclr_jax.errors import UserError

FOLDER_PREFIX = 'folder:'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
# Fixed-shape tfds shards up to this many decoded bytes are held in memory.
MAX_IN_MEMORY_BYTES = 1 << 30
# Official SimCLR label subsets of ImageNet, shipped as tfds configs.
IMAGENET_SUBSETS = {0.01: 'imagenet2012_subset/1pct',
                    0.1: 'imagenet2012_subset/10pct'}

# Distinct streams derived from one process seed.
SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1

# ---------------------------------------------------------------------------
# Label fractions.


def label_fraction_indices(labels, fraction, seed):
  """Sorted indices of a class-balanced subset holding `fraction` of labels.

  Each class keeps round(fraction * its count) examples (at least one), drawn
  with a numpy RNG seeded by `seed`. Examples with label < 0 (unknown) are
  never picked. Computed on the whole split, so every host gets the same set.
  """
  labels = np.asarray(labels)
  if not 0 < fraction <= 1:
    raise UserError(
        f'config.label_fraction must be in (0, 1], got {fraction}.')
  rng = np.random.default_rng(seed)
  chosen = []
  for label in np.unique(labels[labels >= 0]):
    members = np.flatnonzero(labels == label)
    count = max(1, int(math.floor(fraction * len(members) + 0.5)))
    chosen.append(rng.choice(members, size=count, replace=False))
  if not chosen:
    return np.zeros([0], np.int64)
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def _fraction_mask(labels, fraction, seed):
  """Boolean mask: label known and inside the label fraction."""
  mask = np.zeros(len(labels), bool)
  if fraction >= 1:
    mask[:] = np.asarray(labels) >= 0
  else:
    mask[label_fraction_indices(labels, fraction, seed)] = True
  return mask


def _even_bounds(num_examples, count):
  """Boundaries of `count` contiguous shards whose sizes differ by <= 1."""
  return [num_examples * i // count for i in range(count + 1)]


# ---------------------------------------------------------------------------
# Splits shared by all processes: what exists, how big, how it is sharded.


def _read_config():
  """Files are read one after another, so that the i-th record of a split is
  the same record for every reader and process count (tfds' default
  interleaving would mix files in blocks). The shuffle buffer mixes instead.
  """
  return tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False)


def _tfds_builder(name, data_dir):
  """A tfds builder for a prepared dataset; ValueError if it isn't prepared."""
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    known = tfds.list_builders(with_community_datasets=False) + ['digits']
    close = difflib.get_close_matches(name.split('/')[0], known, n=3)
    raise UserError(
        f'Unknown config.dataset {name!r}: not a tfds dataset, nor \'digits\' '
        f'nor \'{FOLDER_PREFIX}/path\'.',
        hint=f'did you mean {" or ".join(close)}?' if close else None) from e
  if not builder.info.splits:
    raise UserError(
        f'tfds dataset {name!r} is not prepared in {builder.data_dir}. This '
        f'framework never downloads: prepare it first, e.g. '
        f'`tfds build {name.split("/")[0]} --data_dir=<config.data_dir>` (some '
        'datasets such as imagenet2012 need a manual download).')
  return builder


class _TfdsSplit:
  """One split of a prepared tfds dataset, as every process sees it."""

  def __init__(self, builder, split, field):
    self.builder = builder
    self.split = split
    self.features = builder.info.features
    if 'image' not in self.features:
      raise UserError(f'tfds dataset {builder.name!r} has no \'image\' '
                       'feature; only image datasets are supported.')
    try:
      self.num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as e:
      raise UserError(
          f'Split {split!r} (config.{field}) not found in tfds dataset '
          f'{builder.name!r}; available: {list(builder.info.splits)}.') from e
    if self.num_examples == 0:
      raise UserError(f'Split {split!r} (config.{field}) of {builder.name!r} '
                       'is empty.')
    self.has_labels = 'label' in self.features
    self.num_classes = (self.features['label'].num_classes
                        if self.has_labels else 0)
    self.name = builder.name

  @property
  def image_shape(self):
    return self.features['image'].shape

  def process_sizes(self, count):
    return np.diff(_even_bounds(self.num_examples, count)).tolist()

  def process_split(self, index, count):
    """Read instruction for process `index`'s contiguous part of the split.

    Contiguous in the order the whole split is read, also for 'a+b' splits
    (tfds.even_splits would give each process a piece of every component),
    so global example indices mean the same for every process count.
    """
    if count == 1:
      return self.split
    begin, end = _even_bounds(self.num_examples, count)[index:index + 2]
    splits = self.builder.info.splits
    instruction, position = None, 0
    for piece in tfds.core.ReadInstruction.from_spec(self.split).to_absolute(
        splits):
      start = piece.from_ or 0
      stop = splits[piece.splitname].num_examples if piece.to is None else (
          piece.to)
      low, high = max(begin, position), min(end, position + stop - start)
      if low < high:
        part = tfds.core.ReadInstruction(
            piece.splitname, from_=start + low - position,
            to=start + high - position, unit='abs')
        instruction = part if instruction is None else instruction + part
      position += stop - start
    return instruction

  def decoded_bytes(self, num_examples):
    """Bytes to hold `num_examples` decoded, or None for variable shapes."""
    shape = self.image_shape
    if shape is None or any(d is None for d in shape):
      return None
    return num_examples * int(np.prod(shape))

  def read(self, split, *, decode_image, extra_features=()):
    """tf.data of {'image', 'label'[, extra]} in the stored order."""
    image_decoder = (None if decode_image else tfds.decode.SkipDecoding())
    wanted = {'image': True, **{k: True for k in extra_features}}
    if self.has_labels:
      wanted['label'] = True
    decoders = tfds.decode.PartialDecoding(
        wanted, decoders={'image': image_decoder} if image_decoder else None)
    ds = self.builder.as_dataset(split=split, shuffle_files=False,
                                 decoders=decoders,
                                 read_config=_read_config())
    if not self.has_labels:
      ds = ds.map(lambda ex: {**ex, 'label': tf.constant(-1, tf.int64)})
    return ds

  @functools.cached_property
  def labels(self):
    """Labels of the whole split (-1 = unknown), in sharded order."""
    if not self.has_labels:
      return np.full([self.num_examples], -1, np.int64)
    ds = self.builder.as_dataset(
        split=self.split, shuffle_files=False,
        decoders=tfds.decode.PartialDecoding({'label': True}),
        read_config=_read_config())
    ds = ds.map(lambda ex: ex['label']).batch(4096)
    return np.concatenate(list(ds.as_numpy_iterator()) or
                          [np.zeros([0], np.int64)])

  def load(self, index, count, *, decode):
    """(images, labels) of process `index`'s shard, read into memory.

    Images are decoded uint8 [n, h, w, c] if `decode`, else encoded bytes.
    """
    ds = self.read(self.process_split(index, count), decode_image=decode)
    images, labels = [], []
    for ex in ds.batch(1024).as_numpy_iterator():
      images.append(ex['image'])
      labels.append(ex['label'])
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(labels) != self.process_sizes(count)[index]:
      raise UserError(
          f'{self.name!r} {self.split!r} shard {index}/{count} holds '
          f'{len(labels)} examples but its metadata says '
          f'{self.process_sizes(count)[index]}; re-prepare the dataset.')
    return images, labels

  def labels_are_cheap(self):
    """Scanning labels is cheap for fixed-size images (small datasets)."""
    return self.decoded_bytes(1) is not None


def _list_images(directory):
  """Sorted image files under `directory` (recursive), skipping hidden ones."""
  found = []
  for root, dirs, files in os.walk(directory, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found.extend(os.path.join(root, f) for f in sorted(files)
                 if not f.startswith('.') and
                 f.lower().endswith(IMAGE_EXTENSIONS))
  return found


class _FolderSplit:
  """Images in a folder: one sub-folder per class, or loose files.

  Sub-folders are classes (sorted names -> label ids) and may nest. Images
  directly in the folder have no label (label -1, pretraining only). If the
  folder has a sub-folder named like config.train_split (e.g. train/), every
  split is the sub-folder of its name (train/, test/, ...); otherwise the
  whole folder serves every split, so evaluation runs on the training images.
  """

  def __init__(self, root, split, field, train_split, class_names=None):
    if not os.path.isdir(root):
      raise UserError(f'config.dataset folder {root!r} does not exist.')
    self.name = FOLDER_PREFIX + root
    self.split = split
    directory = root
    if train_split and os.path.isdir(os.path.join(root, train_split)):
      directory = os.path.join(root, split)
      if not os.path.isdir(directory):
        raise UserError(
            f'Folder {root!r} has a {train_split!r} sub-folder, so splits are '
            f'sub-folders, but there is none named {split!r} '
            f'(config.{field}).')
    self.directory = directory
    subdirs = sorted(d for d in os.listdir(directory)
                     if not d.startswith('.') and
                     os.path.isdir(os.path.join(directory, d)))
    loose = [os.path.join(directory, f) for f in sorted(os.listdir(directory))
             if os.path.isfile(os.path.join(directory, f)) and
             not f.startswith('.') and f.lower().endswith(IMAGE_EXTENSIONS)]
    paths, labels = list(loose), [-1] * len(loose)
    class_files = {d: _list_images(os.path.join(directory, d)) for d in subdirs}
    class_files = {d: f for d, f in class_files.items() if f}
    self.class_names = (sorted(class_files) if class_names is None
                        else list(class_names))
    for name, files in sorted(class_files.items()):
      if name not in self.class_names:
        raise UserError(f'Class folder {name!r} in {directory!r} '
                         f'(config.{field}) is not a training class; training'
                         f' classes: {self.class_names}.')
      paths.extend(files)
      labels.extend([self.class_names.index(name)] * len(files))
    if not paths:
      raise UserError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) found in '
                       f'folder {directory!r} (config.dataset).')
    self.paths = np.array(paths)
    self.labels = np.array(labels, np.int64)
    self.num_examples = len(paths)
    self.num_classes = len(self.class_names)
    self.has_labels = bool(self.num_classes)

  def process_sizes(self, count):
    return np.diff(_even_bounds(self.num_examples, count)).tolist()

  def labels_are_cheap(self):
    return True


def kind_and_root(config):
  """('folder', root) or ('tfds', name) of config.dataset, preparing nothing."""
  if config.dataset.startswith(FOLDER_PREFIX):
    return 'folder', os.path.expanduser(config.dataset[len(FOLDER_PREFIX):])
  return 'tfds', config.dataset


def _parse_dataset(config):
  """config.dataset -> ('folder', root) or ('tfds', name), preparing digits."""
  dataset = config.dataset
  if dataset.startswith(FOLDER_PREFIX):
    root = os.path.expanduser(dataset[len(FOLDER_PREFIX):])
    if not root:
      raise UserError('config.dataset \'folder:\' needs a path, e.g. '
                       '\'folder:/data/images\'.')
    return 'folder', root
  if dataset == 'digits':
    digits.prepare(config.data_dir)
    return 'tfds', digits.TFDS_NAME
  return 'tfds', dataset


def open_eval(config, split=None):
  """The eval split (config.eval_split unless `split` names another)."""
  kind, name = _parse_dataset(config)
  split = config.eval_split if split is None else split
  if kind == 'folder':
    train = _FolderSplit(name, config.train_split, 'train_split',
                         config.train_split)
    return _FolderSplit(name, split, 'eval_split', config.train_split,
                        class_names=train.class_names)
  return _TfdsSplit(_tfds_builder(name, config.data_dir), split, 'eval_split')


def _imagenet_subset(config):
  """The official subset builder name, if config asks for one."""
  if config.dataset != 'imagenet2012':
    return None
  for fraction, name in IMAGENET_SUBSETS.items():
    if math.isclose(config.label_fraction, fraction):
      return name
  return None


def _subset_file_names(subset_split):
  """File names in an official subset: how pretraining marks its labels."""
  ds = subset_split.builder.as_dataset(
      split=subset_split.split, shuffle_files=False,
      decoders=tfds.decode.PartialDecoding({'file_name': True}),
      read_config=_read_config())
  return np.array(sorted(ex['file_name'] for ex in ds.as_numpy_iterator()))


@dataclasses.dataclass
class TrainSplit:
  """The training split and which of its examples count as labelled."""
  split: object                    # _TfdsSplit | _FolderSplit
  num_labelled: int
  # Global bool mask over the split (labels known and inside the fraction),
  # or None: every known label counts.
  fraction_mask: np.ndarray = None
  # ImageNet with an official label subset: that subset's split.
  subset: object = None

  def shard(self, index, count, *, labelled_only, cache, shuffle_buffer):
    """What process `index` of `count` trains on: the labelled examples
    only, or all of them with a mask saying which are labelled."""
    if self.subset is not None and labelled_only:
      # The official subset is itself the labelled training set.
      return shard_for_process(self.subset, index, count, cache=cache,
                               shuffle_buffer=shuffle_buffer)
    names = (_subset_file_names(self.subset) if self.subset is not None
             else None)
    return shard_for_process(
        self.split, index, count, labelled_only=labelled_only,
        fraction_mask=self.fraction_mask, subset_file_names=names,
        cache=cache, shuffle_buffer=shuffle_buffer)


def open_train(config) -> TrainSplit:
  """The training split of config.dataset, its labels counted once."""
  kind, name = _parse_dataset(config)
  fraction = config.label_fraction
  if kind == 'folder':
    split = _FolderSplit(name, config.train_split, 'train_split',
                         config.train_split)
  else:
    split = _TfdsSplit(_tfds_builder(name, config.data_dir),
                       config.train_split, 'train_split')
    subset = _imagenet_subset(config)
    if subset:
      try:
        subset_split = _TfdsSplit(_tfds_builder(subset, config.data_dir),
                                  config.train_split, 'train_split')
      except ValueError as e:
        raise UserError(
            f'label_fraction={fraction} on imagenet2012 uses the official '
            f'subset {subset!r} to mark labelled examples; prepare it or set '
            'config.label_fraction = 1.0.') from e
      return TrainSplit(split, num_labelled=subset_split.num_examples,
                        subset=subset_split)
  if fraction < 1 or split.labels_are_cheap():
    mask = _fraction_mask(split.labels, fraction, config.label_fraction_seed)
    return TrainSplit(split, num_labelled=int(mask.sum()), fraction_mask=mask)
  # A large dataset with all labels: trust that the split is labelled.
  return TrainSplit(split, num_labelled=(split.num_examples if split.has_labels
                                         else 0))


def class_names(config) -> list:
  """Names of config.dataset's classes in label-id order; [] when unknown.

  tfds: the 'label' feature's names (digits: '0'..'9'); folders: the class
  sub-folders of the train split. Nothing is prepared or downloaded, so an
  export records the names whenever the dataset's description is at hand.
  """
  kind, name = (('tfds', digits.TFDS_NAME) if config.dataset == 'digits'
                else _parse_dataset(config))
  try:
    if kind == 'folder':
      names = _FolderSplit(name, config.train_split, 'train_split',
                           config.train_split).class_names
    elif name == digits.TFDS_NAME:
      names = digits.SimclrDigits(data_dir=config.data_dir or None).info.features[
          'label'].names
    else:
      features = tfds.builder(name, data_dir=config.data_dir or None,
                              try_gcs=False).info.features
      names = features['label'].names if 'label' in features else []
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('No class names for %r: %s', config.dataset,
                    (str(e).splitlines() or [type(e).__name__])[0])
    return []
  return [str(n) for n in names]


# ---------------------------------------------------------------------------
# What one process reads: examples in memory, or a stream of tfds records.


def fold(seed, *data):
  """A TF stateless seed folded with each of `data` in turn."""
  for value in data:
    seed = tf.random.experimental.stateless_fold_in(seed, value)
  return seed


def _example(image, label, label_mask):
  """The record each source yields; labels are valid ids, masks say if real."""
  label = tf.cast(label, tf.int32)
  known = tf.cast(label >= 0, tf.float32)
  return {'image': image, 'label': tf.maximum(label, 0),
          'label_mask': known * tf.cast(label_mask, tf.float32)}


@dataclasses.dataclass
class MemoryShard:
  """A process's examples held in memory, addressed by index.

  `images` holds decoded uint8 pixels [n, h, w, c], encoded bytes [n], or
  file paths [n] (`kind` says which); `indices` are their places in the split.
  """
  kind: str
  images: np.ndarray
  labels: np.ndarray
  label_mask: np.ndarray
  indices: np.ndarray

  @property
  def num_examples(self):
    return len(self.labels)

  def _loader(self):
    images = tf.constant(self.images)
    labels = tf.constant(self.labels, tf.int64)
    masks = tf.constant(self.label_mask, tf.float32)
    read = tf.io.read_file if self.kind == 'files' else (lambda x: x)

    def load(index):
      return _example(read(tf.gather(images, index)),
                      tf.gather(labels, index), tf.gather(masks, index))
    return load

  def train_examples(self, start_position, seed):
    """Infinite (position, example); each epoch is a fresh permutation."""
    n = tf.constant(self.num_examples, tf.int64)
    load = self._loader()

    def example_at(position):
      epoch, offset = position // n, position % n
      index = tf.random.experimental.index_shuffle(
          offset, fold(seed, SHUFFLE_STREAM, epoch), n - 1)
      return position, load(index)
    return tf.data.Dataset.counter(start_position).map(example_at)

  def eval_examples(self):
    return tf.data.Dataset.range(self.num_examples).map(self._loader())


@dataclasses.dataclass
class StreamShard:
  """A process's shard of a large tfds split, read from its files in order.

  Each epoch goes through a shuffle buffer seeded by the epoch, so skipping to
  a position reads (but never decodes) at most one epoch of records.
  """
  split: _TfdsSplit
  process_split: object
  offset: int                      # Global index of the shard's first record.
  num_examples: int                # After dropping unlabelled, if asked.
  shuffle_buffer: int
  fraction_mask: np.ndarray = None
  subset_file_names: np.ndarray = None
  labelled_only: bool = False

  def _records(self):
    extra = ('file_name',) if self.subset_file_names is not None else ()
    ds = self.split.read(self.process_split, decode_image=False,
                         extra_features=extra)
    ds = ds.enumerate(start=self.offset)
    if self.fraction_mask is not None:
      mask = tf.constant(self.fraction_mask)
      in_fraction = lambda i, ex: tf.gather(mask, i)
    elif self.subset_file_names is not None:
      table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(self.subset_file_names),
              tf.ones([len(self.subset_file_names)], tf.int64)), 0)
      in_fraction = lambda i, ex: table.lookup(ex['file_name']) > 0
    else:
      in_fraction = lambda i, ex: True
    ds = ds.map(lambda i, ex: _example(ex['image'], ex['label'],
                                       in_fraction(i, ex)))
    if self.labelled_only:
      ds = ds.filter(lambda ex: ex['label_mask'] > 0)
    return ds

  def train_examples(self, start_position, seed):
    records = self._records()
    first_epoch, skip = divmod(start_position, self.num_examples)

    def epoch(index):
      shuffle_seed = tf.random.stateless_uniform(
          [], fold(seed, SHUFFLE_STREAM, index), minval=None, maxval=None,
          dtype=tf.int64)
      shuffled = records.shuffle(self.shuffle_buffer, seed=shuffle_seed,
                                 reshuffle_each_iteration=False)
      return shuffled.skip(tf.where(index == first_epoch,
                                    tf.constant(skip, tf.int64),
                                    tf.constant(0, tf.int64)))
    epochs = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
    return epochs.enumerate(start=start_position)

  def eval_examples(self):
    return self._records()


@functools.lru_cache(maxsize=8)
def _readable_files(paths):
  """Mask of the files TF can decode; corrupt ones would crash a long run."""
  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(len(paths)), np.array(paths)))
  ds = ds.map(lambda i, path: (i, tf.reduce_min(tf.shape(tf.io.decode_image(
      tf.io.read_file(path), channels=3, expand_animations=False))[:2])),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors()
  readable = np.zeros(len(paths), bool)
  with console.stderr_silenced():   # libjpeg's complaints; counted below.
    for index, side in ds.as_numpy_iterator():
      readable[index] = side > 0
  if not readable.all():
    bad = [paths[i] for i in np.flatnonzero(~readable)]
    logging.warning('Skipping %d unreadable image file(s), e.g. %s', len(bad),
                    ', '.join(str(p) for p in bad[:3]))
  return readable


def _folder_shard(split, indices, label_mask, cache):
  paths = split.paths[indices]
  readable = _readable_files(tuple(paths))
  indices, paths = indices[readable], paths[readable]
  label_mask = label_mask[readable]
  if cache:
    images = np.array([open(p, 'rb').read() for p in paths], dtype=object)
    return MemoryShard('bytes', images, split.labels[indices], label_mask,
                        indices)
  return MemoryShard('files', paths, split.labels[indices], label_mask,
                      indices)


def shard_for_process(split, index, count, *, labelled_only=False, fraction_mask=None,
           subset_file_names=None, cache=False, shuffle_buffer=10_000):
  """What process `index` of `count` reads from `split`."""
  sizes = split.process_sizes(count)
  if not sizes[index]:  # More processes than examples.
    empty = np.zeros([0], np.int64)
    return MemoryShard('bytes', np.zeros([0], bytes), empty,
                       np.zeros([0], np.float32), empty)
  offset = int(sum(sizes[:index]))
  global_indices = np.arange(offset, offset + sizes[index])
  if fraction_mask is not None:
    label_mask = fraction_mask[global_indices]
  else:
    label_mask = np.ones(len(global_indices), bool)

  if isinstance(split, _FolderSplit):
    if labelled_only:
      keep = label_mask & (split.labels[global_indices] >= 0)
      global_indices, label_mask = global_indices[keep], label_mask[keep]
    return _folder_shard(split, global_indices, label_mask.astype(np.float32),
                         cache)

  process_split = split.process_split(index, count)
  decoded_bytes = split.decoded_bytes(sizes[index])
  in_memory = (decoded_bytes is not None and
               decoded_bytes <= MAX_IN_MEMORY_BYTES)
  if (in_memory or cache) and subset_file_names is None:
    images, labels = split.load(index, count, decode=in_memory)
    label_mask &= labels >= 0
    if labelled_only:
      images, labels = images[label_mask], labels[label_mask]
      global_indices = global_indices[label_mask]
      label_mask = label_mask[label_mask]
    return MemoryShard('pixels' if in_memory else 'bytes', images, labels,
                        label_mask.astype(np.float32), global_indices)

  num_examples = (int(label_mask.sum()) if labelled_only and
                  fraction_mask is not None else sizes[index])
  return StreamShard(split, process_split, offset, num_examples,
                      shuffle_buffer, fraction_mask=fraction_mask,
                      subset_file_names=subset_file_names,
                      labelled_only=labelled_only)


