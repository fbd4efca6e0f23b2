"""What each mode trains, and how: one `Task` per `config.mode`.

`for_config` picks the task once (the only place the mode is read, besides
config validation); the trainer (`train.py`) and the data handle (`data/`)
then ask the task, never the mode. A task owns its model variant (heads,
frozen blocks), its trainable mask, its training views, what every step
needs besides the batch (teacher logits, the memory queue), its loss and
memory update, and which classifier evaluation reads. Adding a mode is
writing one subclass and registering it in `TASKS` (docs/architecture.md).
"""

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from simclr_jax import checkpoint, losses, models
from simclr_jax.data import augment, device_augment
from simclr_jax.data.augment import Views
from simclr_jax.errors import UserError
from simclr_jax.parallel import DATA_AXIS

# Random streams folded into jax.random.key(config.seed) (init uses it as is).
_DEVICE_AUGMENT_STREAM = 1


def device_augment_key(seed, step):
  """The on-device augmentation key of this step on this device (inside
  shard_map): a stream per (seed, step, device), so a resumed run repeats it."""
  rng = jax.random.fold_in(jax.random.key(seed), _DEVICE_AUGMENT_STREAM)
  return jax.random.fold_in(jax.random.fold_in(rng, step),
                            jax.lax.axis_index(DATA_AXIS))


def describe_model(model_config) -> str:
  sk = '+SK' if model_config.sk_ratio > 0 else ''
  return (f'ResNet-{model_config.depth} {model_config.width_multiplier:g}x'
          f'{sk}')


def _classification_metrics(logits, labels, mask, axis_name):
  correct = losses.topk_correct(logits, jnp.maximum(labels, 0), 1)
  return {'train_top1': losses.masked_mean(correct, mask, axis_name)}


class Task:
  """A training mode. Subclasses override what differs from supervised
  training of the supervised head on one crop-and-flip view per image."""
  name = ''
  trains = True
  # Train on the examples inside config.label_fraction only.
  labelled_only = False
  # Start from config.init_checkpoint (required).
  needs_init_checkpoint = False
  # Model output that the accuracy evaluator reads ('' = no classifier).
  logits_key = 'sup_logits'
  # What the final log line calls that accuracy.
  result_name = ''

  def __init__(self, config: ml_collections.ConfigDict, info):
    self.config = config
    self.info = info
    if self.labelled_only and info.num_train_labelled == 0:
      raise UserError(
          f'config.mode={self.name!r} needs labels but the train split '
          f'{config.train_split!r} of {config.dataset!r} has none.')
    self.model_config = self.adjust_model(
        ml_collections.ConfigDict(config.model.to_dict()))
    self.model = models.SimCLR(**self.model_config, **self.heads(),
                               num_classes=max(info.num_classes, 1))

  # ---- Model ---------------------------------------------------------------
  def adjust_model(self, model_config):
    """config.model as this task trains it."""
    return model_config

  def heads(self) -> dict:
    return {'supervised_head': True, 'linear_probe': False}

  def trainable(self, params):
    """Pytree of bools: which parameters the optimiser moves."""
    return models.trainable_mask(params, self.model_config)

  # ---- Input ----------------------------------------------------------------
  @property
  def views(self) -> Views:
    """How the data handle turns one training image into views."""
    return augment.FINETUNE_VIEWS

  @property
  def epoch_size(self) -> int:
    """Training examples in one epoch (plans the steps)."""
    return (self.info.num_train_labelled if self.labelled_only
            else self.info.num_train_examples)

  def device_views(self, images, seed, step):
    """The step's model input from the batch's images (on the device)."""
    del seed, step
    return images

  # ---- Step -----------------------------------------------------------------
  def frozen_variables(self) -> dict:
    """Host variables every step reads but never changes (a teacher)."""
    return {}

  def init_memory(self, params, batch_stats) -> dict:
    del params, batch_stats
    return {}

  def step_inputs(self, x, memory, frozen) -> dict:
    """What the loss needs besides the model's outputs and the batch."""
    del x, memory, frozen
    return {}

  def loss(self, out, batch, inputs, axis_name):
    """(loss share of this device, metrics) from the model outputs."""
    del inputs
    loss = losses.cross_entropy(out['sup_logits'], batch['labels'],
                                batch['label_mask'], axis_name)
    metrics = _classification_metrics(out['sup_logits'], batch['labels'],
                                      batch['label_mask'], axis_name)
    return loss, dict(metrics, sup_loss=loss)

  def update_memory(self, memory, params, batch_stats, x):
    del params, batch_stats, x
    return memory


class Pretrain(Task):
  """SimCLR(v2) pretraining: NT-Xent on z over two views of every image, the
  online linear probe on a stop-gradient h, and SimCLRv2's optional memory."""
  name = 'pretrain'
  result_name = 'linear-probe'
  logits_key = 'probe_logits'

  def __init__(self, config, info):
    self.probe = config.train.lineareval_while_pretraining
    if self.probe and not info.num_classes:
      logging.info('%s has no labels: pretraining without the online linear '
                   'probe.', config.dataset)
      self.probe = False
    if not self.probe:
      self.logits_key = ''
    self.colors_on_device = config.augment.on_device
    self.augment_params = augment.AugmentParams.from_config(config.augment)
    super().__init__(config, info)

  def heads(self):
    return {'supervised_head': False, 'linear_probe': self.probe}

  @property
  def views(self):
    return augment.pretrain_views(self.colors_on_device)

  def device_views(self, images, seed, step):
    if not self.colors_on_device:
      return images
    return device_augment.augment_views(
        images, device_augment_key(seed, step), self.augment_params,
        self.config.image_size)

  def init_memory(self, params, batch_stats):
    size = self.config.memory.size
    if not size:
      return {}
    out_dim = (self.model_config.proj_out_dim
               if self.model_config.proj_head_mode != 'none'
               else models.encoder_output_dim(self.model_config))
    # The EMA encoder, the queue [K, d] (newest first) and its filled rows.
    return {'params': params, 'batch_stats': batch_stats,
            'queue': jnp.zeros((size, out_dim), jnp.float32),
            'filled': jnp.int32(0)}

  def step_inputs(self, x, memory, frozen):
    if not memory:
      return {}
    queue = memory['queue']
    return {'queue': queue,
            'queue_valid': jnp.arange(queue.shape[0]) < memory['filled']}

  def loss(self, out, batch, inputs, axis_name):
    z1, z2 = jnp.split(out['z'], 2, axis=0)
    loss, metrics = losses.nt_xent(
        z1, z2, temperature=self.config.train.temperature,
        hidden_norm=self.config.train.hidden_norm, axis_name=axis_name,
        queue=inputs.get('queue'), queue_valid=inputs.get('queue_valid'))
    metrics = dict(metrics, contrast_loss=loss)
    if self.probe:
      # Both views carry the image's label, as the official code.
      labels = jnp.concatenate([batch['labels']] * 2)
      mask = jnp.concatenate([batch['label_mask']] * 2)
      probe_loss = losses.cross_entropy(out['probe_logits'], labels, mask,
                                        axis_name)
      loss = loss + probe_loss
      metrics['probe_loss'] = probe_loss
      metrics.update({'probe_' + k: v for k, v in _classification_metrics(
          out['probe_logits'], labels, mask, axis_name).items()})
    return loss, metrics

  def update_memory(self, memory, params, batch_stats, x):
    """EMA of the weights, and the first views' global keys pushed onto the
    queue (newest first; the oldest fall off the end)."""
    if not memory:
      return memory
    decay = self.config.memory.ema_decay
    ema = jax.tree.map(lambda e, p: decay * e + (1. - decay) * p,
                       {'params': memory['params'],
                        'batch_stats': memory['batch_stats']},
                       {'params': params, 'batch_stats': batch_stats})
    first_views = x[:x.shape[0] // self.views.count]
    keys = self.model.apply(ema, first_views, train=False)['z']
    keys = losses.l2_normalize(keys.astype(jnp.float32))
    keys = jax.lax.all_gather(keys, DATA_AXIS, axis=0, tiled=True)
    queue = memory['queue']
    size = queue.shape[0]
    queue = jnp.concatenate([keys, queue], axis=0)[:size]
    filled = jnp.minimum(memory['filled'] + keys.shape[0], size)
    return dict(ema, queue=jax.lax.stop_gradient(queue), filled=filled)


class Finetune(Task):
  """SimCLRv2 fine-tuning on the label fraction, from the pretrained head's
  layer config.model.ft_proj_selector."""
  name = 'finetune'
  labelled_only = True
  needs_init_checkpoint = True
  result_name = 'finetune'


class Supervised(Finetune):
  """The same training from random initialisation (the baseline)."""
  name = 'supervised'
  needs_init_checkpoint = False
  result_name = 'supervised'


class LinearEval(Finetune):
  """Linear evaluation: a frozen encoder and a linear head on h."""
  name = 'linear_eval'
  result_name = 'linear_eval'

  def adjust_model(self, model_config):
    model_config.fine_tune_after_block = 4
    model_config.ft_proj_selector = 0
    return model_config

  def trainable(self, params):
    # Only the linear head learns; the projection head is unused.
    return {k: jax.tree.map(lambda _, k=k: k == 'sup_head', v)
            for k, v in params.items()}


class Distill(Task):
  """SimCLRv2 distillation: match a frozen fine-tuned teacher's softened
  predictions (plus config.distill.alpha x cross-entropy on labels)."""
  name = 'distill'
  result_name = 'student'

  def __init__(self, config, info):
    super().__init__(config, info)
    self.teacher_model, self._teacher_variables = self._load_teacher()

  def _load_teacher(self):
    config = self.config
    path = config.distill.teacher_checkpoint
    loaded = checkpoint.load_weights(path)
    if 'sup_head' not in loaded['params']:
      raise UserError(f'config.distill.teacher_checkpoint={path!r} has no '
                      'supervised head: the teacher must come from a '
                      'finetune run.')
    teacher_classes = models.head_num_classes(loaded['params'], 'sup_head')
    if teacher_classes != self.info.num_classes:
      raise UserError(
          f'The teacher predicts {teacher_classes} classes but dataset '
          f'{config.dataset!r} has {self.info.num_classes}.')
    teacher_config = loaded['config'].model
    model = models.SimCLR(**teacher_config, supervised_head=True,
                          linear_probe=False, num_classes=teacher_classes)
    logging.info('Teacher: %s (step %d, %s).', path, loaded['step'],
                 describe_model(teacher_config))
    return model, {'params': loaded['params'],
                   'batch_stats': loaded['batch_stats']}

  def frozen_variables(self):
    return self._teacher_variables

  def step_inputs(self, x, memory, frozen):
    return {'teacher_logits': self.teacher_model.apply(
        frozen, x, train=False)['sup_logits']}

  def loss(self, out, batch, inputs, axis_name):
    teacher_logits = inputs['teacher_logits']
    distill_loss = losses.distillation(
        out['sup_logits'], teacher_logits,
        temperature=self.config.distill.temperature, axis_name=axis_name)
    metrics = {'distill_loss': distill_loss}
    loss = distill_loss
    alpha = self.config.distill.alpha
    if alpha:
      sup = losses.cross_entropy(out['sup_logits'], batch['labels'],
                                 batch['label_mask'], axis_name)
      loss = loss + alpha * sup
      metrics['sup_loss'] = sup
    agree = (jnp.argmax(out['sup_logits'], -1) ==
             jnp.argmax(teacher_logits, -1))
    metrics['teacher_agreement'] = losses.masked_mean(
        agree.astype(jnp.float32), jnp.ones_like(agree, jnp.float32),
        axis_name)
    return loss, metrics


class Eval(Task):
  """Evaluates a checkpoint (config.init_checkpoint, else the workdir's
  newest) with the configured evaluators; trains nothing. The model is the
  checkpoint's own, with the heads it has (`for_weights`)."""
  name = 'eval'
  trains = False
  logits_key = ''

  def __init__(self, config, info):  # pylint: disable=super-init-not-called
    self.config = config
    self.info = info
    self.model_config = None
    self.model = None

  def for_weights(self, weights: dict) -> None:
    """Takes the architecture and heads of loaded weights."""
    params = weights['params']
    for head in ('sup_head', 'probe_head'):
      if head in params and (models.head_num_classes(params, head) !=
                             self.info.num_classes):
        raise UserError(
            f"The checkpoint's {head} predicts "
            f'{models.head_num_classes(params, head)} classes but dataset '
            f'{self.config.dataset!r} has {self.info.num_classes}.')
    self.model_config = weights['config'].model
    supervised, probe = 'sup_head' in params, 'probe_head' in params
    self.logits_key = ('sup_logits' if supervised else
                       'probe_logits' if probe else '')
    self.model = models.SimCLR(**self.model_config, supervised_head=supervised,
                               linear_probe=probe,
                               num_classes=max(self.info.num_classes, 1))


TASKS = {task.name: task for task in
         (Pretrain, Finetune, LinearEval, Supervised, Distill, Eval)}
# Modes `simclr-jax` accepts: the tasks, and 'export' (the export command).
MODES = tuple(TASKS) + ('export',)
TRAIN_MODES = tuple(name for name, task in TASKS.items() if task.trains)


def for_config(config, info) -> Task:
  """The task of config.mode: the one place the trainer reads the mode."""
  if config.mode not in TASKS:
    raise UserError(f"config.mode={config.mode!r} is not run by the trainer "
                    "(mode 'export' is `simclr-jax export`).")
  return TASKS[config.mode](config, info)

