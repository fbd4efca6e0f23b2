"""Exports: class names, one-line summary, no silent overwrite; load_pretrained
refuses wrong input with one clear error; digits_table writes under its workdir."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import checkpoint, data, export, train
from simclr_jax.errors import UserError
from simclr_jax.configs import digits
from tiny import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def exported(data_dir, tmp_path_factory):
  """A 2-step tiny pretraining run (online probe on) and its export."""
  root = tmp_path_factory.mktemp('export')
  workdir, out = str(root / 'run'), str(root / 'export')
  train.train_and_evaluate(tiny_config(data_dir, steps=2), workdir)
  export.export_workdir(workdir, out)
  return workdir, out


def test_export_carries_class_names_and_summary(exported):
  workdir, out = exported
  module, variables = export.load_pretrained(out)
  assert module.class_names == tuple(str(i) for i in range(10))
  info = export.read_info(out)
  assert info['class_names'] == list(module.class_names)
  assert info['step'] == 2 and info['source_workdir'] == os.path.abspath(workdir)
  line = export.summary(out)
  assert '\n' not in line
  for part in ('step 2', 'pretrain', 'ResNet-18 0.125x', f'h {module.h_dim}-d',
               'probe head (10 classes: 0, 1, 2, ...)', f'-> {out}'):
    assert part in line, (part, line)
  images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3))
  out_dict = module.apply(variables, images.astype(np.float32), train=False)
  assert out_dict['h'].shape == (2, module.h_dim)
  assert out_dict['probe_logits'].shape == (2, len(module.class_names))
  assert out_dict['proj'][0] is out_dict['h'] or np.array_equal(
      out_dict['proj'][0], out_dict['h'])
  np.testing.assert_array_equal(out_dict['z'], out_dict['proj'][-1])


def test_export_refuses_to_overwrite(exported, tmp_path):
  workdir, out = exported
  before = open(os.path.join(out, checkpoint.EXPORT_CONFIG_FILE)).read()
  with pytest.raises(UserError, match='already holds an export; pass '
                     '--overwrite'):
    export.export_workdir(workdir, out)
  assert open(os.path.join(out, checkpoint.EXPORT_CONFIG_FILE)).read() == before
  # A directory with other files is never written into, even with overwrite.
  other = tmp_path / 'notes'
  other.mkdir()
  (other / 'keep.txt').write_text('mine')
  with pytest.raises(UserError, match='not an export'):
    export.export_workdir(workdir, str(other), overwrite=True)
  assert (other / 'keep.txt').read_text() == 'mine'
  # With overwrite, a copy of the export is replaced by a fresh one.
  copy = str(tmp_path / 'copy')
  export.export_workdir(workdir, copy)
  info_path = os.path.join(copy, checkpoint.EXPORT_CONFIG_FILE)
  with open(info_path, 'w') as f:
    json.dump({'stale': True}, f)
  # A source that cannot be read leaves the export to be replaced intact.
  with pytest.raises(UserError, match='No checkpoints'):
    export.export_workdir(str(tmp_path / 'no_run'), copy, overwrite=True)
  assert json.load(open(info_path)) == {'stale': True}
  export.export_workdir(workdir, copy, overwrite=True)
  assert export.read_info(copy)['step'] == 2


def test_export_command_line_summary_and_refusal(exported, tmp_path):
  workdir, _ = exported
  out = str(tmp_path / 'cli_export')
  command = [sys.executable, '-m', 'simclr_jax.main', 'export',
             f'--workdir={workdir}', f'--output={out}']
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  first = subprocess.run(command, capture_output=True, text=True, env=env,
                         cwd=REPO)
  assert first.returncode == 0, first.stderr[-2000:]
  assert export.summary(out) in first.stdout.splitlines()
  again = subprocess.run(command, capture_output=True, text=True, env=env,
                         cwd=REPO)
  assert again.returncode != 0
  assert 'already holds an export; pass --overwrite' in again.stderr
  forced = subprocess.run(command + ['--overwrite'], capture_output=True,
                          text=True, env=env, cwd=REPO)
  assert forced.returncode == 0, forced.stderr[-2000:]


@pytest.mark.parametrize('images, message', [
    (np.full((2, 16, 16, 3), 128, np.uint8), r'dtype uint8.*divide uint8 pixels by 255'),
    (np.zeros((16, 16, 3), np.float32), r'one image of shape \(16, 16, 3\).*images\[None\]'),
    (np.zeros((2, 16, 16, 1), np.float32), r'3 channels.*np.repeat'),
    (np.zeros((2, 3, 16, 16), np.float32), r'3 channels.*transpose\(0, 2, 3, 1\)'),
    (np.full((2, 16, 16, 3), 200.0, np.float32), r'in \[0, 1\], got values in \[200, 200\].*divide by 255'),
    (np.full((2, 16, 16, 3), -0.5, np.float32), r'in \[0, 1\].*do not normalise'),
    ([[0.5]], r'must be an array'),
])
def test_load_pretrained_rejects_wrong_images(exported, images, message):
  module, variables = export.load_pretrained(exported[1])
  with pytest.raises(ValueError, match=message):
    module.apply(variables, images, train=False)


def test_feature_extractor_checks_range_outside_jit(exported):
  features = export.feature_extractor(exported[1])
  good = np.random.default_rng(1).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  assert features(jnp.asarray(good)).shape[0] == 3
  with pytest.raises(ValueError, match='divide by 255'):
    features(good * 255)


def test_class_names_of_folders_and_tfds(tmp_path):
  for name in ('zebra', 'ant', 'cat'):
    (tmp_path / 'images' / name).mkdir(parents=True)
    (tmp_path / 'images' / name / 'a.png').write_bytes(b'')
  config = digits.get_config()
  config.dataset = f'folder:{tmp_path / "images"}'
  assert data.class_names(config) == ['ant', 'cat', 'zebra']
  config.dataset = 'digits'
  config.data_dir = str(tmp_path / 'unprepared')   # Nothing is prepared.
  assert data.class_names(config) == [str(i) for i in range(10)]
  assert not os.path.exists(config.data_dir)
  config.dataset = 'no_such_dataset_anywhere'
  assert data.class_names(config) == []


def test_digits_table_writes_under_its_workdir(tmp_path, monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from simclr_jax.experiments import digits_table  # pylint: disable=g-import-not-at-top
  fractions = [0.1, 1.0]
  results = {'fractions': fractions, 'seeds': [0],
             'accuracy': {m: {str(f): [0.5] for f in fractions}
                          for m in digits_table.METHODS},
             'distillation': {'teacher': 0.5}, 'seconds': {'pretrain': 1.0}}
  monkeypatch.setattr(digits_table, 'run', lambda *a, **k: results)
  if 'distill_steps' not in flags.FLAGS:   # Defined by its command line only.
    digits_table.define_flags()
  monkeypatch.chdir(tmp_path)           # Where a relative docs/ would land.
  workdir = str(tmp_path / 'table')
  flags.FLAGS(['digits_table', f'--workdir={workdir}'])
  try:
    digits_table.main([])
    assert os.path.exists(os.path.join(workdir, 'results.md'))
    assert os.path.exists(os.path.join(workdir, 'results_digits.png'))
    assert not os.path.exists(tmp_path / 'docs')
    flags.FLAGS(['digits_table', f'--workdir={workdir}',
                 f'--output_dir={tmp_path / "elsewhere"}'])
    digits_table.main([])
    assert os.path.exists(tmp_path / 'elsewhere' / 'results.md')
  finally:
    flags.FLAGS.unparse_flags()
