"""Single host, all local devices: runs `python -m simclr_jax.main`.
`--fake_devices=N` simulates N CPU devices (for trying data parallelism).

  python launch/local.py --config=configs/digits.py --workdir=/tmp/digits
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--config', default='configs/digits.py')
  p.add_argument('--workdir', required=True)
  p.add_argument('--fake_devices', type=int, default=0)
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--dry_run', action='store_true')
  args = p.parse_args(argv)
  cmd = common.main_command(args.config, args.workdir, args.override,
                            sys.executable)
  if args.fake_devices:
    flag = f'--xla_force_host_platform_device_count={args.fake_devices}'
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    os.environ['JAX_PLATFORMS'] = 'cpu'
    cmd = ['env', f"XLA_FLAGS={os.environ['XLA_FLAGS']}", 'JAX_PLATFORMS=cpu'] + cmd
  return common.execute([cmd], args.dry_run)


if __name__ == '__main__':
  main()
