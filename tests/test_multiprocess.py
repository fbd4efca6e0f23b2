"""Multi-host training proven with real processes on localhost (gloo CPU
collectives, one CPU device per process: XLA:CPU's gloo collectives deadlock
with several devices per process, which the trainer refuses): identical
parameters everywhere, equal to one process with the same number of devices,
checkpoints portable between 1 and 2 processes, and a dying process makes the
others fail instead of hanging."""

import json
import os
import socket
import subprocess
import sys

import pytest

from simclr_jax.configs import digits
from tiny import PROCESS_TIMEOUT_S, open_data

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices_per_process):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices_per_process}'
  return env


def _launch(cmd_for, num_processes, devices_per_process,
            timeout=PROCESS_TIMEOUT_S):
  procs = [subprocess.Popen(cmd_for(i), cwd=REPO, env=_env(devices_per_process),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(num_processes)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      tails = [q.communicate()[0][-2000:] for q in procs]
      pytest.fail(f'No exit within {timeout} s; the processes printed:\n' +
                  '\n'.join(f'--- process {i}:\n{t}' for i, t in enumerate(tails)))
  return [p.returncode for p in procs], outs


@pytest.fixture(scope='module')
def data_dir(data_dir):  # pylint: disable=redefined-outer-name
  """digits prepared once, before processes race to build it."""
  config = digits.get_config()
  config.data_dir = data_dir
  open_data(config)
  return data_dir


def _worker(tmp_path, data_dir, n, port, extra=()):
  def cmd(i):
    return [sys.executable, os.path.join(HERE, 'multiprocess_worker.py'),
            f'--coordinator=127.0.0.1:{port}', f'--num_processes={n}',
            f'--process_id={i}', f'--data_dir={data_dir}',
            f'--out={tmp_path}/p{n}_{i}.json', *extra]
  return cmd


@pytest.mark.parametrize('num_processes', [2, 4])
def test_processes_agree_with_single_process(tmp_path, data_dir, num_processes):
  total_devices = num_processes
  codes, outs = _launch(_worker(tmp_path, data_dir, num_processes, _free_port()),
                        num_processes, 1)
  assert codes == [0] * num_processes, outs
  runs = [json.load(open(f'{tmp_path}/p{num_processes}_{i}.json'))
          for i in range(num_processes)]
  assert all(r['devices'] == total_devices for r in runs)
  # Identical parameters on every process after each step.
  for r in runs[1:]:
    assert r['records'] == runs[0]['records']
  # Same as one process with the same number of devices on the same batch.
  codes, outs = _launch(_worker(tmp_path, data_dir, 1, 0), 1, total_devices)
  assert codes == [0], outs
  single = json.load(open(f'{tmp_path}/p1_0.json'))['records']
  for a, b in zip(runs[0]['records'], single):
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)
    assert a['param_sum'] == pytest.approx(b['param_sum'], rel=1e-6)
    assert a['param_abs'] == pytest.approx(b['param_abs'], rel=1e-6)


def _main_cmd(workdir, data_dir, steps, n=1, port=0):
  def cmd(i):
    c = [sys.executable, '-m', 'simclr_jax.main',
         f'--config={REPO}/configs/digits.py:runlocal', f'--workdir={workdir}',
         f'--config.data_dir={data_dir}', '--config.model.width_multiplier=0.125',
         '--config.train.batch_size=16', '--config.evals.batch_size=16',
         f'--config.train.steps={steps}', '--config.train.checkpoint_every_steps=2']
    if n > 1:
      c += [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={n}',
            f'--process_id={i}']
    return c
  return cmd


def test_checkpoints_move_between_process_counts(tmp_path, data_dir):
  # 2 processes write step 2; 1 process resumes to 4; 2 processes resume to 6.
  workdir = tmp_path / 'run'
  codes, outs = _launch(_main_cmd(workdir, data_dir, 2, 2, _free_port()), 2, 1)
  assert codes == [0, 0], outs[0][-3000:]
  codes, outs = _launch(_main_cmd(workdir, data_dir, 4), 1, 2)
  assert codes == [0], outs[0][-3000:]
  assert 'Resumed from' in outs[0] and 'at step 2' in outs[0]
  codes, outs = _launch(_main_cmd(workdir, data_dir, 6, 2, _free_port()), 2, 1)
  assert codes == [0, 0], outs[0][-3000:]
  assert 'at step 4' in outs[0]
  assert os.path.isdir(workdir / 'checkpoints' / '6')


def test_dead_process_fails_the_others(tmp_path, data_dir):
  port = _free_port()
  cmd = _worker(tmp_path, data_dir, 2, port, ['--steps=50'])
  def cmd_with_death(i):
    return cmd(i) + (['--die_after=1'] if i == 1 else [])
  codes, outs = _launch(cmd_with_death, 2, 1)
  assert codes[1] == 3
  assert codes[0] != 0, outs[0][-2000:]


def test_several_cpu_devices_per_process_are_refused(tmp_path, data_dir):
  codes, outs = _launch(_main_cmd(tmp_path / 'run', data_dir, 2, 2, _free_port()),
                        2, 2)
  assert codes == [2, 2], outs[0][-3000:]
  for out in outs:
    assert 'need one device per process' in out and 'Traceback' not in out, out
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
