"""Bindings as typed on a command line, TrainConfig's ranges, and the model overrides that
name a run's workdir. Nothing here trains."""
import re
import subprocess
import sys

import gin
import no_tensorflow  # pylint: disable=g-bad-import-order
import pytest

from objectax.launch import config, configure
from objectax.models.registry import ConfigError

QUICKSTART = "run/quickstart.gin"


# --------------------------------------------------------------------------- bindings


@pytest.mark.parametrize("key,value", [
    ("LocalTextConfig.train_glob", "/data/*.jsonl"),
    ("LocalTextConfig.validation_glob", "gs://bucket/x/*.txt"),
    ("LocalTextConfig.train_glob", "./data/a.txt"),
    ("LocalTextConfig.train_glob", "../x"),
    ("TrainConfig.init_from", "/abs/run"),
    ("TrainConfig.init_from", "runs/a-b_c.d"),
    ("TrainConfig.workdir", "~/runs/x"),
    ("TrainConfig.workdir", "/tmp/run 2"),
    ("TrainConfig.workdir", "2024-01-01"),
    ("Experiment.objective", "span_corruption"),
])
def test_paths_and_words_need_no_quotes(key, value):
  assert configure.normalize_binding(f"{key}={value}") == f"{key} = {value!r}"
  configure.parse([QUICKSTART], [f"{key}={value}"])
  assert gin.query_parameter(key) == value
  gin.clear_config()


@pytest.mark.parametrize("binding,expected", [
    ("TrainConfig.steps=10", 10),
    ("TrainConfig.learning_rate=1e-3", 1e-3),
    ("TrainConfig.z_loss=-0.0", 0.0),
    ("Experiment.pack=False", False),
    ("TrainConfig.async_checkpoints=True", True),
    ("TrainConfig.init_from='/quoted/run'", "/quoted/run"),
    ('TrainConfig.init_from="/double/quoted"', "/double/quoted"),
    ("TrainConfig.init_from=", ""),
    ("MeshConfig.axes=(('data', 1),)", (("data", 1),)),
    ("MeshConfig.rule_overrides=(('vocab', 'fsdp'),)", (("vocab", "fsdp"),)),
])
def test_gin_values_keep_their_meaning(binding, expected):
  configure.parse([QUICKSTART], [binding])
  value = gin.query_parameter(binding.split("=", 1)[0])
  assert value == expected and type(value) is type(expected)
  gin.clear_config()


def test_references_and_macros_are_left_to_gin():
  assert configure.normalize_binding("A.b=@c") == "A.b = @c"
  assert configure.normalize_binding("A.b=%C") == "A.b = %C"
  assert configure.normalize_binding("A.b=None") == "A.b = None"


@pytest.mark.parametrize("binding,message", [
    ("TrainConfig.init_from=(oops",
     "gin binding TrainConfig.init_from = (oops cannot be parsed; quote a string value: "
     "--gin.TrainConfig.init_from=\"'(oops'\""),
    ("TrainConfig.init_from='unterminated",
     "gin binding TrainConfig.init_from = 'unterminated cannot be parsed; quote a string "
     "value: --gin.TrainConfig.init_from="),
    ("MeshConfig.axes=(('data', 1),",
     "gin binding MeshConfig.axes = (('data', 1), cannot be parsed; quote a string value: "),
    ("TrainConfig.init_from=[a b]", "gin binding TrainConfig.init_from = [a b] cannot be parsed"),
])
def test_a_value_meant_as_gin_that_does_not_parse_names_its_binding(binding, message):
  with pytest.raises(ConfigError) as e:
    configure.parse([QUICKSTART], ["TrainConfig.steps=40", binding, "TrainConfig.seed=1"])
  assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_the_quoting_shown_is_what_works():
  configure.parse([QUICKSTART], ["TrainConfig.init_from='(oops'"])
  assert gin.query_parameter("TrainConfig.init_from") == "(oops"
  gin.clear_config()


def test_a_gin_error_of_a_binding_names_it_after_the_size_binding():
  """Gin reports a line of all the bindings joined; the size's binding comes first."""
  with pytest.raises(ConfigError) as e:
    configure.parse([QUICKSTART, "size/small.gin"],
                    ["TrainConfig.steps=40", "TrainConfig.init_from=@no_such_thing"])
  assert str(e.value).startswith("gin binding TrainConfig.init_from = @no_such_thing: ")
  assert "no_such_thing" in str(e.value) and "\n" not in str(e.value)


def test_gin_lines_map_back_to_bindings():
  # pylint: disable=protected-access
  bindings = ["Experiment.size = 'small'", "A.b = (1,\n2)", "C.d = oops"]
  error = SyntaxError("Unable to parse value.", (None, 4, 7, "C.d = oops"))  # line 4: third
  assert configure._binding_at_fault(error, bindings) is bindings[2]
  error = SyntaxError("Unable to parse value.", (None, 3, 1, "2)"))  # 2nd binding's 2nd line
  assert configure._binding_at_fault(error, bindings) is bindings[1]
  error = SyntaxError("Unable to parse value.", ("x.gin", 4, 1, "C.d = oops"))  # a file's
  assert configure._binding_at_fault(error, bindings) is None
  error = ValueError("No configurable matching 'C'.\n  In bindings string line 1\n    C.d = 1")
  assert configure._binding_at_fault(error, bindings) is bindings[0]


def test_a_key_that_is_not_a_binding_is_one_line():
  with pytest.raises(ConfigError, match="'Train Config.steps' is not a binding key"):
    configure.normalize_binding("Train Config.steps=3")


# --------------------------------------------------------------------------- TrainConfig


@pytest.mark.parametrize("kwargs,message", [
    (dict(learning_rate=0.0), "TrainConfig.learning_rate=0.0 must be a finite number > 0"),
    (dict(learning_rate=-1e-3), "TrainConfig.learning_rate=-0.001 must be a finite number > 0"),
    (dict(learning_rate=float("inf")), "TrainConfig.learning_rate=inf must be a finite number > 0"),
    (dict(learning_rate=float("nan")), "TrainConfig.learning_rate=nan must be a finite number > 0"),
    (dict(steps=10, warmup_steps=11),
     "TrainConfig.warmup_steps=11 > TrainConfig.steps=10 (warmup beyond the run); valid: 0 to "
     "10, and 9 already warms up over the whole run"),
    (dict(end_lr_fraction=-0.1), "TrainConfig.end_lr_fraction=-0.1 must be in [0, 1]"),
    (dict(end_lr_fraction=1.5), "TrainConfig.end_lr_fraction=1.5 must be in [0, 1]"),
    (dict(adam_b1=1.0), "TrainConfig.adam_b1=1.0 must be in [0, 1)"),
    (dict(adam_b1=-0.1), "TrainConfig.adam_b1=-0.1 must be in [0, 1)"),
    (dict(adam_b2=1.0), "TrainConfig.adam_b2=1.0 must be in [0, 1)"),
    (dict(weight_decay=-0.01), "TrainConfig.weight_decay=-0.01 must be a finite number >= 0"),
    (dict(clip_grad_norm=-1.0), "TrainConfig.clip_grad_norm=-1.0 must be a finite number > 0"),
    (dict(clip_grad_norm=0.0),
     "TrainConfig.clip_grad_norm=0.0 must be a finite number > 0 (0 would zero every update, "
     "not turn clipping off"),
    (dict(z_loss=-1e-4), "TrainConfig.z_loss=-0.0001 must be a finite number >= 0"),
    (dict(init_from_step=-2), "TrainConfig.init_from_step=-2 must be >= -1"),
])
def test_train_config_refuses_out_of_range_values(kwargs, message):
  with pytest.raises(ConfigError) as e:
    config.TrainConfig(**kwargs)
  first = str(e.value).splitlines()[0]
  assert first.startswith(message), first


@pytest.mark.parametrize("kwargs", [
    dict(steps=10, warmup_steps=10), dict(steps=10, warmup_steps=9), dict(steps=1, warmup_steps=1),
    dict(warmup_steps=0), dict(end_lr_fraction=0.0), dict(end_lr_fraction=1.0),
    dict(adam_b1=0.0), dict(weight_decay=0.0), dict(z_loss=0.0), dict(clip_grad_norm=1e30),
    dict(learning_rate=1), dict(init_from_step=-1), dict(init_from_step=0),
])
def test_train_config_accepts_the_edges(kwargs):
  config.TrainConfig(**kwargs)


def test_warmup_of_steps_minus_one_or_steps_is_the_same_schedule():
  """The schedule warms up over min(warmup_steps, steps - 1): why the refusal costs nothing."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from objectax.launch import step  # pylint: disable=g-import-not-at-top
  at = lambda **kw: [float(step.learning_rate_schedule(config.TrainConfig(steps=12, **kw))(s))
                     for s in range(13)]
  np.testing.assert_array_equal(at(warmup_steps=11), at(warmup_steps=12))


def test_warmup_beyond_the_run_is_one_cli_line(capsys, tmp_path):
  from objectax.launch import main  # pylint: disable=g-import-not-at-top
  code = main.run(["train", f"--workdir={tmp_path / 'wd'}", "--gin.TrainConfig.steps=10"])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(err) == 1, err
  assert err[0] == ("objectax: error: TrainConfig.warmup_steps=30 > TrainConfig.steps=10 "
                    "(warmup beyond the run); valid: 0 to 10, and 9 already warms up over the "
                    "whole run")


# --------------------------------------------------------------------------- model overrides


def test_no_overrides_no_suffix():
  wang = "experiments/wang2022/causal_decoder_full_lm_tiny_pydocs.gin"
  for files in ([QUICKSTART], [QUICKSTART, "size/small.gin"], [wang]):
    configure.parse(files, [])
    assert configure.model_overrides() == {} and configure.workdir_suffix() == "", files
  # A binding equal to what the size file gives is no override.
  configure.parse([QUICKSTART], ["ModelConfig.d_model=128", "ModelConfig.num_layers=2"])
  assert configure.model_overrides() == {} and configure.workdir_suffix() == ""
  gin.clear_config()


def test_overrides_against_the_size_file_alone():
  configure.parse([QUICKSTART], ["ModelConfig.mlp_activation=relu"])
  assert configure.model_overrides() == {"mlp_activation": "relu"}
  assert configure.workdir_suffix() == "+mlp_activation=relu"
  configure.parse([QUICKSTART], ["Experiment.size=small", "ModelConfig.num_layers=3"])
  assert configure.model_overrides() == {"num_layers": 3}  # small's d_model etc. are the size's
  assert configure.workdir_suffix() == "+num_layers=3"
  configure.parse([QUICKSTART], ["ModelConfig.num_layers=3", "ModelConfig.dropout_rate=0.1"])
  assert configure.workdir_suffix() == "+dropout_rate=0.1+num_layers=3"  # sorted by field
  # The run's experiment files count too: the GPU benchmark's precision and attention.
  configure.parse(["run/gpu_benchmark.gin"], [])
  assert configure.model_overrides() == {"dtype": "bfloat16", "attention": "cudnn"}
  # The attention kernel changes how the model runs, not what it computes: not in the name.
  assert configure.workdir_suffix() == "+dtype=bfloat16"
  # The returned dict is a copy.
  configure.model_overrides()["d_model"] = 1
  assert "d_model" not in configure.model_overrides()
  gin.clear_config()


def test_long_or_unsafe_overrides_become_a_stable_hash():
  many = ["ModelConfig.mlp_activation=gelu", "ModelConfig.dtype=bfloat16",
          "ModelConfig.position_embedding=relative"]
  configure.parse([QUICKSTART], many)
  suffix = configure.workdir_suffix()
  assert re.fullmatch(r"\+model-[0-9a-f]{8}", suffix), suffix
  configure.parse([QUICKSTART], list(reversed(many)))
  assert configure.workdir_suffix() == suffix  # deterministic, order-free
  configure.parse([QUICKSTART], [*many[:2], "ModelConfig.position_embedding=none"])
  assert configure.workdir_suffix() not in ("", suffix)
  configure.parse([QUICKSTART], ["ModelConfig.position_embedding='a/b'"])  # not filesystem-safe
  assert re.fullmatch(r"\+model-[0-9a-f]{8}", configure.workdir_suffix())
  gin.clear_config()


def test_a_failed_parse_leaves_no_stale_overrides():
  configure.parse([QUICKSTART], ["ModelConfig.mlp_activation=relu"])
  with pytest.raises(ConfigError):
    configure.parse([QUICKSTART], ["Experiment.size=huge"])
  assert configure.model_overrides() == {} and configure.workdir_suffix() == ""
  gin.clear_config()


@pytest.mark.e2e
def test_model_only_overrides_need_no_tensorflow(tmp_path):
  script = no_tensorflow.BLOCK + (
      "from objectax.launch import configure\n"
      "configure.parse(['run/quickstart.gin'], ['ModelConfig.num_layers=3', "
      "'Experiment.objective=span_corruption', 'SpanCorruptionConfig.noise_density=0.5'], "
      "model_only=True)\n"
      "print(configure.model_overrides(), configure.workdir_suffix())\n") + no_tensorflow.CHECK
  out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "{'num_layers': 3} +num_layers=3" in out.stdout
