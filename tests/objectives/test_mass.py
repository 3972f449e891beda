"""MASS: exact lengths, reconstruction, one contiguous fragment, uniform starts, seeding, loss."""
import collections
import functools

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.models import decoder
from objectax.objectives import mass
from objectax.objectives import registry
from objectax.objectives.mass import MassConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: ids 3..258 are bytes, 259..358 the 100 extra ids; mask = 358, EOS = 1.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
MASK = VOCAB.vocab_size - 1
FIRST_EXTRA = VOCAB.vocab_size - VOCAB.extra_ids
OBJ = registry.get("mass")
CFG = MassConfig()
BUDGET = 50  # -> raw 32, inputs 33, targets 17: a 16-token fragment at one of 17 starts.
NUM_EXAMPLES = 2000

# chi-square critical value for 16 degrees of freedom (17 start positions) at p = 0.001:
# 39.252 (standard tables; scipy.stats.chi2.ppf(0.999, 16)). The test seeds are fixed, so
# the outcome is deterministic; a 0.1% level leaves a correct sampler essentially no
# chance of failing on a new seed, and the MASS code's 20% start / 20% end / 60% uniform
# placement would score about 2,400 on 2,000 examples (checked below), so the test has power.
CHI2_CRITICAL_16DOF_P001 = 39.252


_features = functools.partial(ot.features, VOCAB)  # (inputs_eos=True, targets_eos=True)


# Documents of 1-299 byte ids (3..258), never the mask id: (num_tokens, seed=0) -> docs.
_random_docs = functools.partial(ot.random_docs, high=FIRST_EXTRA)


def _mass(docs, seed, sequence_length, cfg=CFG, features=None):
  return ot.run(OBJ, cfg, docs, seed, sequence_length, features or _features())


def _raw_chunks(docs, raw):
  """Independent reference: documents concatenated WITHOUT EOS, cut into raw-token chunks."""
  ids = np.concatenate(docs)
  n = len(ids) // raw
  return list(ids[:n * raw].reshape(n, raw))


def fragment_start(inputs, fragment):
  """Start of the single masked run of exactly `fragment` tokens in inputs (EOS stripped).

  [3, 358, 358, 6, 1] with fragment 2 -> 1. Fails unless the mask ids form one contiguous
  run of the exact length (the documents never hold the mask id).
  """
  (masked,) = np.nonzero(np.asarray(inputs) == MASK)
  assert len(masked) == fragment, (len(masked), fragment)
  assert np.all(np.diff(masked) == 1), "fragment is not contiguous"
  return int(masked[0])


def merge(inputs, targets, eos_id=EOS):
  """Inverse of MASS: put the fragment back where the masks are.

  inputs [3, 358, 358, 6, 1], targets [4, 5, 1] -> [3, 4, 5, 6].
  """
  inputs, targets = np.array(inputs), np.array(targets)
  if eos_id is not None:
    assert inputs[-1] == eos_id and targets[-1] == eos_id
    inputs, targets = inputs[:-1], targets[:-1]
  start = fragment_start(inputs, len(targets))
  out = inputs.copy()
  out[start:start + len(targets)] = targets
  return out


def test_worked_example_from_the_docstring():
  lengths = OBJ.lengths(CFG, 26)
  assert lengths == registry.TaskLengths(raw=16, inputs=17, targets=9)
  docs = [np.arange(3, 13, dtype=np.int32), np.arange(13, 23, dtype=np.int32)]
  (ex,) = _mass(docs, 0, lengths.feature_lengths())
  assert ex["inputs"].tolist() == [3, 4, 5, 6] + [358] * 8 + [15, 16, 17, 18, 1]
  assert ex["targets"].tolist() == [7, 8, 9, 10, 11, 12, 13, 14, 1]


def test_mask_fragment_docstring_example():
  inputs, targets = mass.mask_fragment(tf.constant([3, 4, 5, 6, 7]), tf.constant(1), 2, 358)
  assert inputs.numpy().tolist() == [3, 358, 358, 6, 7]
  assert targets.numpy().tolist() == [4, 5]


def _brute_force_lengths(budget, f):
  fits = [raw for raw in range(1, budget + 1)
          if mass.is_valid_chunk(raw, f) and raw + 1 + round(raw * f) + 1 <= budget]
  return max(fits) if fits else None


@pytest.mark.parametrize("f", [0.5, 0.3, 0.15, 0.01, 1.0])
def test_lengths_are_the_largest_raw_that_fits_the_budget(f):
  cfg = MassConfig(fragment_fraction=f)
  minimum = mass.min_budget(f)
  for budget in range(1, 400):
    raw = _brute_force_lengths(budget, f)
    if raw is None:
      assert budget < minimum
      with pytest.raises(ConfigError, match=f"minimum token budget is {minimum}$"):
        OBJ.lengths(cfg, budget)
      continue
    lengths = OBJ.lengths(cfg, budget)
    assert lengths == registry.TaskLengths(raw, raw + 1, round(raw * f) + 1)
    assert lengths.budget <= budget
  assert _brute_force_lengths(minimum, f) is not None


def test_lengths_for_the_wang_budget_and_the_minimum():
  assert OBJ.lengths(CFG, 626) == registry.TaskLengths(raw=416, inputs=417, targets=209)
  assert OBJ.lengths(CFG, 24) == registry.TaskLengths(raw=14, inputs=15, targets=8)
  assert mass.min_budget(0.5) == 5 and mass.min_budget(1.0) == 4
  with pytest.raises(ConfigError, match="minimum token budget is 5"):
    OBJ.lengths(CFG, 4)


@pytest.fixture(scope="module")
def many_examples():
  lengths = OBJ.lengths(CFG, BUDGET)
  docs = _random_docs(NUM_EXAMPLES * lengths.raw, seed=0)
  return lengths, _mass(docs, 7, lengths.feature_lengths()), _raw_chunks(docs, lengths.raw)


def test_lengths_are_exact(many_examples):
  lengths, examples, raws = many_examples
  assert (lengths.raw, lengths.inputs, lengths.targets) == (32, 33, 17)
  assert len(examples) == len(raws) >= NUM_EXAMPLES
  ot.assert_exact_lengths(examples, lengths, EOS)


def test_fragment_back_in_the_masked_positions_recovers_the_raw_chunk(many_examples):
  _, examples, raws = many_examples
  ot.assert_reconstructs(ot.pairs(examples), raws, merge)


def test_one_contiguous_fragment_of_exact_length_and_the_rest_untouched(many_examples):
  _, examples, raws = many_examples
  for ex, raw in zip(examples, raws):
    inputs, targets = ex["inputs"][:-1], ex["targets"][:-1]
    start = fragment_start(inputs, 16)  # round(0.5 * 32): fraction exactly 0.5, tolerance 0.
    keep = np.ones(32, bool)
    keep[start:start + 16] = False
    np.testing.assert_array_equal(inputs[keep], raw[keep])
    np.testing.assert_array_equal(targets, raw[start:start + 16])
    assert MASK not in targets  # The targets are the fragment only: no mask, no sentinel.


def _chi_square(counts, probs):
  counts, probs = np.asarray(counts, float), np.asarray(probs, float)
  expected = counts.sum() * probs
  return float(((counts - expected) ** 2 / expected).sum())


def test_fragment_starts_are_uniform(many_examples):
  _, examples, _ = many_examples
  starts = collections.Counter(fragment_start(ex["inputs"][:-1], 16) for ex in examples)
  assert set(starts) <= set(range(17))
  counts = [starts[s] for s in range(17)]
  uniform = np.full(17, 1 / 17)
  stat = _chi_square(counts, uniform)
  assert stat < CHI2_CRITICAL_16DOF_P001, (stat, counts)
  # Mean start 8 (sd of one start 4.9, of the mean over 2,000 about 0.11): within 0.5.
  mean = sum(s * c for s, c in starts.items()) / sum(counts)
  assert abs(mean - 8.0) < 0.5, mean
  # Power: the MASS code's 20/20/60 placement, at its expected counts, fails this test.
  code_placement = np.full(17, 0.6 / 17)
  code_placement[[0, 16]] += 0.2
  assert _chi_square(code_placement * len(examples), uniform) > 50 * CHI2_CRITICAL_16DOF_P001


def test_other_fraction_has_exact_fragment_length():
  cfg = MassConfig(fragment_fraction=0.3)
  lengths = OBJ.lengths(cfg, 60)
  assert lengths == registry.TaskLengths(raw=44, inputs=45, targets=14)  # round(13.2) = 13.
  docs = _random_docs(400 * 44, seed=1)
  examples = _mass(docs, 3, lengths.feature_lengths(), cfg=cfg)
  raws = _raw_chunks(docs, 44)
  assert len(examples) == len(raws) >= 400
  starts = set()
  for ex, raw in zip(examples, raws):
    starts.add(fragment_start(ex["inputs"][:-1], 13))
    np.testing.assert_array_equal(merge(ex["inputs"], ex["targets"]), raw)
  assert starts == set(range(32))  # All 44 - 13 + 1 starts occur in 400 draws (P(miss) < 1e-4).


def test_fraction_one_masks_the_whole_chunk():
  cfg = MassConfig(fragment_fraction=1.0)
  lengths = OBJ.lengths(cfg, 20)
  assert lengths == registry.TaskLengths(raw=9, inputs=10, targets=10)
  docs = _random_docs(10 * 9, seed=2)
  for ex, raw in zip(_mass(docs, 0, lengths.feature_lengths(), cfg=cfg), _raw_chunks(docs, 9)):
    assert ex["inputs"].tolist() == [MASK] * 9 + [EOS]
    assert ex["targets"].tolist() == raw.tolist() + [EOS]


def test_deterministic_for_a_seed_and_different_for_another():
  lengths = OBJ.lengths(CFG, BUDGET).feature_lengths()
  docs = _random_docs(300 * 32, seed=3)
  a, b, c = (_mass(docs, s, lengths) for s in (11, 11, 12))
  assert len(a) == len(b) == len(c) >= 300
  ot.assert_same_examples(a, b)
  # Two independent uniform starts out of 17 differ with probability 16/17 (~0.94);
  # over 300 examples the fraction's sd is ~0.014, so 0.85 is > 6 sd below it.
  differ = np.mean([fragment_start(x["inputs"][:-1], 16) != fragment_start(y["inputs"][:-1], 16)
                    for x, y in zip(a, c)])
  assert differ > 0.85, differ


def test_in_a_seqio_task_with_seed():
  docs = _random_docs(20 * 32, seed=4)
  lengths = OBJ.lengths(CFG, BUDGET)
  first = ot.seeded_task_pairs("objectax_test_mass", OBJ, CFG, docs, _features(), lengths)
  ot.assert_reconstructs(first, _raw_chunks(docs, lengths.raw), merge,
                         (lengths.inputs, lengths.targets))


def test_without_eos_lengths_shift_by_one():
  docs = _random_docs(5 * 32, seed=5)
  examples = _mass(docs, 0, {"inputs": 32, "targets": 16},
                   features=_features(inputs_eos=False, targets_eos=False))
  ot.assert_reconstructs(ot.pairs(examples), _raw_chunks(docs, 32), merge, (32, 16), eos_id=None)
  assert not any(EOS in ex["inputs"] or EOS in ex["targets"] for ex in examples)


def test_loss_falls_on_the_fragment_only():
  lengths = OBJ.lengths(CFG, BUDGET)
  docs = _random_docs(8 * 32, seed=6)
  examples = _mass(docs, 0, lengths.feature_lengths())[:8]
  # Encoder-decoder (MASS's own): encoder reads the masked chunk, the decoder is weighted on
  # exactly the fragment + EOS.
  for ex, out in zip(examples, ot.converted(seqio.EncDecFeatureConverter(pack=False), examples,
                                             lengths)):
    np.testing.assert_array_equal(out["encoder_input_tokens"], ex["inputs"])
    np.testing.assert_array_equal(out["decoder_target_tokens"], ex["targets"])
    assert out["decoder_loss_weights"].tolist() == [1] * lengths.targets
  # Causal / prefix decoder: one stream inputs + targets, weight only on the targets part.
  for ex, out in zip(examples, ot.converted(decoder.feature_converter(pack=False), examples,
                                             lengths)):
    np.testing.assert_array_equal(out["decoder_target_tokens"],
                                  np.concatenate([ex["inputs"], ex["targets"]]))
    assert out["decoder_loss_weights"].tolist() == [0] * lengths.inputs + [1] * lengths.targets


def test_registration_and_architectures():
  assert OBJ is mass.OBJECTIVE and OBJ.config_cls is MassConfig
  ot.assert_seq2seq_for_decoders_and_encdec(OBJ)


def test_config_errors():
  for bad in (0.0, -0.5, 1.5, float("nan"), "0.5", True):
    with pytest.raises(ConfigError, match="fragment_fraction must be in"):
      MassConfig(fragment_fraction=bad)
  ds = ot.docs_dataset([])
  with pytest.raises(ConfigError, match="makes targets of length 17, not 18"):
    OBJ.preprocess(ds, {"inputs": 33, "targets": 18}, _features(), CFG)
  with pytest.raises(ConfigError, match="minimum token budget is 5"):
    OBJ.preprocess(ds, {"inputs": 2, "targets": 1}, _features(), CFG)
  with pytest.raises(ConfigError, match="output_features"):
    OBJ.preprocess(ds, {"inputs": 33, "targets": 17}, {"targets": seqio.Feature(VOCAB)}, CFG)
  ot.assert_rejects_bad_features(OBJ, CFG, {"inputs": 33, "targets": 17}, VOCAB)
