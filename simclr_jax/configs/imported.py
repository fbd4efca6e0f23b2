"""Runs from an imported official model (`simclr-jax import`), on ImageNet
recipes, with the architecture read from the import (nothing typed twice).

Args: `init=DIR` (the import's output), `mode=` `finetune` (SimCLRv2
fine-tuning, configs/imagenet_finetune.py, with `pct=1|10|100`),
`linear_eval` (configs/imagenet_linear_eval.py) or `eval`. Other datasets:
add `--config.dataset=...`.
"""

import json

from etils import epath

from simclr_jax.configs import default, imagenet_finetune, imagenet_linear_eval

# config.model fields that the weights fix.
ARCHITECTURE = ('depth', 'width_multiplier', 'sk_ratio', 'se_ratio',
                'cifar_stem', 'proj_head_mode', 'num_proj_layers',
                'proj_out_dim')


def get_config(arg=None):
  args = default.parse_arg(arg, init='', mode='finetune', pct=10)
  if not args.init:
    raise ValueError('configs/imported.py needs init=DIR (a `simclr-jax '
                     'import` output).')
  info_file = epath.Path(args.init) / 'model_config.json'
  if not info_file.exists():
    raise FileNotFoundError(f'{args.init!r} is not an export (no model_'
                            'config.json); run `simclr-jax import` first.')
  model = json.loads(info_file.read_text())['model']
  if args.mode == 'finetune':
    config = imagenet_finetune.get_config(f'pct={args.pct}')
  elif args.mode in ('linear_eval', 'eval'):
    config = imagenet_linear_eval.get_config()
    config.mode = args.mode
  else:
    raise ValueError(f'mode={args.mode!r}: use finetune, linear_eval or eval.')
  config.init_checkpoint = args.init
  for field in ARCHITECTURE:
    config.model[field] = model[field]
  return config
