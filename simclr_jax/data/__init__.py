"""Input pipelines: where examples come from (`sources`), how they become
views (`augment`, `device_augment`), and the per-process batches of a
dataset opened once (`iterators.Dataset`)."""

from simclr_jax.data.augment import AugmentParams
from simclr_jax.data.augment import Views
from simclr_jax.data.iterators import Dataset
from simclr_jax.data.iterators import DatasetInfo
from simclr_jax.data.iterators import keep_tf_off_accelerators
from simclr_jax.data.sources import class_names
from simclr_jax.data.sources import label_fraction_indices
