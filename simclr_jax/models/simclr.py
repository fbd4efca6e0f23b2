"""The SimCLR model: encoder + projection head + optional linear heads.

One module serves pretraining (contrastive z, plus an online linear probe on
a stop-gradient h), fine-tuning (supervised head on a chosen projection-head
layer) and evaluation, so checkpoints move between modes unchanged.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.models import conv as conv_lib
from simclr_jax.models import heads
from simclr_jax.models import resnet

DTYPES = {
    'float32': jnp.float32,
    'bfloat16': jnp.bfloat16,
    'float16': jnp.float16,
}


class SimCLR(nn.Module):
  """Returns a dict: h, proj (list), z, and sup_logits / probe_logits if on.

  All outputs are float32 whatever the compute dtype, so losses stay float32.
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
  num_classes: int = 1000
  supervised_head: bool = False
  linear_probe: bool = False
  zero_init_logits_layer: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, images, train: bool = False):
    h = resnet.ResNet(
        depth=self.depth, width_multiplier=self.width_multiplier,
        sk_ratio=self.sk_ratio, se_ratio=self.se_ratio,
        cifar_stem=self.cifar_stem,
        fine_tune_after_block=self.fine_tune_after_block,
        bn_axis_name=self.bn_axis_name, dtype=self.dtype,
        conv_impl=self.conv_impl, name='encoder')(images, train=train)
    proj = heads.ProjectionHead(
        mode=self.proj_head_mode, num_layers=self.num_proj_layers,
        out_dim=self.proj_out_dim, bn_axis_name=self.bn_axis_name,
        dtype=self.dtype, name='proj_head')(h, train=train)
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


def validate(model_config) -> None:
  """Raises ValueError naming the first bad `config.model` field."""
  c = model_config
  if c.depth not in resnet.BLOCKS_PER_GROUP:
    raise ValueError(f'model.depth={c.depth!r} unsupported; choose from '
                     f'{sorted(resnet.BLOCKS_PER_GROUP)}.')
  if not c.width_multiplier > 0:
    raise ValueError(
        f'model.width_multiplier must be > 0, got {c.width_multiplier!r}.')
  if c.sk_ratio < 0:
    raise ValueError(f'model.sk_ratio must be >= 0, got {c.sk_ratio!r}.')
  if c.se_ratio < 0:
    raise ValueError(f'model.se_ratio must be >= 0, got {c.se_ratio!r}.')
  if c.proj_head_mode not in heads.PROJ_HEAD_MODES:
    raise ValueError(f'model.proj_head_mode={c.proj_head_mode!r} unknown; '
                     f'choose from {heads.PROJ_HEAD_MODES}.')
  if c.proj_head_mode == 'nonlinear' and c.num_proj_layers < 1:
    raise ValueError('model.num_proj_layers must be >= 1 for a nonlinear '
                     f'head, got {c.num_proj_layers!r}.')
  num_outputs = num_proj_outputs(c)
  if not 0 <= c.ft_proj_selector < num_outputs:
    raise ValueError(
        f'model.ft_proj_selector={c.ft_proj_selector!r} out of range: the '
        f'{c.proj_head_mode!r} head has outputs 0..{num_outputs - 1}.')
  if c.fine_tune_after_block not in range(-1, 5):
    raise ValueError('model.fine_tune_after_block must be in -1..4, got '
                     f'{c.fine_tune_after_block!r}.')
  conv_lib.conv_impl_for_backend(c.get('conv_impl', 'auto'))  # Raises if unknown.
  if c.dtype not in DTYPES:
    raise ValueError(
        f'model.dtype={c.dtype!r} unknown; choose from {sorted(DTYPES)}.')


def build_model(model_config, *, num_classes: int, image_size: int,
                bn_axis_name: str | None, linear_probe: bool,
                supervised_head: bool) -> SimCLR:
  """Builds the model from `config.model`, resolving the auto fields.

  `bn_axis_name` is used only when `model_config.global_bn` is true: it must be
  the data-parallel mesh axis of the surrounding `shard_map`, so that BN
  statistics cover the global batch (SimCLR's global BN: per-device statistics
  leak which examples share a device, a shortcut for the contrastive task).
  """
  validate(model_config)
  if (linear_probe or supervised_head) and num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes!r}.')
  cifar_stem = model_config.cifar_stem
  if cifar_stem is None:
    cifar_stem = image_size <= 32
  return SimCLR(
      depth=model_config.depth,
      width_multiplier=float(model_config.width_multiplier),
      sk_ratio=float(model_config.sk_ratio),
      se_ratio=float(model_config.se_ratio),
      cifar_stem=bool(cifar_stem),
      fine_tune_after_block=model_config.fine_tune_after_block,
      proj_head_mode=model_config.proj_head_mode,
      num_proj_layers=model_config.num_proj_layers,
      proj_out_dim=model_config.proj_out_dim,
      ft_proj_selector=model_config.ft_proj_selector,
      num_classes=num_classes,
      supervised_head=supervised_head,
      linear_probe=linear_probe,
      zero_init_logits_layer=model_config.zero_init_logits_layer,
      bn_axis_name=bn_axis_name if model_config.global_bn else None,
      dtype=DTYPES[model_config.dtype],
      # Absent from configs saved before the field existed: auto.
      conv_impl=conv_lib.conv_impl_for_backend(
          model_config.get('conv_impl', 'auto')),
  )


def encoder_output_dim(model_config) -> int:
  """Width of h, e.g. 2048 for ResNet-50 1x, 512 for ResNet-18 1x."""
  return resnet.output_dim(model_config.depth, model_config.width_multiplier)
