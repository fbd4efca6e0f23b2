"""SimCLRv2 pretraining on ImageNet: ResNet-152 3x with selective kernels.

Published: 795M parameters, 79.8% linear eval, 74.9% / 80.1% after fine-tuning
on 1% / 10% labels. 3-layer projection head, weight decay 1e-4, lr 0.075 x
sqrt(B), 800 epochs; `memory` turns on the MoCo-style memory of negatives.
"""

from simclr_jax.configs import default


def get_config(arg=None):
  args = default.parse_arg(arg, epochs=800, memory=False)
  config = default.get_config()
  config.dataset = 'imagenet2012'
  config.eval_split = 'validation'
  config.image_size = 224
  config.model.depth = 152
  config.model.width_multiplier = 3.0
  config.model.sk_ratio = 0.0625
  config.model.num_proj_layers = 3
  config.model.ft_proj_selector = 1
  config.model.dtype = 'bfloat16'
  config.train.batch_size = 4096
  config.train.epochs = args.epochs
  config.train.learning_rate = 0.075
  config.train.lr_scaling = 'sqrt'
  config.train.weight_decay = 1e-4
  config.train.temperature = 0.1
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  config.evals.accuracy.every_steps = 5000
  config.evals.batch_size = 1024
  if args.memory:
    config.memory.size = 65536
    config.memory.ema_decay = 0.999
  return config
