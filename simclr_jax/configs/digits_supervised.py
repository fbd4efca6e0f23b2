"""Supervised training from scratch on digits: the baseline for fine-tuning.

digits_finetune.py exactly (head on projection layer 1, LARS lr 0.05 x
sqrt(B), batch 64, no weight decay, 100 epochs of the labelled subset: 199
steps at 10%), but randomly initialised, so that the two differ only by the
pretraining. Args: `fraction=0.1` (of the labels), `runlocal` (4 steps).
(Measured accuracy: the README walk-through.)
"""

from simclr_jax.configs import default, digits_finetune


def get_config(arg=None):
  args = default.parse_arg(arg, fraction=0.1, runlocal=False)
  config = digits_finetune.get_config(
      f'fraction={args.fraction}' + (',runlocal' if args.runlocal else ''))
  config.mode = 'supervised'
  config.init_checkpoint = ''
  return config
