"""Fill-in-the-middle: exact lengths, lossless rearrangement, sentinels, rates and seeding.

Statistical tolerances: every measured rate or mean is compared with its exact expected
value at 4 binomial (or sample-mean) standard deviations, so a correct implementation fails
a given check with probability about 6e-5, while a rate off by 0.05 at these sample sizes
(>= 1,000 draws) is caught.
"""
import functools
import math

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import fim
from objectax.models import registry as arch_registry
from objectax.objectives import registry
from objectax.objectives.fim import FimConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: ids 3..258 are bytes, 259..358 the 100 extra ids, EOS = 1.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
PRE, SUF, MID = 358, 357, 356  # <extra_id_0>, <extra_id_1>, <extra_id_2>
FIRST_EXTRA_ID = VOCAB.vocab_size - VOCAB.extra_ids
OBJ = registry.get("fim")
BUDGET = 32  # A FIM piece holds N_RAW = 29 stream tokens, a plain one 32.
N_RAW = BUDGET - 3
NUM_EXAMPLES = 4000
SIGMAS = 4.0


def _features(add_eos=True, vocab=VOCAB):
  return ot.features(vocab, names=("targets",), targets_eos=add_eos)


def _random_docs(num_tokens, seed=0):
  """Documents of 0 to 99 random byte ids (empty ones included) totalling >= num_tokens."""
  return ot.random_docs(num_tokens, seed, high=FIRST_EXTRA_ID, min_len=0, max_len=100)


_dataset = ot.docs_dataset


def _stream(docs, eos=True):
  return np.concatenate([np.append(d, EOS) if eos else d for d in docs]).astype(np.int32)


def _fim(docs, seed, budget=BUDGET, cfg=FimConfig(), features=None):
  with seqio.utils.map_seed_manager(seed):
    ds = OBJ.preprocess(_dataset(docs), {"targets": budget}, features or _features(), cfg)
  assert ds.element_spec == {"targets": tf.TensorSpec([budget], tf.int32)}
  return [ex["targets"] for ex in ds.as_numpy_iterator()]


def undo_fim(tokens):
  """(stream tokens, looks, suffix length, prefix length or None) of one example.

  looks is "plain", "psm" or "spm". A PSM example with an empty prefix has exactly the
  tokens of the SPM example with the same cut j, so it "looks" SPM.
    [358, 5, 357, 8, 356, 6, 7] -> ([5, 6, 7, 8], "psm", 1, 1)
    [358, 357, 8, 356, 5, 6, 7] -> ([5, 6, 7, 8], "spm", 1, None)
  """
  tokens = list(tokens)
  sentinels = [t for t in tokens if t in (PRE, SUF, MID)]
  if tokens[0] != PRE:
    assert not sentinels, f"sentinel in a plain example: {tokens}"
    return tokens, "plain", None, None
  assert sentinels == [PRE, SUF, MID], f"FIM sentinels must be <PRE> <SUF> <MID>: {tokens}"
  suf, mid = tokens.index(SUF), tokens.index(MID)
  suffix = tokens[suf + 1:mid]
  if suf == 1:  # <PRE> <SUF> suffix <MID> prefix middle
    return tokens[mid + 1:] + suffix, "spm", len(suffix), None
  prefix, middle = tokens[1:suf], tokens[mid + 1:]
  return prefix + middle + suffix, "psm", len(suffix), len(prefix)


def test_undo_fim_docstring_examples():
  assert undo_fim([358, 5, 357, 8, 356, 6, 7]) == ([5, 6, 7, 8], "psm", 1, 1)
  assert undo_fim([358, 357, 8, 356, 5, 6, 7]) == ([5, 6, 7, 8], "spm", 1, None)
  assert undo_fim([5, 6, 7, 8]) == ([5, 6, 7, 8], "plain", None, None)


def test_worked_example_from_the_docstring():
  docs = [np.arange(3, 43, dtype=np.int32)]
  assert [e.tolist() for e in _fim(docs, 4, budget=12)] == [
      [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
      [358, 357, 20, 21, 22, 23, 356, 15, 16, 17, 18, 19],
      [358, 357, 26, 27, 28, 29, 30, 31, 32, 356, 24, 25],
      [358, 33, 34, 35, 36, 357, 39, 40, 41, 356, 37, 38]]


def test_fim_layout_docstring_example():
  offsets, slots = fim.fim_layout(8, tf.constant([True]), tf.constant([False]),
                                  tf.constant([1]), tf.constant([3]))
  assert offsets.numpy().tolist() == [[0, 0, 0, 3, 4, 0, 1, 2]]
  assert slots.numpy().tolist() == [[0, -1, 1, -1, -1, 2, -1, -1]]


def test_fim_layout_all_cuts_reconstruct():
  """Every (i, j) with 0 <= i <= j <= n, both modes, plus plain: a permutation of the piece."""
  budget = 9
  n = budget - 3
  cuts = [(i, j) for j in range(n + 1) for i in range(j + 1)]
  k = len(cuts)
  is_fim = tf.constant([True] * 2 * k + [False])
  is_spm = tf.constant([False] * k + [True] * k + [False])
  cut_i = tf.constant([i for i, _ in cuts] * 2 + [0])
  cut_j = tf.constant([j for _, j in cuts] * 2 + [0])
  offsets, slots = (t.numpy() for t in fim.fim_layout(budget, is_fim, is_spm, cut_i, cut_j))
  piece = np.arange(10, 10 + budget)
  tokens = np.where(slots >= 0, 358 - slots, piece[offsets])
  for row, (i, j) in zip(tokens[:k], cuts):
    p = piece[:n].tolist()
    assert row.tolist() == [PRE] + p[:i] + [SUF] + p[j:] + [MID] + p[i:j]
  for row, (_, j) in zip(tokens[k:2 * k], cuts):
    p = piece[:n].tolist()
    assert row.tolist() == [PRE, SUF] + p[j:] + [MID] + p[:j]
  assert tokens[-1].tolist() == piece.tolist()


@pytest.fixture(scope="module")
def default_run():
  """4,000+ examples at the defaults (fim_rate 0.5, spm_rate 0.5), seed 7."""
  docs = _random_docs(NUM_EXAMPLES * BUDGET, seed=0)
  return docs, _fim(docs, 7)


@pytest.fixture(scope="module")
def skewed_run():
  """The same documents at fim_rate 0.8, spm_rate 0.25: rates not symmetric in 0.5."""
  docs = _random_docs(NUM_EXAMPLES * BUDGET, seed=0)
  return docs, _fim(docs, 8, cfg=FimConfig(fim_rate=0.8, spm_rate=0.25))


@pytest.mark.parametrize("run", ["default_run", "skewed_run"])
def test_exact_lengths_and_lossless_stream(run, request):
  """Undoing every example and concatenating gives the EOS-joined stream, across examples."""
  docs, examples = request.getfixturevalue(run)
  assert len(examples) >= 1000
  assert all(ex.shape == (BUDGET,) and ex.dtype == np.int32 for ex in examples)
  pieces = [undo_fim(ex) for ex in examples]
  for (raw, looks, _, _) in pieces:
    assert len(raw) == (BUDGET if looks == "plain" else N_RAW)
  recovered = np.concatenate([np.asarray(raw, np.int32) for raw, _, _, _ in pieces])
  stream = _stream(docs)
  np.testing.assert_array_equal(recovered, stream[:len(recovered)])
  assert len(stream) - len(recovered) < BUDGET  # only a final partial piece is dropped


def _within(measured, expected, sd, what):
  assert abs(measured - expected) <= SIGMAS * sd, (
      f"{what}: measured {measured:.4f}, expected {expected:.4f} +- {SIGMAS} x {sd:.4f}")


def _pmf_stats(pmf):
  mean = sum(k * p for k, p in pmf.items())
  return mean, math.sqrt(sum((k - mean) ** 2 * p for k, p in pmf.items()))


@pytest.mark.parametrize("run,fim_rate,spm_rate", [("default_run", 0.5, 0.5),
                                                    ("skewed_run", 0.8, 0.25)])
def test_rates_and_cut_points(run, fim_rate, spm_rate, request):
  _, examples = request.getfixturevalue(run)
  pieces = [undo_fim(ex) for ex in examples]
  looks = [p[1] for p in pieces]
  num, num_fim = len(looks), sum(lk != "plain" for lk in looks)
  # FIM share: one Bernoulli(fim_rate) per example.
  _within(num_fim / num, fim_rate, math.sqrt(fim_rate * (1 - fim_rate) / num), "FIM share")
  # Cut points: two iid uniforms on {0..n}; j = the larger, i = the smaller.
  n1 = N_RAW + 1
  # A PSM example with i = 0 looks SPM: P(i = 0) = 1 - (n / (n + 1))^2.
  p_i0 = 1 - (N_RAW / n1) ** 2
  looks_spm = spm_rate + (1 - spm_rate) * p_i0
  num_spm = sum(lk == "spm" for lk in looks)
  _within(num_spm / num_fim, looks_spm, math.sqrt(looks_spm * (1 - looks_spm) / num_fim),
          "SPM-looking share of FIM examples")
  # j = n - len(suffix), in every FIM example: P(j = k) = (2k + 1) / (n + 1)^2.
  js = [N_RAW - p[2] for p in pieces if p[1] != "plain"]
  mean_j, sd_j = _pmf_stats({k: (2 * k + 1) / n1 ** 2 for k in range(n1)})
  _within(np.mean(js), mean_j, sd_j / math.sqrt(len(js)), "mean of j")
  # i = len(prefix) in PSM-looking examples (i >= 1): P(i = k | i >= 1) = (2(n-k)+1) / n^2.
  i_s = [p[3] for p in pieces if p[1] == "psm"]
  assert min(i_s) >= 1 and all(p[3] <= N_RAW - p[2] for p in pieces if p[1] == "psm")
  mean_i, sd_i = _pmf_stats({k: (2 * (N_RAW - k) + 1) / N_RAW ** 2 for k in range(1, n1)})
  _within(np.mean(i_s), mean_i, sd_i / math.sqrt(len(i_s)), "mean of i in PSM")
  # The extremes are reached: empty suffixes and empty middles both occur.
  assert any(p[2] == 0 for p in pieces if p[1] != "plain")
  assert any(p[3] is not None and p[3] == N_RAW - p[2] for p in pieces)


def test_sentinels_are_the_top_three_ids(default_run):
  _, examples = default_run
  assert fim.sentinel_ids(VOCAB.vocab_size) == (PRE, SUF, MID)
  for ex in examples:
    raw, looks, _, _ = undo_fim(ex)
    # undo_fim checked <PRE> <SUF> <MID> order; no other extra id ever appears.
    assert not any(t >= FIRST_EXTRA_ID for t in raw)
    if looks != "plain":
      assert ex[0] == PRE and ex.tolist().count(PRE) == 1
  # A smaller vocabulary moves them: ByteVocabulary(extra_ids=3) has vocab_size 262.
  small = seqio.ByteVocabulary(extra_ids=3)
  exs = _fim(_random_docs(50 * BUDGET, seed=1), 0, cfg=FimConfig(fim_rate=1.0),
             features=_features(vocab=small))
  assert fim.sentinel_ids(small.vocab_size) == (261, 260, 259)
  assert all(ex[0] == 261 and {260, 259} <= set(ex.tolist()) for ex in exs)


def test_rate_zero_is_full_lm_and_rate_one_is_all_fim():
  docs = _random_docs(300 * BUDGET, seed=2)
  plain = _fim(docs, 0, cfg=FimConfig(fim_rate=0.0))
  full_lm = registry.get("full_lm")
  lm = [ex["targets"] for ex in full_lm.preprocess(
      _dataset(docs), {"targets": BUDGET}, _features(), full_lm.config_cls()).as_numpy_iterator()]
  assert len(plain) == len(lm) > 0
  np.testing.assert_array_equal(np.stack(plain), np.stack(lm))
  every = _fim(docs, 0, cfg=FimConfig(fim_rate=1.0, spm_rate=0.0))
  stream = _stream(docs)
  assert len(every) == len(stream) // N_RAW
  assert all(undo_fim(ex)[1] in ("psm", "spm") for ex in every)
  spm = _fim(docs, 0, cfg=FimConfig(fim_rate=1.0, spm_rate=1.0))
  assert all(ex[1] == SUF for ex in spm)  # SPM: <PRE> <SUF> right at the start


def test_without_eos_the_stream_has_no_eos():
  docs = _random_docs(300 * BUDGET, seed=3)
  examples = _fim(docs, 0, features=_features(add_eos=False))
  recovered = np.concatenate([np.asarray(undo_fim(ex)[0], np.int32) for ex in examples])
  np.testing.assert_array_equal(recovered, _stream(docs, eos=False)[:len(recovered)])
  assert EOS not in recovered


def test_deterministic_for_a_seed_and_different_for_another():
  docs = _random_docs(200 * BUDGET, seed=4)
  a, b, c = (_fim(docs, s) for s in (11, 11, 12))
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  assert sum(not np.array_equal(x, y) for x, y in zip(a, c)) > len(a) // 4


def test_in_a_seqio_task_with_seed_and_loss_on_every_token():
  docs = _random_docs(100 * BUDGET, seed=5)
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: _dataset(docs), splits=["train"])
  task = seqio.Task("objectax_test_fim", source, output_features=_features(),
                    preprocessors=[functools.partial(OBJ.preprocess, cfg=FimConfig())])
  lengths = OBJ.lengths(FimConfig(), BUDGET)

  def run(seed):
    ds = task.get_dataset(lengths.feature_lengths(), split="train", shuffle=False, seed=seed)
    return [ex["targets"].tolist() for ex in ds.as_numpy_iterator()]

  first = run(5)
  assert first == run(5) and first != run(6)
  recovered = sum((undo_fim(ex)[0] for ex in first), [])
  np.testing.assert_array_equal(recovered, _stream(docs)[:len(recovered)])
  # Targets only: the decoder converter (models/decoder.py's) weights every token, sentinels too.
  ds = task.get_dataset(lengths.feature_lengths(), split="train", shuffle=False, seed=5)
  converted = seqio.DecoderFeatureConverter(loss_on_targets_only=True, pack=False)(
      ds, lengths.feature_lengths())
  for ex, targets in zip(converted.as_numpy_iterator(), first):
    assert ex["decoder_target_tokens"].tolist() == targets
    assert ex["decoder_loss_weights"].tolist() == [1] * BUDGET
    assert "decoder_causal_attention" not in ex


def test_lengths_and_registry_contract():
  assert OBJ.lengths(FimConfig(), 626) == registry.TaskLengths(raw=626, inputs=0, targets=626)
  assert OBJ.lengths(FimConfig(), 4).feature_lengths() == {"targets": 4}
  assert OBJ.features == ("targets",) and OBJ.config_cls is FimConfig
  arch_registry.check_supports("causal_decoder", OBJ)
  arch_registry.check_supports("prefix_decoder", OBJ)
  with pytest.raises(ConfigError, match="it supports: causal_decoder, prefix_decoder"):
    arch_registry.check_supports("encoder_decoder", OBJ)
  # The smallest budget works: one stream token per FIM example.
  exs = _fim(_random_docs(100, seed=6), 0, budget=4, cfg=FimConfig(fim_rate=1.0))
  assert exs and all(sorted(ex.tolist())[-3:] == [MID, SUF, PRE] for ex in exs)


def test_config_errors():
  for bad in (dict(fim_rate=1.5), dict(fim_rate=-0.1), dict(spm_rate=2.0),
              dict(spm_rate=float("nan")), dict(fim_rate="0.5")):
    with pytest.raises(ConfigError, match="must be a number in"):
      FimConfig(**bad)
  with pytest.raises(ConfigError, match="minimum token budget is 4"):
    OBJ.lengths(FimConfig(), 3)
  ds = _dataset([])
  with pytest.raises(ConfigError, match="minimum token budget is 4"):
    OBJ.preprocess(ds, {"targets": 2}, _features(), FimConfig())
  with pytest.raises(ConfigError, match="sequence_length"):
    OBJ.preprocess(ds, None, _features(), FimConfig())
  with pytest.raises(ConfigError, match="extra_ids=0"):
    OBJ.preprocess(ds, {"targets": 32},
                   _features(vocab=seqio.PassThroughVocabulary(1000, eos_id=1)), FimConfig())
  with pytest.raises(ConfigError, match="no eos_id"):
    OBJ.preprocess(ds, {"targets": 32}, _features(vocab=seqio.PassThroughVocabulary(9)),
                   FimConfig())


def test_config_is_gin_configurable():
  with gin.unlock_config():
    gin.parse_config("FimConfig.fim_rate = 0.9")
  try:
    assert FimConfig() == FimConfig(fim_rate=0.9, spm_rate=0.5)
  finally:
    gin.clear_config()
  assert FimConfig().fim_rate == 0.5
