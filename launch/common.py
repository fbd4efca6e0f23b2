"""Shared helpers of the launchers: printing or running exact commands."""

import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Exit code of a run stopped by SIGTERM/Ctrl-C after saving (resume it);
# simclr_jax.preemption.EXIT_PREEMPTED, repeated so that launchers need no JAX.
EXIT_PREEMPTED = 75


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


def split_config(config: str) -> tuple[str, str]:
  """'path/x.py:arg' -> ('path/x.py', ':arg')."""
  path, sep, arg = config.partition(':')
  return path, sep + arg


def absolute_config(config: str) -> str:
  """The config as an absolute path (with its ':arg'), for a job that does
  not start where the launcher ran: relative to the current directory, else
  to the repository. A missing file is an error here, not on the cluster."""
  path, arg = split_config(config)
  for base in (os.getcwd(), REPO):
    candidate = os.path.abspath(os.path.join(base, path))
    if os.path.isfile(candidate):
      return candidate + arg
  sys.exit(f'Config file not found: {path} (relative to {os.getcwd()} or '
           f'{REPO}).')


def repo_relative_config(config: str, repo: str) -> str:
  """The config's path inside `repo` (with its ':arg'), for machines that
  get a copy of the repository; a file outside it is an error."""
  path, arg = split_config(absolute_config(config))
  rel = os.path.relpath(path, os.path.abspath(repo))
  if rel.startswith('..'):
    sys.exit(f'Config {path} is outside --repo={repo}, which is what the '
             'workers get: put it in the repository.')
  return rel + arg
