"""Config validation before anything compiles: one error listing every problem.

Each field has a type and a range; combinations are checked after. The run's
workdir is checked too: a saved config whose model differs is refused.
"""

import numbers
from typing import Optional

import jax
import ml_collections

from simclr_jax import checkpoint

DEPTHS = (18, 34, 50, 101, 152, 200)
MODES = ('pretrain', 'finetune', 'linear_eval', 'distill', 'eval', 'export')


class ConfigError(ValueError):
  """A config that cannot run; the message lists every problem found."""


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _positive(v):
  return _is_number(v) and v > 0


def _nonneg(v):
  return _is_number(v) and v >= 0


def _prob(v):
  return _is_number(v) and 0 <= v <= 1


def _optional(check):
  return lambda v: v is None or check(v)


# field path -> (predicate, what it must be)
FIELDS = {
    'mode': (lambda v: v in MODES, f'one of {MODES}'),
    'seed': (_is_int, 'an integer'),
    'allow_config_change': (lambda v: isinstance(v, bool), 'a bool'),
    'init_checkpoint': (lambda v: isinstance(v, str), 'a path string'),
    'dataset': (lambda v: isinstance(v, str) and v, 'a dataset name'),
    'data_dir': (lambda v: isinstance(v, str), 'a path string ("" = default)'),
    'train_split': (lambda v: isinstance(v, str) and v, 'a split name'),
    'eval_split': (lambda v: isinstance(v, str) and v, 'a split name'),
    'image_size': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'label_fraction': (lambda v: _is_number(v) and 0 < v <= 1, 'in (0, 1]'),
    'label_fraction_seed': (_is_int, 'an integer'),
    'shuffle_buffer': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'cache_train': (lambda v: isinstance(v, bool), 'a bool'),
    'augment.crop_area_min': (lambda v: _is_number(v) and 0 < v <= 1, 'in (0, 1]'),
    'augment.crop_area_max': (lambda v: _is_number(v) and 0 < v <= 1, 'in (0, 1]'),
    'augment.crop_aspect_min': (_positive, 'positive'),
    'augment.crop_aspect_max': (_positive, 'positive'),
    'augment.crop_min_object_covered': (_prob, 'in [0, 1]'),
    'augment.crop_max_attempts': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'augment.flip_prob': (_prob, 'a probability in [0, 1]'),
    'augment.color_jitter_prob': (_prob, 'a probability in [0, 1]'),
    'augment.color_jitter_strength': (_optional(_nonneg), 'None (auto) or >= 0'),
    'augment.color_drop_prob': (_prob, 'a probability in [0, 1]'),
    'augment.use_blur': (_optional(lambda v: isinstance(v, bool)), 'None (auto) or a bool'),
    'augment.blur_prob': (_prob, 'a probability in [0, 1]'),
    'augment.blur_sigma_min': (_positive, 'positive'),
    'augment.blur_sigma_max': (_positive, 'positive'),
    'augment.eval_crop_proportion': (lambda v: _is_number(v) and 0 < v <= 1, 'in (0, 1]'),
    'model.depth': (lambda v: v in DEPTHS, f'one of {DEPTHS}'),
    'model.width_multiplier': (_positive, 'positive'),
    'model.sk_ratio': (_nonneg, '>= 0 (0 = no selective kernels)'),
    'model.se_ratio': (_nonneg, '>= 0 (0 = no squeeze-excitation)'),
    'model.cifar_stem': (_optional(lambda v: isinstance(v, bool)), 'None (auto) or a bool'),
    'model.proj_head_mode': (lambda v: v in ('none', 'linear', 'nonlinear'),
                             "one of ('none', 'linear', 'nonlinear')"),
    'model.num_proj_layers': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'model.proj_out_dim': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'model.ft_proj_selector': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'model.fine_tune_after_block': (lambda v: _is_int(v) and -1 <= v <= 4, 'in -1..4'),
    'model.zero_init_logits_layer': (lambda v: isinstance(v, bool), 'a bool'),
    'model.global_bn': (lambda v: isinstance(v, bool), 'a bool'),
    'model.dtype': (lambda v: v in ('float32', 'bfloat16', 'float16'),
                    "one of ('float32', 'bfloat16', 'float16')"),
    'train.batch_size': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'train.epochs': (_nonneg, '>= 0'),
    'train.steps': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0 (0 = use epochs)'),
    'train.optimizer': (lambda v: v in ('lars', 'momentum', 'adamw'),
                        "one of ('lars', 'momentum', 'adamw')"),
    'train.learning_rate': (_nonneg, '>= 0'),
    'train.lr_scaling': (lambda v: v in ('linear', 'sqrt', 'none'),
                         "one of ('linear', 'sqrt', 'none')"),
    'train.warmup_epochs': (_nonneg, '>= 0'),
    'train.weight_decay': (_nonneg, '>= 0'),
    'train.momentum': (lambda v: _is_number(v) and 0 <= v < 1, 'in [0, 1)'),
    'train.lars_trust_coefficient': (_positive, 'positive'),
    'train.temperature': (_positive, 'positive'),
    'train.hidden_norm': (lambda v: isinstance(v, bool), 'a bool'),
    'train.lineareval_while_pretraining': (lambda v: isinstance(v, bool), 'a bool'),
    'train.log_every_steps': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'train.checkpoint_every_steps': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'train.keep_checkpoints': (lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
    'train.eval_every_steps': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'train.eval_batch_size': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'train.knn_k': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'train.knn_every_steps': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'train.profile': (lambda v: isinstance(v, bool), 'a bool'),
    'train.nonfinite': (lambda v: v in ('stop', 'skip'), "'stop' or 'skip'"),
    'memory.size': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'memory.ema_decay': (lambda v: _is_number(v) and 0 <= v < 1, 'in [0, 1)'),
    'distill.teacher_checkpoint': (lambda v: isinstance(v, str), 'a path string'),
    'distill.temperature': (_positive, 'positive'),
    'distill.alpha': (_nonneg, '>= 0'),
}

# Fields that change the model: a workdir's saved config must agree on them.
MODEL_FIELDS = ('mode', 'dataset', 'image_size', 'model')


def _get(config, path):
  node = config
  for part in path.split('.'):
    node = node[part]
  return node


def find_problems(config) -> list[str]:
  """Every problem in `config`, as messages naming the field."""
  problems = []
  for path, (check, what) in FIELDS.items():
    try:
      value = _get(config, path)
    except (KeyError, AttributeError):
      problems.append(f'config.{path} is missing')
      continue
    try:
      ok = bool(check(value))
    except Exception:  # pylint: disable=broad-except
      ok = False
    if not ok:
      problems.append(f'config.{path}={value!r} must be {what}')
  if problems:
    return problems  # Combinations below assume well-typed fields.

  aug, train, model = config.augment, config.train, config.model
  if aug.crop_area_min > aug.crop_area_max:
    problems.append(f'config.augment.crop_area_min={aug.crop_area_min} > '
                    f'crop_area_max={aug.crop_area_max}')
  if aug.crop_aspect_min > aug.crop_aspect_max:
    problems.append('config.augment.crop_aspect_min > crop_aspect_max')
  if aug.blur_sigma_min > aug.blur_sigma_max:
    problems.append('config.augment.blur_sigma_min > blur_sigma_max')
  if config.mode in ('pretrain', 'finetune', 'linear_eval', 'distill'):
    if train.steps == 0 and train.epochs <= 0:
      problems.append('config.train.epochs must be > 0 when config.train.steps == 0')
    for what, size in (('batch_size', train.batch_size),
                       ('eval_batch_size', train.eval_batch_size)):
      for count, name in ((jax.process_count(), 'processes'),
                          (jax.device_count(), 'devices')):
        if size % count:
          problems.append(f'config.train.{what}={size} is not divisible by the '
                          f'number of {name} ({count})')
  if config.mode in ('finetune', 'linear_eval') and not config.init_checkpoint:
    problems.append(f"config.mode={config.mode!r} needs config.init_checkpoint "
                    '(a pretraining workdir or export)')
  if config.mode == 'distill' and not config.distill.teacher_checkpoint:
    problems.append("config.mode='distill' needs config.distill.teacher_checkpoint "
                    '(a finetune workdir)')
  n_proj = {'none': 0, 'linear': 1, 'nonlinear': model.num_proj_layers}[
      model.proj_head_mode]
  if config.mode in ('finetune', 'distill') and model.ft_proj_selector > n_proj:
    problems.append(f'config.model.ft_proj_selector={model.ft_proj_selector} is '
                    f'beyond the projection head ({n_proj} layers with '
                    f'proj_head_mode={model.proj_head_mode!r})')
  return problems


def check_workdir(config, workdir: Optional[str]) -> list[str]:
  """A new run in a workdir must not change the model it saved."""
  if not workdir or config.allow_config_change:
    return []
  saved = checkpoint.read_config(workdir)
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
        if a.get(k) != b.get(k):
          diffs.append(f'{field}.{k}: saved {a.get(k)!r} != new {b.get(k)!r}')
    elif a != b:
      diffs.append(f'{field}: saved {a!r} != new {b!r}')
  if diffs:
    return [f'workdir {workdir!r} holds a run with a different model (pass '
            '--config.allow_config_change=True to override, or use a new '
            'workdir): ' + '; '.join(diffs)]
  return []


def validate_or_raise(config, workdir: Optional[str] = None) -> None:
  problems = find_problems(config)
  if not problems:
    problems = check_workdir(config, workdir)
  if problems:
    raise ConfigError('Invalid config:\n  - ' + '\n  - '.join(problems))
