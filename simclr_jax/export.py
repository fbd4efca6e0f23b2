"""Export a run's weights for fine-tuning elsewhere, and load them back.

`export_workdir` writes encoder + heads (weights and BN statistics only, no
optimiser state) with the architecture and the dataset's class names as JSON;
`load_pretrained` returns the Flax module and variables, ready for
`module.apply(variables, images, train=False)`. Arrays are saved unsharded, so
any device count can load them.
"""

import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from simclr_jax import checkpoint, configs, models
from simclr_jax.errors import UserError
from simclr_jax.models.simclr import SimCLR


def model_info_from_config(config, num_classes: int) -> dict:
  return {'model': config.model.to_dict(), 'image_size': config.image_size,
          'num_classes': int(num_classes), 'dataset': config.dataset,
          'source_mode': config.mode}


def _is_export(path: epath.Path) -> bool:
  return (path / checkpoint.EXPORT_CONFIG_FILE).exists() or (
      path / checkpoint.EXPORT_WEIGHTS_DIR).exists()


def _check_output(output: str, overwrite: bool) -> bool:
  """Whether `output` holds an export to replace; raises unless it is new, an
  empty directory, or an export with `overwrite`. A silently replaced export
  is a lost result, and a non-export directory may hold anything, so it is
  never written into."""
  out = epath.Path(output)
  if not out.exists():
    return False
  if not out.is_dir():
    raise UserError(f'export: --output={output!r} is a file, not a '
                    'directory.')
  if _is_export(out):
    if not overwrite:
      raise UserError(f'export: --output={output!r} already holds an '
                      'export; pass --overwrite to replace it.')
    others = [p.name for p in out.iterdir() if p.name not in (
        checkpoint.EXPORT_CONFIG_FILE, checkpoint.EXPORT_WEIGHTS_DIR)]
    if not others:
      return True
    raise UserError(f'export: --output={output!r} holds an export and '
                    f'other files ({", ".join(sorted(others)[:3])}); '
                    'choose a new directory.')
  if any(out.iterdir()):
    raise UserError(f'export: --output={output!r} is a non-empty '
                    'directory that is not an export; choose a new '
                    'directory.')
  return False


def _remove_export(output: str) -> None:
  for name in (checkpoint.EXPORT_CONFIG_FILE, checkpoint.EXPORT_WEIGHTS_DIR):
    target = epath.Path(output) / name
    if target.is_dir():
      target.rmtree()
    elif target.exists():
      target.unlink()


def export_workdir(workdir: str, output: str, *, overwrite: bool = False) -> str:
  """Writes the newest readable checkpoint of `workdir` to `output`.

  Raises FileExistsError if `output` already holds an export (unless
  `overwrite`) or other files. Returns `output`; `summary(output)` describes it.
  """
  replace = _check_output(output, overwrite)
  from simclr_jax import data  # pylint: disable=g-import-not-at-top
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
  info['source_workdir'] = os.path.abspath(workdir) if '://' not in workdir \
      else workdir
  names = data.class_names(config) if num_classes else []
  # Names are only trustworthy when they match the heads' outputs.
  info['class_names'] = names if len(names) == num_classes else []
  if replace:  # Only now: a failure above leaves the old export intact.
    _remove_export(output)
  checkpoint.export(output, params=params, batch_stats=loaded['batch_stats'],
                    model_info=info)
  return output


def read_info(path: str) -> dict:
  """The export's model_config.json: architecture, image_size, num_classes,
  class_names, step, dataset and the mode it was trained in."""
  p = epath.Path(path)
  if not (p / checkpoint.EXPORT_CONFIG_FILE).exists():
    raise UserError(f'{path!r} is not a simclr_jax export (no '
                    f'{checkpoint.EXPORT_CONFIG_FILE}).')
  return json.loads((p / checkpoint.EXPORT_CONFIG_FILE).read_text())


def _architecture(model_config) -> str:
  c = model_config
  width = f'{c["width_multiplier"]:g}x'
  extras = [f'SK {c["sk_ratio"]:g}'] * bool(c.get('sk_ratio')) + \
      [f'SE {c["se_ratio"]:g}'] * bool(c.get('se_ratio'))
  return f'ResNet-{c["depth"]} {width}' + (f' ({", ".join(extras)})'
                                            if extras else '')


def summary(path: str) -> str:
  """One line: what was exported, from which step, the architecture, where."""
  info = read_info(path)
  h_dim = models.encoder_output_dim(ml_collections.ConfigDict(info['model']))
  heads = [name for name, key in (('supervised', 'has_supervised_head'),
                                  ('probe', 'has_probe_head')) if info.get(key)]
  classes = info.get('class_names') or []
  head_text = (f', {"+".join(heads)} head ({info["num_classes"]} classes'
               + (f': {", ".join(classes[:3])}{", ..." if len(classes) > 3 else ""}'
                  if classes else '') + ')') if heads else ', no classifier'
  source = ' '.join(filter(None, (
      f'step {info["step"]}' if 'step' in info else '',
      f'of the {info["source_mode"]} run' if 'source_mode' in info else '',
      repr(info['source_workdir']) if info.get('source_workdir') else '')))
  return (f'Exported {source or "weights"}: '
          f'{_architecture(info["model"])}, h {h_dim}-d, '
          f'{info["image_size"]}x{info["image_size"]} '
          f'{info.get("dataset", "")} images'
          f'{head_text} -> {os.fspath(path)}')


def check_images(images) -> None:
  """Raises one ValueError naming what is wrong with `images`.

  The model takes a batch [N, H, W, 3] of floats in [0, 1] (it normalises
  them itself). Shapes and dtypes are checked when traced too; the value
  range only for concrete arrays (not inside jit).
  """
  shape = getattr(images, 'shape', None)
  dtype = getattr(images, 'dtype', None)
  if shape is None or dtype is None:
    raise ValueError(f'images must be an array [N, H, W, 3], got '
                     f'{type(images).__name__}.')
  if not jnp.issubdtype(dtype, jnp.floating):
    hint = (' (divide uint8 pixels by 255: images.astype(np.float32) / 255)'
            if dtype == np.uint8 else '')
    raise ValueError(f'images must be float in [0, 1], got dtype {dtype}{hint}.')
  if len(shape) == 3 and shape[-1] in (1, 3):
    raise ValueError(f'images must be a batch [N, H, W, 3], got one image of '
                     f'shape {tuple(shape)} (add a batch axis: images[None]).')
  if len(shape) != 4:
    raise ValueError(f'images must be a batch [N, H, W, 3] (NHWC), got shape '
                     f'{tuple(shape)}.')
  if shape[-1] != 3:
    hint = (' (repeat grey images: np.repeat(images, 3, axis=-1))'
            if shape[-1] == 1 else
            ' (channels last: images.transpose(0, 2, 3, 1))'
            if shape[1] == 3 else '')
    raise ValueError(f'images must have 3 channels last (NHWC), got shape '
                     f'{tuple(shape)}{hint}.')
  if not isinstance(images, jax.core.Tracer):
    low, high = float(jnp.min(images)), float(jnp.max(images))
    if not (-1e-3 <= low and high <= 1 + 1e-3):
      hint = (' (0..255 pixels: divide by 255)' if high > 1.5 else
              ' (do not normalise by a mean and std: the model does)')
      raise ValueError(f'images must be in [0, 1], got values in '
                       f'[{low:.3g}, {high:.3g}]{hint}.')


class PretrainedSimCLR(SimCLR):
  """The exported SimCLR model, checking its input before running.

  `apply(variables, images, train=False)` returns a dict:
    'h': [N, D] encoder representation (global-average-pooled last block),
         D = `h_dim` (int(64 * width) * 8 for ResNet-18/34, * 32 for 50 and up:
         2048 for ResNet-50 1x, 128 for the digits recipe's ResNet-18 0.25x);
    'proj': list of the projection head's outputs, proj[0] = h, then one
         [N, ...] array per head layer;
    'z': proj[-1], [N, proj_out_dim] (the contrastive embedding);
    'sup_logits': [N, num_classes], if the export has a supervised head
         (finetune, linear_eval, supervised, distill runs);
    'probe_logits': [N, num_classes], if it has pretraining's online probe.
  `class_names` names the logits' classes (empty when unknown).
  """
  class_names: tuple = ()
  image_size: int = 0

  @property
  def h_dim(self) -> int:
    return models.encoder_output_dim(ml_collections.ConfigDict(
        {'depth': self.depth, 'width_multiplier': self.width_multiplier}))

  def __call__(self, images, train: bool = False):
    check_images(images)
    return super().__call__(images, train=train)


def load_pretrained(path: str):
  """(module, variables) from an export directory.

  `module.apply(variables, images, train=False)` takes images [N, H, W, 3],
  float in [0, 1], H = W = `module.image_size` as trained (other sizes run but
  give other features), and returns 'h', 'proj', 'z' and 'sup_logits' /
  'probe_logits' as documented on `PretrainedSimCLR`; a wrong dtype, shape or
  range is one ValueError saying what to change. `module.class_names` holds
  the classes of the logits; `module.h_dim` the width of h.
  """
  info, weights = checkpoint.read_export(path)
  config = ml_collections.ConfigDict({'model': info['model'],
                                      'image_size': info['image_size']})
  configs.fill_auto_fields(config)
  config.model.global_bn = False   # Runs outside the training mesh.
  module = PretrainedSimCLR(
      **config.model, num_classes=max(info['num_classes'], 1),
      linear_probe=info.get('has_probe_head', False),
      supervised_head=info.get('has_supervised_head', False),
      class_names=tuple(info.get('class_names') or ()),
      image_size=int(info['image_size']))
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

  def checked(images):
    check_images(images)
    return features(images)

  return checked
