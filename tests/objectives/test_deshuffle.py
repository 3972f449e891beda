"""Deshuffling (T5) and partial deshuffling (Birdie): lengths, reconstruction, rates, seeds, loss."""
import functools
import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import deshuffle
from objectax.models import registry as arch_registry
from objectax.objectives import registry
from objectax.objectives.deshuffle import DeshuffleConfig, PartialDeshuffleConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

EOS = 1
VOCAB = seqio.PassThroughVocabulary(size=500, eos_id=EOS)
NUM_IDS = 497  # Synthetic documents draw ids uniformly from [3, 500).
BUDGET = 130   # -> raw 64, inputs 65, targets 65.
RAW = 64
NUM_EXAMPLES = 1000
FULL = registry.get("deshuffle")
PARTIAL = registry.get("partial_deshuffle")
# (objective, config, K = tokens shuffled per 64-token chunk).
CASES = {
    "full": (FULL, DeshuffleConfig(), 64),
    "partial_0.75": (PARTIAL, PartialDeshuffleConfig(), 48),
    "partial_0.25": (PARTIAL, PartialDeshuffleConfig(shuffle_fraction=0.25), 16),
}


def _features(inputs_eos=True, targets_eos=True, vocab=VOCAB):
  return ot.features(vocab, inputs_eos=inputs_eos, targets_eos=targets_eos)


def _random_docs(num_tokens, seed=0):
  return ot.random_docs(num_tokens, seed, min_len=0, max_len=200)


def _distinct_docs(num_tokens):
  """Documents cycling through the ids 3 ... 499: any chunk of < 497 tokens has distinct ids."""
  ids = np.resize(np.arange(3, 500, dtype=np.int32), num_tokens)
  return np.split(ids, np.arange(150, num_tokens, 150))


_dataset = ot.docs_dataset


def _run(obj, cfg, docs, seed, sequence_length=None, features=None):
  sequence_length = sequence_length or obj.lengths(cfg, BUDGET).feature_lengths()
  return ot.run(obj, cfg, docs, seed, sequence_length, features or _features())


def _raw_chunks(docs, raw=RAW):
  return ot.raw_chunks(docs, raw)


@pytest.fixture(scope="module", params=sorted(CASES))
def thousand(request):
  """(case name, K, examples, raw chunks) over >= 1,000 examples of random documents."""
  obj, cfg, k = CASES[request.param]
  docs = _random_docs(NUM_EXAMPLES * RAW + RAW, seed=0)
  return request.param, k, _run(obj, cfg, docs, 7), _raw_chunks(docs)


def test_worked_example_from_the_docstring():
  docs = [np.arange(3, 15, dtype=np.int32)]
  for obj, cfg, inputs in (
      (FULL, DeshuffleConfig(), [9, 4, 11, 8, 7, 12, 5, 10, 3, 6, 1]),
      (PARTIAL, PartialDeshuffleConfig(), [12, 4, 5, 6, 7, 11, 10, 8, 3, 9, 1])):
    lengths = obj.lengths(cfg, 22)
    assert lengths == registry.TaskLengths(raw=10, inputs=11, targets=11)
    (ex,) = _run(obj, cfg, docs, 0, lengths.feature_lengths(),
                 _features(vocab=seqio.ByteVocabulary(extra_ids=100)))
    assert ex["inputs"].tolist() == inputs
    assert ex["targets"].tolist() == list(range(3, 13)) + [1]


def test_helpers_docstring_examples():
  positions = deshuffle.shuffled_positions(10, 7, tf.constant([0, 0]))
  assert positions.shape == (7,) and len(set(positions.numpy().tolist())) == 7
  assert deshuffle.shuffled_positions(5, 5, None).numpy().tolist() == [0, 1, 2, 3, 4]
  out = deshuffle.permute_at(tf.constant([3, 4, 5, 6, 7]), tf.constant([0, 2, 4]), (0, 1))
  assert out.numpy().tolist() == [3, 4, 7, 6, 5]


def test_lengths_split_the_budget_exactly():
  for obj, cfg, _ in CASES.values():
    assert obj.lengths(cfg, BUDGET) == registry.TaskLengths(RAW, RAW + 1, RAW + 1)
    # The budget is an upper bound: an odd budget leaves one token unused.
    assert obj.lengths(cfg, 626) == obj.lengths(cfg, 627) == registry.TaskLengths(312, 313, 313)
    for budget in range(deshuffle.min_budget(cfg.shuffle_fraction), 300):
      lengths = obj.lengths(cfg, budget)
      assert lengths.inputs == lengths.targets == lengths.raw + 1
      assert budget - 1 <= lengths.budget <= budget
  assert [deshuffle.min_budget(f) for f in (1.0, 0.75, 0.5, 0.25)] == [6, 8, 10, 18]
  assert deshuffle.num_shuffled(100, 0.29) == 29  # floor(28.999999999999996) would be 28.
  assert deshuffle.num_shuffled(10, 0.75) == 7 and deshuffle.num_shuffled(64, 1.0) == 64


def test_examples_have_exact_lengths_and_restore_the_raw_stream(thousand):
  _, _, examples, raws = thousand
  assert len(examples) == len(raws) >= NUM_EXAMPLES
  for ex, raw in zip(examples, raws):
    assert ex["inputs"].shape == (RAW + 1,) and ex["targets"].shape == (RAW + 1,)
    assert ex["inputs"][-1] == EOS and ex["targets"][-1] == EOS
    # No per-document EOS: the body of each feature is raw document ids only.
    assert EOS not in ex["inputs"][:-1] and EOS not in ex["targets"][:-1]
    np.testing.assert_array_equal(ex["targets"][:-1], raw)  # targets == the original chunk
    np.testing.assert_array_equal(np.sort(ex["inputs"][:-1]), np.sort(raw))  # same multiset


def test_moved_fraction_matches_the_configuration(thousand):
  name, k, examples, _ = thousand
  moved_NL = np.stack([ex["inputs"][:-1] != ex["targets"][:-1] for ex in examples])
  # Only the K drawn positions can change.
  assert moved_NL.sum(axis=1).max() <= k
  # A uniform permutation of K tokens keeps 1 in place on average (T5 and Birdie both draw
  # uniform permutations), and a moved token equals the one it replaces w.p. 1/497 here.
  expected = (k - 1) / RAW * (1 - 1 / NUM_IDS)
  measured = moved_NL.mean()
  # Per-example fixed points are ~Poisson(1), so the mean's std is ~1/(64 sqrt(1000)) =
  # 0.0005; 0.005 is 10 std, yet below the 1/64 = 0.016 a derangement or K +- 1 would shift.
  assert abs(measured - expected) < 0.005, (name, measured, expected)
  assert abs(measured - k / RAW) < 1 / RAW + 0.005
  print(f"{name}: moved fraction {measured:.4f} (expected {expected:.4f}, K/raw {k / RAW})")
  # Drawn positions are scattered uniformly (Birdie's choice without replacement), not a
  # contiguous window: every position moves at the same rate, within 5 binomial std.
  rate_L = moved_NL.mean(axis=0)
  std = math.sqrt(expected * (1 - expected) / len(examples))
  assert np.abs(rate_L - expected).max() < 5 * std + 0.01, (name, rate_L.min(), rate_L.max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_recovered_permutation_statistics(case):
  """With distinct ids per chunk the permutation is observable: inputs[i] = raw[src[i]]."""
  obj, cfg, k = CASES[case]
  docs = _distinct_docs(NUM_EXAMPLES * RAW)
  examples = _run(obj, cfg, docs, 3)
  assert len(examples) == NUM_EXAMPLES
  src_NL = np.stack([np.argsort(ex["targets"][:-1])[
      np.searchsorted(np.sort(ex["targets"][:-1]), ex["inputs"][:-1])] for ex in examples])
  for ex, src_L in zip(examples, src_NL):
    np.testing.assert_array_equal(ex["targets"][:-1][src_L], ex["inputs"][:-1])
    assert sorted(src_L.tolist()) == list(range(RAW))  # a permutation
  # Every chunk gets its own draw (seqio hands each example fresh seeds).
  assert len({tuple(src_L) for src_L in src_NL.tolist()}) == NUM_EXAMPLES
  moved_N = (src_NL != np.arange(RAW)).sum(axis=1)
  assert moved_N.max() <= k
  # Fixed points among the K drawn ~ Poisson(1): mean moved = K - 1, std of mean 0.03.
  assert abs(moved_N.mean() - (k - 1)) < 0.2, (case, moved_N.mean())
  if k == RAW:
    # Full shuffle: the token landing at position 0 comes from a uniform position. Chi-square
    # over 8 bins of 8 positions, df 7: 30 is its 0.01% quantile.
    counts = np.bincount(src_NL[:, 0] // 8, minlength=8)
    chi2 = ((counts - NUM_EXAMPLES / 8) ** 2 / (NUM_EXAMPLES / 8)).sum()
    assert chi2 < 30, counts


def test_deterministic_for_a_seed_and_different_for_another():
  docs = _random_docs(30 * RAW, seed=3)
  for obj, cfg, _ in CASES.values():
    a, b, c = (_run(obj, cfg, docs, s) for s in (11, 11, 12))
    assert len(a) == len(c) >= 29
    assert all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, b))
    assert all(np.array_equal(x["targets"], y["targets"]) for x, y in zip(a, c))
    assert sum(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c)) >= len(a) - 1


@pytest.mark.parametrize("case", ["full", "partial_0.75"])
def test_in_a_seqio_task_with_seed(case):
  obj, cfg, _ = CASES[case]
  docs = _random_docs(20 * RAW, seed=4)
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: _dataset(docs), splits=["train"])
  task = seqio.Task(f"objectax_test_deshuffle_{case}", source, output_features=_features(),
                    preprocessors=[functools.partial(obj.preprocess, cfg=cfg)])
  lengths = obj.lengths(cfg, BUDGET)

  def run(seed):
    ds = task.get_dataset(lengths.feature_lengths(), split="train", shuffle=False, seed=seed)
    return [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in ds.as_numpy_iterator()]

  first = run(5)
  assert first == run(5) and first != run(6)
  raws = _raw_chunks(docs)
  assert len(first) == len(raws)
  for (inputs, targets), raw in zip(first, raws):
    assert targets == raw.tolist() + [EOS] and sorted(inputs) == sorted(targets)


def test_loss_falls_on_the_targets_only():
  docs = _random_docs(4 * RAW, seed=6)
  lengths = FULL.lengths(DeshuffleConfig(), BUDGET).feature_lengths()
  with seqio.utils.map_seed_manager(0):
    ds = FULL.preprocess(_dataset(docs), lengths, _features(), DeshuffleConfig())
  examples = list(ds.as_numpy_iterator())
  # Encoder-decoder: the shuffled chunk is the encoder input; every target token (EOS too)
  # carries loss.
  enc_dec = seqio.EncDecFeatureConverter(pack=False)(ds, lengths)
  for ex, out in zip(examples, enc_dec.as_numpy_iterator()):
    np.testing.assert_array_equal(out["encoder_input_tokens"], ex["inputs"])
    np.testing.assert_array_equal(out["decoder_target_tokens"], ex["targets"])
    assert out["decoder_loss_weights"].tolist() == [1] * (RAW + 1)
  # Causal / prefix decoder (models/decoder.py's converter): concat(inputs, targets), loss
  # weight 0 on the 65 input positions and 1 on the 65 target positions.
  dec = seqio.DecoderFeatureConverter(loss_on_targets_only=True, pack=False)(ds, lengths)
  for ex, out in zip(examples, dec.as_numpy_iterator()):
    np.testing.assert_array_equal(out["decoder_target_tokens"],
                                  np.concatenate([ex["inputs"], ex["targets"]]))
    assert out["decoder_loss_weights"].tolist() == [0] * (RAW + 1) + [1] * (RAW + 1)


def test_without_eos_lengths_shift_by_one():
  docs = _random_docs(10 * RAW, seed=5)
  raws = _raw_chunks(docs)
  for inputs_eos, targets_eos in ((False, False), (False, True), (True, False)):
    sequence_length = {"inputs": RAW + inputs_eos, "targets": RAW + targets_eos}
    examples = _run(PARTIAL, PartialDeshuffleConfig(), docs, 0, sequence_length,
                    _features(inputs_eos, targets_eos))
    assert len(examples) == len(raws) > 0
    for ex, raw in zip(examples, raws):
      assert ex["inputs"].shape == (RAW + inputs_eos,)
      np.testing.assert_array_equal(ex["targets"][:RAW], raw)
      np.testing.assert_array_equal(np.sort(ex["inputs"][:RAW]), np.sort(raw))
      assert (ex["targets"][-1] == EOS) == targets_eos and (ex["inputs"][-1] == EOS) == inputs_eos


def test_registration_and_architectures():
  for obj in (FULL, PARTIAL):
    assert obj.features == ("inputs", "targets")
    assert set(obj.architectures) == {"encoder_decoder", "causal_decoder", "prefix_decoder"}
    with pytest.raises(ConfigError, match="does not support architecture 'encoder_only'"):
      arch_registry.check_supports("encoder_only", obj)
  assert FULL.config_cls is DeshuffleConfig and PARTIAL.config_cls is PartialDeshuffleConfig
  assert DeshuffleConfig().shuffle_fraction == 1.0
  assert PartialDeshuffleConfig().shuffle_fraction == 0.75  # Birdie's default.


def test_config_errors():
  for bad in (0.0, 1.0, -0.5, 1.5):
    with pytest.raises(ConfigError, match="shuffle_fraction must be in"):
      PartialDeshuffleConfig(shuffle_fraction=bad)
  with pytest.raises(ConfigError, match="minimum token budget is 6"):
    FULL.lengths(DeshuffleConfig(), 5)
  with pytest.raises(ConfigError, match="minimum token budget is 8"):
    PARTIAL.lengths(PartialDeshuffleConfig(), 7)
  with pytest.raises(ConfigError, match="minimum token budget is 18"):
    PARTIAL.lengths(PartialDeshuffleConfig(0.25), 17)
  cfg = DeshuffleConfig()
  ds = _dataset([])
  with pytest.raises(ConfigError, match="same tokens"):
    FULL.preprocess(ds, {"inputs": 65, "targets": 64}, _features(), cfg)
  with pytest.raises(ConfigError, match="sequence_length"):
    FULL.preprocess(ds, {"targets": 65}, _features(), cfg)
  with pytest.raises(ConfigError, match="minimum token budget is 18"):
    PARTIAL.preprocess(ds, {"inputs": 8, "targets": 8}, _features(),
                       PartialDeshuffleConfig(0.25))
  with pytest.raises(ConfigError, match="output_features"):
    FULL.preprocess(ds, {"inputs": 65, "targets": 65}, {"targets": seqio.Feature(VOCAB)}, cfg)
  with pytest.raises(ConfigError, match="same vocabulary"):
    FULL.preprocess(ds, {"inputs": 65, "targets": 65},
                    {"inputs": seqio.Feature(seqio.PassThroughVocabulary(600, eos_id=EOS)),
                     "targets": seqio.Feature(VOCAB)}, cfg)
