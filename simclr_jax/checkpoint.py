"""Checkpoints with orbax: train-state saves and resumes, weights-only loading,
and the export format handed to fine-tuning elsewhere.

Layout of a workdir:
  config.json            the run's config (written once, by process 0)
  checkpoints/<step>/    orbax CheckpointManager steps, item 'state'
An export directory:
  model_config.json      architecture (config.model, image_size, num_classes)
  weights/               orbax PyTree of {'params', 'batch_stats'}
"""

import json
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
EXPORT_CONFIG_FILE = 'model_config.json'
EXPORT_WEIGHTS_DIR = 'weights'


def make_manager(workdir: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(
      epath.Path(workdir) / CHECKPOINT_DIR, options=options,
      item_names=('state',))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state)), force=force)


def restore_latest(manager: ocp.CheckpointManager, target: Any):
  """Restores the newest readable step onto `target`'s shapes and shardings.

  A latest step that cannot be read (partial or corrupt files) is reported and
  the previous one is used. Returns (state, step) or (None, None).
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
      return restored['state'], step
    except Exception as e:  # pylint: disable=broad-except
      logging.error('Checkpoint step %d in %s is unreadable (%s: %s); trying '
                    'the previous one.', step, manager.directory,
                    type(e).__name__, str(e)[:500])
  return None, None


def _as_numpy_restore(manager, step):
  meta = manager.item_metadata(step)['state']
  tree = meta.tree if hasattr(meta, 'tree') else meta
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(restore_args=restore_args)))['state']


def load_weights(path: str) -> dict:
  """Weights only ({'params', 'batch_stats', 'config'}) from a run's workdir.

  `path` is a workdir (newest readable step) or a workdir's step directory
  `<workdir>/checkpoints/<step>`. The optimiser state and step are ignored.
  """
  p = epath.Path(path)
  step = None
  if p.name.isdigit() and p.parent.name == CHECKPOINT_DIR:
    step, p = int(p.name), p.parent.parent
  if not (p / CHECKPOINT_DIR).exists():
    raise FileNotFoundError(
        f'No checkpoints under {path!r}: expected a workdir written by '
        f'simclr_jax (with {CHECKPOINT_DIR}/ and {CONFIG_FILE}).')
  manager = make_manager(os.fspath(p), read_only=True, async_save=False)
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f'{path!r} has no saved checkpoint step.')
  errors = []
  for s in steps:
    try:
      state = _as_numpy_restore(manager, s)
      return {'params': state['params'],
              'batch_stats': state.get('batch_stats', {}),
              'config': read_config(os.fspath(p)), 'step': s}
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'step {s}: {type(e).__name__}: {str(e)[:300]}')
      logging.error('Cannot read checkpoint step %d of %s: %s', s, path, errors[-1])
  raise ValueError(f'No readable checkpoint in {path!r}: ' + '; '.join(errors))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def read_config(workdir: str) -> Optional[ml_collections.ConfigDict]:
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  return ml_collections.ConfigDict(json.loads(path.read_text()))


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
    raise ValueError(
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
    raise FileNotFoundError(f'{path!r} is not a simclr_jax export (no '
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
