"""Base configuration: every field the framework reads, with SimCLR's defaults.

Other configs import this one and override only what differs. The `arg` string
follows big_vision: comma-separated flags, e.g. `runlocal` shrinks everything
for a quick local run.
"""

import ml_collections


def parse_arg(arg, **defaults):
  """Parses 'a,b=2' into a ConfigDict with typed defaults (big_vision style)."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r}; known: {sorted(defaults)}')
    kind = type(defaults[key])
    if kind is bool:
      parsed[key] = value.lower() in ('', '1', 'true', 'yes')
    else:
      parsed[key] = kind(value)
  return parsed


def get_config(arg=None):
  """Returns the base config (pretraining SimCLR on the embedded digits data)."""
  del arg
  config = ml_collections.ConfigDict()
  # pretrain | finetune | linear_eval | supervised | distill | eval | export
  # (one simclr_jax.tasks.Task each; export is `simclr-jax export`).
  config.mode = 'pretrain'
  config.seed = 0
  # Weights-only checkpoint (a workdir or a checkpoint step dir) to start from.
  config.init_checkpoint = ''
  # Allow a run in a workdir whose saved config has a different model.
  config.allow_config_change = False

  # ---- Data -----------------------------------------------------------------
  config.dataset = 'digits'        # tfds name, 'digits', or 'folder:/path'.
  config.data_dir = ''             # '' = tfds default (~/tensorflow_datasets).
  config.train_split = 'train'
  config.eval_split = 'test'
  config.image_size = 32
  # Fraction of the train split's labels used by finetune / the probe.
  # For imagenet2012, 0.01 and 0.1 use the official imagenet2012_subset lists.
  config.label_fraction = 1.0
  config.label_fraction_seed = 0
  config.shuffle_buffer = 10_000
  config.cache_train = False       # Cache decoded train images in memory.

  # ---- Augmentation (SimCLR recipe) ----------------------------------------
  aug = config.augment = ml_collections.ConfigDict()
  aug.crop_area_min = 0.08
  aug.crop_area_max = 1.0
  aug.crop_aspect_min = 3 / 4
  aug.crop_aspect_max = 4 / 3
  aug.crop_min_object_covered = 0.1
  aug.crop_max_attempts = 100
  aug.flip_prob = 0.5
  aug.color_jitter_prob = 0.8
  # None = auto: 1.0, or 0.5 for small images (image_size <= 32).
  aug.color_jitter_strength = ml_collections.FieldReference(None, field_type=float)
  aug.color_drop_prob = 0.2
  # None = auto: on, or off for small images (image_size <= 32).
  aug.use_blur = ml_collections.FieldReference(None, field_type=bool)
  aug.blur_prob = 0.5
  aug.blur_sigma_min = 0.1
  aug.blur_sigma_max = 2.0
  aug.eval_crop_proportion = 0.875
  # Run colour jitter, colour drop and blur inside the jitted train step
  # (pretraining only): the host then crops, flips and ships uint8. Use it when
  # the host pipeline cannot keep the accelerators fed (docs/benchmarks.md).
  # Same distributions, different random streams than the host version.
  aug.on_device = False

  # ---- Model ----------------------------------------------------------------
  model = config.model = ml_collections.ConfigDict()
  model.depth = 50
  model.width_multiplier = 1.0     # Channels = int(64 * width) in the stem.
  model.sk_ratio = 0.0
  model.se_ratio = 0.0
  # None = auto: CIFAR stem when image_size <= 32.
  model.cifar_stem = ml_collections.FieldReference(None, field_type=bool)
  model.proj_head_mode = 'nonlinear'  # none | linear | nonlinear
  model.num_proj_layers = 2
  model.proj_out_dim = 128
  model.ft_proj_selector = 0
  model.fine_tune_after_block = -1
  model.zero_init_logits_layer = False
  model.global_bn = True
  model.dtype = 'float32'          # Compute dtype; params stay float32.
  # How convolutions are computed: 'xla' (native), 'matmul' (dot / im2col,
  # faster on XLA:CPU), 'auto' = matmul on CPU, xla on GPU/TPU. Same
  # parameters either way: not part of the model a workdir pins.
  model.conv_impl = 'auto'

  # ---- Training -------------------------------------------------------------
  train = config.train = ml_collections.ConfigDict()
  train.batch_size = 256           # Global batch, all devices of all hosts.
  train.epochs = 100.0
  train.steps = 0                  # > 0 overrides epochs.
  train.optimizer = 'lars'         # lars | momentum | adamw
  train.learning_rate = 0.3        # Base rate, scaled by lr_scaling.
  train.lr_scaling = 'linear'      # linear (x B/256) | sqrt (x sqrt(B)) | none
  train.warmup_epochs = 10.0
  train.weight_decay = 1e-6
  train.momentum = 0.9
  train.lars_trust_coefficient = 0.001
  train.temperature = 0.1
  train.hidden_norm = True
  train.lineareval_while_pretraining = True
  train.log_every_steps = 50
  train.checkpoint_every_steps = 1000
  train.keep_checkpoints = 3
  train.profile = False
  train.nonfinite = 'stop'         # stop | skip

  # ---- Evaluators (simclr_jax/evaluators.py) --------------------------------
  # Each runs every `every_steps` during training (0 = not periodically), and
  # all of them after the last step and in mode=eval.
  evals = config.evals = ml_collections.ConfigDict()
  evals.batch_size = 256           # Global batch of every evaluation pass.
  # Top-1/top-5 of the task's classifier (supervised head or online probe).
  evals.accuracy = ml_collections.ConfigDict({'every_steps': 0})
  # Cosine k-NN on h, train split as memory; k = 0 turns it off.
  evals.knn = ml_collections.ConfigDict({'every_steps': 0, 'k': 0})

  # ---- SimCLRv2 memory of negatives (MoCo style), off when size == 0 -------
  memory = config.memory = ml_collections.ConfigDict()
  memory.size = 0
  memory.ema_decay = 0.999

  # ---- Distillation -----------------------------------------------------------
  distill = config.distill = ml_collections.ConfigDict()
  distill.teacher_checkpoint = ''
  distill.temperature = 1.0
  distill.alpha = 0.0              # Weight of the supervised loss on labels.
  return config
