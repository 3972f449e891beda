"""One run, many meshes: data, FSDP and tensor parallelism change where arrays live, never
what is computed; a checkpoint saved under one mesh continues under another.

The 8 devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=8) in one
subprocess that trains every mesh in turn; the one-device baselines run in this process.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from objectax.launch import configure, train

pytestmark = pytest.mark.e2e

HERE = os.path.dirname(os.path.abspath(__file__))
MESHES = {  # name -> gin file: the four gin/mesh/ layouts, on 8 devices
    "data8": "mesh/data_parallel.gin",       # data=8
    "fsdp8": "mesh/fsdp.gin",                # fsdp=8
    "fsdp4_tensor2": "mesh/fsdp_tensor.gin",  # fsdp=4 x tensor=2
    "data2_fsdp2_tensor2": "mesh/data_fsdp_tensor.gin",
}
CELLS = {"causal_decoder": "full_lm", "prefix_decoder": "prefix_lm",
         "encoder_decoder": "span_corruption"}


def _bindings(arch, steps, **extra):
  out = {"Experiment.arch": arch, "Experiment.objective": CELLS[arch],
         "Experiment.sequence_length": 64, "TrainConfig.batch_size": 8,
         "TrainConfig.steps": steps, "TrainConfig.eval_batches": 2, "TrainConfig.log_every": 1,
         "TrainConfig.eval_every": steps, "TrainConfig.checkpoint_every": steps,
         "TrainConfig.warmup_steps": 2, **extra}
  return [f"{k}={v}" for k, v in out.items()]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _run_on_8_devices(runs, tmp_path, tfds_data_dir):
  spec = tmp_path / "runs.json"
  spec.write_text(json.dumps(runs))
  env = {**os.environ, "TFDS_DATA_DIR": tfds_data_dir,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, os.path.join(HERE, "mesh_runs.py"), str(spec)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def _assert_same_losses(reference, other, rtol):
  steps = lambda rows: [r["step"] for r in rows if "loss" in r]
  assert steps(reference) == steps(other)
  for a, b in zip(reference, other, strict=True):
    for key in ("loss", "eval_loss"):
      if key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=rtol, err_msg=f"{key} step {a['step']}")


def _mesh_grid(archs, meshes, steps, tmp_path, tfds_data_dir):
  for arch in archs:
    configure.parse(["run/quickstart.gin"], _bindings(arch, steps))
    train.train(str(tmp_path / f"{arch}-one"), quiet=True)
  runs = [{"workdir": str(tmp_path / f"{arch}-{mesh}"),
           "gin_files": ["run/quickstart.gin", MESHES[mesh]],
           "bindings": _bindings(arch, steps)} for arch in archs for mesh in meshes]
  _run_on_8_devices(runs, tmp_path, tfds_data_dir)
  for arch in archs:
    for mesh in meshes:
      _assert_same_losses(_rows(tmp_path / f"{arch}-one"), _rows(tmp_path / f"{arch}-{mesh}"),
                          rtol=1e-4)


@pytest.mark.slow
def test_every_architecture_on_every_mesh_matches_one_device_for_20_steps(tfds_data_dir,
                                                                          tmp_path):
  _mesh_grid(list(CELLS), list(MESHES), 20, tmp_path, tfds_data_dir)


@pytest.mark.slow
def test_meshes_agree_and_a_checkpoint_moves_between_them(tfds_data_dir, tmp_path):
  """The encoder-decoder (the most involved model), 8 steps: data=8 and data=2 x fsdp=2 x
  tensor=2 give the one-device losses; the data=8 run's step-4 checkpoint, restored under
  fsdp=4 x tensor=2, continues to the same losses as the uninterrupted run."""
  common = _bindings("encoder_decoder", 8, **{"TrainConfig.checkpoint_every": 4})
  configure.parse(["run/quickstart.gin"], common)
  train.train(str(tmp_path / "one"), quiet=True)
  wd = {name: str(tmp_path / name) for name in ("data8", "data2_fsdp2_tensor2")}
  straight = str(tmp_path / "data8_straight.jsonl")
  run = lambda workdir, mesh, **kw: {"workdir": workdir, "bindings": common,
                                     "gin_files": ["run/quickstart.gin", MESHES[mesh]], **kw}
  summaries = _run_on_8_devices([
      # The data=8 run; its metrics are kept, then it "crashes" after step 4's save...
      run(wd["data8"], "data8", keep_metrics=straight, drop_checkpoint=8),
      run(wd["data2_fsdp2_tensor2"], "data2_fsdp2_tensor2"),
      # ... and continues from step 4 under another mesh.
      run(wd["data8"], "fsdp4_tensor2"),
  ], tmp_path, tfds_data_dir)
  assert [s["start_step"] for s in summaries] == [0, 0, 4]
  one = _rows(tmp_path / "one")
  with open(straight) as f:
    data8 = [json.loads(line) for line in f]
  _assert_same_losses(one, data8, rtol=1e-4)
  _assert_same_losses(one, _rows(wd["data2_fsdp2_tensor2"]), rtol=1e-4)
  after = lambda rows: [r for r in rows if r["step"] > 4 and "loss" in r]
  _assert_same_losses(after(data8), after(_rows(wd["data8"])), rtol=1e-5)
