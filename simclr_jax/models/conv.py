"""Convolutions computed where XLA:CPU's own kernels are slow.

XLA:CPU runs a 1x1 convolution and its gradients slower than the same
contraction written as a dot, and computes the input gradient of a strided
convolution as a convolution over a zero-dilated copy of the output gradient
(docs/benchmarks.md has the measurements). `matmul_conv` therefore computes

* 1x1 convolutions as a dot (strided ones on the subsampled input);
* convolutions over at most IM2COL_MAX_IN_CHANNELS input channels (the RGB
  stem, where im2col is cheap) as im2col + dot;
* strided k x k convolutions over inputs of at least
  PHASE_GRAD_MIN_INPUT_PIXELS pixels natively, with a custom gradient: its
  input gradient is one stride-1 convolution of the output gradient with the
  kernel's taps regrouped by input phase (s*s*C output channels), then a
  depth-to-space interleave, i.e. the same sums without the inserted zeros
  (`strided_input_grad`); its kernel gradient is XLA's own;
* other k x k convolutions natively.

It has the signature of `lax.conv_general_dilated` and is passed to
`nn.Conv`, so parameters, checkpoints and results are those of the
convolution it replaces; only the program XLA compiles differs. On GPU/TPU the
native convolution is best (`conv_impl_for_backend`).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ('auto', 'xla', 'matmul')
NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
# k x k kernels over more input channels than this stay convolutions.
IM2COL_MAX_IN_CHANNELS = 4
# Strided k x k convolutions over inputs of fewer pixels than this keep XLA's
# own input gradient (measured no faster there, per shape).
PHASE_GRAD_MIN_INPUT_PIXELS = 16 * 16


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
  dilation and one group: a dot for 1x1 kernels and for inputs of at most
  IM2COL_MAX_IN_CHANNELS channels, `strided_conv` for other strided kernels
  over inputs of at least PHASE_GRAD_MIN_INPUT_PIXELS pixels.

  Anything else goes to lax.conv_general_dilated unchanged.
  """
  plain = (lhs.ndim == rhs.ndim == 4 and _is_nhwc_hwio(dimension_numbers) and
           feature_group_count == 1 and not isinstance(padding, str) and
           all(d in (None, 1)
               for d in (lhs_dilation or ()) + (rhs_dilation or ())))
  kh, kw, cin, cout = rhs.shape if plain else (0,) * 4
  if plain and kh * kw > 1 and cin > IM2COL_MAX_IN_CHANNELS:
    if (tuple(window_strides) != (1, 1) and preferred_element_type is None and
        lhs.shape[1] * lhs.shape[2] >= PHASE_GRAD_MIN_INPUT_PIXELS):
      return strided_conv(lhs, rhs, tuple(window_strides),
                          tuple(tuple(p) for p in padding), precision)
    plain = False
  if not plain:
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


def _native(x, w, strides, padding, precision=None):
  return lax.conv_general_dilated(x, w, strides, padding,
                                  dimension_numbers=NHWC, precision=precision)


def _phase_taps(kernel: int, stride: int, pad: int):
  """For each input phase r in [0, stride): the (kernel tap i, offset d)
  pairs such that input row stride * a + r receives output-gradient row
  a + d through tap i (from stride * (a + d) + i - pad = stride * a + r)."""
  return [[(i, (r + pad - i) // stride) for i in range(kernel)
           if (r + pad - i) % stride == 0] for r in range(stride)]


def strided_input_grad(dy, w, x_shape, strides, padding, precision=None):
  """Input gradient of `_native(x, w, strides, padding)` for NHWC x HWIO.

  Input pixel (s*a + r) only receives output-gradient pixels through the
  taps of phase r, so all s*s phases are one stride-1 convolution of dy with
  a kernel holding, for output channel block (r_h, r_w), the transposed taps
  of that phase at their offsets (zeros elsewhere); the phases are then
  interleaved (depth-to-space) and cropped to the input size.
  """
  kh, kw, c, o = w.shape
  batch, height, width = x_shape[:3]
  (sh, sw), ((pad_h, _), (pad_w, _)) = strides, padding
  taps_h, taps_w = _phase_taps(kh, sh, pad_h), _phase_taps(kw, sw, pad_w)
  lo_h = min(d for taps in taps_h for _, d in taps)
  lo_w = min(d for taps in taps_w for _, d in taps)
  size_h = max(d for taps in taps_h for _, d in taps) - lo_h + 1
  size_w = max(d for taps in taps_w for _, d in taps) - lo_w + 1
  w_t = jnp.swapaxes(w, 2, 3)  # [kh, kw, o, c]
  zero = jnp.zeros((o, c), w.dtype)

  def tap(r_h, r_w, a, b):
    for i, d_h in taps_h[r_h]:
      for j, d_w in taps_w[r_w]:
        if (d_h - lo_h, d_w - lo_w) == (a, b):
          return w_t[i, j]
    return zero

  kernel = jnp.stack([jnp.stack([
      jnp.concatenate([tap(r_h, r_w, a, b)
                       for r_h in range(sh) for r_w in range(sw)], axis=-1)
      for b in range(size_w)]) for a in range(size_h)])
  rows, cols = -(-height // sh), -(-width // sw)  # Phase rows and columns.
  out_h, out_w = dy.shape[1:3]
  pad = ((-lo_h, rows - out_h + lo_h + size_h - 1),
         (-lo_w, cols - out_w + lo_w + size_w - 1))
  phases = _native(dy, kernel, (1, 1), pad, precision)
  phases = phases.reshape(batch, rows, cols, sh, sw, c)
  dx = phases.transpose(0, 1, 3, 2, 4, 5).reshape(
      batch, rows * sh, cols * sw, c)
  return dx[:, :height, :width]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def strided_conv(x, w, strides, padding, precision=None):
  """`_native` convolution whose input gradient is `strided_input_grad`.

  A jax.custom_vjp: reverse-mode only (jax.jvp through it raises); use
  conv_impl='xla' where forward-mode derivatives are needed.
  """
  return _native(x, w, strides, padding, precision)


def _strided_conv_fwd(x, w, strides, padding, precision):
  return _native(x, w, strides, padding, precision), (x, w)


def _strided_conv_bwd(strides, padding, precision, residuals, dy):
  x, w = residuals
  _, kernel_vjp = jax.vjp(
      lambda w: _native(x, w, strides, padding, precision), w)
  return (strided_input_grad(dy, w, x.shape, strides, padding, precision),
          kernel_vjp(dy)[0])


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)
