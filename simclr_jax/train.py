"""The one trainer: every mode's step, loop, logging, checkpoints, evaluation.

`train_and_evaluate(config, workdir)` is the library entry point (usable from
a notebook); `main.py` only parses flags. `build_experiment` opens the data
once and picks the mode's `Task` (tasks.py), which decides the model's heads,
what trains, the views, the loss and the memory; this file owns what every
mode shares: the optimizer, the data-parallel step, the loop and its
periodic actions (`itstime`), checkpoints and the evaluators of config.evals.
The path of a batch is drawn in docs/architecture.md.
"""

import contextlib
import copy
import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from flax import struct

from simclr_jax import checkpoint, config_validation, data, evaluators
from simclr_jax import optim, parallel, paths, preemption, tasks
from simclr_jax.errors import UserError
from simclr_jax.parallel import DATA_AXIS


@struct.dataclass
class NonFinite:
  """Steps not applied because the loss or the gradient was not finite
  (config.train.nonfinite='skip'; 'stop' ends the run at the first)."""
  skipped: jax.Array     # How many so far.
  last_step: jax.Array   # The step of the newest one.
  in_grad: jax.Array     # Whether it was the gradient (the loss was finite).

  @classmethod
  def none(cls):
    return cls(skipped=jnp.int32(0), last_step=jnp.int32(0),
               in_grad=jnp.bool_(False))


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # The task's memory (SimCLRv2's EMA encoder and queue); {} for the others.
  memory: Any
  nonfinite: NonFinite


@dataclasses.dataclass
class Experiment:
  """Everything a run needs, built and validated before anything compiles."""
  config: ml_collections.ConfigDict
  task: tasks.Task
  dataset: data.Dataset
  mesh: Any
  total_steps: int = 0
  warmup_steps: int = 0
  schedule: Optional[optim.Schedule] = None
  # The run's optimizer for a schedule: the train step builds it from the
  # schedule it receives as arrays (optim.Schedule), the init from its own.
  optimizer: Optional[Callable[[optim.Schedule], optax.GradientTransformation]] = None
  # Shapes of the model's variables ({'params', 'batch_stats'}).
  abstract_variables: Any = None
  init_weights: Optional[dict] = None

  @property
  def info(self) -> data.DatasetInfo:
    return self.dataset.info

  @property
  def model(self):
    return self.task.model


def _init_variables(model, image_size, rng):
  shape = (1, image_size, image_size, 3)
  return model.init(rng, jnp.zeros(shape, jnp.float32), train=False)


def build_experiment(config, workdir: Optional[str] = None) -> Experiment:
  """Validates the config, opens the data, picks the task and plans the run.

  Works on a copy of `config` whose paths are absolute and whose automatic
  settings are filled in; that copy is `Experiment.config`.
  """
  data.keep_tf_off_accelerators()
  config = copy.deepcopy(config)
  paths.resolve_config_paths(config)
  workdir = paths.resolve(workdir) if workdir else workdir
  config_validation.validate_or_raise(config, workdir=workdir)
  dataset = data.Dataset(config)
  task = tasks.for_config(config, dataset.info)
  exp = Experiment(config=config, task=task, dataset=dataset,
                   mesh=parallel.make_mesh())
  if config.init_checkpoint:
    exp.init_weights = checkpoint.load_weights(config.init_checkpoint)
    logging.info('Initial weights: %s (step %d).', config.init_checkpoint,
                 exp.init_weights['step'])
  if not task.trains:
    return exp
  num_examples = task.epoch_size
  if task.labelled_only:
    logging.info('Training on %d labelled examples (label_fraction %g).',
                 num_examples, config.label_fraction)
  total, warmup = optim.schedule_steps(
      num_examples, config.train.batch_size, config.train.epochs,
      config.train.warmup_epochs, config.train.steps)
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
  exp.total_steps, exp.warmup_steps = total, warmup
  exp.schedule = optim.Schedule.create(peak, total, warmup)
  exp.abstract_variables = jax.eval_shape(
      lambda: _init_variables(task.model, config.image_size,
                              jax.random.key(config.seed)))
  params = exp.abstract_variables['params']
  trainable = task.trainable(params)
  exp.optimizer = lambda schedule: optim.make_optimizer(
      config.train, schedule, params, trainable)
  return exp


def create_train_state(exp: Experiment) -> TrainState:
  """Initialises (or loads init_checkpoint into) a state replicated on the mesh."""
  config, task, tx = exp.config, exp.task, exp.optimizer(exp.schedule)
  rng = jax.random.key(config.seed)

  def init(init_params, init_stats):
    variables = _init_variables(task.model, config.image_size, rng)
    params = variables['params']
    stats = variables.get('batch_stats', {})
    if init_params is not None:
      params, stats = init_params, init_stats
    return TrainState(step=jnp.int32(0), params=params, batch_stats=stats,
                      opt_state=tx.init(params),
                      memory=task.init_memory(params, stats),
                      nonfinite=NonFinite.none())

  init_params = init_stats = None
  if exp.init_weights is not None:
    what = f'config.init_checkpoint={config.init_checkpoint!r}'
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                         exp.abstract_variables)
    init_params = checkpoint.merge_weights(
        fresh['params'], exp.init_weights['params'], what=what)
    init_stats = checkpoint.merge_weights(
        fresh.get('batch_stats', {}), exp.init_weights['batch_stats'], what=what)
    if 'encoder' not in exp.init_weights['params']:
      raise UserError(f'{what} holds no encoder weights.')
  replicated = parallel.replicated(exp.mesh)
  return jax.jit(init, out_shardings=replicated)(init_params, init_stats)


def make_train_step(exp: Experiment):
  """The per-device step, wrapped in jit(shard_map) with the state donated.

  Called as step(state, batch, frozen, schedule) with frozen = the task's
  `frozen_variables()` replicated on the mesh and schedule = exp.schedule.
  """
  config, task = exp.config, exp.task
  model = task.model
  # Official LARS runs: the linear heads get L2 in the loss, not in LARS.
  head_l2 = config.train.weight_decay if config.train.optimizer == 'lars' else 0.

  def step(state: TrainState, batch, frozen, schedule: optim.Schedule):
    tx = exp.optimizer(schedule)
    images = task.device_views(batch['images'], config.seed, state.step)
    b, views = images.shape[:2]
    # View-major: [all first views; all second views], as the official code.
    x = jnp.swapaxes(images, 0, 1).reshape((views * b,) + images.shape[2:])
    inputs = task.step_inputs(x, state.memory, frozen)

    def loss_fn(params):
      out, mutated = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
          mutable=['batch_stats'])
      loss, metrics = task.loss(out, batch, inputs, DATA_AXIS)
      if head_l2:
        loss = loss + optim.head_l2_penalty(params, head_l2)
      return loss, (metrics, mutated.get('batch_stats', {}))

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    loss = jax.lax.pmean(loss, DATA_AXIS)
    metrics = jax.lax.pmean(metrics, DATA_AXIS)
    if not model.global_bn:
      # Per-device statistics: keep one (averaged) copy in the replicated state.
      # With global BN they are identical everywhere already.
      batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    memory = task.update_memory(state.memory, params, batch_stats, x)
    grad_norm = optax.tree.norm(grads)
    finite_loss = jnp.isfinite(loss)
    ok = finite_loss & jnp.isfinite(grad_norm)
    new = state.replace(params=params, batch_stats=batch_stats,
                        opt_state=opt_state, memory=memory)
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    seen = state.nonfinite
    nonfinite = NonFinite(
        skipped=jnp.where(ok, seen.skipped, seen.skipped + 1),
        last_step=jnp.where(ok, seen.last_step, state.step + 1),
        in_grad=jnp.where(ok, seen.in_grad, finite_loss))
    kept = kept.replace(step=state.step + 1, nonfinite=nonfinite)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   learning_rate=schedule(state.step),
                   param_norm=optax.tree.norm(params))
    return kept, metrics

  return parallel.shard_step(step, exp.mesh, batch_argnums=(1,), num_args=4,
                             donate_argnums=(0,))


def _variables(state):
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _describe(name: str, results: dict, exp: Experiment) -> str:
  """'<what> top-1 on <split>: ...' of an evaluator's results, for the log."""
  if name == 'knn':
    return (f'k-NN (k={exp.config.evals.knn.k}, cosine on h) top-1 on '
            f'{exp.info.eval_source}: {results["knn_top1"]:.4f}')
  what = exp.task.result_name or 'classifier'
  return (f'{what} top-1 on {exp.info.eval_source}: {results["top1"]:.4f} '
          f'(top-5 {results["top5"]:.4f}, {results["count"]} examples)')


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
  found = jax.device_get(state.nonfinite)
  skipped, bad_step = int(found.skipped), int(found.last_step)
  if skipped > seen:
    metric = 'grad_norm' if bool(found.in_grad) else 'loss'
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
  final evaluation (and a few run facts) as a dict; 'history' holds the
  logged metric means with their step and the seconds since this call."""
  started = time.time()
  workdir = paths.resolve_workdir(workdir, 'workdir')
  exp = build_experiment(config, workdir)
  config, task = exp.config, exp.task
  if not task.trains:
    with preemption.current().immediate():
      return run_eval(exp, workdir)
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
               task.name.capitalize(), tasks.describe_model(task.model_config),
               config.dataset, total, exp.warmup_steps, config.train.batch_size,
               jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), start_step, workdir)

  train_step = make_train_step(exp)
  evals = evaluators.from_config(config, model=task.model, mesh=exp.mesh,
                                 dataset=exp.dataset,
                                 logits_key=task.logits_key)
  frozen = parallel.replicate(exp.mesh, task.frozen_variables())
  schedule = parallel.replicate(exp.mesh, exp.schedule)
  hooks = []
  progress = Progress(total, writer if is_main else None)
  if is_main and config.train.profile:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=5))

  batches = parallel.prefetch(exp.mesh, exp.dataset.train_iter(
      task.views, labelled_only=task.labelled_only, start_step=start_step))
  window, summary, history = [], {}, []
  seen_nonfinite = int(jax.device_get(state.nonfinite.skipped))
  preempted = False
  t0 = time.time()
  with preemption.current().watch() as stopper, _waiting_for(manager):
    preempted = stopper.stop_before_start(start_step, manager.directory)
    for step in range(start_step + 1, total + 1) if not preempted else ():
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(batches), frozen, schedule)
      window.append(metrics)
      for hook in hooks:
        hook(step)
      last = step == total
      if itstime(step, config.train.log_every_steps, total, last=True):
        seen_nonfinite = _check_nonfinite(state, config, seen_nonfinite)
        summary = _flush_metrics(window, step, writer)
        history.append(dict(summary, step=step,
                            seconds=time.time() - started))
        window = []
        progress.report(step, summary)
      # The last step's evaluations are the final ones, after the loop.
      for name, evaluator in evals.items():
        if itstime(step, evaluator.every_steps, total, last=False):
          results = evaluator(_variables(state))
          writer.write_scalars(step, {'eval/' + k: v for k, v in results.items()})
          logging.info('Step %d: %s.', step, _describe(name, results, exp))
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
    if not preempted and evals:
      preempted = stopper.stop_before_final_eval(int(jax.device_get(state.step)))
  train_seconds = time.time() - t0
  result = {'step': int(jax.device_get(state.step)), 'start_step': start_step,
            'preempted': preempted, 'nonfinite_steps': seen_nonfinite,
            'history': history, 'train_seconds': train_seconds}
  result.update({'train/' + k: v for k, v in summary.items()})
  if not preempted:
    for name, evaluator in evals.items():
      results = evaluator(_variables(state))
      writer.write_scalars(result['step'],
                           {'eval/' + k: v for k, v in results.items()})
      result.update({'eval/' + k: v for k, v in results.items()})
      logging.info('Final %s.', _describe(name, results, exp))
  writer.flush()
  manager.close()
  return result


def run_eval(exp: Experiment, workdir: str) -> dict:
  """mode=eval: the evaluators of config.evals on a checkpoint
  (config.init_checkpoint, else the workdir's newest)."""
  config, task = exp.config, exp.task
  weights = exp.init_weights or checkpoint.load_weights(workdir)
  if weights['config'] is None:
    weights = dict(weights, config=config)
  task.for_weights(weights)
  evals = evaluators.from_config(config, model=task.model, mesh=exp.mesh,
                                 dataset=exp.dataset,
                                 logits_key=task.logits_key)
  if not evals:
    raise UserError(
        f'Nothing to evaluate in {config.init_checkpoint or workdir!r}: it has '
        'no classifier head (or the dataset no labels) and config.evals.knn.k'
        ' is 0; set --config.evals.knn.k=20 for a k-NN evaluation of h.')
  variables = parallel.replicate(exp.mesh, {
      'params': weights['params'], 'batch_stats': weights['batch_stats']})
  results = {}
  for name, evaluator in evals.items():
    found = evaluator(variables)
    logging.info('Eval of %s: %s.', config.init_checkpoint or workdir,
                 _describe(name, found, exp))
    results.update(found)
  return {'eval/' + k: v for k, v in results.items()}
