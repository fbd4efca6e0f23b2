"""Paths resolved once, at the start of a command.

Orbax needs absolute paths and a later `chdir` must not move a run, so local
paths (relative or with `~`) become absolute; `gs://` and other URLs stay.
"""

import os

from simclr_jax.errors import UserError

FOLDER_PREFIX = 'folder:'


def is_url(path: str) -> bool:
  return '://' in path


def resolve(path: str) -> str:
  """Absolute local path, or the URL unchanged; '' stays '' (not set)."""
  if not path or is_url(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


def resolve_workdir(path: str, field: str = '--workdir') -> str:
  """A workdir that is a directory or can become one."""
  if not path:
    raise UserError(f'{field} is required.')
  path = resolve(path)
  if not is_url(path):
    if os.path.exists(path) and not os.path.isdir(path):
      raise UserError(f'{field}={path} exists and is not a directory.')
    parent = path
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
      raise UserError(f'{field}={path} cannot be created: {parent} is not a '
                      'writable directory.')
  return path


def resolve_config_paths(config) -> None:
  """Makes the config's path fields absolute, in place (before it is saved)."""
  for field in ('init_checkpoint', 'data_dir'):
    if config.get(field):
      config[field] = resolve(config[field])
  if config.get('distill') and config.distill.get('teacher_checkpoint'):
    config.distill.teacher_checkpoint = resolve(
        config.distill.teacher_checkpoint)
  dataset = config.get('dataset')
  if isinstance(dataset, str) and dataset.startswith(FOLDER_PREFIX):
    config.dataset = FOLDER_PREFIX + resolve(dataset[len(FOLDER_PREFIX):])
