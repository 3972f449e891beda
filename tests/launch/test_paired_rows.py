"""Wang et al.'s encoder-decoder prefix LM: two pieces per row with complementary splits.

One 626-token piece per row would leave half of the encoder-decoder's 625 + 625 positions
empty; the architecture asks the objective for pairs (`PrefixLMConfig.pair_pieces`), the
rows come out full, and segment ids keep the two pieces from seeing each other.
"""
import dataclasses
import json

import gin
import jax
import numpy as np
import pytest

from objectax.launch import builder, configure, input_pipeline, step, train
from objectax.models.config import ModelConfig
from objectax.models.registry import ConfigError


@pytest.fixture(autouse=True)
def _clean_gin():
  """These tests parse gin bindings; later tests must not see them."""
  yield
  gin.clear_config()


def _resolve(*bindings):
  configure.parse(["run/quickstart.gin"], ["Experiment.objective=prefix_lm", *bindings])
  return builder.resolve()


@pytest.mark.parametrize("arch,pack,paired", [
    ("encoder_decoder", True, True), ("encoder_decoder", False, False),
    ("causal_decoder", True, False), ("prefix_decoder", True, False)])
def test_the_architecture_and_packing_decide_the_row_layout(arch, pack, paired):
  cfg = _resolve(f"Experiment.arch={arch}", f"Experiment.pack={pack}",
                 "Experiment.sequence_length=626")
  assert cfg.objective_cfg.pair_pieces is paired
  lengths = cfg.task_lengths()
  assert lengths.per_row == (2 if paired else 1)
  assert lengths.inputs == lengths.targets == (626 if paired else 625)


def test_other_objectives_keep_their_config():
  cfg = _resolve("Experiment.arch=encoder_decoder", "Experiment.objective=t5_prefix_lm")
  assert not hasattr(cfg.objective_cfg, "pair_pieces") and cfg.task_lengths().per_row == 1


def test_an_objective_that_pairs_must_have_the_switch():
  from objectax.objectives import prefix_lm, registry  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="pairs_pieces needs a `pair_pieces` field in "
                                       "T5PrefixLMConfig"):
    dataclasses.replace(prefix_lm.T5_OBJECTIVE, pairs_pieces=True)
  assert registry.get("prefix_lm").pairs_pieces and not registry.get("t5_prefix_lm").pairs_pieces


def test_pairs_forced_where_rows_cannot_take_them_are_one_line():
  for bindings in (["Experiment.arch=causal_decoder"],
                   ["Experiment.arch=encoder_decoder", "Experiment.pack=False"]):
    with pytest.raises(ConfigError, match=r"^PrefixLMConfig.pair_pieces = True needs an "
                       r"architecture whose rows take two pieces \(encoder_decoder\) and "
                       r"Experiment.pack = True; got \w+ with pack = (True|False)$"):
      _resolve(*bindings, "PrefixLMConfig.pair_pieces=True")
  # An explicit False keeps one piece per row on the encoder-decoder.
  cfg = _resolve("Experiment.arch=encoder_decoder", "PrefixLMConfig.pair_pieces=False",
                 "Experiment.sequence_length=626")
  assert cfg.task_lengths().inputs == 625 and cfg.task_lengths().per_row == 1


@pytest.fixture(scope="module")
def paired_batch(tfds_data_dir):
  cfg = _resolve("Experiment.arch=encoder_decoder", "Experiment.sequence_length=64")
  ti = input_pipeline.build_task_input(cfg)
  (batch,) = input_pipeline.eval_batches(ti, 8, 1)
  return cfg, ti, batch


def test_rows_from_the_pipeline_are_full_and_hold_two_pieces(paired_batch):
  _, ti, batch = paired_batch
  assert ti.task_feature_lengths == {"inputs": 64, "targets": 64}
  assert batch["encoder_input_tokens"].shape == batch["decoder_target_tokens"].shape == (8, 64)
  assert step.padding_fraction(batch) == 0.0
  for stream in ("encoder", "decoder"):
    seg = batch[f"{stream}_segment_ids"]
    assert (seg[:, 0] == 1).all() and (seg[:, -1] == 2).all() and (np.diff(seg) >= 0).all()
  # Complementary splits: the first piece's inputs and its targets make one piece of 64.
  first = ((batch["encoder_segment_ids"] == 1).sum(1)
           + (batch["decoder_segment_ids"] == 1).sum(1))
  assert (first == 64).all() and len(set((batch["encoder_segment_ids"] == 1).sum(1))) > 1


def test_the_pieces_of_a_row_do_not_see_each_other(paired_batch):
  """Changing the second piece's tokens (encoder and decoder) leaves the first piece's
  logits exactly as they were, and changes the second's: attention, cross-attention and
  teacher forcing all follow the segment ids."""
  cfg, ti, batch = paired_batch
  model = cfg.arch.make_model(ModelConfig(d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
                                          num_layers=2).with_vocab_size(
                                              ti.vocabulary.vocab_size))
  batch = {k: np.asarray(v) for k, v in batch.items()}
  params = model.init(jax.random.key(0), batch)
  other = dict(batch)
  second = {"encoder": batch["encoder_segment_ids"] == 2,
            "decoder": batch["decoder_segment_ids"] == 2}
  rng = np.random.default_rng(0)
  for key, stream in (("encoder_input_tokens", "encoder"), ("decoder_target_tokens", "decoder")):
    other[key] = np.where(second[stream], rng.integers(3, 200, batch[key].shape), batch[key])
  other["decoder_input_tokens"] = np.where(
      second["decoder"] & (batch["decoder_positions"] > 0),
      np.roll(other["decoder_target_tokens"], 1, axis=1), batch["decoder_input_tokens"])
  logits, changed = (np.asarray(model.apply(params, b)) for b in (batch, other))
  first = ~second["decoder"]
  np.testing.assert_array_equal(logits[first], changed[first])
  assert np.abs(logits[second["decoder"]] - changed[second["decoder"]]).max() > 1e-3


@pytest.mark.e2e
def test_encoder_decoder_prefix_lm_trains_on_full_rows(tfds_data_dir, tmp_path):
  configure.parse(["run/quickstart.gin"], [
      "Experiment.arch=encoder_decoder", "Experiment.objective=prefix_lm",
      "Experiment.sequence_length=96", "TrainConfig.steps=20", "TrainConfig.batch_size=4",
      "TrainConfig.eval_batches=2", "TrainConfig.eval_every=20",
      "TrainConfig.checkpoint_every=20", "TrainConfig.log_every=5",
      "TrainConfig.warmup_steps=2", "TrainConfig.learning_rate=1e-2"])
  s = train.train(str(tmp_path / "wd"), quiet=True)
  rows = [json.loads(l) for l in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  logged = [r for r in rows if "padding_fraction" in r]
  assert logged and all(r["padding_fraction"] == 0 for r in logged)
  assert all(r["useful_mfu"] == r["mfu"] for r in logged)
  assert s["final_eval_loss"] < 0.9 * s["step0_eval_loss"], s
