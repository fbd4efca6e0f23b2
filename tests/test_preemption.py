"""Interruptions: SIGTERM and Ctrl-C at start-up, mid-step,
mid-eval, mid-save and after the last step never lose the last good
checkpoint, save the newest reachable step, say why they stopped, and exit
with preemption.EXIT_PREEMPTED; the resumed run ends bit-identical to an
uninterrupted one.

In-process runs send the signal to themselves at exact points (wrapped
functions), so each case is hit every time; one command-line run checks
the exit code and the start-up window for real.
"""

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from simclr_jax import checkpoint, preemption, train
from tiny import PROCESS_TIMEOUT_S, open_data, tiny_config

pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _config(data_dir):
  # Eval at step 3, periodic checkpoint at step 4 (async), the rest on demand.
  config = tiny_config(data_dir, steps=STEPS, log_every_steps=1,
                       checkpoint_every_steps=4)
  config.evals.accuracy.every_steps = 3
  return config


def _kill(sig):
  os.kill(os.getpid(), sig)   # Handled at the next bytecode, in this thread.


def _steps_on_disk(workdir):
  path = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(path):
    return []
  return sorted(int(s) for s in os.listdir(path) if s.isdigit())


def _weights(path):
  loaded = checkpoint.load_weights(path)
  return jax.tree.map(np.asarray, (loaded['params'], loaded['batch_stats']))


def _assert_identical(tree_a, tree_b):
  assert jax.tree.structure(tree_a) == jax.tree.structure(tree_b)
  for x, y in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)):
    assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def _at_startup(monkeypatch, sig):
  """While the train state is built (before restore and compile)."""
  real = train.create_train_state

  def create_train_state(exp):
    _kill(sig)
    return real(exp)
  monkeypatch.setattr(train, 'create_train_state', create_train_state)


def _in_step(monkeypatch, sig, at_step):
  """Right after step `at_step` is dispatched, while the device computes it."""
  real = train.make_train_step

  def make_train_step(exp):
    step_fn = real(exp)

    def wrapped(state, batch, teacher, schedule):
      step = int(jax.device_get(state.step)) + 1   # Read before it is donated.
      out = step_fn(state, batch, teacher, schedule)
      if step == at_step:
        _kill(sig)
      return out
    return wrapped
  monkeypatch.setattr(train, 'make_train_step', make_train_step)


def _in_eval(monkeypatch, sig):
  """After the first batch of the first evaluation."""
  real = train.data.Dataset.eval_iter
  sent = []

  def eval_iter(self, *args, **kwargs):
    for i, batch in enumerate(real(self, *args, **kwargs)):
      yield batch
      if i == 0 and not sent:
        sent.append(1)
        _kill(sig)
  monkeypatch.setattr(train.data.Dataset, 'eval_iter', eval_iter)


def _in_save(monkeypatch, sig):
  """Just after the first periodic save started writing (async)."""
  real = train.checkpoint.save

  def save(manager, step, state, force=False):
    out = real(manager, step, state, force=force)
    if not force:
      _kill(sig)
    return out
  monkeypatch.setattr(train.checkpoint, 'save', save)


def _run(config, workdir, caplog):
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    result = train.train_and_evaluate(config, workdir)
  return result, caplog.text


def test_signals_at_every_phase_save_and_resume_bit_identical(
    data_dir, tmp_path, monkeypatch, caplog):
  config = _config(data_dir)
  reference = str(tmp_path / 'reference')
  ref = train.train_and_evaluate(config, reference)
  assert ref['step'] == STEPS and not ref['preempted']

  workdir = str(tmp_path / 'run')
  code = preemption.EXIT_PREEMPTED

  # 1. Ctrl-C while step 2 computes: step 2 saved.
  with monkeypatch.context() as m:
    _in_step(m, signal.SIGINT, 2)
    result, log = _run(config, workdir, caplog)
  assert result['preempted'] and result['step'] == 2
  assert 'Ctrl-C (SIGINT) received' in log
  assert f'saved a checkpoint at step 2 in {workdir}/checkpoints; exiting ' \
         f'with code {code}' in log
  assert _steps_on_disk(workdir) == [2]

  # 2. SIGTERM in the middle of the evaluation at step 3: step 3 saved.
  with monkeypatch.context() as m:
    _in_eval(m, signal.SIGTERM)
    result, log = _run(config, workdir, caplog)
  assert result['preempted'] and result['step'] == 3
  assert 'saved a checkpoint at step 3' in log
  assert _steps_on_disk(workdir) == [2, 3]

  # 3. SIGTERM while the periodic step-4 checkpoint is written (async):
  #    it completes, and the next step boundary, 5, is saved too.
  with monkeypatch.context() as m:
    _in_save(m, signal.SIGTERM)
    result, log = _run(config, workdir, caplog)
  assert result['preempted'] and result['step'] == 5
  assert 'saved a checkpoint at step 5' in log
  assert _steps_on_disk(workdir) == [3, 4, 5]   # keeps 3
  _assert_identical(_weights(os.path.join(workdir, 'checkpoints', '4')),
                    _weights(os.path.join(reference, 'checkpoints', '4')))

  # 4. Ctrl-C at start-up of a resumed run: the step-5 checkpoint is kept.
  with monkeypatch.context() as m:
    _at_startup(m, signal.SIGINT)
    result, log = _run(config, workdir, caplog)
  assert result['preempted'] and result['step'] == 5
  assert f'the checkpoint at step 5 in {workdir}/checkpoints is kept' in log
  assert _steps_on_disk(workdir) == [3, 4, 5]   # keeps 3

  # 5. SIGTERM during the last step: it is saved as usual, the final
  #    evaluation is left to the rerun.
  with monkeypatch.context() as m:
    _in_step(m, signal.SIGTERM, STEPS)
    result, log = _run(config, workdir, caplog)
  assert result['preempted'] and result['step'] == STEPS
  assert 'final evaluation skipped' in log and 'eval/top1' not in result
  assert STEPS in _steps_on_disk(workdir)

  # 6. The rerun only evaluates; everything equals the uninterrupted run.
  result, log = _run(config, workdir, caplog)
  assert not result['preempted'] and result['step'] == STEPS
  assert result['eval/top1'] == ref['eval/top1']
  _assert_identical(_weights(workdir), _weights(reference))

  # mode=eval has no steps to finish: a signal mid-evaluation stops it at
  # once with the preempted code, and nothing in the workdir changes.
  eval_config = _config(data_dir)
  eval_config.mode = 'eval'
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with monkeypatch.context() as m:
    _in_eval(m, signal.SIGTERM)
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as stop:
      train.train_and_evaluate(eval_config, workdir)
  assert stop.value.code == preemption.EXIT_PREEMPTED
  assert 'SIGTERM received during an evaluation-only run' in caplog.text
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before


def test_startup_signal_and_handlers_restored_after_a_library_run(
    data_dir, tmp_path, monkeypatch, caplog):
  """SIGTERM before the first step of a fresh run: nothing to save, stop at
  once. A notebook's own SIGINT/SIGTERM handling comes back afterwards."""
  before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
  workdir = str(tmp_path / 'w')
  # SIGTERM at start-up, nothing saved yet: stop before any step.
  with monkeypatch.context() as m:
    _at_startup(m, signal.SIGTERM)
    result, log = _run(_config(data_dir), workdir, caplog)
  assert result['preempted'] and result['step'] == 0
  assert 'SIGTERM received' in log and 'Stopped during start-up' in log
  assert ('no checkpoint was written yet. Exiting with code '
          f'{preemption.EXIT_PREEMPTED}') in log
  assert _steps_on_disk(workdir) == []
  assert (signal.getsignal(signal.SIGINT),
          signal.getsignal(signal.SIGTERM)) == before


def test_second_ctrl_c_aborts_at_once():
  p = preemption.Preemption()
  assert p.install()
  try:
    _kill(signal.SIGINT)
    assert p.requested == 'Ctrl-C (SIGINT)' and p.should_stop(1)
    with pytest.raises(KeyboardInterrupt):
      _kill(signal.SIGINT)
  finally:
    p.uninstall()


def test_command_line_ctrl_c_at_startup_exits_preempted(data_dir, tmp_path):
  """The command line: Ctrl-C as soon as the run writes its config.json
  (while the state is built, restored and the step compiled) ends with the
  preempted code, a line saying so, and at most the first step saved."""
  workdir = tmp_path / 'cli'
  log_path = tmp_path / 'cli.log'
  cmd = [sys.executable, '-m', 'simclr_jax.main',
         f'--config={REPO}/configs/digits.py:runlocal', f'--workdir={workdir}',
         f'--config.data_dir={data_dir}',
         '--config.model.width_multiplier=0.125',
         '--config.train.batch_size=16', '--config.train.steps=50',
         '--config.train.checkpoint_every_steps=1000']
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + PROCESS_TIMEOUT_S
    while not (workdir / 'config.json').exists():
      assert proc.poll() is None and time.time() < deadline, (
          log_path.read_text()[-3000:])
      time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=PROCESS_TIMEOUT_S)
  finally:
    if proc.poll() is None:
      proc.kill()
  text = log_path.read_text()
  assert proc.returncode == preemption.EXIT_PREEMPTED, text[-3000:]
  assert 'Ctrl-C (SIGINT) received' in text
  assert 'Traceback' not in text
  steps = _steps_on_disk(str(workdir))
  if steps:   # The request came after the pre-loop check: step 1 saved.
    assert steps == [1] and 'saved a checkpoint at step 1' in text
  else:
    assert 'Stopped during start-up' in text


# ---------------------------------------------------------------------------
# Several processes (real ones, gloo collectives on localhost).


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


MP_STEPS = 24


def _start_processes(workdir, data_dir, tag):
  """The same command on 2 processes of 1 CPU device each."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  procs, logs = [], []
  for i in range(2):
    logs.append(f'{workdir}.{tag}.{i}.log')
    with open(logs[-1], 'w') as log:
      procs.append(subprocess.Popen(
          [sys.executable, '-m', 'simclr_jax.main',
           f'--config={REPO}/configs/digits.py:runlocal',
           f'--workdir={workdir}', f'--config.data_dir={data_dir}',
           '--config.model.width_multiplier=0.125',
           '--config.train.batch_size=16', '--config.evals.batch_size=16',
           f'--config.train.steps={MP_STEPS}', '--config.train.log_every_steps=1',
           '--config.train.checkpoint_every_steps=1000',
           f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
           f'--process_id={i}'],
          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs, logs


def _wait_all(procs, logs, timeout=PROCESS_TIMEOUT_S):
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return [p.returncode for p in procs], [open(l).read() for l in logs]


def test_sigterm_to_one_of_two_processes_stops_all_at_one_step(data_dir,
                                                               tmp_path):
  """SIGTERM to process 1 only: both agree on a step, save it, exit with the
  preempted code; the same command then resumes and ends bit-identical to
  an uninterrupted 2-process run."""
  open_data(tiny_config(data_dir))  # Prepared before the race.

  # The uninterrupted reference runs meanwhile (its own port and workdir).
  reference = str(tmp_path / 'reference')
  reference_run = _start_processes(reference, data_dir, 'reference')
  workdir = str(tmp_path / 'run')
  procs, logs = _start_processes(workdir, data_dir, 'interrupted')
  deadline = time.time() + 400
  try:
    while not re.search(r'Step 2/', open(logs[0]).read()):
      assert all(p.poll() is None for p in procs) and time.time() < deadline, (
          open(logs[0]).read()[-3000:])
      time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)
    t0 = time.time()
  finally:
    codes, outs = _wait_all(procs, logs)
    if codes != [preemption.EXIT_PREEMPTED] * 2:
      _wait_all(*reference_run)
  print(f'SIGTERM to exit of both processes: {time.time() - t0:.1f} s')
  assert codes == [preemption.EXIT_PREEMPTED] * 2, [o[-3000:] for o in outs]
  assert 'SIGTERM received' in outs[1] and 'SIGTERM received' not in outs[0]
  stops = [re.findall(r'all 2 processes stop after step (\d+)', o) for o in outs]
  assert stops[0] == stops[1] and len(stops[0]) == 1, stops
  step = int(stops[0][0])
  assert 2 <= step < MP_STEPS
  for out in outs:
    assert f'saved a checkpoint at step {step} in {workdir}/checkpoints' in out
  assert _steps_on_disk(workdir) == [step]

  procs, logs = _start_processes(workdir, data_dir, 'resumed')
  codes, outs = _wait_all(procs, logs)
  assert codes == [0, 0], [o[-3000:] for o in outs]
  assert f'Resumed from {workdir}/checkpoints at step {step}.' in outs[0]

  codes, outs = _wait_all(*reference_run)
  assert codes == [0, 0], [o[-3000:] for o in outs]
  _assert_identical(_weights(workdir), _weights(reference))
