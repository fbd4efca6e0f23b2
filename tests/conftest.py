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
# cache, so each distinct program compiles once per machine. Every program is
# cached, however quick its compile: a command-line run also compiles ~80
# small programs under 0.5 s each, which with a 0.5 s threshold each of the
# suite's command-line subprocesses compiled again (about 1.5 s of CPU each).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/simclr_jax_test_jax_cache')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

# tf.data must not grab the accelerator (there is none) or every core.
tf.config.set_visible_devices([], 'GPU')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A tfds data_dir where 'digits' is prepared once per test process."""
  return str(tmp_path_factory.mktemp('tfds'))


# ---------------------------------------------------------------------------
# Scheduling under pytest-xdist (`pytest -n 2 tests`).
#
# xdist's default `--dist load` hands each worker a contiguous chunk of about
# an eighth of the collection and then small batches, in collection order, so
# the multi-minute multi-process and command-line tests (alphabetically late)
# started last and ran alone at the tail while the other worker idled, and a
# module's tests could be split between workers (each then building the
# module's expensive fixtures). Instead, when the command line chose no
# distribution mode itself, whole files are the unit (`loadfile`) and files
# go out longest first (largest-processing-time-first), so the long files
# start at once, in parallel, and the many short files fill in behind them.
# The order is the only change: every test runs exactly as before.

# Seconds per file in one `-n 2 --durations=0` run from a cold compile cache
# on a busy 2-core machine (only their order matters); files not listed
# count as short and keep their alphabetical order after the listed ones.
FILE_SECONDS = {
    'test_multiprocess.py': 330,
    'test_preemption.py': 290,
    'test_readme.py': 155,
    'test_stages.py': 190,
    'test_official_import.py': 150,
    'test_train.py': 140,
    'test_experiments.py': 110,
    'test_reliability.py': 95,
    'test_models.py': 95,
    'test_benchmarks.py': 45,
    'test_export.py': 40,
    'test_data.py': 40,
}


def _dist_chosen_on_command_line(config):
  args = [str(a) for a in config.invocation_params.args]
  return any(a == '--dist' or a.startswith('--dist=') or a == '-d'
             or a == '--loadscope-reorder' for a in args)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
  if (getattr(config.option, 'dist', 'no') == 'load'
      and not hasattr(config, 'workerinput')
      and not _dist_chosen_on_command_line(config)):
    config.option.dist = 'loadfile'
    # Keep our order (xdist would otherwise sort files by number of tests).
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  del config
  def cost(item):
    return FILE_SECONDS.get(os.path.basename(str(item.path)), 0)
  items.sort(key=lambda item: -cost(item))  # Stable: in-file order is kept.
