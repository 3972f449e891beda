"""Two processes on loopback (gloo CPU collectives), four devices each, reproduce the
single-process eight-device run, and read disjoint data."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from objectax.launch import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
BINDINGS = ["Experiment.sequence_length=64", "TrainConfig.batch_size=8", "TrainConfig.steps=4",
            "TrainConfig.warmup_steps=3", "TrainConfig.eval_every=4",
            "TrainConfig.checkpoint_every=2", "TrainConfig.eval_batches=2",
            "TrainConfig.log_every=1", "TrainConfig.input_shards=2",
            "MeshConfig.rules='fsdp'", "MeshConfig.axes=(('data', 2), ('fsdp', 4), ('tensor', 1))"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _worker(out_dir, workdir, devices, bindings, tfds_data_dir):
  env = {**os.environ, "TFDS_DATA_DIR": tfds_data_dir,
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  return subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_worker.py"),
                           str(out_dir), str(workdir), *bindings],
                          env=env, cwd=out_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _finish(proc, timeout=900):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-2000:] + err[-4000:]
  return out


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _one_and_two_processes(tmp_path, tfds_data_dir):
  """The same run in one 8-device process and in two 4-device processes on loopback."""
  one_dir, two_dir = tmp_path / "one", tmp_path / "two"
  one_dir.mkdir()
  two_dir.mkdir()
  _finish(_worker(one_dir, one_dir / "wd", 8, BINDINGS, tfds_data_dir))
  port = _free_port()
  procs = [_worker(two_dir, two_dir / "wd", 4, [
      *BINDINGS, f"DistributedConfig.coordinator_address='localhost:{port}'",
      "DistributedConfig.num_processes=2", f"DistributedConfig.process_id={i}"], tfds_data_dir)
           for i in range(2)]
  outs = [_finish(p) for p in procs]
  assert "process 0 of 2: 4 local devices" in outs[0] and "process 1 of 2" in outs[1]
  return one_dir, two_dir


@pytest.mark.e2e
@pytest.mark.slow
def test_two_processes_reproduce_one_process_on_the_same_devices(tfds_data_dir, tmp_path):
  one_dir, two_dir = _one_and_two_processes(tmp_path, tfds_data_dir)
  one, two = _rows(one_dir / "wd"), _rows(two_dir / "wd")  # process 0 alone writes metrics
  assert [r["step"] for r in one] == [r["step"] for r in two]
  for a, b in zip(one, two):
    for key in ("loss", "eval_loss", "grad_norm"):
      if key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=f"{key} step {a['step']}")
  assert sorted(os.listdir(two_dir / "wd" / "checkpoints")) == ["2", "4"]

  # Each process fed half of every global batch; the halves never share an example, and
  # together they are exactly the single process's global batch.
  load = lambda path: [v for _, v in sorted(np.load(path).items(), key=lambda kv: int(kv[0][4:]))]
  single = load(one_dir / "batches_0.npz")
  halves = [load(two_dir / f"batches_{i}.npz") for i in range(2)]
  for k, batch in enumerate(single):
    first, second = halves[0][k], halves[1][k]
    assert first.shape[0] == second.shape[0] == batch.shape[0] // 2
    np.testing.assert_array_equal(np.concatenate([first, second]), batch)
    assert not {r.tobytes() for r in first} & {r.tobytes() for r in second}


@pytest.mark.e2e
@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(tfds_data_dir, tmp_path):
  """The input shards fix the stream; the per-process iterator files no longer apply, so the
  single process skips the consumed batches and lands on the same losses."""
  one_dir, two_dir = _one_and_two_processes(tmp_path, tfds_data_dir)
  one = _rows(one_dir / "wd")
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(two_dir / "wd" / "checkpoints" / "4")
  resumed_dir = tmp_path / "resumed"
  resumed_dir.mkdir()
  _finish(_worker(resumed_dir, two_dir / "wd", 8, BINDINGS, tfds_data_dir))
  resumed = [r for r in _rows(two_dir / "wd") if r["step"] > 2]
  assert [r["step"] for r in resumed] == [r["step"] for r in one if r["step"] > 2]
  for a, b in zip([r for r in one if r["step"] > 2], resumed):
    for key in ("loss", "eval_loss"):
      if key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=f"resumed {key} step {a['step']}")


def test_cluster_detection_and_bad_coordinator_settings():
  assert distributed.detected_cluster({}) is None
  assert distributed.detected_cluster({"TPU_WORKER_ID": "0"}) == "tpu_pod"
  assert distributed.detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == "slurm"
  assert distributed.detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
  assert distributed.detected_cluster({"OMPI_COMM_WORLD_SIZE": "4"}) == "mpi"
  from objectax.models.registry import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="must be host:port"):
    distributed.DistributedConfig(coordinator_address="localhost")
  with pytest.raises(ConfigError, match=r"process_id=2 must be in \[0, 2\)"):
    distributed.DistributedConfig(coordinator_address="localhost:1234", num_processes=2,
                                  process_id=2)
  assert distributed.initialize(distributed.DistributedConfig()) in ("single", "already")


def _train_processes(workdir, bindings, tfds_data_dir, port):
  """`objectax train` as two processes of four devices each on loopback."""
  env = {**os.environ, "TFDS_DATA_DIR": tfds_data_dir,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  return [subprocess.Popen(
      [sys.executable, "-m", "objectax.launch.main", "train", f"--workdir={workdir}", "--quiet",
       *[f"--gin.{b}" for b in bindings],
       f"--gin.DistributedConfig.coordinator_address='localhost:{port}'",
       "--gin.DistributedConfig.num_processes=2", f"--gin.DistributedConfig.process_id={i}"],
      env=env, cwd=os.path.dirname(str(workdir)), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_resumes_bit_identically(
    tfds_data_dir, tmp_path):
  """JAX's preemption sync: the signalled process and the other agree on the step, both
  save it and exit 75; rerunning resumes to the uninterrupted run's exact state."""
  import test_reliability as rel  # pylint: disable=g-import-not-at-top  (a sibling test module)
  bindings = [*BINDINGS, "TrainConfig.steps=80", "TrainConfig.warmup_steps=10",
              "TrainConfig.checkpoint_every=40", "TrainConfig.eval_every=80"]
  straight = tmp_path / "straight"
  outs = [p.communicate(timeout=900)[0]
          for p in _train_processes(straight, bindings, tfds_data_dir, _free_port())]
  wd = tmp_path / "wd"
  procs = _train_processes(wd, bindings, tfds_data_dir, _free_port())
  rel._wait_for_rows(procs[0], wd, 8)  # process 0 writes the metrics
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [75, 75], outs
  stopped = json.loads((wd / "summary.json").read_text())["final_step"]
  assert 8 <= stopped < 80 and str(stopped) in os.listdir(wd / "checkpoints")
  assert sorted(os.listdir(wd / "data_iterators" / str(stopped))) == sorted(
      f"process_{i}{ext}" for i in range(2)
      for ext in (".data-00000-of-00001", ".index", ".pending.npz"))
  procs = _train_processes(wd, bindings, tfds_data_dir, _free_port())
  outs = [p.communicate(timeout=900)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  rel._assert_same_state(rel._state(straight, 80), rel._state(wd, 80))
  assert rel._logged_steps(wd) == list(range(1, 81))
