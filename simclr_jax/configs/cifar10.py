"""SimCLR on CIFAR-10, the official README recipe (published: ~91% linear eval
with ResNet-18 (CIFAR stem), 94.0% with ResNet-50 in the paper).

Args: `depth=50` for the paper's ResNet-50; `runlocal` for a smoke run.
"""

from simclr_jax.configs import default


def get_config(arg=None):
  args = default.parse_arg(arg, depth=18, runlocal=False)
  config = default.get_config()
  config.dataset = 'cifar10'
  config.image_size = 32          # Small images: CIFAR stem, no blur, s = 0.5.
  config.model.depth = args.depth
  config.train.batch_size = 512
  config.train.epochs = 1000
  config.train.learning_rate = 1.0
  config.train.lr_scaling = 'linear'
  config.train.weight_decay = 1e-4
  config.train.temperature = 0.5
  config.train.checkpoint_every_steps = 5000
  config.evals.accuracy.every_steps = 5000
  if args.runlocal:
    config.model.width_multiplier = 0.125
    config.train.batch_size = 64
    config.train.steps = 4
    config.train.log_every_steps = 2
  return config


def get_sweep(hyper):
  """Temperature x batch size x learning rate, as the paper's CIFAR ablations."""
  return hyper.product([
      hyper.sweep('config.train.temperature', [0.1, 0.5, 1.0]),
      hyper.sweep('config.train.batch_size', [256, 512, 1024]),
      hyper.sweep('config.train.learning_rate', [0.5, 1.0, 1.5]),
  ])
