"""What every benchmark shares: timing, peak FLOP/s, machine facts, output.

Importing this module does not import JAX, so a script can still choose the
number of host devices (`use_host_devices`) before JAX starts.
"""

import collections
import glob
import gzip
import json
import os
import platform
import re
import statistics
import sys
import time

# Other work on a shared host skews timings: reported with every result.
LOAD_AT_START = os.getloadavg()

# Nominal dense peaks per chip in TFLOP/s: (bfloat16, float32 as JAX runs it
# by default: TF32 tensor cores on NVIDIA, bf16 passes on TPU). First match
# of a substring of `device.device_kind` wins, so longer names come first.
NOMINAL_PEAK_TFLOPS = (
    ('H200', (989.0, 494.0)),
    ('H100', (989.0, 494.0)),
    ('A100', (312.0, 156.0)),
    ('L4', (121.0, 60.0)),
    ('TPU v6 lite', (918.0, 918.0)),
    ('TPU v5 lite', (197.0, 197.0)),
    ('TPU v5p', (459.0, 459.0)),
    ('TPU v5', (459.0, 459.0)),
    ('TPU v4', (275.0, 275.0)),
)


# XLA:CPU flags that keep convolutions out of YNNPACK (Eigen runs them) while
# dots, elementwise fusions and reductions still go to YNNPACK: the fastest
# setting of the ResNet step on the 2-core CPU (docs/benchmarks.md). Opt-in,
# before JAX starts: XLA_FLAGS="$XLA_FLAGS <this>" python benchmarks/...
CPU_FAST_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type='
                      'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
                      'LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE')


# Benchmark models, shared by the JAX and PyTorch step benchmarks:
# name -> (ResNet depth, image size); the CIFAR stem is used at <= 32 px.
MODELS = {'r18_cifar32': (18, 32), 'r50_224': (50, 224), 'r18_16': (18, 16)}


def parse_model(spec: str):
  """'NAME' or 'NAME:WIDTH' (e.g. r50_224:0.25) -> (name, width)."""
  name, _, width = spec.partition(':')
  if name not in MODELS:
    raise SystemExit(f'Unknown model {name!r}; choose from {sorted(MODELS)}.')
  return name, float(width or 1.0)


def use_host_devices(count: int) -> None:
  """Splits the CPU into `count` XLA devices; must run before JAX starts.

  Only the CPU platform reads the flag, so it is harmless on a GPU/TPU host.
  """
  if 'jax' in sys.modules:
    return  # Too late to matter (e.g. under pytest, which sets 8 already).
  flag = f'--xla_force_host_platform_device_count={count}'
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {flag}'.strip()


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def machine(**extra) -> dict:
  """Facts that decide how to read the numbers (load average included)."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return dict(platform=device.platform, device_kind=device.device_kind,
              device_count=jax.device_count(), host_cores=usable_cores(),
              load_average_start=[round(x, 2) for x in LOAD_AT_START],
              jax=jax.__version__, python=platform.python_version(),
              xla_flags=os.environ.get('XLA_FLAGS', ''), **extra)


def stats(seconds) -> dict:
  """Median and spread of repeated timings (spread = (max - min) / median)."""
  median = statistics.median(seconds)
  return {'median_s': median, 'min_s': min(seconds), 'max_s': max(seconds),
          'spread': (max(seconds) - min(seconds)) / median if median else 0.0,
          'repeats': len(seconds)}


def time_windows(run_window, *, warmup: int, repeats: int) -> dict:
  """Times `run_window()` `repeats` times after `warmup` untimed calls.

  `run_window` must synchronise with the device once, at its end (e.g.
  `jax.block_until_ready` on its last output), so that asynchronous dispatch
  overlaps the steps inside a window exactly as in training.
  """
  for _ in range(warmup):
    run_window()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_window()
    seconds.append(time.perf_counter() - start)
  return stats(seconds)


def xla_cost(compiled, key: str = 'flops') -> float:
  """XLA's cost analysis of one call, per device: 'flops', 'bytes accessed'."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per module.
    analysis = analysis[0]
  return float((analysis or {}).get(key, 0.0))


def xla_memory_bytes(compiled) -> dict:
  """Per-device bytes of a compiled program (works on CPU, unlike memory_stats)."""
  m = compiled.memory_analysis()
  parts = {'argument_bytes': m.argument_size_in_bytes,
           'output_bytes': m.output_size_in_bytes,
           'alias_bytes': m.alias_size_in_bytes,
           'temp_bytes': m.temp_size_in_bytes}
  parts['peak_bytes'] = (parts['argument_bytes'] + parts['output_bytes'] +
                         parts['temp_bytes'])
  return parts


def matmul_peak_flops(dtype: str, size: int, repeats: int = 5) -> float:
  """Achievable FLOP/s of one device: a large jitted square matmul."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (size, size), dtype)
  b = jax.random.normal(key_b, (size, size), dtype)
  matmul = jax.jit(jnp.matmul)
  result = time_windows(lambda: matmul(a, b).block_until_ready(),
                        warmup=1, repeats=repeats)
  return 2.0 * size ** 3 / result['min_s']


def nominal_peak_flops(device_kind: str, dtype: str):
  """Per-chip nominal dense peak, or None when the device is not in the table."""
  for name, (bf16, fp32) in NOMINAL_PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return (bf16 if dtype == 'bfloat16' else fp32) * 1e12
  return None


# Device-side op names in a trace, by kind (first match wins): HLO names on
# the CPU (whose convolutions and dots run as XNNPACK 'ynn_fusion's), kernel
# names on GPUs (cuDNN / cuBLAS / CUTLASS).
OP_KINDS = (('conv/matmul', r'conv|ynn|xnn|cudnn|xmma|gemm|cutlass|dot|matmul'),
            ('collective', r'all-reduce|all-gather|reduce-scatter|nccl'),
            ('copy/transpose', r'copy|transpose'),
            ('reduce (BN, norms)', r'reduce'),
            ('other fusion', r'fusion'), ('other', r''))
_OP_NAME = re.compile(r'^[A-Za-z_][\w.\-]*$')


def trace_op_shares(trace_dir: str) -> dict:
  """Share of device-op time by kind, from a `jax.profiler.trace` directory.

  Reads the Perfetto trace (create_perfetto_trace=True); host-side runtime and
  Python events are left out by their names.
  """
  paths = sorted(glob.glob(os.path.join(
      trace_dir, '**', 'perfetto_trace.json.gz'), recursive=True))
  with gzip.open(paths[-1]) as f:
    events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  totals = collections.Counter()
  for event in events:
    name = event.get('name', '')
    if event.get('ph') != 'X' or not _OP_NAME.match(name) or (
        name.startswith(('Pjit', 'Thunk'))):
      continue
    kind = next(k for k, pattern in OP_KINDS if re.search(pattern, name))
    totals[kind] += event.get('dur', 0.0)
  total = sum(totals.values()) or 1.0
  return {kind: totals[kind] / total for kind, _ in OP_KINDS if totals[kind]}


def int_list(text: str):
  return [int(x) for x in text.split(',') if x]


def str_list(text: str):
  return [x for x in text.split(',') if x]


def print_table(rows, columns) -> None:
  """columns: (key, header, format) triples; missing values print as '-'."""
  widths = [max(len(header), 9) for _, header, _ in columns]
  print('  '.join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
  for row in rows:
    cells = []
    for (key, _, fmt), width in zip(columns, widths):
      value = row.get(key)
      cells.append(('-' if value is None else format(value, fmt)).rjust(width))
    print('  '.join(cells))


def write_json(path: str, report: dict, final: bool = True) -> None:
  """Writes the report; called after every result too, so that a run cut
  short by a time limit still leaves what it measured."""
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if 'machine' in report:
    report['machine']['load_average_end'] = [
        round(x, 2) for x in os.getloadavg()]
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)
  if final:
    print(f'wrote {path}')
