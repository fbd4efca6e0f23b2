"""Tests of the input pipeline: augmentation statistics, determinism and
resumption, datasets (digits, folders, mocked tfds), label fractions and
multi-process sharding. CPU only, offline."""

import collections
import hashlib
import importlib.util
import itertools
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.configs import default
from simclr_jax import config_validation, configs, data, train
from simclr_jax.data import augment
from simclr_jax.data import digits
from simclr_jax.data import sources
from tiny import eval_batches, open_data, train_batches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits.prepare(data_dir)
  return data_dir


def make_config(data_dir='', **overrides):
  config = default.get_config()
  config.data_dir = data_dir
  config.image_size = 16
  config.train.batch_size = 16
  config.evals.batch_size = 64
  config.shuffle_buffer = 64
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def dataset_info(config):
  return open_data(config).info


def take(iterator, count):
  return list(itertools.islice(iterator, count))


def assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def map_over_seeds(fn, count):
  """Runs fn(seed) for `count` seeds in one tf.data pass (fast)."""
  ds = tf.data.Dataset.range(count).map(
      lambda i: fn(tf.stack([i, tf.constant(7, tf.int64)])))
  return list(ds.batch(count).as_numpy_iterator())[0]


# ---------------------------------------------------------------------------
# Augmentations.


def augment_params(image_size, **overrides):
  """config.augment's defaults (plus overrides), filled for a size."""
  config = default.get_config()
  config.image_size = image_size
  config.augment.update(overrides)
  configs.fill_auto_fields(config)
  return augment.AugmentParams.from_config(config.augment)


def test_crop_windows_respect_area_and_aspect_bounds():
  cfg = augment_params(224)
  height, width = 300, 400
  windows = map_over_seeds(
      lambda s: augment.sample_crop_window(s, tf.constant([height, width]),
                                           cfg), 2000)
  y, x, h, w = windows.T
  assert (y >= 0).all() and (x >= 0).all()
  assert (y + h <= height).all() and (x + w <= width).all()
  area = h * w / (height * width)
  assert area.min() >= cfg.crop_area_min - 0.01
  assert area.max() <= cfg.crop_area_max
  aspect = w / h
  # Integer rounding of the box moves the aspect a little.
  assert aspect.min() >= cfg.crop_aspect_min * 0.97
  assert aspect.max() <= cfg.crop_aspect_max * 1.03
  # Areas spread over the whole range, not stuck at the fallback (all).
  assert (area < 0.2).mean() > 0.05 and (area < 0.999).mean() > 0.9


def test_decision_rates_match_config():
  cfg = augment_params(224)
  decisions = map_over_seeds(lambda s: augment.sample_decisions(s, cfg), 4000)
  assert decisions['flip'].mean() == pytest.approx(cfg.flip_prob, abs=0.03)
  assert decisions['jitter'].mean() == pytest.approx(cfg.color_jitter_prob,
                                                     abs=0.03)
  assert decisions['drop'].mean() == pytest.approx(cfg.color_drop_prob,
                                                   abs=0.03)
  assert decisions['blur'].mean() == pytest.approx(cfg.blur_prob, abs=0.03)
  # Strength 1.0 at 224: factors in [0.2, 1.8], hue delta in [-0.2, 0.2].
  for key in ('brightness', 'contrast', 'saturation'):
    assert decisions[key].min() >= 0.2 and decisions[key].max() <= 1.8
  assert np.abs(decisions['hue']).max() <= 0.2
  sigma = decisions['sigma']
  assert sigma.min() >= cfg.blur_sigma_min and sigma.max() <= cfg.blur_sigma_max
  orders = {tuple(o) for o in decisions['order']}
  assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
  assert len(orders) == 24  # Every order of the four ops occurs.


def test_small_images_get_weaker_colour_and_no_blur():
  cfg = augment_params(32)
  decisions = map_over_seeds(lambda s: augment.sample_decisions(s, cfg), 500)
  assert not decisions['blur'].any()
  assert decisions['brightness'].min() >= 0.6
  assert decisions['brightness'].max() <= 1.4
  assert np.abs(decisions['hue']).max() <= 0.1


def _identity_crop_config(**probs):
  """Crop = whole image, no flip/colour/blur unless turned on."""
  settings = dict(crop_area_min=1.0, crop_aspect_min=1.0, crop_aspect_max=1.0,
                  flip_prob=0.0, color_jitter_prob=0.0, color_drop_prob=0.0,
                  blur_prob=0.0, use_blur=True, color_jitter_strength=1.0)
  return augment_params(224, **dict(settings, **probs))


def test_blur_changes_the_image_only_when_applied():
  cfg = _identity_crop_config(blur_prob=0.5)
  image = tf.constant(np.random.default_rng(0).integers(
      0, 256, (40, 40, 3), dtype=np.uint8))
  original = augment.to_float_rgb(image).numpy()
  seeds = [tf.constant([i, 3], tf.int64) for i in range(24)]
  blurred = [bool(augment.sample_decisions(s, cfg)['blur']) for s in seeds]
  assert 0 < sum(blurred) < len(blurred)
  for seed, applied in zip(seeds, blurred):
    view = augment.augment_pretrain(image, seed, cfg, 40).numpy()
    assert 0.0 <= view.min() and view.max() <= 1.0
    assert (np.abs(view - original).max() > 1e-3) == applied


def test_gaussian_blur_keeps_constant_images_and_smooths_noise():
  flat = tf.fill([20, 20, 3], 0.3)
  np.testing.assert_allclose(augment.gaussian_blur(flat, 1.5, 5), flat,
                             atol=1e-6)
  noise = tf.random.stateless_uniform([20, 20, 3], [1, 2])
  blurred = augment.gaussian_blur(noise, 1.5, 5)
  assert float(tf.math.reduce_std(blurred)) < float(tf.math.reduce_std(noise))


def test_colour_drop_makes_grayscale_and_jitter_changes_colours():
  image = tf.constant(np.random.default_rng(1).integers(
      0, 256, (16, 16, 3), dtype=np.uint8))
  dropped = augment.augment_pretrain(
      image, tf.constant([0, 1]), _identity_crop_config(color_drop_prob=1.0),
      16).numpy()
  np.testing.assert_allclose(dropped[..., 0], dropped[..., 1], atol=1e-6)
  np.testing.assert_allclose(dropped[..., 0], dropped[..., 2], atol=1e-6)
  jittered = augment.augment_pretrain(
      image, tf.constant([0, 1]),
      _identity_crop_config(color_jitter_prob=1.0, blur_prob=0.0), 16)
  assert np.abs(jittered - augment.to_float_rgb(image)).max() > 1e-2


@pytest.mark.parametrize('encoding', ['jpeg', 'png', 'pixels', 'gray'])
def test_every_input_form_gives_rgb_views_in_unit_range(encoding):
  rng = np.random.default_rng(2)
  pixels = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
  image = {
      'jpeg': lambda: tf.io.encode_jpeg(pixels),
      'png': lambda: tf.io.encode_png(pixels),
      'pixels': lambda: tf.constant(pixels),
      'gray': lambda: tf.constant(pixels[..., :1]),
  }[encoding]()
  seed = tf.constant([4, 2])
  for size in (16, 48):
    cfg = augment_params(size)
    for view in (augment.augment_pretrain(image, seed, cfg, size),
                 augment.augment_finetune(image, seed, cfg, size),
                 augment.preprocess_eval(image, cfg, size)):
      assert view.shape == (size, size, 3) and view.dtype == tf.float32
      assert 0.0 <= float(tf.reduce_min(view))
      assert float(tf.reduce_max(view)) <= 1.0


def test_eval_centre_crop_matches_the_official_window():
  # Official center_crop: side = rint(0.875 * short side), centred.
  window = augment.center_crop_window(tf.constant([375, 500]), 0.875).numpy()
  np.testing.assert_array_equal(window, [24, 86, 328, 328])


def test_eval_view_is_the_official_crop_resize_and_clip():
  """Official preprocess_for_eval at 224: centre crop 0.875, bicubic resize,
  clip to [0, 1], no mean/std normalisation."""
  pixels = np.random.default_rng(3).integers(0, 256, (375, 500, 3), np.uint8)
  view = augment.preprocess_eval(tf.constant(pixels), augment_params(224),
                                 224)
  crop = tf.image.crop_to_bounding_box(
      tf.image.convert_image_dtype(pixels, tf.float32), 24, 86, 328, 328)
  expected = tf.clip_by_value(
      tf.image.resize(crop, [224, 224], method='bicubic'), 0.0, 1.0)
  np.testing.assert_allclose(view, expected, atol=1e-6)


def test_colour_strength_zero_turns_jitter_and_drop_off():
  """Official: color_jitter_strength 0 skips the whole colour distortion."""
  from simclr_jax.data import device_augment  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  for strength, applied in ((0.0, False), (0.5, True)):
    cfg = augment_params(224, color_jitter_prob=1.0, color_drop_prob=1.0,
                         color_jitter_strength=strength)
    host = map_over_seeds(lambda s: augment.sample_decisions(s, cfg), 50)
    device = device_augment.sample_params(jax.random.key(0), 50, cfg)
    for decisions in (host, device):
      assert np.all(np.asarray(decisions['jitter']) == applied)
      assert np.all(np.asarray(decisions['drop']) == applied)


def test_views_are_clipped_only_after_the_colour_ops():
  """Official order: bicubic resize (overshooting [0, 1]), colour ops, clip."""
  pixels = np.random.default_rng(4).integers(0, 256, (8, 8, 3), np.uint8)
  resized = tf.image.resize(tf.image.convert_image_dtype(pixels, tf.float32),
                            [24, 24], method='bicubic')
  assert float(tf.reduce_min(resized)) < 0 < 1 < float(tf.reduce_max(resized))
  view = augment.augment_pretrain(tf.constant(pixels), tf.constant([0, 1]),
                                  _identity_crop_config(color_drop_prob=1.0),
                                  24)
  expected = tf.clip_by_value(augment.to_grayscale(resized), 0.0, 1.0)
  np.testing.assert_allclose(view, expected, atol=1e-6)
  clipped_first = augment.to_grayscale(tf.clip_by_value(resized, 0.0, 1.0))
  assert np.abs(view - clipped_first).max() > 1e-3
  finetune = augment.augment_finetune(tf.constant(pixels), tf.constant([0, 1]),
                                      _identity_crop_config(), 24)
  np.testing.assert_allclose(finetune, tf.clip_by_value(resized, 0.0, 1.0),
                             atol=1e-6)


# ---------------------------------------------------------------------------
# Digits, determinism, resumption.


def test_digits_builder(digits_dir):
  builder = tfds.builder(digits.TFDS_NAME, data_dir=digits_dir)
  assert builder.info.splits['train'].num_examples == 1257
  assert builder.info.splits['test'].num_examples == 540
  assert builder.info.features['label'].num_classes == 10
  assert builder.info.features['image'].shape == (8, 8, 1)
  info = dataset_info(make_config(digits_dir))
  assert info == data.DatasetInfo(
      num_classes=10, num_train_examples=1257, num_train_labelled=1257,
      num_eval_examples=540, image_shape=(16, 16, 3),
      eval_source='test')
  labels = np.concatenate([b['labels'] for b in eval_batches(
      make_config(digits_dir), process_index=0, process_count=1)])
  assert set(labels) == set(range(10))


def test_pretrain_batches_are_deterministic_resumable_and_two_view(digits_dir):
  config = make_config(digits_dir)
  kwargs = dict(process_index=0, process_count=1)
  first = take(train_batches(config, **kwargs), 5)
  batch = first[0]
  assert batch['images'].shape == (16, 2, 16, 16, 3)
  assert batch['images'].dtype == np.float32
  assert batch['labels'].dtype == np.int32
  assert batch['label_mask'].dtype == np.float32
  assert 0.0 <= batch['images'].min() and batch['images'].max() <= 1.0
  np.testing.assert_array_equal(batch['label_mask'], 1.0)
  # The two views of an example differ.
  assert all(np.abs(x[0] - x[1]).max() > 1e-3 for x in batch['images'])
  assert_batches_equal(first, take(train_batches(config, **kwargs),
                                   5))
  assert_batches_equal(first[3:], take(train_batches(
      config, start_step=3, **kwargs), 2))
  other = next(train_batches(make_config(digits_dir, seed=1),
                                        **kwargs))
  assert np.abs(other['images'] - batch['images']).max() > 1e-3


def test_finetune_resumes_exactly_across_epoch_boundaries(digits_dir):
  # 5% of digits is ~63 labelled examples: an epoch is under 4 batches.
  config = make_config(digits_dir, mode='finetune', label_fraction=0.05)
  kwargs = dict(process_index=0, process_count=1)
  first = take(train_batches(config, **kwargs), 10)
  assert first[0]['images'].shape == (16, 1, 16, 16, 3)
  np.testing.assert_array_equal(first[0]['label_mask'], 1.0)
  assert_batches_equal(first[6:], take(train_batches(
      config, start_step=6, **kwargs), 4))


def test_memory_shard_visits_every_example_once_per_epoch():
  shard = sources.MemoryShard(
      'pixels', np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1),
      np.zeros(10, np.int64), np.ones(10, np.float32), np.arange(10))
  stream = shard.train_examples(0, tf.constant([5, 0], tf.int64))
  seen = [int(ex['image'][0, 0, 0]) for _, ex in stream.take(30)]
  epochs = [seen[i:i + 10] for i in range(0, 30, 10)]
  assert all(sorted(e) == list(range(10)) for e in epochs)
  assert epochs[0] != epochs[1]  # Reshuffled each epoch.
  resumed = shard.train_examples(13, tf.constant([5, 0], tf.int64))
  positions, examples = zip(*resumed.take(5))
  assert [int(p) for p in positions] == list(range(13, 18))
  assert [int(ex['image'][0, 0, 0]) for ex in examples] == seen[13:18]


# ---------------------------------------------------------------------------
# Label fractions and sharding.


def test_label_fraction_is_class_balanced_and_deterministic():
  labels = np.repeat(np.arange(5), [100, 50, 20, 7, 3])
  labels = np.random.default_rng(0).permutation(np.append(labels, [-1] * 9))
  chosen = data.label_fraction_indices(labels, 0.1, seed=3)
  counts = collections.Counter(labels[chosen])
  assert counts == {0: 10, 1: 5, 2: 2, 3: 1, 4: 1}  # At least one per class.
  assert (np.diff(chosen) > 0).all()
  np.testing.assert_array_equal(
      chosen, data.label_fraction_indices(labels, 0.1, seed=3))
  assert set(chosen) != set(data.label_fraction_indices(labels, 0.1, seed=4))
  with pytest.raises(ValueError, match='label_fraction'):
    data.label_fraction_indices(labels, 0.0, seed=0)


def test_label_fraction_shards_are_disjoint_and_cover_the_subset(digits_dir):
  config = make_config(digits_dir, mode='finetune', label_fraction=0.1)
  train = sources.open_train(config)
  split_labels = train.split.labels
  subset = data.label_fraction_indices(split_labels, 0.1, seed=0)
  np.testing.assert_array_equal(np.flatnonzero(train.fraction_mask), subset)
  shards = [sources.shard_for_process(train.split, i, 2, labelled_only=True,
                            fraction_mask=train.fraction_mask)
            for i in range(2)]
  indices = [s.indices for s in shards]
  assert not set(indices[0]) & set(indices[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(indices)), subset)
  for shard in shards:
    np.testing.assert_array_equal(shard.labels, split_labels[shard.indices])
  # Pretraining keeps the whole split; the mask marks the same subset.
  pretrain = sources.shard_for_process(train.split, 0, 1,
                             fraction_mask=train.fraction_mask)
  assert pretrain.num_examples == 1257
  np.testing.assert_array_equal(
      pretrain.indices[pretrain.label_mask > 0], subset)
  info = dataset_info(config)
  assert info.num_train_labelled == len(subset)


def _image_digests(batches):
  digests = []
  for batch in batches:
    for image, mask in zip(batch['images'], batch['mask']):
      if mask:
        digests.append(hashlib.sha1(image.tobytes()).hexdigest())
  return sorted(digests)


def test_eval_shards_cover_the_split_exactly_once(digits_dir):
  config = make_config(digits_dir)
  config.evals.batch_size = 100
  single = list(eval_batches(config, process_index=0,
                                        process_count=1))
  assert len(single) == 6 and single[-1]['mask'].sum() == 40
  shards = [list(eval_batches(config, process_index=i,
                                         process_count=2)) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 6  # 270 each in batches of 50.
  assert all(b['images'].shape == (50, 1, 16, 16, 3) for b in shards[0])
  assert sum(b['mask'].sum() for s in shards for b in s) == 540
  assert _image_digests(single) == _image_digests(shards[0] + shards[1])
  three = [list(eval_batches(
      make_config(digits_dir, **{'evals.batch_size': 60}),
      process_index=i, process_count=3)) for i in range(3)]
  assert len({len(s) for s in three}) == 1
  assert sum(b['mask'].sum() for s in three for b in s) == 540


def test_train_shards_are_disjoint_per_process(digits_dir):
  config = make_config(digits_dir, **{'train.batch_size': 32})
  per_process = [next(train_batches(config, process_index=i,
                                               process_count=2))
                 for i in range(2)]
  assert per_process[0]['images'].shape == (16, 2, 16, 16, 3)
  train = sources.open_train(config)
  shards = [sources.shard_for_process(train.split, i, 2) for i in range(2)]
  assert not set(shards[0].indices) & set(shards[1].indices)
  assert sum(s.num_examples for s in shards) == 1257


def test_composite_split_shards_follow_the_global_order(digits_dir):
  config = make_config(digits_dir, train_split='train[100:]+test[:-40]')
  train = sources.open_train(config)
  assert train.split.num_examples == 1157 + 500
  whole = sources.shard_for_process(train.split, 0, 1)
  shards = [sources.shard_for_process(train.split, i, 3) for i in range(3)]
  np.testing.assert_array_equal(np.concatenate([s.indices for s in shards]),
                                np.arange(1657))
  np.testing.assert_array_equal(np.concatenate([s.images for s in shards]),
                                whole.images)
  np.testing.assert_array_equal(np.concatenate([s.labels for s in shards]),
                                train.split.labels)


# ---------------------------------------------------------------------------
# Folders.


def _write_image(path, rng, fmt, size=(20, 14)):
  pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, format=fmt)


def test_folder_with_classes_skips_corrupt_files(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(6):
    _write_image(str(tmp_path / 'cat' / f'{i}.png'), rng, 'PNG')
    _write_image(str(tmp_path / 'dog' / 'nested' / f'{i}.JPG'), rng, 'JPEG')
  (tmp_path / 'dog' / 'broken.jpg').write_bytes(b'not an image at all')
  (tmp_path / 'cat' / 'notes.txt').write_text('ignored')
  config = make_config(dataset=f'folder:{tmp_path}', image_size=24,
                       **{'train.batch_size': 8, 'evals.batch_size': 8})
  info = dataset_info(config)
  assert info.num_classes == 2 and info.num_train_examples == 13
  batch = next(train_batches(config, process_index=0,
                                        process_count=1))
  assert batch['images'].shape == (8, 2, 24, 24, 3)
  train = sources.open_train(config)
  shard = sources.shard_for_process(train.split, 0, 1)
  assert shard.num_examples == 12  # The corrupt file is skipped.
  assert sorted(collections.Counter(shard.labels).items()) == [(0, 6), (1, 6)]
  finetune = make_config(dataset=f'folder:{tmp_path}', mode='finetune',
                         image_size=24, **{'train.batch_size': 8})
  assert next(train_batches(
      finetune, process_index=0, process_count=1))['images'].shape == (
          8, 1, 24, 24, 3)
  evaluated = list(eval_batches(config, process_index=0,
                                           process_count=1))
  assert sum(b['mask'].sum() for b in evaluated) == 12


def test_unlabelled_folder_pretrains_with_zero_label_mask(tmp_path):
  rng = np.random.default_rng(1)
  for i in range(5):
    _write_image(str(tmp_path / f'{i}.jpeg'), rng, 'JPEG', size=(40, 30))
  config = make_config(dataset=f'folder:{tmp_path}',
                       **{'train.batch_size': 4})
  info = dataset_info(config)
  assert info.num_classes == 0 and info.num_train_labelled == 0
  batch = next(train_batches(config, process_index=0,
                                        process_count=1))
  assert batch['images'].shape == (4, 2, 16, 16, 3)
  np.testing.assert_array_equal(batch['label_mask'], 0.0)
  np.testing.assert_array_equal(batch['labels'], 0)
  # The trainer turns the online probe off instead of failing, and says that
  # evaluation would read the training images.
  assert 'training images' in info.eval_source
  exp = train.build_experiment(make_config(dataset=f'folder:{tmp_path}',
                                           **{'train.batch_size': 8}))
  assert not exp.task.logits_key and not exp.model.linear_probe
  with pytest.raises(ValueError, match='needs labels'):
    train_batches(make_config(dataset=f'folder:{tmp_path}',
                                         mode='finetune'),
                             process_index=0, process_count=1)


def test_more_processes_than_eval_images(tmp_path):
  rng = np.random.default_rng(3)
  for i in range(3):
    _write_image(str(tmp_path / f'{i}.png'), rng, 'PNG')
  config = make_config(dataset=f'folder:{tmp_path}',
                       **{'evals.batch_size': 8})
  shards = [list(eval_batches(config, process_index=i,
                                         process_count=4)) for i in range(4)]
  assert [len(s) for s in shards] == [1, 1, 1, 1]
  assert sum(b['mask'].sum() for s in shards for b in s) == 3


def test_folder_with_split_subfolders(tmp_path):
  rng = np.random.default_rng(2)
  for split, count in (('train', 4), ('test', 2)):
    for name in ('a', 'b'):
      for i in range(count):
        _write_image(str(tmp_path / split / name / f'{i}.png'), rng, 'PNG')
  config = make_config(dataset=f'folder:{tmp_path}')
  info = dataset_info(config)
  assert (info.num_train_examples, info.num_eval_examples) == (8, 4)
  with pytest.raises(ValueError, match='none named'):
    dataset_info(make_config(dataset=f'folder:{tmp_path}',
                                      eval_split='validation'))


# ---------------------------------------------------------------------------
# tfds datasets under mock_data (no real data, never the network).


def _write_metadata(data_dir, name, split_sizes):
  """dataset_info.json with split sizes, so mock_data knows the splits."""
  builder = tfds.builder(name, data_dir=data_dir)
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir, dataset_name=builder.name, split='train',
      filetype_suffix='tfrecord')
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0,
                          filename_template=template.replace(split=split))
      for split, size in split_sizes.items()]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


def test_cifar10_under_mock_data(tmp_path):
  # mock_data yields num_examples for any split, so the metadata agrees.
  _write_metadata(str(tmp_path), 'cifar10', {'train': 24, 'test': 24})
  config = make_config(str(tmp_path), dataset='cifar10', image_size=32,
                       **{'train.batch_size': 8, 'evals.batch_size': 4})
  with tfds.testing.mock_data(num_examples=24, data_dir=str(tmp_path)):
    info = dataset_info(config)
    assert (info.num_classes, info.num_train_examples) == (10, 24)
    batch = next(train_batches(config, process_index=0,
                                          process_count=1))
    assert batch['images'].shape == (8, 2, 32, 32, 3)
    assert 0 <= batch['labels'].min() and batch['labels'].max() < 10
    evaluated = list(eval_batches(config, process_index=0,
                                             process_count=1))
    assert len(evaluated) == 6 and evaluated[0]['images'].shape == (
        4, 1, 32, 32, 3)


def _mock_imagenet_as_dataset(num_examples):
  """ImageNet-like records: JPEG bytes of assorted sizes, labels, names."""
  rng = np.random.default_rng(0)
  images = [tf.io.encode_jpeg(rng.integers(
      0, 256, (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3),
      dtype=np.uint8)).numpy() for _ in range(num_examples)]
  labels = rng.integers(0, 1000, num_examples)
  names = [f'n{i:08d}_{i}.JPEG'.encode() for i in range(num_examples)]

  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, split, decoders, read_config, kwargs
    return tf.data.Dataset.from_tensor_slices(
        {'image': images, 'label': labels, 'file_name': names})
  return as_dataset


def test_imagenet_under_mock_data_uses_fused_jpeg_crops(tmp_path):
  for name in ('imagenet2012', 'imagenet2012_subset/1pct'):
    _write_metadata(str(tmp_path), name, {'train': 12, 'validation': 6})
  config = make_config(str(tmp_path), dataset='imagenet2012',
                       train_split='train', eval_split='validation',
                       image_size=48,
                       **{'train.batch_size': 4, 'evals.batch_size': 4})
  mock = tfds.testing.mock_data(
      num_examples=12, data_dir=str(tmp_path),
      as_dataset_fn=_mock_imagenet_as_dataset(12))
  with mock:
    train = sources.open_train(config)
    shard = sources.shard_for_process(train.split, 0, 1, shuffle_buffer=4)
    assert isinstance(shard, sources.StreamShard)  # Encoded, streamed.
    first = take(train_batches(config, process_index=0,
                                          process_count=1), 4)
    assert first[0]['images'].shape == (4, 2, 48, 48, 3)
    # Streamed data resumes exactly too (4 batches = 1.33 epochs).
    assert_batches_equal(first[2:], take(train_batches(
        config, start_step=2, process_index=0, process_count=1), 2))
    evaluated = list(eval_batches(config, process_index=0,
                                             process_count=1))
    assert len(evaluated) == 2
    assert sum(b['mask'].sum() for b in evaluated) == 6

    finetune = make_config(str(tmp_path), dataset='imagenet2012',
                           mode='finetune', label_fraction=0.01,
                           eval_split='validation')
    subset_train = sources.open_train(finetune)
    assert subset_train.subset.builder.info.full_name.startswith(
        'imagenet2012_subset/1pct')
    pretrain = make_config(str(tmp_path), dataset='imagenet2012',
                           label_fraction=0.01, image_size=48,
                           eval_split='validation', **{'train.batch_size': 4})
    batch = next(train_batches(pretrain, process_index=0,
                                          process_count=1))
    # Every mocked file name is in the mocked subset.
    np.testing.assert_array_equal(batch['label_mask'], 1.0)


# ---------------------------------------------------------------------------
# Errors: clear ValueErrors before any training.


def test_errors_name_the_problem(tmp_path, digits_dir):
  cases = [
      (make_config(digits_dir, dataset='no_such_dataset_xyz'), 'Unknown'),
      (make_config(digits_dir, train_split='nope'), 'nope'),
      (make_config(digits_dir, eval_split='valid'), 'valid'),
      (make_config(dataset=f'folder:{tmp_path}'), 'No images'),
      (make_config(dataset=f'folder:{tmp_path}/missing'), 'does not exist'),
      (make_config(str(tmp_path / 'empty'), dataset='mnist'), 'not prepared'),
  ]
  for config, message in cases:
    with pytest.raises(ValueError, match=message):
      dataset_info(config)
  # Field values are config validation's (the one place fields are checked).
  for config, message in (
      (make_config(digits_dir, image_size=0), 'image_size'),
      (make_config(digits_dir, label_fraction=1.5), 'label_fraction'),
      (make_config(digits_dir, **{'augment.crop_area_min': 0.0}),
       'crop_area')):
    assert message in ' '.join(config_validation.find_problems(config))
  with pytest.raises(ValueError, match='batch_size'):
    train_batches(
        make_config(digits_dir, **{'train.batch_size': 15}),
        process_index=0, process_count=2)
  with pytest.raises(ValueError, match='evals.batch_size'):
    eval_batches(
        make_config(digits_dir, **{'evals.batch_size': 5}),
        process_index=0, process_count=2)


# ---------------------------------------------------------------------------
# Benchmark script.


def test_benchmark_tiny_mode_writes_json(tmp_path):
  spec = importlib.util.spec_from_file_location(
      'input_pipeline_benchmark',
      os.path.join(REPO, 'benchmarks', 'input_pipeline.py'))
  benchmark = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(benchmark)
  out = tmp_path / 'bench.json'
  benchmark.main(['--tiny', f'--json_out={out}'])
  report = json.loads(out.read_text())
  assert report['cores'] >= 1
  assert {r['setting'] for r in report['results']} == {
      'jpeg_500x375_to_224', 'jpeg_500x375_to_224_colors_on_device',
      'uint8_32_to_32'}
  for result in report['results']:
    assert result['examples_per_s'] > 0
    assert result['examples_per_s_per_core'] > 0
