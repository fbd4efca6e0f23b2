"""Time and memory of NT-Xent and its gradient versus the global batch.

Runs `losses.nt_xent` (global negatives gathered over the data axis) and its
gradient under jit(shard_map), as the train step does, for several global
batch sizes, with and without a SimCLRv2 memory queue of K extra negatives.
Per-device memory comes from the compiled program's `memory_analysis()`
(argument + output + temporaries), which also works on the CPU; configurations
whose FLOPs exceed `--max_timed_gflop` are compiled and sized but not timed.
On a CPU host the cores are split into 8 XLA devices, as a pod slice would be.

  python benchmarks/loss.py --json_out=/tmp/loss.json
  python benchmarks/loss.py --batches=1024,4096,16384,65536 --max_timed_gflop=0
  python benchmarks/loss.py --tiny
"""

import argparse
import os
import sys
import time

if __package__ in (None, ''):  # Run as a script: make the repo importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common

common.use_host_devices(8)  # Before JAX starts; ignored by GPU/TPU backends.

import jax
from jax.sharding import PartitionSpec as P

from simclr_jax import losses, parallel
from simclr_jax.parallel import DATA_AXIS


def make_loss_and_grad(mesh, temperature):
  """jit(shard_map) of (global loss, d loss / d z) for z sharded by rows."""
  def per_device(z1, z2, queue):
    def loss_fn(z1, z2):
      return losses.nt_xent(z1, z2, temperature=temperature,
                            axis_name=DATA_AXIS, queue=queue)[0]
    loss, grads = jax.value_and_grad(loss_fn, argnums=(0, 1))(z1, z2)
    return jax.lax.pmean(loss, DATA_AXIS), grads

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P()),
      out_specs=(P(), P(DATA_AXIS)), check_vma=False))


def measure(mesh, batch, queue_size, dim, *, max_timed_gflop, warmup, repeats):
  key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
  sharded, replicated = parallel.batch_sharded(mesh), parallel.replicated(mesh)
  z1 = jax.device_put(jax.random.normal(key1, (batch, dim)), sharded)
  z2 = jax.device_put(jax.random.normal(key2, (batch, dim)), sharded)
  queue = jax.device_put(
      losses.l2_normalize(jax.random.normal(key3, (queue_size, dim))),
      replicated) if queue_size else None
  fn = make_loss_and_grad(mesh, temperature=0.1)
  start = time.perf_counter()
  compiled = fn.lower(z1, z2, queue).compile()
  compile_s = time.perf_counter() - start
  devices = mesh.devices.size
  gflop = common.xla_cost(compiled) * devices / 1e9
  row = dict(global_batch=batch, queue_size=queue_size, dim=dim,
             devices=devices, rows_per_device=batch // devices,
             compile_s=compile_s, gflop=gflop,
             **common.xla_memory_bytes(compiled))
  row['peak_mib_per_device'] = row['peak_bytes'] / 2**20
  if max_timed_gflop and gflop > max_timed_gflop:
    return dict(row, timed=False)
  timing = common.time_windows(
      lambda: jax.block_until_ready(compiled(z1, z2, queue)),
      warmup=warmup, repeats=repeats)
  return dict(row, timed=True, time_s=timing['median_s'],
              time_s_min=timing['min_s'], time_s_max=timing['max_s'],
              spread=timing['spread'],
              achieved_tflops=gflop / timing['median_s'] / 1e3)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batches', default='256,1024,4096,16384',
                      help='Global batch sizes (rows of z per view).')
  parser.add_argument('--queue_sizes', default='0,65536',
                      help='Memory queue lengths K (0 = no queue).')
  parser.add_argument('--dim', type=int, default=128, help='Width of z.')
  parser.add_argument('--max_timed_gflop', type=float, default=-1,
                      help='Only size (do not run) bigger configs; 0 = run all; '
                      '-1 = 400 on a CPU, else run all.')
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--tiny', action='store_true', help='Seconds; smoke test.')
  parser.add_argument('--json_out', default='')
  args = parser.parse_args(argv)
  if args.tiny:
    args.batches, args.queue_sizes, args.dim = '64,256', '0,512', 32
  if args.max_timed_gflop < 0:
    args.max_timed_gflop = 400 if jax.devices()[0].platform == 'cpu' else 0

  mesh = parallel.make_mesh()
  rows = []
  report = {'benchmark': 'loss', 'tiny': args.tiny,
            'machine': common.machine(), 'args': vars(args), 'results': rows}
  for queue_size in common.int_list(args.queue_sizes):
    for batch in common.int_list(args.batches):
      rows.append(measure(mesh, batch, queue_size, args.dim,
                          max_timed_gflop=args.max_timed_gflop,
                          warmup=args.warmup, repeats=args.repeats))
      common.write_json(args.json_out, report, final=False)
      print(f'  K={queue_size} batch {batch}: '
            f'{rows[-1].get("time_s", float("nan")):.4f} s', flush=True)
  print(f'{jax.devices()[0].device_kind} x{mesh.devices.size}; '
        'memory is per device (argument + output + temporaries)')
  common.print_table(rows, [
      ('global_batch', 'batch', 'd'), ('queue_size', 'queue K', 'd'),
      ('rows_per_device', 'rows/dev', 'd'), ('gflop', 'GFLOP', '.2f'),
      ('compile_s', 'compile s', '.2f'), ('time_s', 'loss+grad s', '.4f'),
      ('spread', 'spread', '.2f'), ('achieved_tflops', 'TFLOP/s', '.4f'),
      ('peak_mib_per_device', 'MiB/dev', '.1f')])
  common.write_json(args.json_out, report)
  return report


if __name__ == '__main__':
  main()
