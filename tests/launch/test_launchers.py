"""Launchers print exactly what they would run; the GPU XLA flags parse with this jaxlib."""
import os
import shlex
import subprocess
import sys

import pytest

from objectax.launch import launchers, main

TRAIN = ["--workdir=/gcs/bucket/ed", "--gin_file=experiments/wang2022/"
         "encoder_decoder_span_corruption_wang_xxl_c4.gin", "--gin_file=mesh/fsdp.gin"]


def test_tpu_dry_run_prints_the_same_command_for_every_worker(capsys):
  code = main.run(["launch", "tpu", "--tpu", "v4-64", "--zone", "us-central2-b", "--project",
                   "p", "--sync", "--dry_run", "--", *TRAIN])
  lines = capsys.readouterr().out.strip().splitlines()
  assert code == 0 and len(lines) == 3
  ssh = "gcloud compute tpus tpu-vm ssh v4-64 --zone=us-central2-b --project=p --worker=all"
  assert lines[0].startswith("gcloud compute tpus tpu-vm scp --recurse ")
  assert lines[1].startswith(ssh) and "pip install" in lines[1]
  # The last line, split as the shell would, runs `objectax train` with exactly our flags.
  words = shlex.split(lines[2])
  assert " ".join(words[:-1]) == ssh
  assert shlex.split(words[-1].removeprefix("--command=")) == ["objectax", "train", *TRAIN]


def test_slurm_dry_run_prints_the_script_and_writes_nothing(capsys, tmp_path):
  script = tmp_path / "job.sbatch"
  code = main.run(["launch", "slurm", "--nodes", "4", "--gpus_per_node", "8", "--script",
                   str(script), "--dry_run", "--", *TRAIN])
  out = capsys.readouterr().out
  assert code == 0 and not script.exists()
  assert "#SBATCH --nodes=4" in out and "#SBATCH --ntasks-per-node=8" in out
  assert f"srun {shlex.join(['objectax', 'train', *TRAIN])}" in out
  assert out.strip().splitlines()[-1] == f"sbatch {script}"
  code = main.run(["launch", "slurm", "--nodes", "2", "--process_per", "host", "--script",
                   str(script), "--dry_run", "--", *TRAIN])
  assert "#SBATCH --ntasks-per-node=1" in capsys.readouterr().out


def test_launch_without_a_workdir_is_refused_in_one_line(capsys):
  code = main.run(["launch", "slurm", "--nodes", "2", "--dry_run", "--", "--gin_file=x.gin"])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(err) == 1 and "--workdir" in err[0]


@pytest.mark.e2e
def test_gpu_xla_flags_are_known_to_this_xla():
  """XLA aborts on an unknown flag; every preset flag must parse (flags parse on any backend)."""
  env = {**os.environ, "XLA_FLAGS": " ".join(launchers.GPU_XLA_FLAGS)}
  out = subprocess.run([sys.executable, "-c", "import jax; print(len(jax.devices()))"],
                       env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  bad = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                       env={**env, "XLA_FLAGS": "--xla_gpu_no_such_flag=true"},
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "Unknown flag" in bad.stderr


def test_url_workdir_is_refused_naming_the_alternative(capsys):
  code = main.run(["train", "--workdir=gs://bucket/run"])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(err) == 1 and "gcsfuse" in err[0] and "gs://bucket/run" in err[0]
