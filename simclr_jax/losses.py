"""Losses of SimCLR / SimCLRv2, written as per-device functions with named axes.

Every loss here is meant to run inside `jax.shard_map` over the data axis (or
outside it with `axis_name=None`, i.e. one device). The convention is pmap's:
each device returns a loss whose `pmean` over the axis is the global loss, so
that `pmean` of the per-device gradients is the gradient of the global loss.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import optax

# Official implementation's constant for masking self-similarities.
LARGE_NUM = 1e9


def _axis_size(axis_name: Optional[str]) -> int:
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def _axis_index(axis_name: Optional[str]):
  return 0 if axis_name is None else jax.lax.axis_index(axis_name)


def _gather(x, axis_name: Optional[str]):
  """All devices' rows, concatenated in device order (identity on one device)."""
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def nt_xent(z1: jax.Array,
            z2: jax.Array,
            *,
            temperature: float,
            hidden_norm: bool = True,
            axis_name: Optional[str] = None,
            queue: Optional[jax.Array] = None,
            queue_valid: Optional[jax.Array] = None):
  """NT-Xent as the official `add_contrastive_loss`, with global negatives.

  Args:
    z1, z2: [b, d] local embeddings of the first and second views.
    temperature: softmax temperature.
    hidden_norm: L2-normalise embeddings first.
    axis_name: data-parallel axis; keys are gathered from every device on it.
    queue: optional [K, d] extra negatives (SimCLRv2 memory, already
      normalised keys from the momentum encoder), shared by all devices.
    queue_valid: optional [K] bool; rows not yet filled are masked out.

  Returns:
    (loss, aux): loss is the mean over the local batch of the two directions'
    cross-entropies *summed*, as the official code does; aux holds
    `contrast_acc`, `contrast_entropy` (of softmax(logits_ab)).
  """
  z1 = z1.astype(jnp.float32)
  z2 = z2.astype(jnp.float32)
  if hidden_norm:
    z1 = l2_normalize(z1)
    z2 = l2_normalize(z2)
  b = z1.shape[0]
  z1_all = _gather(z1, axis_name)
  z2_all = _gather(z2, axis_name)
  n_all = z1_all.shape[0]
  # Local row i's partner sits at column offset + i of the gathered keys.
  partner = jnp.arange(b) + _axis_index(axis_name) * b
  self_mask = jax.nn.one_hot(partner, n_all) * LARGE_NUM

  logits_aa = z1 @ z1_all.T / temperature - self_mask
  logits_bb = z2 @ z2_all.T / temperature - self_mask
  logits_ab = z1 @ z2_all.T / temperature
  logits_ba = z2 @ z1_all.T / temperature
  logits_a = [logits_ab, logits_aa]
  logits_b = [logits_ba, logits_bb]
  if queue is not None and queue.shape[0] > 0:
    queue = jax.lax.stop_gradient(queue.astype(jnp.float32))
    empty = 0. if queue_valid is None else (1. - queue_valid) * LARGE_NUM
    logits_a.append(z1 @ queue.T / temperature - empty)
    logits_b.append(z2 @ queue.T / temperature - empty)
  logits_a = jnp.concatenate(logits_a, axis=1)
  logits_b = jnp.concatenate(logits_b, axis=1)
  loss_a = optax.softmax_cross_entropy_with_integer_labels(logits_a, partner)
  loss_b = optax.softmax_cross_entropy_with_integer_labels(logits_b, partner)
  loss = jnp.mean(loss_a + loss_b)

  contrast_acc = jnp.mean(jnp.argmax(logits_ab, axis=1) == partner)
  prob_ab = jax.nn.softmax(logits_ab, axis=1)
  contrast_entropy = -jnp.mean(
      jnp.sum(prob_ab * jnp.log(prob_ab + 1e-8), axis=1))
  return loss, {'contrast_acc': contrast_acc,
                'contrast_entropy': contrast_entropy}


def l2_normalize(x, eps=1e-12):
  # Same as tf.math.l2_normalize: x / sqrt(max(sum(x^2), eps)).
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps))


def masked_mean(values: jax.Array, mask: jax.Array,
                axis_name: Optional[str] = None) -> jax.Array:
  """Per-device share of the global masked mean (pmean gives the exact mean).

  Devices may hold different numbers of valid rows (label fractions, padding),
  so a per-device mean would weight examples unevenly. This returns
  axis_size * local_sum / global_count: its pmean over the axis is
  global_sum / global_count, exactly what one device would compute.
  """
  mask = mask.astype(jnp.float32)
  local_sum = jnp.sum(values * mask)
  count = jnp.sum(mask)
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name)
  return _axis_size(axis_name) * local_sum / jnp.maximum(count, 1.0)


def cross_entropy(logits, labels, mask, axis_name=None):
  """Masked softmax cross-entropy with integer labels (global mean share)."""
  labels = jnp.maximum(labels, 0)  # Unknown labels (-1) are masked anyway.
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  return masked_mean(ce, mask, axis_name)


def distillation(student_logits, teacher_logits, *, temperature: float,
                 mask=None, axis_name=None):
  """CE(softmax(teacher / T), softmax(student / T)), as SimCLRv2."""
  teacher_probs = jax.nn.softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature)
  ce = optax.softmax_cross_entropy(
      student_logits.astype(jnp.float32) / temperature, teacher_probs)
  if mask is None:
    mask = jnp.ones(ce.shape, jnp.float32)
  return masked_mean(ce, mask, axis_name)


def topk_correct(logits, labels, k: int):
  """1.0 where the label is among the k largest logits."""
  topk = jax.lax.top_k(logits, k)[1]
  return jnp.any(topk == labels[:, None], axis=1).astype(jnp.float32)
