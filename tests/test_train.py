"""The trainer end to end on digits with a tiny ResNet, and the data-parallel
equivalence users care about: N devices == 1 device on the same global batch."""

import dataclasses
import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from simclr_jax import parallel, train
from simclr_jax.config_validation import ConfigError
from tiny import PROCESS_TIMEOUT_S, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_sharded_step_equals_one_device(data_dir):
  """Loss, gradients (via the update), BN statistics: 8x4 == 2x16 == 1x32."""
  config = tiny_config(data_dir)
  exp = train.build_experiment(config)
  rng = np.random.default_rng(0)
  batch = {'images': rng.uniform(size=(32, 2, 16, 16, 3)).astype(np.float32),
           'labels': rng.integers(0, 10, size=32).astype(np.int32),
           'label_mask': (rng.uniform(size=32) < 0.7).astype(np.float32)}
  results = {}
  for n in (8, 2, 1):
    exp_n = dataclasses.replace(exp, mesh=parallel.make_mesh(jax.devices()[:n]))
    state = train.create_train_state(exp_n)
    step = train.make_train_step(exp_n)
    new_state, metrics = step(state, parallel.global_batch(exp_n.mesh, batch),
                              {}, exp_n.schedule)
    results[n] = (jax.device_get(metrics), _flat(new_state.params),
                  _flat(new_state.batch_stats))
  metrics_1, params_1, stats_1 = results[1]
  assert metrics_1['loss'] > 0 and metrics_1['grad_norm'] > 0
  for n in (8, 2):
    metrics_n, params_n, stats_n = results[n]
    for key in ('loss', 'contrast_loss', 'probe_loss', 'grad_norm',
                'contrast_acc'):
      np.testing.assert_allclose(metrics_n[key], metrics_1[key], rtol=2e-5,
                                 err_msg=f'{key} with {n} devices')
    for a, b in zip(params_n, params_1):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(stats_n, stats_1):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The step moved the weights (not a vacuous comparison).
  init = _flat(train.create_train_state(exp).params)
  assert max(np.abs(a - b).max() for a, b in zip(params_1, init)) > 1e-4


def test_schedule_is_an_argument_of_one_compiled_step(data_dir):
  """Runs that differ in length, warm-up or learning rate lower to the same
  program (so they share the compile cache) and get their own schedule."""
  steps = []
  for train_overrides in ({'steps': 6}, {'steps': 400, 'warmup_epochs': 1.0,
                                         'learning_rate': 2.0}):
    exp = train.build_experiment(tiny_config(data_dir, **train_overrides))
    state = jax.eval_shape(lambda e=exp: train.create_train_state(e))
    batch = {'images': jax.ShapeDtypeStruct((32, 2, 16, 16, 3), np.float32),
             'labels': jax.ShapeDtypeStruct((32,), np.int32),
             'label_mask': jax.ShapeDtypeStruct((32,), np.float32)}
    lowered = train.make_train_step(exp).lower(state, batch, {}, exp.schedule)
    steps.append((exp.schedule, lowered.as_text()))
  (short, text_short), (long, text_long) = steps
  assert text_short == text_long
  assert float(short.total_steps) == 6 and float(long.total_steps) == 400
  assert float(long.warmup_steps) > 0 and float(long.peak) > float(short.peak)


def test_pretrain_end_to_end_and_resume(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config(data_dir, steps=4, log_every_steps=2,
                       checkpoint_every_steps=2)
  first = train.train_and_evaluate(config, workdir)
  assert first['step'] == 4
  assert 0.0 <= first['eval/top1'] <= 1.0 and first['eval/count'] == 540
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents*'))
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))
  # Same workdir, longer run: resumes at step 4 instead of starting over.
  config.train.steps = 6
  second = train.train_and_evaluate(config, workdir)
  assert second['start_step'] == 4 and second['step'] == 6


def test_pretraining_learns(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=30, log_every_steps=5,
                       checkpoint_every_steps=30, learning_rate=0.5,
                       batch_size=64)
  result = train.train_and_evaluate(config, str(tmp_path / 'learn'))
  history = result['history']
  assert history[-1]['contrast_loss'] < history[0]['contrast_loss'] - 0.1


def test_bad_configs_fail_fast(data_dir, tmp_path):
  cases = {
      'batch_size': ('train.batch_size', 12),
      'optimizer': ('train.optimizer', 'sgdx'),
      'temperature': ('train.temperature', -0.5),
      'mode': ('mode', 'pretrian'),
  }
  for field, (path, value) in cases.items():
    config = tiny_config(data_dir)
    section, _, key = path.rpartition('.')
    (config[section] if section else config)[key] = value
    with pytest.raises(ConfigError, match=path.replace('.', r'\.')):
      train.train_and_evaluate(config, str(tmp_path / field))
    assert not os.path.exists(tmp_path / field / 'checkpoints')


def test_cli_runs_pretraining_from_any_directory(data_dir, tmp_path):
  """README usage as a new user types it: another working directory, relative
  workdir and config path, a short quiet log, then an export beside it."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  proc = subprocess.run(
      [sys.executable, '-m', 'simclr_jax.main',
       '--config=configs/digits.py:runlocal', '--workdir=runs/cli',
       f'--config.data_dir={data_dir}', '--config.model.width_multiplier=0.125',
       '--config.train.batch_size=16', '--config.train.steps=2'],
      cwd=elsewhere, env=env, capture_output=True, text=True,
      timeout=PROCESS_TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdir = elsewhere / 'runs' / 'cli'
  assert os.path.isdir(workdir / 'checkpoints' / '2')
  lines = proc.stderr.splitlines()
  assert 'Final linear-probe top-1 on test' in lines[-1], proc.stderr[-3000:]
  # Only this package's lines: no orbax/tfds chatter, no config dump.
  assert len(lines) < 20, proc.stderr
  assert not any('orbax' in line or 'checkpoint_manager' in line
                 for line in lines), proc.stderr
  export = subprocess.run(
      [sys.executable, '-m', 'simclr_jax.main', 'export',
       '--workdir=runs/cli', '--output=exports/cli'],
      cwd=elsewhere, env=env, capture_output=True, text=True,
      timeout=PROCESS_TIMEOUT_S)
  assert export.returncode == 0, export.stderr[-3000:]
  assert os.path.isfile(elsewhere / 'exports' / 'cli' / 'model_config.json')


def test_pretraining_with_colours_on_device(data_dir, tmp_path):
  """uint8 crops from tf.data, colour and blur inside the compiled step."""
  config = tiny_config(data_dir, steps=3, log_every_steps=1,
                       checkpoint_every_steps=3)
  config.augment.on_device = True
  config.augment.use_blur = True  # Exercise every op, small image or not.
  result = train.train_and_evaluate(config, str(tmp_path / 'on_device'))
  assert result['step'] == 3
  assert all(np.isfinite(h['loss']) for h in result['history'])


def test_colours_on_device_is_refused_outside_pretraining(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.mode = 'supervised'
  config.augment.on_device = True
  with pytest.raises(ConfigError, match=r"augment\.on_device=True applies to "
                     "mode 'pretrain' only"):
    train.build_experiment(config, str(tmp_path / 'sup'))


def test_progress_rate_is_measured_between_synced_reports(monkeypatch):
  """No speed on the first report after a start (it holds compilation and
  asynchronous dispatch); then steps over seconds between reports; time
  spent in evaluation or checkpoints is not counted."""
  now = [100.0]
  monkeypatch.setattr(train.time, 'monotonic', lambda: now[0])
  written = []

  class Writer:
    def write_scalars(self, step, scalars):
      written.append((step, scalars))

  progress = train.Progress(total_steps=100, writer=Writer())
  lines = []
  monkeypatch.setattr(train.logging, 'info',
                      lambda fmt, *args: lines.append(fmt % args))
  now[0] += 50.0            # Compilation and the first 10 steps.
  progress.report(10, {'loss': 2.0})
  assert 'steps/s' not in lines[-1] and not written
  now[0] += 5.0
  progress.report(20, {'loss': 1.5})
  assert '2 steps/s, ETA 0m40s' in lines[-1]
  assert written == [(20, {'steps_per_sec': 2.0})]
  now[0] += 30.0            # An evaluation.
  progress.restart_clock(20)
  now[0] += 2.0
  progress.report(30, {'loss': 1.0})
  assert '5 steps/s, ETA 0m14s' in lines[-1]


def test_itstime_is_the_rule_of_periodic_actions():
  steps = range(1, 11)
  assert [s for s in steps if train.itstime(s, 4, 10, last=True)] == [4, 8, 10]
  assert [s for s in steps if train.itstime(s, 5, 10, last=False)] == [5]
  assert [s for s in steps if train.itstime(s, 0, 10, last=True)] == [10]
  assert not any(train.itstime(s, 0, 10, last=False) for s in steps)
