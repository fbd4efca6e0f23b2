"""GPU clusters with SLURM: writes a batch script with one task per GPU and
submits it with sbatch. Each task runs `python -m simclr_jax.main`; JAX's
`jax.distributed.initialize()` reads the coordinator, process count and id
from SLURM's environment. `--dry_run` prints the script and the command.

  python launch/slurm.py --nodes=2 --gpus_per_node=8 \
      --config=configs/imagenet_simclr_r50.py --workdir=/shared/runs/r50
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top


def batch_script(args) -> str:
  main = common.show(common.main_command(args.config, args.workdir,
                                         args.override))
  lines = [
      '#!/bin/bash',
      f'#SBATCH --job-name={args.job_name}',
      f'#SBATCH --nodes={args.nodes}',
      f'#SBATCH --ntasks-per-node={args.gpus_per_node}',
      '#SBATCH --gpus-per-task=1',
      f'#SBATCH --cpus-per-task={args.cpus_per_task}',
      f'#SBATCH --time={args.time}',
      f'#SBATCH --output={args.workdir}/slurm-%j.out',
      *([f'#SBATCH --partition={args.partition}'] if args.partition else []),
      'set -euo pipefail',
      '# One process per GPU; jax.distributed.initialize() reads SLURM_* vars.',
      f'srun --kill-on-bad-exit=1 {main}',
  ]
  return '\n'.join(lines) + '\n'


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--nodes', type=int, default=1)
  p.add_argument('--gpus_per_node', type=int, default=8)
  p.add_argument('--cpus_per_task', type=int, default=8)
  p.add_argument('--time', default='24:00:00')
  p.add_argument('--partition', default='')
  p.add_argument('--job_name', default='simclr_jax')
  p.add_argument('--config', default='configs/imagenet_simclr_r50.py')
  p.add_argument('--workdir', required=True)
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--script', default='', help='Where to write the batch script.')
  p.add_argument('--dry_run', action='store_true')
  return p.parse_args(argv)


def main(argv=None):
  args = parse(argv)
  script = batch_script(args)
  path = args.script or os.path.join(args.workdir, 'simclr_jax.sbatch')
  if args.dry_run:
    print(f'# {path}\n{script}', end='')
  else:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
      f.write(script)
  return common.execute([['sbatch', path]], args.dry_run), script


if __name__ == '__main__':
  main()
