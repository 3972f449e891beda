"""`objectax bench model`: the train step on synthetic batches, without TensorFlow or seqio."""
import json
import os
import subprocess
import sys

import no_tensorflow  # pylint: disable=g-bad-import-order

import pytest

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = no_tensorflow.BLOCK + r'''
from objectax.launch import main
code = main.run(sys.argv[1:])
''' + no_tensorflow.CHECK + r'''
sys.exit(code)
'''

_TINY = ["--gin.Experiment.sequence_length=32", "--gin.TrainConfig.batch_size=2",
         "--gin.ModelConfig.num_layers=1", "--gin.ModelConfig.d_model=64", "--vocab_size=256",
         "--steps=2", "--warmup=1"]


def _bench(tmp_path, *flags):
  return subprocess.run([sys.executable, "-c", _SCRIPT, "bench", "model", *_TINY, *flags],
                        cwd=tmp_path, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_bench_model_prints_figures_without_tensorflow(tmp_path):
  # An objective binding (needs TensorFlow to register) is skipped, not an error.
  out = _bench(tmp_path, "--gin.Experiment.arch=encoder_decoder", "--inputs_length=24",
               "--gin_file=objective/span_corruption.gin", f"--json={tmp_path}/f.json")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "{'encoder': 24, 'decoder': 8}" in out.stdout
  for line in ("compiled in", "step time: median", "tokens/s:", "CPU matmul peak measured in "
               "this run", "ratio achieved / matmul peak", "MFU:", "peak memory:"):
    assert line in out.stdout, out.stdout
  figures = json.load(open(tmp_path / "f.json"))
  assert figures["tokens_per_second"] > 0 and 0 < figures["mfu"] < 1
  # tokens/s is tokens per step over the median step time
  assert figures["tokens_per_second"] == pytest.approx(2 * 32 / figures["step_seconds_median"])


def test_bench_model_bad_input_is_one_line(tmp_path):
  out = _bench(tmp_path, "--gin.Experiment.arch=encoder_decoder", "--inputs_length=40")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "objectax: error: --inputs_length=40 must be in (0, 32) (Experiment.sequence_length)"]


@pytest.mark.slow
def test_gpu_benchmark_script_dry_run(tmp_path):
  env = {**os.environ, "PYTHON": sys.executable, "BENCH_OUT": str(tmp_path)}
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "tools", "gpu_benchmark.sh"), "--dry_run"],
                       capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "=== summary ===" in out.stdout
  for name in ("causal_decoder_1b", "encoder_decoder_1b"):
    assert json.load(open(tmp_path / f"{name}.json"))["mfu"] > 0
