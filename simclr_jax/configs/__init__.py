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


# Images this small (CIFAR, digits) get the small-image settings below.
SMALL_IMAGE_SIZE = 32


def fill_auto_fields(config) -> None:
  """Replaces the 'auto' (None) fields of `config` by their values, in place.

  The one place their meaning lives: for images of at most SMALL_IMAGE_SIZE
  pixels, the CIFAR stem, colour strength 0.5 and no blur (the official
  CIFAR-10 recipe); otherwise the ImageNet stem, strength 1.0 and blur. Runs
  once per run (train.build_experiment) and on configs read back from disk.
  """
  small = config.image_size <= SMALL_IMAGE_SIZE
  if config.model.get('cifar_stem') is None:
    config.model.cifar_stem = small
  aug = config.get('augment')
  if aug is not None:
    if aug.color_jitter_strength is None:
      aug.color_jitter_strength = 0.5 if small else 1.0
    if aug.use_blur is None:
      aug.use_blur = not small
