"""The SimCLR model: encoder + projection head + optional linear heads.

One module serves pretraining (contrastive z, plus an online linear probe on
a stop-gradient h), fine-tuning (supervised head on a chosen projection-head
layer) and evaluation, so checkpoints move between modes unchanged.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.models import conv as conv_lib
from simclr_jax.models import heads
from simclr_jax.models import resnet
from simclr_jax.parallel import DATA_AXIS

DTYPES = {
    'float32': jnp.float32,
    'bfloat16': jnp.bfloat16,
    'float16': jnp.float16,
}


class SimCLR(nn.Module):
  """Returns a dict: h, proj (list), z, and sup_logits / probe_logits if on.

  Built as `SimCLR(**config.model, num_classes=..., supervised_head=...,
  linear_probe=...)`: the architecture fields are config.model's, one for one
  (validated in config_validation; 'auto' ones filled by
  `configs.fill_auto_fields`). With `global_bn`, batch norm averages over the
  data-parallel mesh axis, so the module must run inside that shard_map when
  training (SimCLR's global BN: per-device statistics leak which examples
  share a device, a shortcut for the contrastive task). All outputs are
  float32 whatever the compute dtype, so losses stay float32.
  """
  depth: int = 50
  width_multiplier: float = 1.0
  sk_ratio: float = 0.0
  se_ratio: float = 0.0
  cifar_stem: bool = False
  fine_tune_after_block: int = -1
  proj_head_mode: str = 'nonlinear'
  num_proj_layers: int = 2
  proj_out_dim: int = 128
  ft_proj_selector: int = 0
  zero_init_logits_layer: bool = False
  global_bn: bool = False
  dtype: str = 'float32'
  conv_impl: str = 'auto'
  num_classes: int = 1000
  supervised_head: bool = False
  linear_probe: bool = False

  @nn.compact
  def __call__(self, images, train: bool = False):
    bn_axis_name = DATA_AXIS if self.global_bn else None
    dtype = DTYPES[self.dtype]
    h = resnet.ResNet(
        depth=self.depth, width_multiplier=self.width_multiplier,
        sk_ratio=self.sk_ratio, se_ratio=self.se_ratio,
        cifar_stem=self.cifar_stem,
        fine_tune_after_block=self.fine_tune_after_block,
        bn_axis_name=bn_axis_name, dtype=dtype,
        conv_impl=conv_lib.conv_impl_for_backend(self.conv_impl),
        name='encoder')(images, train=train)
    proj = heads.ProjectionHead(
        mode=self.proj_head_mode, num_layers=self.num_proj_layers,
        out_dim=self.proj_out_dim, bn_axis_name=bn_axis_name,
        dtype=dtype, name='proj_head')(h, train=train)
    proj = [p.astype(jnp.float32) for p in proj]
    out = {'h': h, 'proj': proj, 'z': proj[-1]}
    if self.supervised_head:
      out['sup_logits'] = heads.LinearHead(
          self.num_classes, self.zero_init_logits_layer, name='sup_head')(
              proj[self.ft_proj_selector])
    if self.linear_probe:
      # SimCLR's online linear evaluation: trained jointly, but its gradient
      # must not shape the representation.
      out['probe_logits'] = heads.LinearHead(
          self.num_classes, self.zero_init_logits_layer, name='probe_head')(
              jax.lax.stop_gradient(h))
    return out


def num_proj_outputs(model_config) -> int:
  """Length of the `proj` list: h plus one entry per head layer."""
  mode = model_config.proj_head_mode
  if mode == 'none':
    return 1
  if mode == 'linear':
    return 2
  return model_config.num_proj_layers + 1


def encoder_output_dim(model_config) -> int:
  """Width of h, e.g. 2048 for ResNet-50 1x, 512 for ResNet-18 1x."""
  return resnet.output_dim(model_config.depth, model_config.width_multiplier)
