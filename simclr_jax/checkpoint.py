"""Checkpoints with orbax: train-state saves and resumes, weights-only loading,
and the export format handed to fine-tuning elsewhere.

Layout of a workdir:
  config.json            the config of the run's first start (never rewritten)
  config.<n>.json        the config of the n-th later start that changed it
  checkpoints/<step>/    orbax CheckpointManager steps, item 'state', with a
                         fingerprint of every array in the step's metadata
  checkpoints_unreadable/<step>/  steps found corrupt at a restart, set aside
An export directory:
  model_config.json      architecture (config.model, image_size, num_classes),
                         class_names (label order; [] if unknown), source step
  weights/               orbax PyTree of {'params', 'batch_stats'}
"""

import json
import os
import re
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from simclr_jax import configs, parallel
from simclr_jax.errors import UserError

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
UNREADABLE_DIR = 'checkpoints_unreadable'
FINGERPRINT_KEY = 'fingerprint'
EXPORT_CONFIG_FILE = 'model_config.json'
EXPORT_WEIGHTS_DIR = 'weights'


def make_manager(workdir: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save)
  # orbax's first step listing is a device collective (broadcast from
  # process 0); processes that took unequal time to start meet first.
  parallel.barrier('checkpoint_manager')
  # A registered handler (not just a name) lets a fresh manager read a step's
  # tree metadata, which weights-only loading needs on any device count.
  return ocp.CheckpointManager(
      epath.Path(workdir) / CHECKPOINT_DIR, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler()})


def _leaf_fingerprint(x, xp):
  """Sum of the raw bits weighted by odd position weights, mod 2**32.

  One pass over the array; a change to any single element always changes it
  (odd weights are invertible mod 2**32). `xp` is numpy or jax.numpy, so the
  same arithmetic runs on device at save time and on host arrays at load.
  """
  x = xp.asarray(x).reshape(-1)
  if x.dtype.itemsize % 4 == 0:
    bits = x.view(xp.uint32)
  elif x.dtype.itemsize == 2:
    bits = x.view(xp.uint16).astype(xp.uint32)
  else:
    bits = x.astype(xp.uint32)
  weights = xp.arange(bits.size, dtype=xp.uint32) * 2 + 1
  return xp.sum(bits * weights, dtype=xp.uint32)


@jax.jit
def _device_fingerprints(tree):
  return jax.tree.map(lambda x: _leaf_fingerprint(x, jnp), tree)


def _path_name(key_path) -> str:
  """'params/encoder/...' for a dataclass field or a dict key alike."""
  return '/'.join(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k))))
                  for k in key_path)


def fingerprint(tree: Any) -> dict:
  """{leaf path: fingerprint} of a tree of jax arrays (computed where they
  live, one small fetch) or of host arrays."""
  if all(isinstance(x, jax.Array) for x in jax.tree.leaves(tree)):
    sums = jax.device_get(_device_fingerprints(tree))
  else:
    sums = jax.tree.map(lambda x: _leaf_fingerprint(x, np), tree)
  return {_path_name(path): int(value)
          for path, value in jax.tree_util.tree_leaves_with_path(sums)}


def _verify(manager: ocp.CheckpointManager, step: int, tree: Any) -> None:
  """Raises if restored arrays differ from those saved: orbax reads a chunk
  with flipped bytes without complaint, so its success proves nothing."""
  saved = (manager.metadata(step).custom_metadata or {}).get(FINGERPRINT_KEY)
  if not saved:
    logging.warning('Checkpoint step %d in %s has no fingerprint (an older '
                    'format); its contents are not verified.', step,
                    manager.directory)
    return
  bad = [path for path, value in fingerprint(tree).items()
         if saved.get(path) != value]
  if bad:
    raise ValueError(f'{len(bad)} array(s) differ from what was saved (corrupt '
                     f'files), e.g. {", ".join(bad[:3])}')


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state)), force=force,
                      custom_metadata={FINGERPRINT_KEY: fingerprint(state)})


def _set_aside(manager: ocp.CheckpointManager, steps) -> None:
  """Moves unreadable steps out of the manager's sight (never deletes them),
  so that the resumed run saves those steps again instead of skipping them."""
  aside = epath.Path(manager.directory).parent / UNREADABLE_DIR
  if jax.process_index() == 0:
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
      target = aside / str(step)
      if target.exists():
        target = aside / f'{step}.{time.strftime("%Y%m%d-%H%M%S")}'
      (epath.Path(manager.directory) / str(step)).rename(target)
      logging.error('Moved unreadable checkpoint step %d to %s.', step, target)
  parallel.barrier('set_aside_checkpoints')
  manager.reload()


def restore_latest(manager: ocp.CheckpointManager, target: Any):
  """Restores the newest readable step onto `target`'s shapes and shardings.

  A step that cannot be read or whose arrays fail the fingerprint (partial or
  corrupt files) is reported, set aside, and the previous one is used.
  Returns (state, step), or (None, None) when there is no checkpoint; raises
  when there are checkpoints but none is readable (starting afresh would
  silently throw the run away).
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  errors = {}
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))['state']
      _verify(manager, step, restored)
    except Exception as e:  # pylint: disable=broad-except
      errors[step] = f'{type(e).__name__}: {str(e)[:500]}'
      logging.error('Checkpoint step %d in %s is unreadable (%s); trying the '
                    'previous one.', step, manager.directory, errors[step])
      continue
    if errors:
      _set_aside(manager, errors)
      logging.warning('Using checkpoint step %d instead of the unreadable '
                      'step(s) %s.', step, sorted(errors))
    return restored, step
  if errors:
    raise UserError(
        f'No readable checkpoint in {manager.directory}; refusing to start '
        'over on top of them (move the directory away to do so): ' +
        '; '.join(f'step {s}: {e}' for s, e in errors.items()))
  return None, None


def _as_numpy_restore(manager, step):
  meta = manager.item_metadata(step)['state']
  tree = meta.tree if hasattr(meta, 'tree') else meta
  # Host arrays as targets: no shardings, so any device count can read it.
  target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), tree)
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))['state']


def load_weights(path: str) -> dict:
  """Weights only ({'params', 'batch_stats', 'config'}) from a run's workdir.

  `path` is a workdir (newest readable step), a workdir's step directory
  `<workdir>/checkpoints/<step>`, or an export (export_workdir, or official
  weights imported by simclr_jax.official). The optimiser state and step are
  ignored, but a step whose arrays do not match their saved fingerprint is
  skipped.
  """
  p = epath.Path(path)
  if (p / EXPORT_CONFIG_FILE).exists():
    return _load_export_weights(path)
  step = None
  if p.name.isdigit() and p.parent.name == CHECKPOINT_DIR:
    step, p = int(p.name), p.parent.parent
  if not (p / CHECKPOINT_DIR).exists():
    raise UserError(
        f'No checkpoints under {path!r}: expected a workdir written by '
        f'simclr_jax (with {CHECKPOINT_DIR}/ and {CONFIG_FILE}).')
  manager = make_manager(os.fspath(p), read_only=True, async_save=False)
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise UserError(f'{path!r} has no saved checkpoint step.')
  config = read_config(os.fspath(p))
  errors = []
  for s in steps:
    try:
      state = _as_numpy_restore(manager, s)
      _verify(manager, s, state)
      return {'params': state['params'],
              'batch_stats': state.get('batch_stats', {}),
              'config': config, 'step': s}
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'step {s}: {type(e).__name__}: {str(e)[:300]}')
      logging.error('Cannot read checkpoint step %d of %s: %s', s, path, errors[-1])
  raise UserError(f'No readable checkpoint in {path!r}: ' + '; '.join(errors))


def _load_export_weights(path: str) -> dict:
  """load_weights of an export: its model config stands for the run config."""
  info, weights = read_export(path)
  config = ml_collections.ConfigDict({
      'model': info['model'], 'mode': info.get('source_mode', 'pretrain'),
      'image_size': info.get('image_size'), 'dataset': info.get('dataset')})
  configs.fill_auto_fields(config)
  return {'params': weights['params'],
          'batch_stats': weights.get('batch_stats', {}),
          'config': config, 'step': int(info.get('step', 0))}


def _config_files(workdir: str) -> list:
  """[(n, path)] of config.json (n = 0), config.1.json, ..., oldest first."""
  found = []
  for path in epath.Path(workdir).glob('config*.json'):
    match = re.fullmatch(r'config(?:\.(\d+))?\.json', path.name)
    if match:
      found.append((int(match.group(1) or 0), path))
  return sorted(found)


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Records the config of this start without rewriting any earlier one.

  config.json is the first start's; a later start with a different config
  (more steps, an allowed model change) adds config.<n>.json.
  """
  if jax.process_index() != 0:
    return
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  files = _config_files(workdir)
  if files:
    last, last_path = files[-1]
    try:
      if json.loads(last_path.read_text()) == json.loads(text):
        return
    except ValueError:  # An unreadable saved config: record this one anew.
      pass
    path = epath.Path(workdir) / f'config.{last + 1}.json'
    logging.info('The config differs from %s; recording it as %s.',
                 last_path.name, path)
  else:
    path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


def read_config(workdir: str) -> Optional[ml_collections.ConfigDict]:
  """The config of the workdir's latest start that changed it (auto fields
  filled, for configs saved before runs recorded them filled)."""
  files = _config_files(workdir)
  if not files:
    return None
  config = ml_collections.ConfigDict(json.loads(files[-1][1].read_text()))
  if 'image_size' in config and 'model' in config:
    configs.fill_auto_fields(config)
  return config


def merge_weights(fresh: Any, loaded: Any, *, what: str, prefix=()) -> Any:
  """`fresh` with every leaf that `loaded` has replaced by the loaded value.

  Leaves missing from `loaded` keep their fresh initialisation (e.g. a new
  supervised head); a shape mismatch is an error naming the parameter.
  """
  if isinstance(fresh, dict):
    loaded = loaded if isinstance(loaded, dict) else {}
    return {k: merge_weights(v, loaded.get(k), what=what, prefix=prefix + (k,))
            for k, v in fresh.items()}
  if loaded is None:
    return fresh
  if tuple(np.shape(loaded)) != tuple(np.shape(fresh)):
    raise UserError(
        f'{what}: parameter {"/".join(prefix)} has shape {np.shape(loaded)} in '
        f'the checkpoint but {np.shape(fresh)} in the model; the checkpoint was '
        'written for a different architecture.')
  return np.asarray(loaded, dtype=np.asarray(fresh).dtype)


def export(output: str, *, params: Any, batch_stats: Any,
           model_info: dict) -> None:
  """Writes a self-contained weights-only checkpoint plus its architecture."""
  out = epath.Path(output)
  weights = {'params': jax.device_get(params),
             'batch_stats': jax.device_get(batch_stats)}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(out.absolute() / EXPORT_WEIGHTS_DIR, weights, force=True)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    (out / EXPORT_CONFIG_FILE).write_text(json.dumps(model_info, indent=2,
                                                     sort_keys=True))


def read_export(path: str) -> tuple[dict, dict]:
  p = epath.Path(path)
  if not (p / EXPORT_CONFIG_FILE).exists():
    raise UserError(f'{path!r} is not a simclr_jax export (no '
                            f'{EXPORT_CONFIG_FILE}).')
  info = json.loads((p / EXPORT_CONFIG_FILE).read_text())
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(p.absolute() / EXPORT_WEIGHTS_DIR)
  tree = meta.item_metadata.tree if hasattr(meta, 'item_metadata') else meta
  tree = getattr(tree, 'tree', tree)
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  weights = checkpointer.restore(p.absolute() / EXPORT_WEIGHTS_DIR,
                                 restore_args=restore_args)
  return info, weights
