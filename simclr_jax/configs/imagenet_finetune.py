"""SimCLRv2 fine-tuning on 1% or 10% of ImageNet labels (official subsets).

LARS, lr 0.005 x sqrt(B), no weight decay, batch 1024, global BN, 3-layer
head, fine-tuned from the first projection layer; 60 epochs (1%) / 30 (10%).
Args: `pct=1` or `pct=10`; `init=PATH` of the pretraining workdir.
"""

from simclr_jax.configs import imagenet_simclrv2_r152_3x_sk


def get_config(arg=None):
  from simclr_jax.configs import default  # pylint: disable=g-import-not-at-top
  args = default.parse_arg(arg, pct=10, init='')
  config = imagenet_simclrv2_r152_3x_sk.get_config()
  config.mode = 'finetune'
  config.init_checkpoint = args.init
  config.label_fraction = args.pct / 100
  config.model.ft_proj_selector = 1
  config.train.batch_size = 1024
  config.train.epochs = {1: 60, 10: 30}.get(args.pct, 30)
  config.train.optimizer = 'lars'
  config.train.learning_rate = 0.005
  config.train.lr_scaling = 'sqrt'
  config.train.weight_decay = 0.0
  config.train.warmup_epochs = 0
  return config
