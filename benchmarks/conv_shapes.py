"""Single convolutions of a ResNet, forward + both gradients, JAX vs PyTorch.

For each convolution shape of the CIFAR ResNet-18 (or of an explicit list),
times y = conv(x, w) with dx and dw for a random cotangent: XLA's native
convolution (`conv_impl='xla'`), the project's CPU path (`conv_impl='matmul'`,
simclr_jax/models/conv.py) and, when PyTorch is installed, torch.nn.functional
.conv2d with autograd (NCHW, as benchmarks/torch_step.py). The frameworks
alternate shape by shape, so a busy host slows both alike. FLOPs are those of
the convolution (3 x 2 x output positions x kernel taps x in x out channels),
not XLA's count.

  python benchmarks/conv_shapes.py --json_out=/tmp/conv_shapes.json
  python benchmarks/conv_shapes.py --width=0.25 --batch=512 --repeats=5
  python benchmarks/conv_shapes.py --tiny
"""

import argparse
import os
import sys

if __package__ in (None, ''):  # Run as a script: make the repo importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common

import jax
from jax import lax

from simclr_jax.models import conv as conv_lib
from simclr_jax.models import resnet

try:
  import torch
  import torch.nn.functional as F
except ImportError:
  torch = None

NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def resnet18_cifar_shapes(width):
  """(in channels, out channels, input size, kernel, stride) of the 3x3
  convolutions of the CIFAR ResNet-18 at 32 px, one row per distinct shape,
  with how often it occurs; and its strided 1x1 projection shortcuts."""
  c = [resnet.scaled(f, width) for f in resnet.GROUP_FILTERS]
  rows = [(c[0], c[0], 32, 3, 1, 4), (c[0], c[0], 32, 1, 1, 1)]
  size = 32
  for prev, cur in zip(c[:-1], c[1:]):
    rows += [(prev, cur, size, 3, 2, 1), (prev, cur, size, 1, 2, 1)]
    size //= 2
    rows.append((cur, cur, size, 3, 1, 3))
  return rows


def fixed_padding(kernel):
  total = kernel - 1
  return ((total // 2, total - total // 2),) * 2


def jax_runner(impl, cin, cout, size, kernel, stride, batch):
  conv = (conv_lib.matmul_conv if impl == 'matmul' else
          lax.conv_general_dilated)
  padding = fixed_padding(kernel)

  def fwd_bwd(x, w, g):
    y, vjp = jax.vjp(lambda x, w: conv(
        x, w, (stride, stride), padding, dimension_numbers=NHWC), x, w)
    return (y,) + vjp(g)

  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (batch, size, size, cin))
  w = jax.random.normal(keys[1], (kernel, kernel, cin, cout))
  out = (size + sum(padding[0]) - kernel) // stride + 1
  g = jax.random.normal(keys[2], (batch, out, out, cout))
  compiled = jax.jit(fwd_bwd).lower(x, w, g).compile()
  return lambda: jax.block_until_ready(compiled(x, w, g)), out


def torch_runner(cin, cout, size, kernel, stride, batch):
  generator = torch.Generator().manual_seed(0)
  x = torch.randn(batch, cin, size, size, generator=generator,
                  requires_grad=True)
  w = torch.randn(cout, cin, kernel, kernel, generator=generator,
                  requires_grad=True)
  pad = (kernel - 1) // 2  # Symmetric for the odd kernels measured here.
  out = (size + 2 * pad - kernel) // stride + 1
  g = torch.randn(batch, cout, out, out, generator=generator)

  def run():
    x.grad = w.grad = None
    F.conv2d(x, w, stride=stride, padding=pad).backward(g)
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--width', type=float, default=0.25)
  parser.add_argument('--batch', type=int, default=512,
                      help='Views per call (2 x the images of a step).')
  parser.add_argument('--impls', default='xla,matmul')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=1,
                      help='Passes over the shapes (alternating frameworks).')
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--tiny', action='store_true', help='Seconds; smoke test.')
  parser.add_argument('--json_out', default='')
  args = parser.parse_args(argv)
  if args.tiny:
    args.width, args.batch, args.repeats = 0.125, 4, 1
  use_torch = torch is not None and not args.no_torch
  if use_torch:
    torch.set_num_threads(common.usable_cores())
  impls = common.str_list(args.impls)
  rows = []
  report = {'benchmark': 'conv_shapes', 'tiny': args.tiny,
            'machine': common.machine(
                torch=torch.__version__ if use_torch else None),
            'args': vars(args), 'results': rows}
  shapes = resnet18_cifar_shapes(args.width)
  for cin, cout, size, kernel, stride, count in shapes:
    row = dict(cin=cin, cout=cout, size=size, kernel=kernel, stride=stride,
               count=count, batch=args.batch, load_before=os.getloadavg()[0])
    runners = {impl: jax_runner(impl, cin, cout, size, kernel, stride,
                                args.batch) for impl in impls}
    out = next(iter(runners.values()))[1]
    flops = 3 * 2 * args.batch * out * out * kernel * kernel * cin * cout
    if use_torch:
      runners['torch'] = (torch_runner(cin, cout, size, kernel, stride,
                                       args.batch), out)
    best = {name: [] for name in runners}
    for _ in range(args.rounds):
      for name, (run, _) in runners.items():
        best[name].append(common.time_windows(
            run, warmup=1, repeats=args.repeats)['min_s'])
    for name, times in best.items():
      row[f'{name}_ms'] = 1e3 * min(times)
      row[f'{name}_gflops'] = flops / min(times) / 1e9
    row['gflop'] = flops / 1e9
    rows.append(row)
    common.write_json(args.json_out, report, final=False)
    print(f'{cin:4d}->{cout:<4d} {size:3d}px {kernel}x{kernel}/{stride}: ' +
          ', '.join(f'{n} {row[f"{n}_ms"]:.1f} ms '
                    f'({row[f"{n}_gflops"]:.0f} GFLOP/s)' for n in best),
          flush=True)
  common.write_json(args.json_out, report)
  return report


if __name__ == '__main__':
  main()
