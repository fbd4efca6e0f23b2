"""simclr-jax: train, evaluate and export SimCLR / SimCLRv2 models.

  simclr-jax [train] --config=CONFIG[:ARG] --workdir=DIR [--config.FIELD=VALUE ...]
  simclr-jax export --workdir=DIR --output=EXPORT_DIR
  simclr-jax import --source=SAVED_MODEL_OR_CKPT --output=EXPORT_DIR

CONFIG is a config file path, or the name of a config shipped with the package
(`digits`, `cifar10`, `imagenet_simclr_r50`, ...; `configs/digits.py` works
from any directory). Without --config the embedded default (`digits`) runs.
`import` converts official SimCLR TF2 weights (docs/official_weights.md).
`python -m simclr_jax.main` is the same command. Flags and hand-off only; the
work is in `train.train_and_evaluate`.
"""

import difflib
import importlib.util
import logging as std_logging
import os
import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

from simclr_jax import configs
from simclr_jax import console, paths, preemption
from simclr_jax.errors import EXIT_USAGE, UserError

COMMANDS = ('train', 'export', 'import')
FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and '
                               'TensorBoard summaries (local path or gs://).')
_OUTPUT = flags.DEFINE_string('output', None, 'export, import: output directory.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'export: replace an '
                               'existing export at --output.')
_SOURCE = flags.DEFINE_string('source', None, 'import: an official SimCLR TF2 '
                              'SavedModel directory or checkpoint prefix.')
_FT_PROJ_SELECTOR = flags.DEFINE_integer(
    'ft_proj_selector', None, 'import: the projection layer a fine-tuned '
    "checkpoint's head reads (training checkpoints cannot tell).")
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of '
                                   'process 0 for multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a '
                                      'multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', '~/.cache/simclr_jax/xla',
    'JAX persistent compilation cache, so that a resumed or repeated run does '
    'not compile again ("" disables it).')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file or packaged config name, with an optional '
    ':arg, e.g. digits:runlocal or configs/digits.py:runlocal.',
    lock_config=True)
_FLAGS_SHOWN_IN_HELP = ('config', 'workdir', 'output', 'overwrite', 'source',
                        'ft_proj_selector', 'coordinator_address',
                        'num_processes', 'process_id', 'compilation_cache_dir')


def _with_resolved_config(argv: list[str]) -> list[str]:
  """argv with --config made absolute, or the packaged default added."""
  out, found = list(argv[:1]), False
  args = iter(argv[1:])
  for a in args:
    if a.startswith('--config='):
      a, found = '--config=' + configs.find(a[len('--config='):]), True
    elif a == '--config':
      a, found = '--config=' + configs.find(next(args, '')), True
    out.append(a)
  if not found:
    from simclr_jax import default_config_path  # pylint: disable=g-import-not-at-top
    out.insert(1, f'--config={default_config_path()}')
  return out


def _load_config_file(spec: str):
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_simclr_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _override_problem(argv: list[str]) -> str | None:
  """Names the first `--config.a.b=v` whose field does not exist."""
  spec = next(a[len('--config='):] for a in argv if a.startswith('--config='))
  try:
    config = _load_config_file(spec)
  except Exception as e:  # pylint: disable=broad-except
    return f'Config {spec} fails to load: {type(e).__name__}: {e}'
  for a in argv:
    if not a.startswith('--config.'):
      continue
    field = a[len('--config.'):].partition('=')[0]
    node, done = config, []
    for part in field.split('.'):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        close = difflib.get_close_matches(part, keys, n=1)
        where = 'config.' + '.'.join(done + [part])
        suggestion = (f'; did you mean config.{".".join(done + close)}?'
                      if close else '')
        return f'Unknown config field {where} (from {a}){suggestion}'
      node, done = node[part], done + [part]
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with every mistake reported in one line."""
  try:
    return FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    message = _override_problem(argv) or ' '.join(
        str(e).replace('\\n', ' ').split())
    _exit_with_error(UserError(message, hint='simclr-jax --help lists the '
                               'flags; simclr_jax/configs/default.py lists every field.'))


def _exit_with_error(error: UserError) -> None:
  print(f'simclr-jax: error: {error}', file=sys.stderr)
  if getattr(error, 'hint', None):
    print(f'  hint: {error.hint}', file=sys.stderr)
  sys.exit(EXIT_USAGE)


class _OnlyThisPackage(std_logging.Filter):
  """Keeps simclr_jax's lines and other packages' warnings and errors: orbax,
  tfds, clu and JAX report every internal step at INFO. Known notices that
  need no action from a user (deprecations inside tfds) are dropped too."""

  HARMLESS = ('is deprecated', 'has no dataset_info.json', 'read_only=True',
              'directory is read only')

  def filter(self, record):
    if f'{os.sep}simclr_jax{os.sep}' in record.pathname:
      return True
    return (record.levelno >= std_logging.WARNING and
            not any(h in record.getMessage() for h in self.HARMLESS))


def _quiet_console() -> None:
  if FLAGS.verbosity > 0:
    return
  logging.get_absl_handler().addFilter(_OnlyThisPackage())
  for category in (DeprecationWarning, FutureWarning, UserWarning):
    warnings.filterwarnings('ignore', category=category)


def _import_tensorflow_quietly() -> None:
  """TensorFlow runs only the input pipeline. Its C++ start-up notices
  (oneDNN, CPU features) ignore TF_CPP_MIN_LOG_LEVEL and are written while
  the library loads, so stderr is closed for the import alone."""
  with console.stderr_silenced():
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import


def _start(command: str) -> None:
  """Process-wide settings, then the distributed runtime (before any JAX call)."""
  if FLAGS.verbosity <= 0:
    _import_tensorflow_quietly()
  import jax  # pylint: disable=g-import-not-at-top
  from simclr_jax import parallel  # pylint: disable=g-import-not-at-top
  if _CACHE_DIR.value and not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(_CACHE_DIR.value))
  if command == 'train':
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value)


def main(argv):
  if len(argv) > 2:
    raise UserError(f'Unexpected arguments: {" ".join(argv[2:])}.')
  command = argv[1] if len(argv) > 1 else 'train'
  if command not in COMMANDS:
    raise UserError(f'Unknown command {command!r}; use one of: '
                    f'{", ".join(COMMANDS)}.')
  if command == 'import':
    if not _SOURCE.value or not _OUTPUT.value:
      raise UserError('import needs --source=PATH and --output=DIR.')
    _start(command)
    from simclr_jax import official  # pylint: disable=g-import-not-at-top
    print(official.format_report(official.import_official(
        paths.resolve(_SOURCE.value), paths.resolve(_OUTPUT.value),
        ft_proj_selector=_FT_PROJ_SELECTOR.value)))
    return
  config = _CONFIG.value
  if config.get('mode') == 'export':
    command = 'export'
  workdir = paths.resolve_workdir(_WORKDIR.value)
  _start(command)
  if command == 'export':
    if not _OUTPUT.value:
      raise UserError('export needs --output=DIR.')
    from simclr_jax import export  # pylint: disable=g-import-not-at-top
    output = paths.resolve(_OUTPUT.value)
    export.export_workdir(workdir, output, overwrite=_OVERWRITE.value)
    print(export.summary(output))
    return
  from simclr_jax import train  # pylint: disable=g-import-not-at-top
  result = train.train_and_evaluate(config, workdir)
  # Interrupted runs exit with their own code (simclr_jax/preemption.py).
  return preemption.EXIT_PREEMPTED if result.get('preempted') else 0


def _print_help() -> None:
  print(__doc__.strip() + '\n\nFlags:')
  for name in _FLAGS_SHOWN_IN_HELP:
    flag = FLAGS[name]
    default = '' if flag.default is None else f' (default: {flag.default!r})'
    print(f'  --{name}: {flag.help}{default}')
  print('  --verbosity=1: debug logging, every library\'s messages, and '
        'tracebacks for mistakes')
  print('  --config.FIELD=VALUE: override a config field, e.g. '
        '--config.train.batch_size=512\n\nConfigs: ' +
        ', '.join(configs.names()))


def run(argv=None):
  """Console-script entry point (`simclr-jax`)."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in ('-h', '--help', '--helpshort', '--helpfull') for a in argv[1:]):
    _print_help()
    return
  # Signals first, so that one during flag parsing or start-up is not fatal.
  preemption.install()
  # TF runs only the input pipeline: its C++ start-up notices are noise here.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  try:
    argv = _with_resolved_config(argv)
  except UserError as e:
    _exit_with_error(e)

  def main_reporting_mistakes(args):
    _quiet_console()
    try:
      return main(args)
    except UserError as e:
      if FLAGS.verbosity > 0:
        raise
      _exit_with_error(e)

  try:
    app.run(main_reporting_mistakes, argv=argv, flags_parser=_parse_flags)
  except KeyboardInterrupt:  # A second Ctrl-C (logged by its handler).
    sys.exit(preemption.EXIT_ABORTED)


if __name__ == '__main__':
  run()
