"""ResNet v1 encoder as in SimCLR(v2), with selective kernels and SE.

Layer choices follow SimCLR's official TF2 code so that published numbers
(parameter counts, accuracies) are comparable: stride in the 3x3 conv of the
bottleneck, convs without bias and with "fixed" (input-size independent)
padding, BN momentum 0.9 / epsilon 1e-5, zero-initialised last BN gamma of each
residual branch. Selective kernels (SK) switch on the ResNet-D stem and
shortcut, as SimCLRv2 does.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.models import conv as conv_lib

Dtype = Any
ModuleDef = Callable[..., nn.Module]

# Blocks per group; 18/34 use basic blocks, the rest bottlenecks.
BLOCKS_PER_GROUP = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
GROUP_FILTERS = (64, 128, 256, 512)
GROUP_STRIDES = (1, 2, 2, 2)
SK_MIN_DIM = 32

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# The official code uses tf.keras.initializers.VarianceScaling() with its
# defaults: scale 1.0, fan_in, truncated normal (flax applies the same
# truncation correction to the stddev as TF does).
conv_kernel_init = nn.initializers.variance_scaling(
    1.0, 'fan_in', 'truncated_normal')


def scaled(channels: int, width_multiplier: float) -> int:
  """Channel count of a layer whose 1x-width count is `channels`."""
  return max(1, int(round(channels * width_multiplier)))


def uses_bottleneck(depth: int) -> bool:
  return depth >= 50


def output_dim(depth: int, width_multiplier: float) -> int:
  """Width of the pooled representation h (2048w for ResNet-50, 512w R-18)."""
  expansion = 4 if uses_bottleneck(depth) else 1
  return expansion * scaled(GROUP_FILTERS[-1], width_multiplier)


def fixed_padding_conv(features: int, kernel_size: int, strides: int = 1, *,
                       use_bias: bool = False, dtype: Dtype = jnp.float32,
                       conv_impl: str = 'xla',
                       name: str | None = None) -> nn.Conv:
  """Bias-free conv with TF "fixed" padding (official conv2d_fixed_padding).

  Padding depends only on the kernel size, so a strided conv sees the same
  pixels whatever the input size; SAME would shift the window for even sizes.
  For stride 1 (odd kernels) this is exactly SAME padding. `conv_impl`
  'matmul' computes it as a matrix product (conv.py): same parameters.
  """
  pad_total = kernel_size - 1
  pad = (pad_total // 2, pad_total - pad_total // 2)
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides),
      padding=(pad, pad), use_bias=use_bias, kernel_init=conv_kernel_init,
      dtype=dtype, param_dtype=jnp.float32, name=name,
      conv_general_dilated=(conv_lib.matmul_conv if conv_impl == 'matmul'
                            else None))


class SelectiveKernel(nn.Module):
  """SK conv (Li et al. 2019, as in SimCLRv2): attention over two 3x3 paths.

  One conv computes both paths at once (2x the channels); a squeezed global
  descriptor of their sum decides, per channel, how to mix them.
  """
  features: int
  strides: int
  sk_ratio: float
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    x = self.conv(2 * self.features, 3, self.strides, name='conv')(x)
    x = nn.relu(self.norm(name='bn')(x))
    paths = jnp.stack(jnp.split(x, 2, axis=-1), axis=0)  # [2, N, H, W, C]
    pooled = jnp.mean(paths.sum(axis=0), axis=(1, 2), keepdims=True)
    mid_dim = max(int(self.features * self.sk_ratio), SK_MIN_DIM)
    mix = self.conv(mid_dim, 1, name='reduce_conv')(pooled)
    mix = nn.relu(self.norm(name='reduce_bn')(mix))
    mix = self.conv(2 * self.features, 1, name='expand_conv')(mix)
    mix = jnp.stack(jnp.split(mix, 2, axis=-1), axis=0)  # [2, N, 1, 1, C]
    # Softmax in float32: cheap (pooled tensors) and safer under bfloat16.
    mix = jax.nn.softmax(mix.astype(jnp.float32), axis=0).astype(x.dtype)
    return (paths * mix).sum(axis=0)


class SqueezeExcite(nn.Module):
  """Channel gating (Hu et al. 2018) applied to a residual branch."""
  reduced_features: int
  conv: ModuleDef

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(self.conv, kernel_size=1, use_bias=True)
    gate = jnp.mean(x, axis=(1, 2), keepdims=True)
    gate = nn.relu(conv(self.reduced_features, name='reduce')(gate))
    gate = nn.sigmoid(conv(x.shape[-1], name='expand')(gate))
    return x * gate


class Shortcut(nn.Module):
  """Projection shortcut; ResNet-D averages before a stride-1 1x1 conv.

  ResNet-D avoids the plain strided 1x1 conv, which drops 3/4 of the pixels.
  As in the official code, ResNet-D pools at stride 1 too (2x2 SAME average,
  padding not counted), so the first block of block_group1 smooths as well.
  """
  features: int
  strides: int
  resnet_d: bool
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    if self.resnet_d:
      if self.strides > 1:
        # Official: 2x2 "fixed padding" (zeros at the end, counted in the
        # mean), then a VALID pool; the output size is ceil(n / 2), that of
        # the strided 3x3 conv of the residual branch.
        x = nn.avg_pool(x, (2, 2), (self.strides, self.strides),
                        padding=((0, 1), (0, 1)))
      else:
        x = nn.avg_pool(x, (2, 2), (1, 1), padding='SAME',
                        count_include_pad=False)
      x = self.conv(self.features, 1, 1, name='conv')(x)
    else:
      x = self.conv(self.features, 1, self.strides, name='conv')(x)
    return self.norm(name='bn')(x)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, or SK) -> 1x1 (4x filters), plus shortcut."""
  filters: int
  strides: int
  use_projection: bool
  sk_ratio: float
  se_ratio: float
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    out_features = 4 * self.filters
    shortcut = x
    if self.use_projection:
      shortcut = Shortcut(out_features, self.strides, self.sk_ratio > 0,
                          self.conv, self.norm, name='shortcut')(x)

    y = self.conv(self.filters, 1, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    if self.sk_ratio > 0:
      y = SelectiveKernel(self.filters, self.strides, self.sk_ratio,
                          self.conv, self.norm, name='sk')(y)
    else:
      y = self.conv(self.filters, 3, self.strides, name='conv2')(y)
      y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(out_features, 1, name='conv3')(y)
    # Zero gamma: a fresh block is its shortcut, which eases early training.
    y = self.norm(scale_init=nn.initializers.zeros, name='bn3')(y)
    if self.se_ratio > 0:
      reduced = max(1, int(self.filters * self.se_ratio))
      y = SqueezeExcite(reduced, self.conv, name='se')(y)
    return nn.relu(y + shortcut)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34), as the official ResidualBlock: selective
  kernels never replace a conv here; `sk_ratio` > 0 only makes the projection
  shortcut ResNet-D."""
  filters: int
  strides: int
  use_projection: bool
  sk_ratio: float
  se_ratio: float
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    shortcut = x
    if self.use_projection:
      shortcut = Shortcut(self.filters, self.strides, self.sk_ratio > 0,
                          self.conv, self.norm, name='shortcut')(x)

    y = self.conv(self.filters, 3, self.strides, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, 3, name='conv2')(y)
    y = self.norm(scale_init=nn.initializers.zeros, name='bn2')(y)
    if self.se_ratio > 0:
      reduced = max(1, int(self.filters * self.se_ratio))
      y = SqueezeExcite(reduced, self.conv, name='se')(y)
    return nn.relu(y + shortcut)


class Stem(nn.Module):
  """Input stem: ImageNet (7x7/2 + max-pool), ResNet-D (3 x 3x3), or CIFAR.

  The CIFAR stem keeps full resolution (3x3/1, no pooling) because 32x32
  images would otherwise be 8x8 before the first block group.
  """
  width_multiplier: float
  resnet_d: bool
  cifar_stem: bool
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    width = self.width_multiplier
    if self.cifar_stem:
      x = self.conv(scaled(64, width), 3, 1, name='conv')(x)
      return nn.relu(self.norm(name='bn')(x))
    if self.resnet_d:
      layers = ((scaled(32, width), 2), (scaled(32, width), 1),
                (scaled(64, width), 1))
      for i, (features, strides) in enumerate(layers, start=1):
        x = self.conv(features, 3, strides, name=f'conv{i}')(x)
        x = nn.relu(self.norm(name=f'bn{i}')(x))
    else:
      x = self.conv(scaled(64, width), 7, 2, name='conv')(x)
      x = nn.relu(self.norm(name='bn')(x))
    return nn.max_pool(x, (3, 3), (2, 2), padding='SAME')


class BlockGroup(nn.Module):
  """Blocks of one resolution; the first strides and has a projection
  shortcut (always, as in the official code: also ResNet-18/34's first block,
  whose shape does not change), the others are identity shortcuts."""
  block_cls: ModuleDef
  filters: int
  num_blocks: int
  strides: int
  sk_ratio: float
  se_ratio: float
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      strides = self.strides if i == 0 else 1
      x = self.block_cls(
          self.filters, strides, i == 0, self.sk_ratio, self.se_ratio,
          self.conv, self.norm, name=f'block{i + 1}')(x)
    return x


class ResNet(nn.Module):
  """ResNet v1 encoder returning the global-average-pooled representation h.

  `fine_tune_after_block` freezes a prefix of the network: -1 trains all,
  0 freezes the stem, k in 1..4 the stem and block groups 1..k. Frozen parts
  sit behind a stop_gradient and run their BN in inference mode (no batch
  statistics, no running-average updates), as in SimCLR's fine-tuning.
  """
  depth: int = 50
  width_multiplier: float = 1.0
  sk_ratio: float = 0.0
  se_ratio: float = 0.0
  cifar_stem: bool = False
  fine_tune_after_block: int = -1
  bn_axis_name: str | None = None
  dtype: Dtype = jnp.float32
  conv_impl: str = 'xla'   # 'xla' or 'matmul' (see conv.py); same parameters.

  @nn.compact
  def __call__(self, images, train: bool = False, return_blocks: bool = False):
    if self.depth not in BLOCKS_PER_GROUP:
      raise ValueError(f'Unsupported ResNet depth {self.depth}; '
                       f'choose from {sorted(BLOCKS_PER_GROUP)}.')
    conv = functools.partial(fixed_padding_conv, dtype=self.dtype,
                             conv_impl=self.conv_impl)

    def norm_for(stage):
      # Stage 0 is the stem, 1..4 the block groups. `dtype` only sets the
      # output dtype: flax reduces batch statistics in (at least) float32 and
      # keeps scale/bias/running stats in float32 (param_dtype).
      frozen = stage <= self.fine_tune_after_block
      return functools.partial(
          nn.BatchNorm, use_running_average=not train or frozen,
          momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype,
          param_dtype=jnp.float32, axis_name=self.bn_axis_name)

    def maybe_freeze(x, stage):
      return (jax.lax.stop_gradient(x)
              if stage == self.fine_tune_after_block else x)

    blocks = {}
    x = images.astype(self.dtype)
    x = Stem(self.width_multiplier, resnet_d=self.sk_ratio > 0,
             cifar_stem=self.cifar_stem, conv=conv, norm=norm_for(0),
             name='stem')(x)
    x = blocks['stem'] = maybe_freeze(x, 0)

    block_cls = BottleneckBlock if uses_bottleneck(self.depth) else BasicBlock
    group_sizes = BLOCKS_PER_GROUP[self.depth]
    for stage, (num_blocks, filters, strides) in enumerate(
        zip(group_sizes, GROUP_FILTERS, GROUP_STRIDES), start=1):
      x = BlockGroup(
          block_cls, scaled(filters, self.width_multiplier), num_blocks,
          strides, self.sk_ratio, self.se_ratio, conv, norm_for(stage),
          name=f'block_group{stage}')(x)
      x = blocks[f'block_group{stage}'] = maybe_freeze(x, stage)

    # Pool in float32: the representation feeds the heads and the losses.
    h = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return (h, blocks) if return_blocks else h
