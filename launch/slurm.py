"""GPU clusters with SLURM: writes a batch script and submits it with sbatch
(`--dry_run` prints both instead).

  python launch/slurm.py --nodes=2 --gpus_per_node=8 \
      --config=configs/imagenet_simclr_r50.py --workdir=/shared/runs/r50

Binding: one task per GPU, every task seeing all GPUs of its (whole) node,
which is what JAX's SLURM auto-detection expects: `jax.distributed.initialize()`
takes the coordinator, process count and id from SLURM_* variables and lets
task SLURM_LOCALID drive local GPU number SLURM_LOCALID (so no
`--gpus-per-task`, which would hide the others and break that; see
jax-ml/jax#28194). One task per GPU was chosen over one per node because it
needs no `local_device_ids` of our own and a crashed GPU's process is
noticed by JAX's heartbeat like any other.

Time limits and preemption: `--signal=TERM@<signal_seconds>` makes SLURM send
SIGTERM to every task that long before the limit; the trainers agree on a
step, save it and exit 75, and the script then requeues the job
(`--requeue`), which resumes from that checkpoint. Any other exit code ends
the job with that code.
"""

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top


def _header(args, output):
  return [
      '#!/bin/bash',
      f'#SBATCH --job-name={args.job_name}',
      f'#SBATCH --nodes={args.nodes}',
      f'#SBATCH --ntasks-per-node={args.gpus_per_node}',
      f'#SBATCH --gpus-per-node={args.gpus_per_node}',
      '#SBATCH --exclusive',
      f'#SBATCH --cpus-per-task={args.cpus_per_task}',
      f'#SBATCH --time={args.time}',
      f'#SBATCH --signal=TERM@{args.signal_seconds}',
      *(['#SBATCH --requeue'] if args.requeue else ['#SBATCH --no-requeue']),
      '#SBATCH --open-mode=append',
      f'#SBATCH --output={output}',
      *([f'#SBATCH --partition={args.partition}'] if args.partition else []),
      'set -uo pipefail',
      f'cd {shlex.quote(common.REPO)}',
  ]


def _run_and_requeue(args, main: str, job: str) -> list[str]:
  requeue = [
      f'if [ "$rc" -eq {common.EXIT_PREEMPTED} ]; then',
      f'  echo "Stopped by SIGTERM (time limit or preemption), checkpoint '
      f'saved: requeueing {job}."',
      f'  scontrol requeue "{job}"',
      'fi',
  ] if args.requeue else []
  return [
      '# One task per GPU, all node GPUs visible to each: JAX auto-detection.',
      f'srun --gpu-bind=none {main}',
      'rc=$?',
      *requeue,
      'exit "$rc"',
  ]


def batch_script(args) -> str:
  main = common.show(common.main_command(common.absolute_config(args.config),
                                         args.workdir, args.override))
  lines = _header(args, f'{args.workdir}/slurm-%j.out')
  lines += _run_and_requeue(args, main, '$SLURM_JOB_ID')
  return '\n'.join(lines) + '\n'


def array_script(args, runs, parallel: int) -> str:
  """One array task per sweep setting ([(run workdir, overrides)]), at most
  `parallel` at a time, each with its own workdir and log."""
  config = common.absolute_config(args.config)
  lines = _header(args, f'{args.workdir}/slurm-%A_%a.out')
  lines.insert(-2, f'#SBATCH --array=0-{len(runs) - 1}%{parallel}')
  lines.append('case "$SLURM_ARRAY_TASK_ID" in')
  for i, (run_dir, overrides) in enumerate(runs):
    flags = [f'--workdir={run_dir}'] + [f'--{k}={v}' for k, v in overrides.items()]
    lines.append(f'  {i}) set -- {common.show(flags + args.override)} ;;')
  lines.append('esac')
  main = common.show([*common.main_command(config, 'W')[:-1]]) + ' "$@"'
  lines += _run_and_requeue(
      args, main, '${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}')
  return '\n'.join(lines) + '\n'


def write_and_submit(script: str, path: str, dry_run: bool):
  if dry_run:
    print(f'# {path}\n{script}', end='')
  else:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
      f.write(script)
  return common.execute([['sbatch', path]], dry_run)


def add_flags(p):
  p.add_argument('--nodes', type=int, default=1)
  p.add_argument('--gpus_per_node', type=int, default=8)
  p.add_argument('--cpus_per_task', type=int, default=8)
  p.add_argument('--time', default='24:00:00')
  p.add_argument('--signal_seconds', type=int, default=300,
                 help='SIGTERM this long before the time limit, to save '
                 '(SLURM may send it up to 60 s early).')
  p.add_argument('--requeue', action=argparse.BooleanOptionalAction,
                 default=True, help='Requeue the job when it exits 75.')
  p.add_argument('--partition', default='')
  p.add_argument('--job_name', default='simclr_jax')


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add_flags(p)
  p.add_argument('--config', default='configs/imagenet_simclr_r50.py')
  p.add_argument('--workdir', required=True)
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--script', default='', help='Where to write the batch script.')
  p.add_argument('--dry_run', action='store_true')
  args = p.parse_args(argv)
  if '://' not in args.workdir:
    args.workdir = os.path.abspath(args.workdir)
  return args


def main(argv=None):
  args = parse(argv)
  script = batch_script(args)
  path = args.script or os.path.join(args.workdir, 'simclr_jax.sbatch')
  return write_and_submit(script, path, args.dry_run), script


if __name__ == '__main__':
  main()
