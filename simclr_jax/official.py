"""Import the official SimCLR(v2) TF2 weights (google-research/simclr, tf2/).

Sources: a SavedModel directory (the released format, e.g.
gs://simclr-checkpoints-tf2/simclrv2/pretrained/r50_1x_sk0/saved_model/) or a
training checkpoint prefix written by the official trainer
(`tf.train.Checkpoint(model=..., global_step=..., optimizer=...)`). Both store
the same Keras object graph; a SavedModel saves each variable under a list
position (`trainable_variables_list/N`), so the structural name of every
variable is recovered from the object graph that the checkpoint carries. The
architecture is read from the variables' names and shapes, the weights are
mapped onto `models.SimCLR`, and the result is written in this project's
export format (`simclr_jax.load_pretrained`, `config.init_checkpoint`).

TensorFlow is imported inside the functions: importing simclr_jax stays
TensorFlow-free.
"""

import collections
import dataclasses
import os
import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from simclr_jax import checkpoint, models
from simclr_jax.configs import default
from simclr_jax.errors import UserError
from simclr_jax.models import conv as conv_lib
from simclr_jax.models import resnet

# Children of the object graph that are views on other objects (lists of
# variables, Keras bookkeeping, traced functions), not the layer structure.
_VIEW_EDGES = frozenset({
    'variables', 'trainable_variables', 'non_trainable_variables',
    'trainable_variables_list', 'weights', 'trainable_weights',
    'non_trainable_weights', 'keras_api', 'regularization_losses',
    'layer_regularization_losses', 'metrics', 'layer_metrics', 'signatures',
    '_self_unconditional_checkpoint_dependencies',
})
# Top-level objects of a training checkpoint that carry no model weights.
_UNUSED_ROOTS = {
    'optimizer': 'optimizer state', 'global_step': 'training step',
    'save_counter': 'checkpoint counter',
}
_UNUSED_NAME = re.compile(r'ema|moving_average|memory|queue', re.IGNORECASE)
_BN_PARAMS = {'gamma': 'scale', 'beta': 'bias'}
_BN_STATS = {'moving_mean': 'mean', 'moving_variance': 'var'}
# Self-check: largest |JAX - TF| allowed, relative to max |TF output|.
SELF_CHECK_RTOL = 1e-4
# Official block counts per group -> depth, for each block type.
_DEPTHS = {
    ('bottleneck', (3, 4, 6, 3)): 50, ('bottleneck', (3, 4, 23, 3)): 101,
    ('bottleneck', (3, 8, 36, 3)): 152, ('bottleneck', (3, 24, 36, 3)): 200,
    ('basic', (2, 2, 2, 2)): 18, ('basic', (3, 4, 6, 3)): 34,
}
DEFAULT_SK_RATIO = 0.0625


@dataclasses.dataclass
class OfficialWeights:
  """Model variables of an official checkpoint by structural name, plus what
  was deliberately left out ({reason: [checkpoint keys]}) and the step."""
  variables: dict
  unused: dict
  step: Optional[int]
  is_saved_model: bool
  prefix: str


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def is_saved_model(source: str) -> bool:
  return _tf().io.gfile.exists(os.path.join(source, 'saved_model.pb'))


def checkpoint_prefix(source: str) -> str:
  """The variables prefix of a SavedModel dir, a checkpoint dir or a prefix."""
  tf = _tf()
  if is_saved_model(source):
    return os.path.join(source, 'variables', 'variables')
  if tf.io.gfile.exists(source + '.index'):
    return source
  if tf.io.gfile.isdir(source):
    latest = tf.train.latest_checkpoint(source)
    if latest:
      return latest
  raise UserError(
      f'{source!r} is neither a SavedModel directory (no saved_model.pb) nor '
      'a TF2 checkpoint (no .index file, no "checkpoint" file in it).')


def _object_graph(reader, prefix):
  """The checkpoint's object graph, parsed with the proto schema of TF's
  checkpoint format (tensorflow/core/protobuf/trackable_object_graph.proto)."""
  from tensorflow.core.protobuf import trackable_object_graph_pb2  # pylint: disable=g-import-not-at-top
  if not reader.has_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'):
    raise UserError(
        f'{prefix!r} has no object graph: a TF1 (name-based) checkpoint, not '
        'one of the official TF2 code; use the TF2 release '
        '(gs://simclr-checkpoints-tf2/).')
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  return graph


def _structural_paths(graph) -> dict:
  """{checkpoint key: ['a/b/c', ...]} of every saved variable, following only
  structural edges (attribute names and list positions of layers)."""
  paths = collections.defaultdict(list)
  queue = collections.deque([(0, ())])
  expanded = set()
  while queue:
    node_id, path = queue.popleft()
    node = graph.nodes[node_id]
    for attribute in node.attributes:
      if attribute.name == 'VARIABLE_VALUE':
        paths[attribute.checkpoint_key].append('/'.join(path))
    if node_id in expanded:
      continue
    expanded.add(node_id)
    for child in node.children:
      name = child.local_name
      if (name in _VIEW_EDGES or name.startswith('__') or
          name.startswith(('call_and_return', 'trace_', '_jit_'))):
        continue
      queue.append((child.node_id, path + (name,)))
  return paths


def read_official(source: str) -> OfficialWeights:
  """All model variables of an official TF2 SavedModel or checkpoint.

  Raises FileNotFoundError for a missing source, ValueError for a damaged or
  foreign one; keys that are not model weights go to `unused` with a reason.
  """
  tf = _tf()
  saved_model = is_saved_model(source)
  prefix = checkpoint_prefix(source)
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    graph = _object_graph(reader, prefix)
  except ValueError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'Cannot read checkpoint {prefix!r} (damaged or not a '
                     f'TF checkpoint): {_first_line(e)}') from e
  paths = _structural_paths(graph)
  variables, unused, step = {}, collections.defaultdict(list), None
  for key in sorted(shapes):
    if key == '_CHECKPOINTABLE_OBJECT_GRAPH':
      continue
    if '.OPTIMIZER_SLOT' in key:
      unused['optimizer slot'].append(key)
      continue
    names = paths.get(key, [])
    model_names = [n for n in names if n.startswith('model/')]
    root = (names[0].split('/')[0] if names else key.split('/')[0])
    if not model_names:
      reason = _UNUSED_ROOTS.get(root)
      if reason is None and _UNUSED_NAME.search(key):
        reason = 'EMA / memory copy'
      if reason is None and root in ('model', 'trainable_variables_list'):
        raise UserError(f'{prefix!r}: model variable {key!r} has no place '
                         'in the layer structure; cannot map it.')
      if reason is None:
        reason = 'not part of the model'
      unused[reason].append(key)
      if root == 'global_step':
        step = int(_read(reader, key, prefix))
      continue
    if len(set(model_names)) > 1:
      raise UserError(f'{prefix!r}: variable {key!r} sits at several places '
                       f'of the model ({sorted(set(model_names))}).')
    name = model_names[0][len('model/'):]
    if _UNUSED_NAME.search(name.split('/')[0]):
      unused['EMA / memory copy'].append(key)
      continue
    variables[name] = _read(reader, key, prefix)
  if not any(n.startswith('resnet_model/') for n in variables):
    raise UserError(
        f'{source!r} is not an official SimCLR TF2 checkpoint: it has no '
        'model/resnet_model/ variables.')
  return OfficialWeights(variables=variables, unused=dict(unused), step=step,
                         is_saved_model=saved_model, prefix=prefix)


def _read(reader, key, prefix):
  try:
    return np.asarray(reader.get_tensor(key))
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'Cannot read {key!r} from {prefix!r} (damaged '
                     f'checkpoint): {_first_line(e)}') from e


def _first_line(error) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'


# ---------------------------------------------------------------------------
# Official structure -> this project's parameter tree.
# ---------------------------------------------------------------------------


class _Mapper:
  """Moves official variables into {'params', 'batch_stats'}, each once."""

  def __init__(self, variables):
    self.left = dict(variables)
    self.params, self.stats = {}, {}

  def has(self, name):
    return name in self.left

  def children(self, prefix) -> list:
    """Sorted numeric child indices of `prefix` that hold variables."""
    found = {int(m.group(1)) for n in self.left
             for m in [re.match(re.escape(prefix) + r'/(\d+)/', n)] if m}
    return sorted(found)

  def take(self, name, target, collection='params'):
    if name not in self.left:
      raise UserError(f'The checkpoint lacks {name!r}.')
    tree = self.params if collection == 'params' else self.stats
    *parents, leaf = target
    for p in parents:
      tree = tree.setdefault(p, {})
    tree[leaf] = self.left.pop(name)

  def conv(self, name, target):
    self.take(f'{name}/kernel', target + ('kernel',))
    if self.has(f'{name}/bias'):
      self.take(f'{name}/bias', target + ('bias',))

  def bn(self, name, target):
    for official, ours in _BN_PARAMS.items():
      if self.has(f'{name}/{official}'):
        self.take(f'{name}/{official}', target + (ours,))
    for official, ours in _BN_STATS.items():
      self.take(f'{name}/{official}', target + (ours,), 'batch_stats')


def _kind(mapper, name) -> str:
  """What the official layer at `name` is, from the variables under it."""
  if mapper.has(f'{name}/conv2d/kernel'):
    return 'conv'
  if mapper.has(f'{name}/bn/moving_mean'):
    return 'bn'
  if mapper.has(f'{name}/conv2d_0/kernel'):
    return 'sk'
  if mapper.has(f'{name}/se_reduce/kernel'):
    return 'se'
  return 'unknown'


# Main branch of a block: official layer kinds in order -> our names.
_BRANCHES = {
    ('conv', 'bn', 'conv', 'bn', 'conv', 'bn'):
        ('conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3'),
    ('conv', 'bn', 'sk', 'conv', 'bn'): ('conv1', 'bn1', 'sk', 'conv3', 'bn3'),
    ('conv', 'bn', 'conv', 'bn'): ('conv1', 'bn1', 'conv2', 'bn2'),
}


def _map_layer(mapper, kind, name, target):
  if kind == 'conv':
    mapper.conv(f'{name}/conv2d', target)
  elif kind == 'bn':
    mapper.bn(f'{name}/bn', target)
  elif kind == 'sk':
    mapper.conv(f'{name}/conv2d_fixed_padding/conv2d', target + ('conv',))
    mapper.bn(f'{name}/batch_norm_relu/bn', target + ('bn',))
    mapper.conv(f'{name}/conv2d_0', target + ('reduce_conv',))
    mapper.bn(f'{name}/batch_norm_relu_1/bn', target + ('reduce_bn',))
    mapper.conv(f'{name}/conv2d_1', target + ('expand_conv',))
  elif kind == 'se':
    mapper.conv(f'{name}/se_reduce', target + ('reduce',))
    mapper.conv(f'{name}/se_expand', target + ('expand',))


def _map_block(mapper, name, target, first) -> dict:
  """One residual block; returns what it tells about the architecture."""
  bottleneck = bool(mapper.children(f'{name}/conv_relu_dropblock_layers'))
  branch = (f'{name}/conv_relu_dropblock_layers' if bottleneck
            else f'{name}/conv2d_bn_layers')
  indices = mapper.children(branch)
  kinds = [_kind(mapper, f'{branch}/{i}') for i in indices]
  se = None
  if kinds and kinds[-1] == 'se':
    se = indices.pop()
    kinds.pop()
  if not bottleneck and mapper.has(f'{name}/se_layer/se_reduce/kernel'):
    se = 'se_layer'
  names = _BRANCHES.get(tuple(kinds))
  if names is None:
    raise UserError(f'Unknown official block layout at {name!r}: layers '
                     f'{list(zip(indices, kinds))}.')
  info = {'bottleneck': bottleneck, 'sk': 'sk' in kinds, 'resnet_d': None}
  for i, kind, ours in zip(indices, kinds, names):
    if kind == 'sk':
      info['sk_mid'] = mapper.left[f'{branch}/{i}/conv2d_0/kernel'].shape[-1]
    _map_layer(mapper, kind, f'{branch}/{i}', target + (ours,))
  if se is not None:
    se_name = (f'{name}/se_layer' if se == 'se_layer' else f'{branch}/{se}')
    info['se_reduced'] = mapper.left[f'{se_name}/se_reduce/kernel'].shape[-1]
    _map_layer(mapper, 'se', se_name, target + ('se',))
  shortcut = (f'{name}/projection_layers' if bottleneck
              else f'{name}/shortcut_layers')
  indices = mapper.children(shortcut)
  if indices:
    kinds = [_kind(mapper, f'{shortcut}/{i}') for i in indices]
    if kinds != ['conv', 'bn']:
      raise UserError(f'Unknown official shortcut layout at {shortcut!r}: '
                       f'{list(zip(indices, kinds))}.')
    # ResNet-D puts (padding and) an average pool before the conv.
    info['resnet_d'] = indices[0] > 0
    _map_layer(mapper, 'conv', f'{shortcut}/{indices[0]}',
               target + ('shortcut', 'conv'))
    _map_layer(mapper, 'bn', f'{shortcut}/{indices[1]}',
               target + ('shortcut', 'bn'))
  elif first:
    raise UserError(f'{name!r}: the first block of a group has no '
                     'projection shortcut in the checkpoint.')
  return info


def _map_encoder(mapper) -> dict:
  """Maps resnet_model/*; returns the architecture it implies."""
  stem = 'resnet_model/initial_conv_relu_max_pool'
  indices = mapper.children(stem)
  kinds = [_kind(mapper, f'{stem}/{i}') for i in indices]
  convs = [i for i, k in zip(indices, kinds) if k == 'conv']
  bns = [i for i, k in zip(indices, kinds) if k == 'bn']
  if (len(convs) != len(bns) or len(convs) not in (1, 3) or
      len(kinds) != 2 * len(convs)):
    raise UserError('Unknown official stem layout: '
                     f'{list(zip(indices, kinds))}.')
  stem_kernel = mapper.left[f'{stem}/{convs[-1]}/conv2d/kernel'].shape
  cifar_stem = len(convs) == 1 and stem_kernel[0] == 3
  names = ['conv'] if len(convs) == 1 else ['conv1', 'conv2', 'conv3']
  for i, ours in zip(convs, names):
    _map_layer(mapper, 'conv', f'{stem}/{i}', ('encoder', 'stem', ours))
  for i, ours in zip(bns, [n.replace('conv', 'bn') for n in names]):
    _map_layer(mapper, 'bn', f'{stem}/{i}', ('encoder', 'stem', ours))

  groups = mapper.children('resnet_model/block_groups')
  if groups != [0, 1, 2, 3]:
    raise UserError(f'Expected 4 block groups, found {groups}.')
  counts, infos = [], []
  for g in groups:
    blocks = mapper.children(f'resnet_model/block_groups/{g}/layers')
    counts.append(len(blocks))
    for b in blocks:
      infos.append(dict(group=g, **_map_block(
          mapper, f'resnet_model/block_groups/{g}/layers/{b}',
          ('encoder', f'block_group{g + 1}', f'block{b + 1}'), b == 0)))
  block_type = 'bottleneck' if infos[0]['bottleneck'] else 'basic'
  depth = _DEPTHS.get((block_type, tuple(counts)))
  if depth is None:
    raise UserError(f'Unknown official ResNet: {block_type} blocks '
                     f'{tuple(counts)} per group.')
  resnet_d = {i['resnet_d'] for i in infos if i['resnet_d'] is not None}
  if len(resnet_d) != 1 or any(i['sk'] != (block_type == 'bottleneck' and
                                           True in resnet_d) for i in infos):
    raise UserError('Inconsistent selective-kernel layout across blocks.')
  width = stem_kernel[-1] / 64
  return {
      'depth': depth, 'width_multiplier': width,
      'sk_ratio': _sk_ratio(infos, width) if True in resnet_d else 0.0,
      'se_ratio': _se_ratio(infos, width),
      'cifar_stem': cifar_stem,
  }


def _group_filters(group, width):
  return resnet.scaled(resnet.GROUP_FILTERS[group], width)


def _sk_ratio(infos, width):
  """A ratio reproducing every SK mixing width (most are the minimum, 32)."""
  mids = [(i['sk_mid'], _group_filters(i['group'], width))
          for i in infos if 'sk_mid' in i]
  if not mids:   # Basic blocks: SK only switches ResNet-D on.
    return DEFAULT_SK_RATIO
  candidates = [DEFAULT_SK_RATIO] + [m / f for m, f in mids
                                     if m > resnet.SK_MIN_DIM]
  for ratio in candidates:
    if all(max(int(f * ratio), resnet.SK_MIN_DIM) == m for m, f in mids):
      return ratio
  raise UserError(f'No sk_ratio reproduces the SK widths {mids}.')


def _se_ratio(infos, width):
  reduced = [(i['se_reduced'], _group_filters(i['group'], width))
             for i in infos if 'se_reduced' in i]
  if not reduced:
    return 0.0
  for ratio in [r / f for r, f in reduced]:
    if all(max(1, int(f * ratio)) == r for r, f in reduced):
      return ratio
  raise UserError(f'No se_ratio reproduces the SE widths {reduced}.')


def _map_heads(mapper) -> dict:
  layers = mapper.children('_projection_head/linear_layers')
  for j in layers:
    name = f'_projection_head/linear_layers/{j}'
    mapper.conv(f'{name}/dense', ('proj_head', f'dense{j + 1}'))
    mapper.bn(f'{name}/bn_relu/bn', ('proj_head', f'bn{j + 1}'))
  arch = {'proj_head_mode': 'nonlinear' if layers else 'none',
          'num_proj_layers': max(len(layers), 1)}
  if layers:
    arch['proj_out_dim'] = int(
        mapper.params['proj_head'][f'dense{len(layers)}']['kernel'].shape[-1])
  if mapper.has('supervised_head/linear_layer/dense/kernel'):
    arch['num_classes'] = int(
        mapper.left['supervised_head/linear_layer/dense/kernel'].shape[-1])
    mapper.conv('supervised_head/linear_layer/dense', ('head', 'dense'))
  return arch


def convert(variables: dict) -> tuple[dict, dict, dict]:
  """(architecture, params, batch_stats) from official structural variables.

  The linear head is returned under params['head']; the caller names it.
  Raises ValueError naming any model variable that was not mapped.
  """
  mapper = _Mapper(variables)
  arch = _map_encoder(mapper)
  arch.update(_map_heads(mapper))
  if mapper.left:
    names = sorted(mapper.left)
    raise UserError(f'{len(names)} model variable(s) of the checkpoint match '
                     f'no part of the architecture, e.g. {names[:3]}.')
  return arch, mapper.params, mapper.stats


def model_config(arch: dict, ft_proj_selector: int = 0):
  """This project's config.model for an imported architecture."""
  mc = default.get_config().model
  for field in ('depth', 'width_multiplier', 'sk_ratio', 'se_ratio',
                'cifar_stem', 'proj_head_mode', 'num_proj_layers'):
    mc[field] = arch[field]
  mc.proj_out_dim = arch.get('proj_out_dim', mc.proj_out_dim)
  mc.ft_proj_selector = ft_proj_selector
  return mc


def build(arch: dict, head: Optional[str], ft_proj_selector: int = 0,
          conv_impl: str = 'xla'):
  """The SimCLR module of an imported architecture ('sup_head'/'probe_head')."""
  mc = model_config(arch, ft_proj_selector)
  mc.conv_impl = conv_impl
  mc.global_bn = False   # Inference outside a mesh.
  return models.SimCLR(**mc, num_classes=max(arch.get('num_classes', 1), 1),
                       linear_probe=head == 'probe_head',
                       supervised_head=head == 'sup_head')


def _check_shapes(module, params, stats, image_size):
  """Every variable of `module` is present with its shape, and nothing else."""
  abstract = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
      train=False))
  ours = {'params': params, 'batch_stats': stats}
  want = jax.tree_util.tree_flatten_with_path(abstract)[0]
  have = dict(jax.tree_util.tree_flatten_with_path(ours)[0])
  have = {jax.tree_util.keystr(k): v for k, v in have.items()}
  for path, leaf in want:
    key = jax.tree_util.keystr(path)
    if key not in have:
      raise UserError(f'The checkpoint has no value for {key} of the model.')
    if tuple(have.pop(key).shape) != tuple(leaf.shape):
      raise UserError(f'{key}: the checkpoint shape does not match the '
                       f'architecture inferred from it ({leaf.shape}).')
  if have:
    raise UserError(f'Checkpoint values with no place in the model: '
                     f'{sorted(have)[:3]}.')


def block_outputs(module, variables, images):
  """Official-named outputs of our model: h/z/logits and the block outputs."""
  out = module.apply(variables, images, train=False)
  encoder = resnet.ResNet(
      depth=module.depth, width_multiplier=module.width_multiplier,
      sk_ratio=module.sk_ratio, se_ratio=module.se_ratio,
      cifar_stem=module.cifar_stem,
      conv_impl=conv_lib.conv_impl_for_backend(module.conv_impl))
  _, blocks = encoder.apply(
      {'params': variables['params']['encoder'],
       'batch_stats': variables['batch_stats']['encoder']},
      images, train=False, return_blocks=True)
  named = {'final_avg_pool': out['h'], 'proj_head_output': out['z'],
           'initial_max_pool': blocks['stem']}
  named.update({f'block_group{g}': blocks[f'block_group{g}']
                for g in range(1, 5)})
  logits = out.get('sup_logits', out.get('probe_logits'))
  if logits is not None:
    named['logits_sup'] = logits
  return {k: np.asarray(v) for k, v in named.items()}, out


def max_differences(ours: dict, theirs: dict) -> dict:
  """{output: (max |ours - theirs|, max |theirs|)} for outputs both have."""
  result = {}
  for name in sorted(set(ours) & set(theirs)):
    ref = np.asarray(theirs[name], np.float64)
    diff = np.abs(np.asarray(ours[name], np.float64) - ref)
    result[name] = (float(diff.max()), float(np.abs(ref).max()))
  return result


def run_saved_model(source: str, images: np.ndarray) -> dict:
  """The official SavedModel's outputs in inference mode."""
  tf = _tf()
  model = tf.saved_model.load(source)
  outputs = model(tf.constant(images, tf.float32), trainable=False)
  return {k: v.numpy() for k, v in outputs.items()}


def _head_input_layer(params, stats, arch, reference_logits, images):
  """The projection-head layer whose output the SavedModel's head reads."""
  module = build(arch, None)
  variables = {'params': {k: v for k, v in params.items() if k != 'head'},
               'batch_stats': stats}
  proj = module.apply(variables, images, train=False)['proj']
  head = params['head']['dense']
  errors = [float(np.abs(np.asarray(p) @ head['kernel'] + head['bias'] -
                         reference_logits).max())
            if p.shape[-1] == head['kernel'].shape[0] else np.inf for p in proj]
  return int(np.argmin(errors))


def import_official(source: str, output: str,
                    ft_proj_selector: Optional[int] = None,
                    self_check_batch: int = 4) -> dict:
  """Writes an official TF2 SavedModel or checkpoint as a simclr_jax export.

  The linear head becomes `probe_head` (head on h: pretrained checkpoints)
  or `sup_head` on projection layer k (fine-tuned ones). A training
  checkpoint cannot tell k: pass `ft_proj_selector` for a fine-tuned one. A
  SavedModel is run to find k, and its outputs are compared with the
  imported model's (error above SELF_CHECK_RTOL of the output's scale).
  Returns a report: architecture, head, unused keys, self-check differences.
  """
  official = read_official(source)
  arch, params, stats = convert(official.variables)
  report = {'source': source, 'output': output, 'architecture': dict(arch),
            'unused': {k: len(v) for k, v in official.unused.items()},
            'num_mapped': len(official.variables), 'differences': {}}
  image_size = 32 if arch['cifar_stem'] else 64
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(self_check_batch, image_size, image_size,
                             3)).astype(np.float32)
  reference = None
  if official.is_saved_model:
    reference = run_saved_model(source, images)

  head, selector = None, 0
  if 'head' in params:
    if reference is not None:
      found = _head_input_layer(params, stats, arch,
                                reference['logits_sup'], images)
      if ft_proj_selector is not None and ft_proj_selector != found:
        raise UserError(
            f'--ft_proj_selector={ft_proj_selector} but the SavedModel\'s '
            f'linear head reads projection layer {found}.')
      selector = found
      fine_tuned = ft_proj_selector is not None or found > 0
    else:
      selector = ft_proj_selector or 0
      fine_tuned = ft_proj_selector is not None
    if selector > arch['num_proj_layers'] or (
        arch['proj_head_mode'] == 'none' and selector):
      raise UserError(f'ft_proj_selector={selector} is beyond the '
                       f'{arch["num_proj_layers"]}-layer projection head.')
    head = 'sup_head' if fine_tuned else 'probe_head'
    params[head] = params.pop('head')
  report['head'] = head
  report['ft_proj_selector'] = selector

  module = build(arch, head, selector)
  _check_shapes(module, params, stats, image_size)
  if reference is not None:
    ours, _ = block_outputs(module, {'params': params, 'batch_stats': stats},
                            images)
    report['differences'] = diffs = max_differences(ours, reference)
    bad = {k: v for k, v in diffs.items() if v[0] > SELF_CHECK_RTOL * v[1]}
    if bad:
      raise UserError(
          'Self-check failed: the imported model differs from the SavedModel '
          'by more than 1e-4 of the output scale: ' + ', '.join(
              f'{k} {d:.3g} (scale {s:.3g})' for k, (d, s) in bad.items()))

  mc = model_config(arch, selector)
  info = {'model': mc.to_dict(),
          'image_size': 32 if arch['cifar_stem'] else 224,
          'num_classes': int(arch.get('num_classes', 0)),
          'dataset': None, 'source_mode':
              {'sup_head': 'finetune', 'probe_head': 'pretrain'}.get(
                  head, 'pretrain'),
          'has_supervised_head': head == 'sup_head',
          'has_probe_head': head == 'probe_head',
          'step': int(official.step or 0), 'imported_from': source}
  checkpoint.export(output, params=params, batch_stats=stats, model_info=info)
  for reason, keys in official.unused.items():
    logging.info('Not imported (%s): %d key(s), e.g. %s', reason, len(keys),
                 keys[0])
  return report


def format_report(report: dict) -> str:
  """Human-readable lines of an import report."""
  arch = report['architecture']
  lines = [
      f'Imported {report["source"]} -> {report["output"]}',
      '  architecture: ResNet-{depth} width {width_multiplier:g} sk_ratio '
      '{sk_ratio:g} se_ratio {se_ratio:g} cifar_stem {cifar_stem}, '
      'projection head {proj_head_mode} x{num_proj_layers}'.format(**arch),
      f'  linear head: {report["head"]} (classes {arch.get("num_classes", 0)},'
      f' on projection layer {report["ft_proj_selector"]})',
      f'  mapped {report["num_mapped"]} variables; not imported: ' +
      (', '.join(f'{n} {r}' for r, n in sorted(report['unused'].items()))
       or 'nothing'),
  ]
  if report['head'] == 'probe_head':
    lines.append('  (a head on h is taken as the pretraining probe; for a '
                 'fine-tuned classifier on h pass --ft_proj_selector=0)')
  for name, (diff, scale) in report['differences'].items():
    lines.append(f'  self-check {name}: max |JAX - TF| {diff:.3g} '
                 f'(scale {scale:.3g})')
  lines.append('  config.model for finetune / linear_eval / distill from it: ' +
               ' '.join(config_flags(report)))
  return '\n'.join(lines)


def config_flags(report: dict) -> list:
  """The --config.model.* flags a run from the import needs (its weights fix
  the architecture)."""
  arch = report['architecture']
  fields = ['depth', 'width_multiplier', 'sk_ratio', 'se_ratio', 'cifar_stem',
            'proj_head_mode', 'num_proj_layers']
  if 'proj_out_dim' in arch:
    fields.append('proj_out_dim')
  flags = [f'--config.model.{f}={arch[f]:g}' if isinstance(arch[f], float)
           else f'--config.model.{f}={arch[f]}' for f in fields]
  if report['head'] == 'sup_head':
    selector = report['ft_proj_selector']
    flags.append(f'--config.model.ft_proj_selector={selector}')
  return flags
