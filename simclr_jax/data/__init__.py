"""Input pipelines: augmentations, datasets by name, sharded batches."""

from simclr_jax.data.augment import augment_finetune
from simclr_jax.data.augment import augment_pretrain
from simclr_jax.data.augment import preprocess_eval
from simclr_jax.data.augment import sample_crop_window
from simclr_jax.data.augment import sample_decisions
from simclr_jax.data.pipeline import DatasetInfo
from simclr_jax.data.pipeline import class_names
from simclr_jax.data.pipeline import get_dataset_info
from simclr_jax.data.pipeline import label_fraction_indices
from simclr_jax.data.pipeline import make_eval_iterator
from simclr_jax.data.pipeline import make_train_iterator
from simclr_jax.data.pipeline import keep_tf_off_accelerators
