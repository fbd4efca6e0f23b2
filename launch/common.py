"""Shared helpers of the launchers: printing or running exact commands."""

import shlex
import subprocess
import sys


def show(cmd: list[str]) -> str:
  return ' '.join(shlex.quote(c) for c in cmd)


def execute(commands: list[list[str]], dry_run: bool) -> list[str]:
  """Prints each command; runs them in order unless `dry_run`."""
  lines = [show(c) for c in commands]
  for cmd, line in zip(commands, lines):
    print(line, flush=True)
    if not dry_run:
      rc = subprocess.call(cmd)
      if rc:
        sys.exit(f'Command failed with exit code {rc}: {line}')
  return lines


def main_command(config: str, workdir: str, overrides=(), python='python'):
  return [python, '-m', 'simclr_jax.main', f'--config={config}',
          f'--workdir={workdir}', *overrides]
