"""The one trainer: pretraining, fine-tuning, linear evaluation, distillation.

`train_and_evaluate(config, workdir)` is the library entry point (usable from
a notebook); `main.py` only parses flags. The mode's `Objective` decides the
loss, the views and the heads; this file owns the step, the loop, logging,
checkpoints and evaluation, shared by every mode.
"""

import contextlib
import copy
import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from flax import struct

from simclr_jax import checkpoint, data, knn, losses, models, objectives, optim
from simclr_jax import modes, parallel, paths, preemption
from simclr_jax import config_validation
from simclr_jax.data import device_augment
from simclr_jax.parallel import DATA_AXIS
from simclr_jax.errors import UserError

NONFINITE_METRICS = {1: 'loss', 2: 'grad_norm'}
# Random streams folded into jax.random.key(config.seed) (init uses it as is).
_AUGMENT_STREAM = 1


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # SimCLRv2 memory: the EMA encoder's {'params', 'batch_stats'}, the key
  # 'queue' [K, d] (newest first) and how many rows are 'filled'; {} when
  # config.memory.size == 0.
  memory: Any
  # [skipped steps, step of the last non-finite one, metric id (1 loss, 2 grad)]
  nonfinite: jax.Array


@dataclasses.dataclass
class Experiment:
  """Everything a run needs, built and validated before anything compiles."""
  config: ml_collections.ConfigDict
  info: Any
  model: Any
  model_config: ml_collections.ConfigDict
  objective: Optional[objectives.Objective]
  mesh: Any
  total_steps: int
  warmup_steps: int
  schedule: Any
  init_weights: Optional[dict] = None
  teacher: Optional[tuple] = None   # (model, host variables)


def model_config_for_mode(config) -> ml_collections.ConfigDict:
  """config.model, adjusted for linear evaluation (frozen encoder, head on h)."""
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  if config.mode == 'linear_eval':
    model_config.fine_tune_after_block = 4
    model_config.ft_proj_selector = 0
  return model_config


def build_model_for(model_config, config, num_classes, *, mode=None):
  mode = mode or config.mode
  return models.build_model(
      model_config, num_classes=num_classes, image_size=config.image_size,
      bn_axis_name=DATA_AXIS if model_config.global_bn else None,
      linear_probe=(mode == 'pretrain' and
                    config.train.lineareval_while_pretraining),
      supervised_head=mode in modes.SUPERVISED_HEAD_MODES)


def build_experiment(config, workdir: Optional[str] = None) -> Experiment:
  """Validates the config and builds model, data info, schedule and teacher.

  Works on a copy of `config` whose paths are absolute and whose automatic
  settings are filled in; that copy is `Experiment.config`.
  """
  data.keep_tf_off_accelerators()
  config = copy.deepcopy(config)
  paths.resolve_config_paths(config)
  workdir = paths.resolve(workdir) if workdir else workdir
  config_validation.validate_or_raise(config, workdir=workdir)
  info = data.get_dataset_info(config)
  if (config.mode == 'pretrain' and config.train.lineareval_while_pretraining
      and not info.num_classes):
    logging.info('%s has no labels: pretraining without the online linear '
                 'probe.', config.dataset)
    config.train.lineareval_while_pretraining = False
  model_config = model_config_for_mode(config)
  model = build_model_for(model_config, config, info.num_classes)
  objective = objectives.for_mode(config)
  mesh = parallel.make_mesh()
  num_examples = (info.num_train_labelled
                  if config.mode in modes.LABELLED_MODES
                  else info.num_train_examples)
  if config.mode in modes.LABELLED_MODES:
    logging.info('Training on %d labelled examples (label_fraction %g).',
                 num_examples, config.label_fraction)
  total, warmup = optim.schedule_steps(
      num_examples, config.train.batch_size, config.train.epochs,
      config.train.warmup_epochs, config.train.steps)
  if config.mode in modes.TRAIN_MODES:
    if config.train.batch_size > num_examples:
      logging.warning('config.train.batch_size=%d is larger than the %d '
                      'training examples: every batch repeats examples.',
                      config.train.batch_size, num_examples)
    if warmup >= total > 0:
      logging.warning('The warm-up (%d steps from train.warmup_epochs=%g) '
                      'covers the whole run of %d steps: the learning rate '
                      'never reaches its peak. Lower train.warmup_epochs.',
                      warmup, config.train.warmup_epochs, total)
  peak = optim.scaled_learning_rate(config.train.learning_rate,
                                    config.train.batch_size,
                                    config.train.lr_scaling)
  exp = Experiment(config=config, info=info, model=model,
                   model_config=model_config, objective=objective, mesh=mesh,
                   total_steps=total, warmup_steps=warmup,
                   schedule=optim.learning_rate_schedule(peak, total, warmup))
  if config.init_checkpoint:
    exp.init_weights = checkpoint.load_weights(config.init_checkpoint)
    logging.info('Initial weights: %s (step %d).', config.init_checkpoint,
                 exp.init_weights['step'])
  if config.mode == 'distill':
    exp.teacher = load_teacher(config, info.num_classes)
  return exp


def load_teacher(config, num_classes):
  """The frozen fine-tuned teacher: its own architecture, from its workdir."""
  loaded = checkpoint.load_weights(config.distill.teacher_checkpoint)
  teacher_config = loaded['config']
  if 'sup_head' not in loaded['params']:
    raise UserError(
        f'config.distill.teacher_checkpoint={config.distill.teacher_checkpoint!r}'
        ' has no supervised head: the teacher must come from a finetune run.')
  teacher_classes = models.head_num_classes(loaded['params'], 'sup_head')
  if teacher_classes != num_classes:
    raise UserError(
        f'The teacher predicts {teacher_classes} classes but dataset '
        f'{config.dataset!r} has {num_classes}.')
  teacher_model = build_model_for(
      ml_collections.ConfigDict(teacher_config.model.to_dict()), config,
      num_classes, mode='finetune')
  variables = {'params': loaded['params'], 'batch_stats': loaded['batch_stats']}
  logging.info('Teacher: %s (step %d, %s).', config.distill.teacher_checkpoint,
               loaded['step'], _describe_model(teacher_config.model))
  return teacher_model, variables


def _describe_model(model_config) -> str:
  sk = '+SK' if model_config.sk_ratio > 0 else ''
  return (f'ResNet-{model_config.depth} {model_config.width_multiplier:g}x'
          f'{sk}')


def _init_variables(exp: Experiment, rng):
  shape = (1, exp.config.image_size, exp.config.image_size, 3)
  return exp.model.init(rng, jnp.zeros(shape, jnp.float32), train=False)


def make_optimizer(exp: Experiment, params):
  trainable = models.trainable_mask(params, exp.model_config)
  if exp.config.mode == 'linear_eval':
    # Only the linear head learns; the projection head is unused.
    trainable = {k: jax.tree.map(lambda _: k == 'sup_head', v)
                 for k, v in trainable.items()}
  return optim.make_optimizer(exp.config.train, exp.schedule, params,
                              trainable)


def create_train_state(exp: Experiment) -> TrainState:
  """Initialises (or loads init_checkpoint into) a state replicated on the mesh."""
  config = exp.config
  rng = jax.random.key(config.seed)
  variables = jax.eval_shape(lambda: _init_variables(exp, rng))
  tx = make_optimizer(exp, variables['params'])
  memory_size = config.memory.size if config.mode == 'pretrain' else 0
  out_dim = (config.model.proj_out_dim
             if config.model.proj_head_mode != 'none'
             else models.encoder_output_dim(exp.model_config))

  def init(init_params, init_stats):
    variables = _init_variables(exp, rng)
    params = variables['params']
    stats = variables.get('batch_stats', {})
    if init_params is not None:
      params, stats = init_params, init_stats
    memory = {}
    if memory_size:
      memory = {'params': params, 'batch_stats': stats,
                'queue': jnp.zeros((memory_size, out_dim), jnp.float32),
                'filled': jnp.int32(0)}
    return TrainState(step=jnp.int32(0), params=params, batch_stats=stats,
                      opt_state=tx.init(params), memory=memory,
                      nonfinite=jnp.zeros((3,), jnp.int32))

  init_params = init_stats = None
  if exp.init_weights is not None:
    what = f'config.init_checkpoint={config.init_checkpoint!r}'
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
    init_params = checkpoint.merge_weights(
        fresh['params'], exp.init_weights['params'], what=what)
    init_stats = checkpoint.merge_weights(
        fresh.get('batch_stats', {}), exp.init_weights['batch_stats'], what=what)
    if 'encoder' not in exp.init_weights['params']:
      raise UserError(f'{what} holds no encoder weights.')
  replicated = parallel.replicated(exp.mesh)
  return jax.jit(init, out_shardings=replicated)(init_params, init_stats)


def make_train_step(exp: Experiment):
  """The per-device step, wrapped in jit(shard_map) with the state donated."""
  config, model, objective = exp.config, exp.model, exp.objective
  tx = make_optimizer(exp, jax.eval_shape(
      lambda: _init_variables(exp, jax.random.key(0)))['params'])
  head_l2 = config.train.weight_decay if config.train.optimizer == 'lars' else 0.
  teacher_model = exp.teacher[0] if exp.teacher else None
  memory_decay = config.memory.ema_decay
  colors_on_device = config.mode == 'pretrain' and config.augment.on_device

  def step(state: TrainState, batch, teacher_variables):
    images = batch['images']
    if colors_on_device:
      images = device_augment.augment_views(
          images, device_augment_rng(config.seed, state.step), config.augment,
          config.image_size)
    b, views = images.shape[:2]
    # View-major: [all first views; all second views], as the official code.
    x = jnp.swapaxes(images, 0, 1).reshape((views * b,) + images.shape[2:])
    extras = {}
    if teacher_model is not None:
      extras['teacher_logits'] = teacher_model.apply(
          teacher_variables, x, train=False)['sup_logits']
    if state.memory:
      extras['queue'] = state.memory['queue']
      extras['queue_valid'] = (jnp.arange(state.memory['queue'].shape[0]) <
                               state.memory['filled'])

    def loss_fn(params):
      out, mutated = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
          mutable=['batch_stats'])
      loss, metrics = objective.loss_fn(out, batch, extras, DATA_AXIS)
      if head_l2:
        loss = loss + optim.head_l2_penalty(params, head_l2)
      return loss, (metrics, mutated.get('batch_stats', {}))

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    loss = jax.lax.pmean(loss, DATA_AXIS)
    metrics = jax.lax.pmean(metrics, DATA_AXIS)
    if not exp.model_config.global_bn:
      # Per-device statistics: keep one (averaged) copy in the replicated state.
      # With global BN they are identical everywhere already.
      batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    memory = state.memory
    if memory:
      memory = _update_memory(model, memory, params, batch_stats, x, b,
                              memory_decay)
    grad_norm = optax.tree.norm(grads)
    finite_loss = jnp.isfinite(loss)
    ok = finite_loss & jnp.isfinite(grad_norm)
    new = state.replace(params=params, batch_stats=batch_stats,
                        opt_state=opt_state, memory=memory)
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    nonfinite = jnp.where(
        ok, state.nonfinite,
        jnp.stack([state.nonfinite[0] + 1, state.step + 1,
                   jnp.where(finite_loss, 2, 1)]).astype(jnp.int32))
    kept = kept.replace(step=state.step + 1, nonfinite=nonfinite)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   learning_rate=exp.schedule(state.step),
                   param_norm=optax.tree.norm(params))
    return kept, metrics

  return parallel.shard_step(step, exp.mesh, batch_argnums=(1,), num_args=3,
                             donate_argnums=(0,))


def device_augment_rng(seed, step):
  """The on-device augmentation key of this step on this device (inside
  shard_map): a stream per (seed, step, device), so a resumed run repeats it."""
  rng = jax.random.fold_in(jax.random.key(seed), _AUGMENT_STREAM)
  return jax.random.fold_in(jax.random.fold_in(rng, step),
                            jax.lax.axis_index(DATA_AXIS))


def _update_memory(model, memory, params, batch_stats, x, b, decay):
  """EMA of the weights, and the newest global keys pushed onto the queue."""
  ema = jax.tree.map(lambda e, p: decay * e + (1. - decay) * p,
                     {'params': memory['params'], 'batch_stats': memory['batch_stats']},
                     {'params': params, 'batch_stats': batch_stats})
  keys = model.apply(ema, x[:b], train=False)['z']
  keys = losses.l2_normalize(keys.astype(jnp.float32))
  keys = jax.lax.all_gather(keys, DATA_AXIS, axis=0, tiled=True)
  queue = memory['queue']
  size = queue.shape[0]
  # Newest keys first; the oldest fall off the end (a FIFO of size K).
  queue = jnp.concatenate([keys, queue], axis=0)[:size]
  filled = jnp.minimum(memory['filled'] + keys.shape[0], size)
  return dict(ema, queue=jax.lax.stop_gradient(queue), filled=filled)


def make_eval_step(exp: Experiment, logits_key: str):
  """Per-device forward in inference mode; returns globally summed counts."""
  model = exp.model
  k = min(5, exp.info.num_classes)

  def step(variables, batch):
    out = model.apply(variables, batch['images'][:, 0], train=False)
    logits, labels, mask = out[logits_key], batch['labels'], batch['label_mask']
    sums = {'top1': jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
            'top5': jnp.sum(losses.topk_correct(logits, labels, k) * mask),
            'count': jnp.sum(mask)}
    return jax.lax.psum(sums, DATA_AXIS)

  return parallel.shard_step(step, exp.mesh, batch_argnums=(1,), num_args=2)


def evaluate(exp: Experiment, state: TrainState, eval_step=None,
             split: Optional[str] = None) -> dict:
  """Top-1 / top-5 accuracy of the mode's classifier on a split."""
  key = exp.objective.logits_key if exp.objective else _logits_key(state.params)
  eval_step = eval_step or make_eval_step(exp, key)
  variables = _variables(state)
  totals = None
  for batch in parallel.prefetch(
      exp.mesh, data.make_eval_iterator(exp.config, split=split)):
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals['count']), 1.0)
  return {'top1': float(totals['top1']) / count,
          'top5': float(totals['top5']) / count, 'count': int(totals['count'])}


def _variables(state):
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _logits_key(params):
  return 'sup_logits' if 'sup_head' in params else 'probe_logits'


@contextlib.contextmanager
def _waiting_for(manager):
  """Waits for async saves on the way out, errors included: the save in
  flight may be the last good checkpoint."""
  try:
    yield
  finally:
    manager.wait_until_finished()


def _flush_metrics(window, step, writer):
  """Fetches a window of per-step metrics (one host sync) and writes means."""
  fetched = jax.device_get(window)
  summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  summary['learning_rate'] = float(fetched[-1]['learning_rate'])
  writer.write_scalars(step, {'train/' + k: v for k, v in summary.items()})
  return summary


def itstime(step: int, every: int, total: int, *, last: bool) -> bool:
  """The one rule of every periodic action in the loop: at multiples of
  `every` (0 = never), and at the final step only if `last`."""
  if step == total:
    return last
  return every > 0 and step % every == 0


class Progress:
  """The console's progress line: step, key metrics, steps/s and ETA.

  The rate is measured between two reports, each right after the metrics
  fetch that waits for the device, so asynchronous dispatch cannot inflate
  it; the first report after a start (compilation, pipeline warm-up) and
  time spent in evaluations are not counted.
  """
  SHOWN = ('loss', 'contrast_acc', 'probe_train_top1', 'train_top1',
           'distill_loss', 'teacher_agreement')

  def __init__(self, total_steps: int, writer=None):
    self.total = total_steps
    self.writer = writer
    self._since = None   # (step, time) the rate is measured from.

  def restart_clock(self, step=None):
    self._since = None if step is None else (step, time.monotonic())

  def report(self, step: int, summary: dict) -> None:
    now = time.monotonic()
    shown = ', '.join(f'{k} {summary[k]:.4g}' for k in self.SHOWN
                      if k in summary)
    speed = ''
    if self._since is not None and step > self._since[0]:
      rate = (step - self._since[0]) / max(now - self._since[1], 1e-9)
      eta = int(round((self.total - step) / rate))
      speed = f' | {rate:.3g} steps/s, ETA {eta // 60}m{eta % 60:02d}s'
      if self.writer is not None:
        self.writer.write_scalars(step, {'steps_per_sec': rate})
    logging.info('Step %d/%d (%.0f%%): %s%s', step, self.total,
                 100 * step / max(self.total, 1), shown, speed)
    self._since = (step, now)


def _check_nonfinite(state, config, seen: int) -> int:
  skipped, bad_step, which = (int(v) for v in jax.device_get(state.nonfinite))
  if skipped > seen:
    metric = NONFINITE_METRICS.get(which, 'loss')
    if config.train.nonfinite == 'stop':
      raise FloatingPointError(
          f'Non-finite {metric} at step {bad_step}: the run is stopped and that '
          'step was not applied; the last good checkpoint is kept. Set '
          "config.train.nonfinite='skip' to skip such steps instead.")
    logging.warning('Non-finite %s at step %d: step skipped (%d skipped so '
                    'far).', metric, bad_step, skipped)
  return skipped


@preemption.handles_signals
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs config.mode in `workdir`, resuming from its checkpoints. Returns the
  final evaluation (and a few run facts) as a dict."""
  workdir = paths.resolve_workdir(workdir, 'workdir')
  exp = build_experiment(config, workdir)
  config = exp.config
  if config.mode == 'eval':
    with preemption.current().immediate():
      return run_eval(exp, workdir)
  if config.mode == 'export':
    raise UserError("mode='export' is run by `simclr-jax export` / "
                     'simclr_jax.export.export_workdir.')
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_main, asynchronous=True)
  checkpoint.write_config(workdir, config)
  manager = checkpoint.make_manager(workdir, keep=config.train.keep_checkpoints)

  state = create_train_state(exp)
  restored, restored_step = checkpoint.restore_latest(manager, state)
  if restored is not None:
    state = restored
    logging.info('Resumed from %s at step %d.', manager.directory, restored_step)
  start_step = int(jax.device_get(state.step))
  total = exp.total_steps
  logging.info('%s %s on %s: %d steps (%d warm-up), global batch %d on %d %s '
               'device(s) in %d process(es), from step %d; workdir %s.',
               config.mode.capitalize(), _describe_model(exp.model_config),
               config.dataset, total, exp.warmup_steps, config.train.batch_size,
               jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), start_step, workdir)

  train_step = make_train_step(exp)
  has_classifier = (config.mode != 'pretrain' or
                    config.train.lineareval_while_pretraining)
  eval_step = (make_eval_step(exp, exp.objective.logits_key)
               if exp.info.num_eval_examples and has_classifier else None)
  teacher_variables = (parallel.replicate(exp.mesh, exp.teacher[1])
                       if exp.teacher else {})
  hooks = []
  progress = Progress(total, writer if is_main else None)
  if is_main:
    if config.train.profile:
      hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=5))

  batches = parallel.prefetch(exp.mesh, data.make_train_iterator(
      config, start_step=start_step))
  window, summary, history = [], {}, []
  seen_nonfinite = int(jax.device_get(state.nonfinite)[0])
  preempted = False
  t0 = time.time()
  with preemption.current().watch() as stopper, _waiting_for(manager):
    preempted = stopper.stop_before_start(start_step, manager.directory)
    for step in range(start_step + 1, total + 1) if not preempted else ():
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(batches), teacher_variables)
      window.append(metrics)
      for hook in hooks:
        hook(step)
      last = step == total
      if itstime(step, config.train.log_every_steps, total, last=True):
        seen_nonfinite = _check_nonfinite(state, config, seen_nonfinite)
        summary = _flush_metrics(window, step, writer)
        history.append(dict(summary, step=step))
        window = []
        progress.report(step, summary)
      # The last step's evaluation is the final one, after the loop.
      if eval_step is not None and itstime(
          step, config.train.eval_every_steps, total, last=False):
        results = evaluate(exp, state, eval_step)
        writer.write_scalars(step, {'eval/' + k: v for k, v in results.items()})
        logging.info('Step %d: eval top-1 %.4f on %s.', step, results['top1'],
                     exp.info.eval_source)
        progress.restart_clock(step)
      if config.train.knn_every_steps and itstime(
          step, config.train.knn_every_steps, total, last=True):
        writer.write_scalars(step, {'eval/knn_top1': knn.knn_accuracy(
            exp, _variables(state), k=config.train.knn_k)})
        progress.restart_clock(step)
      preempted = stopper.should_stop(step) and not last
      if preempted or itstime(step, config.train.checkpoint_every_steps,
                              total, last=True):
        # 'stop' raises here, so no checkpoint follows a non-finite step.
        seen_nonfinite = _check_nonfinite(state, config, seen_nonfinite)
        if checkpoint.save(manager, step, state, force=preempted):
          logging.info('Saving the checkpoint of step %d to %s.', step,
                       manager.directory)
          progress.restart_clock(step)
      if preempted:
        manager.wait_until_finished()
        stopper.log_saved(step, manager.directory)
        break
    if not preempted and eval_step is not None:
      preempted = stopper.stop_before_final_eval(int(jax.device_get(state.step)))
  train_seconds = time.time() - t0
  result = {'step': int(jax.device_get(state.step)), 'start_step': start_step,
            'preempted': preempted, 'nonfinite_steps': seen_nonfinite,
            'history': history,
            'train_seconds': train_seconds,
            'train_compiles': _compile_count(train_step)}
  result.update({'train/' + k: v for k, v in summary.items()})
  if not preempted and eval_step is not None:
    results = evaluate(exp, state, eval_step)
    writer.write_scalars(result['step'], {'eval/' + k: v for k, v in results.items()})
    result.update({'eval/' + k: v for k, v in results.items()})
    what = {'pretrain': 'linear-probe', 'distill': 'student'}.get(
        config.mode, config.mode)
    logging.info('Final %s top-1 on %s: %.4f (top-5 %.4f, %d examples).', what,
                 exp.info.eval_source, results['top1'], results['top5'],
                 results['count'])
  writer.flush()
  manager.close()
  return result


def _compile_count(step: parallel.CompiledOnce) -> int:
  return step.compiles


def run_eval(exp: Experiment, workdir: str) -> dict:
  """mode=eval: accuracy of a checkpoint (init_checkpoint, else the workdir)."""
  config = exp.config
  if exp.init_weights is None:
    exp.init_weights = checkpoint.load_weights(workdir)
  params = exp.init_weights['params']
  key = _logits_key(params)
  head = key.replace('_logits', '_head')
  if head in params and (models.head_num_classes(params, head) !=
                         exp.info.num_classes):
    raise UserError(
        f'The checkpoint\'s {head} predicts {models.head_num_classes(params, head)}'
        f' classes but dataset {config.dataset!r} has {exp.info.num_classes}.')
  source_config = exp.init_weights['config']
  if source_config is not None:
    mc = ml_collections.ConfigDict(source_config.model.to_dict())
    exp.model_config = mc
    exp.model = build_model_for(mc, config, exp.info.num_classes,
                                mode=source_config.mode)
  variables = {'params': params, 'batch_stats': exp.init_weights['batch_stats']}
  variables = parallel.replicate(exp.mesh, variables)
  state = TrainState(step=None, params=variables['params'],
                     batch_stats=variables['batch_stats'], opt_state=None,
                     memory={}, nonfinite=None)
  results = {}
  if 'sup_head' in params or 'probe_head' in params:
    results = evaluate(exp, state, make_eval_step(exp, key))
    logging.info('Eval of %s on %s: top-1 %.4f, top-5 %.4f (%d examples).',
                 config.init_checkpoint or workdir, config.eval_split,
                 results['top1'], results['top5'], results['count'])
  if config.train.knn_k:
    results['knn_top1'] = knn.knn_accuracy(exp, variables, k=config.train.knn_k)
    logging.info('k-NN (k=%d, cosine on h) top-1 on %s: %.4f',
                 config.train.knn_k, config.eval_split, results['knn_top1'])
  return {'eval/' + k: v for k, v in results.items()}
