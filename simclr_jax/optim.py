"""Optimisers and learning-rate schedules, all from optax.

LARS follows the official SimCLR implementation: weight decay is added to the
gradient before the trust ratio; batch-norm parameters, biases and the linear
heads (supervised head, online probe) are excluded from both weight decay and
trust-ratio adaptation. The heads get plain L2 weight decay in the loss
instead (`head_l2_penalty`), exactly as the official `add_weight_decay`.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct, traverse_util

HEAD_NAMES = ('sup_head', 'probe_head')
OPTIMIZERS = ('lars', 'momentum', 'adamw')
LR_SCALINGS = ('linear', 'sqrt', 'none')


def _path_mask(params, keep):
  """Pytree of bools from a predicate on the '/'-joined parameter path."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: keep('/'.join(map(str, path))) for path in flat})


def is_batch_norm_or_bias(path: str) -> bool:
  # Flax names BN parameters 'scale'/'bias' and Dense/Conv ones 'kernel'/'bias',
  # so the leaf name alone identifies them whatever the module is called.
  return path.rsplit('/', 1)[-1] in ('scale', 'bias')


def is_head(path: str) -> bool:
  return path.split('/', 1)[0] in HEAD_NAMES


def lars_mask(params):
  """True where LARS applies weight decay and trust-ratio adaptation."""
  return _path_mask(params,
                    lambda p: not (is_batch_norm_or_bias(p) or is_head(p)))


def head_l2_penalty(params, weight_decay: float):
  """Official L2 on the linear heads' kernels: wd * sum(w^2) / 2."""
  flat = traverse_util.flatten_dict(params)
  sq = [jnp.sum(jnp.square(v)) for k, v in flat.items()
        if is_head('/'.join(map(str, k))) and k[-1] == 'kernel']
  return weight_decay * 0.5 * sum(sq) if sq else jnp.float32(0)


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str):
  if scaling == 'linear':
    return base_lr * batch_size / 256.
  if scaling == 'sqrt':
    return base_lr * math.sqrt(batch_size)
  if scaling == 'none':
    return base_lr
  raise ValueError(f'config.train.lr_scaling={scaling!r}; one of {LR_SCALINGS}')


def schedule_steps(num_examples: int, batch_size: int, epochs: float,
                   warmup_epochs: float, steps: int = 0):
  """(total_steps, warmup_steps) with the official formulas.

  total = N * epochs // B + 1 and warmup = round(warmup_epochs * N // B),
  unless `steps` > 0 fixes the total (warm-up is then capped at the total).
  """
  total = int(steps) if steps > 0 else int(num_examples * epochs // batch_size + 1)
  warmup = int(round(warmup_epochs * num_examples // batch_size))
  return total, min(warmup, total)


@struct.dataclass
class Schedule:
  """Linear warm-up from 0 to `peak`, then cosine decay to 0 at `total_steps`.

  Its numbers are arrays, passed to the compiled train step as an argument:
  runs that differ only in length, warm-up or learning rate (a sweep, a
  resumed run given more steps) share one compiled program and the
  persistent compile cache. Written out rather than optax's
  warmup_cosine_decay_schedule, which checks its step counts in Python and
  so cannot take them as arrays; the values are the same to float rounding.
  """
  peak: Any
  total_steps: Any
  warmup_steps: Any

  @classmethod
  def create(cls, peak_lr: float, total_steps: int, warmup_steps: int):
    return cls(*(np.float32(v) for v in (peak_lr, total_steps, warmup_steps)))

  def __call__(self, step):
    step = jnp.asarray(step, jnp.float32)
    warmup = self.warmup_steps
    # optax's decay_steps: max(total, warmup + 1), i.e. max(total, 1) without
    # warm-up.
    total = jnp.maximum(self.total_steps, warmup + 1)
    rising = self.peak * step / jnp.maximum(warmup, 1)
    progress = jnp.clip((step - warmup) / (total - warmup), 0, 1)
    falling = self.peak * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup, rising, falling)


def make_optimizer(train_config, schedule, params, trainable=None):
  """The optax transformation for `train_config.optimizer`.

  Args:
    train_config: config.train.
    schedule: learning-rate schedule (step -> lr).
    params: parameter pytree (for the path-based masks).
    trainable: optional pytree of bools; False leaves get zero updates (frozen
      blocks in fine-tuning) and no weight decay.
  """
  name = train_config.optimizer
  wd = train_config.weight_decay
  decay_mask = lars_mask(params)
  if name == 'lars':
    tx = optax.lars(schedule, weight_decay=wd, weight_decay_mask=decay_mask,
                    trust_coefficient=train_config.lars_trust_coefficient,
                    trust_ratio_mask=decay_mask, momentum=train_config.momentum)
  elif name == 'momentum':
    tx = optax.chain(optax.add_decayed_weights(wd, decay_mask),
                     optax.sgd(schedule, momentum=train_config.momentum))
  elif name == 'adamw':
    tx = optax.adamw(schedule, weight_decay=wd, mask=decay_mask)
  else:
    raise ValueError(f'config.train.optimizer={name!r}; one of {OPTIMIZERS}')
  if trainable is not None:
    labels = jax.tree.map(lambda t: 'train' if t else 'freeze', trainable)
    tx = optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()},
                               labels)
  return tx
