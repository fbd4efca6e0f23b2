"""SimCLRv2 fine-tuning on digits from a digits pretraining workdir.

Args: `init=PATH` (pretraining workdir), `fraction=0.1`, `selector=1`,
`runlocal` (4 steps).
(Measured accuracy: the README walk-through.)
"""

from simclr_jax.configs import default, digits


def get_config(arg=None):
  args = default.parse_arg(arg, init='', fraction=0.1, selector=1,
                           runlocal=False)
  config = digits.get_config('runlocal' if args.runlocal else None)
  config.mode = 'finetune'
  config.init_checkpoint = args.init
  config.label_fraction = args.fraction
  config.model.ft_proj_selector = args.selector
  config.train.batch_size = 64
  config.train.epochs = 100
  config.train.steps = 0 if not args.runlocal else 4
  config.train.learning_rate = 0.05
  config.train.lr_scaling = 'sqrt'
  config.train.weight_decay = 0.0
  config.train.warmup_epochs = 0
  config.evals.accuracy.every_steps = 0
  return config
