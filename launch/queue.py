"""Runs a sweep's settings one after another, each with its own workdir and
log: `<log_dir>/<setting>.log`, ending with the setting's exit code.

A setting that fails is reported and the queue goes on; one that is
preempted (exit 75: SIGTERM or Ctrl-C, checkpoint saved) stops the queue
with 75, so that running the same queue again resumes it (finished settings
then only re-evaluate their last checkpoint). SIGTERM or Ctrl-C sent to the
queue itself is passed to the running setting, which saves and stops.
On a TPU pod every worker runs the same queue, so each setting is one
multi-host run. `--shard/--num_shards` pick every num_shards-th setting, one
queue per pod. `--dry_run` prints the commands.

  python launch/queue.py --config=configs/digits_sweep.py --workdir=runs/sweep
"""

import argparse
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top


def settings(config, workdir, config_arg=None, shard=0, num_shards=1):
  """[(name, run workdir, flags)] of this shard, in sweep order."""
  from launch import sweep  # pylint: disable=g-import-not-at-top
  runs = sweep.expand(common.split_config(config)[0], workdir, config_arg)
  return [(os.path.basename(d), d, [f'--{k}={v}' for k, v in o.items()])
          for d, o in runs[shard::num_shards]]


def command_lines(args, python=sys.executable):
  """[(command, log path)] of this queue."""
  path, arg = common.split_config(args.config)
  config_arg = args.config_arg or arg[1:] or None
  config = path + (f':{config_arg}' if config_arg else '')
  out = []
  for name, run_dir, flags in settings(path, args.workdir, config_arg,
                                       args.shard, args.num_shards):
    out.append((common.main_command(config, run_dir,
                                     flags + args.override, python),
                os.path.join(os.path.expanduser(args.log_dir), name + '.log')))
  return out


def run_queue(queue, env=None) -> int:
  """Runs [(command, log)] in order; returns the queue's exit code."""
  child = []

  def forward(signum, frame):
    del frame
    if child and child[0].poll() is None:
      child[0].send_signal(signum)
  previous = {s: signal.signal(s, forward)
              for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    return _run_all(queue, env, child)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _run_all(queue, env, child) -> int:
  failed = []
  for i, (cmd, log) in enumerate(queue):
    os.makedirs(os.path.dirname(log), exist_ok=True)
    print(f'[{i + 1}/{len(queue)}] {common.show(cmd)} > {log}', flush=True)
    with open(log, 'a') as f:
      child[:] = [subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                   env=env)]
      rc = child[0].wait()
      f.write(f'simclr_jax exit code {rc}\n')
    if rc == common.EXIT_PREEMPTED:
      print(f'Preempted (exit {rc}), checkpoint saved: run the same queue '
            'again to resume.', flush=True)
      return rc
    if rc:
      print(f'Setting failed with exit code {rc}; see {log}.', flush=True)
      failed.append(log)
  if failed:
    print(f'{len(failed)} of {len(queue)} settings failed: {failed}', flush=True)
    return 1
  return 0


def parser():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', required=True)
  p.add_argument('--config_arg', default=None)
  p.add_argument('--workdir', required=True)
  p.add_argument('--log_dir', default='',
                 help='Default: <workdir>/logs (a local path).')
  p.add_argument('--shard', type=int, default=0)
  p.add_argument('--num_shards', type=int, default=1)
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--dry_run', action='store_true')
  return p


def main(argv=None):
  p = parser()
  args = p.parse_args(argv)
  if not 0 <= args.shard < args.num_shards:
    p.error(f'--shard={args.shard} must be in [0, --num_shards={args.num_shards}).')
  args.config = common.absolute_config(args.config)
  # The settings get this environment; this process itself validates the
  # configs with JAX on the CPU, never taking the accelerators they need.
  env = dict(os.environ)
  os.environ['JAX_PLATFORMS'] = 'cpu'
  if not args.log_dir:
    if args.workdir.startswith('gs://'):
      p.error('--log_dir is needed (a local path) when --workdir is on gs://.')
    args.log_dir = os.path.join(args.workdir, 'logs')
  queue = command_lines(args)
  if args.dry_run:
    for cmd, log in queue:
      print(f'{common.show(cmd)} > {log} 2>&1')
    return 0, queue
  return run_queue(queue, env), queue


if __name__ == '__main__':
  sys.exit(main()[0])
