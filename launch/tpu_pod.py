"""Cloud TPU pods: create a TPU VM (or request one as a queued resource),
copy and install simclr-jax on every worker, run, stream logs, delete. The
gcloud commands are those of Cloud TPU's docs (`gcloud compute tpus ...`);
`--dry_run` prints them without running.

  python launch/tpu_pod.py --name=simclr --zone=us-central2-b --project=P \
      --accelerator_type=v4-32 --config=configs/imagenet_simclr_r50.py \
      --workdir=gs://bucket/r50 create setup run logs
  python launch/tpu_pod.py ... delete

The runtime (software) version follows the TPU generation (RUNTIMES, Cloud
TPU's table); `--runtime_version` overrides it. `run` starts the trainer in
the background on every worker and appends its exit code to the log; 75
means "preempted, checkpoint saved": running `run` again resumes.
"""

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top

ACTIONS = ('create', 'setup', 'run', 'queue', 'logs', 'delete')
REMOTE_REPO = '~/simclr-jax'
LOG = '~/simclr_jax.log'
# Accelerator-type prefix -> runtime version (Cloud TPU "TPU software
# versions": v4 and older share the base image; v5e, v5p, v6e have their own).
RUNTIMES = (
    ('v2-', 'tpu-ubuntu2204-base'),
    ('v3-', 'tpu-ubuntu2204-base'),
    ('v4-', 'tpu-ubuntu2204-base'),
    ('v5litepod-', 'v2-alpha-tpuv5-lite'),   # v5e
    ('v5p-', 'v2-alpha-tpuv5'),
    ('v6e-', 'v2-alpha-tpuv6e'),             # Trillium
)


def runtime_version(accelerator_type: str) -> str:
  for prefix, version in RUNTIMES:
    if accelerator_type.startswith(prefix):
      return version
  known = ', '.join(p + 'N' for p, _ in RUNTIMES)
  raise ValueError(f'Unknown --accelerator_type={accelerator_type!r} (known: '
                   f'{known}); pass --runtime_version explicitly.')


def remote_main(args, workdir, overrides=()) -> str:
  """The trainer's command on a worker, config inside the copied repo."""
  main = common.show(common.main_command('CONFIG', workdir, overrides,
                                         'python3'))
  config = f'"$HOME"/{REMOTE_REPO[2:]}/' + shlex.quote(args.config_in_repo)
  return main.replace('--config=CONFIG', f'--config={config}', 1)


def background(command: str, log: str, what: str = 'simclr_jax') -> str:
  """`command` detached from the ssh session, output and exit code in `log`."""
  inner = f'{command} > {log} 2>&1; echo "{what} exit code $?" >> {log}'
  return f'cd {REMOTE_REPO} && nohup bash -c {shlex.quote(inner)} > /dev/null 2>&1 &'


def create_commands(args) -> list[list[str]]:
  where = [f'--zone={args.zone}', f'--project={args.project}']
  shape = [f'--accelerator-type={args.accelerator_type}']
  spot = ['--spot'] if args.spot else []
  if args.queued:
    # Capacity requested as a queued resource: it becomes a TPU VM named
    # args.name when granted (`gcloud compute tpus queued-resources list`).
    return [['gcloud', 'compute', 'tpus', 'queued-resources', 'create',
             args.name, f'--node-id={args.name}', *where, *shape,
             f'--runtime-version={args.runtime_version}', *spot]]
  return [['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', args.name, *where,
           *shape, f'--version={args.runtime_version}', *spot]]


def commands(args) -> list[list[str]]:
  base = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  where = [f'--zone={args.zone}', f'--project={args.project}']
  ssh = lambda worker, cmd: base + ['ssh', args.name, *where,
                                    f'--worker={worker}', f'--command={cmd}']
  out = []
  for action in args.actions:
    if action == 'create':
      out.extend(create_commands(args))
    elif action == 'setup':
      out.append(base + ['scp', '--recurse', args.repo,
                         f'{args.name}:{REMOTE_REPO}', *where, '--worker=all'])
      out.append(ssh('all', f'cd {REMOTE_REPO} && pip install -U "jax[tpu]" '
                     '&& pip install -e .'))
    elif action == 'run':
      out.append(ssh('all', background(
          remote_main(args, args.workdir, args.override), args.log)))
    elif action == 'queue':
      # A sweep's share of settings, one after another (launch/queue.py).
      config = f'"$HOME"/{REMOTE_REPO[2:]}/' + shlex.quote(args.config_in_repo)
      queue = (f'python3 launch/queue.py --config={config} '
               f'--workdir={shlex.quote(args.workdir)} --shard={args.shard} '
               f'--num_shards={args.num_shards} --log_dir={args.log_dir}')
      log = f'{args.log_dir}/queue.log'
      out.append(ssh('all', f'mkdir -p {args.log_dir} && ' + background(
          queue, log, 'queue')))
    elif action == 'logs':
      out.append(ssh('0', f'tail -f {args.log}'))
    elif action == 'delete':
      if args.queued:
        out.append(['gcloud', 'compute', 'tpus', 'queued-resources', 'delete',
                    args.name, *where, '--force', '--quiet'])
      else:
        out.append(base + ['delete', args.name, *where, '--quiet'])
  return out


def parser():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('actions', nargs='+', choices=ACTIONS)
  p.add_argument('--name', required=True)
  p.add_argument('--zone', required=True)
  p.add_argument('--project', required=True)
  p.add_argument('--accelerator_type', default='v4-32')
  p.add_argument('--runtime_version', default='',
                 help='Default: by generation (see RUNTIMES).')
  p.add_argument('--spot', action='store_true',
                 help='Spot capacity (preemptible: runs get SIGTERM, save, '
                 'exit 75; `run` again on a new VM resumes).')
  p.add_argument('--queued', action='store_true',
                 help='Request the VM as a queued resource (how v5e/v5p/v6e '
                 'capacity is usually granted).')
  p.add_argument('--config', default='configs/imagenet_simclr_r50.py')
  p.add_argument('--workdir', default='')
  p.add_argument('--repo', default='.', help='The repository to copy to the '
                 'workers (run from its root, or point here).')
  p.add_argument('--log', default=LOG, help='Log file on each worker.')
  p.add_argument('--shard', type=int, default=0, help='queue: which share.')
  p.add_argument('--num_shards', type=int, default=1, help='queue: of how many.')
  p.add_argument('--log_dir', default='~/simclr_sweep_logs',
                 help='queue: per-setting logs on each worker.')
  p.add_argument('--override', action='append', default=[],
                 help='Extra flag for main, e.g. --config.train.batch_size=8192')
  p.add_argument('--dry_run', action='store_true')
  return p


def parse(argv=None):
  p = parser()
  args = p.parse_args(argv)
  for action in ('run', 'queue'):
    if action in args.actions and not args.workdir.startswith('gs://'):
      p.error(f'{action} needs --workdir=gs://... (every worker must see it)')
  if not args.runtime_version:
    try:
      args.runtime_version = runtime_version(args.accelerator_type)
    except ValueError as e:
      p.error(str(e))
  args.config_in_repo = common.repo_relative_config(args.config, args.repo)
  return args


if __name__ == '__main__':
  a = parse()
  common.execute(commands(a), a.dry_run)
