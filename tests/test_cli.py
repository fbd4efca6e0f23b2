"""The command line meets mistakes with one clear line and exit code 2,
before anything compiles or is written; `--help` lists the flags."""

import os
import subprocess
import sys

import pytest

from simclr_jax import configs
from simclr_jax.errors import EXIT_USAGE, UserError
from tiny import PROCESS_TIMEOUT_S

# (extra arguments, text the error line must contain)
MISTAKES = {
    'misspelled override': (['--config.train.batchsize=8'],
                            'did you mean config.train.batch_size?'),
    'missing config file': (['--config=nowhere/digits_x.py'],
                            'Config file not found: '),
    'misspelled config name': (['--config=digts'], 'did you mean --config=digits?'),
    'invalid value': (['--config.train.temperature=-1.0'],
                      'config.train.temperature=-1.0 must be'),
    'unknown dataset': (['--config.dataset=cifar1O'], 'did you mean cifar10'),
    'workdir is a file': (['--workdir={file}'], 'exists and is not a directory'),
}


def test_each_mistake_is_one_line_and_exit_2(data_dir, tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  procs = {}
  for name, (args, _) in MISTAKES.items():
    workdir = tmp_path / name.replace(' ', '_')
    args = [a.format(file=a_file) for a in args]
    command = [sys.executable, '-m', 'simclr_jax.main', f'--workdir={workdir}',
               f'--config.data_dir={data_dir}', *args]
    procs[name] = (subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE), workdir)
  for name, (proc, workdir) in procs.items():
    _, stderr = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    expected = MISTAKES[name][1]
    lines = stderr.strip().splitlines()
    errors = [l for l in lines if l.startswith('simclr-jax: error: ')]
    assert proc.returncode == EXIT_USAGE, (name, stderr[-2000:])
    assert len(errors) == 1 and expected in stderr, (name, stderr[-2000:])
    assert 'Traceback' not in stderr, (name, stderr[-2000:])
    assert len(lines) <= 4, (name, stderr)
    assert not workdir.exists() or not os.listdir(workdir), name


def test_traceback_on_request(data_dir, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'simclr_jax.main', f'--workdir={tmp_path / "w"}',
       '--verbosity=1', f'--config.data_dir={data_dir}',
       '--config.train.temperature=-1.0'],
      cwd=tmp_path, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
  assert proc.returncode != 0
  assert 'Traceback' in proc.stderr and 'ConfigError' in proc.stderr


def test_help_lists_flags_and_configs():
  proc = subprocess.run([sys.executable, '-m', 'simclr_jax.main', '--help'],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0
  for text in ('--workdir', '--config', '--config.FIELD=VALUE', 'digits',
               'export'):
    assert text in proc.stdout


def test_config_lookup(tmp_path, monkeypatch):
  packaged = configs.DIRECTORY
  monkeypatch.chdir(tmp_path)
  assert configs.find('digits') == os.path.join(packaged, 'digits.py')
  assert configs.find('configs/digits.py:runlocal') == (
      os.path.join(packaged, 'digits.py') + ':runlocal')
  own = tmp_path / 'configs' / 'digits.py'   # A user's own file wins.
  own.parent.mkdir()
  own.write_text('')
  assert configs.find('configs/digits.py') == str(own)
  with pytest.raises(UserError, match='Config file not found'):
    configs.find('elsewhere/digits.py')
