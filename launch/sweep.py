"""Expands a config's `get_sweep(hyper)` into runs, each with its own workdir
named after its overrides; runs them one after another locally, or prints one
pod launch command per run (`--target=tpu`). `--dry_run` lists them.

  python launch/sweep.py --config=configs/digits_sweep.py --workdir=runs/sweep
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


def run_commands(config_path, runs, target, tpu_args=()):
  cmds = []
  for run_dir, overrides in runs:
    flags = [f'--{k}={v}' for k, v in overrides.items()]
    if target == 'local':
      cmds.append(common.main_command(config_path, run_dir, flags, sys.executable))
    else:
      cmds.append([sys.executable, 'launch/tpu_pod.py', 'run', *tpu_args,
                   f'--config={config_path}', f'--workdir={run_dir}',
                   *[f'--override={f}' for f in flags]])
  return cmds


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--config', required=True)
  p.add_argument('--config_arg', default=None)
  p.add_argument('--workdir', required=True)
  p.add_argument('--target', choices=('local', 'tpu'), default='local')
  p.add_argument('--tpu_arg', action='append', default=[],
                 help='Passed to tpu_pod.py, e.g. --tpu_arg=--name=simclr')
  p.add_argument('--dry_run', action='store_true')
  args = p.parse_args(argv)
  runs = expand(args.config, args.workdir, args.config_arg)
  print(f'# {len(runs)} runs', flush=True)
  cmds = run_commands(args.config, runs, args.target, args.tpu_arg)
  # Pod launches are printed for the user to run (or run here unless dry).
  return common.execute(cmds, args.dry_run)


if __name__ == '__main__':
  main()
