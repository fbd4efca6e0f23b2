"""SimCLR's colour distortion and blur on the accelerator, in jnp.

On the host, colour jitter (two RGB<->HSV round trips per view) and the blur
(23 taps at 224 px) cost more than decoding and cropping the JPEG (measured
in docs/benchmarks.md). With
config.augment.on_device they run inside the jitted train step instead
(`augment_views`), and the host ships uint8 crops. Each image draws its own parameters from the
same distributions as `augment.sample_decisions`, and the ops match their TF
counterparts in `augment.py` (`test_device_augment.py` checks both: pixel by
pixel for given parameters, statistically for sampled ones). The random
streams differ from the host version's, so switching between the two is not
bit-reproducible.
"""

import jax
import jax.numpy as jnp

from simclr_jax.data import augment

# The jitter ops in the numbering of augment.color_jitter's `order`.
OPS = ('brightness', 'contrast', 'saturation', 'hue')
# tf.image.rgb_to_grayscale's weights.
_GRAY = jnp.array([0.2989, 0.5870, 0.1140], jnp.float32)


def sample_params(rng, num: int, p: augment.AugmentParams) -> dict:
  """Per-image random choices, keyed as `augment.sample_decisions`' ones."""
  names = ('jitter', 'order', 'drop', 'blur', 'sigma',
           *augment.uniform_ranges(p))
  keys = dict(zip(names, jax.random.split(rng, len(names))))

  def uniform(name, low=0.0, high=1.0, shape=()):
    return jax.random.uniform(keys[name], (num,) + shape, jnp.float32, low,
                              high)

  params = {name: uniform(name, *bounds)
            for name, bounds in augment.uniform_ranges(p).items()}
  colour = p.color_jitter_strength > 0   # 0 turns jitter and drop off.
  params.update(
      jitter=(uniform('jitter') < p.color_jitter_prob) & colour,
      order=jnp.argsort(uniform('order', shape=(4,)), axis=-1),
      drop=(uniform('drop') < p.color_drop_prob) & colour,
      blur=(uniform('blur') < p.blur_prob) & p.use_blur,
      sigma=uniform('sigma', p.blur_sigma_min, p.blur_sigma_max))
  return params


def rgb_to_hsv(rgb):
  """[..., 3] RGB in [0, 1] -> HSV with hue in [0, 1), as tf.image.rgb_to_hsv."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = jnp.max(rgb, axis=-1)
  chroma = value - jnp.min(rgb, axis=-1)
  safe = jnp.where(chroma > 0, chroma, 1.0)
  hue = jnp.where(value == r, (g - b) / safe,
                  jnp.where(value == g, 2.0 + (b - r) / safe,
                            4.0 + (r - g) / safe))
  hue = jnp.where(chroma > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
  saturation = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0),
                         0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv):
  """Inverse of rgb_to_hsv (the closed form: f(n) = v - v s clip(min(k, 4 - k)))."""
  h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
  k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + 6.0 * h, 6.0)
  return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _per_image(x):
  return x[:, None, None, None]


def adjust_contrast(images, factor):
  mean = jnp.mean(images, axis=(1, 2), keepdims=True)
  return (images - mean) * _per_image(factor) + mean


def adjust_saturation(images, factor):
  hsv = rgb_to_hsv(images)
  saturation = jnp.clip(hsv[..., 1:2] * _per_image(factor), 0.0, 1.0)
  return hsv_to_rgb(jnp.concatenate([hsv[..., :1], saturation, hsv[..., 2:]],
                                    axis=-1))


def adjust_hue(images, delta):
  hsv = rgb_to_hsv(images)
  hue = jnp.mod(hsv[..., :1] + _per_image(delta), 1.0)
  return hsv_to_rgb(jnp.concatenate([hue, hsv[..., 1:]], axis=-1))


def _adjust(images, brightness, contrast, saturation, hue):
  """Hue, saturation, contrast, brightness in one pass, then clipped."""
  hsv = rgb_to_hsv(images)
  images = hsv_to_rgb(jnp.concatenate([
      jnp.mod(hsv[..., :1] + _per_image(hue), 1.0),
      jnp.clip(hsv[..., 1:2] * _per_image(saturation), 0.0, 1.0),
      hsv[..., 2:]], axis=-1))
  images = adjust_contrast(images, contrast) * _per_image(brightness)
  return jnp.clip(images, 0.0, 1.0)


def color_jitter(images, params):
  """The four adjustments in each image's own order, clipped after each.

  Position k applies, to each image, the op that image draws k-th. Written as
  one combined op whose other three parameters are identities (factor 1,
  shift 0), each position costs one HSV round trip and one mean instead of
  all four ops: 4 passes over the batch instead of 16.
  """
  identity = {'brightness': 1.0, 'contrast': 1.0, 'saturation': 1.0,
              'hue': 0.0}
  for position in range(4):
    chosen = params['order'][:, position]
    images = _adjust(images, **{
        name: jnp.where(chosen == op, params[name], identity[name])
        for op, name in enumerate(OPS)})
  return images


def to_grayscale(images):
  gray = jnp.tensordot(images, _GRAY, axes=[[-1], [0]])[..., None]
  return jnp.broadcast_to(gray, images.shape)


def gaussian_blur(images, sigma, kernel_size: int):
  """Separable Gaussian blur, one sigma per image, reflect padding.

  A sum of shifted slices, which XLA fuses into one pass per direction (a
  grouped convolution with one group per image and channel measured 10x
  slower on the CPU).
  """
  radius = kernel_size // 2
  if radius == 0:
    return images
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-offsets ** 2 / (2.0 * sigma[:, None] ** 2))
  kernel /= jnp.sum(kernel, axis=1, keepdims=True)  # [n, kernel_size]
  height, width = images.shape[1:3]
  padded = jnp.pad(images, [(0, 0), (radius, radius), (radius, radius),
                            (0, 0)], mode='reflect')
  rows = sum(_per_image(kernel[:, i]) * padded[:, i:i + height]
             for i in range(kernel_size))
  blurred = sum(_per_image(kernel[:, i]) * rows[:, :, i:i + width]
                for i in range(kernel_size))
  return jnp.clip(blurred, 0.0, 1.0)


def apply_color_augment(images, params, image_size: int, use_blur: bool = True):
  """Jitter, colour drop and blur of [n, h, w, 3] images with given params."""
  images = images.astype(jnp.float32)
  images = jnp.where(_per_image(params['jitter']),
                     color_jitter(images, params), images)
  images = jnp.where(_per_image(params['drop']), to_grayscale(images), images)
  if use_blur:
    blurred = gaussian_blur(images, params['sigma'],
                            augment.blur_kernel_size(image_size))
    images = jnp.where(_per_image(params['blur']), blurred, images)
  return images


def device_color_augment(images, rng, p: augment.AugmentParams,
                         image_size: int):
  """SimCLR colour distortion and blur of [n, h, w, 3] images in [0, 1].

  A pure function of (images, rng): use a different rng per view and per step,
  e.g. `jax.random.fold_in(jax.random.fold_in(key, step), view)`.
  """
  params = sample_params(rng, images.shape[0], p)
  return apply_color_augment(images, params, image_size, use_blur=p.use_blur)


def augment_views(images, rng, p: augment.AugmentParams, image_size: int):
  """uint8 [b, views, h, w, 3] crops -> float32 SimCLR views in [0, 1].

  What the train step runs with config.augment.on_device: each view gets its
  own rng (folded with the view index), each image its own parameters.
  """
  images = images.astype(jnp.float32) / 255.0
  return jnp.stack([
      device_color_augment(images[:, view], jax.random.fold_in(rng, view),
                           p, image_size)
      for view in range(images.shape[1])], axis=1)
