"""The on-device colour augmentation against the tf.data one it replaces:
the same pixels for the same decisions, the same statistics when sampled."""

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import PartitionSpec as P
from scipy import stats

from simclr_jax import configs, parallel, tasks
from simclr_jax.configs import default
from simclr_jax.data import augment, device_augment, iterators, sources

SIZE = 40  # Blur kernel 5: small, but every op is exercised.
NUM = 800


def _params(**overrides):
  cfg = default.get_config().augment
  cfg.color_jitter_strength = 1.0
  cfg.use_blur = True
  cfg.update(overrides)
  return augment.AugmentParams.from_config(cfg)


def _images(num, seed=0):
  """Blocky colour images: uniform patches of random colours, 8 px each."""
  coarse = np.random.default_rng(seed).uniform(size=(num, 5, 5, 3))
  return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.float32)


DECISION_DTYPES = {'flip': tf.bool, 'jitter': tf.bool, 'order': tf.int32,
                   'brightness': tf.float32, 'contrast': tf.float32,
                   'saturation': tf.float32, 'hue': tf.float32,
                   'drop': tf.bool, 'blur': tf.bool, 'sigma': tf.float32}


def _tf_views(images, p):
  """The tf.data colour part per image, with its own sampled decisions."""
  @tf.function
  def run(images):
    def one(args):
      image, index = args
      decisions = augment.sample_decisions(tf.stack([index, 0]), p)
      return augment.distort_colors(image, decisions, SIZE), decisions
    indices = tf.range(tf.shape(images)[0], dtype=tf.int64)
    return tf.map_fn(one, (images, indices),
                     fn_output_signature=(tf.float32, {
                         k: tf.TensorSpec(None, v) for k, v in DECISION_DTYPES.items()}))
  views, decisions = run(tf.constant(images))
  return views.numpy(), {k: v.numpy() for k, v in decisions.items()}


@pytest.fixture(scope='module')
def views():
  """(inputs, tf views, tf decisions, device views) for NUM images."""
  p = _params()
  images = _images(NUM)
  tf_out, decisions = _tf_views(images, p)
  augment_fn = jax.jit(lambda x, key: device_augment.device_color_augment(
      x, key, p, SIZE))
  device_out = np.asarray(augment_fn(images, jax.random.key(1)))
  return images, tf_out, decisions, device_out


def test_same_pixels_for_the_same_decisions(views):
  images, tf_out, decisions, _ = views
  params = {k: v for k, v in decisions.items() if k != 'flip'}
  device_out = np.asarray(jax.jit(
      lambda x, d: device_augment.apply_color_augment(x, d, SIZE))(
          images, params))
  np.testing.assert_allclose(device_out, tf_out, atol=2e-5)


def test_sampled_parameters_follow_the_host_distributions():
  p = _params()
  device = jax.device_get(device_augment.sample_params(
      jax.random.key(0), 20000, p))
  for name, (low, high) in augment.uniform_ranges(p).items():
    values = device[name]
    assert low <= values.min() and values.max() <= high, name
    assert stats.kstest(values, stats.uniform(low, high - low).cdf).pvalue > 1e-3
  for name, prob in (('jitter', p.color_jitter_prob),
                     ('drop', p.color_drop_prob), ('blur', p.blur_prob)):
    assert device[name].mean() == pytest.approx(prob, abs=0.015), name
  # Each op comes first equally often (a uniform random order).
  first = np.bincount(device['order'][:, 0], minlength=4) / 20000
  np.testing.assert_allclose(first, 0.25, atol=0.015)
  assert np.all(np.sort(device['order'], axis=1) == np.arange(4))
  assert not device_augment.sample_params(
      jax.random.key(0), 100, _params(use_blur=False))['blur'].any()


def _rate(mask):
  return float(np.mean(mask))


def test_output_statistics_match_tf_data(views):
  images, tf_out, _, device_out = views
  for name, summary in (('mean', lambda x: x.mean(axis=(1, 2, 3))),
                        ('std', lambda x: x.std(axis=(1, 2, 3))),
                        ('saturation', lambda x: np.asarray(
                            device_augment.rgb_to_hsv(x))[..., 1].mean(
                                axis=(1, 2)))):
    result = stats.ks_2samp(summary(tf_out), summary(device_out))
    assert result.pvalue > 1e-3, (name, result)
  # Grayscale outputs (colour drop) and untouched ones (no jitter, drop, blur).
  gray = lambda x: np.ptp(x, axis=-1).max(axis=(1, 2)) < 1e-6
  same = lambda x: np.abs(x - images).max(axis=(1, 2, 3)) < 1e-6
  p = _params()
  expect_same = ((1 - p.color_jitter_prob) * (1 - p.color_drop_prob) *
                 (1 - p.blur_prob))
  for rate, expected in ((gray, p.color_drop_prob), (same, expect_same)):
    assert _rate(rate(tf_out)) == pytest.approx(expected, abs=0.05)
    assert _rate(rate(device_out)) == pytest.approx(expected, abs=0.05)


def test_grayscale_and_blur_keep_range_and_shape():
  images = _images(4)
  out = device_augment.device_color_augment(
      images, jax.random.key(3),
      _params(color_jitter_prob=1.0, color_drop_prob=1.0, blur_prob=1.0), SIZE)
  out = np.asarray(out)
  assert out.shape == images.shape and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)


def test_views_get_their_own_randomness_and_repeat_for_the_same_key():
  crops = (np.stack([_images(6)] * 2, axis=1) * 255).astype(np.uint8)
  p = _params(color_jitter_prob=1.0)
  run = jax.jit(lambda x, key: device_augment.augment_views(x, key, p, SIZE))
  first, again = run(crops, jax.random.key(0)), run(crops, jax.random.key(0))
  first = np.asarray(first)
  assert first.shape == crops.shape and first.dtype == np.float32
  assert 0.0 <= first.min() and first.max() <= 1.0
  np.testing.assert_array_equal(first, np.asarray(again))
  # Same crop in both views, different colours.
  assert np.abs(first[:, 0] - first[:, 1]).max(axis=(1, 2, 3)).min() > 1e-3


def test_each_device_and_step_draws_its_own_key():
  mesh = parallel.make_mesh(jax.devices()[:2])

  def keys(step):
    return jax.random.key_data(tasks.device_augment_key(0, step[0]))[None]

  per_device = jax.jit(jax.shard_map(
      keys, mesh=mesh, in_specs=P(parallel.DATA_AXIS),
      out_specs=P(parallel.DATA_AXIS)))
  at_0 = np.asarray(per_device(np.zeros(2, np.int32)))
  at_1 = np.asarray(per_device(np.ones(2, np.int32)))
  assert not np.array_equal(at_0[0], at_0[1])
  assert not np.array_equal(at_0[0], at_1[0])
  np.testing.assert_array_equal(at_0, np.asarray(
      per_device(np.zeros(2, np.int32))))


def test_pipeline_ships_uint8_crops_when_colours_run_on_device():
  pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 24, 3), np.uint8)
  shard = sources.MemoryShard('pixels', pixels, np.zeros(16, np.int64),
                              np.ones(16, np.float32), np.arange(16))

  def first_batch(on_device=False, **augment_overrides):
    config = default.get_config()
    config.image_size = 20
    config.augment.update(augment_overrides)
    configs.fill_auto_fields(config)
    ds = iterators.train_dataset(
        shard, augment.pretrain_views(on_device),
        augment.AugmentParams.from_config(config.augment), config,
        process_index=0, start_step=0, batch_size=8)
    return next(iter(ds))['images'].numpy()

  shipped = first_batch(on_device=True)
  host = first_batch(color_jitter_prob=0.0, color_drop_prob=0.0,
                     use_blur=False)
  assert shipped.dtype == np.uint8 and shipped.shape == (8, 2, 20, 20, 3)
  # The same crops and flips as the host version, quantised to uint8.
  np.testing.assert_allclose(shipped / 255.0, host, atol=0.5 / 255 + 1e-6)
