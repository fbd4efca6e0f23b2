"""The same SimCLR pretraining step in PyTorch, for a JAX/PyTorch ratio.

Mirrors benchmarks/train_step.py: a torchvision-architecture ResNet (written
here in plain torch.nn, so only `torch` is needed; CIFAR stem = 3x3 stride-1
conv and no max-pool), the 2-layer projection head with BN, the online linear
probe on a detached h, NT-Xent over both views, and a LARS update, on a
synthetic two-view batch already on the device. PyTorch is not a dependency
of the project: without it the script says so and exits 0.

  pip install torch==2.13.0   # the CPU build on this machine; benchmark only
  python benchmarks/torch_step.py --json_out=/tmp/torch_step.json
  python benchmarks/torch_step.py --tiny
"""

import argparse
import os
import sys

if __package__ in (None, ''):  # Run as a script: make the repo importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common

try:
  import torch
  from torch import nn
  import torch.nn.functional as F
except ImportError:
  torch = None

MODELS = common.MODELS

if torch is not None:

  class Block(nn.Module):
    """torchvision BasicBlock (expansion 1) or Bottleneck (expansion 4);
    `projection`: a strided 1x1 conv + BN shortcut instead of the identity."""

    def __init__(self, cin, width, stride, bottleneck, projection):
      super().__init__()
      self.expansion = 4 if bottleneck else 1
      cout = width * self.expansion
      if bottleneck:
        shapes = [(cin, width, 1, 1), (width, width, 3, stride),
                  (width, cout, 1, 1)]
      else:
        shapes = [(cin, width, 3, stride), (width, cout, 3, 1)]
      self.convs = nn.ModuleList(
          nn.Conv2d(i, o, k, s, padding=k // 2, bias=False)
          for i, o, k, s in shapes)
      self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _, _ in shapes)
      self.shortcut = None
      if projection:
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
      out = x
      for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
        out = bn(conv(out))
        if i < len(self.convs) - 1:
          out = F.relu(out)
      return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))

  class ResNet(nn.Module):
    """torchvision resnet18/50 layout with a width multiplier and CIFAR stem,
    and the official SimCLR shortcuts (a projection in each group's first
    block)."""

    def __init__(self, depth, width_multiplier=1.0, cifar_stem=False):
      super().__init__()
      blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
      bottleneck = depth >= 50
      widths = [max(1, round(c * width_multiplier)) for c in (64, 128, 256, 512)]
      if cifar_stem:
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.Identity())
      else:
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
      layers, cin = [], widths[0]
      for group, (count, width) in enumerate(zip(blocks, widths)):
        for i in range(count):
          stride = 2 if group > 0 and i == 0 else 1
          # As the project's ResNet (the official SimCLR code): every
          # group's first block has a projection shortcut, also
          # ResNet-18/34's block_group1, whose shape does not change.
          layers.append(Block(cin, width, stride, bottleneck, i == 0))
          cin = width * layers[-1].expansion
      self.layers = nn.Sequential(*layers)
      self.out_dim = cin

    def forward(self, x):
      return torch.flatten(F.adaptive_avg_pool2d(
          self.layers(self.stem(x)), 1), 1)

  class SimCLR(nn.Module):
    """Encoder, 2-layer projection head with BN, linear probe on detached h."""

    def __init__(self, depth, width, cifar_stem, out_dim=128, classes=10):
      super().__init__()
      self.encoder = ResNet(depth, width, cifar_stem)
      d = self.encoder.out_dim
      self.head = nn.Sequential(
          nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(),
          nn.Linear(d, out_dim, bias=False), nn.BatchNorm1d(out_dim))
      self.probe = nn.Linear(d, classes)

    def forward(self, x):
      h = self.encoder(x)
      return self.head(h), self.probe(h.detach())

  def nt_xent(z, temperature):
    """NT-Xent over [view 1; view 2] rows, both directions, self masked."""
    z = F.normalize(z, dim=1)
    n = z.shape[0] // 2
    logits = z @ z.t() / temperature
    logits = logits - 1e9 * torch.eye(2 * n, device=z.device)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(
        z.device)
    return 2 * F.cross_entropy(logits, targets)

  class LARS(torch.optim.Optimizer):
    """SimCLR's LARS: weight decay, trust ratio (not for BN/bias), momentum."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=1e-3):
      super().__init__(params, dict(lr=lr, momentum=momentum,
                                    weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self):  # pylint: disable=arguments-differ
      for group in self.param_groups:
        for p in group['params']:
          if p.grad is None:
            continue
          g = p.grad
          if p.ndim > 1:  # Kernels: decay and layer-wise trust ratio.
            g = g + group['weight_decay'] * p
            p_norm, g_norm = torch.norm(p), torch.norm(g)
            trust = torch.where((p_norm > 0) & (g_norm > 0),
                                group['eta'] * p_norm / g_norm,
                                torch.ones_like(p_norm))
            g = g * trust
          buf = self.state[p].setdefault('momentum', torch.zeros_like(p))
          buf.mul_(group['momentum']).add_(g)
          p.add_(buf, alpha=-group['lr'])


def measure(name, width, batch_size, device, *, warmup, repeats, steps,
            channels_last, dtype):
  depth, size = MODELS[name]
  model = SimCLR(depth, width, cifar_stem=size <= 32).to(device)
  optimizer = LARS(model.parameters(), lr=0.3)
  memory_format = (torch.channels_last if channels_last
                   else torch.contiguous_format)
  model = model.to(memory_format=memory_format)
  generator = torch.Generator().manual_seed(0)
  views = torch.rand(2 * batch_size, 3, size, size, generator=generator).to(
      device, memory_format=memory_format)
  labels = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
  state = {}

  def step():
    # bfloat16: autocast compute, float32 weights (as config.model.dtype).
    with torch.autocast(device.type, torch.bfloat16,
                        enabled=dtype == 'bfloat16'):
      z, probe_logits = model(views)
    loss = nt_xent(z.float(), 0.1) + F.cross_entropy(
        probe_logits.float(), torch.cat([labels, labels]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state['loss'] = loss

  def window():
    for _ in range(steps):
      step()
    if device.type == 'cuda':
      torch.cuda.synchronize()

  timing = common.time_windows(window, warmup=warmup, repeats=repeats)
  step_s = timing['median_s'] / steps
  return dict(model=name, depth=depth, image_size=size, width=width,
              batch_size=batch_size, dtype=dtype, device=str(device),
              channels_last=channels_last, step_s=step_s,
              step_s_min=timing['min_s'] / steps,
              step_s_max=timing['max_s'] / steps, spread=timing['spread'],
              repeats=repeats, steps_per_window=steps,
              images_per_s=batch_size / step_s,
              loss=float(state['loss'].detach()))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='r18_cifar32,r50_224',
                      help='Comma-separated NAME[:WIDTH], as train_step.py.')
  parser.add_argument('--batch_sizes', default='32')
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--steps', type=int, default=2)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'),
                      help='Compute dtype (bfloat16 = autocast).')
  parser.add_argument('--channels_last', action='store_true',
                      help='NHWC memory format (often faster on CPU and GPU).')
  parser.add_argument('--tiny', action='store_true', help='Seconds; smoke test.')
  parser.add_argument('--json_out', default='')
  args = parser.parse_args(argv)
  if torch is None:
    print('PyTorch is not installed: skipping (pip install torch==2.13.0 '
          'for the CPU build; it is not a dependency of simclr-jax).')
    return None
  if args.tiny:
    args.models, args.batch_sizes = 'r18_16:0.125', '8'
    args.warmup, args.repeats, args.steps = 1, 2, 1
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  torch.set_num_threads(common.usable_cores())

  rows = []
  report = {'benchmark': 'torch_step', 'tiny': args.tiny,
            'machine': dict(torch=torch.__version__, device=str(device),
                            threads=torch.get_num_threads(),
                            host_cores=common.usable_cores(),
                            load_average_start=[
                                round(x, 2) for x in common.LOAD_AT_START]),
            'args': vars(args), 'results': rows}
  for spec in common.str_list(args.models):
    name, width = common.parse_model(spec)
    for batch_size in common.int_list(args.batch_sizes):
      rows.append(measure(name, width, batch_size, device,
                          warmup=args.warmup, repeats=args.repeats,
                          steps=args.steps, channels_last=args.channels_last,
                          dtype=args.dtype))
      common.write_json(args.json_out, report, final=False)
      print(f'  {spec} batch {batch_size}: {rows[-1]["images_per_s"]:.1f} '
            'img/s', flush=True)
  print(f'PyTorch {torch.__version__} on {device}, '
        f'{torch.get_num_threads()} threads')
  common.print_table(rows, [
      ('model', 'model', 's'), ('width', 'width', '.3g'),
      ('batch_size', 'batch', 'd'), ('dtype', 'dtype', 's'),
      ('step_s', 'step s', '.4f'),
      ('spread', 'spread', '.2f'), ('images_per_s', 'img/s', '.1f')])
  common.write_json(args.json_out, report)
  return report


if __name__ == '__main__':
  main()
