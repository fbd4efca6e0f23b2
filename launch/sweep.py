"""Expands a config's `get_sweep(hyper)` into settings, each with its own
workdir (named after its overrides) and its own log, and runs them:

  --target=local  one after another here (launch/queue.py);
  --target=tpu    on `--parallel` TPU pods (default 1), each created, set up
                  and given its share of the settings to run one after
                  another (launch/queue.py on every worker); never two
                  trainings on one pod;
  --target=slurm  one SLURM job array, a task per setting, at most
                  `--parallel` at a time.

`--dry_run` prints the commands (and the batch script) without running.

  python launch/sweep.py --config=configs/digits_sweep.py --workdir=runs/sweep
  python launch/sweep.py --config=configs/cifar10.py --workdir=gs://b/sweep \
      --target=tpu --parallel=3 --tpu_arg=--name=sweep --tpu_arg=--zone=Z \
      --tpu_arg=--project=P --tpu_arg=--accelerator_type=v5litepod-8
"""

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top
from simclr_jax import sweep as sweep_lib  # pylint: disable=g-import-not-at-top


def load_module(path):
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def expand(config_path: str, workdir: str, config_arg=None):
  """[(run workdir, overrides)], each validated against the config's fields."""
  module = load_module(config_path)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{config_path} defines no get_sweep(hyper).')
  base = module.get_config(config_arg)
  runs = []
  for overrides in module.get_sweep(sweep_lib.hyper):
    config = sweep_lib.apply_overrides(base, overrides)  # Unknown key -> error.
    from simclr_jax import config_validation  # pylint: disable=g-import-not-at-top
    problems = config_validation.find_problems(config)
    if problems:
      raise ValueError(f'Sweep run {overrides} is invalid: {problems}')
    runs.append((os.path.join(workdir, sweep_lib.run_name(overrides)), overrides))
  return runs


def pod_name(name: str, i: int, parallel: int) -> str:
  return f'{name}-{i}' if parallel > 1 else name


def tpu_commands(args, runs) -> list[list[str]]:
  """Per pod: `tpu_pod.py create setup queue` with its shard of the settings."""
  from launch import tpu_pod  # pylint: disable=g-import-not-at-top
  pod_args = tpu_pod.parser().parse_args(['run', *args.tpu_arg])
  sweep_name = os.path.basename(args.workdir.rstrip('/'))
  cmds = []
  for i in range(min(args.parallel, len(runs))):
    cmds.append([
        sys.executable, os.path.join(common.REPO, 'launch', 'tpu_pod.py'),
        'create', 'setup', 'queue',
        *[a for a in args.tpu_arg if not a.startswith('--name=')],
        f'--name={pod_name(pod_args.name, i, args.parallel)}',
        f'--config={args.config}', f'--workdir={args.workdir}',
        f'--shard={i}', f'--num_shards={min(args.parallel, len(runs))}',
        f'--log_dir=~/simclr_sweep_logs/{sweep_name}'])
  return cmds


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', required=True)
  p.add_argument('--config_arg', default=None)
  p.add_argument('--workdir', required=True)
  p.add_argument('--target', choices=('local', 'tpu', 'slurm'), default='local')
  p.add_argument('--parallel', type=int, default=1,
                 help='tpu: pods; slurm: array tasks running at once.')
  p.add_argument('--tpu_arg', action='append', default=[],
                 help='For tpu_pod.py, e.g. --tpu_arg=--name=sweep (pods are '
                 'named NAME-i when --parallel > 1).')
  p.add_argument('--slurm_arg', action='append', default=[],
                 help='For slurm.py, e.g. --slurm_arg=--gpus_per_node=4.')
  p.add_argument('--dry_run', action='store_true')
  args = p.parse_args(argv)
  if args.parallel < 1:
    p.error('--parallel must be >= 1.')
  path = common.split_config(common.absolute_config(args.config))[0]
  os.environ['JAX_PLATFORMS'] = 'cpu'   # Validation only; no accelerator here.
  runs = expand(path, args.workdir, args.config_arg)
  print(f'# {len(runs)} settings', flush=True)
  if args.target == 'local':
    from launch import queue  # pylint: disable=g-import-not-at-top
    flags = [f'--config={args.config}', f'--workdir={args.workdir}',
             *([f'--config_arg={args.config_arg}'] if args.config_arg else []),
             *(['--dry_run'] if args.dry_run else [])]
    rc, commands = queue.main(flags)
    if rc:
      sys.exit(rc)
    return [common.show(c) for c, _ in commands]
  if args.target == 'tpu':
    if not args.workdir.startswith('gs://'):
      p.error('--target=tpu needs --workdir=gs://... (every worker must see it)')
    lines = common.execute(tpu_commands(args, runs), args.dry_run)
    name = os.path.basename(args.workdir.rstrip('/'))
    print(f'# Each pod runs its settings one after another, a log per setting '
          f'in ~/simclr_sweep_logs/{name}/ on its workers; follow one with '
          f'`tpu_pod.py logs --log=~/simclr_sweep_logs/{name}/queue.log ...`. '
          'Delete a pod (`tpu_pod.py delete`) when that log ends with "queue '
          'exit code 0"; after a preemption (code 75) rerun its line without '
          '`create`.')
    return lines
  from launch import slurm  # pylint: disable=g-import-not-at-top
  sp = argparse.ArgumentParser(prog='--slurm_arg')
  slurm.add_flags(sp)
  slurm_args = sp.parse_args(args.slurm_arg)
  slurm_args.config = (path + (f':{args.config_arg}' if args.config_arg else
                               common.split_config(args.config)[1]))
  slurm_args.workdir = (args.workdir if '://' in args.workdir
                        else os.path.abspath(args.workdir))
  slurm_args.override = []
  runs = [(os.path.join(slurm_args.workdir, os.path.basename(d)), o)
          for d, o in runs]
  script = slurm.array_script(slurm_args, runs, args.parallel)
  return slurm.write_and_submit(
      script, os.path.join(slurm_args.workdir, 'simclr_jax_sweep.sbatch'),
      args.dry_run)


if __name__ == '__main__':
  main()
