"""The command line: help, and bad input failing in one line before anything is built."""
import os
import subprocess
import sys

import pytest

from objectax.launch import main


def _run_cli(args, capsys):
  code = main.run(args)
  err = capsys.readouterr().err
  return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.e2e
def test_help_explains_commands_and_gin_flags(tmp_path):
  out = subprocess.run([sys.executable, "-m", "objectax.launch.main", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, check=True).stdout
  assert "train" in out and "list" in out
  out = subprocess.run([sys.executable, "-m", "objectax.launch.main", "train", "--help"],
                       cwd=tmp_path, capture_output=True, text=True, check=True).stdout
  for needle in ("--gin_file", "--gin.", "--workdir", "quickstart", "span_corruption"):
    assert needle in out, needle


def test_list_names_every_registry(capsys):
  assert main.run(["list"]) == 0
  out = capsys.readouterr().out
  for needle in ("causal_decoder", "full_lm", "span_corruption", "pydocs", "c4", "tiny", "small"):
    assert needle in out, needle


@pytest.mark.parametrize("args, expected", [
    (["--gin.Experiment.objectiv=full_lm"],
     "unknown gin binding Experiment.objectiv; valid parameters of Experiment: arch, objective"),
    (["--gin.Experimant.objective=full_lm"], "unknown gin configurable 'Experimant'"),
    (["--gin_file=size/huge.gin"], "valid choices in size/: 1b.gin, base.gin, base_t5_1_1.gin, "),
    (["--gin.Experiment.objective=ful_lm"],
     "unknown objective 'ful_lm'; valid choices: full_lm, span_corruption"),
    (["--gin.Experiment.corpus=c5"], "unknown corpus 'c5'; valid choices: pydocs, c4"),
    (["--gin.Experiment.size=huge"], "unknown size 'huge'; valid choices: 1b, base, base_t5_1_1, large, "),
    (["--gin.Experiment.arch=rnn"], "unknown architecture 'rnn'; valid choices: causal_decoder"),
    (["--gin.TrainConfig.steps=ten"], "TrainConfig.steps = 'ten' should be of type int"),
    (["--gin.MeshConfig.axes=(('data', 3), ('fsdp', 1), ('tensor', 1))"],
     "has 3 devices but 1 are available"),
    (["--gin.MeshConfig.rules=zero3"], "unknown sharding rule preset 'zero3'; valid choices"),
    (["--gin.Experiment.objective=span_corruption", "--gin.Experiment.sequence_length=12"],
     "minimum"),
    (["--gin.TrainConfig.steps=50", "--gin.TrainConfig.init_from=(oops"],
     "gin binding TrainConfig.init_from = (oops cannot be parsed; quote a string value: "
     "--gin.TrainConfig.init_from=\"'(oops'\""),
    (["--gin.TrainConfig.steps=10"], "TrainConfig.warmup_steps=30 > TrainConfig.steps=10"),
    (["--gin.TrainConfig.learning_rate=-1"], "TrainConfig.learning_rate=-1 must be a finite"),
])
def test_bad_config_fails_in_one_line(args, expected, capsys, tmp_path):
  workdir = tmp_path / "wd"
  code, lines = _run_cli(["train", f"--workdir={workdir}", *args], capsys)
  assert code == 2
  assert len(lines) == 1, lines
  assert lines[0].startswith("objectax: error:") and expected in lines[0], lines[0]
  assert not (workdir / "checkpoints").exists()


def test_unwritable_workdir_fails_before_training(capsys, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  code, lines = _run_cli(["train", f"--workdir={blocker}/wd"], capsys)
  assert code == 2 and len(lines) == 1
  assert "is not writable" in lines[0] and "--workdir" in lines[0], lines[0]
  assert blocker.read_text() == "not a directory"


def test_bare_words_become_strings():
  from objectax.launch import configure
  assert configure.normalize_binding("Experiment.objective=span_corruption") == \
      "Experiment.objective = 'span_corruption'"
  assert configure.normalize_binding("TrainConfig.steps=10") == "TrainConfig.steps = 10"
  assert configure.normalize_binding("TrainConfig.z_loss=1e-4") == "TrainConfig.z_loss = 1e-4"
  assert configure.normalize_binding("Experiment.pack=False") == "Experiment.pack = False"
  assert configure.normalize_binding("TrainConfig.init_from=/abs/run") == \
      "TrainConfig.init_from = '/abs/run'"


def test_size_is_one_switch(tmp_path):
  """Experiment.size picks gin/size/<size>.gin; --gin_file=size/X.gin means the same."""
  import gin  # pylint: disable=g-import-not-at-top
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  from objectax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  configure.parse(["run/quickstart.gin"], [])
  tiny = ModelConfig()
  configure.parse(["run/quickstart.gin"], ["Experiment.size=small"])
  small = ModelConfig()
  configure.parse(["run/quickstart.gin", "size/small.gin"], [])
  assert ModelConfig() == small and small.d_model > tiny.d_model
  configure.parse(["run/quickstart.gin"], ["Experiment.size=small", "ModelConfig.num_layers=3"])
  assert ModelConfig().num_layers == 3 and ModelConfig().d_model == small.d_model
  nested = tmp_path / "exp.gin"
  nested.write_text("include 'size/small.gin'\n")
  with pytest.raises(configure.ConfigError, match="choose the size with Experiment.size"):
    configure.parse([str(nested)], [])
  gin.clear_config()
