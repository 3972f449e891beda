"""BERT MLM (docs/objectives.md#bert-mlm): exact n per chunk, 80/10/10, loss on selected
positions only."""
import functools
import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import bert_mlm
from objectax.models import registry as arch_registry
from objectax.objectives import registry
from objectax.objectives.bert_mlm import BertMLMConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: ids 3..258 are bytes, 259..358 the 100 sentinels, EOS = 1.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
MASK = VOCAB.vocab_size - 1  # <extra_id_0> = 358
FIRST_SENTINEL = VOCAB.vocab_size - VOCAB.extra_ids  # 259: random tokens come from [3, 259)
NUM_RANDOM_IDS = FIRST_SENTINEL - 3  # 256
FEATURES = ot.features(VOCAB)
B = 128  # token budget: chunks of 128 tokens, about 19 selected each
NUM_EXAMPLES = 1000
OBJ = registry.get("bert_mlm")


def _docs(num_tokens, seed):
  # Short documents (1-59 tokens) put ~4 EOS in a chunk, so the candidate count (and n)
  # varies from chunk to chunk. Ids stay below the sentinels, as real text does.
  return ot.random_docs(num_tokens, seed, high=FIRST_SENTINEL, max_len=60)


def _numpy_chunks(docs, length, eos=EOS):
  """Independent re-chunking: each document + EOS, concatenated, remainder dropped."""
  tail = [] if eos is None else [eos]
  stream = np.concatenate([np.concatenate([d, tail]) for d in docs]).astype(np.int32)
  num = len(stream) // length
  return stream[:num * length].reshape(num, length)


def _expected_n(chunk, cfg, eos=EOS):
  c = int(np.sum(chunk != eos))
  n = max(1, round(cfg.masked_lm_prob * c))  # float64 and half-to-even, as BERT in Python 3
  if cfg.max_predictions:
    n = min(n, cfg.max_predictions)
  return min(n, c)


def _run(cfg, docs, seed, length=B, features=FEATURES):
  examples = ot.run(OBJ, cfg, docs, seed, OBJ.lengths(cfg, length).feature_lengths(), features)
  if not examples:
    return np.zeros([0, length], np.int32), np.zeros([0, length], np.int32)
  return (np.stack([ex["inputs"] for ex in examples]),
          np.stack([ex["targets"] for ex in examples]))


@functools.lru_cache(maxsize=None)
def _main():
  """(inputs, targets, chunks, n) for >= 1,000 chunks of 128 tokens, default config."""
  cfg = BertMLMConfig()
  docs = _docs(NUM_EXAMPLES * B + 200, seed=0)
  inputs_KL, targets_KL = _run(cfg, docs, seed=7)
  chunks_KL = _numpy_chunks(docs, B)
  n_K = np.array([_expected_n(c, cfg) for c in chunks_KL])
  return inputs_KL, targets_KL, chunks_KL, n_K


def test_registration_lengths_and_minimum_budget():
  assert OBJ.features == ("inputs", "targets") and OBJ.architectures == ("encoder_only",)
  lengths = OBJ.lengths(BertMLMConfig(), 626)
  assert lengths == registry.TaskLengths(626, 626, 626, aligned=True)
  assert lengths.budget == 626 and lengths.feature_lengths() == {"inputs": 626, "targets": 626}
  assert OBJ.lengths(BertMLMConfig(), 2).targets == 2
  with pytest.raises(ConfigError, match="minimum token budget is 2"):
    OBJ.lengths(BertMLMConfig(), 1)
  with pytest.raises(ConfigError, match="it supports: encoder_only"):
    arch_registry.check_supports("causal_decoder", OBJ)


def test_exact_lengths_and_reconstruction_of_the_stream_chunks():
  inputs_KL, targets_KL, chunks_KL, _ = _main()
  assert len(inputs_KL) == len(chunks_KL) >= NUM_EXAMPLES
  assert inputs_KL.dtype == targets_KL.dtype == np.int32
  assert inputs_KL.shape == targets_KL.shape == (len(chunks_KL), B)
  np.testing.assert_array_equal(np.where(targets_KL > 0, targets_KL, inputs_KL), chunks_KL)
  selected_KL = targets_KL > 0
  np.testing.assert_array_equal(targets_KL[selected_KL], chunks_KL[selected_KL])
  np.testing.assert_array_equal(inputs_KL[~selected_KL], chunks_KL[~selected_KL])
  assert (targets_KL[~selected_KL] == 0).all()


def test_exactly_n_selected_per_chunk_and_never_eos():
  _, targets_KL, chunks_KL, n_K = _main()
  selected_KL = targets_KL > 0
  np.testing.assert_array_equal(selected_KL.sum(axis=1), n_K)
  assert not (selected_KL & (chunks_KL == EOS)).any()
  # The candidate count varies, so n does too: the rule is applied per chunk.
  assert len(set(n_K.tolist())) >= 2 and 17 <= n_K.min() and n_K.max() <= 19


def test_loss_weights_are_exactly_the_selected_positions():
  inputs_KL, targets_KL, chunks_KL, n_K = _main()
  weights_KL = targets_KL > 0  # The encoder-only model's loss weights.
  changed_KL = inputs_KL != chunks_KL
  kept_KL = weights_KL & ~changed_KL
  # Every corrupted position carries loss, every weighted position predicts its original
  # token, and the weights also cover kept positions (inputs == targets there).
  assert not (changed_KL & ~weights_KL).any()
  np.testing.assert_array_equal(weights_KL.sum(axis=1), n_K)
  assert (inputs_KL[kept_KL] == targets_KL[kept_KL]).all() and kept_KL.sum() > 0
  # docs/objectives.md#mlm-loss-positions: seqio's EncoderFeatureConverter weights inputs ==
  # mask_id only, a strict subset
  # that misses the random and kept ~20%.
  seqio_weights_KL = inputs_KL == MASK
  assert not (seqio_weights_KL & ~weights_KL).any()
  assert seqio_weights_KL.sum() < 0.85 * weights_KL.sum()


def test_mask_random_keep_shares():
  inputs_KL, targets_KL, chunks_KL, _ = _main()
  selected_KL = targets_KL > 0
  got, orig = inputs_KL[selected_KL], chunks_KL[selected_KL]
  total = got.size  # ~19,000 selected tokens
  # A random draw hits the original id with p = 1/256 (both uniform over [3, 259)) and then
  # looks kept, so the visible shares are 0.8 / 0.1 * 255/256 / 0.1 + 0.1/256.
  expected = {"mask": 0.8, "random": 0.1 * (1 - 1 / NUM_RANDOM_IDS),
              "keep": 0.1 + 0.1 / NUM_RANDOM_IDS}
  counts = {"mask": np.sum(got == MASK), "random": np.sum((got != MASK) & (got != orig)),
            "keep": np.sum(got == orig)}
  assert sum(counts.values()) == total
  for kind, p in expected.items():
    # The outcomes are i.i.d. per selected token, so each count is Binomial(total, p):
    # sd = sqrt(p (1 - p) / total) ~ 0.0029 (mask) and 0.0022 (random, keep). 4 sd
    # (two-sided miss rate 6e-5 for a correct implementation) still catches a 1-point
    # error in any share (e.g. T5's 90/10/0 or BERT's 80/10/10 swapped).
    share = counts[kind] / total
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / total), (kind, share, p)


def test_random_tokens_are_regular_ids_drawn_uniformly():
  inputs_KL, targets_KL, chunks_KL, _ = _main()
  selected_KL = targets_KL > 0
  # No sentinel other than the mask id ever appears, and none outside selected positions.
  assert not ((inputs_KL >= FIRST_SENTINEL) & (inputs_KL != MASK)).any()
  assert not ((inputs_KL == MASK) & ~selected_KL).any()
  is_random_KL = selected_KL & (inputs_KL != MASK) & (inputs_KL != chunks_KL)
  randoms = inputs_KL[is_random_KL]
  assert ((randoms >= 3) & (randoms < FIRST_SENTINEL)).all()
  # Uniform over the 256 ids (the originals are uniform too, so excluding draws equal to
  # the original keeps it uniform). Pearson chi-square, 255 dof: mean 255, sd sqrt(510)
  # ~ 22.6; allow mean + 4 sd. Any id drawn 4x its expected count also fails.
  hist = np.bincount(randoms - 3, minlength=NUM_RANDOM_IDS)
  expected = len(randoms) / NUM_RANDOM_IDS  # ~7.4
  chi2 = np.sum((hist - expected) ** 2 / expected)
  assert chi2 < 255 + 4 * math.sqrt(2 * 255), chi2
  assert hist.max() < 4 * expected and (hist > 0).sum() > 0.95 * NUM_RANDOM_IDS


def test_selected_positions_are_uniform_over_the_chunk():
  _, targets_KL, chunks_KL, n_K = _main()
  candidate_KL = chunks_KL != EOS
  p_KL = candidate_KL * (n_K / candidate_KL.sum(axis=1))[:, None]  # P(selected) per position
  observed_L = (targets_KL > 0).sum(axis=0)
  expected_L, var_L = p_KL.sum(axis=0), (p_KL * (1 - p_KL)).sum(axis=0)
  # Per position the count is a sum of independent Bernoullis over chunks: z ~ N(0, 1).
  # Max over 128 positions of |z| < 4.5 fails a correct sampler with p ~ 1e-3.
  z_L = (observed_L - expected_L) / np.sqrt(var_L)
  assert np.abs(z_L).max() < 4.5, z_L
  # A drift along the chunk (e.g. ties broken towards later positions) is too small per
  # position but shows in the summed centred position of the selected tokens. The
  # Bernoulli-independence variance overstates the without-replacement one, so 4 sd is
  # conservative.
  pos_L = np.arange(B) - (B - 1) / 2
  z = ((observed_L - expected_L) * pos_L).sum() / np.sqrt((var_L * pos_L ** 2).sum())
  assert abs(z) < 4, z
  # Both chunk ends are selected as often as the middle.
  assert observed_L[0] > 0.5 * expected_L[0] and observed_L[-1] > 0.5 * expected_L[-1]


def test_deterministic_for_a_seed_and_different_for_another():
  cfg = BertMLMConfig()
  docs = _docs(40 * B, seed=3)
  a, b, c = (_run(cfg, docs, seed) for seed in (11, 11, 12))
  assert len(a[0]) >= 39
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert (a[1] > 0).sum() == (c[1] > 0).sum() and not np.array_equal(a[1] > 0, c[1] > 0)
  assert not np.array_equal(a[0], c[0])


def test_in_a_seqio_task_with_seed():
  cfg = BertMLMConfig()
  docs = _docs(20 * B, seed=4)
  task = ot.task_over_docs("objectax_test_bert_mlm", OBJ, cfg, docs, FEATURES)
  lengths = OBJ.lengths(cfg, B)
  first = ot.task_pairs(task, lengths, seed=5)
  assert first == ot.task_pairs(task, lengths, seed=5)
  assert first != ot.task_pairs(task, lengths, seed=6)
  chunks_KL = _numpy_chunks(docs, B)
  assert len(first) == len(chunks_KL)
  for (inputs, targets), chunk in zip(first, chunks_KL):
    inputs, targets = np.array(inputs), np.array(targets)
    np.testing.assert_array_equal(np.where(targets > 0, targets, inputs), chunk)
    assert (targets > 0).sum() == _expected_n(chunk, cfg)


@pytest.mark.parametrize("cfg", [
    BertMLMConfig(max_predictions=5),
    BertMLMConfig(mask_fraction=1.0, random_fraction=0.0),
    BertMLMConfig(mask_fraction=0.0, random_fraction=0.0),
    BertMLMConfig(mask_fraction=0.0, random_fraction=1.0),
    BertMLMConfig(masked_lm_prob=1.0),
    BertMLMConfig(masked_lm_prob=0.001),
], ids=["cap5", "all_mask", "all_keep", "all_random", "prob1", "min1"])
def test_configurations(cfg):
  docs = _docs(60 * 64, seed=5)
  inputs_KL, targets_KL = _run(cfg, docs, seed=1, length=64)
  chunks_KL = _numpy_chunks(docs, 64)
  assert len(inputs_KL) == len(chunks_KL) >= 59
  selected_KL = targets_KL > 0
  np.testing.assert_array_equal(selected_KL.sum(axis=1), [_expected_n(c, cfg) for c in chunks_KL])
  np.testing.assert_array_equal(np.where(selected_KL, targets_KL, inputs_KL), chunks_KL)
  got, orig = inputs_KL[selected_KL], chunks_KL[selected_KL]
  if cfg.max_predictions:
    assert (selected_KL.sum(axis=1) == 5).all()
  if cfg.mask_fraction == 1.0:
    assert (got == MASK).all()
  if cfg.mask_fraction == cfg.random_fraction == 0.0:
    np.testing.assert_array_equal(inputs_KL, chunks_KL)  # loss weights still on n positions
  if cfg.random_fraction == 1.0:
    assert not (got == MASK).any() and (got != orig).mean() > 0.98
  if cfg.masked_lm_prob == 1.0:
    np.testing.assert_array_equal(selected_KL, chunks_KL != EOS)
  if cfg.masked_lm_prob == 0.001:
    assert (selected_KL.sum(axis=1) == 1).all()  # BERT's max(1, ...)


def test_eos_only_chunks_and_features_without_eos():
  # Empty documents make chunks of EOS only: no candidates, nothing selected, no loss.
  inputs_KL, targets_KL = _run(BertMLMConfig(), [np.zeros([0], np.int32)] * 40, seed=0,
                               length=8)
  assert inputs_KL.shape == (5, 8) and (inputs_KL == EOS).all() and (targets_KL == 0).all()
  # Without EOS every position is a candidate: exactly round(0.15 * 64) = 10 selected.
  features = ot.features(VOCAB, inputs_eos=False, targets_eos=False)
  docs = _docs(30 * 64, seed=6)
  inputs_KL, targets_KL = _run(BertMLMConfig(), docs, seed=0, length=64, features=features)
  chunks_KL = _numpy_chunks(docs, 64, eos=None)
  assert len(inputs_KL) == len(chunks_KL) >= 29 and not (chunks_KL == EOS).any()
  assert ((targets_KL > 0).sum(axis=1) == 10).all()
  np.testing.assert_array_equal(np.where(targets_KL > 0, targets_KL, inputs_KL), chunks_KL)


def test_selection_helpers():
  candidate_KL = tf.constant([[True, True, False, True], [False, False, False, False]])
  n_K = bert_mlm.num_to_predict(BertMLMConfig(masked_lm_prob=0.5), tf.constant([3, 0]))
  assert n_K.numpy().tolist() == [2, 0]  # round(1.5) = 2 (half to even); no candidates -> 0
  firsts = set()
  for seed in range(30):
    index_KN, valid_KN = bert_mlm.select_positions(candidate_KL, n_K, 3, (seed, 0))
    index_KN, valid_KN = index_KN.numpy(), valid_KN.numpy()
    assert valid_KN.tolist() == [[True, True, False], [False, False, False]]
    picked = index_KN[0][valid_KN[0]]
    assert len(set(picked)) == 2 and 2 not in picked  # distinct candidates only
    firsts.add(tuple(sorted(picked)))
  assert firsts == {(0, 1), (0, 3), (1, 3)}  # every 2-subset of the candidates occurs
  assert bert_mlm.num_to_predict(BertMLMConfig(), tf.constant([10, 30])).numpy().tolist() \
      == [2, 4]  # round(1.5) = 2, round(4.5) = 4: half to even, as Python's round
  # The static bound covers every candidate count of a 128-token chunk.
  cfg = BertMLMConfig()
  assert bert_mlm.max_to_predict(cfg, 128) == 19 == max(
      bert_mlm.num_to_predict(cfg, tf.range(129)).numpy())
  assert bert_mlm.max_to_predict(BertMLMConfig(max_predictions=5), 128) == 5


def test_config_errors():
  for kwargs, match in [({"masked_lm_prob": 0.0}, "masked_lm_prob"),
                        ({"masked_lm_prob": 1.5}, "masked_lm_prob"),
                        ({"masked_lm_prob": True}, "masked_lm_prob"),
                        ({"mask_fraction": -0.1}, "mask_fraction"),
                        ({"random_fraction": 1.1}, "random_fraction"),
                        ({"mask_fraction": 0.95}, "mask_fraction \\+ random_fraction"),
                        ({"max_predictions": -1}, "max_predictions"),
                        ({"max_predictions": 2.5}, "max_predictions")]:
    with pytest.raises(ConfigError, match=match):
      BertMLMConfig(**kwargs)
  cfg, ds = BertMLMConfig(), ot.docs_dataset([])
  with pytest.raises(ConfigError, match="sequence_length"):
    OBJ.preprocess(ds, {"inputs": 64}, FEATURES, cfg)
  with pytest.raises(ConfigError, match="must equal"):
    OBJ.preprocess(ds, {"inputs": 63, "targets": 64}, FEATURES, cfg)
  with pytest.raises(ConfigError, match="minimum token budget is 2"):
    OBJ.preprocess(ds, {"inputs": 1, "targets": 1}, FEATURES, cfg)
  with pytest.raises(ConfigError, match="extra_ids=0"):
    OBJ.preprocess(ds, {"inputs": 64, "targets": 64}, ot.features(seqio.ByteVocabulary()), cfg)
  with pytest.raises(ConfigError, match="output_features"):
    OBJ.preprocess(ds, {"targets": 64}, ot.features(VOCAB, names=("targets",)), cfg)
