"""Prefix LM (Wang et al.'s `prefix_lm` and T5's `t5_prefix_lm`): lengths, reconstruction,
split statistics, seeding and the decoder / encoder-decoder layouts.

Statistical tolerances: a measured mean is compared with its exact expected value at 4
standard errors, and a per-value frequency with its binomial expectation at 4.5 standard
deviations, so a correct implementation fails a given check with probability about 6e-5
(7e-6 per frequency); the runs are seeded, so each check is also reproducible.
"""
import collections
import math

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.models import decoder
from objectax.models import encdec
from objectax.objectives import prefix_lm
from objectax.models import registry as arch_registry
from objectax.objectives import registry
from objectax.objectives.prefix_lm import PrefixLMConfig, T5PrefixLMConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: ids 3..258 are bytes, EOS = 1; documents use ids in [3, 259).
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
HIGH = VOCAB.vocab_size - VOCAB.extra_ids
PLM = registry.get("prefix_lm")
T5 = registry.get("t5_prefix_lm")
BUDGET = 16      # prefix_lm: pieces of 16, split i in [1, 15]; t5_prefix_lm: chunks of C = 14.
CHUNK = BUDGET - 2
NUM_TOKENS = 20_000  # -> 1,294 prefix_lm pieces and 1,746 T5 chunks (1,147 full ones).
SIGMAS = 4.0


def _features(inputs_eos=True, targets_eos=True):
  return ot.features(VOCAB, inputs_eos=inputs_eos, targets_eos=targets_eos)


def _docs(num_tokens=NUM_TOKENS, seed=0, max_len=60):
  return ot.random_docs(num_tokens, seed, high=HIGH, max_len=max_len)


def _run(obj, docs, seed, budget=BUDGET, cfg=None, features=None):
  cfg = cfg or obj.config_cls()
  examples = ot.run(obj, cfg, docs, seed, obj.lengths(cfg, budget).feature_lengths(),
                    features or _features())
  return [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in examples]


def _stream(docs, eos=True):
  return np.concatenate([np.append(d, EOS) if eos else d for d in docs]).astype(np.int32)


def _t5_chunks(docs, chunk=CHUNK):
  """Independent numpy version of T5's per-document split_tokens: consecutive chunks."""
  return [d[j:j + chunk].tolist() for d in docs for j in range(0, len(d), chunk)]


def _t5_prefix_range(n, noise_density):
  """[lo, hi] of the prefix length of an n-token chunk (numpy float64, half to even)."""
  hi = n - 1
  return min(hi, max(1, int(np.round((1.0 - 2.0 * noise_density) * hi)))), hi


def _check_uniform(values, lo, hi, what):
  """Mean within SIGMAS standard errors of (lo + hi) / 2, and min / max reach lo / hi."""
  values = np.asarray(values)
  sd = math.sqrt(((hi - lo + 1) ** 2 - 1) / 12)  # discrete uniform on [lo, hi]
  tolerance = SIGMAS * sd / math.sqrt(len(values))
  assert abs(values.mean() - (lo + hi) / 2) < tolerance, (what, values.mean(), tolerance)
  assert values.min() == lo and values.max() == hi, (what, values.min(), values.max())


@pytest.fixture(scope="module")
def plm_docs():
  return _docs()


@pytest.fixture(scope="module")
def plm_examples(plm_docs):
  return _run(PLM, plm_docs, seed=0)


@pytest.fixture(scope="module")
def t5_docs():
  return _docs(seed=1)


@pytest.fixture(scope="module")
def t5_examples(t5_docs):
  return _run(T5, t5_docs, seed=0)


# ------------------------------------------------------------------------------- prefix_lm


def test_prefix_lm_worked_example_from_the_docstring():
  docs = [np.arange(3, 10), np.arange(10, 21), np.arange(21, 30)]
  assert _run(PLM, [d.astype(np.int32) for d in docs], seed=0, budget=8) == [
      ([3, 4, 5, 6, 7, 8, 9], [1]),
      ([10], [11, 12, 13, 14, 15, 16, 17]),
      ([18, 19, 20, 1, 21], [22, 23, 24])]


def test_prefix_lm_lengths_and_bounds(plm_examples):
  assert len(plm_examples) >= 1000
  lengths = PLM.lengths(PrefixLMConfig(), BUDGET)
  assert lengths == registry.TaskLengths(BUDGET, BUDGET - 1, BUDGET - 1, concat=BUDGET)
  assert lengths.budget == BUDGET and lengths.exact
  for inputs, targets in plm_examples:
    assert len(inputs) + len(targets) == BUDGET  # exact: no padding in a decoder row
    assert 1 <= len(inputs) <= lengths.inputs and 1 <= len(targets) <= lengths.targets


def test_prefix_lm_reconstructs_the_stream(plm_docs, plm_examples):
  stream_ids = _stream(plm_docs)
  assert len(plm_examples) == len(stream_ids) // BUDGET  # only the partial tail is dropped
  pieces = np.concatenate([i + t for i, t in plm_examples])
  np.testing.assert_array_equal(pieces, stream_ids[:len(pieces)])


def test_prefix_lm_split_is_uniform_on_1_to_budget_minus_1(plm_examples):
  splits = [len(inputs) for inputs, _ in plm_examples]
  # i ~ U{1, ..., 15}: mean 8, sd sqrt((15^2 - 1) / 12) = 4.32, so over n = 1,294 pieces the
  # standard error is 0.120 and the tolerance 4 SE = 0.48 (measured mean: 8.05).
  _check_uniform(splits, 1, BUDGET - 1, "split")
  # Every value equally likely: binomial(n, 1/15) counts within 4.5 standard deviations.
  n, p = len(splits), 1 / (BUDGET - 1)
  counts = collections.Counter(splits)
  for value in range(1, BUDGET):
    assert abs(counts[value] - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), (value, counts)


def test_prefix_lm_deterministic_for_a_seed_and_different_for_another(plm_docs):
  docs = plm_docs[:40]
  first, again, other = (_run(PLM, docs, seed) for seed in (3, 3, 4))
  assert first == again
  assert [len(i) for i, _ in first] != [len(i) for i, _ in other]
  # Same pieces, different splits.
  assert [i + t for i, t in first] == [i + t for i, t in other]


def test_prefix_lm_without_eos_concatenates_the_raw_documents(plm_docs):
  docs = plm_docs[:40]
  examples = _run(PLM, docs, 0, features=_features(targets_eos=False))
  pieces = np.concatenate([i + t for i, t in examples])
  stream_ids = _stream(docs, eos=False)
  assert len(examples) == len(stream_ids) // BUDGET and EOS not in pieces
  np.testing.assert_array_equal(pieces, stream_ids[:len(pieces)])


# ------------------------------------------- prefix_lm, two pieces per encoder-decoder row

PAIRED = PrefixLMConfig(pair_pieces=True)


@pytest.fixture(scope="module")
def paired_examples(plm_docs):
  return ot.run(PLM, PAIRED, plm_docs, 0, PLM.lengths(PAIRED, BUDGET).feature_lengths(),
                _features())


def _pieces(ex, segment):
  """One piece of a paired example: its inputs then its targets of that segment."""
  return np.concatenate([ex["inputs"][ex["inputs_segment_ids"] == segment],
                         ex["targets"][ex["targets_segment_ids"] == segment]])


def test_pair_split_docstring_example():
  out = prefix_lm.pair_split(tf.constant([[[5, 6, 7, 8], [9, 10, 11, 12]]]), tf.constant([1]))
  assert {k: v.numpy().tolist()[0] for k, v in out.items()} == {
      "inputs": [5, 9, 10, 11], "inputs_segment_ids": [1, 2, 2, 2],
      "inputs_positions": [0, 0, 1, 2], "targets": [6, 7, 8, 12],
      "targets_segment_ids": [1, 1, 1, 2], "targets_positions": [0, 1, 2, 0]}


def test_paired_lengths_are_two_full_rows():
  lengths = PLM.lengths(PAIRED, 626)
  assert lengths == registry.TaskLengths(626, 626, 626, per_row=2)
  assert lengths.budget == 2 * 626 and lengths.exact
  assert PLM.lengths(PrefixLMConfig(), 626).per_row == 1
  with pytest.raises(ConfigError, match="pair_pieces must be True, False or None"):
    PrefixLMConfig(pair_pieces="yes")


def test_paired_examples_fill_both_streams_with_complementary_splits(plm_docs,
                                                                    paired_examples):
  stream_ids = _stream(plm_docs)
  # Pieces two by two: only the partial tail piece and an odd last piece are dropped.
  assert len(paired_examples) == (len(stream_ids) // BUDGET) // 2 >= 600
  splits = []
  for ex in paired_examples:
    for key in ("inputs", "targets"):
      assert len(ex[key]) == BUDGET and (ex[key] > 0).all()  # no padding in either stream
      seg = ex[f"{key}_segment_ids"]
      first = int((seg == 1).sum())
      assert 1 <= first < BUDGET and seg.tolist() == [1] * first + [2] * (BUDGET - first)
      assert ex[f"{key}_positions"].tolist() == (list(range(first))
                                                 + list(range(BUDGET - first)))
    i = int((ex["inputs_segment_ids"] == 1).sum())
    # The second piece's split is B - i: its prefix is the first piece's target length.
    assert int((ex["targets_segment_ids"] == 1).sum()) == BUDGET - i
    splits.append(i)
  # Reading each example's two pieces back in order gives the token stream.
  pieces = np.concatenate([_pieces(ex, s) for ex in paired_examples for s in (1, 2)])
  np.testing.assert_array_equal(pieces, stream_ids[:len(pieces)])
  # Each pair's split is i ~ U{1, ..., B - 1}, as for single pieces (n = 647 pairs).
  _check_uniform(splits, 1, BUDGET - 1, "paired split")


def test_paired_examples_are_seeded(plm_docs):
  lengths = PLM.lengths(PAIRED, BUDGET).feature_lengths()
  first, again, other = (ot.run(PLM, PAIRED, plm_docs[:60], seed, lengths, _features())
                         for seed in (3, 3, 4))
  same = lambda a, b: all((x[k] == y[k]).all() for x, y in zip(a, b) for k in x)
  assert len(first) == len(other) >= 10 and same(first, again) and not same(first, other)


def test_encoder_decoder_converter_keeps_a_paired_examples_segments(paired_examples):
  lengths = PLM.lengths(PAIRED, BUDGET).feature_lengths()
  examples = paired_examples[:40]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]})
  rows = list(encdec.feature_converter(pack=True)(ds, lengths).as_numpy_iterator())
  assert len(rows) == len(examples)  # one pair per row, nothing packed beside it
  for ex, row in zip(examples, rows):
    assert row["encoder_input_tokens"].tolist() == ex["inputs"].tolist()
    assert row["decoder_target_tokens"].tolist() == ex["targets"].tolist()
    assert row["encoder_segment_ids"].tolist() == ex["inputs_segment_ids"].tolist()
    assert row["decoder_positions"].tolist() == ex["targets_positions"].tolist()
    assert (row["decoder_loss_weights"] == 1).all()
    # Teacher forcing restarts at the second piece: its first input is BOS (0), not the
    # first piece's last target.
    start = int((ex["targets_segment_ids"] == 1).sum())
    assert row["decoder_input_tokens"][0] == 0 and row["decoder_input_tokens"][start] == 0
    assert row["decoder_input_tokens"][1:start].tolist() == ex["targets"][:start - 1].tolist()
    assert row["decoder_input_tokens"][start + 1:].tolist() == ex["targets"][start:-1].tolist()
  with pytest.raises(ConfigError, match="needs Experiment.pack = True"):
    encdec.feature_converter(pack=False)(ds, lengths)


# ---------------------------------------------------------------------------- t5_prefix_lm


def test_t5_prefix_lm_worked_example_from_the_docstring():
  docs = [np.arange(3, 10), np.array([10, 11, 12]), np.array([], np.int32), np.array([13])]
  assert _run(T5, [d.astype(np.int32) for d in docs], seed=0, budget=8) == [
      ([3, 4, 5, 1], [6, 7, 8, 1]),
      ([1], [9, 1]),
      ([10, 11, 1], [12, 1]),
      ([1], [13, 1])]


def test_t5_prefix_lm_reconstructs_each_chunk(t5_docs, t5_examples):
  chunks = _t5_chunks(t5_docs)
  assert len(t5_examples) == len(chunks) >= 1000
  for (inputs, targets), chunk in zip(t5_examples, chunks):
    assert inputs[-1] == EOS and targets[-1] == EOS
    assert inputs[:-1] + targets[:-1] == chunk


def test_t5_prefix_lm_lengths_are_bounds_and_padding_is_measured(t5_examples):
  lengths = T5.lengths(T5PrefixLMConfig(), BUDGET)
  assert lengths == registry.TaskLengths(CHUNK, CHUNK, CHUNK, concat=BUDGET, exact=False)
  totals = []
  for inputs, targets in t5_examples:
    assert 1 <= len(inputs) <= CHUNK and 2 <= len(targets) <= CHUNK
    totals.append(len(inputs) + len(targets))
  assert max(totals) == BUDGET  # a full chunk fills the row
  # Unpacked decoder rows are padded by 1 - mean(n + 2) / B: here about 0.14 (the documents'
  # tails; reported to the lead), never 0 since documents are not concatenated.
  padding = 1 - np.mean(totals) / BUDGET
  assert 0.05 < padding < 0.3, padding


@pytest.mark.parametrize("noise_density", [0.5, 0.25])
def test_t5_prefix_length_range_per_chunk_length(t5_docs, t5_examples, noise_density):
  if noise_density == 0.5:
    examples = t5_examples
  else:
    examples = _run(T5, t5_docs, 0, cfg=T5PrefixLMConfig(noise_density=noise_density))
  by_n = collections.defaultdict(list)
  for inputs, targets in examples:
    by_n[len(inputs) + len(targets) - 2].append(len(inputs) - 1)
  assert by_n[1] and set(by_n[1]) == {0}  # one-token chunks: inputs [EOS], T5's p = 0
  for n, prefixes in by_n.items():
    lo, hi = _t5_prefix_range(n, noise_density)
    assert lo <= min(prefixes) and max(prefixes) <= hi, (n, lo, hi)
  # Full chunks (n = 14) are the majority: uniform on [1, 13] at 0.5, [6, 13] at 0.25
  # (round(0.5 * 13) = 6, half to even).
  lo, hi = _t5_prefix_range(CHUNK, noise_density)
  assert (lo, hi) == ({0.5: 1, 0.25: 6}[noise_density], CHUNK - 1)
  assert len(by_n[CHUNK]) >= 1000
  _check_uniform(by_n[CHUNK], lo, hi, f"prefix of full chunks at {noise_density}")


def test_t5_prefix_lm_deterministic_for_a_seed_and_different_for_another(t5_docs):
  docs = t5_docs[:20]
  first, again, other = (_run(T5, docs, seed) for seed in (3, 3, 4))
  assert first == again
  assert [len(i) for i, _ in first] != [len(i) for i, _ in other]


def test_t5_prefix_lm_without_eos(t5_docs):
  docs = t5_docs[:30]
  chunks = _t5_chunks(docs)
  # No inputs EOS: a one-token chunk would have empty inputs, so it is dropped.
  examples = _run(T5, docs, 0, features=_features(inputs_eos=False, targets_eos=False))
  kept = [c for c in chunks if len(c) > 1]
  assert len(kept) < len(chunks) and len(examples) == len(kept)
  for (inputs, targets), chunk in zip(examples, kept):
    assert inputs and targets and inputs + targets == chunk


def test_documents_of_one_static_length():
  """Equal-length documents come out of ragged_batch dense; both objectives take them."""
  docs = np.arange(3, 3 + 4 * 10, dtype=np.int32).reshape(4, 10)
  ds = tf.data.Dataset.from_tensor_slices({"targets": docs})
  assert ds.element_spec["targets"].shape == (10,)
  for obj, budget in ((PLM, 8), (T5, 8)):
    with seqio.utils.map_seed_manager(0):
      out = obj.preprocess(ds, obj.lengths(obj.config_cls(), budget).feature_lengths(),
                           _features(), obj.config_cls())
    pairs = [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in out.as_numpy_iterator()]
    if obj is PLM:
      flat = [tok for i, t in pairs for tok in i + t]
      assert flat == _stream(list(docs))[:len(flat)].tolist() and len(pairs) == 44 // 8
    else:
      assert [i[:-1] + t[:-1] for i, t in pairs] == _t5_chunks(list(docs), chunk=6)


# ------------------------------------------------------------------------ model layouts


def _convert(converter, examples, task_lengths):
  ds = tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.array(i, np.int32), "targets": np.array(t, np.int32)}
               for i, t in examples),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})
  return list(converter(ds, task_lengths.feature_lengths()).as_numpy_iterator())


@pytest.mark.parametrize("obj_name", ["prefix_lm", "t5_prefix_lm"])
def test_decoder_layout_loss_on_targets_and_prefix_attention(obj_name, plm_examples,
                                                             t5_examples):
  obj = registry.get(obj_name)
  lengths = obj.lengths(obj.config_cls(), BUDGET)
  examples = (plm_examples if obj_name == "prefix_lm" else t5_examples)[:200]
  rows = _convert(decoder.feature_converter(pack=False, concat_length=lengths.concat),
                  examples, lengths)
  assert len(rows) == len(examples)
  for (inputs, targets), row in zip(examples, rows):
    i, n = len(inputs), len(inputs) + len(targets)
    pad = [0] * (BUDGET - n)
    assert all(v.shape == (BUDGET,) for v in row.values())
    assert row["decoder_target_tokens"].tolist() == inputs + targets + pad
    assert row["decoder_loss_weights"].tolist() == [0] * i + [1] * len(targets) + pad
    # Bidirectional over the inputs plus one position (T5 `pack_prefix_lm_decoder_only`:
    # pos <= split).
    assert row["decoder_causal_attention"].tolist() == [1] * (i + 1) + [0] * (BUDGET - i - 1)
    if obj_name == "prefix_lm":
      assert not pad and (row["decoder_target_tokens"] > 0).all()  # no padding at all


@pytest.mark.parametrize("obj_name", ["prefix_lm", "t5_prefix_lm"])
def test_packed_decoder_rows_are_budget_long(obj_name, plm_examples, t5_examples):
  obj = registry.get(obj_name)
  lengths = obj.lengths(obj.config_cls(), BUDGET)
  if obj_name == "prefix_lm":
    examples = plm_examples[:12]
  else:  # some short chunks (document tails) and some full ones
    examples = [ex for ex in t5_examples if len(ex[0]) + len(ex[1]) <= 8][:8] + t5_examples[:4]
  rows = _convert(decoder.feature_converter(pack=True, concat_length=lengths.concat),
                  examples, lengths)
  assert all(v.shape == (BUDGET,) for row in rows for v in row.values())
  tokens = np.concatenate([r["decoder_target_tokens"] for r in rows])
  np.testing.assert_array_equal(tokens[tokens > 0],
                                np.concatenate([i + t for i, t in examples]))
  if obj_name == "prefix_lm":  # every example fills its row: one segment per row
    assert len(rows) == len(examples)
    assert all((r["decoder_segment_ids"] == 1).all() for r in rows)
  else:  # short chunks share rows
    assert len(rows) < len(examples)


@pytest.mark.parametrize("obj_name", ["prefix_lm", "t5_prefix_lm"])
def test_encoder_decoder_layout(obj_name, plm_examples, t5_examples):
  obj = registry.get(obj_name)
  lengths = obj.lengths(obj.config_cls(), BUDGET)
  examples = (plm_examples if obj_name == "prefix_lm" else t5_examples)[:50]
  rows = _convert(seqio.EncDecFeatureConverter(pack=False), examples, lengths)
  for (inputs, targets), row in zip(examples, rows):
    assert row["encoder_input_tokens"].tolist() == inputs + [0] * (lengths.inputs - len(inputs))
    assert row["decoder_loss_weights"].tolist() == ([1] * len(targets)
                                                    + [0] * (lengths.targets - len(targets)))


# ------------------------------------------------------------- config, registry, seqio


def test_in_a_seqio_task_with_seed(plm_docs):
  for obj in (PLM, T5):
    task = ot.task_over_docs(f"objectax_test_{obj.name}", obj, obj.config_cls(), plm_docs[:20],
                             _features())
    lengths = obj.lengths(obj.config_cls(), BUDGET)
    first = ot.task_pairs(task, lengths, seed=5)
    assert first and first == ot.task_pairs(task, lengths, seed=5)
    assert first != ot.task_pairs(task, lengths, seed=6)


def test_config_errors():
  with pytest.raises(ConfigError, match="minimum token budget is 2"):
    PLM.lengths(PrefixLMConfig(), 1)
  assert PLM.lengths(PrefixLMConfig(), 2) == registry.TaskLengths(2, 1, 1, concat=2)
  with pytest.raises(ConfigError, match="minimum token budget is 4"):
    T5.lengths(T5PrefixLMConfig(), 3)
  assert T5.lengths(T5PrefixLMConfig(), 626) == registry.TaskLengths(624, 624, 624, concat=626,
                                                                     exact=False)
  for bad in (0.0, 1.0, -0.1, 1.5, float("nan"), "0.5", True):
    with pytest.raises(ConfigError, match="noise_density must be in"):
      T5PrefixLMConfig(noise_density=bad)
  ds = ot.docs_dataset([])
  for obj, cfg in ((PLM, PrefixLMConfig()), (T5, T5PrefixLMConfig())):
    with pytest.raises(ConfigError, match="sequence_length"):
      obj.preprocess(ds, {"targets": 15}, _features(), cfg)
    with pytest.raises(ConfigError, match="equal inputs and targets"):
      obj.preprocess(ds, {"inputs": 15, "targets": 14}, _features(), cfg)
    with pytest.raises(ConfigError, match="minimum token budget"):
      obj.preprocess(ds, {"inputs": 0, "targets": 0}, _features(), cfg)
    with pytest.raises(ConfigError, match="output_features"):
      obj.preprocess(ds, {"inputs": 15, "targets": 15}, {"targets": seqio.Feature(VOCAB)}, cfg)
    with pytest.raises(ConfigError, match="same vocabulary"):
      obj.preprocess(ds, {"inputs": 15, "targets": 15},
                     {"inputs": seqio.Feature(seqio.ByteVocabulary(extra_ids=5)),
                      "targets": seqio.Feature(VOCAB)}, cfg)


def test_registration_and_gin():
  assert PLM is prefix_lm.OBJECTIVE and T5 is prefix_lm.T5_OBJECTIVE
  assert PLM.config_cls is PrefixLMConfig and T5.config_cls is T5PrefixLMConfig
  for obj in (PLM, T5):
    assert obj.features == ("inputs", "targets")
    assert set(obj.architectures) == {"causal_decoder", "prefix_decoder", "encoder_decoder"}
    with pytest.raises(ConfigError, match="does not support architecture 'encoder_only'"):
      arch_registry.check_supports("encoder_only", obj)
  with gin.unlock_config():
    gin.parse_config("T5PrefixLMConfig.noise_density = 0.25")
  try:
    assert T5PrefixLMConfig().noise_density == 0.25
  finally:
    gin.clear_config()
  assert T5PrefixLMConfig().noise_density == 0.5


def test_vectorized_helpers_docstring_examples():
  n = prefix_lm.chunk_lengths(tf.constant([7, 3, 0, 1]), 6)
  assert n.numpy().tolist() == [6, 1, 3, 1]
  lo, hi = prefix_lm.prefix_bounds(tf.constant([1, 2, 6, 11]), 0.25)
  assert lo.numpy().tolist() == [0, 1, 2, 5] and hi.numpy().tolist() == [0, 1, 5, 10]
  assert [_t5_prefix_range(n, 0.25) for n in (1, 2, 6, 11)] == [(0, 0), (1, 1), (2, 5), (5, 10)]
  inputs, targets = prefix_lm.split_chunks(tf.constant([5, 6, 7, 8, 9]), tf.constant([3, 2]),
                                           tf.constant([1, 0]))
  assert inputs.to_list() == [[5], []] and targets.to_list() == [[6, 7], [8, 9]]
  inputs, targets = prefix_lm.split_pieces(tf.constant([[5, 6, 7, 8]]), tf.constant([1]))
  assert inputs.to_list() == [[5]] and targets.to_list() == [[6, 7, 8]]
