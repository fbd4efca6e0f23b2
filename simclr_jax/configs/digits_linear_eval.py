"""Linear evaluation on digits: SimCLR's protocol, scaled down.

Frozen encoder (BN in inference mode), linear head on h, momentum 0.9,
lr 0.1 x B/256, no weight decay, no warm-up, crop only (flips are off for
digits, as in pretraining), 90 epochs of the 1257 train images at batch 256
(442 steps). Args: `init=PATH` (a pretraining workdir or one of its
checkpoints/<step>), `fraction=1.0` (of the labels), `runlocal` (4 steps).
(Measured accuracy: the README walk-through.)
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
