"""The README's walk-through runs, command by command, as written.

The blocks between `<!-- walkthrough:start -->` and `<!-- walkthrough:end -->`
run in order with one documented transformation to quick size:
  * `:runlocal` is added to each `--config=FILE[:args]` (`,runlocal` after
    existing arguments);
  * the root `/tmp/simclr_digits` of every path becomes a temporary directory;
  * training commands get `--config.data_dir=<the tests' tfds dir>`;
  * `python` is this interpreter (`simclr-jax` is `python -m simclr_jax.main`).
Anything else (a renamed config, a wrong flag, a broken chain of workdirs, an
API change under the Python snippet) fails here.
"""

import importlib
import os
import re
import shlex
import subprocess
import sys

from tiny import PROCESS_TIMEOUT_S

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
ROOT = '/tmp/simclr_digits'
# The stages the walk-through must show, in this order.
STAGES = ('pretrain', 'linear_eval', 'finetune', 'distill', 'eval', 'export',
          'load_pretrained')


def walkthrough_blocks(text):
  """[(language, code)] of the fenced blocks inside the walk-through markers."""
  match = re.search(r'<!-- walkthrough:start -->(.*?)<!-- walkthrough:end -->',
                    text, re.S)
  assert match, 'README.md has no walk-through markers'
  return re.findall(r'```(\w+)\n(.*?)```', match.group(1), re.S)


def shell_commands(code):
  """The commands of a bash block: comments dropped, continuations joined."""
  code = re.sub(r'\\\n', ' ', code)
  lines = (line.split('#', 1)[0].strip() for line in code.splitlines())
  return [shlex.split(line) for line in lines if line]


def quick(argv, tmp_root, data_dir):
  """The documented transformation of one README command (see the module)."""
  if argv[:3] == ['python', '-m', 'simclr_jax.main']:
    argv = argv[3:]
  elif argv[:1] == ['simclr-jax']:
    argv = argv[1:]
  else:
    raise AssertionError(f'not a simclr_jax command: {shlex.join(argv)}')
  out = [sys.executable, '-m', 'simclr_jax.main']
  for arg in argv:
    arg = arg.replace(ROOT, tmp_root)
    if arg.startswith('--config='):
      arg += ',runlocal' if ':' in arg else ':runlocal'
    out.append(arg)
  if 'export' not in argv:
    out.append(f'--config.data_dir={data_dir}')
  return out


def stage_of(argv):
  if 'export' in argv:
    return 'export'
  config = next(a for a in argv if a.startswith('--config='))
  name = os.path.basename(config.split('=', 1)[1].split(':')[0])
  return {'digits.py': 'pretrain'}.get(name, name[len('digits_'):-len('.py')])


def test_walkthrough_parses_and_covers_every_stage():
  blocks = walkthrough_blocks(open(README).read())
  stages = []
  for language, code in blocks:
    if language == 'bash':
      stages += [stage_of(argv) for argv in shell_commands(code)]
    else:
      assert language == 'python'
      stages.append('load_pretrained' if 'load_pretrained(' in code else '?')
  ordered = [s for s in stages if s in STAGES]
  assert ordered == list(STAGES), stages


def test_quick_transformation():
  argv = shlex.split('python -m simclr_jax.main --config=configs/digits_eval.py'
                     ':init=/tmp/simclr_digits_ft --workdir=/tmp/simclr_digits')
  assert quick(argv, '/t/x', '/d')[1:] == [
      '-m', 'simclr_jax.main', '--config=configs/digits_eval.py:init=/t/x_ft,'
      'runlocal', '--workdir=/t/x', '--config.data_dir=/d']
  assert quick(['simclr-jax', '--config=a.py'], '/t', '/d')[3] == (
      '--config=a.py:runlocal')


def test_walkthrough_runs_as_written(tmp_path, data_dir, capsys):
  tmp_root = str(tmp_path / 'simclr_digits')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  for language, code in walkthrough_blocks(open(README).read()):
    if language == 'python':
      code = code.replace(ROOT, tmp_root)
      exec(compile(code, 'README.md (walk-through)', 'exec'), {})  # pylint: disable=exec-used
      printed = capsys.readouterr().out
      # h's shape, then the agreement of the predictions with the labels.
      shape, agreement = printed.strip().splitlines()[-2:]
      assert re.fullmatch(r'\(1797, \d+\)', shape), printed
      assert 0 <= float(agreement) <= 1, printed
      continue
    for argv in shell_commands(code):
      command = quick(argv, tmp_root, data_dir)
      proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=PROCESS_TIMEOUT_S)
      assert proc.returncode == 0, (shlex.join(command), proc.stderr[-3000:])
      stage = stage_of(argv)
      workdir = next(a.split('=', 1)[1] for a in command
                     if a.startswith('--workdir='))
      if stage == 'export':
        output = next(a.split('=', 1)[1] for a in command
                      if a.startswith('--output='))
        assert f'-> {output}' in proc.stdout, proc.stdout
      elif stage != 'eval':
        assert os.listdir(os.path.join(workdir, 'checkpoints')), stage


def _table_first_column(text, heading):
  """The backquoted first cells of the table after `heading`."""
  section = text.split(heading, 1)[1]
  rows = re.findall(r'^\| `([^`]+)`', section.split('\n\n|', 1)[1].split(
      '\n\n', 1)[0], re.M)
  return rows


def test_configs_table_lists_every_config_and_each_validates():
  from simclr_jax import config_validation  # pylint: disable=g-import-not-at-top
  text = open(README).read()
  listed = _table_first_column(text, '## Configs')
  folder = os.path.join(REPO, 'simclr_jax', 'configs')
  files = sorted(f'configs/{f}' for f in os.listdir(folder)
                 if f.endswith('.py') and f != '__init__.py')
  assert sorted(listed) == files
  for path in files:
    name = os.path.basename(path)[:-3]
    if name == 'imported':  # Reads an import's output: test_official_import.
      continue
    config = importlib.import_module(f'simclr_jax.configs.{name}').get_config()
    if config.mode in ('finetune', 'linear_eval', 'eval'):
      config.init_checkpoint = '/a/workdir'
    if config.mode == 'distill':
      config.distill.teacher_checkpoint = '/a/workdir'
    assert config_validation.find_problems(config) == [], path


def test_mode_table_lists_every_mode_with_a_digits_recipe():
  from simclr_jax import tasks  # pylint: disable=g-import-not-at-top
  text = open(README).read()
  assert sorted(_table_first_column(text, 'selects the job')) == sorted(
      tasks.MODES)
  recipes = re.findall(r'\| `(digits[a-z_]*)\.py` \|\n', text)
  covered = {importlib.import_module(f'simclr_jax.configs.{r}').get_config(
      'runlocal').mode for r in recipes}
  assert covered == set(tasks.MODES) - {'export'}
