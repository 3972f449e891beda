"""i.i.d. denoising (T5 sec. 3.3): exact counts and lengths, reconstruction, 90/10 split,
seeding."""
import collections
import functools
import itertools
import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import iid_denoising
from objectax.objectives import registry
from objectax.objectives.iid_denoising import IidDenoisingConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: ids 3..258 are bytes, 259..358 the 100 sentinels, EOS = 1.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
MASK = VOCAB.vocab_size - 1  # <extra_id_0>
FIRST_SENTINEL = VOCAB.vocab_size - VOCAB.extra_ids
FEATURES = {"inputs": seqio.Feature(VOCAB), "targets": seqio.Feature(VOCAB)}
# Budgets that give a raw chunk of 134 tokens (20 noise tokens; 17 runs in span mode).
BUDGETS = {"t5_bert_style": 270, "t5_mass_style": 270, "iid_replace_spans": 171,
           "iid_drop_tokens": 136}
NUM_EXAMPLES = 1000


def _random_docs(num_tokens, seed=0):
  rng = np.random.default_rng(seed)
  docs, total = [], 0
  while total < num_tokens:
    doc = rng.integers(3, 500, size=rng.integers(1, 300)) % (FIRST_SENTINEL - 3) + 3
    docs.append(doc.astype(np.int32))
    total += len(doc)
  return docs


_dataset = ot.docs_dataset


def _run(obj, cfg, docs, seed, lengths, features=FEATURES):
  return ot.run(obj, cfg, docs, seed, lengths.feature_lengths(), features)


_raw_chunks = ot.raw_chunks


@functools.lru_cache(maxsize=None)
def _examples(name):
  """(cfg, lengths, counts, examples, raw chunks) for >= 1,000 chunks of 134 raw tokens."""
  obj = registry.get(name)
  cfg = obj.config_cls()
  lengths = obj.lengths(cfg, BUDGETS[name])
  assert lengths.raw == 134
  docs = _random_docs(NUM_EXAMPLES * 134 + 300, seed=0)
  examples = _run(obj, cfg, docs, 7, lengths)
  raws = _raw_chunks(docs, 134)
  assert len(examples) == len(raws) >= NUM_EXAMPLES
  return cfg, lengths, iid_denoising.counts(cfg, 134), examples, raws


def merge_unique(inputs, targets):
  """Inverse of u_u: inputs [3, 358, 6, 1], targets [358, 4, 5, 357, 1] -> [3, 4, 5, 6]."""
  inputs, targets = list(inputs[:-1]), list(targets[:-1])
  fills, current = {}, None
  for tok in targets:
    if tok >= FIRST_SENTINEL:
      assert tok not in fills
      current = fills[tok] = []
    else:
      current.append(tok)
  out = []
  for tok in inputs:
    out.extend(fills.pop(tok) if tok >= FIRST_SENTINEL else [tok])
  # Only the trailing sentinel (the chunk ends in non-noise) has nothing to fill.
  assert list(fills.values()) == [[]] and targets[-1] in fills
  return np.array(out, np.int32)


def _is_subsequence(sub, seq):
  it = iter(seq)
  return all(any(t == s for s in it) for t in sub)


def test_registered_names_lengths_and_gin_names():
  expected = {"t5_bert_style": ("iid_15_r10s90_f", (312, 313, 313)),
              "t5_mass_style": ("iid_15_m_f", (312, 313, 313)),
              "iid_replace_spans": ("iid_15_u_u", (496, 486, 139)),
              "iid_drop_tokens": ("iid_15_d_d", (624, 531, 95))}
  for name, (gin_name, lens) in expected.items():
    obj = registry.get(name)
    cfg = obj.config_cls()
    assert cfg.gin_name == gin_name
    got = obj.lengths(cfg, 626)
    assert (got.raw, got.inputs, got.targets) == lens and got.budget <= 626
    assert obj.features == ("inputs", "targets")
    assert set(obj.architectures) == {"encoder_decoder", "causal_decoder", "prefix_decoder"}


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_exact_lengths_eos_and_noise_count(name):
  cfg, lengths, c, examples, raws = _examples(name)
  assert c.num_noise == round(134 * 0.15) == 20
  for ex, raw in zip(examples, raws):
    assert ex["inputs"].shape == (lengths.inputs,) and ex["targets"].shape == (lengths.targets,)
    assert ex["inputs"][-1] == EOS and ex["targets"][-1] == EOS
    if cfg.targets_encoding == "f":  # The loss falls on the whole original chunk (unlike BERT).
      np.testing.assert_array_equal(ex["targets"][:-1], raw)


def test_mass_style_masks_exactly_the_noise_count_and_positions_are_uniform():
  _, _, c, examples, raws = _examples("t5_mass_style")
  freq = np.zeros(134)
  for ex, raw in zip(examples, raws):
    noise = ex["inputs"][:-1] == MASK
    assert noise.sum() == c.num_noise
    np.testing.assert_array_equal(ex["inputs"][:-1][~noise], raw[~noise])
    freq += noise
  # Each position is noise with p = 20/134; binomial sd over n examples, 5 sd tolerance.
  n, p = len(examples), 20 / 134
  assert np.abs(freq / n - p).max() < 5 * math.sqrt(p * (1 - p) / n)


def test_bert_style_splits_noise_90_mask_10_random_with_no_keep_case():
  _, _, c, examples, raws = _examples("t5_bert_style")
  masked = changed_to_random = 0
  for ex, raw in zip(examples, raws):
    inputs = ex["inputs"][:-1]
    is_mask = inputs == MASK
    is_random = (inputs != raw) & ~is_mask
    # Every noise token is the mask or a random regular token; the rest is untouched.
    assert is_mask.sum() + is_random.sum() <= c.num_noise
    assert ((inputs[is_random] >= 3) & (inputs[is_random] < FIRST_SENTINEL)).all()
    masked += is_mask.sum()
    changed_to_random += is_random.sum()
  total = len(examples) * c.num_noise
  random_rate = 1 - masked / total  # Exact: no keep case, so non-mask noise is random.
  # Binomial(total, 0.1): sd = sqrt(.09 / total) ~ 0.0021 at 20,000 tokens; allow 5 sd.
  assert abs(random_rate - 0.1) < 5 * math.sqrt(0.09 / total), random_rate
  # A random draw equals the original byte with p = 1/256, so almost all randoms are visible.
  assert changed_to_random >= 0.98 * (total - masked)


def test_replace_spans_reconstructs_with_fixed_run_count():
  _, _, c, examples, raws = _examples("iid_replace_spans")
  assert c.num_spans == round(20 * (134 - 20 + 1) / 134) == 17
  expected_in = list(range(MASK, MASK - c.num_spans, -1))
  expected_tg = list(range(MASK, MASK - c.num_spans - 1, -1))
  for ex, raw in zip(examples, raws):
    assert [t for t in ex["inputs"] if t >= FIRST_SENTINEL] == expected_in
    assert [t for t in ex["targets"] if t >= FIRST_SENTINEL] == expected_tg
    assert ex["inputs"][0] < FIRST_SENTINEL and ex["inputs"][-2] < FIRST_SENTINEL  # ends kept
    np.testing.assert_array_equal(merge_unique(ex["inputs"], ex["targets"]), raw)


def test_drop_tokens_splits_the_chunk_into_two_subsequences():
  _, _, c, examples, raws = _examples("iid_drop_tokens")
  for ex, raw in zip(examples, raws):
    inputs, targets = ex["inputs"][:-1], ex["targets"][:-1]
    assert len(targets) == c.num_noise and len(inputs) == 134 - c.num_noise
    assert collections.Counter(inputs.tolist()) + collections.Counter(targets.tolist()) == \
        collections.Counter(raw.tolist())
    assert _is_subsequence(inputs, raw) and _is_subsequence(targets, raw)


@pytest.mark.parametrize("inputs_encoding,targets_encoding",
                         list(itertools.product("mrgpsud", "fusd")))
def test_every_encoding_pair_is_exact(inputs_encoding, targets_encoding):
  cfg = IidDenoisingConfig(noise_density=0.25, inputs_encoding=inputs_encoding,
                           targets_encoding=targets_encoding)
  obj = registry.get("iid_denoising")
  lengths = obj.lengths(cfg, 200)
  c = iid_denoising.counts(cfg, lengths.raw)
  docs = _random_docs(40 * lengths.raw, seed=1)
  examples = _run(obj, cfg, docs, 3, lengths)
  raws = _raw_chunks(docs, lengths.raw)
  assert len(examples) == len(raws) >= 39
  if inputs_encoding in "rgp":  # the corruption really changes most noise positions
    changed = sum(int((ex["inputs"][:-1] != raw).sum()) for ex, raw in zip(examples, raws))
    assert changed > 0.8 * c.num_noise * len(raws), (changed, c.num_noise, len(raws))
  for ex, raw in zip(examples, raws):
    inputs, targets = ex["inputs"][:-1], ex["targets"][:-1]
    assert len(inputs) + 1 == lengths.inputs and len(targets) + 1 == lengths.targets
    sentinels = [t for t in inputs if t >= FIRST_SENTINEL]
    if inputs_encoding == "m":
      assert sentinels == [MASK] * c.num_noise
    elif inputs_encoding == "s":
      assert sentinels == [MASK] * c.num_spans
    elif inputs_encoding == "u":
      assert sentinels == list(range(MASK, MASK - c.num_spans, -1))
    elif inputs_encoding == "r":
      assert not sentinels and (inputs != raw).sum() <= c.num_noise
    elif inputs_encoding == "g":  # replacements come from the chunk itself
      changed = inputs != raw
      assert not sentinels and changed.sum() <= c.num_noise
      assert set(inputs[changed].tolist()) <= set(raw.tolist())
    elif inputs_encoding == "p":  # a permutation of the noise tokens among their positions
      assert not sentinels and (inputs != raw).sum() <= c.num_noise
      assert sorted(inputs.tolist()) == sorted(raw.tolist())
    else:
      assert not sentinels and _is_subsequence(inputs, raw)
    if targets_encoding == "f":
      np.testing.assert_array_equal(targets, raw)
    elif targets_encoding == "u":
      if inputs_encoding == "u":
        np.testing.assert_array_equal(merge_unique(ex["inputs"], ex["targets"]), raw)
      assert (targets >= FIRST_SENTINEL).sum() == c.num_spans + 1
    elif targets_encoding == "s":  # noise runs between shared sentinels, in order
      assert targets[0] == MASK and targets[-1] == MASK
      assert (targets == MASK).sum() == c.num_spans + 1
      runs = [list(g) for is_s, g in itertools.groupby(targets.tolist(), lambda t: t == MASK)
              if not is_s]
      assert len(runs) == c.num_spans and sum(map(len, runs)) == c.num_noise
      if inputs_encoding == "u":  # unique-sentinel inputs + shared-sentinel targets -> raw
        merged = []
        for t in inputs.tolist():
          merged += runs[MASK - t] if t >= FIRST_SENTINEL else [t]
        assert merged == raw.tolist()
    else:
      assert len(targets) == c.num_noise and _is_subsequence(targets, raw)


def test_deterministic_for_a_seed_and_different_for_another():
  for name in ("t5_bert_style", "iid_replace_spans", "iid_drop_tokens"):
    obj = registry.get(name)
    cfg = obj.config_cls()
    lengths = obj.lengths(cfg, BUDGETS[name])
    docs = _random_docs(30 * 134, seed=3)
    a, b, c = (_run(obj, cfg, docs, s, lengths) for s in (11, 11, 12))
    assert all(np.array_equal(x["inputs"], y["inputs"]) and
               np.array_equal(x["targets"], y["targets"]) for x, y in zip(a, b))
    assert any(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))


def test_in_a_seqio_task_with_seed():
  obj = registry.get("iid_replace_spans")
  cfg = obj.config_cls()
  docs = _random_docs(20 * 134, seed=4)
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: _dataset(docs), splits=["train"])
  task = seqio.Task("objectax_test_iid_replace_spans", source, output_features=FEATURES,
                    preprocessors=[functools.partial(obj.preprocess, cfg=cfg)])
  lengths = obj.lengths(cfg, BUDGETS["iid_replace_spans"])

  def run(seed):
    ds = task.get_dataset(lengths.feature_lengths(), split="train", shuffle=False, seed=seed)
    return [(ex["inputs"], ex["targets"]) for ex in ds.as_numpy_iterator()]

  first = run(5)
  assert [(i.tolist(), t.tolist()) for i, t in first] == \
      [(i.tolist(), t.tolist()) for i, t in run(5)]
  for (inputs, targets), raw in zip(first, _raw_chunks(docs, 134)):
    np.testing.assert_array_equal(merge_unique(inputs, targets), raw)


def test_without_eos_lengths_shift_by_one():
  obj = registry.get("iid_drop_tokens")
  cfg = obj.config_cls()
  features = {k: seqio.Feature(VOCAB, add_eos=False) for k in ("inputs", "targets")}
  with seqio.utils.map_seed_manager(0):
    ds = obj.preprocess(_dataset(_random_docs(5 * 134, seed=5)),
                        {"inputs": 114, "targets": 20}, features, cfg)
  examples = list(ds.as_numpy_iterator())
  assert examples and all(ex["inputs"].shape == (114,) and ex["targets"].shape == (20,)
                          for ex in examples)


def test_config_errors():
  with pytest.raises(ConfigError, match="noise_density"):
    IidDenoisingConfig(noise_density=0.0)
  with pytest.raises(ConfigError, match="inputs_encoding"):
    IidDenoisingConfig(inputs_encoding="x")
  with pytest.raises(ConfigError, match="targets_encoding"):
    IidDenoisingConfig(targets_encoding="m")
  with pytest.raises(ConfigError, match="applies to inputs_encoding 'm' only"):
    IidDenoisingConfig(inputs_encoding="u", random_fraction=0.1)
  obj = registry.get("iid_replace_spans")
  cfg = obj.config_cls()
  with pytest.raises(ConfigError, match="minimum token budget is 9"):
    obj.lengths(cfg, 8)
  ds = _dataset([])
  with pytest.raises(ConfigError, match="cannot make inputs 122 and targets 30"):
    obj.preprocess(ds, {"inputs": 122, "targets": 30}, FEATURES, cfg)
  with pytest.raises(ConfigError, match="sequence_length"):
    obj.preprocess(ds, {"targets": 28}, FEATURES, cfg)
  with pytest.raises(ConfigError, match="needs 64 extra ids"):
    obj.preprocess(ds, {"inputs": 486, "targets": 139},
                   {k: seqio.Feature(seqio.ByteVocabulary(extra_ids=20))
                    for k in ("inputs", "targets")}, cfg)


def test_exact_runs_noise_mask_docstring_and_counts():
  for seed in range(20):
    mask = iid_denoising.exact_runs_noise_mask(40, 8, 5, [(seed, 0), (seed, 1)]).numpy()
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    assert mask.sum() == 8 and starts.sum() == 5 and not mask[0] and not mask[-1]
  f = iid_denoising.span_to_sentinel
  tokens, span = tf.constant([3, 4, 5, 6, 7]), tf.constant([False, True, True, False, True])
  assert f(tokens, span, 359, unique=True).numpy().tolist() == [3, 358, 6, 357]
  assert f(tokens, span, 359, unique=False).numpy().tolist() == [3, 358, 6, 358]
