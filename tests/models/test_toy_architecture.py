"""A fifth architecture from a user's own module: one module, one `register`, one gin file.

tests/models/toy_architecture.py registers "toy_decoder" when imported; nothing in the
package names it. The registry, the objective compatibility check and the commands
(`info`, `plan`, `bench model`, training) must all take it as they take the built-ins.
"""
import importlib
import json
import math
import sys

import jax
import numpy as np
import pytest

# Imported before any test captures stderr: metrics.Progress binds sys.stderr on import.
from objectax.launch import configure, main, train
from objectax.launch.tools import info
from objectax.models import registry
from objectax.models.config import ModelConfig
from objectax.models.registry import ConfigError
from objectax.objectives import registry as objective_registry

NAME = "toy_decoder"


@pytest.fixture(scope="module")
def toy():
  """The toy module, registered for this module's tests only (taken out again after, so
  the other tests see the built-in architectures alone)."""
  module = importlib.import_module("toy_architecture")  # registers NAME
  yield module
  registry.ARCHITECTURES.remove(NAME)
  sys.modules.pop("toy_architecture", None)


@pytest.fixture
def toy_gin(toy, tmp_path):
  """What a user adds as gin/arch/toy_decoder.gin, here in a temporary folder."""
  path = tmp_path / f"{NAME}.gin"
  path.write_text(toy.GIN)
  return str(path)


def test_registered_and_compatible_by_the_kinds_it_reads(toy):
  assert NAME in registry.ARCHITECTURES.names()
  arch = registry.get(NAME)
  assert arch.reads == ("lm", "seq2seq") and arch.left_to_right
  full_lm = objective_registry.get("full_lm")
  registry.check_supports(NAME, full_lm)
  assert NAME in full_lm.architectures
  assert NAME in registry.supporting("seq2seq")  # span corruption, prefix LM, ... too
  assert NAME not in objective_registry.get("mtp").architectures  # mtp wraps the causal decoder
  with pytest.raises(ConfigError) as err:
    registry.check_supports(NAME, objective_registry.get("bert_mlm"))
  assert str(err.value) == ("objective 'bert_mlm' does not support architecture 'toy_decoder'; "
                            "it supports: encoder_only")


def test_model_is_causal_and_its_own_size(toy):
  cfg = ModelConfig(d_model=16, mlp_dim=32).with_vocab_size(64)
  arch = registry.get(NAME)
  spec = arch.batch_spec(arch.budget_lengths(12), 2)
  batch = arch.synthetic_batch(spec, cfg.vocab_size, 0)
  model = arch.make_model(cfg)
  params = model.init(jax.random.key(0), batch)["params"]
  leaves = jax.tree.leaves(params)
  assert sum(math.prod(np.shape(x)) for x in leaves) == toy.num_params(cfg)
  logits = np.asarray(model.apply({"params": params}, batch))
  assert logits.shape == (2, 12, cfg.vocab_size) and logits.dtype == np.float32
  # Changing a later input token leaves earlier positions' logits alone.
  changed = dict(batch)
  changed["decoder_input_tokens"] = batch["decoder_input_tokens"].copy()
  changed["decoder_input_tokens"][:, 6] = 5
  again = np.asarray(model.apply({"params": params}, changed))
  np.testing.assert_allclose(again[:, :6], logits[:, :6], rtol=1e-6)


def test_info_and_plan_accept_it(toy, toy_gin, capsys):
  files = ["--gin_file=run/quickstart.gin", f"--gin_file={toy_gin}"]
  assert main.run(["info", *files]) == 0
  out = capsys.readouterr().out
  got = info.compute(1)  # the configuration info just printed
  assert got.arch == NAME and got.num_params == toy.num_params(got.model)
  assert f"experiment {got.experiment} ({NAME})" in out
  assert f"parameters: {got.num_params:,} " in out
  assert got.flops_per_token == toy.flops_per_token(got.model, {"targets": 128})

  assert main.run(["plan", "--devices", "1", *files, "--gin.Experiment.arch=" + NAME]) == 0
  out = capsys.readouterr().out
  assert f"({NAME}): {got.num_params:,} parameters on mesh" in out
  assert "embed/embedding" in out and "mlp/up" in out


def test_bench_model_accepts_it(toy, toy_gin, tmp_path, capsys):
  json_path = tmp_path / "bench.json"
  code = main.run(["bench", "model", "--gin_file=run/quickstart.gin", f"--gin.Experiment.arch={NAME}",
                   "--gin.Experiment.sequence_length=32", "--gin.TrainConfig.batch_size=2",
                   "--vocab_size=256", "--steps=2", "--warmup=0", f"--json={json_path}"])
  out = capsys.readouterr().out
  assert code == 0, out
  assert f"model {NAME}/tiny" in out and "{'decoder': 32}" in out
  figures = json.loads(json_path.read_text())
  tiny = ModelConfig().with_vocab_size(256)  # the gin-bound size the benchmark used
  assert figures["parameters"] == toy.num_params(tiny)
  assert figures["flops_per_token"] == toy.flops_per_token(tiny, {"targets": 32})
  assert math.isfinite(figures["loss"]) and figures["tokens_per_second"] > 0


@pytest.mark.e2e
def test_three_training_steps(toy, toy_gin, tfds_data_dir, tmp_path):
  configure.parse(["run/quickstart.gin", toy_gin], [
      "TrainConfig.steps=3", "TrainConfig.warmup_steps=2", "TrainConfig.batch_size=4",
      "TrainConfig.eval_batches=1",
      "TrainConfig.eval_every=3", "TrainConfig.checkpoint_every=3", "TrainConfig.log_every=1",
      "Experiment.sequence_length=64"])
  summary = train.train(str(tmp_path / "wd"), quiet=True)
  assert summary["final_step"] == 3 and math.isfinite(summary["final_eval_loss"])
