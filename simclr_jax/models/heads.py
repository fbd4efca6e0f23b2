"""Projection head (contrastive embedding) and linear classification heads."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models import resnet

Dtype = Any

PROJ_HEAD_MODES = ('none', 'linear', 'nonlinear')

# Official: tf.random_normal_initializer(stddev=.01) for every dense layer.
dense_kernel_init = nn.initializers.normal(stddev=0.01)


class ProjectionHead(nn.Module):
  """Maps h to the contrastive embedding z, keeping every layer's output.

  Returns [h, layer_1, ..., layer_n] so that fine-tuning can attach the
  classifier to any depth of the head (SimCLRv2 fine-tunes from the middle of
  a 3-layer head). Dense layers have no bias because a BN follows each; the
  last BN has no beta (a shift of z is meaningless for the cosine loss).
  """
  mode: str = 'nonlinear'
  num_layers: int = 2
  out_dim: int = 128
  bn_axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool = False):
    if self.mode not in PROJ_HEAD_MODES:
      raise ValueError(f'Unknown proj_head_mode {self.mode!r}; '
                       f'choose from {PROJ_HEAD_MODES}.')
    outputs = [h]
    if self.mode == 'none':
      return outputs
    num_layers = 1 if self.mode == 'linear' else self.num_layers
    x = h.astype(self.dtype)
    for i in range(1, num_layers + 1):
      is_last = i == num_layers
      features = self.out_dim if is_last else h.shape[-1]
      x = nn.Dense(features, use_bias=False, kernel_init=dense_kernel_init,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   name=f'dense{i}')(x)
      x = nn.BatchNorm(use_running_average=not train,
                       momentum=resnet.BN_MOMENTUM, epsilon=resnet.BN_EPSILON,
                       use_bias=not is_last, dtype=self.dtype,
                       param_dtype=jnp.float32, axis_name=self.bn_axis_name,
                       name=f'bn{i}')(x)
      if not is_last:
        x = nn.relu(x)
      outputs.append(x)
    return outputs


class LinearHead(nn.Module):
  """Logits layer (supervised head or online linear probe), in float32.

  Zero init (`zero_init_logits_layer`) makes fine-tuning start from uniform
  predictions instead of random ones.
  """
  num_classes: int
  zero_init: bool = False

  @nn.compact
  def __call__(self, x):
    kernel_init = nn.initializers.zeros if self.zero_init else dense_kernel_init
    return nn.Dense(self.num_classes, kernel_init=kernel_init,
                    bias_init=nn.initializers.zeros, dtype=jnp.float32,
                    param_dtype=jnp.float32, name='dense')(
                        x.astype(jnp.float32))
