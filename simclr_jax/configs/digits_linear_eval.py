"""Linear evaluation on digits: SimCLR's protocol, scaled down.

Frozen encoder (BN in inference mode), linear head on h, momentum 0.9,
lr 0.1 x B/256, no weight decay, no warm-up, crop only (flips are off for
digits, as in pretraining), 90 epochs of the 1257 train images at batch 256
(442 steps). Args: `init=PATH` (a pretraining workdir or one of its
checkpoints/<step>), `fraction=1.0` (of the labels), `runlocal` (4 steps).

Measured on an encoder pretrained for 150 of digits.py's 590 steps: test
top-1 93.2% (train loss 1.13 at step 20, 0.48 at the end); the same recipe on
a random encoder 29.3%. The pretraining recipe it replaces (LARS, lr 1.0,
warm-up) spiked to loss 5.2 at its peak rate here (92.4% after decaying);
on a fully pretrained encoder it diverged (issue 13: loss 2.3 -> 11.7, 16%).
"""

from simclr_jax.configs import default, digits


def get_config(arg=None):
  args = default.parse_arg(arg, init='', fraction=1.0, runlocal=False)
  config = digits.get_config('runlocal' if args.runlocal else None)
  config.mode = 'linear_eval'
  config.init_checkpoint = args.init
  config.label_fraction = args.fraction
  config.train.batch_size = 256
  config.train.epochs = 90
  config.train.steps = 0 if not args.runlocal else 4
  config.train.optimizer = 'momentum'
  config.train.momentum = 0.9
  config.train.learning_rate = 0.1
  config.train.lr_scaling = 'linear'
  config.train.weight_decay = 0.0
  config.train.warmup_epochs = 0
  config.evals.accuracy.every_steps = 0
  return config
