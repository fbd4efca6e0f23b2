"""NT-Xent, distillation and masked means against direct NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import losses, parallel


def numpy_nt_xent(z1, z2, temperature, queue=None):
  """The official formula on one device, written out with NumPy (float64)."""
  z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
  z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  n = len(z1)
  eye = np.eye(n) * losses.LARGE_NUM

  def ce(logits, labels):
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]

  def direction(a, b):
    parts = [a @ b.T / temperature, a @ a.T / temperature - eye]
    if queue is not None:
      q = queue / np.linalg.norm(queue, axis=1, keepdims=True)
      parts.append(a @ q.T / temperature)
    return ce(np.concatenate(parts, 1), np.arange(n))

  return np.mean(direction(z1, z2) + direction(z2, z1))


def _random(n, d, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          rng.normal(size=(n, d)).astype(np.float32))


@pytest.mark.parametrize('temperature', [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(temperature):
  z1, z2 = _random(16, 8)
  loss, aux = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2),
                             temperature=temperature)
  np.testing.assert_allclose(float(loss), numpy_nt_xent(z1, z2, temperature),
                             rtol=1e-5)
  assert 0 <= float(aux['contrast_acc']) <= 1
  assert 0 <= float(aux['contrast_entropy']) <= np.log(16) + 1e-4


def test_nt_xent_with_queue_matches_numpy():
  z1, z2 = _random(8, 4)
  queue = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
  qn = queue / np.linalg.norm(queue, axis=1, keepdims=True)
  loss, _ = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), temperature=0.2,
                           queue=jnp.asarray(qn))
  np.testing.assert_allclose(float(loss), numpy_nt_xent(z1, z2, 0.2, queue),
                             rtol=1e-5)
  empty, _ = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), temperature=0.2,
                            queue=jnp.zeros((0, 4)))
  np.testing.assert_allclose(float(empty), numpy_nt_xent(z1, z2, 0.2), rtol=1e-5)


def test_perfect_alignment_approaches_minimum():
  # Orthogonal embeddings, each view equal to its partner: at low temperature
  # the loss tends to 0 (its minimum) and the partner is always found.
  z = np.eye(8, dtype=np.float32)
  loss, aux = losses.nt_xent(jnp.asarray(z), jnp.asarray(z), temperature=0.05)
  assert float(loss) < 1e-6
  assert float(aux['contrast_acc']) == 1.0
  # Higher temperature: same embeddings, larger loss (softer distribution).
  warm, _ = losses.nt_xent(jnp.asarray(z), jnp.asarray(z), temperature=1.0)
  assert float(warm) > float(loss)
  # Random embeddings are far from the minimum.
  z1, z2 = _random(8, 8)
  rand, _ = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), temperature=0.05)
  assert float(rand) > 1.0


def test_temperature_scales_logits():
  # Without normalisation, scaling the embeddings by c equals dividing T by c^2.
  z1, z2 = _random(8, 4)
  a, _ = losses.nt_xent(jnp.asarray(2 * z1), jnp.asarray(2 * z2),
                        temperature=1.0, hidden_norm=False)
  b, _ = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), temperature=0.25,
                        hidden_norm=False)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


@pytest.mark.parametrize('num_devices', [8, 2])
def test_sharded_loss_and_grads_equal_one_device(num_devices):
  """Global negatives: N devices == 1 device on the same global batch."""
  z1, z2 = _random(32, 16, seed=3)
  mesh = parallel.make_mesh(jax.devices()[:num_devices])

  def per_device(z1, z2):
    def f(z1, z2):
      return losses.nt_xent(z1, z2, temperature=0.1,
                            axis_name=parallel.DATA_AXIS)[0]
    loss, grads = jax.value_and_grad(f, argnums=(0, 1))(z1, z2)
    # Gradients w.r.t. local inputs arrive through the gather's transpose;
    # the global loss is the pmean, so scale them the same way.
    return jax.lax.pmean(loss, parallel.DATA_AXIS), [g / num_devices for g in grads]

  from jax.sharding import PartitionSpec as P
  sharded = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P('batch'), P('batch')),
      out_specs=(P(), P('batch')), check_vma=False))
  loss_n, grads_n = sharded(z1, z2)
  loss_1, grads_1 = jax.value_and_grad(
      lambda a, b: losses.nt_xent(a, b, temperature=0.1)[0], argnums=(0, 1))(
          jnp.asarray(z1), jnp.asarray(z2))
  np.testing.assert_allclose(float(loss_n), float(loss_1), rtol=1e-5)
  for gn, g1 in zip(grads_n, grads_1):
    np.testing.assert_allclose(np.asarray(gn), np.asarray(g1), atol=1e-6,
                               rtol=1e-4)
    assert np.abs(np.asarray(gn)).max() > 0


def test_masked_mean_is_global_under_shard_map():
  values = np.arange(16, dtype=np.float32)
  mask = np.array([1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1], np.float32)
  mesh = parallel.make_mesh(jax.devices()[:4])
  from jax.sharding import PartitionSpec as P
  fn = jax.jit(jax.shard_map(
      lambda v, m: jax.lax.pmean(losses.masked_mean(v, m, 'batch'), 'batch'),
      mesh=mesh, in_specs=(P('batch'), P('batch')), out_specs=P(),
      check_vma=False))
  np.testing.assert_allclose(float(fn(values, mask)),
                             (values * mask).sum() / mask.sum(), rtol=1e-6)


def test_distillation_loss():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 6, 5)).astype(np.float32)
  for temp in (1.0, 2.0):
    p = np.exp(t / temp) / np.exp(t / temp).sum(1, keepdims=True)
    logq = s / temp - np.log(np.exp(s / temp).sum(1, keepdims=True))
    expected = -(p * logq).sum(1).mean()
    got = losses.distillation(jnp.asarray(s), jnp.asarray(t), temperature=temp)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  # Minimised (equals the teacher's entropy) when student == teacher.
  same = losses.distillation(jnp.asarray(t), jnp.asarray(t), temperature=1.0)
  other = losses.distillation(jnp.asarray(s), jnp.asarray(t), temperature=1.0)
  assert float(same) < float(other)


def test_topk_correct():
  logits = jnp.array([[0., 1., 2.], [2., 1., 0.]])
  labels = jnp.array([1, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 1), [0, 1])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 2), [1, 1])
