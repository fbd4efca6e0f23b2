"""The benchmark scripts run (tiny mode, in-process) and write sound JSON; the
train step compiles once, donates its state and keeps float32 master weights."""

import json
import os
import sys
import warnings

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import conv_shapes
from benchmarks import loss as loss_benchmark
from benchmarks import report as report_script
from benchmarks import torch_step
from benchmarks import train_step
from simclr_jax import train


def _run(module, tmp_path, *args):
  out = tmp_path / f'{module.__name__.rsplit(".", 1)[-1]}.json'
  module.main(['--tiny', f'--json_out={out}', *args])
  report = json.loads(out.read_text())
  assert report['tiny'] and report['results']
  return report


def _positive(row, *keys):
  for key in keys:
    assert row[key] > 0, (key, row[key])


def test_train_step_benchmark(tmp_path):
  report = _run(train_step, tmp_path, '--devices=2')
  assert report['machine']['device_count'] >= 2
  (row,) = report['results']
  _positive(row, 'compile_s', 'step_s', 'images_per_s', 'xla_flops_per_step',
            'achieved_tflops', 'measured_peak_tflops', 'mfu_measured')
  assert row['devices'] == 2 and row['views_per_s'] == 2 * row['images_per_s']
  assert row['step_s_min'] <= row['step_s'] <= row['step_s_max']
  assert row['donation_warnings'] == []
  assert row['param_dtype'] == 'float32' and np.isfinite(row['loss'])
  assert row['mfu_nominal'] is None  # No nominal peak for a CPU.
  (augment,) = report['device_augment']
  _positive(augment, 'views_per_s', 'gflop_per_view')


def test_conv_shapes_benchmark(tmp_path):
  report = _run(conv_shapes, tmp_path, '--no_torch')
  for row in report['results']:
    _positive(row, 'xla_ms', 'matmul_ms', 'xla_gflops', 'gflop')


def test_loss_benchmark(tmp_path):
  report = _run(loss_benchmark, tmp_path)
  rows = report['results']
  assert {(r['global_batch'], r['queue_size']) for r in rows} == {
      (64, 0), (256, 0), (64, 512), (256, 512)}
  for row in rows:
    assert row['timed'] and row['devices'] == jax.device_count()
    _positive(row, 'time_s', 'gflop', 'peak_bytes', 'temp_bytes')
  by_key = {(r['global_batch'], r['queue_size']): r for r in rows}
  # More rows and a queue of negatives both cost FLOPs.
  assert by_key[256, 0]['gflop'] > by_key[64, 0]['gflop']
  assert by_key[64, 512]['gflop'] > by_key[64, 0]['gflop']


def test_torch_step_benchmark(tmp_path):
  pytest.importorskip('torch')
  (row,) = _run(torch_step, tmp_path)['results']
  _positive(row, 'step_s', 'images_per_s')
  assert np.isfinite(row['loss'])


def test_report_makes_figures_and_tables(tmp_path, capsys):
  results = tmp_path / 'results'
  results.mkdir()
  common_row = dict(model='r18_cifar32', width=1.0, batch_size=8)
  jax_row = dict(common_row, dtype='float32', compile_s=1.0, step_s=0.5,
                 step_s_min=0.5, spread=0.1, images_per_s=16.0, xla_flops_per_step=1e9,
                 achieved_tflops=0.002, mfu_measured=0.5)
  loss_row = dict(global_batch=256, queue_size=0, rows_per_device=32,
                  gflop=1.0, timed=True, time_s=0.01, spread=0.1,
                  achieved_tflops=0.1, peak_mib_per_device=3.0, devices=8)
  for name, row in (('train_step', jax_row),
                    ('torch_step', dict(common_row, images_per_s=8.0,
                                        step_s_min=1.0)),
                    ('loss', loss_row)):
    (results / f'{name}.json').write_text(json.dumps(
        {'tiny': False, 'results': [row]}))
  report_script.main([str(results), f'--figures={tmp_path}'])
  assert (tmp_path / 'train_step_images_per_s.png').stat().st_size > 0
  assert (tmp_path / 'loss_time.png').stat().st_size > 0
  assert '| r18_cifar32 | 1 | 8 | float32 | 16.00 | 8.00 | 2.00 | 2.00 |' in capsys.readouterr().out


def test_train_step_compiles_once_donates_and_keeps_fp32_weights():
  """Two bf16 steps: one compilation, donated inputs, float32 parameters."""
  config = train_step.make_config('r18_16', 0.125, batch_size=8,
                                  dtype='bfloat16')
  exp = train.build_experiment(config)
  state = train.create_train_state(exp)
  step = train.make_train_step(exp)
  batch = train_step.synthetic_batch(exp.mesh, 8, config.image_size)
  with warnings.catch_warnings():
    warnings.filterwarnings('error', message='.*donat.*')
    first, _ = step(state, batch, {}, exp.schedule)
    second, metrics = step(first, batch, {}, exp.schedule)
  # Compiled once, ahead of time: other shapes are refused, never recompiled.
  with pytest.raises(TypeError, match='compiled with float32.8,2,16,16,3'):
    step(second, train_step.synthetic_batch(exp.mesh, 16, config.image_size),
         {}, exp.schedule)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(first.params))
  assert {leaf.dtype for leaf in jax.tree.leaves(second.params)} == {
      np.dtype('float32')}
  assert int(second.step) == 2 and np.isfinite(float(metrics['loss']))
