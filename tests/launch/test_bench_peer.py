"""`objectax bench peer`: the translation to MaxText's config, the shape check, the report's
arithmetic and the one-line refusals. Offline: MaxText itself is never installed here."""
import os
import stat

import pytest

from objectax.launch import main
from objectax.launch.tools import bench_peer
from objectax.models import config as model_config
from objectax.models.config import ModelConfig

# gin/size/small.gin at the default vocabulary (8,192), as the acceptance run uses it.
SMALL = ModelConfig(vocab_size=8192, d_model=512, num_layers=8, num_heads=8, head_dim=64,
                    mlp_dim=2048)


def _keys(model=SMALL, **kw):
  return bench_peer.maxtext_config(model, sequence_length=kw.pop("sequence_length", 512),
                                   batch_size=kw.pop("batch_size", 8), **kw)


def test_small_translates_to_maxtext_keys():
  keys = _keys()
  expected = {
      "decoder_block": "llama2", "base_emb_dim": "512", "base_num_query_heads": "8",
      "base_num_kv_heads": "8", "head_dim": "64", "base_mlp_dim": "2048",
      "mlp_activations": "[silu,linear]", "base_num_decoder_layers": "8",
      "vocab_size": "8192", "logits_via_embedding": "true", "max_target_length": "512",
      "per_device_batch_size": "8", "dtype": "float32", "weight_dtype": "float32",
      "remat_policy": "none", "scan_layers": "false", "attention": "dot_product",
      "dropout_rate": "0.000000e+00", "dataset_type": "synthetic", "hardware": "cpu",
      "enable_checkpointing": "false", "eval_interval": "-1",
      "normalization_layer_epsilon": "1.000000e-06", "rope_max_timescale": "10000",
      "steps": str(bench_peer.MAXTEXT_WARMUP_STEPS + bench_peer.DEFAULT_STEPS)}
  assert {k: keys[k] for k in expected} == expected
  # Floats carry a dot: OmegaConf reads "1e-06" as a string.
  assert keys["learning_rate"] == "3.000000e-03"


@pytest.mark.parametrize("remat,scan,policy", [("full", True, "full"), ("full", False, "full"),
                                               ("save_dots", True, "minimal"),
                                               ("none", False, "none")])
def test_remat_and_scan_map_to_maxtext_policies(remat, scan, policy):
  keys = _keys(ModelConfig(vocab_size=256, remat=remat, scan_layers=scan))
  assert keys["remat_policy"] == policy
  assert keys["scan_layers"] == ("true" if scan else "false")


def test_untied_bfloat16_multi_device_and_chunked_logits():
  model = ModelConfig(vocab_size=32128, tie_embeddings=False, dtype="bfloat16",
                      logits_chunk=1024, mlp_activation="gelu", attention="cudnn")
  keys = _keys(model, batch_size=16, num_devices=4, packing=False, platform="gpu")
  assert keys["logits_via_embedding"] == "false"
  assert (keys["dtype"], keys["weight_dtype"]) == ("bfloat16", "float32")
  assert keys["per_device_batch_size"] == "4" and keys["packing"] == "false"
  assert keys["num_vocab_tiling"] == str(16 * 512 // 1024)
  assert keys["mlp_activations"] == "[gelu,linear]"
  assert (keys["attention"], keys["hardware"]) == ("cudnn_flash_jax", "gpu")
  ungated = _keys(ModelConfig(vocab_size=256, mlp_gated=False, mlp_activation="relu"))
  assert ungated["mlp_activations"] == "[relu]"


@pytest.mark.parametrize("model", [
    SMALL,
    ModelConfig(vocab_size=32128, tie_embeddings=False),
    ModelConfig(vocab_size=256, d_model=96, num_heads=3, head_dim=40, mlp_dim=200,
                num_layers=3, mlp_gated=False, mlp_activation="relu"),
])
def test_maxtext_parameter_formula_equals_ours(model):
  assert bench_peer.maxtext_num_params(_keys(model)) == model_config.num_params(model)


def test_small_parameter_count():
  # 8 x (4*512*512 + 3*512*2048 + 2*512) + 8192*512 + 512
  assert bench_peer.maxtext_num_params(_keys()) == 37_757_440


def test_shape_mismatch_is_refused_and_explained():
  bench_peer.check_same_shape(100, 100, SMALL, "formula")
  with pytest.raises(bench_peer.PeerError, match="tied to the embedding on one side only"):
    bench_peer.check_same_shape(37_757_440, 37_757_440 + 512 * 8192, SMALL, "its params tree")
  with pytest.raises(bench_peer.PeerError, match="the shapes differ") as e:
    bench_peer.check_same_shape(10, 11, SMALL, "formula")
  assert "one side only" not in str(e.value)


@pytest.mark.parametrize("model,why", [
    (ModelConfig(vocab_size=256, position_embedding="relative"), "rotary positions only"),
    (ModelConfig(vocab_size=256, remat="none", scan_layers=True), "always wraps its scanned"),
    (ModelConfig(vocab_size=256, logits_chunk=3000), "does not divide"),
    (ModelConfig(), "vocab_size must be filled in"),
])
def test_what_maxtext_cannot_express_is_refused(model, why):
  with pytest.raises(bench_peer.PeerError, match=why):
    _keys(model)
  with pytest.raises(bench_peer.PeerError, match="per-device batch"):
    _keys(SMALL, batch_size=6, num_devices=4)


def test_medians_and_ratio():
  m = bench_peer.medians([[1.0, 3.0, 2.0], [2.0, 4.0, 6.0]], [[3.0, 3.0, 9.0], [8.0, 4.0, 6.0]])
  assert m.ours_rounds == (2.0, 4.0) and m.theirs_rounds == (3.0, 6.0)
  assert m.round_ratios == (1.5, 1.5)
  assert (m.ours, m.theirs) == (2.5, 5.0)  # medians over all timed steps, not of medians
  assert m.ratio == 2.0
  with pytest.raises(ValueError):
    bench_peer.medians([[1.0]], [[]])
  with pytest.raises(ValueError):
    bench_peer.medians([[1.0]], [[1.0], [2.0]])


def test_report_table():
  wall_only = bench_peer.summarize([[2.0, 2.0]], [[3.0, 1.0]])
  assert wall_only.cpu is None and wall_only.ratio == 1.0
  lines = bench_peer.render(wall_only)
  assert lines[-2].split() == ["all", "2.000", "2.000", "1.000"]
  assert "Objectax is faster" in lines[-1]  # a tie counts for us: >= 1.0
  s = bench_peer.summarize([[2.0], [4.0]], [[1.0], [1.0]], [[3.0], [5.0]], [[6.0], [6.0]])
  assert s.ratio == pytest.approx(1 / 3) and s.cpu.ratio == 1.5
  lines = bench_peer.render(s)
  assert lines[1].split() == ["1", "2.000", "1.000", "0.500", "3.000", "6.000", "2.000"]
  assert lines[3].split() == ["all", "3.000", "1.000", "0.333", "4.000", "6.000", "1.500"]
  assert "MaxText is faster" in lines[-2] and "= 1.500" in lines[-1]


def test_cpu_seconds_of_this_process():
  assert bench_peer.cpu_seconds(os.getpid()) >= 0
  assert bench_peer.cpu_seconds(2**22 + 12345) is None  # no such process


def test_parse_maxtext_log():
  log = [
      "I1205 max_utils.py:835] System Information: Jax Version: 0.12.0.1\n",
      "I1205 max_utils.py:837] System Information: Jax Backend: cpu\n",
      f"{bench_peer._PARAMS_TAG} 37757440\n",  # pylint: disable=protected-access
      "I1205 metric_logger.py:265] completed step: 0, seconds: 0.089, TFLOP/s/device: 0.000, "
      "Tokens/s/device: 718.762, total_weights: 64, loss: 6.748, lm_loss: 6.748\n",
      "I1205 metric_logger.py:265] completed step: 1, seconds: 9.5, TFLOP/s/device: 0.1, "
      "Tokens/s/device: 431.0, total_weights: 64, loss: 6.731, lm_loss: 6.731\n",
  ]
  parsed = bench_peer.parse_maxtext_log(log)
  assert parsed["steps"] == {0: 0.089, 1: 9.5}
  assert parsed["losses"] == [6.748, 6.731]
  assert (parsed["params"], parsed["backend"], parsed["jax"]) == (37757440, "cpu", "0.12.0.1")


def test_failure_names_the_exception_and_its_detail():
  lines = ["Traceback (most recent call last):", '  File "x.py", line 1',
           "pydantic_core._pydantic_core.ValidationError: 1 validation error for MaxTextConfig",
           "profiler", "  Input should be '', 'xplane' or 'nsys'", "more"]
  assert bench_peer.failure(lines) == ("pydantic_core._pydantic_core.ValidationError: 1 "
                                       "validation error for MaxTextConfig; profiler; Input "
                                       "should be '', 'xplane' or 'nsys'")
  assert bench_peer.failure(["a", "last words", ""]) == "last words"


def test_requirements_leave_out_gpu_wheels():
  text = "# comment\n\nabsl-py>=2.5.0\ncuda-bindings>=13\nnvidia-ml-py>=13\njax>=0.11.1 # x\n" \
         "apache-tvm-ffi>=0.1\ncffi>=2.1.1 ; platform_python_implementation != 'PyPy'\n"
  assert bench_peer.requirements(text) == [
      "absl-py>=2.5.0", "jax>=0.11.1", "cffi>=2.1.1 ; platform_python_implementation != 'PyPy'"]


def _fake_python(tmp_path, name, version):
  path = tmp_path / name
  path.write_text(f"#!/bin/sh\necho {version}\n")
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def test_find_python(tmp_path):
  old = _fake_python(tmp_path, "python3.11", "3 11")
  new = _fake_python(tmp_path, "python3.12", "3 12")
  nothing = lambda name: None
  assert bench_peer.find_python(new) == new
  assert bench_peer.find_python(which={"python3.12": new}.get, pyenv_root=str(tmp_path)) == new
  pyenv = tmp_path / "pyenv" / "versions" / "3.12.1" / "bin"
  pyenv.mkdir(parents=True)
  found = _fake_python(pyenv, "python3", "3 12")
  assert bench_peer.find_python(which=nothing, pyenv_root=str(tmp_path / "pyenv")) == found
  with pytest.raises(bench_peer.PeerError, match="not a Python >= 3.12"):
    bench_peer.find_python(old)
  with pytest.raises(bench_peer.PeerError, match="no Python >= 3.12 found"):
    bench_peer.find_python(which=nothing, pyenv_root=str(tmp_path / "none"))


def test_no_python312_is_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(bench_peer.shutil, "which", lambda name: None)
  monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no_pyenv"))
  tiny = ["--gin.ModelConfig.num_layers=1", "--gin.ModelConfig.d_model=32",
          "--gin.ModelConfig.num_heads=1", "--gin.ModelConfig.head_dim=16",
          "--gin.ModelConfig.mlp_dim=64", "--gin.Experiment.sequence_length=16", "--vocab_size=128"]
  code = main.run(["bench", "peer", *tiny, "--batch_size=2",
                   f"--maxtext_venv={tmp_path / 'venv'}"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and err == [
      "objectax: error: no Python >= 3.12 found (MaxText needs it): install python3.12 or "
      "pass --maxtext_python=PATH"]
  assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("flags,message", [
    (["--gin.Experiment.arch=encoder_decoder"],
     "compares the causal decoder only (MaxText's decoder shape), not "
     "Experiment.arch='encoder_decoder'"),
    (["--gin.Experiment.arch=prefix_decoder"], "not Experiment.arch='prefix_decoder'"),
    (["--steps=0"], "--steps=0 and --rounds=2 must be >= 1"),
    (["--rounds=0"], "--steps=5 and --rounds=0 must be >= 1"),
    (["--batch_size=-1"], "--batch_size=-1 >= 0"),
    (["--gin.ModelConfig.position_embedding=relative", "--vocab_size=128"],
     "MaxText's llama2 decoder block has rotary positions only"),
])
def test_bad_flags_are_one_line(flags, message, capsys):
  code = main.run(["bench", "peer", *flags])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and message in err[0], err


def test_bad_flag_value_is_one_line(capsys):
  with pytest.raises(SystemExit) as exit_:
    main.run(["bench", "peer", "--rounds=x"])
  err = capsys.readouterr().err.strip().splitlines()
  assert exit_.value.code == 2 and len(err) == 1
  assert "argument --rounds: invalid int value: 'x'" in err[0]


def test_a_finished_venv_is_reused(tmp_path, monkeypatch):
  venv = tmp_path / "venv"
  venv.mkdir()
  (venv / "objectax_maxtext.json").write_text(
      '{"maxtext": "%s", "gpu": false}' % bench_peer.MAXTEXT_VERSION)
  monkeypatch.setattr(bench_peer.subprocess, "run", None)  # nothing may be run
  monkeypatch.setattr(bench_peer.subprocess, "Popen", None)
  assert bench_peer.ensure_venv(str(venv)) == str(venv / "bin" / "python")
