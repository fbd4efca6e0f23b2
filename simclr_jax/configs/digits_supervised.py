"""Supervised training from scratch on digits: the baseline for fine-tuning.

The network and optimiser of digits_finetune.py (head on projection layer 1,
LARS lr 0.05 x sqrt(B), batch 64, no weight decay), randomly initialised, 300
steps: the "Supervised from scratch" row of docs/results.md (86.0% top-1 on
10% of the labels). Args: `fraction=0.1` (of the labels), `runlocal` (4 steps).
"""

from simclr_jax.configs import default, digits_finetune


def get_config(arg=None):
  args = default.parse_arg(arg, fraction=0.1, runlocal=False)
  config = digits_finetune.get_config(
      f'fraction={args.fraction}' + (',runlocal' if args.runlocal else ''))
  config.mode = 'supervised'
  config.init_checkpoint = ''
  config.train.steps = 300 if not args.runlocal else 4
  return config
