"""SimCLRv1 on ImageNet: ResNet-50 1x, batch 4096, 100 epochs, LARS.

Published: 69.1% linear eval (69.3% in the paper). Args: `sqrt` for lr
0.075 x sqrt(B) instead of 0.3 x B/256; `epochs=N`.
"""

from simclr_jax.configs import default


def get_config(arg=None):
  args = default.parse_arg(arg, sqrt=False, epochs=100)
  config = default.get_config()
  config.dataset = 'imagenet2012'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.image_size = 224
  config.model.depth = 50
  config.model.width_multiplier = 1.0
  config.model.num_proj_layers = 2
  config.train.batch_size = 4096
  config.train.epochs = args.epochs
  config.train.warmup_epochs = 10
  if args.sqrt:
    config.train.learning_rate, config.train.lr_scaling = 0.075, 'sqrt'
  else:
    config.train.learning_rate, config.train.lr_scaling = 0.3, 'linear'
  config.train.weight_decay = 1e-6
  config.train.temperature = 0.1
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  config.evals.accuracy.every_steps = 5000
  config.evals.batch_size = 1024
  config.model.dtype = 'bfloat16'
  return config
