"""LARS masks and update, learning-rate scaling and schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from simclr_jax import optim

PARAMS = {
    'encoder': {
        'stem': {'conv': {'kernel': jnp.full((3, 3, 3, 4), 0.5)},
                 'bn': {'scale': jnp.ones(4), 'bias': jnp.zeros(4)}},
    },
    'proj_head': {'dense_0': {'kernel': jnp.full((4, 4), 0.1)},
                  'bn_0': {'scale': jnp.ones(4), 'bias': jnp.zeros(4)}},
    'probe_head': {'kernel': jnp.full((4, 3), 0.2), 'bias': jnp.zeros(3)},
}


def _train_config(**kw):
  c = ml_collections.ConfigDict(dict(
      optimizer='lars', weight_decay=1e-2, momentum=0.9,
      lars_trust_coefficient=0.001))
  c.update(kw)
  return c


def test_lars_mask_excludes_exactly_bn_bias_and_heads():
  mask = traverse_util.flatten_dict(optim.lars_mask(PARAMS), sep='/')
  included = sorted(k for k, v in mask.items() if v)
  assert included == ['encoder/stem/conv/kernel', 'proj_head/dense_0/kernel']


def test_lars_one_step_matches_hand_computation():
  lr, wd, eeta, momentum = 0.5, 1e-2, 0.001, 0.9
  tx = optim.make_optimizer(_train_config(weight_decay=wd), lambda _: lr, PARAMS)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), PARAMS)
  state = tx.init(PARAMS)
  updates, state = tx.update(grads, state, PARAMS)
  flat_u = traverse_util.flatten_dict(updates, sep='/')
  flat_p = traverse_util.flatten_dict(PARAMS, sep='/')
  flat_g = traverse_util.flatten_dict(grads, sep='/')
  mask = traverse_util.flatten_dict(optim.lars_mask(PARAMS), sep='/')
  for k, u in flat_u.items():
    w, g = np.asarray(flat_p[k]), np.asarray(flat_g[k])
    if mask[k]:
      # Official LARS: decay into the gradient, then the trust ratio.
      g = g + wd * w
      trust = eeta * np.linalg.norm(w) / np.linalg.norm(g)
      expected = -lr * trust * g
    else:
      expected = -lr * g
    np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-5, err_msg=k)
  # Second step: momentum accumulates (v = m * v + lr * trust * g).
  updates2, _ = tx.update(grads, state, PARAMS)
  u1 = flat_u['probe_head/bias']
  u2 = traverse_util.flatten_dict(updates2, sep='/')['probe_head/bias']
  np.testing.assert_allclose(np.asarray(u2), (1 + momentum) * np.asarray(u1),
                             rtol=1e-5)


def test_frozen_leaves_get_zero_updates():
  trainable = jax.tree.map(lambda _: True, PARAMS)
  trainable['encoder'] = jax.tree.map(lambda _: False, PARAMS['encoder'])
  tx = optim.make_optimizer(_train_config(), lambda _: 1.0, PARAMS, trainable)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  for leaf in jax.tree.leaves(updates['encoder']):
    assert not np.any(np.asarray(leaf))
  assert np.any(np.asarray(updates['proj_head']['dense_0']['kernel']))


@pytest.mark.parametrize('name', ['momentum', 'adamw'])
def test_other_optimizers_step(name):
  tx = optim.make_optimizer(_train_config(optimizer=name), lambda _: 0.1, PARAMS)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert all(np.all(np.isfinite(np.asarray(u))) for u in jax.tree.leaves(updates))


def test_unknown_optimizer():
  with pytest.raises(ValueError, match='config.train.optimizer'):
    optim.make_optimizer(_train_config(optimizer='sgdx'), lambda _: 0.1, PARAMS)


def test_learning_rate_scaling():
  assert optim.scaled_learning_rate(0.3, 4096, 'linear') == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.075, 4096, 'sqrt') == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.1, 512, 'none') == 0.1
  with pytest.raises(ValueError, match='lr_scaling'):
    optim.scaled_learning_rate(0.1, 512, 'cubic')


def test_schedule_warmup_peak_end():
  total, warmup = optim.schedule_steps(1_281_167, 4096, 100, 10)
  assert total == 1_281_167 * 100 // 4096 + 1
  assert warmup == round(10 * 1_281_167 // 4096)
  sched = optim.Schedule.create(4.8, total, warmup)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(warmup // 2)), 4.8 * (warmup // 2) / warmup,
                             rtol=1e-5)
  np.testing.assert_allclose(float(sched(warmup)), 4.8, rtol=1e-6)
  mid = warmup + (total - warmup) // 2
  np.testing.assert_allclose(float(sched(mid)), 2.4, rtol=1e-3)
  assert float(sched(total)) == pytest.approx(0.0, abs=1e-6)
  # Fixed number of steps, no warm-up.
  total, warmup = optim.schedule_steps(1000, 100, 10, 0, steps=7)
  assert (total, warmup) == (7, 0)
  assert float(optim.Schedule.create(1.0, 7, 0)(0)) == 1.0


@pytest.mark.parametrize('peak,total,warmup', [
    (4.8, 31_276, 3_127), (1.0, 7, 0), (0.3, 100, 100), (0.5, 393, 39),
    (2.0, 1, 0)])
def test_schedule_equals_optax(peak, total, warmup):
  ours = optim.Schedule.create(peak, total, warmup)
  if warmup:
    theirs = optax.warmup_cosine_decay_schedule(0.0, peak, warmup,
                                                max(total, warmup + 1), 0.0)
  else:
    theirs = optax.cosine_decay_schedule(peak, max(total, 1))
  steps = np.unique(np.r_[np.arange(min(total + 5, 300)),
                          np.linspace(0, total + 10, 200).astype(int)])
  np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(theirs)(steps),
                             rtol=0, atol=1e-6 * peak)


def test_head_l2_penalty_only_on_head_kernels():
  pen = optim.head_l2_penalty(PARAMS, 0.1)
  expected = 0.1 * 0.5 * float(np.sum(np.square(PARAMS['probe_head']['kernel'])))
  np.testing.assert_allclose(float(pen), expected, rtol=1e-6)
