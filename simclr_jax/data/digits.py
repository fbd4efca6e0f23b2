"""A tiny real image dataset that needs no download: sklearn's 8x8 digits.

It lets the whole framework (pretraining, finetuning, evaluation) run end to
end on a laptop in seconds, through exactly the same tfds reading path as the
large datasets. sklearn ships the 1797 images inside the package, so preparing
the dataset never touches the network.
"""

import contextlib
import io
import warnings

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

# `config.dataset = 'digits'` maps to this tfds name; 'digits' alone could
# collide with datasets registered by other tfds versions or community code.
TFDS_NAME = 'simclr_digits'
NUM_TEST = 540


def load_digits_uint8():
  """Returns (images uint8 [1797, 8, 8, 1], labels int64 [1797])."""
  from sklearn import datasets  # Imported lazily: only needed to prepare.
  digits = datasets.load_digits()
  # Pixel values are counts 0..16 of a 4x4 block; spread them over 0..255.
  images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
  return images[..., None], digits.target.astype(np.int64)


def split_indices():
  """Fixed stratified split so that results are comparable across runs."""
  from sklearn import model_selection
  _, labels = load_digits_uint8()
  train_idx, test_idx = model_selection.train_test_split(
      np.arange(len(labels)), test_size=NUM_TEST, stratify=labels,
      random_state=0)
  return np.sort(train_idx), np.sort(test_idx)


class SimclrDigits(tfds.core.GeneratorBasedBuilder):
  """sklearn's digits as a tfds dataset: 1257 train / 540 test, 8x8x1."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description='UCI optical digits (sklearn.datasets.load_digits), 8x8 '
                    'grayscale, values 0..16 rescaled to 0..255.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1),
                                         encoding_format='png'),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from the sklearn package.
    train_idx, test_idx = split_indices()
    return {
        'train': self._generate_examples(train_idx),
        'test': self._generate_examples(test_idx),
    }

  def _generate_examples(self, indices):
    images, labels = load_digits_uint8()
    for index in indices:
      # Keyed by the position in load_digits() so ordering is reproducible.
      yield int(index), {'image': images[index], 'label': int(labels[index])}


def prepare(data_dir=None):
  """Returns the digits builder, preparing it into `data_dir` if needed."""
  builder = SimclrDigits(data_dir=data_dir or None)
  if not builder.is_prepared():
    # tfds narrates a download (stdout, progress bars) that does not happen.
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(
        quiet), warnings.catch_warnings():
      warnings.simplefilter('ignore')
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              compute_stats=tfds.download.ComputeStatsMode.SKIP,
              try_download_gcs=False))
    logging.info('Prepared the digits dataset (from scikit-learn) in %s.',
                 builder.data_dir)
  return builder
