"""Test setup: 8 fake CPU devices, set before JAX starts; no network."""

import os

import pytest

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['NO_GCE_CHECK'] = 'true'
# XLA:CPU compiles of even a tiny ResNet take seconds; tests (and the
# subprocesses they start) share compiled programs through JAX's persistent
# cache, so each distinct program compiles once per machine.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/simclr_jax_test_jax_cache')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

# tf.data must not grab the accelerator (there is none) or every core.
tf.config.set_visible_devices([], 'GPU')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A tfds data_dir where 'digits' is prepared once per test process."""
  return str(tmp_path_factory.mktemp('tfds'))
