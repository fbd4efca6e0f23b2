"""Models: ResNet encoder, heads, the composite SimCLR model and helpers."""

import jax

from simclr_jax.models.heads import LinearHead
from simclr_jax.models.heads import ProjectionHead
from simclr_jax.models.resnet import ResNet
from simclr_jax.models.simclr import encoder_output_dim
from simclr_jax.models.simclr import num_proj_outputs
from simclr_jax.models.simclr import DTYPES
from simclr_jax.models.simclr import SimCLR


def _encoder_stage(path) -> int | None:
  """Stage of an encoder leaf (0 stem, k block_group k), None outside it."""
  names = [getattr(entry, 'key', getattr(entry, 'name', None))
           for entry in path]
  if 'encoder' not in names:
    return None
  below = names[names.index('encoder') + 1:]
  if not below:
    return None
  if below[0] == 'stem':
    return 0
  if isinstance(below[0], str) and below[0].startswith('block_group'):
    return int(below[0][len('block_group'):])
  return None


def trainable_mask(params, config_model):
  """Pytree of bools like `params`: False for encoder parts frozen by
  `config_model.fine_tune_after_block` (k freezes the stem and groups 1..k).

  Works on the 'params' collection or on full variables. The model already
  stops gradients there; the mask also keeps weight decay and momentum from
  moving frozen weights (e.g. with `optax.masked`).
  """
  last_frozen = config_model.fine_tune_after_block

  def is_trainable(path, _):
    stage = _encoder_stage(path)
    return stage is None or stage > last_frozen

  return jax.tree_util.tree_map_with_path(is_trainable, params)


__all__ = [
    'DTYPES', 'LinearHead', 'ProjectionHead', 'ResNet', 'SimCLR',
    'encoder_output_dim', 'head_num_classes', 'num_proj_outputs',
    'trainable_mask',
]


def head_num_classes(params, head: str) -> int:
  """Number of classes of a linear head ('sup_head' / 'probe_head') in params."""
  kernels = [v for path, v in jax.tree_util.tree_leaves_with_path(params[head])
             if getattr(path[-1], 'key', None) == 'kernel']
  if len(kernels) != 1:
    raise ValueError(f'{head} has {len(kernels)} kernels; expected one Dense.')
  return int(kernels[0].shape[-1])
