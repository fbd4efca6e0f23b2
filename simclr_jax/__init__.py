"""simclr-jax: SimCLR and SimCLRv2 in JAX/Flax, data-parallel over every device."""

import os

__version__ = '0.1.0'


def default_config_path() -> str:
  """Path of the embedded default config (pretraining on digits)."""
  here = os.path.dirname(os.path.abspath(__file__))
  for candidate in (os.path.join(here, '..', 'configs', 'digits.py'),
                    os.path.join(here, 'configs', 'digits.py')):
    if os.path.exists(candidate):
      return os.path.normpath(candidate)
  raise FileNotFoundError('configs/digits.py not found beside the package.')


def load_pretrained(path):
  """(module, variables) of an export; see simclr_jax.export.load_pretrained."""
  from simclr_jax import export  # pylint: disable=g-import-not-at-top
  return export.load_pretrained(path)
