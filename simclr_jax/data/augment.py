"""SimCLR's image augmentations as stateless TF ops.

Every random choice is drawn from `tf.random.stateless_*` with an explicit
seed, so an augmented view is a pure function of (image, seed). The pipeline
derives that seed from (config.seed, position in the stream, view), which is
what makes resuming a run bit-exact and lets tests look at the sampled
decisions directly.

Images enter as uint8/float tensors [h, w, c] (c = 1 or 3) or as a scalar
string of encoded bytes; JPEG bytes are cropped while decoding, so the full
image is never decoded. Outputs are float32 [size, size, 3] in [0, 1] with no
mean/std normalisation (the model normalises, as in the official code).
"""

import dataclasses
import functools
from typing import Callable

import tensorflow as tf


# Decisions drawn per view, in the order the seed is split.
_DECISIONS = ('flip', 'jitter', 'order', 'brightness', 'contrast',
              'saturation', 'hue', 'drop', 'blur', 'sigma')


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """config.augment, its 'auto' fields filled (configs.fill_auto_fields)."""
  crop_area_min: float
  crop_area_max: float
  crop_aspect_min: float
  crop_aspect_max: float
  crop_min_object_covered: float
  crop_max_attempts: int
  flip_prob: float
  color_jitter_prob: float
  color_jitter_strength: float
  color_drop_prob: float
  use_blur: bool
  blur_prob: float
  blur_sigma_min: float
  blur_sigma_max: float
  eval_crop_proportion: float

  @classmethod
  def from_config(cls, cfg) -> 'AugmentParams':
    values = {f.name: cfg[f.name] for f in dataclasses.fields(cls)}
    unfilled = [k for k, v in values.items() if v is None]
    if unfilled:
      raise ValueError(f'config.augment.{unfilled[0]} is still auto (None): '
                       'call configs.fill_auto_fields(config) first.')
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Views:
  """How a training image becomes the model's input: `count` views, view v
  being `fn(image, seed_v, params, image_size)`."""
  count: int
  fn: Callable


def to_float_rgb(image):
  """uint8/float [h, w, 1 or 3] -> float32 [h, w, 3] in [0, 1]."""
  image = tf.image.convert_image_dtype(image, tf.float32)
  if image.shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  return image


def _decode(image_bytes):
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _decode_and_crop(image, window_fn):
  """Crops the window window_fn([h, w]) -> [y, x, h, w] out of the image.

  Encoded JPEG bytes are decoded only inside the window (the header gives the
  shape); other encodings are decoded, then cropped.
  """
  def crop(decoded):
    window = window_fn(tf.shape(decoded)[:2])
    return tf.image.crop_to_bounding_box(decoded, *tf.unstack(window))

  if image.dtype != tf.string:
    return crop(image)

  def jpeg():
    window = window_fn(tf.io.extract_jpeg_shape(image)[:2])
    return tf.image.decode_and_crop_jpeg(image, window, channels=3)

  cropped = tf.cond(tf.io.is_jpeg(image), jpeg, lambda: crop(_decode(image)))
  cropped.set_shape([None, None, 3])
  return cropped


def _resize(image, image_size):
  """Bicubic resize unless already at size. Not clipped: bicubic overshoots
  [0, 1], and the official code clips only after the colour ops."""
  def resize():
    return tf.image.resize(image, [image_size, image_size], method='bicubic')
  shape = tf.shape(image)
  at_size = tf.logical_and(shape[0] == image_size, shape[1] == image_size)
  resized = tf.cond(at_size, lambda: image, resize)
  resized.set_shape([image_size, image_size, 3])
  return resized


def sample_crop_window(seed, image_shape, p: AugmentParams):
  """SimCLR's random crop box [y, x, h, w] for an image of shape [h, w]."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([tf.cast(image_shape[:2], tf.int32), [3]], axis=0),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=p.crop_min_object_covered,
      aspect_ratio_range=(p.crop_aspect_min, p.crop_aspect_max),
      area_range=(p.crop_area_min, p.crop_area_max),
      max_attempts=p.crop_max_attempts,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def random_crop_and_resize(image, seed, p: AugmentParams, image_size):
  """Inception-style crop (area/aspect from p), then resize to image_size
  (values may leave [0, 1] slightly: callers clip where the official code
  does)."""
  cropped = _decode_and_crop(
      image, lambda shape: sample_crop_window(seed, shape, p))
  return _resize(to_float_rgb(cropped), image_size)


def _crop_and_decision_seeds(seed):
  return tf.unstack(tf.random.experimental.stateless_split(seed, 2))


def sample_decisions(seed, p: AugmentParams):
  """The random choices of augment_pretrain(image, seed, ...) but the crop box.

  Returns a dict of scalar tensors (and `order`, a permutation of the four
  colour-jitter ops). Exposed so tests can check the rate of each choice.
  """
  _, decision_seed = _crop_and_decision_seeds(seed)
  seeds = dict(zip(_DECISIONS,
                   tf.unstack(tf.random.experimental.stateless_split(
                       decision_seed, len(_DECISIONS)))))

  def uniform(name, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seeds[name], low, high)

  def coin(name, prob):
    return uniform(name) < prob

  ranges = uniform_ranges(p)
  # Official: strength 0 turns the whole colour distortion off, drop included.
  colour = p.color_jitter_strength > 0
  return {
      'flip': coin('flip', p.flip_prob),
      'jitter': tf.logical_and(colour, coin('jitter', p.color_jitter_prob)),
      # argsort of iid uniforms is a uniformly random permutation.
      'order': tf.argsort(uniform('order', shape=(4,))),
      **{name: uniform(name, *ranges[name]) for name in ranges},
      'drop': tf.logical_and(colour, coin('drop', p.color_drop_prob)),
      'blur': tf.logical_and(p.use_blur, coin('blur', p.blur_prob)),
      'sigma': uniform('sigma', p.blur_sigma_min, p.blur_sigma_max),
  }


def uniform_ranges(p: AugmentParams):
  """(low, high) of each colour-jitter factor for strength s (SimCLR's).

  Shared with the on-device version (device_augment.py), so that both draw
  from the same distributions.
  """
  s = p.color_jitter_strength
  factor = (max(0.0, 1 - 0.8 * s), 1 + 0.8 * s)
  return {'brightness': factor, 'contrast': factor, 'saturation': factor,
          'hue': (-0.2 * s, 0.2 * s)}


def color_jitter(image, decisions):
  """Brightness, contrast, saturation and hue in the sampled order, clipped."""
  ops = [
      lambda x: x * decisions['brightness'],
      lambda x: tf.image.adjust_contrast(x, decisions['contrast']),
      lambda x: tf.image.adjust_saturation(x, decisions['saturation']),
      lambda x: tf.image.adjust_hue(x, decisions['hue']),
  ]
  for step in range(4):
    image = tf.switch_case(decisions['order'][step],
                           [functools.partial(op, image) for op in ops])
    image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def to_grayscale(image):
  return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def gaussian_blur(image, sigma, kernel_size):
  """Separable Gaussian blur with reflect padding (no dark borders)."""
  radius = kernel_size // 2
  if radius == 0:
    return image
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
  kernel /= tf.reduce_sum(kernel)
  channels = image.shape[-1]
  vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  horizontal = tf.reshape(vertical, [1, -1, channels, 1])
  padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius],
                                [0, 0]], mode='REFLECT')
  blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], 'VALID')
  blurred = tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], 'VALID')
  return tf.clip_by_value(blurred[0], 0.0, 1.0)


def blur_kernel_size(image_size):
  """10% of the image side, made odd (as the official code)."""
  return (image_size // 10) // 2 * 2 + 1


def _flip(image, flip):
  return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def augment_pretrain(image, seed, p: AugmentParams, image_size, colors=True):
  """One SimCLR view: crop, flip, colour jitter, colour drop, blur.

  With colors=False the view stops after the flip and is returned as uint8
  [size, size, 3] (a quarter of the bytes to ship): the colour part then runs
  on the accelerator (device_augment.py, config.augment.on_device). The crop
  and flip are the same as with colors=True for the same seed.
  """
  crop_seed, _ = _crop_and_decision_seeds(seed)
  decisions = sample_decisions(seed, p)
  image = random_crop_and_resize(image, crop_seed, p, image_size)
  image = _flip(image, decisions['flip'])
  if colors:
    image = distort_colors(image, decisions, image_size)
  else:
    # The uint8 hand-off clips before the colour ops (the one place where
    # on-device augmentation differs from the official order).
    # Rounded (convert_image_dtype truncates): within half a level of the
    # float view.
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0),
                    tf.uint8)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def distort_colors(image, decisions, image_size):
  """The colour part of a view: jitter, colour drop, clip, blur, as decided
  (the official order: the resized crop is clipped only here)."""
  image = tf.cond(decisions['jitter'], lambda: color_jitter(image, decisions),
                  lambda: image)
  image = tf.cond(decisions['drop'], lambda: to_grayscale(image),
                  lambda: image)
  image = tf.clip_by_value(image, 0.0, 1.0)
  kernel_size = blur_kernel_size(image_size)
  return tf.cond(
      decisions['blur'],
      lambda: gaussian_blur(image, decisions['sigma'], kernel_size),
      lambda: image)


def augment_finetune(image, seed, p: AugmentParams, image_size):
  """Supervised training view: crop and flip only (as the official code)."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  image = random_crop_and_resize(image, crop_seed, p, image_size)
  flip = tf.random.stateless_uniform((), flip_seed) < p.flip_prob
  image = tf.clip_by_value(_flip(image, flip), 0.0, 1.0)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def center_crop_window(image_shape, proportion):
  """Centred square window [y, x, h, w], `proportion` of the short side."""
  height, width = tf.unstack(tf.cast(image_shape[:2], tf.int32))
  side = tf.cast(tf.math.rint(
      proportion * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side,
                   side])


def preprocess_eval(image, p: AugmentParams, image_size):
  """Deterministic eval view: centre crop (skipped for <= 32 px), resize."""
  if image_size <= 32:
    if image.dtype == tf.string:
      image = _decode(image)
    return tf.clip_by_value(_resize(to_float_rgb(image), image_size), 0.0, 1.0)
  proportion = p.eval_crop_proportion
  cropped = _decode_and_crop(
      image, lambda shape: center_crop_window(shape, proportion))
  return tf.clip_by_value(_resize(to_float_rgb(cropped), image_size), 0.0, 1.0)


def pretrain_views(colors_on_device: bool = False) -> Views:
  """SimCLR's two views; the colour part left to the device if asked."""
  return Views(2, functools.partial(augment_pretrain,
                                    colors=not colors_on_device))


# Supervised training (fine-tuning, linear evaluation, distillation).
FINETUNE_VIEWS = Views(1, augment_finetune)
