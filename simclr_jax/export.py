"""Export a run's weights for fine-tuning elsewhere, and load them back.

`export_workdir` writes encoder + heads (weights and BN statistics only, no
optimiser state) with the architecture as JSON; `load_pretrained` returns the
Flax module and variables, ready for `module.apply(variables, images,
train=False)`. Arrays are saved unsharded, so any device count can load them.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax import checkpoint, models
from simclr_jax.errors import UserError


def model_info_from_config(config, num_classes: int) -> dict:
  return {'model': config.model.to_dict(), 'image_size': config.image_size,
          'num_classes': int(num_classes), 'dataset': config.dataset,
          'source_mode': config.mode}


def export_workdir(workdir: str, output: str) -> str:
  """Writes the newest readable checkpoint of `workdir` to `output`."""
  loaded = checkpoint.load_weights(workdir)
  config = loaded['config']
  if config is None:
    raise UserError(f'{workdir!r} has no {checkpoint.CONFIG_FILE}.')
  params = loaded['params']
  head = 'sup_head' if 'sup_head' in params else 'probe_head'
  num_classes = models.head_num_classes(params, head) if head in params else 0
  info = model_info_from_config(config, num_classes)
  info['has_supervised_head'] = 'sup_head' in params
  info['has_probe_head'] = 'probe_head' in params
  info['step'] = int(loaded['step'])
  checkpoint.export(output, params=params, batch_stats=loaded['batch_stats'],
                    model_info=info)
  return output


def load_pretrained(path: str):
  """(module, variables) from an export directory.

  The module's outputs are those of `models.build_model`: 'h', 'proj', 'z',
  and 'sup_logits' / 'probe_logits' when the export has those heads.
  """
  info, weights = checkpoint.read_export(path)
  model_config = ml_collections.ConfigDict(info['model'])
  module = models.build_model(
      model_config, num_classes=max(info['num_classes'], 1),
      image_size=info['image_size'], bn_axis_name=None,
      linear_probe=info.get('has_probe_head', False),
      supervised_head=info.get('has_supervised_head', False))
  variables = {'params': weights['params'],
               'batch_stats': weights.get('batch_stats', {})}
  return module, variables


def feature_extractor(path: str) -> Callable[[jax.Array], jax.Array]:
  """A jitted function images [N, H, W, 3] in [0, 1] -> representations h."""
  module, variables = load_pretrained(path)
  variables = jax.tree.map(jnp.asarray, variables)

  @jax.jit
  def features(images):
    return module.apply(variables, images, train=False)['h']

  return features
