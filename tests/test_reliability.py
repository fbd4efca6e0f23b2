"""Reliability (issue 7): a killed or preempted run resumes bit for bit,
corrupt checkpoints are detected and skipped, non-finite steps stop or are
skipped, bad configs and workdirs are refused before anything compiles."""

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from simclr_jax import checkpoint, config_validation, preemption, train
from simclr_jax.config_validation import ConfigError
from tiny import PROCESS_TIMEOUT_S, tiny_config

# Orbax's asyncio loop complains (later, at garbage collection) on its way out
# of a failed read of a corrupt checkpoint; harmless.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 14         # of the command-line runs; every step is checkpointed.
RUN_TIMEOUT = PROCESS_TIMEOUT_S


# ---------------------------------------------------------------------------
# Command-line runs: interrupted and resumed == uninterrupted, bit for bit.


def _command(workdir, data_dir, *overrides):
  """The shape-for-shape command of test_train's CLI test (compile cache)."""
  return [sys.executable, '-m', 'simclr_jax.main',
          f'--config={REPO}/configs/digits.py:runlocal', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}',
          '--config.model.width_multiplier=0.125',
          '--config.train.batch_size=16', f'--config.train.steps={STEPS}',
          '--config.train.checkpoint_every_steps=1', *overrides]


def _env():
  return dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
              JAX_PLATFORMS='cpu')


def _start(workdir, data_dir, log_path):
  # Logs go to a file: orbax is chatty enough to fill a pipe and block.
  with open(log_path, 'w') as log:
    return subprocess.Popen(_command(workdir, data_dir), cwd=REPO, env=_env(),
                            stdout=log, stderr=subprocess.STDOUT)


def _run(workdir, data_dir, log_path) -> str:
  proc = _start(workdir, data_dir, log_path)
  proc.wait(timeout=RUN_TIMEOUT)
  log = open(log_path).read()
  assert proc.returncode == 0, log[-3000:]
  return log


def _latest_step(workdir):
  steps = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
           if s.isdigit()]
  return max(steps, default=0)


def _interrupt(workdir, data_dir, log_path, sig, rng):
  """Starts a run (or resumes one) and sends `sig` at a random moment soon
  after its 2nd or 3rd new checkpoint exists: in a step or an async save."""
  at = (_latest_step(workdir) if os.path.isdir(workdir) else 0) + int(
      rng.integers(2, 3, endpoint=True))
  proc = _start(workdir, data_dir, log_path)
  deadline = time.time() + RUN_TIMEOUT
  while not os.path.isdir(os.path.join(workdir, 'checkpoints', str(at))):
    assert proc.poll() is None and time.time() < deadline, (
        open(log_path).read()[-3000:])
    time.sleep(0.02)
  delay = float(rng.uniform(0, 0.25))
  print(f'Sending {sig!r} {delay:.2f}s after checkpoint step {at} appeared.')
  time.sleep(delay)
  proc.send_signal(sig)
  proc.wait(timeout=RUN_TIMEOUT)
  return proc.returncode, open(log_path).read()


def _weights(workdir):
  loaded = checkpoint.load_weights(workdir)
  return loaded['step'], jax.tree.map(np.asarray, (loaded['params'],
                                                   loaded['batch_stats']))


def _assert_identical(tree_a, tree_b):
  """Same structure, dtypes and bits."""
  assert jax.tree.structure(tree_a) == jax.tree.structure(tree_b)
  for x, y in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def _assert_final_weights_equal(workdir, reference):
  step, weights = _weights(workdir)
  assert step == reference[1][0] == STEPS
  _assert_identical(weights, reference[1][1])


@pytest.fixture(scope='module')
def reference(data_dir, tmp_path_factory):
  """An uninterrupted command-line run: its workdir and final weights."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  _run(workdir, data_dir, workdir + '.log')
  return workdir, _weights(workdir)


def _flip_bytes(step_dir):
  """Corrupts array data the way orbax cannot notice: same size, a few bytes
  changed in the middle of the largest data file."""
  files = glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'),
                    recursive=True)
  path = max(files, key=os.path.getsize)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(16)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0x5A for b in chunk))


def _truncate(step_dir):
  for path in glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'),
                        recursive=True):
    os.truncate(path, os.path.getsize(path) // 2)


def test_killed_preempted_and_corrupted_run_resumes_bit_identical(
    data_dir, reference, tmp_path):
  """One run through three mishaps (one chain: each start costs ~20 s).

  1. SIGKILL mid-run: a restart resumes from the last complete checkpoint
     (an async save cut short is never picked up).
  2. SIGTERM mid-run: the step finishes, a checkpoint is written and
     awaited, the process exits 75 (preempted) saying so.
  3. That checkpoint is silently corrupted (same size; orbax reads it without
     error): the restart reports it, sets it aside and uses the previous one.
  The final weights equal the uninterrupted run's bit for bit.
  """
  rng = np.random.default_rng()
  workdir = str(tmp_path / 'run')
  rc, log = _interrupt(workdir, data_dir, workdir + '.1.log', signal.SIGKILL,
                       rng)
  assert rc == -signal.SIGKILL, log[-3000:]
  killed_after = _latest_step(workdir)
  assert killed_after < STEPS

  rc, log = _interrupt(workdir, data_dir, workdir + '.2.log', signal.SIGTERM,
                       rng)
  assert rc == preemption.EXIT_PREEMPTED, log[-3000:]
  assert f'Resumed from {workdir}/checkpoints at step {killed_after}.' in log
  assert 'Final linear-probe' not in log
  lines = [l for l in log.splitlines()
           if 'Preemption requested: saved a checkpoint at step' in l]
  assert len(lines) == 1, log[-3000:]
  step = int(lines[0].split('at step ')[1].split()[0])
  assert killed_after < step < STEPS and step == _latest_step(workdir)
  _flip_bytes(os.path.join(workdir, 'checkpoints', str(step)))

  log = _run(workdir, data_dir, workdir + '.3.log')
  assert f'Checkpoint step {step} in' in log and 'is unreadable' in log
  assert f'Using checkpoint step {step - 1} instead' in log
  assert f'Resumed from {workdir}/checkpoints at step {step - 1}.' in log
  # Set aside, not deleted.
  assert os.path.isdir(os.path.join(workdir, checkpoint.UNREADABLE_DIR, str(step)))
  _assert_final_weights_equal(workdir, reference)


def test_corrupt_or_partial_latest_checkpoint_falls_back(reference, tmp_path,
                                                        caplog):
  source, _ = reference
  previous = _weights(os.path.join(source, 'checkpoints', str(STEPS - 1)))
  for name, corrupt in (('truncated', _truncate), ('flipped', _flip_bytes)):
    workdir = str(tmp_path / name)
    shutil.copytree(source, workdir)
    corrupt(os.path.join(workdir, 'checkpoints', str(STEPS)))
    caplog.clear()
    with caplog.at_level(logging.ERROR):
      step, weights = _weights(workdir)
    assert step == STEPS - 1
    _assert_identical(weights, previous[1])
    assert f'Cannot read checkpoint step {STEPS}' in caplog.text

    # The trainer's restore: reported, set aside, the previous step used.
    manager = checkpoint.make_manager(workdir)
    target = jax.device_put(checkpoint._as_numpy_restore(manager, STEPS - 1))  # pylint: disable=protected-access
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      restored, step = checkpoint.restore_latest(manager, target)
    assert step == STEPS - 1
    _assert_identical(jax.device_get(restored), jax.device_get(target))
    assert f'Checkpoint step {STEPS} in' in caplog.text
    assert f'Using checkpoint step {STEPS - 1} instead' in caplog.text
    assert manager.all_steps() == [STEPS - 2, STEPS - 1]
    manager.close()

  # A save cut short leaves orbax's temporary directory: never picked up.
  workdir = str(tmp_path / 'partial')
  shutil.copytree(source, workdir)
  os.rename(os.path.join(workdir, 'checkpoints', str(STEPS)),
            os.path.join(workdir, 'checkpoints', f'{STEPS}.orbax-checkpoint-tmp'))
  assert _weights(workdir)[0] == STEPS - 1

  # Nothing readable: an error, not a silent fresh start over the run.
  workdir = str(tmp_path / 'all_bad')
  shutil.copytree(source, workdir)
  for step_dir in glob.glob(os.path.join(workdir, 'checkpoints', '*')):
    _truncate(step_dir)
  with pytest.raises(ValueError, match='No readable checkpoint'):
    checkpoint.load_weights(workdir)
  manager = checkpoint.make_manager(workdir)
  with pytest.raises(ValueError, match='No readable checkpoint'):
    checkpoint.restore_latest(manager, target)
  manager.close()


# ---------------------------------------------------------------------------
# Non-finite loss: stop (no checkpoint after it) or skip (counted).


def _nan_batch_at(monkeypatch, bad_step):
  """Makes training batch number `bad_step` all NaN."""
  real = train.data.Dataset.train_iter

  def train_iter(self, views, *, labelled_only, start_step=0):
    for step, batch in enumerate(
        real(self, views, labelled_only=labelled_only, start_step=start_step),
        start=start_step + 1):
      if step == bad_step:
        batch = dict(batch, images=np.full_like(batch['images'], np.nan))
      yield batch

  monkeypatch.setattr(train.data.Dataset, 'train_iter', train_iter)


def _steps_on_disk(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
                if s.isdigit())


def test_nonfinite_stop_names_step_and_keeps_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch):
  _nan_batch_at(monkeypatch, 3)
  workdir = str(tmp_path / 'stop')
  # Checked every 4 steps for logging, but before every checkpoint too.
  config = tiny_config(data_dir, steps=4, log_every_steps=4,
                       checkpoint_every_steps=1, nonfinite='stop')
  with pytest.raises(FloatingPointError, match='Non-finite loss at step 3'):
    train.train_and_evaluate(config, workdir)
  assert _steps_on_disk(workdir) == [1, 2]


def test_nonfinite_skip_counts_and_leaves_the_state_unchanged(
    data_dir, tmp_path, monkeypatch):
  _nan_batch_at(monkeypatch, 3)
  workdir = str(tmp_path / 'skip')
  config = tiny_config(data_dir, steps=4, log_every_steps=2,
                       checkpoint_every_steps=1, nonfinite='skip')
  result = train.train_and_evaluate(config, workdir)
  assert result['step'] == 4 and result['nonfinite_steps'] == 1
  assert _steps_on_disk(workdir) == [2, 3, 4]
  at = {s: _weights(os.path.join(workdir, 'checkpoints', str(s)))[1]
        for s in (2, 3, 4)}
  _assert_identical(at[3], at[2])      # The skipped step changed nothing...
  assert not all(np.array_equal(a, b) for a, b in   # ...the next one did.
                 zip(jax.tree.leaves(at[4]), jax.tree.leaves(at[3])))


# ---------------------------------------------------------------------------
# Config validation: before anything compiles, every problem in one message.


def _problems(config, workdir=None):
  with pytest.raises(ConfigError) as error:
    config_validation.validate_or_raise(config, workdir)
  return str(error.value)


def _loose(config):
  """A copy that accepts any value, as a Python user's dict might hold."""
  return ml_collections.ConfigDict(config.to_dict(), type_safe=False)


def test_each_rule_is_enforced(data_dir):
  # (field overrides, expected text); test_train covers batch_size=12,
  # an unknown optimizer, a negative temperature and a misspelt mode.
  cases = [
      ({'train.temperature': 0.0}, 'config.train.temperature=0.0 must be'),
      ({'distill.temperature': 0.0}, 'config.distill.temperature=0.0'),
      ({'train.steps': 0, 'train.epochs': 0}, 'config.train.epochs must be > 0'),
      ({'evals.batch_size': 20}, 'config.evals.batch_size=20 is not '
       'divisible by the number of devices (8)'),
      ({'model.depth': 19}, 'config.model.depth=19 must be one of'),
      ({'dataset': ''}, "config.dataset='' must be"),
      ({'label_fraction': 0.0}, 'config.label_fraction=0.0 must be in (0, 1]'),
      ({'label_fraction': 1.5}, 'config.label_fraction=1.5'),
      ({'image_size': 0}, 'config.image_size=0 must be'),
      ({'seed': 2**40}, 'config.seed=1099511627776 must be an integer in [0, '),
      ({'train.learning_rate': float('inf')}, 'config.train.learning_rate=inf'),
      ({'mode': 'finetune'}, "config.mode='finetune' needs config.init_checkpoint"),
      ({'mode': 'linear_eval'}, "'linear_eval' needs config.init_checkpoint"),
      ({'mode': 'distill'}, 'needs config.distill.teacher_checkpoint'),
      ({'mode': 'finetune', 'init_checkpoint': '/x', 'model.ft_proj_selector': 3},
       'config.model.ft_proj_selector=3 is beyond the projection head'),
      ({'augment.crop_area_min': 0.9, 'augment.crop_area_max': 0.5},
       'config.augment.crop_area_min=0.9 > crop_area_max=0.5'),
      ({'evals.knn.every_steps': 5, 'evals.knn.k': 0},
       'config.evals.knn.every_steps > 0 needs config.evals.knn.k >= 1'),
      ({'train.learnig_rate': 0.1}, 'config.train.learnig_rate is not a known field'),
  ]
  for overrides, expected in cases:
    config = _loose(tiny_config(data_dir))
    for path, value in overrides.items():
      section, _, key = path.rpartition('.')
      (config[section] if section else config)[key] = value
    assert expected in _problems(config), overrides

  # All problems at once, in one message.
  config = _loose(tiny_config(data_dir))
  config.train.temperature = -1.0
  config.train.batch_size = 12
  config.label_fraction = 0.0
  config.mode = 'finetune'
  config.model.depth = '50'
  message = _problems(config)
  for expected in ('train.temperature', 'train.batch_size=12', 'label_fraction',
                   'init_checkpoint', 'model.depth'):
    assert expected in message
  assert message.count('\n  - ') == 5


def _wrong_values(path):
  """Values of the wrong type or range for a field, by the kind of value its
  description asks for."""
  what = config_validation.FIELDS[path][1]
  if 'a bool' in what:
    wrong = ['True', 1, 0.0, [True]]
  elif 'an integer' in what:
    wrong = ['8', 8.5, -10**6, 2**40, float('nan'), True, [8], {'a': 8}]
  elif 'a finite number' in what or what.startswith(('in [', 'in (')):
    # (True is not here: ConfigDict turns it into 1.0 in a float field.)
    wrong = ['0.5', -1e6, float('nan'), float('inf'), -float('inf'), [0.5]]
  else:  # Names, paths and enumerations.
    wrong = [3.5, True, ['a'], b'a', {'a': 'b'}]
    if what.startswith('one of'):
      wrong.append('no-such-value')
  return wrong if what.startswith('None') else wrong + [None]


def test_fuzz_every_field_rejects_wrong_values(data_dir):
  base = tiny_config(data_dir)
  assert config_validation.find_problems(base) == []
  for path in config_validation.FIELDS:
    section, _, key = path.rpartition('.')
    for value in _wrong_values(path):
      config = _loose(base)
      (config[section] if section else config)[key] = value
      message = _problems(config)
      assert f'config.{path}' in message, (path, value, message)


def test_unknown_dataset_is_clear_before_compile(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.dataset = 'no_such_dataset'
  with pytest.raises(ValueError, match="Unknown config.dataset 'no_such_dataset'"):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')


def test_cli_refuses_bad_overrides_before_compiling(data_dir, tmp_path):
  workdir = tmp_path / 'cli'
  cases = {  # override -> text expected in the output
      '--config.train.learnig_rate=0.1': 'learnig_rate',
      '--config.train.steps=abc': 'steps',
  }
  for override, expected in cases.items():
    proc = subprocess.run(_command(workdir, data_dir, override), cwd=REPO,
                          env=_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-2000:]
  # Well-typed but invalid: every problem listed, nothing written.
  proc = subprocess.run(
      _command(workdir, data_dir, '--config.train.temperature=-1.0',
               '--config.train.batch_size=15', '--config.mode=finetune'),
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
  assert proc.returncode != 0
  tail = proc.stderr[proc.stderr.index('Invalid config'):]
  for expected in ('config.train.temperature=-1.0 must be',
                   'config.train.batch_size=15 is not divisible by the number '
                   'of devices (2)', 'needs config.init_checkpoint'):
    assert expected in tail, proc.stderr[-2000:]
  assert not workdir.exists() or not os.listdir(workdir)


# ---------------------------------------------------------------------------
# Workdir safety.


def test_workdir_with_a_different_model_is_refused(data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  config = tiny_config(data_dir)
  checkpoint.write_config(workdir, config)
  before = open(os.path.join(workdir, 'config.json')).read()

  wider = tiny_config(data_dir)
  wider.model.width_multiplier = 0.25
  with pytest.raises(ConfigError, match=r'different model .*allow_config_change'
                     r'.*model\.width_multiplier: saved 0\.125 != new 0\.25'):
    train.train_and_evaluate(wider, workdir)
  assert os.listdir(workdir) == ['config.json']

  # Allowed on request; each start that changes the config adds a file and
  # rewrites none; the latest one is what a later start is compared with.
  wider.allow_config_change = True
  config_validation.validate_or_raise(wider, workdir)
  checkpoint.write_config(workdir, wider)
  checkpoint.write_config(workdir, wider)
  assert sorted(os.listdir(workdir)) == ['config.1.json', 'config.json']
  assert open(os.path.join(workdir, 'config.json')).read() == before
  assert checkpoint.read_config(workdir).model.width_multiplier == 0.25
  wider.allow_config_change = False
  config_validation.validate_or_raise(wider, workdir)
  assert 'saved 0.25 != new 0.125' in _problems(config, workdir)
  # Non-model changes (a longer run) are fine; reading modes never conflict.
  longer = tiny_config(data_dir, steps=100)
  longer.model.width_multiplier = 0.25
  config_validation.validate_or_raise(longer, workdir)
  config.mode = 'eval'
  config_validation.validate_or_raise(config, workdir)
