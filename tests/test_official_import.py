"""Import of the official SimCLR TF2 weights, checked against outputs that the
unmodified official code computed (tests/data/official_tf2/PROVENANCE.md)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import jax
import numpy as np
import pytest

from simclr_jax import checkpoint, data, export, official, tasks, train
from simclr_jax.errors import UserError
from tiny import tiny_config

DATA = os.path.join(os.path.dirname(__file__), 'data', 'official_tf2')
CASES = ('r50_w0.125_sk0_pretrain', 'r50_w0.125_sk1_pretrain')
# Largest |ours - official| allowed, relative to max |official| of the output.
RTOL = 1e-4
COMPARED = ('final_avg_pool', 'proj_head_output', 'logits_sup',
            'initial_max_pool', 'block_group1', 'block_group2',
            'block_group3', 'block_group4')


def _unpack(tmp_path_factory, names):
  """{name: folder} of the fixture archives, unpacked once per module."""
  root = tmp_path_factory.mktemp('official_tf2')
  for name in names:
    with tarfile.open(os.path.join(DATA, f'{name}.tar.xz')) as archive:
      archive.extractall(root, filter='data')
  return {name: str(root / name) for name in names}


@pytest.fixture(scope='module')
def cases(tmp_path_factory):
  return _unpack(tmp_path_factory, CASES)


def _case(cases, case):
  folder = cases[case]
  with open(os.path.join(folder, 'case.json')) as f:
    info = json.load(f)
  return folder, info, dict(np.load(os.path.join(folder, 'reference.npz')))


def _assert_matches(ours, reference):
  diffs = official.max_differences(ours, reference)
  assert set(COMPARED) <= set(diffs)
  for name, (diff, scale) in diffs.items():
    assert diff <= RTOL * scale, (name, diff, scale)


def _source(folder, info, fmt):
  if fmt == 'saved_model':
    return os.path.join(folder, 'saved_model')
  return os.path.join(folder, info['train_checkpoint'])


@pytest.mark.parametrize('fmt', ['saved_model', 'checkpoint'])
@pytest.mark.parametrize('case', CASES)
def test_import_matches_official_outputs(cases, case, fmt, tmp_path):
  folder, info, reference = _case(cases, case)
  flags = info['flags']
  out = str(tmp_path / 'export')
  report = official.import_official(_source(folder, info, fmt), out)
  arch = report['architecture']
  assert (arch['depth'], arch['width_multiplier'], arch['sk_ratio']) == (
      flags['resnet_depth'], flags['width_multiplier'], flags['sk_ratio'])
  assert arch['num_proj_layers'] == flags['num_proj_layers']
  assert arch['proj_out_dim'] == flags['proj_out_dim']
  assert arch['num_classes'] == flags['num_classes']
  assert not arch['cifar_stem']
  # lineareval_while_pretraining: the head reads h, as our online probe.
  assert (report['head'], report['ft_proj_selector']) == ('probe_head', 0)
  if fmt == 'saved_model':   # The import's own check ran the SavedModel.
    assert set(COMPARED) <= set(report['differences'])
    assert all(d <= RTOL * s for d, s in report['differences'].values())

  module, variables = export.load_pretrained(out)
  # Every official variable, no more: the counts of Keras' variable list.
  assert sum(np.size(x) for x in jax.tree.leaves(variables)) == sum(
      int(np.prod(v['shape'])) for v in info['keras_variables']) == (
          info['num_params'])
  ours, out_dict = official.block_outputs(module, variables,
                                          reference['inputs'])
  assert set(out_dict) >= {'h', 'z', 'probe_logits'}
  _assert_matches(ours, reference)


EXTRA = {  # case: (depth, width, sk_ratio, se_ratio, cifar_stem, head, layer)
    'r18_w0.0625_cifar_ft2': (18, 0.0625, 0.0, 0.0, True, 'sup_head', 2),
    'r34_w0.0625_sk1_se_pretrain': (34, 0.0625, 0.0625, 0.25, False,
                                    'probe_head', 0),
}


@pytest.fixture(scope='module')
def extra_cases(tmp_path_factory):
  return _unpack(tmp_path_factory, EXTRA)


@pytest.mark.parametrize('fmt', ['saved_model', 'checkpoint'])
@pytest.mark.parametrize('case', sorted(EXTRA))
def test_import_other_layouts(extra_cases, case, fmt, tmp_path):
  """ResNet-18 CIFAR stem fine-tuned from layer 2; ResNet-34 SK + SE."""
  folder, info, reference = _case(extra_cases, case)
  depth, width, sk, se, cifar, head, layer = EXTRA[case]
  # A training checkpoint cannot tell the head's layer; the SavedModel can.
  selector = layer if fmt == 'checkpoint' and head == 'sup_head' else None
  out = str(tmp_path / 'export')
  report = official.import_official(_source(folder, info, fmt), out,
                                    ft_proj_selector=selector)
  arch = report['architecture']
  assert (arch['depth'], arch['width_multiplier'], arch['sk_ratio'],
          arch['se_ratio'], arch['cifar_stem']) == (depth, width, sk, se, cifar)
  assert arch['num_proj_layers'] == info['flags']['num_proj_layers']
  assert arch['num_classes'] == info['flags']['num_classes']
  assert (report['head'], report['ft_proj_selector']) == (head, layer)
  module, variables = export.load_pretrained(out)
  ours, out_dict = official.block_outputs(module, variables,
                                          reference['inputs'])
  assert head.replace('_head', '_logits') in out_dict
  _assert_matches(ours, reference)


def test_selector_contradicting_the_saved_model_is_an_error(extra_cases,
                                                           tmp_path):
  folder, info, _ = _case(extra_cases, 'r18_w0.0625_cifar_ft2')
  with pytest.raises(ValueError, match='reads projection layer 2'):
    official.import_official(_source(folder, info, 'saved_model'),
                             str(tmp_path / 'o'), ft_proj_selector=1)
  assert not os.path.exists(tmp_path / 'o')


def test_imported_config_takes_the_architecture_from_the_import(cases,
                                                               tmp_path):
  from simclr_jax import config_validation  # pylint: disable=g-import-not-at-top
  from simclr_jax.configs import imported  # pylint: disable=g-import-not-at-top
  folder, info, _ = _case(cases, CASES[1])
  out = str(tmp_path / 'export')
  official.import_official(_source(folder, info, 'checkpoint'), out)
  saved = checkpoint.load_weights(out)['config'].model
  for mode in ('finetune', 'linear_eval', 'eval'):
    config = imported.get_config(f'init={out},mode={mode},pct=1')
    assert (config.mode, config.init_checkpoint) == (mode, out)
    for field in imported.ARCHITECTURE:
      assert config.model[field] == saved[field], field
    config_validation.validate_or_raise(config)
  assert config.evals.knn.k == 0
  with pytest.raises(FileNotFoundError, match='not an export'):
    imported.get_config(f'init={tmp_path}')


def test_every_checkpoint_key_is_mapped_or_reported(cases):
  folder, info, _ = _case(cases, CASES[1])
  weights = official.read_official(
      os.path.join(folder, info['train_checkpoint']))
  keys = {k['key'] for k in info['train_checkpoint_keys']}
  keys.discard('_CHECKPOINTABLE_OBJECT_GRAPH')
  unused = {k for v in weights.unused.values() for k in v}
  assert len(weights.variables) + len(unused) == len(keys)
  assert set(weights.unused) == {'optimizer slot', 'optimizer state',
                                 'training step', 'checkpoint counter'}
  assert weights.step == 123
  # The SavedModel holds exactly the same model variables, keyed by position.
  saved = official.read_official(os.path.join(folder, 'saved_model'))
  assert sorted(saved.variables) == sorted(weights.variables)
  assert not saved.unused
  for name, value in saved.variables.items():
    np.testing.assert_array_equal(value, weights.variables[name])


def test_unmappable_or_missing_variables_are_errors(cases):
  folder, info, _ = _case(cases, CASES[1])
  variables = official.read_official(
      os.path.join(folder, info['train_checkpoint'])).variables
  extra = dict(variables)
  extra['resnet_model/block_groups/1/layers/0/extra_layer/kernel'] = np.ones(3)
  with pytest.raises(ValueError, match='extra_layer'):
    official.convert(extra)
  missing = dict(variables)
  del missing['_projection_head/linear_layers/1/bn_relu/bn/moving_mean']
  with pytest.raises(ValueError,
                     match='linear_layers/1/bn_relu/bn/moving_mean'):
    official.convert(missing)
  shortcut = 'resnet_model/block_groups/2/layers/0/projection_layers/'
  broken = {k: v for k, v in variables.items() if not k.startswith(shortcut)}
  with pytest.raises(ValueError, match='projection shortcut'):
    official.convert(broken)


def test_head_layer_is_found_by_running(cases):
  """A head on projection layer k is told apart from one on h by its logits
  (what the import does with a SavedModel's logits_sup)."""
  folder, info, reference = _case(cases, CASES[0])
  arch, params, stats = official.convert(official.read_official(
      os.path.join(folder, info['train_checkpoint'])).variables)
  params['head']['dense']['kernel'] = np.random.default_rng(0).normal(
      size=(256, 10)).astype(np.float32)
  images = reference['inputs']
  for layer in (0, 1, 2):
    module = official.build(arch, 'sup_head', layer)
    variables = {'params': {**{k: v for k, v in params.items() if k != 'head'},
                            'sup_head': params['head']}, 'batch_stats': stats}
    logits = module.apply(variables, images, train=False)['sup_logits']
    assert official._head_input_layer(  # pylint: disable=protected-access
        params, stats, arch, np.asarray(logits), images) == layer


def test_bad_sources_get_one_clear_error(cases, tmp_path):
  folder, info, _ = _case(cases, CASES[0])
  with pytest.raises(UserError, match='nowhere'):
    official.import_official(str(tmp_path / 'nowhere'), str(tmp_path / 'o1'))
  # Damaged: one byte in 4096 of the data file flipped (the per-tensor
  # checksums catch it).
  damaged = tmp_path / 'damaged'
  shutil.copytree(os.path.join(folder, 'ckpt'), damaged)
  data_file = damaged / 'ckpt-123.data-00000-of-00001'
  raw = np.frombuffer(data_file.read_bytes(), np.uint8).copy()
  raw[::4096] ^= 0x5A
  data_file.write_bytes(raw.tobytes())
  with pytest.raises(ValueError, match='damaged'):
    official.import_official(str(damaged / 'ckpt-123'), str(tmp_path / 'o2'))
  # Truncated index.
  index = damaged / 'ckpt-123.index'
  index.write_bytes(index.read_bytes()[:100])
  with pytest.raises(ValueError, match='damaged'):
    official.import_official(str(damaged / 'ckpt-123'), str(tmp_path / 'o3'))
  # A TF2 checkpoint of something else.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  other = tf.train.Checkpoint(dense=tf.keras.layers.Dense(3))
  other.dense.build((None, 2))
  prefix = other.write(str(tmp_path / 'other' / 'ckpt'))
  with pytest.raises(ValueError, match='not an official SimCLR TF2'):
    official.import_official(prefix, str(tmp_path / 'o4'))
  assert not os.path.exists(tmp_path / 'o4')


def test_import_command_then_finetune_from_it(cases, data_dir, tmp_path):
  """`simclr-jax import` on a training checkpoint; a digits fine-tune from
  the export starts from exactly its weights and trains."""
  folder, info, reference = _case(cases, CASES[0])
  out = str(tmp_path / 'imported')
  result = subprocess.run(
      [sys.executable, '-m', 'simclr_jax.main', 'import',
       f'--source={os.path.join(folder, info["train_checkpoint"])}',
       f'--output={out}', '--ft_proj_selector=1'],
      capture_output=True, text=True, check=False,
      env={**os.environ, 'PYTHONPATH': os.pathsep.join(sys.path)})
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'linear head: sup_head' in result.stdout
  assert '--config.model.depth=50' in result.stdout
  imported = checkpoint.load_weights(out)
  assert imported['config'].mode == 'finetune'
  assert imported['config'].model.ft_proj_selector == 1
  module, variables = export.load_pretrained(out)
  h = module.apply(variables, reference['inputs'], train=False)['h']
  scale = np.abs(reference['final_avg_pool']).max()
  np.testing.assert_allclose(h, reference['final_avg_pool'], atol=RTOL * scale)

  config = tiny_config(data_dir, 'finetune', steps=2, learning_rate=0.1,
                       lr_scaling='none', weight_decay=0.0)
  config.init_checkpoint = out
  config.model.update(imported['config'].model.to_dict())
  exp = train.build_experiment(config)
  state = train.create_train_state(exp)
  for ours, theirs in zip(
      jax.tree.leaves(jax.device_get((state.params['encoder'],
                                      state.batch_stats['encoder']))),
      jax.tree.leaves((imported['params']['encoder'],
                       imported['batch_stats']['encoder']))):
    np.testing.assert_array_equal(ours, theirs)
  run = train.train_and_evaluate(config, str(tmp_path / 'finetune'))
  assert run['step'] == 2
  tuned = checkpoint.load_weights(str(tmp_path / 'finetune'))
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(tuned['params']['encoder']),
      jax.tree.leaves(imported['params']['encoder']))]
  assert any(changed)
  # mode=eval runs on the import itself (its own architecture and head).
  evaluation = tiny_config(data_dir, 'eval')
  evaluation.init_checkpoint = out
  evaluation.evals.knn.k = 0
  scores = train.train_and_evaluate(evaluation, str(tmp_path / 'eval'))
  assert scores['eval/count'] == 540 and 0 <= scores['eval/top1'] <= 1
  # The fine-tuned checkpoint's classifier is usable as a distillation teacher.
  distill = tiny_config(data_dir, 'distill')
  distill.distill.teacher_checkpoint = out
  task = tasks.Distill(distill, data.DatasetInfo(
      num_classes=10, num_train_examples=1257, num_train_labelled=1257,
      num_eval_examples=540, image_shape=(16, 16, 3)))
  assert task.teacher_model.ft_proj_selector == 1
  assert 'sup_head' in task.frozen_variables()['params']


def test_eval_of_an_import_for_other_classes_is_an_error(extra_cases, data_dir,
                                                         tmp_path):
  folder, info, _ = _case(extra_cases, 'r18_w0.0625_cifar_ft2')
  out = str(tmp_path / 'imported')
  official.import_official(_source(folder, info, 'checkpoint'), out,
                           ft_proj_selector=2)
  config = tiny_config(data_dir, 'eval')
  config.init_checkpoint = out
  with pytest.raises(ValueError, match='predicts 7 classes but dataset '
                     "'digits' has 10"):
    train.train_and_evaluate(config, str(tmp_path / 'eval'))
