"""Tests of the ResNet encoder, the heads and the composite SimCLR model.

Forward passes use tiny widths and small images; big models only go through
`jax.eval_shape`, which allocates nothing. On CPU, compiling `init` (one
random op per parameter) dominates, so tests share one initialised tiny model.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from simclr_jax import config_validation, configs, models
from simclr_jax.configs import default
from simclr_jax.models import conv as conv_lib
from simclr_jax.models import heads
from simclr_jax.models import resnet
from simclr_jax.parallel import DATA_AXIS


def model_config(**overrides):
  config = default.get_config().model
  config.update(overrides)
  return config


def build(image_size=32, num_classes=10, linear_probe=False,
          supervised_head=False, **overrides):
  """SimCLR(**config.model) as the trainer builds it (auto fields filled);
  per-device batch norm unless global_bn=True is asked for."""
  config = default.get_config()
  config.image_size = image_size
  config.model.update(dict({'global_bn': False}, **overrides))
  configs.fill_auto_fields(config)
  return models.SimCLR(**config.model, num_classes=num_classes,
                       linear_probe=linear_probe,
                       supervised_head=supervised_head)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def abstract_variables(model, image_size, batch=1):
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3),
                                jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), images)


def train_step(model, variables, x, mutable=('batch_stats',), **kwargs):
  """Jitted forward pass in training mode: (outputs, updated collections)."""
  return jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=list(mutable), **kwargs))(variables, x)


def rng(seed=0):
  """An 'rbg' key: same statistics, but init compiles ~3x faster on CPU than
  with threefry (compiling init dominates these tests)."""
  return jax.random.key(seed, impl='rbg')


def images(batch=4, size=40, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


# Every optional piece at once: ResNet-D stem (40 > 32 px, so no CIFAR stem),
# SK convs, ResNet-D shortcuts (including odd 5 -> 3 px), SE, a 3-layer head,
# supervised head on its first layer and the online probe.
TINY = dict(image_size=40, depth=18, width_multiplier=0.125, sk_ratio=0.0625,
            se_ratio=0.25, num_proj_layers=3, ft_proj_selector=1,
            supervised_head=True, linear_probe=True)


def tiny(**overrides):
  return build(**{**TINY, **overrides})


@functools.cache
def tiny_variables():
  """Variables of `tiny()`; shared because compiling init takes ~10 s.

  Fields that change no parameter (dtype, global_bn, fine_tune_after_block)
  reuse them.
  """
  model = tiny()
  return jax.jit(lambda x: model.init(rng(), x, train=False))(images(batch=1))


@functools.cache
def tiny_train_outputs():
  """`tiny()` applied in training mode to `images(batch=16)`."""
  return train_step(tiny(), tiny_variables(), images(batch=16))


# --------------------------------------------------------------------------
# Fidelity: SimCLRv2 (Chen et al. 2020b, Table 1 / official README) sizes.
# --------------------------------------------------------------------------

# (depth, width, selective kernels, published millions of parameters).
SIMCLRV2_PARAMS = [
    (50, 1, False, 24), (50, 1, True, 35),
    (50, 2, False, 94), (50, 2, True, 140),
    (101, 1, False, 43), (101, 1, True, 65),
    (101, 2, False, 170), (101, 2, True, 257),
    (152, 1, False, 58), (152, 1, True, 89),
    (152, 2, False, 233), (152, 2, True, 354),
    (152, 3, True, 795),
]


@pytest.mark.parametrize('depth,width,sk,published', SIMCLRV2_PARAMS)
def test_encoder_parameter_count_matches_simclrv2(depth, width, sk, published):
  """The published counts are the encoder's *variables*: trainable parameters
  plus the BN moving mean/variance, without projection or supervised heads
  (the count of a TF checkpoint's encoder). Candidates tried: trainable only
  fails (R101-1x 42.50M is -1.2%; R152-2x 232.25M and R152-2x+SK 353.40M round
  to the wrong million); adding the projection head (+9..36%) or a 1000-class
  head (+0.7..6.7%) is far off. With BN statistics all 13 round to the
  published million and all are within 1%, except R50-1x (23.56M vs 24M,
  -1.8%) where 1% is below the table's rounding, so the tolerance is
  max(1%, 0.5M).
  """
  model = build(image_size=224, depth=depth, width_multiplier=width,
                sk_ratio=0.0625 if sk else 0.0, num_proj_layers=3)
  variables = abstract_variables(model, 224)
  total = (count(variables['params']['encoder']) +
           count(variables['batch_stats']['encoder']))
  millions = total / 1e6
  assert round(millions) == published
  assert abs(millions - published) <= max(0.01 * published, 0.5)


# --------------------------------------------------------------------------
# Shapes.
# --------------------------------------------------------------------------


@pytest.mark.parametrize('depth', sorted(resnet.BLOCKS_PER_GROUP))
@pytest.mark.parametrize('sk_ratio', [0.0, 0.0625])
@pytest.mark.parametrize('image_size', [32, 224])
def test_output_shapes(depth, sk_ratio, image_size):
  batch, width = 2, 2.0
  model = build(image_size=image_size, depth=depth, width_multiplier=width,
                sk_ratio=sk_ratio, num_proj_layers=3, supervised_head=True,
                linear_probe=True, ft_proj_selector=1, num_classes=7)
  assert model.cifar_stem == (image_size <= 32)
  x = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  # One trace gives outputs, variables and (captured) block-group outputs.
  out, variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False,
                                       capture_intermediates=True), x)

  dim = models.encoder_output_dim(model_config(depth=depth,
                                               width_multiplier=width))
  assert dim == (4096 if depth >= 50 else 1024)
  assert out['h'].shape == (batch, dim)
  assert [p.shape for p in out['proj']] == [(batch, dim)] * 3 + [(batch, 128)]
  assert out['z'].shape == (batch, 128)
  assert out['sup_logits'].shape == (batch, 7)
  assert out['probe_logits'].shape == (batch, 7)
  for leaf in jax.tree_util.tree_leaves(out):
    assert leaf.dtype == jnp.float32

  blocks = variables['intermediates']['encoder']
  first = image_size if image_size <= 32 else image_size // 4
  expansion = 4 if depth >= 50 else 1
  assert blocks['stem']['__call__'][0].shape[1:3] == (first, first)
  for k, filters in enumerate(resnet.GROUP_FILTERS, start=1):
    size = first // 2**(k - 1)
    assert blocks[f'block_group{k}']['__call__'][0].shape == (
        batch, size, size, expansion * int(filters * width))


def test_return_blocks():
  encoder = resnet.ResNet(depth=18, width_multiplier=0.125, cifar_stem=True)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(encoder.init, jax.random.key(0), x)
  h, blocks = jax.eval_shape(
      functools.partial(encoder.apply, return_blocks=True), variables, x)
  assert h.shape == (2, 64)
  assert sorted(blocks) == ['block_group1', 'block_group2', 'block_group3',
                            'block_group4', 'stem']
  assert blocks['block_group4'].shape == (2, 4, 4, 64)


@pytest.mark.parametrize('sk_ratio', [0.0, 0.0625])
@pytest.mark.parametrize('image_size', [33, 45, 97])
def test_odd_image_sizes_keep_branch_and_shortcut_aligned(sk_ratio,
                                                          image_size):
  """Strided convs and the ResNet-D average pool both give ceil(n / 2)."""
  model = build(image_size=image_size, depth=50, sk_ratio=sk_ratio,
                width_multiplier=0.125)
  variables = abstract_variables(model, image_size)
  assert 'stem' in variables['params']['encoder']


def test_tiny_forward_through_every_option():
  variables = tiny_variables()
  out, updates = tiny_train_outputs()
  assert out['h'].shape == (16, 64)
  assert [p.shape[-1] for p in out['proj']] == [64, 64, 64, 128]
  for leaf in jax.tree_util.tree_leaves(out):
    assert leaf.dtype == jnp.float32
    assert np.all(np.isfinite(leaf))
  np.testing.assert_array_equal(out['z'], out['proj'][-1])
  np.testing.assert_array_equal(out['h'], out['proj'][0])

  params = variables['params']
  assert set(params) == {'encoder', 'proj_head', 'sup_head', 'probe_head'}
  assert params['sup_head']['dense']['kernel'].shape == (64, 10)
  # Official ResidualBlock: SK only makes the shortcut ResNet-D, and every
  # group's first block projects, block_group1's too.
  for group in (1, 2):
    block = params['encoder'][f'block_group{group}']['block1']
    assert set(block) == {'shortcut', 'conv1', 'bn1', 'conv2', 'bn2', 'se'}
  assert 'shortcut' not in params['encoder']['block_group1']['block2']
  # ResNet-D stem: int(32w), int(32w), int(64w) channels.
  stem = params['encoder']['stem']
  assert [stem[f'conv{i}']['kernel'].shape[-1]
          for i in (1, 2, 3)] == [4, 4, 8]
  # Training updated the running statistics.
  before = jax.tree_util.tree_leaves(variables['batch_stats'])
  after = jax.tree_util.tree_leaves(updates['batch_stats'])
  assert len(before) == len(after)
  assert all(not np.allclose(a, b) for a, b in zip(before, after))


def test_initializers_match_official():
  params = tiny_variables()['params']
  kernel = params['encoder']['block_group4']['block2']['conv2']['kernel']
  assert kernel.shape == (3, 3, 64, 64)
  # VarianceScaling(1.0, fan_in, truncated_normal): std sqrt(1 / fan_in).
  np.testing.assert_allclose(np.std(kernel), np.sqrt(1 / (9 * 64)), rtol=0.03)
  dense = params['proj_head']['dense1']['kernel']
  np.testing.assert_allclose(np.std(dense), 0.01, rtol=0.05)
  sup = params['sup_head']['dense']
  np.testing.assert_allclose(np.std(sup['kernel']), 0.01, rtol=0.2)
  assert not np.any(sup['bias'])


def test_zero_init_logits_layer():
  head = heads.LinearHead(10, zero_init=True)
  params = head.init(jax.random.key(0), jnp.ones((2, 8)))['params']
  assert not np.any(params['dense']['kernel'])
  assert params['dense']['bias'].shape == (10,)


# --------------------------------------------------------------------------
# Residual blocks start as their shortcut.
# --------------------------------------------------------------------------


def batch_norm(**kwargs):
  return nn.BatchNorm(momentum=resnet.BN_MOMENTUM, epsilon=resnet.BN_EPSILON,
                      **kwargs)


@pytest.mark.parametrize('block_cls,sk_ratio', [
    (resnet.BottleneckBlock, 0.0), (resnet.BottleneckBlock, 0.0625),
    (resnet.BasicBlock, 0.0), (resnet.BasicBlock, 0.0625)])
def test_fresh_block_is_its_shortcut(block_cls, sk_ratio):
  """Zero gamma in the last BN: a fresh block outputs relu(shortcut(x)).

  With an identity shortcut that is relu(x); with a (ResNet-D when SK is on)
  projection it is relu(BN(conv(pool(x)))).
  """
  filters = 4 if block_cls is resnet.BottleneckBlock else 16
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 16))
  resnet_d = sk_ratio > 0
  # Training mode: BN normalises with batch statistics, so the branch is
  # exactly zero only thanks to gamma = 0 (beta starts at zero too).
  norm = functools.partial(batch_norm, use_running_average=False)
  conv = resnet.fixed_padding_conv
  kwargs = dict(sk_ratio=sk_ratio, se_ratio=0.25, conv=conv, norm=norm)
  last_bn = 'bn3' if block_cls is resnet.BottleneckBlock else 'bn2'

  identity = block_cls(filters, 1, use_projection=False, **kwargs)
  out, variables = identity.init_with_output(rng(), x, mutable=True)
  assert not np.any(variables['params'][last_bn]['scale'])
  np.testing.assert_allclose(out, jax.nn.relu(x), atol=1e-6)

  projection = block_cls(filters, 2, use_projection=True, **kwargs)
  out, variables = projection.init_with_output(rng(), x, mutable=True)
  assert out.shape[:3] == (2, 5, 5)
  shortcut = resnet.Shortcut(out.shape[-1], 2, resnet_d, conv, norm)
  expected, _ = shortcut.apply({'params': variables['params']['shortcut']}, x,
                               mutable=['batch_stats'])
  np.testing.assert_allclose(out, jax.nn.relu(expected), atol=1e-6)


# --------------------------------------------------------------------------
# Heads.
# --------------------------------------------------------------------------


@pytest.mark.parametrize('mode,num_layers,widths', [
    ('none', 3, [24]),
    ('linear', 3, [24, 16]),
    ('nonlinear', 1, [24, 16]),
    ('nonlinear', 2, [24, 24, 16]),
    ('nonlinear', 3, [24, 24, 24, 16]),
])
def test_projection_head_outputs(mode, num_layers, widths):
  head = heads.ProjectionHead(mode=mode, num_layers=num_layers, out_dim=16)
  h = jax.random.normal(jax.random.key(0), (8, 24))
  variables = head.init(jax.random.key(1), h)
  outputs, _ = head.apply(variables, h, train=True, mutable=['batch_stats'])
  assert [o.shape[-1] for o in outputs] == widths
  np.testing.assert_array_equal(outputs[0], h)
  params = variables.get('params', {})
  for i in range(1, len(widths)):
    assert 'bias' not in params[f'dense{i}']
    # Only the middle layers' BN has a beta; the output BN has none.
    assert ('bias' in params[f'bn{i}']) == (i < len(widths) - 1)
  for middle in outputs[1:-1]:
    assert np.all(middle >= 0)  # ReLU after the middle layers only.
  if len(outputs) > 1:
    assert np.any(outputs[-1] < 0)


def test_no_projection_head():
  model = tiny(proj_head_mode='none', ft_proj_selector=0,
               supervised_head=False, linear_probe=False)
  encoder_only = {name: {'encoder': collection['encoder']}
                  for name, collection in tiny_variables().items()}
  assert jax.tree_util.tree_structure(
      abstract_variables(model, 40)) == jax.tree_util.tree_structure(
          encoder_only)
  out, _ = train_step(model, encoder_only, images())
  assert len(out['proj']) == 1
  np.testing.assert_array_equal(out['z'], out['h'])
  assert 'sup_logits' not in out and 'probe_logits' not in out


# --------------------------------------------------------------------------
# Global batch norm across devices.
# --------------------------------------------------------------------------


def test_global_bn_under_shard_map_matches_single_device():
  if jax.device_count() < 8:
    pytest.skip('needs XLA_FLAGS=--xla_force_host_platform_device_count=8')
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), (DATA_AXIS,))
  sharded, local = tiny(global_bn=True), tiny(global_bn=False)

  x = images(batch=16)
  variables = tiny_variables()
  expected = tiny_train_outputs()  # One device, whole batch.
  # Outputs are batch-sharded; the updated running statistics replicated:
  # out_specs P() type-checks because pmean'd statistics do not vary across
  # the axis.
  def sharded_step(model):
    step = lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])
    return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                                 out_specs=(P(DATA_AXIS), P())))

  got = sharded_step(sharded)(variables, x)
  jax.tree_util.tree_map(
      functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4),
      jax.device_get(got), jax.device_get(expected))
  # Per-device statistics vary across devices, so the same specs are refused
  # (the check above is not vacuous); tracing alone shows it.
  with pytest.raises(ValueError, match='replicat'):
    jax.eval_shape(sharded_step(local), variables, x)


# --------------------------------------------------------------------------
# Mixed precision.
# --------------------------------------------------------------------------


def test_bfloat16_compute_float32_params_and_outputs():
  model = tiny(dtype='bfloat16')
  variables = tiny_variables()
  assert jax.tree_util.tree_structure(
      abstract_variables(model, 40)) == jax.tree_util.tree_structure(
          variables)
  out, updates = train_step(model, variables, images(),
                            mutable=('batch_stats', 'intermediates'),
                            capture_intermediates=True)
  intermediates = updates.pop('intermediates')
  for leaf in jax.tree_util.tree_leaves(abstract_variables(model, 40)):
    assert leaf.dtype == jnp.float32
  for leaf in jax.tree_util.tree_leaves(updates):
    assert leaf.dtype == jnp.float32
  for leaf in jax.tree_util.tree_leaves(out):
    assert leaf.dtype == jnp.float32
    assert np.all(np.isfinite(leaf))
  # The encoder and projection head themselves compute in bfloat16.
  encoder = intermediates['encoder']
  assert encoder['block_group4']['__call__'][0].dtype == jnp.bfloat16
  assert intermediates['proj_head']['dense2']['__call__'][0].dtype == (
      jnp.bfloat16)


def test_bfloat16_batch_norm_reduces_in_float32():
  """flax BatchNorm promotes its statistics to >= float32 (`_compute_stats`).

  Summing 4096 bfloat16 values of 1 and 2 in bfloat16 would stall at 512
  (8 mantissa bits), so exact statistics prove float32 accumulation.
  """
  norm = batch_norm(use_running_average=False, dtype=jnp.bfloat16)
  x = jnp.tile(jnp.array([1.0, 2.0], jnp.bfloat16), 2048)[:, None]
  variables = norm.init(jax.random.key(0), x)
  _, updates = norm.apply(variables, x, mutable=['batch_stats'])
  stats = updates['batch_stats']
  np.testing.assert_allclose(stats['mean'], [0.1 * 1.5], rtol=1e-6)
  np.testing.assert_allclose(stats['var'], [0.9 + 0.1 * 0.25], rtol=1e-6)


# --------------------------------------------------------------------------
# Freezing for fine-tuning.
# --------------------------------------------------------------------------


def is_frozen(path, fine_tune_after_block):
  stage = models._encoder_stage(path)  # pylint: disable=protected-access
  return stage is not None and stage <= fine_tune_after_block


# One value keeps CPU time down (a gradient compile each); the per-stage
# logic is the same `stage <= fine_tune_after_block` for every value.
@pytest.mark.parametrize('fine_tune_after_block', [2])
def test_fine_tune_after_block_freezes_prefix(fine_tune_after_block):
  model = tiny(fine_tune_after_block=fine_tune_after_block)
  variables = tiny_variables()
  # Unit gammas so that every trainable leaf receives gradient (zero-init
  # gammas would block the convs in front of them).
  params = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.ones_like(v) if path[-1].key == 'scale' else v,
      variables['params'])
  weights = jax.random.normal(jax.random.key(2), (3, 4, 128))

  def loss_fn(params):
    out, updates = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, images(),
        train=True, mutable=['batch_stats'])
    loss = (jnp.sum(weights[0, :, :10] * out['sup_logits']) +
            jnp.sum(weights[1, :, :10] * out['probe_logits']) +
            jnp.sum(weights[2] * out['z']))
    return loss, updates

  grads, updates = jax.jit(jax.grad(loss_fn, has_aux=True))(params)
  mask = models.trainable_mask(params, model_config(
      fine_tune_after_block=fine_tune_after_block))

  def check_grad(path, grad, trainable):
    frozen = is_frozen(path, fine_tune_after_block)
    assert trainable == (not frozen), path
    assert np.any(grad != 0) == trainable, path

  jax.tree_util.tree_map_with_path(check_grad, grads, mask)

  # Frozen BN runs in inference mode: its running statistics stay put.
  def check_stats(path, old, new):
    frozen = is_frozen(path, fine_tune_after_block)
    assert np.array_equal(old, new) == frozen, path

  jax.tree_util.tree_map_with_path(
      check_stats, variables['batch_stats'], updates['batch_stats'])


def test_trainable_mask_paths():
  params = {'encoder': {'stem': {'w': 0}, 'block_group1': {'w': 0},
                        'block_group3': {'w': 0}},
            'proj_head': {'w': 0}, 'sup_head': {'w': 0}}
  mask = models.trainable_mask(params, model_config(fine_tune_after_block=1))
  assert mask == {'encoder': {'stem': {'w': False},
                              'block_group1': {'w': False},
                              'block_group3': {'w': True}},
                  'proj_head': {'w': True}, 'sup_head': {'w': True}}
  full = models.trainable_mask({'params': params}, model_config(
      fine_tune_after_block=4))
  assert not any(jax.tree_util.tree_leaves(full['params']['encoder']))
  assert all(jax.tree_util.tree_leaves(
      models.trainable_mask(params, model_config())))


# --------------------------------------------------------------------------
# Config validation.
# --------------------------------------------------------------------------


def _model_problems(**model_overrides):
  """Config validation's problems with a fine-tuning config.model (the
  model's fields are checked there, once, before anything is built)."""
  config = default.get_config()
  config.mode, config.init_checkpoint = 'finetune', '/pretrained'
  config.model.update(model_overrides)
  return ' '.join(config_validation.find_problems(config))


@pytest.mark.parametrize('field,value', [
    ('depth', 42),
    ('width_multiplier', 0.0),
    ('width_multiplier', -1.0),
    ('sk_ratio', -0.1),
    ('se_ratio', -0.1),
    ('proj_head_mode', 'mlp'),
    ('num_proj_layers', 0),
    ('ft_proj_selector', 3),
    ('ft_proj_selector', -1),
    ('fine_tune_after_block', 5),
    ('fine_tune_after_block', -2),
    ('dtype', 'float8'),
    ('conv_impl', 'cudnn'),
])
def test_bad_config_raises(field, value):
  assert f'model.{field}' in _model_problems(**{field: value})


def test_ft_proj_selector_range_follows_head_mode():
  assert not _model_problems(proj_head_mode='linear', ft_proj_selector=1)
  assert 'ft_proj_selector' in _model_problems(proj_head_mode='linear',
                                               ft_proj_selector=2)
  assert 'ft_proj_selector' in _model_problems(proj_head_mode='none',
                                               ft_proj_selector=1)
  assert not _model_problems(proj_head_mode='nonlinear', num_proj_layers=3,
                             ft_proj_selector=3)


# --------------------------------------------------------------------------
# Convolutions as matrix products (model.conv_impl).
# --------------------------------------------------------------------------


@pytest.mark.parametrize('kernel,strides,in_channels', [
    (1, 1, 6), (1, 2, 6), (3, 1, 3), (3, 2, 3), (7, 2, 3), (3, 2, 6)])
def test_matmul_conv_equals_lax_conv_with_gradients(kernel, strides,
                                                    in_channels):
  """Odd and even sizes, fixed padding: output, input and kernel gradients."""
  for size in (9, 10):
    x = jax.random.normal(jax.random.key(0), (2, size, size, in_channels))
    native = resnet.fixed_padding_conv(5, kernel, strides)
    matmul = resnet.fixed_padding_conv(5, kernel, strides, conv_impl='matmul')
    variables = native.init(jax.random.key(1), x)

    def loss(module, variables, x):
      return jnp.sum(jnp.sin(module.apply(variables, x)))

    out_a, out_b = native.apply(variables, x), matmul.apply(variables, x)
    assert out_a.shape == out_b.shape
    np.testing.assert_allclose(out_b, out_a, atol=2e-5)
    grads_a = jax.grad(functools.partial(loss, native), (0, 1))(variables, x)
    grads_b = jax.grad(functools.partial(loss, matmul), (0, 1))(variables, x)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
      np.testing.assert_allclose(b, a, atol=5e-5)


def test_conv_impls_share_parameters_and_outputs():
  """A whole SK ResNet with SE: the same variables serve both, same output."""
  # Batch 8: with 2, training-mode BN in the head divides by the spread of two
  # nearby values and magnifies float rounding, which says nothing about the
  # convolutions.
  x = jax.random.uniform(jax.random.key(2), (8, 40, 40, 3))
  kwargs = dict(image_size=40, depth=18, width_multiplier=0.25,
                sk_ratio=0.0625, se_ratio=0.25)
  native, matmul = build(conv_impl='xla', **kwargs), build(conv_impl='matmul',
                                                            **kwargs)
  assert (native.conv_impl, matmul.conv_impl) == ('xla', 'matmul')
  variables = native.init(rng(), x, train=False)
  assert (jax.tree.structure(variables) ==
          jax.tree.structure(matmul.init(rng(), x, train=False)))
  out_a, stats_a = train_step(native, variables, x)
  out_b, stats_b = train_step(matmul, variables, x)
  np.testing.assert_allclose(out_b['z'], out_a['z'], atol=1e-4)
  for a, b in zip(jax.tree.leaves(stats_a), jax.tree.leaves(stats_b)):
    np.testing.assert_allclose(b, a, atol=1e-4)


def test_auto_conv_impl_follows_the_backend():
  assert conv_lib.conv_impl_for_backend('auto', 'cpu') == 'matmul'
  assert conv_lib.conv_impl_for_backend('auto', 'gpu') == 'xla'
  assert conv_lib.conv_impl_for_backend('auto', 'tpu') == 'xla'
  assert conv_lib.conv_impl_for_backend('xla', 'cpu') == 'xla'
  with pytest.raises(ValueError, match='conv_impl'):
    conv_lib.conv_impl_for_backend('fast')
