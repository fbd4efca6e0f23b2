"""simclr-jax: SimCLR and SimCLRv2 in JAX/Flax, data-parallel over every device."""

__version__ = '0.1.0'


def default_config_path() -> str:
  """Path of the embedded default config (pretraining on digits)."""
  import os  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                      'digits.py')


def load_pretrained(path):
  """(module, variables) of an export; see simclr_jax.export.load_pretrained."""
  from simclr_jax import export  # pylint: disable=g-import-not-at-top
  return export.load_pretrained(path)


def import_official(source, output, ft_proj_selector=None):
  """Imports an official TF2 SavedModel or checkpoint as an export; see
  simclr_jax.official.import_official."""
  from simclr_jax import official  # pylint: disable=g-import-not-at-top
  return official.import_official(source, output,
                                  ft_proj_selector=ft_proj_selector)
