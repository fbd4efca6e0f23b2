"""Command line: `python -m simclr_jax.main --config=configs/digits.py --workdir=DIR`.

Flags and hand-off only; the work is in `train.train_and_evaluate`.
`simclr-jax export --workdir=DIR --output=OUT` writes a weights-only export.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from simclr_jax import preemption

_DEFAULT_CONFIG = 'configs/digits.py'
FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and '
                               'TensorBoard summaries (local path or gs://).')
_OUTPUT = flags.DEFINE_string('output', None, 'export: output directory.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of '
                                   'process 0 for multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a '
                                      'multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', '~/.cache/simclr_jax/xla',
    'JAX persistent compilation cache, so that a resumed or repeated run does '
    'not compile again ("" disables it).')
config_flags.DEFINE_config_file('config', None, 'Config file (with optional '
                                ':arg), e.g. configs/digits.py:runlocal.',
                                lock_config=True)


def _resolve_default_config(argv):
  """Uses the embedded default config (packaged) when --config is not given."""
  if not any(a.startswith('--config=') or a == '--config' for a in argv):
    from simclr_jax import default_config_path  # pylint: disable=g-import-not-at-top
    argv = argv[:1] + [f'--config={default_config_path()}'] + argv[1:]
  return argv


def main(argv):
  command = argv[1] if len(argv) > 1 else 'train'
  if command not in ('train', 'export'):
    raise app.UsageError(f'Unknown command {command!r}; use train or export.')
  from simclr_jax import parallel  # pylint: disable=g-import-not-at-top
  if _CACHE_DIR.value:
    import jax  # pylint: disable=g-import-not-at-top
    import os  # pylint: disable=g-import-not-at-top
    if not jax.config.jax_compilation_cache_dir:
      jax.config.update('jax_compilation_cache_dir',
                        os.path.expanduser(_CACHE_DIR.value))
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required.')
  config = FLAGS.config
  if command == 'export' or config.mode == 'export':
    if not _OUTPUT.value:
      raise app.UsageError('export needs --output.')
    from simclr_jax import export  # pylint: disable=g-import-not-at-top
    export.export_workdir(_WORKDIR.value, _OUTPUT.value)
    return
  from simclr_jax import train  # pylint: disable=g-import-not-at-top
  logging.info('Config:\n%s', config)
  result = train.train_and_evaluate(config, _WORKDIR.value)
  # Interrupted runs exit with their own code (simclr_jax/preemption.py).
  return preemption.EXIT_PREEMPTED if result.get('preempted') else 0


def run():
  """Console-script entry point (`simclr-jax`)."""
  # Signals first, so that one during flag parsing or start-up is not fatal.
  preemption.install()
  try:
    app.run(main, argv=_resolve_default_config(sys.argv))
  except KeyboardInterrupt:  # A second Ctrl-C (logged by its handler).
    sys.exit(preemption.EXIT_ABORTED)


if __name__ == '__main__':
  run()
