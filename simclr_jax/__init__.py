"""simclr-jax: SimCLR and SimCLRv2 in JAX/Flax, data-parallel over every device."""

__version__ = '0.1.0'


def default_config_path() -> str:
  """Path of the embedded default config (pretraining on digits)."""
  import os  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                      'digits.py')


def load_pretrained(path):
  """(module, variables) of an export (`simclr-jax export`).

  `module.apply(variables, images, train=False)`: images [N, H, W, 3], float
  in [0, 1] (anything else is one ValueError saying what to change) -> dict
  'h' [N, module.h_dim], 'proj' (list, proj[0] = h), 'z' = proj[-1], and
  'sup_logits' / 'probe_logits' over `module.class_names`. Details:
  simclr_jax.export.load_pretrained.
  """
  from simclr_jax import export  # pylint: disable=g-import-not-at-top
  return export.load_pretrained(path)


def import_official(source, output, ft_proj_selector=None):
  """Imports an official TF2 SavedModel or checkpoint as an export; see
  simclr_jax.official.import_official."""
  from simclr_jax import official  # pylint: disable=g-import-not-at-top
  return official.import_official(source, output,
                                  ft_proj_selector=ft_proj_selector)
