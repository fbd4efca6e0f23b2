"""Config validation before anything compiles: one error listing every problem.

The only place config fields are checked. Each field has a type and a range
(enumerations come from the modules that own them); combinations are checked
after. `validate_or_raise` then fills the 'auto' fields and checks the run's
workdir: a saved config whose model differs is refused.
"""

import functools
import math
import numbers
from typing import Optional

import jax
import ml_collections

from simclr_jax import checkpoint, configs, optim, tasks
from simclr_jax.errors import UserError
from simclr_jax.models import DTYPES, num_proj_outputs
from simclr_jax.models.conv import CONV_IMPLS
from simclr_jax.models.heads import PROJ_HEAD_MODES
from simclr_jax.models.resnet import BLOCKS_PER_GROUP

FROM_CHECKPOINT_MODES = tuple(name for name, task in tasks.TASKS.items()
                              if task.needs_init_checkpoint)


class ConfigError(UserError):
  """A config that cannot run; the message lists every problem found."""


# Integers reach numpy, TF and XLA as 32-bit values (seeds, step counters).
INT_LIMIT = 2**31 - 1


def _is_number(v):
  """A finite real: nan or inf in any field is a mistake, not a setting."""
  return (isinstance(v, numbers.Real) and not isinstance(v, bool) and
          math.isfinite(v))


def _is_int(v):
  return (isinstance(v, numbers.Integral) and not isinstance(v, bool) and
          -INT_LIMIT <= v <= INT_LIMIT)


def _int(lo, hi=INT_LIMIT, note=''):
  """(check, description) of an integer field in [lo, hi]."""
  upper = '2**31-1' if hi == INT_LIMIT else hi
  return (lambda v: _is_int(v) and lo <= v <= hi,
          f'an integer in [{lo}, {upper}]{note}')


def _real(lo, hi=None, *, open_lo=False, open_hi=False, note=''):
  """(check, description) of a finite real field between lo and hi."""
  def check(v):
    return (_is_number(v) and (v > lo if open_lo else v >= lo) and
            (hi is None or (v < hi if open_hi else v <= hi)))
  if hi is None:
    what = f'a finite number {">" if open_lo else ">="} {lo}'
  else:
    what = f'in {"(" if open_lo else "["}{lo}, {hi}{")" if open_hi else "]"}'
  return check, what + note


def _one_of(*values):
  # Type-exact: depth=18.0 or mode=True are mistakes even where they compare equal.
  return (lambda v: any(type(v) is type(x) and v == x for x in values),
          f'one of {values}')


def _string(what, nonempty=False):
  return lambda v: isinstance(v, str) and (bool(v) or not nonempty), what


def _optional(spec):
  check, what = spec
  return lambda v: v is None or check(v), f'None (auto) or {what}'


_BOOL = (lambda v: isinstance(v, bool), 'a bool')
_POSITIVE = _real(0, open_lo=True)
_NONNEG = _real(0)
_PROB = _real(0, 1)
_FRACTION = _real(0, 1, open_lo=True)

# field path -> (predicate, what it must be)
FIELDS = {
    'mode': _one_of(*tasks.MODES),
    'seed': _int(0),
    'allow_config_change': _BOOL,
    'init_checkpoint': _string('a path string'),
    'dataset': _string('a dataset name', nonempty=True),
    'data_dir': _string('a path string ("" = default)'),
    'train_split': _string('a split name', nonempty=True),
    'eval_split': _string('a split name', nonempty=True),
    'image_size': _int(1),
    'label_fraction': _FRACTION,
    'label_fraction_seed': _int(0),
    'shuffle_buffer': _int(1),
    'cache_train': _BOOL,
    'augment.crop_area_min': _FRACTION,
    'augment.crop_area_max': _FRACTION,
    'augment.crop_aspect_min': _POSITIVE,
    'augment.crop_aspect_max': _POSITIVE,
    'augment.crop_min_object_covered': _PROB,
    'augment.crop_max_attempts': _int(1),
    'augment.flip_prob': _PROB,
    'augment.color_jitter_prob': _PROB,
    'augment.color_jitter_strength': _optional(_NONNEG),
    'augment.color_drop_prob': _PROB,
    'augment.use_blur': _optional(_BOOL),
    'augment.blur_prob': _PROB,
    'augment.blur_sigma_min': _POSITIVE,
    'augment.blur_sigma_max': _POSITIVE,
    'augment.eval_crop_proportion': _FRACTION,
    'augment.on_device': _BOOL,
    'model.depth': _one_of(*sorted(BLOCKS_PER_GROUP)),
    'model.width_multiplier': _POSITIVE,
    'model.sk_ratio': _real(0, note=' (0 = no selective kernels)'),
    'model.se_ratio': _real(0, note=' (0 = no squeeze-excitation)'),
    'model.cifar_stem': _optional(_BOOL),
    'model.proj_head_mode': _one_of(*PROJ_HEAD_MODES),
    'model.num_proj_layers': _int(1),
    'model.proj_out_dim': _int(1),
    'model.ft_proj_selector': _int(0),
    'model.fine_tune_after_block': _int(-1, 4),
    'model.zero_init_logits_layer': _BOOL,
    'model.global_bn': _BOOL,
    'model.dtype': _one_of(*DTYPES),
    'model.conv_impl': _one_of(*CONV_IMPLS),
    'train.batch_size': _int(1),
    'train.epochs': _NONNEG,
    'train.steps': _int(0, note=' (0 = use epochs)'),
    'train.optimizer': _one_of(*optim.OPTIMIZERS),
    'train.learning_rate': _NONNEG,
    'train.lr_scaling': _one_of(*optim.LR_SCALINGS),
    'train.warmup_epochs': _NONNEG,
    'train.weight_decay': _NONNEG,
    'train.momentum': _real(0, 1, open_hi=True),
    'train.lars_trust_coefficient': _POSITIVE,
    'train.temperature': _POSITIVE,
    'train.hidden_norm': _BOOL,
    'train.lineareval_while_pretraining': _BOOL,
    'train.log_every_steps': _int(1),
    'train.checkpoint_every_steps': _int(1),
    'train.keep_checkpoints': _int(1),
    'train.profile': _BOOL,
    'train.nonfinite': _one_of('stop', 'skip'),
    'evals.batch_size': _int(1),
    'evals.accuracy.every_steps': _int(0, note=' (0 = only at the end)'),
    'evals.knn.every_steps': _int(0, note=' (0 = only at the end)'),
    'evals.knn.k': _int(0, note=' (0 = off)'),
    'memory.size': _int(0),
    'memory.ema_decay': _real(0, 1, open_hi=True),
    'distill.teacher_checkpoint': _string('a path string'),
    'distill.temperature': _POSITIVE,
    'distill.alpha': _NONNEG,
}

# Fields that change the model: a workdir's saved config must agree on them.
MODEL_FIELDS = ('mode', 'dataset', 'image_size', 'model')
# ... except these, which change how it is computed, not what it is.
UNPINNED_MODEL_FIELDS = ('model.conv_impl',)


def _get(config, path):
  node = config
  for part in path.split('.'):
    node = node[part]
  return node


def _leaf_paths(node, prefix=''):
  for key, value in node.items():
    if hasattr(value, 'items'):
      yield from _leaf_paths(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def find_problems(config) -> list[str]:
  """Every problem in `config`, as messages naming the field."""
  problems, bad = [], set()
  for path, (check, what) in FIELDS.items():
    try:
      value = _get(config, path)
    except (KeyError, AttributeError):
      problems.append(f'config.{path} is missing')
      bad.add(path)
      continue
    try:
      ok = bool(check(value))
    except Exception:  # pylint: disable=broad-except
      ok = False
    if not ok:
      problems.append(f'config.{path}={value!r} must be {what}')
      bad.add(path)
  # Set in Python, a misspelt field is silently ignored (the command line
  # refuses unknown keys itself).
  problems += [f'config.{path} is not a known field'
               for path in _leaf_paths(config) if path not in FIELDS]
  return problems + _combination_problems(config, bad)


def _combination_problems(config, bad) -> list[str]:
  """Problems between fields, skipping rules whose fields are already wrong."""
  def valid(*paths):
    return not bad.intersection(paths)

  get = functools.partial(_get, config)
  problems = []
  mode = get('mode') if valid('mode') else None
  for name in ('crop_area', 'crop_aspect', 'blur_sigma'):
    low, high = f'augment.{name}_min', f'augment.{name}_max'
    if valid(low, high) and get(low) > get(high):
      problems.append(f'config.{low}={get(low)} > {name}_max={get(high)}')
  if mode in tasks.TRAIN_MODES:
    if (valid('train.steps', 'train.epochs') and get('train.steps') == 0 and
        get('train.epochs') <= 0):
      problems.append('config.train.epochs must be > 0 when config.train.steps == 0')
  batch_sizes = (('train.batch_size', 'evals.batch_size')
                 if mode in tasks.TRAIN_MODES else ('evals.batch_size',))
  for what in batch_sizes:
    for count, name in ((jax.process_count(), 'processes'),
                        (jax.device_count(), 'devices')):
      if valid(what) and get(what) % count:
        problems.append(f'config.{what}={get(what)} is not divisible by the '
                        f'number of {name} ({count})')
  if (mode in tasks.TRAIN_MODES and mode != 'pretrain' and
      valid('augment.on_device') and get('augment.on_device')):
    problems.append(f'config.augment.on_device=True applies to mode '
                    f"'pretrain' only (mode {mode!r} has no colour distortion)")
  if (mode in FROM_CHECKPOINT_MODES and valid('init_checkpoint') and
      not get('init_checkpoint')):
    problems.append(f'config.mode={mode!r} needs config.init_checkpoint '
                    '(a pretraining workdir or export)')
  if (mode == 'distill' and valid('distill.teacher_checkpoint') and
      not get('distill.teacher_checkpoint')):
    problems.append("config.mode='distill' needs config.distill.teacher_checkpoint "
                    '(a finetune workdir)')
  head = ('model.proj_head_mode', 'model.num_proj_layers', 'model.ft_proj_selector')
  if mode in ('finetune', 'supervised', 'distill') and valid(*head):
    head_mode, _, selector = map(get, head)
    n_proj = num_proj_outputs(config.model) - 1
    if selector > n_proj:
      problems.append(f'config.model.ft_proj_selector={selector} is beyond the '
                      f'projection head ({n_proj} layers with '
                      f'proj_head_mode={head_mode!r})')
  if (valid('evals.knn.every_steps', 'evals.knn.k') and
      get('evals.knn.every_steps') and not get('evals.knn.k')):
    problems.append('config.evals.knn.every_steps > 0 needs config.evals.knn.k'
                    ' >= 1')
  return problems


def check_workdir(config, workdir: Optional[str]) -> list[str]:
  """A new training run in a workdir must not change the model it saved
  (eval and export only read it)."""
  if (not workdir or config.allow_config_change is True or
      config.mode not in tasks.TRAIN_MODES):
    return []
  try:
    saved = checkpoint.read_config(workdir)
  except (OSError, ValueError) as e:
    return [f'the config saved in workdir {workdir!r} is unreadable ({e}); '
            'use a new workdir']
  if saved is None:
    return []
  diffs = []
  new = ml_collections.ConfigDict(config.to_dict())
  for field in MODEL_FIELDS:
    a = saved.get(field)
    b = new.get(field)
    a = a.to_dict() if hasattr(a, 'to_dict') else a
    b = b.to_dict() if hasattr(b, 'to_dict') else b
    if isinstance(a, dict) and isinstance(b, dict):
      for k in sorted(set(a) | set(b)):
        if f'{field}.{k}' in UNPINNED_MODEL_FIELDS:
          continue
        if a.get(k) != b.get(k):
          diffs.append(f'{field}.{k}: saved {a.get(k)!r} != new {b.get(k)!r}')
    elif a != b:
      diffs.append(f'{field}: saved {a!r} != new {b!r}')
  if diffs:
    return [f'workdir {workdir!r} holds a run with a different model (pass '
            '--config.allow_config_change=True to override, or use a new '
            'workdir): ' + '; '.join(diffs)]
  return []


def _raise(problems):
  if len(problems) == 1:
    raise ConfigError(f'Invalid config: {problems[0]}.')
  raise ConfigError(f'Invalid config ({len(problems)} problems):\n  - ' +
                    '\n  - '.join(problems))


def validate_or_raise(config, workdir: Optional[str] = None) -> None:
  """Checks `config`, fills its auto fields (in place), then checks that it
  may run in `workdir`; ConfigError lists every problem."""
  problems = find_problems(config)
  if problems:
    _raise(problems)
  configs.fill_auto_fields(config)
  problems = check_workdir(config, workdir)
  if problems:
    _raise(problems)
