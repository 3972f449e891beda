"""Multitask finetuning data: the prompted corpus, the `prompted` objective, gin/adapt/mtf.gin.

The prompted corpus's examples never equal a zero-shot evaluation example and never come
from a held-out family; through seqio each architecture lays a pair out with loss on the
answer only; a text corpus with `prompted` (or the prompted corpus with a text objective)
is refused in one line; and an MTF run starts from a pretrained checkpoint.
"""
import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.data import sources, tasks
from objectax.data import zeroshot_tasks as zt
from objectax.models.registry import ConfigError
from objectax.models import registry as arch_registry
from objectax.objectives import registry

BYTES = seqio.ByteVocabulary(extra_ids=100)  # EOS = 1; a byte is id + 3
EOS = 1


def _prompts(examples):
  return {ex.prompt for ex in examples}


# ------------------------------------------------------------------ the corpus


def test_training_examples_never_equal_an_evaluation_example():
  train = [zt.training_example(i) for i in range(3000)]
  validation = [zt.training_example(i, "validation") for i in range(zt.VALIDATION_EXAMPLES)]
  families = [f for f, _ in train]
  # Only the trained families, in equal shares; the held-out ones never appear.
  assert {f for f, _ in validation} == set(families) == set(zt.TRAIN_FAMILIES)
  assert all(families.count(f) == 1000 for f in zt.TRAIN_FAMILIES)
  assert not any("The one whose" in ex.prompt for _, ex in train + validation)
  evaluation = set()
  for seed in range(5):
    evaluation |= _prompts(zt.recall_examples(256, seed))
    evaluation |= _prompts(zt.copy_examples(256, seed))
    evaluation |= _prompts(zt.facts_examples(256, seed, backward=False))
  assert len(evaluation) > 3000
  assert not evaluation & {ex.prompt for _, ex in train + validation}
  # Why: the training sizes (recall pairs, copied words, people) are never the evaluation's.
  recall_pairs = {ex.prompt.count(",") + 1 for f, ex in train if f == "recall"}
  copy_words = {len(ex.prompt.split()) - 1 for f, ex in train if f == "copy"}
  people = {ex.prompt.count(".") for f, ex in train if f == "facts_forward"}
  assert recall_pairs == set(zt.TRAIN_SIZES["recall"]) and 6 not in recall_pairs
  assert copy_words == set(zt.TRAIN_SIZES["copy"]) and 6 not in copy_words
  assert people == set(zt.TRAIN_SIZES["facts_forward"]) and zt.NUM_OPTIONS not in people
  # The answer is the correct option: recall's value follows the queried key.
  for f, ex in train[:300]:
    if f == "recall":
      listing, key = ex.prompt[:-3].rsplit(". ", 1)
      assert dict(p.split() for p in listing.split(", "))[key] == ex.options[ex.answer]
  # Deterministic, and the seed moves the stream.
  assert zt.training_example(7) == zt.training_example(7)
  assert zt.training_example(7, seed=1) != zt.training_example(7)


def test_prompted_source_is_endless_sharded_and_its_validation_fixed():
  source = sources.get_corpus("prompted").make_source()
  whole = [ex["inputs"] for ex in source.get_dataset("train", seed=3).take(40).as_numpy_iterator()]
  assert whole[5].decode() == zt.training_pair(5, "train", 3)[0]
  shards = [[ex["inputs"] for ex in source.get_dataset(
      "train", seed=3, shard_info=seqio.ShardInfo(k, 2)).take(20).as_numpy_iterator()]
      for k in range(2)]
  assert shards[0] == whole[0::2] and shards[1] == whole[1::2]
  ex = next(source.get_dataset("train").skip(10_000).as_numpy_iterator())  # no end in sight
  assert ex["text"] == ex["inputs"] + b" " + ex["targets"]
  validation = list(source.get_dataset("validation", seed=0).as_numpy_iterator())
  assert len(validation) == zt.VALIDATION_EXAMPLES
  assert validation == list(source.get_dataset("validation", seed=0).as_numpy_iterator())


# ------------------------------------------------------------------ the objective


def _pairs_dataset(pairs):
  return tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.array(i, np.int32), "targets": np.array(t, np.int32)}
               for i, t in pairs),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})


def test_objective_cuts_inputs_from_the_left_and_targets_from_the_right():
  obj = registry.get("prompted")
  cfg = obj.config_cls()
  lengths = obj.lengths(cfg, 10)
  assert (lengths.inputs, lengths.targets, lengths.exact) == (8, 2, False)  # Wang's 4:1
  assert obj.lengths(cfg, 1280).feature_lengths() == {"inputs": 1024, "targets": 256}
  features = {k: seqio.Feature(BYTES) for k in ("inputs", "targets")}
  pairs = [(range(10, 22), [5, 6, 7]), ([4], [9]), ([], [3]), ([3], [])]
  out = list(obj.preprocess(_pairs_dataset(pairs), lengths.feature_lengths(), features,
                            cfg).as_numpy_iterator())
  assert len(out) == 2  # empty prompt or answer: dropped
  assert out[0]["inputs"].tolist() == list(range(14, 22))  # the question end is kept
  assert out[0]["targets"].tolist() == [5, EOS]
  assert out[1]["inputs"].tolist() == [4] and out[1]["targets"].tolist() == [9, EOS]
  with_eos = obj.config_cls(eos_after_inputs=True)
  out = list(obj.preprocess(_pairs_dataset(pairs[:1]), lengths.feature_lengths(), features,
                            with_eos).as_numpy_iterator())
  assert out[0]["inputs"].tolist() == [*range(15, 22), EOS]
  with pytest.raises(ConfigError, match="inputs_fraction"):
    obj.config_cls(inputs_fraction=1.0)


@pytest.mark.parametrize("arch", ["causal_decoder", "prefix_decoder", "encoder_decoder"])
def test_each_architecture_puts_loss_on_the_answer_only(arch):
  obj = registry.get("prompted")
  assert arch in obj.architectures and "encoder_only" not in obj.architectures
  cfg = obj.config_cls()
  lengths = obj.lengths(cfg, 128)
  task = tasks.get_task("prompted", "prompted", cfg, BYTES, 128)
  assert task.name == "prompted_prompted"
  converter = arch_registry.get(arch).feature_converter(False, lengths.concat)
  ds = seqio.get_dataset(task.name, lengths.feature_lengths(), converter,
                         dataset_split="validation", shuffle=False, batch_size=8)
  batch = next(ds.as_numpy_iterator())
  for row in range(8):
    prompt, answer = zt.training_pair(row, "validation")
    prompt_ids = BYTES.encode(prompt)[-lengths.inputs:]
    answer_ids = [*BYTES.encode(answer)[:lengths.targets - 1], EOS]
    if arch == "encoder_decoder":
      enc = batch["encoder_input_tokens"][row]
      assert enc[:len(prompt_ids)].tolist() == prompt_ids and not enc[len(prompt_ids):].any()
      target_R, weight_R = batch["decoder_target_tokens"][row], batch["decoder_loss_weights"][row]
      assert target_R[weight_R > 0].tolist() == answer_ids
      continue
    target_R, weight_R = batch["decoder_target_tokens"][row], batch["decoder_loss_weights"][row]
    assert target_R[:len(prompt_ids) + len(answer_ids)].tolist() == prompt_ids + answer_ids
    assert target_R[weight_R > 0].tolist() == answer_ids  # no loss on the prompt
    # The prefix decoder attends bidirectionally over the prompt (+1 position: seqio).
    assert batch["decoder_causal_attention"][row].sum() == len(prompt_ids) + 1


def test_wrong_corpus_objective_pairings_are_one_line_errors():
  objective = registry.get("prompted")
  with pytest.raises(ConfigError, match=r"valid choices for Experiment.corpus: prompted$") as e:
    tasks.get_task("pydocs", "prompted", objective.config_cls(), BYTES, 64)
  assert "\n" not in str(e.value) and "'pydocs'" in str(e.value)
  full_lm = registry.get("full_lm")
  with pytest.raises(ConfigError, match=r"valid choices for Experiment.objective with it: "
                                        r"prompted") as e:
    tasks.get_task("prompted", "full_lm", full_lm.config_cls(), BYTES, 64)
  assert "\n" not in str(e.value) and "'full_lm'" in str(e.value)
  # Called directly on documents, the objective says what it needs.
  docs = tf.data.Dataset.from_tensors({"targets": tf.constant([5, 6], tf.int32)})
  with pytest.raises(ConfigError, match="Experiment.corpus = 'prompted'"):
    objective.preprocess(docs, {"inputs": 8, "targets": 2},
                         {k: seqio.Feature(BYTES) for k in ("inputs", "targets")})


# ------------------------------------------------------------------ gin/adapt/mtf.gin


@pytest.mark.e2e
@pytest.mark.slow
def test_mtf_finetunes_a_pretrained_checkpoint_at_a_fixed_rate(tfds_data_dir, tmp_path):
  from objectax.launch import adapt, configure, train  # pylint: disable=g-import-not-at-top
  fast = ["TrainConfig.batch_size=4", "TrainConfig.eval_batches=2", "TrainConfig.log_every=1",
          "Experiment.sequence_length=64"]
  configure.parse(["run/quickstart.gin"], [*fast, "TrainConfig.steps=6", "TrainConfig.warmup_steps=1",
                                           "TrainConfig.checkpoint_every=6",
                                           "TrainConfig.eval_every=6"])
  train.train(str(tmp_path / "source"), quiet=True)
  configure.parse(["adapt/mtf.gin"], [
      *fast, "TrainConfig.steps=3", "TrainConfig.checkpoint_every=3", "TrainConfig.eval_every=3",
      f"TrainConfig.init_from='{tmp_path / 'source'}'"])
  s = train.train(str(tmp_path / "mtf"), quiet=True)
  assert s["experiment"] == "causal_decoder_prompted_tiny_prompted_mtf"
  assert s["start_step"] == 0 and s["final_step"] == 3 and np.isfinite(s["final_eval_loss"])
  config_text = (tmp_path / "mtf" / "config.gin").read_text()
  assert "ModelConfig.dropout_rate = 0.1" in config_text
  rows = [json.loads(l) for l in (tmp_path / "mtf" / "metrics.jsonl").read_text().splitlines()]
  rates = [r["learning_rate"] for r in rows if "learning_rate" in r]
  assert len(rates) == 3 and np.allclose(rates, 1e-3)  # constant, from step 0
  # It started from the source's parameters (same tree), and training moved them.
  before = adapt._paths(_latest_params(tmp_path / "source"))  # pylint: disable=protected-access
  after = adapt._paths(_latest_params(tmp_path / "mtf"))  # pylint: disable=protected-access
  assert sorted(before) == sorted(after)
  assert any(not np.allclose(before[k], after[k]) for k in before)
  # A fresh model scores the prompted validation set far worse at step 0.
  configure.parse(["adapt/mtf.gin"], [*fast, "TrainConfig.steps=1", "TrainConfig.init_from=''",
                                           "TrainConfig.eval_every=1",
                                           "TrainConfig.checkpoint_every=1"])
  scratch = train.train(str(tmp_path / "scratch"), quiet=True)
  assert s["step0_eval_loss"] < scratch["step0_eval_loss"] - 0.2


def _latest_params(workdir):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from objectax.launch import adapt  # pylint: disable=g-import-not-at-top
  directory, step = adapt.resolve_source(str(workdir))
  with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                             options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    return m.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]["params"]
