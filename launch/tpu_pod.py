"""Cloud TPU pods: create a TPU VM, install simclr-jax on every worker, run,
stream logs, delete. The gcloud commands are those of Cloud TPU's docs
(`gcloud compute tpus tpu-vm ...`); `--dry_run` prints them without running.

  python launch/tpu_pod.py --name=simclr --zone=us-central2-b --project=P \
      --accelerator_type=v4-32 --config=configs/imagenet_simclr_r50.py \
      --workdir=gs://bucket/r50 create setup run logs
  python launch/tpu_pod.py ... delete
A preempted run resumes by running `run` again with the same workdir.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top

ACTIONS = ('create', 'setup', 'run', 'logs', 'delete')
LOG = '~/simclr_jax.log'


def commands(args) -> list[list[str]]:
  base = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  where = [f'--zone={args.zone}', f'--project={args.project}']
  ssh = lambda worker, cmd: base + ['ssh', args.name, *where,
                                    f'--worker={worker}', f'--command={cmd}']
  out = []
  for action in args.actions:
    if action == 'create':
      out.append(base + ['create', args.name, *where,
                         f'--accelerator-type={args.accelerator_type}',
                         f'--version={args.runtime_version}'])
    elif action == 'setup':
      out.append(base + ['scp', '--recurse', args.repo,
                         f'{args.name}:~/simclr-jax', *where, '--worker=all'])
      out.append(ssh('all', 'cd ~/simclr-jax && pip install -U "jax[tpu]" '
                     '&& pip install -e .'))
    elif action == 'run':
      main = common.show(common.main_command(args.config, args.workdir,
                                             args.override, 'python3'))
      out.append(ssh('all', f'cd ~/simclr-jax && nohup {main} > {LOG} 2>&1 &'))
    elif action == 'logs':
      out.append(ssh('0', f'tail -f {LOG}'))
    elif action == 'delete':
      out.append(base + ['delete', args.name, *where, '--quiet'])
  return out


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('actions', nargs='+', choices=ACTIONS)
  p.add_argument('--name', required=True)
  p.add_argument('--zone', required=True)
  p.add_argument('--project', required=True)
  p.add_argument('--accelerator_type', default='v4-32')
  p.add_argument('--runtime_version', default='tpu-ubuntu2204-base')
  p.add_argument('--config', default='configs/imagenet_simclr_r50.py')
  p.add_argument('--workdir', default='')
  p.add_argument('--repo', default='.')
  p.add_argument('--override', action='append', default=[],
                 help='Extra flag for main, e.g. --config.train.batch_size=8192')
  p.add_argument('--dry_run', action='store_true')
  args = p.parse_args(argv)
  if 'run' in args.actions and not args.workdir.startswith('gs://'):
    p.error('run needs --workdir=gs://... (every worker must see it)')
  return args


if __name__ == '__main__':
  a = parse()
  common.execute(commands(a), a.dry_run)
