"""Launchers print exactly what they would run; the GPU XLA flags parse with this jaxlib."""
import os
import shlex
import subprocess
import sys

import pytest

from objectax.launch import launchers, main
from objectax.launch.preemption import EXIT_PREEMPTED

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


# Running: fake `sbatch`, `gcloud`, `srun` and `scontrol` on PATH. Each call appends its
# arguments as one line to LOG, then exits with the next status of STATUSES (0 when none).
FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
status=$(head -n 1 "$FAKE_STATUSES" 2>/dev/null)
tail -n +2 "$FAKE_STATUSES" > "$FAKE_STATUSES.rest" 2>/dev/null
mv "$FAKE_STATUSES.rest" "$FAKE_STATUSES" 2>/dev/null
exit "${status:-0}"
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
  """Fake tools first on PATH; returns (calls(), set_statuses(list))."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("sbatch", "gcloud", "srun", "scontrol"):
    (bin_dir / tool).write_text(FAKE)
    (bin_dir / tool).chmod(0o755)
  log, statuses = tmp_path / "calls.log", tmp_path / "statuses"
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_LOG", str(log))
  monkeypatch.setenv("FAKE_STATUSES", str(statuses))

  def calls() -> list[str]:
    return log.read_text().splitlines() if log.exists() else []

  def set_statuses(codes: list[int]) -> None:
    statuses.write_text("".join(f"{c}\n" for c in codes))

  return calls, set_statuses


def _one_error_line(capsys) -> str:
  """The launcher's stderr, which must be exactly one line."""
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1, err
  return err[0]


TPU = ["launch", "tpu", "--tpu", "v4-64", "--zone", "us-central2-b"]


def _slurm(script, *flags: str) -> list[str]:
  return ["launch", "slurm", "--nodes", "2", "--script", str(script), *flags]


@pytest.mark.parametrize("target", ["slurm", "tpu"])
@pytest.mark.parametrize("flag", ["--dry_run", "--dry-run"])
def test_dry_run_after_double_dash_is_refused_and_nothing_runs(capsys, tmp_path, fake, target,
                                                                flag):
  calls, _ = fake
  script = tmp_path / "job.sbatch"
  launcher = TPU if target == "tpu" else _slurm(script)
  code = main.run([*launcher, "--", *TRAIN, flag])
  assert code == 2 and calls() == [] and not script.exists()
  assert _one_error_line(capsys).startswith(
      "objectax: error: --dry_run after -- would go to objectax train, not the launcher; "
      "put it before --")


@pytest.mark.parametrize("flag,value", [
    ("--job_name", "run\n#SBATCH --mem=0"), ("--partition", "gpu\nrm -rf ~"),
    ("--time", "24:00:00\n#SBATCH --exclusive"), ("--env_setup", "source venv\nrm -rf ~"),
    ("--job_name", "a\rb"), ("--script", "job\n.sbatch"),
])
def test_a_newline_in_a_script_value_is_refused_and_nothing_is_written(capsys, tmp_path, fake,
                                                                       flag, value):
  calls, _ = fake
  script = tmp_path / "job.sbatch"
  argv = [*_slurm(script, flag, value), "--", *TRAIN]
  if flag == "--script":
    argv = [*_slurm(tmp_path / value, "--", *TRAIN)]
  code = main.run(argv)
  assert code == 2 and calls() == [] and not script.exists()
  assert not any(p.name.startswith("job") for p in tmp_path.iterdir())
  assert _one_error_line(capsys).startswith(f"objectax: error: {flag} ")


@pytest.mark.parametrize("flags,expected", [
    (["--nodes", "0"], "--nodes '0' must be a positive integer"),
    (["--nodes", "two"], "--nodes 'two' must be a positive integer"),
    (["--gpus_per_node", "-1"], "--gpus_per_node '-1' must be a positive integer"),
    (["--cpus_per_task", "1.5"], "--cpus_per_task '1.5' must be a positive integer"),
    (["--time", "25h"], "--time '25h' is not a SLURM time: use MM, MM:SS, HH:MM:SS"),
    (["--time", "1:2:3:4"], "--time '1:2:3:4' is not a SLURM time"),
    (["--time", "1-2-3"], "--time '1-2-3' is not a SLURM time"),
    (["--job_name", "my job"], "--job_name 'my job' is not a valid job name"),
    (["--partition", "gpu;reboot"], "--partition 'gpu;reboot' is not a valid partition"),
    (["--signal_grace_s", "0"], "--signal_grace_s '0' must be a positive integer"),
    (["--time", "5", "--signal_grace_s", "300"],
     "--signal_grace_s 300 must be shorter than --time 5 (300 s)"),
])
def test_bad_slurm_values_are_refused_in_one_line(capsys, tmp_path, fake, flags, expected):
  calls, _ = fake
  script = tmp_path / "job.sbatch"
  argv = ["launch", "slurm", "--nodes", "2", "--script", str(script), *flags, "--", *TRAIN]
  if flags[0] == "--nodes":
    argv = ["launch", "slurm", *flags, "--script", str(script), "--", *TRAIN]
  code = main.run(argv)
  assert code == 2 and calls() == [] and not script.exists()
  assert _one_error_line(capsys).startswith(f"objectax: error: {expected}")


@pytest.mark.parametrize("time,seconds", [
    ("90", 5400), ("30:15", 1815), ("24:00:00", 86400), ("2-12", 216000),
    ("1-02:30", 95400), ("1-00:00:30", 86430)])
def test_every_slurm_time_format_is_accepted(capsys, tmp_path, time, seconds):
  assert launchers.slurm_seconds(time) == seconds
  code = main.run([*_slurm(tmp_path / "job.sbatch", "--time", time, "--dry_run"), "--", *TRAIN])
  assert code == 0 and f"#SBATCH --time={time}\n" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value", [
    ("--tpu", "v4\n64"), ("--zone", "us central2"), ("--project", "p;rm"), ("--tpu", "-x"),
    ("--env_setup", "a\nb"), ("--max_restarts", "-1")])
def test_bad_tpu_values_are_refused_in_one_line(capsys, fake, flag, value):
  calls, _ = fake
  flags = {"--tpu": "v4-64", "--zone": "us-central2-b", "--project": "p", flag: value}
  code = main.run(["launch", "tpu", *(f"{k}={v}" for k, v in flags.items()), "--", *TRAIN])
  assert code == 2 and calls() == []
  assert _one_error_line(capsys).startswith(f"objectax: error: {flag} ")


@pytest.mark.parametrize("target,tool", [("slurm", "sbatch"), ("tpu", "gcloud")])
def test_a_missing_tool_is_one_line(capsys, tmp_path, monkeypatch, target, tool):
  empty = tmp_path / "empty"
  empty.mkdir()
  monkeypatch.setenv("PATH", str(empty))
  script = tmp_path / "job.sbatch"
  code = main.run([*(TPU if target == "tpu" else _slurm(script)), "--", *TRAIN])
  assert code == 2 and not script.exists()
  assert _one_error_line(capsys).startswith(f"objectax: error: {tool} not found on PATH; run this "
                                            "on ")
  # --dry_run needs neither tool.
  code = main.run([*(TPU if target == "tpu" else _slurm(script)), "--dry_run", "--", *TRAIN])
  assert code == 0 and capsys.readouterr().err == ""


def test_a_tool_that_cannot_start_is_one_line(capsys, tmp_path, monkeypatch):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "sbatch").write_text("#!/no/such/interpreter\n")
  (bin_dir / "sbatch").chmod(0o755)
  monkeypatch.setenv("PATH", str(bin_dir))
  code = main.run([*_slurm(tmp_path / "job.sbatch"), "--", *TRAIN])
  assert code == 2
  assert _one_error_line(capsys).startswith("objectax: error: could not run sbatch: ")


def test_slurm_script_is_requeued_on_the_preemption_status(capsys, tmp_path, fake):
  calls, set_statuses = fake
  script = tmp_path / "job.sbatch"
  code = main.run([*_slurm(script, "--signal_grace_s", "600"), "--", *TRAIN])
  assert code == 0 and calls() == [f"sbatch {script}"]
  text = script.read_text()
  assert text in capsys.readouterr().out  # what ran is what was printed
  lines = text.splitlines()
  assert "#SBATCH --requeue" in lines and "#SBATCH --signal=TERM@600" in lines
  assert (f'status=$?; if [ "$status" -eq {EXIT_PREEMPTED} ]; then scontrol requeue '
          '"$SLURM_JOB_ID"; fi; exit "$status"') in lines
  srun = lines.index(f"srun {launchers.train_command(TRAIN)}")
  assert lines[srun + 1].startswith("status=$?")
  # The script itself: srun's status decides, and only the preemption status requeues.
  for srun_status, requeued in ((EXIT_PREEMPTED, True), (0, False), (1, False)):
    (tmp_path / "calls.log").unlink(missing_ok=True)
    set_statuses([srun_status])
    done = subprocess.run(["bash", str(script)], env={**os.environ, "SLURM_JOB_ID": "4242"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == srun_status, done.stderr
    assert calls()[0] == f"srun {launchers.train_command(TRAIN)}"
    assert calls()[1:] == (["scontrol requeue 4242"] if requeued else [])


def _tpu_run(capsys, *flags):
  code = main.run([*TPU, *flags, "--", *TRAIN])
  return code, capsys.readouterr().err.splitlines()


def test_tpu_reruns_train_while_it_exits_preempted(capsys, fake):
  calls, set_statuses = fake
  set_statuses([0, 0, EXIT_PREEMPTED, EXIT_PREEMPTED, 0])  # scp, pip, train x3
  code, err = _tpu_run(capsys, "--sync")
  assert code == 0
  made = calls()
  assert len(made) == 5 and "scp" in made[0] and "pip install" in made[1]
  assert made[2] == made[3] == made[4] and "objectax train" in made[2]  # only train reruns
  assert len(err) == 2 and all(f"exited {EXIT_PREEMPTED}" in l for l in err)
  assert "restart 1 of 20" in err[0] and "restart 2 of 20" in err[1]


def test_tpu_does_not_rerun_on_other_statuses(capsys, fake):
  calls, set_statuses = fake
  set_statuses([EXIT_PREEMPTED, 3])
  code, err = _tpu_run(capsys)
  assert code == 3 and len(calls()) == 2 and len(err) == 1
  set_statuses([1])
  code, err = _tpu_run(capsys)
  assert code == 1 and len(calls()) == 3 and err == []


def test_tpu_stops_after_max_restarts(capsys, fake):
  calls, set_statuses = fake
  set_statuses([EXIT_PREEMPTED] * 10)
  code, err = _tpu_run(capsys, "--max_restarts", "2")
  assert code == EXIT_PREEMPTED and len(calls()) == 3  # the first run and 2 restarts
  assert len(err) == 3 and "--max_restarts reached" in err[-1]
  set_statuses([EXIT_PREEMPTED])
  code, err = _tpu_run(capsys, "--max_restarts", "0")
  assert code == EXIT_PREEMPTED and len(calls()) == 4 and len(err) == 1
