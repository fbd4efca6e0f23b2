"""Launchers print exact commands (never call gcloud/sbatch here); sweeps
expand into settings with their own workdirs and logs; a local sweep queue
runs them one after another and stops on a preempted one."""

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from launch import common, local, queue, slurm, sweep, tpu_pod
from simclr_jax import preemption
from simclr_jax import sweep as sweep_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POD = ['--name=simclr', '--zone=us-central2-b', '--project=my-proj']


def _bash_ok(script: str):
  """The shell accepts it (syntax only; nothing runs)."""
  proc = subprocess.run(['bash', '-n', '-c', script], capture_output=True,
                        text=True)
  assert proc.returncode == 0, (script, proc.stderr)


def _remote(line: str) -> str:
  """The --command=... of a printed `gcloud ... ssh` line."""
  return [a for a in shlex.split(line) if a.startswith('--command=')][0][10:]


def _pod(accelerator_type, *extra, actions=('create',)):
  args = tpu_pod.parse([*actions, *POD, f'--accelerator_type={accelerator_type}',
                        '--workdir=gs://bucket/r50', '--dry_run', *extra])
  return common.execute(tpu_pod.commands(args), dry_run=True)


@pytest.mark.parametrize('accelerator_type,version', [
    ('v2-8', 'tpu-ubuntu2204-base'),
    ('v3-32', 'tpu-ubuntu2204-base'),
    ('v4-32', 'tpu-ubuntu2204-base'),
    ('v5litepod-16', 'v2-alpha-tpuv5-lite'),   # v5e
    ('v5p-8', 'v2-alpha-tpuv5'),
    ('v6e-16', 'v2-alpha-tpuv6e'),             # Trillium
])
def test_tpu_runtime_version_by_generation(accelerator_type, version):
  assert _pod(accelerator_type) == [
      'gcloud compute tpus tpu-vm create simclr --zone=us-central2-b '
      f'--project=my-proj --accelerator-type={accelerator_type} '
      f'--version={version}']
  # Spot capacity, or a queued resource (how v5e/v5p/v6e is often granted).
  assert _pod(accelerator_type, '--spot')[0].endswith(f'--version={version} --spot')
  lines = _pod(accelerator_type, '--queued', '--spot',
               actions=('create', 'delete'))
  assert lines == [
      'gcloud compute tpus queued-resources create simclr --node-id=simclr '
      f'--zone=us-central2-b --project=my-proj --accelerator-type='
      f'{accelerator_type} --runtime-version={version} --spot',
      'gcloud compute tpus queued-resources delete simclr '
      '--zone=us-central2-b --project=my-proj --force --quiet']


def test_tpu_runtime_override_and_unknown_type(capsys):
  assert _pod('v5litepod-16', '--runtime_version=v2-alpha-tpuv5-lite-x')[0] \
      .endswith('--version=v2-alpha-tpuv5-lite-x')
  with pytest.raises(SystemExit):
    _pod('v9-16')
  assert "Unknown --accelerator_type='v9-16'" in capsys.readouterr().err
  assert _pod('v9-16', '--runtime_version=img')[0].endswith('--version=img')


def test_tpu_pod_dry_run_v4_32(capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  lines = _pod('v4-32', '--config=configs/imagenet_simclr_r50.py',
               actions=('create', 'setup', 'run', 'logs', 'delete'))
  assert lines[0] == ('gcloud compute tpus tpu-vm create simclr '
                      '--zone=us-central2-b --project=my-proj '
                      '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base')
  assert lines[1] == ('gcloud compute tpus tpu-vm scp --recurse . '
                      "'simclr:~/simclr-jax' --zone=us-central2-b "
                      '--project=my-proj --worker=all')
  assert '--worker=all' in lines[2] and 'pip install -e .' in lines[2]
  run = _remote(lines[3])
  assert '--worker=all' in lines[3]
  # Config inside the copied repo, absolute on the worker; output and exit
  # code in the log; detached from the ssh session.
  assert run == (
      'cd ~/simclr-jax && nohup bash -c \'python3 -m simclr_jax.main '
      '--config="$HOME"/simclr-jax/configs/imagenet_simclr_r50.py '
      '--workdir=gs://bucket/r50 > ~/simclr_jax.log 2>&1; echo "simclr_jax '
      'exit code $?" >> ~/simclr_jax.log\' > /dev/null 2>&1 &')
  _bash_ok(run)
  assert lines[4].endswith("--worker=0 '--command=tail -f ~/simclr_jax.log'")
  assert lines[5] == ('gcloud compute tpus tpu-vm delete simclr '
                      '--zone=us-central2-b --project=my-proj --quiet')
  assert capsys.readouterr().out.count('gcloud') == 6


def test_tpu_run_needs_gcs_workdir_and_a_config_in_the_repo(tmp_path, capsys):
  with pytest.raises(SystemExit):
    tpu_pod.parse(['run', *POD, '--workdir=/local'])
  outside = tmp_path / 'mine.py'
  outside.write_text('')
  with pytest.raises(SystemExit, match='outside --repo'):
    tpu_pod.parse(['run', *POD, '--workdir=gs://b/w', f'--config={outside}',
                   f'--repo={REPO}'])
  with pytest.raises(SystemExit, match='Config file not found'):
    tpu_pod.parse(['run', *POD, '--workdir=gs://b/w', '--config=nope.py'])


def test_slurm_script_matches_jax_autodetection(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)   # Not the repo: the script must not care.
  lines, script = slurm.main(['--nodes=2', '--gpus_per_node=8',
                              '--workdir=runs/r50', '--dry_run'])
  workdir = tmp_path / 'runs' / 'r50'
  for line in ('#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=8',
               '#SBATCH --gpus-per-node=8', '#SBATCH --exclusive',
               '#SBATCH --signal=TERM@300', '#SBATCH --requeue',
               '#SBATCH --open-mode=append',
               f'#SBATCH --output={workdir}/slurm-%j.out',
               f'cd {REPO}',
               'srun --gpu-bind=none python -m simclr_jax.main '
               f'--config={REPO}/configs/imagenet_simclr_r50.py '
               f'--workdir={workdir}',
               f'if [ "$rc" -eq {preemption.EXIT_PREEMPTED} ]; then',
               '  scontrol requeue "$SLURM_JOB_ID"', 'exit "$rc"'):
    assert line in script.splitlines(), line
  assert 'gpus-per-task' not in script and 'set -e' not in script
  assert common.EXIT_PREEMPTED == preemption.EXIT_PREEMPTED
  _bash_ok(script)
  assert lines == [f'sbatch {workdir}/simclr_jax.sbatch']
  assert not workdir.exists()  # dry run

  _, script = slurm.main(['--workdir=/w', '--no-requeue', '--time=1:00:00',
                          '--signal_seconds=120', '--partition=gpu',
                          '--override=--config.train.batch_size=512',
                          '--dry_run'])
  assert '#SBATCH --no-requeue' in script and 'scontrol' not in script
  assert '#SBATCH --signal=TERM@120' in script
  assert '#SBATCH --partition=gpu' in script
  assert '--config.train.batch_size=512' in script


def test_local_dry_run(capsys):
  lines = local.main(['--workdir=/tmp/x', '--fake_devices=4', '--dry_run'])
  assert 'xla_force_host_platform_device_count=4' in lines[0]
  assert '-m simclr_jax.main --config=configs/digits.py --workdir=/tmp/x' in lines[0]


def test_sweep_expansion_cifar10(tmp_path):
  runs = sweep.expand(os.path.join(REPO, 'configs/cifar10.py'), str(tmp_path))
  assert len(runs) == 27
  names = {os.path.basename(d) for d, _ in runs}
  assert len(names) == 27
  assert 'temperature=0.5,batch_size=512,learning_rate=1.0' in names


def test_tpu_sweep_never_shares_a_pod(capsys, monkeypatch):
  """27 settings on 3 pods: one `create setup queue` per pod, each pod its
  own third of the settings, run one after another with a log each."""
  monkeypatch.chdir(REPO)
  lines = sweep.main(['--config=configs/cifar10.py', '--workdir=gs://b/sw',
                      '--target=tpu', '--parallel=3', *[
                          f'--tpu_arg={a}' for a in POD],
                      '--tpu_arg=--accelerator_type=v5litepod-16', '--dry_run'])
  assert len(lines) == 3
  shards = []
  for i, line in enumerate(lines):
    assert 'launch/tpu_pod.py create setup queue' in line
    assert f'--name=simclr-{i} ' in line and line.count('--name=') == 1
    assert f'--shard={i} --num_shards=3' in line
    # What that prints: the pod's own queue, in the background.
    args = tpu_pod.parse(shlex.split(line)[2:])
    pod = common.execute(tpu_pod.commands(args), dry_run=True)
    assert '--version=v2-alpha-tpuv5-lite' in pod[0]
    remote = _remote(pod[-1])
    _bash_ok(remote)
    assert (f'python3 launch/queue.py --config="$HOME"/simclr-jax/configs/'
            f'cifar10.py --workdir=gs://b/sw --shard={i} --num_shards=3 '
            '--log_dir=~/simclr_sweep_logs/sw') in remote
    assert remote.startswith('mkdir -p ~/simclr_sweep_logs/sw && ')
    # ... which runs these settings.
    shards.append([name for name, _, _ in queue.settings(
        os.path.join(REPO, 'configs/cifar10.py'), 'gs://b/sw', None, i, 3)])
  assert [len(s) for s in shards] == [9, 9, 9]
  assert len(set(sum(shards, []))) == 27


def test_slurm_sweep_is_a_job_array(tmp_path, capsys):
  lines = sweep.main([f'--config={REPO}/configs/cifar10.py',
                      f'--workdir={tmp_path}', '--target=slurm',
                      '--parallel=4', '--slurm_arg=--gpus_per_node=4',
                      '--dry_run'])
  script = capsys.readouterr().out
  assert lines == [f'sbatch {tmp_path}/simclr_jax_sweep.sbatch']
  assert '#SBATCH --array=0-26%4' in script
  assert f'#SBATCH --output={tmp_path}/slurm-%A_%a.out' in script
  cases = re.findall(r'^  (\d+)\) set -- (.*) ;;$', script, re.M)
  assert [int(i) for i, _ in cases] == list(range(27))
  workdirs = {shlex.split(c)[0] for _, c in cases}
  assert len(workdirs) == 27
  assert (f'--workdir={tmp_path}/temperature=0.1,batch_size=256,'
          'learning_rate=0.5') in workdirs
  assert ('srun --gpu-bind=none python -m simclr_jax.main '
          f'--config={REPO}/configs/cifar10.py "$@"') in script
  assert ('scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'
          in script)
  _bash_ok(script)


def test_local_sweep_queue_logs_each_setting_and_stops_when_preempted(
    tmp_path, capsys):
  """The queue itself, with stand-in commands for the settings: a failure
  is reported and skipped, a preempted setting stops the queue with 75."""
  assert len(queue.main([f'--config={REPO}/configs/digits_sweep.py',
                         f'--workdir={tmp_path}', '--dry_run'])[1]) == 4
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].endswith(
      f'--workdir={tmp_path}/temperature=0.1,learning_rate=0.5 '
      '--config.train.temperature=0.1 --config.train.learning_rate=0.5 > '
      f'{tmp_path}/logs/temperature=0.1,learning_rate=0.5.log 2>&1')
  exit_with = lambda code: [sys.executable, '-c',
                            f'print("setting {code}"); raise SystemExit({code})']
  logs = [str(tmp_path / 'logs' / f'{i}.log') for i in range(4)]
  rc = queue.run_queue([(exit_with(0), logs[0]), (exit_with(1), logs[1]),
                        (exit_with(75), logs[2]), (exit_with(0), logs[3])])
  assert rc == preemption.EXIT_PREEMPTED
  assert open(logs[1]).read() == 'setting 1\nsimclr_jax exit code 1\n'
  assert open(logs[2]).read() == 'setting 75\nsimclr_jax exit code 75\n'
  assert not os.path.exists(logs[3])   # Not started: the pod is going away.
  assert queue.run_queue([(exit_with(0), logs[0]), (exit_with(2), logs[1])]) == 1


def test_queue_passes_sigterm_to_the_running_setting(tmp_path):
  """SIGTERM to the queue (as on a VM shutting down) reaches the setting,
  which saves and exits 75; the queue stops with 75."""
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  ready = tmp_path / 'ready'
  setting = [sys.executable, '-c', (
      'import signal, sys, time\n'
      'signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n'
      f'open({str(ready)!r}, "w").close()\n'
      'time.sleep(120)\n')]

  def signal_when_ready():
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline:
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)   # Forwarded by the queue's handler.
  before = signal.getsignal(signal.SIGTERM)
  sender = threading.Thread(target=signal_when_ready)
  sender.start()
  log = str(tmp_path / 'a.log')
  rc = queue.run_queue([(setting, log), (setting, str(tmp_path / 'b.log'))])
  sender.join()
  assert rc == preemption.EXIT_PREEMPTED
  assert open(log).read().endswith('simclr_jax exit code 75\n')
  assert not os.path.exists(tmp_path / 'b.log')
  assert signal.getsignal(signal.SIGTERM) == before   # Restored.


@pytest.mark.parametrize('key,value,error,match', [
    ('config.train.temprature', 0.1, KeyError, 'temprature'),   # not a field
    ('config.train.temperature', -1.0, ValueError, 'temperature'),  # invalid
])
def test_sweep_bad_settings_are_errors(tmp_path, key, value, error, match):
  cfg = tmp_path / 'bad_sweep.py'
  cfg.write_text(
      'from simclr_jax.configs import digits\n'
      'def get_config(arg=None):\n  return digits.get_config(arg)\n'
      'def get_sweep(hyper):\n'
      f'  return hyper.sweep({key!r}, [{value!r}])\n')
  with pytest.raises(error, match=match):
    sweep.expand(str(cfg), str(tmp_path))


def test_hyper_helpers():
  h = sweep_lib.hyper
  assert h.zipit([h.sweep('a', [1, 2]), h.sweep('b', [3, 4])]) == [
      {'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  assert len(h.product([h.sweep('a', [1, 2]), h.sweep('b', [3, 4, 5])])) == 6
  with pytest.raises(ValueError):
    h.zipit([h.sweep('a', [1]), h.sweep('b', [3, 4])])


def test_readme_shows_exactly_what_is_printed(monkeypatch):
  """The README's v4 and v5e command lines are the launcher's own output."""
  monkeypatch.chdir(REPO)
  readme = open(os.path.join(REPO, 'README.md')).read()
  where = ['--name=simclr', '--project=my-project',
           '--config=configs/imagenet_simclr_r50.py',
           '--workdir=gs://my-bucket/simclr/r50', '--dry_run']
  v4 = tpu_pod.parse(['create', 'setup', 'run', 'logs', 'delete', *where,
                      '--zone=us-central2-b', '--accelerator_type=v4-32'])
  v5e = tpu_pod.parse(['create', 'delete', *where, '--zone=us-west4-a',
                       '--accelerator_type=v5litepod-16', '--spot'])
  queued = tpu_pod.parse(['create', *where, '--zone=us-west4-a',
                          '--accelerator_type=v5litepod-16', '--spot',
                          '--queued'])
  for args in (v4, v5e, queued):
    for line in common.execute(tpu_pod.commands(args), dry_run=True):
      assert line in readme, line
