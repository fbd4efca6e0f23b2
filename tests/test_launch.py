"""Launchers print exact commands (never call gcloud/sbatch here); sweeps expand."""

import os

import pytest

from launch import local, slurm, sweep, tpu_pod
from simclr_jax import sweep as sweep_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tpu_pod_dry_run_v4_32(capsys):
  args = tpu_pod.parse(['create', 'setup', 'run', 'logs', 'delete',
                        '--name=simclr', '--zone=us-central2-b',
                        '--project=my-proj', '--accelerator_type=v4-32',
                        '--config=configs/imagenet_simclr_r50.py',
                        '--workdir=gs://bucket/r50', '--dry_run'])
  lines = tpu_pod.common.execute(tpu_pod.commands(args), dry_run=True)
  assert lines[0] == ('gcloud compute tpus tpu-vm create simclr '
                      '--zone=us-central2-b --project=my-proj '
                      '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base')
  assert lines[1].startswith('gcloud compute tpus tpu-vm scp --recurse . '
                             "'simclr:~/simclr-jax'")
  assert '--worker=all' in lines[2] and 'pip install -e .' in lines[2]
  assert '--worker=all' in lines[3]
  assert ('python3 -m simclr_jax.main --config=configs/imagenet_simclr_r50.py '
          '--workdir=gs://bucket/r50') in lines[3]
  assert '--worker=0' in lines[4] and 'tail -f' in lines[4]
  assert lines[5] == ('gcloud compute tpus tpu-vm delete simclr '
                      '--zone=us-central2-b --project=my-proj --quiet')
  assert capsys.readouterr().out.count('gcloud') == 6


def test_tpu_run_needs_gcs_workdir():
  with pytest.raises(SystemExit):
    tpu_pod.parse(['run', '--name=a', '--zone=z', '--project=p',
                   '--workdir=/local'])


def test_slurm_two_nodes_dry_run(capsys, tmp_path):
  lines, script = slurm.main(['--nodes=2', '--gpus_per_node=8',
                              f'--workdir={tmp_path}', '--dry_run'])
  assert '#SBATCH --nodes=2' in script
  assert '#SBATCH --ntasks-per-node=8' in script
  assert '#SBATCH --gpus-per-task=1' in script
  assert ('srun --kill-on-bad-exit=1 python -m simclr_jax.main '
          f'--config=configs/imagenet_simclr_r50.py --workdir={tmp_path}') in script
  assert lines == [f'sbatch {tmp_path}/simclr_jax.sbatch']
  assert not os.path.exists(tmp_path / 'simclr_jax.sbatch')  # dry run


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
  cmds = sweep.run_commands('configs/cifar10.py', runs[:1], 'tpu',
                            ['--name=simclr'])
  assert 'launch/tpu_pod.py' in cmds[0] and '--name=simclr' in cmds[0]
  assert '--override=--config.train.temperature=0.1' in cmds[0]


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
