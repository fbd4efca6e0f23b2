"""A small sweep on digits that really runs on 2 CPU cores (4 short runs):
  python launch/sweep.py --config=configs/digits_sweep.py --workdir=runs/sweep
"""

from simclr_jax.configs import digits


def get_config(arg=None):
  config = digits.get_config(arg)
  config.train.steps = 40
  config.evals.accuracy.every_steps = 0
  return config


def get_sweep(hyper):
  return hyper.product([
      hyper.sweep('config.train.temperature', [0.1, 0.2]),
      hyper.sweep('config.train.learning_rate', [0.5, 1.0]),
  ])
