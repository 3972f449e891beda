"""The yardstick (`objectax eval`): exact on a uniform model for every architecture, the
same scored text for every architecture, seqio's layouts, and the command on a trained run."""
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.launch import configure, main, train
from objectax.launch.eval import evaluate
from objectax.launch.eval import yardstick
from objectax.models import registry as arch_registry
from objectax.models.config import ModelConfig
from objectax.objectives import span_corruption

VOCAB = seqio.ByteVocabulary(extra_ids=100)  # 359 ids; the model pads them to 384 rows
LENGTH = 48
TEXTS = ["Thank you for inviting me to your party last week, it was lovely.",
         "The quick brown fox jumps over the lazy dog; then it naps all afternoon long.",
         "Short text here, still long.", "x" * 30 + " and some more words to finish it off",
         "Bits per byte do not depend on the tokenizer, which is why we report them."]
ARCHS = ["causal_decoder", "prefix_decoder", "encoder_decoder", "encoder_only"]
SETTINGS = yardstick.Settings(documents=len(TEXTS), batch_size=4)


def _docs(texts=TEXTS, max_tokens=LENGTH):
  return [yardstick.make_document(VOCAB, t, VOCAB.encode(t), max_tokens) for t in texts]


def _model(arch, tie):
  cfg = ModelConfig(d_model=32, num_heads=2, head_dim=16, mlp_dim=64, num_layers=1,
                    tie_embeddings=tie).with_vocab_size(VOCAB.vocab_size)
  model = arch_registry.get(arch).make_model(cfg)
  features, _, _ = arch_registry.get(arch).score_layout(
      yardstick.infilling_pairs(_docs()[:1], 0.15, 3.0, 40, VOCAB.vocab_size, 0), LENGTH)
  params = nn.meta.unbox(model.init(jax.random.key(1), features)["params"])
  return model, params, cfg.vocab_size


def _uniform(params, tie):
  """The logits' table zeroed: tied logits are embed.attend(x), untied ones x @ head."""
  params = jax.tree.map(lambda x: x, params)  # a copy of the containers
  if tie:
    params["embed"]["embedding"] = jnp.zeros_like(params["embed"]["embedding"])
  else:
    params["head"] = jnp.zeros_like(params["head"])
  return params


@pytest.mark.parametrize("arch,tie", [("causal_decoder", True), ("prefix_decoder", False),
                                      ("encoder_decoder", False), ("encoder_decoder", True),
                                      ("encoder_only", True)])
def test_uniform_model_scores_log2_v_on_every_evaluation(arch, tie):
  model, params, v = _model(arch, tie)
  scores = yardstick.evaluate(model, _uniform(params, tie), arch, _docs(),
                              vocab_size=VOCAB.vocab_size, sequence_length=LENGTH,
                              settings=SETTINGS)
  ran = [s for s in scores if not s.skipped]
  skipped = {s.name for s in scores if s.skipped}
  assert skipped == ({"continuation_25", "continuation_50", "continuation_75", "continuation",
                      "left_to_right"} if arch == "encoder_only" else set())
  assert {s.name for s in ran} >= {"infill_0.15_3", "infill_0.5_32"}
  for s in ran:
    assert s.scored_tokens > 0 and s.num_bytes > 0, s
    assert s.bits_per_token == pytest.approx(math.log2(v), rel=1e-6), s.name
    assert s.bits_per_target_token == pytest.approx(math.log2(v), rel=1e-6), s.name
    assert s.bits_per_byte == pytest.approx(s.bits_per_token * s.tokens_per_byte, rel=1e-12)
    # Byte vocabulary, ASCII text: every scored token is one byte.
    assert s.num_bytes == s.scored_tokens, s.name
  # The scoring reads the logits: the same model before zeroing is not uniform.
  before = yardstick.evaluate(model, params, arch, _docs(), vocab_size=VOCAB.vocab_size,
                              sequence_length=LENGTH, settings=SETTINGS)
  assert all(abs(s.bits_per_token - math.log2(v)) > 1e-3 for s in before if not s.skipped)


def test_bits_per_byte_is_bits_per_token_times_tokens_per_byte():
  s = yardstick.Score("x", "", nats=1234.5, scored_tokens=321, num_bytes=1017, target_nats=1300.0,
                      target_tokens=400)
  assert s.bits_per_byte == pytest.approx(s.bits_per_token * s.tokens_per_byte, rel=1e-15)
  assert s.bits_per_byte == pytest.approx(1234.5 / math.log(2) / 1017, rel=1e-15)
  assert s.bits_per_target_token == pytest.approx(1300.0 / math.log(2) / 400, rel=1e-15)
  skipped = yardstick.Score("y", "", skipped="why").as_dict()
  assert skipped["bits_per_byte"] is None and skipped["skipped"] == "why"


def test_bytes_are_counted_in_context_and_add_up():
  text = "naïve café: 1 € — ok"
  doc = _docs([text])[0]
  assert doc.byte_offsets[-1] == len(text.encode("utf-8"))
  for f in (0.25, 0.5, 0.75):  # prefix bytes + continuation bytes = the whole text's bytes
    (pair,) = yardstick.continuation_pairs([doc], f)
    k = len(pair.inputs)
    assert len(VOCAB.decode(doc.ids[:k].tolist()).encode()) + pair.num_bytes == len(text.encode())
  (whole,) = yardstick.left_to_right_pairs([doc])
  assert whole.num_bytes == len(text.encode()) and len(whole.inputs) == 0


def test_spans_to_sentinels_is_t5s_noise_span_to_unique_sentinel():
  rng = np.random.default_rng(0)
  for _ in range(5):
    tokens = rng.integers(3, 250, 40).astype(np.int32)
    noise = yardstick.noise_mask(40, 0.3, 3.0, seed=int(rng.integers(100)), index=0)
    for drop in (noise, ~noise):
      ours, original = yardstick.spans_to_sentinels(tokens, drop, VOCAB.vocab_size)
      theirs = span_corruption.noise_span_to_unique_sentinel(
          tf.constant(tokens), tf.constant(drop), VOCAB.vocab_size).numpy()
      np.testing.assert_array_equal(ours, theirs)
      np.testing.assert_array_equal(original, ours < VOCAB.vocab_size - 100)


def test_infilling_scores_the_same_text_with_the_same_masks_for_every_architecture():
  docs = _docs()
  raw = yardstick.infill_raw_length(0.3, 3.0, LENGTH)
  pairs = yardstick.infilling_pairs(docs, 0.3, 3.0, raw, VOCAB.vocab_size, seed=3)
  again = yardstick.infilling_pairs(docs, 0.3, 3.0, raw, VOCAB.vocab_size, seed=3)
  other = yardstick.infilling_pairs(docs, 0.3, 3.0, raw, VOCAB.vocab_size, seed=4)
  assert all(np.array_equal(a.targets, b.targets) for a, b in zip(pairs, again))
  assert not all(np.array_equal(a.targets, b.targets) for a, b in zip(pairs, other))
  scored = {}
  for arch in ARCHS:
    features, all_w, scored_w = arch_registry.get(arch).score_layout(pairs, LENGTH)
    targets = features[arch_registry.get(arch).targets_key]
    scored[arch] = [targets[i][scored_w[i] > 0].tolist() for i in range(len(pairs))]
    assert (scored_w <= all_w).all()
  for i, (doc, pair) in enumerate(zip(docs, pairs)):
    noise = pair.aligned[1][:-1] > 0
    expected = doc.ids[:raw][noise].tolist()  # the original noise tokens, in order
    assert all(scored[a][i] == expected for a in ARCHS)
    assert pair.num_bytes == len(expected)
    assert noise.sum() == round(0.3 * min(len(doc.ids), raw))  # T5's exact noise count
    # The encoder-only input: noise tokens masked with <extra_id_0>, then EOS.
    np.testing.assert_array_equal(pair.aligned[0][:-1][noise], VOCAB.vocab_size - 1)
    assert pair.aligned[0][-1] == 1 and pair.inputs[-1] == 1 and pair.targets[-1] == 1


def _seqio_rows(converter, examples, lengths):
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]})
  return list(converter(ds, lengths).as_numpy_iterator())


@pytest.mark.parametrize("arch", ARCHS)
def test_layouts_are_seqios_unpacked_layouts(arch):
  """Every row equals what the architecture's own (training) feature converter emits."""
  docs = _docs()
  spec = arch_registry.get(arch)
  pairs = yardstick.infilling_pairs(docs, 0.15, 3.0, 40, VOCAB.vocab_size, 0)
  if arch != "encoder_only":
    pairs += yardstick.continuation_pairs(docs, 0.25)
  features, _, _ = spec.score_layout(pairs, LENGTH)
  examples = [{"inputs": p.aligned[0], "targets": p.aligned[1]} if arch == "encoder_only"
              else {"inputs": p.inputs, "targets": p.targets} for p in pairs]
  lengths = {"inputs": LENGTH, "targets": LENGTH}
  # The decoders' rows are fixed at the budget (TaskLengths.concat), as for prefix_lm.
  converter = spec.feature_converter(False, LENGTH if arch.endswith("_decoder") else 0)
  rows = _seqio_rows(converter, examples, lengths)
  for i, row in enumerate(rows):
    for key, value in row.items():
      np.testing.assert_array_equal(features[key][i], value, err_msg=f"{arch} {key} row {i}")
  assert set(rows[0]) == set(features)
  if arch == "encoder_decoder":  # left to right: the encoder reads one EOS
    features, _, _ = spec.score_layout(yardstick.left_to_right_pairs(docs), LENGTH)
    assert (features["encoder_input_tokens"][:, 0] == 1).all()
    assert (features["encoder_input_tokens"][:, 1:] == 0).all()


@pytest.mark.e2e
def test_eval_command_on_a_trained_run(trained_quickstart, tmp_path, capsys):
  """A few training steps already score below the uniform log2(V) on every evaluation."""
  wd = trained_quickstart
  assert main.run(["eval", f"--workdir={wd}", "--documents=6", "--no_zeroshot"]) == 0
  out = capsys.readouterr().out
  assert "continuation_50" in out and "infill_0.5_32" in out
  result = json.loads((wd / "eval" / "yardstick.json").read_text())
  assert (result["step"], result["documents"], result["arch"]) == (12, 6, "causal_decoder")
  uniform = result["uniform_bits_per_token"]
  assert uniform == math.log2(8192)
  for name, row in result["evaluations"].items():
    assert row["skipped"] is None and row["bits_per_token"] < uniform - 0.5, name
    assert row["bits_per_byte"] == pytest.approx(row["bits_per_token"] * row["tokens_per_byte"])
  # Pooled continuation = the three splits' sums; the earlier checkpoint scores worse.
  rows = result["evaluations"]
  assert rows["continuation"]["scored_tokens"] == sum(
      rows[f"continuation_{p}"]["scored_tokens"] for p in (25, 50, 75))
  earlier = evaluate.evaluate_workdir(str(wd), step=6, documents=6, zeroshot_names=(),
                                        say=lambda m: None)
  assert (earlier["evaluations"]["continuation"]["bits_per_byte"]
          > rows["continuation"]["bits_per_byte"])
  # Bad input: one line, exit status 2.
  assert main.run(["eval", f"--workdir={wd}", "--step=7"]) == 2
  assert main.run(["eval", f"--workdir={tmp_path / 'nothing'}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-2] == f"objectax: error: no checkpoint step 7 in {wd}; valid choices: 6, 12"
  assert "is not a training workdir" in err[-1]
