"""Adaptation: a run starts from another run's parameters with another objective and mask.

LM-A (ND:MLM -> CD:FLM) and NC-A (CD:FLM -> ND:MLM) from their gin files (gin/adapt/),
as Wang et al. 2022 (sec. 5) did, on tiny runs of the embedded corpus.
"""
import json

import jax
import numpy as np
import pytest

from objectax.models.registry import ConfigError
from objectax.launch import adapt, configure, train

pytestmark = pytest.mark.e2e

FAST = ["TrainConfig.batch_size=4", "TrainConfig.eval_batches=2", "TrainConfig.log_every=1",
        "Experiment.sequence_length=64", "TrainConfig.warmup_steps=1"]


def _train(gin_file, workdir, *bindings):
  configure.parse([gin_file], [*FAST, *bindings])
  return train.train(str(workdir), quiet=True)


def _params(workdir):
  """The latest checkpoint's parameters, as numpy, by name."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory, step = adapt.resolve_source(str(workdir))
  with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                             options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    state = m.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
  return adapt._paths(state["params"])  # pylint: disable=protected-access


@pytest.mark.parametrize("source_gin,adapt_gin,arch,objective", [
    pytest.param("experiments/wang2022/prefix_decoder_span_corruption_tiny_pydocs.gin",
                 "adapt/lm_adaptation.gin", "causal_decoder", "full_lm",
                 marks=pytest.mark.slow),
    pytest.param("experiments/wang2022/causal_decoder_full_lm_tiny_pydocs.gin",
                 "adapt/nc_adaptation.gin", "prefix_decoder", "span_corruption",
                 marks=pytest.mark.slow),  # the same code path with the mask flipped back
], ids=["lm_adaptation", "nc_adaptation"])
def test_adaptation_continues_from_the_pretrained_parameters(tfds_data_dir, tmp_path, source_gin,
                                                             adapt_gin, arch, objective):
  source = _train(source_gin, tmp_path / "source", "TrainConfig.steps=12",
                  "TrainConfig.checkpoint_every=12", "TrainConfig.eval_every=12")
  steps = ["TrainConfig.steps=3", "TrainConfig.checkpoint_every=3", "TrainConfig.eval_every=3"]
  scratch = _train(adapt_gin, tmp_path / "scratch", *steps, "TrainConfig.init_from=''")
  adapted = _train(adapt_gin, tmp_path / "adapted", *steps,
                   f"TrainConfig.init_from='{tmp_path / 'source'}'")
  variant = "lm_adapted" if arch == "causal_decoder" else "nc_adapted"
  # Its own workdir name: the from-scratch run of the same grid point is not resumed.
  assert adapted["experiment"] == f"{arch}_{objective}_tiny_pydocs_{variant}"
  config_text = (tmp_path / "adapted" / "config.gin").read_text()
  assert f"Experiment.arch = '{arch}'" in config_text
  assert f"Experiment.objective = '{objective}'" in config_text
  # Step 0 of the adapted run scores the pretrained parameters: far better than a fresh init
  # on the new objective, and its step counter and optimizer start afresh.
  assert adapted["start_step"] == 0 and adapted["final_step"] == 3
  assert adapted["step0_eval_loss"] < scratch["step0_eval_loss"] - 0.5
  assert source["final_eval_loss"] < source["step0_eval_loss"]
  # Every parameter of the source moved over unchanged before training (the same tree).
  before = _params(tmp_path / "source")
  after = _params(tmp_path / "adapted")
  assert sorted(before) == sorted(after)
  moved = [k for k in before if not np.allclose(before[k], after[k])]
  assert moved, "three training steps changed nothing"


def test_bad_sources_are_one_line_errors(tfds_data_dir, tmp_path):
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    _train("adapt/lm_adaptation.gin", tmp_path / "a", "TrainConfig.steps=2")
  with pytest.raises(ConfigError, match="init_from_step=5 is not in"):
    (tmp_path / "src" / "checkpoints" / "4").mkdir(parents=True)
    adapt.resolve_source(str(tmp_path / "src"), 5)
