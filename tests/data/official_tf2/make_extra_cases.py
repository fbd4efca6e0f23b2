"""Writes the extra official-layout fixtures (see PROVENANCE.md).

Runs the unmodified official TF2 code, imported from a checkout of
google-research/simclr (commit 383d414), with tf-keras:

  TF_USE_LEGACY_KERAS=1 TF_ENABLE_ONEDNN_OPTS=0 \\
  python make_extra_cases.py --official=/path/to/simclr/tf2 --out=/tmp/cases

Each case: the official Model built with the case's flags, every variable set
to a distinct seeded random value, one LARS step's slots created (values
restored), then a training checkpoint as the official trainer writes it
(tf.train.Checkpoint(model, global_step, optimizer) via a CheckpointManager),
the SavedModel of run.build_saved_model, and the SavedModel's outputs in
inference mode for a random batch. Not used by the tests (they read the
archives); kept so that the fixtures can be re-made and extended.
"""

import argparse
import json
import os
import sys

CASES = {
    # ResNet-18, CIFAR stem, fine-tuned head on projection layer 2.
    'r18_w0.0625_cifar_ft2': dict(
        resnet_depth=18, width_multiplier=0.0625, image_size=32,
        train_mode='finetune', ft_proj_selector=2, num_proj_layers=3,
        num_classes=7),
    # ResNet-34 with SK (ResNet-D stem and shortcuts) and squeeze-excite,
    # 2-layer head of output 16, linear head trained beside it.
    'r34_w0.0625_sk1_se_pretrain': dict(
        resnet_depth=34, width_multiplier=0.0625, sk_ratio=0.0625,
        se_ratio=0.25, image_size=224, train_mode='pretrain',
        lineareval_while_pretraining=True, num_proj_layers=2,
        proj_out_dim=16, num_classes=10),
}
STEP = 5


def make_case(name, spec, out):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v2 as tf  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  import lars_optimizer  # pylint: disable=g-import-not-at-top
  import model as model_lib  # pylint: disable=g-import-not-at-top
  import run  # pylint: disable=g-import-not-at-top,unused-import

  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  FLAGS.unparse_flags()
  flag_args = [f'--{k}={v}' for k, v in spec.items()
               if k not in ('width_multiplier', 'num_classes')]
  FLAGS(['make_extra_cases', '--global_bn=false'] + flag_args)
  FLAGS.width_multiplier = spec['width_multiplier']  # An integer flag.
  model = model_lib.Model(spec['num_classes'])
  size = 32 if FLAGS.image_size <= 32 else 64
  images = tf.random.uniform([3, size, size, 3], seed=1)
  model(images, training=False)
  rng = np.random.default_rng(7)
  for v in model.variables:
    if 'moving_variance' in v.name or 'gamma' in v.name:
      value = rng.uniform(0.5, 1.5, v.shape)
    elif 'kernel' in v.name:
      value = rng.normal(size=v.shape) / np.sqrt(np.prod(v.shape[:-1]))
    else:
      value = rng.normal(size=v.shape) * 0.1
    v.assign(value.astype(np.float32))
  values = [v.numpy() for v in model.variables]
  optimizer = lars_optimizer.LARSOptimizer(0.1, momentum=0.9)
  with tf.GradientTape() as tape:
    proj, sup = model(images, training=True)
    loss = tf.reduce_sum(proj if proj is not None else sup)
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients([(g, v) for g, v in
                             zip(grads, model.trainable_variables)
                             if g is not None])
  for v, value in zip(model.variables, values):
    v.assign(value)
  case_dir = os.path.join(out, name)
  checkpoint = tf.train.Checkpoint(
      model=model, global_step=tf.Variable(STEP, dtype=tf.int64),
      optimizer=optimizer)
  tf.train.CheckpointManager(checkpoint, os.path.join(case_dir, 'ckpt'),
                             max_to_keep=1).save(checkpoint_number=STEP)
  saved = run.build_saved_model(model)
  tf.saved_model.save(saved, os.path.join(case_dir, 'saved_model'))
  outputs = saved(images, trainable=False)
  np.savez(os.path.join(case_dir, 'reference.npz'), inputs=images.numpy(),
           **{k: v.numpy() for k, v in outputs.items()})
  with open(os.path.join(case_dir, 'case.json'), 'w') as f:
    json.dump({'case': name, 'flags': spec, 'snapshot_commit': '383d414',
               'train_checkpoint': f'ckpt/ckpt-{STEP}'}, f, indent=1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--official', required=True, help='simclr/tf2 folder')
  parser.add_argument('--out', required=True)
  parser.add_argument('--case', default=None, help='one case (default all)')
  args = parser.parse_args()
  sys.path.insert(0, args.official)
  for name in [args.case] if args.case else CASES:
    make_case(name, CASES[name], args.out)


if __name__ == '__main__':
  main()
