"""One process of a multi-process test run (started by test_multiprocess.py).

Runs a few pretraining steps of a tiny digits model on a fixed synthetic global
batch, of which this process feeds only its own slice, and writes per-step
loss and a digest of its copy of the parameters to JSON. With --main it runs
the real CLI path instead (data from the digits pipeline, checkpoints).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--coordinator', default='')
  p.add_argument('--num_processes', type=int, default=1)
  p.add_argument('--process_id', type=int, default=0)
  p.add_argument('--data_dir', required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--die_after', type=int, default=-1)
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  from simclr_jax import parallel  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    parallel.initialize_distributed(args.coordinator, args.num_processes,
                                    args.process_id, initialization_timeout=60,
                                    heartbeat_timeout=10)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from simclr_jax import train  # pylint: disable=g-import-not-at-top
  from tiny import tiny_config  # pylint: disable=g-import-not-at-top

  config = tiny_config(args.data_dir, batch_size=16, steps=args.steps)
  exp = train.build_experiment(config)
  state = train.create_train_state(exp)
  step_fn = train.make_train_step(exp)
  b = config.train.batch_size // jax.process_count()
  lo = jax.process_index() * b
  records = []
  for step in range(args.steps):
    rng = np.random.default_rng(step)
    global_batch = {
        'images': rng.uniform(size=(16, 2, 16, 16, 3)).astype(np.float32),
        'labels': rng.integers(0, 10, size=16).astype(np.int32),
        'label_mask': np.ones(16, np.float32)}
    local = {k: v[lo:lo + b] for k, v in global_batch.items()}
    if step == args.die_after:
      os._exit(3)  # pylint: disable=protected-access
    state, metrics = step_fn(state, parallel.global_batch(exp.mesh, local), {},
                             exp.schedule)
    # This process's own copy of the replicated parameters.
    leaves = [np.asarray(x.addressable_data(0)) for x in
              jax.tree.leaves(state.params)]
    records.append({'loss': float(np.asarray(metrics['loss'].addressable_data(0))),
                    'param_sum': float(sum(np.sum(l, dtype=np.float64) for l in leaves)),
                    'param_abs': float(sum(np.sum(np.abs(l), dtype=np.float64)
                                           for l in leaves))})
  with open(args.out, 'w') as f:
    json.dump({'process': jax.process_index(), 'devices': jax.device_count(),
               'records': records}, f)


if __name__ == '__main__':
  main()
