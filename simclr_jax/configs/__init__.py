"""The packaged configs (ml_collections), and how a `--config` value finds one.

Each module defines `get_config(arg=None)`; the others import `default` and
override what differs.
"""

import difflib
import os

from simclr_jax.errors import UserError

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(DIRECTORY)
                if f.endswith('.py') and not f.startswith('_'))


def find(spec: str) -> str:
  """'path-or-name[:arg]' -> 'absolute/path.py[:arg]'.

  A path that exists is used as given; otherwise a bare name or a
  `configs/<name>.py` path is looked up among the packaged configs, so README
  commands work from any directory.
  """
  path, sep, arg = spec.partition(':')
  expanded = os.path.expanduser(path)
  if os.path.isfile(expanded):
    return os.path.abspath(expanded) + sep + arg
  name = os.path.basename(path)
  name = name[:-3] if name.endswith('.py') else name
  parent = os.path.basename(os.path.dirname(os.path.normpath(path)))
  if parent in ('', 'configs') and name in names():
    return os.path.join(DIRECTORY, name + '.py') + sep + arg
  close = difflib.get_close_matches(name, names(), n=1)
  raise UserError(
      f'Config file not found: {os.path.abspath(expanded)} (--config={spec}).',
      hint=(f'did you mean --config={close[0]}? ' if close else '') +
      'Packaged configs: ' + ', '.join(names()) + '.')
