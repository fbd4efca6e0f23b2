"""simclr_jax/models/conv.py against lax.conv_general_dilated.

Tiny shapes on the CPU: outputs, input gradients and kernel gradients of
`matmul_conv` (what `model.conv_impl='matmul'`, the CPU default, runs) must
equal the native convolution's to float32 rounding, for every path it takes
(dot, im2col, strided convolution with the phase-decomposed input gradient,
native) at the ResNet's fixed padding, odd and even sizes.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from simclr_jax.models import conv as conv_lib

NHWC = conv_lib.NHWC


@pytest.fixture(autouse=True)
def phase_gradient_at_every_size(monkeypatch):
  """The tiny inputs here are below the size where matmul_conv switches to
  the phase-decomposed input gradient: test that path at every size."""
  monkeypatch.setattr(conv_lib, 'PHASE_GRAD_MIN_INPUT_PIXELS', 0)


def fixed_padding(kernel):
  total = kernel - 1
  return ((total // 2, total - total // 2),) * 2


def value_and_grads(conv, x, w, strides, padding):
  """sum(sin(conv)) and its gradients: a cotangent that is not all ones."""
  def loss(x, w):
    y = conv(x, w, strides, padding, dimension_numbers=NHWC)
    return jnp.sum(jnp.sin(y)), y
  (_, y), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(x, w)
  return y, grads


def assert_matches_native(x, w, strides, padding, atol=2e-5):
  y_ref, (dx_ref, dw_ref) = jax.jit(
      functools.partial(value_and_grads, lax.conv_general_dilated),
      static_argnums=(2, 3))(x, w, strides, padding)
  y, (dx, dw) = jax.jit(
      functools.partial(value_and_grads, conv_lib.matmul_conv),
      static_argnums=(2, 3))(x, w, strides, padding)
  assert y.shape == y_ref.shape and dx.shape == x.shape
  np.testing.assert_allclose(y, y_ref, atol=atol)
  np.testing.assert_allclose(dx, dx_ref, atol=atol)
  np.testing.assert_allclose(dw, dw_ref, atol=atol * 4)


@pytest.mark.parametrize('kernel,strides,in_channels,size', [
    (1, 1, 6, 9), (1, 2, 6, 10),     # dot
    (3, 1, 3, 10), (7, 2, 3, 9),     # im2col (RGB stem)
    (3, 2, 6, 9), (3, 2, 6, 10),     # strided: phase-decomposed input grad
    (7, 2, 6, 10),
    (3, 1, 6, 9),                    # native
])
def test_matmul_conv_equals_native(kernel, strides, in_channels, size):
  keys = jax.random.split(jax.random.key(kernel * 100 + size), 2)
  x = jax.random.normal(keys[0], (2, size, size, in_channels))
  w = jax.random.normal(keys[1], (kernel, kernel, in_channels, 5)) * 0.3
  assert_matches_native(x, w, (strides, strides), fixed_padding(kernel))


@pytest.mark.parametrize('kernel,strides,padding,shape', [
    (3, (2, 2), ((0, 1), (0, 1)), (7, 8)),   # SAME-like, uneven
    (3, (2, 2), ((1, 1), (2, 0)), (9, 6)),   # asymmetric
    (5, (3, 3), ((2, 2), (2, 2)), (11, 10)), # stride 3
    (3, (2, 1), ((1, 1), (1, 1)), (8, 7)),   # stride in one axis only
    (3, (2, 2), ((1, 1), (1, 1)), (1, 2)),   # output of one pixel
])
def test_strided_input_grad_other_geometries(kernel, strides, padding, shape):
  keys = jax.random.split(jax.random.key(7), 2)
  x = jax.random.normal(keys[0], (3,) + shape + (6,))
  w = jax.random.normal(keys[1], (kernel, kernel, 6, 4)) * 0.3
  assert_matches_native(x, w, strides, padding)


def test_unsupported_arguments_stay_native():
  """Dilation, groups and string padding go to lax unchanged."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
  for kwargs in (dict(feature_group_count=2),
                 dict(feature_group_count=2, rhs_dilation=(2, 2))):
    ref = lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                   dimension_numbers=NHWC, **kwargs)
    out = conv_lib.matmul_conv(x, w, (2, 2), ((1, 1), (1, 1)),
                               dimension_numbers=NHWC, **kwargs)
    np.testing.assert_array_equal(out, ref)
  w = jax.random.normal(jax.random.key(1), (3, 3, 8, 6))
  np.testing.assert_array_equal(
      conv_lib.matmul_conv(x, w, (2, 2), 'SAME', dimension_numbers=NHWC),
      lax.conv_general_dilated(x, w, (2, 2), 'SAME', dimension_numbers=NHWC))


def test_small_strided_inputs_keep_the_native_gradient(monkeypatch):
  monkeypatch.setattr(conv_lib, 'PHASE_GRAD_MIN_INPUT_PIXELS', 10 * 10)
  x, w = jnp.zeros((1, 9, 9, 8)), jnp.zeros((3, 3, 8, 4))
  calls = []
  monkeypatch.setattr(conv_lib, 'strided_conv',
                      lambda *args: calls.append(args) or 0.0)
  conv_lib.matmul_conv(x, w, (2, 2), fixed_padding(3), dimension_numbers=NHWC)
  assert not calls
  conv_lib.matmul_conv(jnp.zeros((1, 10, 10, 8)), w, (2, 2), fixed_padding(3),
                       dimension_numbers=NHWC)
  assert len(calls) == 1


def test_strided_conv_in_bfloat16():
  """Mixed precision (config.model.dtype): same dtypes as the native
  convolution's gradients, values to bfloat16 rounding."""
  keys = jax.random.split(jax.random.key(3), 2)
  x = jax.random.normal(keys[0], (2, 10, 10, 8), jnp.bfloat16)
  w = (jax.random.normal(keys[1], (3, 3, 8, 4)) * 0.3).astype(jnp.bfloat16)
  strides, padding = (2, 2), fixed_padding(3)
  y_ref, grads_ref = value_and_grads(lax.conv_general_dilated, x, w, strides,
                                     padding)
  y, grads = value_and_grads(conv_lib.matmul_conv, x, w, strides, padding)
  for a, b in zip((y_ref,) + grads_ref, (y,) + grads):
    assert a.dtype == b.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(b), np.float32(a), atol=0.1,
                               rtol=0.02)
