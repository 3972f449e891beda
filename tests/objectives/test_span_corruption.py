"""Span corruption: exact lengths, reconstruction, sentinels, statistics and seeding."""
import collections
import functools
import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import lengths as span_lengths
from objectax.objectives import registry
from objectax.objectives import span_corruption
from objectax.objectives.span_corruption import SpanCorruptionConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: ids 3..258 are bytes, 259..358 the 100 sentinels, EOS = 1.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
FIRST_SENTINEL = VOCAB.vocab_size - VOCAB.extra_ids
OBJ = registry.get("span_corruption")
CFG = SpanCorruptionConfig()
BUDGET = 150  # -> raw 134, inputs 122, targets 28: 20 noise tokens in 7 spans.


_features = functools.partial(ot.features, VOCAB)  # (inputs_eos=True, targets_eos=True)


_random_docs = functools.partial(ot.random_docs, high=FIRST_SENTINEL)  # (num_tokens, seed=0)


def _corrupt(docs, seed, sequence_length, cfg=CFG, features=None):
  return ot.run(OBJ, cfg, docs, seed, sequence_length, features or _features())


_raw_chunks = ot.raw_chunks


def merge(inputs, targets, eos_id=EOS, first_sentinel=FIRST_SENTINEL):
  """Inverse of span corruption: put each target span back where its sentinel sits.

  inputs [3, 358, 6, 357, 1], targets [358, 4, 5, 357, 8, 1] -> [3, 4, 5, 6, 8].
  """
  inputs, targets = list(inputs), list(targets)
  if eos_id is not None:
    assert inputs.pop() == eos_id and targets.pop() == eos_id
  assert targets[0] >= first_sentinel, "targets must start with a sentinel"
  fills, current = {}, None
  for tok in targets:
    if tok >= first_sentinel:
      assert tok not in fills, "sentinel repeated in targets"
      current = fills[tok] = []
    else:
      current.append(tok)
  out = []
  for tok in inputs:
    out.extend(fills.pop(tok) if tok >= first_sentinel else [tok])
  assert not fills, "targets hold a sentinel the inputs lack"
  return np.array(out, np.int32)


def test_worked_example_from_the_docstring():
  lengths = OBJ.lengths(CFG, 45)
  assert lengths == registry.TaskLengths(raw=39, inputs=36, targets=9)
  docs = [np.arange(3, 43, dtype=np.int32)]
  (ex,) = _corrupt(docs, 0, lengths.feature_lengths())
  assert ex["inputs"].tolist() == [3, 4, 5, 6, 358] + list(range(10, 39)) + [357, 1]
  assert ex["targets"].tolist() == [358, 7, 8, 9, 357, 39, 40, 41, 1]


def test_noise_span_to_unique_sentinel_docstring_example():
  tokens = tf.constant([3, 4, 5, 6, 7, 8])
  noise = tf.constant([False, True, True, False, False, True])
  f = span_corruption.noise_span_to_unique_sentinel
  assert f(tokens, noise, 359).numpy().tolist() == [3, 358, 6, 7, 357]
  assert f(tokens, ~noise, 359).numpy().tolist() == [358, 4, 5, 357, 8]


@pytest.fixture(scope="module")
def thousand_examples():
  lengths = OBJ.lengths(CFG, BUDGET)
  docs = _random_docs(1000 * lengths.raw, seed=0)
  examples = _corrupt(docs, 7, lengths.feature_lengths())
  return lengths, examples, _raw_chunks(docs, lengths.raw)


def test_lengths_are_exact(thousand_examples):
  lengths, examples, raws = thousand_examples
  assert (lengths.raw, lengths.inputs, lengths.targets) == (134, 122, 28)
  assert len(examples) == len(raws) >= 1000
  ot.assert_exact_lengths(examples, lengths, EOS)


def test_inputs_and_targets_reconstruct_the_raw_chunk(thousand_examples):
  _, examples, raws = thousand_examples
  ot.assert_reconstructs(ot.pairs(examples), raws, merge)


def test_sentinels_are_unique_and_count_down_from_vocab_size_minus_one(thousand_examples):
  lengths, examples, _ = thousand_examples
  num_spans = span_lengths.span_counts(lengths.raw, 0.15, 3.0).num_spans
  expected = list(range(VOCAB.vocab_size - 1, VOCAB.vocab_size - 1 - num_spans, -1))
  for ex in examples:
    assert [t for t in ex["inputs"] if t >= FIRST_SENTINEL] == expected
    assert [t for t in ex["targets"] if t >= FIRST_SENTINEL] == expected
    # random_roll=False: the chunk ends in noise, so the inputs end <extra_id_k> EOS.
    assert ex["inputs"][-2] == expected[-1] and ex["targets"][-2] < FIRST_SENTINEL


def _runs(tokens):
  """Token runs between sentinels: [5, 358, 6, 7, 357] -> [[5], [6, 7], []]."""
  runs = [[]]
  for tok in tokens:
    if tok >= FIRST_SENTINEL:
      runs.append([])
    else:
      runs[-1].append(tok)
  return runs


def _span_lengths(ex):
  """(noise span lengths, non-noise span lengths) of one example (EOS stripped)."""
  nonnoise_runs, noise_runs = _runs(ex["inputs"][:-1]), _runs(ex["targets"][:-1])
  # Inputs: nn_0 <s0> nn_1 <s1> ... <s_k-1>; targets: <s0> noise_0 <s1> noise_1 ...
  assert nonnoise_runs[-1] == [] and noise_runs[0] == []
  return [len(r) for r in noise_runs[1:]], [len(r) for r in nonnoise_runs[:-1]]


def _composition_pmf(total, parts):
  """P(one part == k) for a uniformly random composition of `total` into `parts` positive parts."""
  return {k: math.comb(total - k - 1, parts - 2) / math.comb(total - 1, parts - 1)
          for k in range(1, total - parts + 2)}


def test_noise_statistics(thousand_examples):
  lengths, examples, _ = thousand_examples
  noise_tokens = noise_spans = 0
  noise_hist, nonnoise_hist = collections.Counter(), collections.Counter()
  for ex in examples:
    noise, nonnoise = _span_lengths(ex)
    assert len(noise) == len(nonnoise) and min(noise) >= 1 and min(nonnoise) >= 1
    noise_tokens += sum(noise)
    noise_spans += len(noise)
    noise_hist.update(noise)
    nonnoise_hist.update(nonnoise)
  density = noise_tokens / (len(examples) * lengths.raw)
  assert abs(density - 0.15) < 0.01
  assert abs(noise_tokens / noise_spans - 3.0) < 0.3
  # Span lengths follow T5's uniformly random partition (not fixed length-3 spans):
  # compare the histograms with the exact distribution, total variation < 0.05.
  counts = span_lengths.span_counts(lengths.raw, 0.15, 3.0)
  for hist, total in ((noise_hist, counts.num_noise), (nonnoise_hist, counts.num_nonnoise)):
    pmf = _composition_pmf(total, counts.num_spans)
    n = sum(hist.values())
    tv = 0.5 * sum(abs(hist[k] / n - p) for k, p in pmf.items())
    assert set(hist) <= set(pmf) and tv < 0.05, (total, tv)


def test_deterministic_for_a_seed_and_different_for_another():
  lengths = OBJ.lengths(CFG, BUDGET).feature_lengths()
  docs = _random_docs(20 * 134, seed=3)
  a, b, c = (_corrupt(docs, s, lengths) for s in (11, 11, 12))
  ot.assert_same_examples(a, b)
  assert any(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))


def test_in_a_seqio_task_with_seed():
  docs = _random_docs(20 * 134, seed=4)
  lengths = OBJ.lengths(CFG, BUDGET)
  first = ot.seeded_task_pairs("objectax_test_span_corruption", OBJ, CFG, docs, _features(),
                               lengths)
  ot.assert_reconstructs(first, _raw_chunks(docs, lengths.raw), merge,
                         (lengths.inputs, lengths.targets))


def test_without_eos_lengths_shift_by_one():
  docs = _random_docs(5 * 134, seed=5)
  examples = _corrupt(docs, 0, {"inputs": 121, "targets": 27},
                      features=_features(inputs_eos=False, targets_eos=False))
  ot.assert_reconstructs(ot.pairs(examples), _raw_chunks(docs, 134), merge, (121, 27),
                         eos_id=None)


def test_config_errors():
  with pytest.raises(ConfigError, match="noise_density"):
    SpanCorruptionConfig(noise_density=1.5)
  with pytest.raises(ConfigError, match="mean_noise_span_length"):
    SpanCorruptionConfig(mean_noise_span_length=0.0)
  with pytest.raises(ConfigError, match="minimum token budget is 37"):
    OBJ.lengths(CFG, 30)
  ds = ot.docs_dataset([])
  with pytest.raises(ConfigError, match="targets length must be one of"):
    OBJ.preprocess(ds, {"inputs": 122, "targets": 30}, _features(), CFG)
  with pytest.raises(ConfigError, match="minimum token budget"):
    OBJ.preprocess(ds, {"inputs": 20, "targets": 5}, _features(), CFG)
  with pytest.raises(ConfigError, match="needs 28 extra ids"):
    OBJ.preprocess(ds, {"inputs": 512, "targets": 114},
                   ot.features(seqio.ByteVocabulary(extra_ids=20)), CFG)
  ot.assert_rejects_bad_features(OBJ, CFG, {"inputs": 122, "targets": 28}, VOCAB)


@pytest.mark.parametrize("length", [2, 5, 39, 134, 568])
def test_noise_mask_counts_and_layout(length):
  counts = span_lengths.span_counts(length, 0.15, 3.0)
  num_noise = min(max(counts.num_noise, 1), length - 1)  # T5 clips to [1, length - 1].
  num_spans = max(min(counts.num_spans, num_noise), 1)
  for seed in range(5):
    mask = span_corruption.random_spans_noise_mask(length, 0.15, 3.0, [(seed, 0), (seed, 1)])
    mask = mask.numpy()
    assert mask.shape == (length,) and mask.sum() == num_noise
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
    assert len(starts) == num_spans
    assert not mask[0] and mask[-1]  # Starts with non-noise, ends with noise (as T5).
