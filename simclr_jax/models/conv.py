"""Convolutions computed as matrix products where XLA:CPU's own are slow.

XLA:CPU runs a 1x1 convolution and its gradients 1.3 to 3 times slower than
the same contraction written as a dot (docs/benchmarks.md; its profile also
shows the convolution gradients transposing the activations).
`matmul_conv` computes 1x1 convolutions as a dot, and convolutions over at
most IM2COL_MAX_IN_CHANNELS input channels (the RGB stem, where im2col is
cheap) as im2col + dot; other k x k convolutions, where XLA's kernel was as
fast or faster in those measurements, stay native. It has the signature of
`lax.conv_general_dilated` and is passed to `nn.Conv`, so parameters,
checkpoints and results are those of the convolution it replaces; only the
program XLA compiles differs. On GPU/TPU the native convolution is best
(`conv_impl_for_backend`).
"""

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ('auto', 'xla', 'matmul')
# k x k kernels over more input channels than this stay convolutions.
IM2COL_MAX_IN_CHANNELS = 4


def conv_impl_for_backend(conv_impl: str, backend: str | None = None) -> str:
  """'auto' -> 'matmul' on CPU, 'xla' (cuDNN / TPU convolutions) elsewhere."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'config.model.conv_impl={conv_impl!r} must be one of '
                     f'{CONV_IMPLS}.')
  if conv_impl != 'auto':
    return conv_impl
  return 'matmul' if (backend or jax.default_backend()) == 'cpu' else 'xla'


def _is_nhwc_hwio(dimension_numbers) -> bool:
  return (dimension_numbers is not None and
          tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2) and
          tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1) and
          tuple(dimension_numbers.out_spec) == (0, 3, 1, 2))


def matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                rhs_dilation=None, dimension_numbers=None,
                feature_group_count=1, precision=None,
                preferred_element_type=None):
  """lax.conv_general_dilated for NHWC x HWIO with explicit padding, no
  dilation and one group, as a dot over (kernel row, column, channel), for
  1x1 kernels and for inputs of at most IM2COL_MAX_IN_CHANNELS channels.

  Anything else goes to lax.conv_general_dilated unchanged.
  """
  plain = (lhs.ndim == rhs.ndim == 4 and _is_nhwc_hwio(dimension_numbers) and
           feature_group_count == 1 and not isinstance(padding, str) and
           all(d in (None, 1)
               for d in (lhs_dilation or ()) + (rhs_dilation or ())))
  kh, kw, cin, cout = rhs.shape if plain else (0,) * 4
  if not plain or (kh * kw > 1 and cin > IM2COL_MAX_IN_CHANNELS):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  sh, sw = window_strides
  (top, bottom), (left, right) = padding
  if top or bottom or left or right:
    lhs = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  height, width = lhs.shape[1:3]
  out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
  # Channel index (i, j, c) of the patches matches rhs.reshape's row order.
  patches = jnp.concatenate([
      lhs[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
      for i in range(kh) for j in range(kw)], axis=-1) if kh * kw > 1 else (
          lhs[:, :sh * (out_h - 1) + 1:sh, :sw * (out_w - 1) + 1:sw])
  return lax.dot_general(
      patches, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
      precision=precision, preferred_element_type=preferred_element_type)
