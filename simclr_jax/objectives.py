"""What each training mode optimises, for the one trainer in `train.py`.

An objective sees the model outputs of one device's slice of the batch and
returns a loss share (pmean over devices = global loss) plus metrics. The
trainer owns everything else: forward pass, gradients, optimiser, BN state.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

from simclr_jax import losses


@dataclasses.dataclass(frozen=True)
class Objective:
  """Per-mode settings of the train step.

  Attributes:
    logits_key: model output used for classification metrics / evaluation.
    loss_fn: (out, batch, extras, axis_name) -> (loss, metrics dict).
  """
  logits_key: str
  loss_fn: Callable[..., Any]


def _classification_metrics(logits, labels, mask, axis_name):
  correct = losses.topk_correct(logits, jnp.maximum(labels, 0), 1)
  return {'train_top1': losses.masked_mean(correct, mask, axis_name)}


def contrastive(config) -> Objective:
  """SimCLR pretraining: NT-Xent on z (+ the online linear probe on h)."""
  probe = config.train.lineareval_while_pretraining

  def loss_fn(out, batch, extras, axis_name):
    z1, z2 = jnp.split(out['z'], 2, axis=0)
    loss, metrics = losses.nt_xent(
        z1, z2, temperature=config.train.temperature,
        hidden_norm=config.train.hidden_norm, axis_name=axis_name,
        queue=extras.get('queue'), queue_valid=extras.get('queue_valid'))
    metrics = dict(metrics, contrast_loss=loss)
    if probe and 'probe_logits' in out:
      # Both views carry the image's label, as the official code.
      labels = jnp.concatenate([batch['labels']] * 2)
      mask = jnp.concatenate([batch['label_mask']] * 2)
      probe_loss = losses.cross_entropy(out['probe_logits'], labels, mask,
                                        axis_name)
      loss = loss + probe_loss
      metrics['probe_loss'] = probe_loss
      metrics.update({'probe_' + k: v for k, v in _classification_metrics(
          out['probe_logits'], labels, mask, axis_name).items()})
    return loss, metrics

  return Objective(logits_key='probe_logits', loss_fn=loss_fn)


def supervised(config) -> Objective:
  """Fine-tuning, linear evaluation, supervised training from scratch:
  cross-entropy of the supervised head."""
  del config

  def loss_fn(out, batch, extras, axis_name):
    del extras
    loss = losses.cross_entropy(out['sup_logits'], batch['labels'],
                                batch['label_mask'], axis_name)
    metrics = _classification_metrics(out['sup_logits'], batch['labels'],
                                      batch['label_mask'], axis_name)
    return loss, dict(metrics, sup_loss=loss)

  return Objective(logits_key='sup_logits', loss_fn=loss_fn)


def distillation(config) -> Objective:
  """SimCLRv2 distillation: match the frozen teacher's softened predictions."""
  temperature = config.distill.temperature
  alpha = config.distill.alpha

  def loss_fn(out, batch, extras, axis_name):
    teacher_logits = extras['teacher_logits']
    distill_loss = losses.distillation(out['sup_logits'], teacher_logits,
                                       temperature=temperature,
                                       axis_name=axis_name)
    metrics = {'distill_loss': distill_loss}
    loss = distill_loss
    if alpha:
      sup = losses.cross_entropy(out['sup_logits'], batch['labels'],
                                 batch['label_mask'], axis_name)
      loss = loss + alpha * sup
      metrics['sup_loss'] = sup
    agree = (jnp.argmax(out['sup_logits'], -1) == jnp.argmax(teacher_logits, -1))
    metrics['teacher_agreement'] = losses.masked_mean(
        agree.astype(jnp.float32), jnp.ones_like(agree, jnp.float32), axis_name)
    return loss, metrics

  return Objective(logits_key='sup_logits', loss_fn=loss_fn)


def for_mode(config) -> Optional[Objective]:
  mode = config.mode
  if mode == 'pretrain':
    return contrastive(config)
  if mode in ('finetune', 'linear_eval', 'supervised'):
    return supervised(config)
  if mode == 'distill':
    return distillation(config)
  return None
