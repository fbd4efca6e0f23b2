"""Linear evaluation on ImageNet, the paper's protocol: frozen encoder, linear
head on h, momentum optimiser, lr 0.1 x B/256, no weight decay, 90 epochs,
crop+flip. Args: `init=PATH` of the pretraining workdir."""

from simclr_jax.configs import default, imagenet_simclr_r50


def get_config(arg=None):
  args = default.parse_arg(arg, init='')
  config = imagenet_simclr_r50.get_config()
  config.mode = 'linear_eval'
  config.init_checkpoint = args.init
  config.train.optimizer = 'momentum'
  config.train.learning_rate = 0.1
  config.train.lr_scaling = 'linear'
  config.train.weight_decay = 0.0
  config.train.epochs = 90
  config.train.warmup_epochs = 0
  return config
