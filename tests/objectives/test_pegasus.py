"""PEGASUS GSG: reconstruction, ROUGE selection, ratio and mask statistics, bounds, seeding."""
import collections

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.models import decoder
from objectax.objectives import pegasus
from objectax.objectives import registry
from objectax.objectives.pegasus import PegasusConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: id = byte + 3, "." = 49, "!" = 36, "?" = 66, EOS = 1, mask = 358.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
MASK = VOCAB.vocab_size - 1
DOT = 49
END_IDS = (1, 36, 49, 66)
OBJ = registry.get("pegasus_gsg")
CFG = PegasusConfig()
BUDGET = 96  # -> targets 32, inputs 64, raw 63: about 10 sentences per full chunk.
LENGTHS = registry.TaskLengths(raw=63, inputs=64, targets=32, exact=False)
# No noise, a fixed ratio of 0.45 and every selected sentence masked: the selection is a
# deterministic function of the chunk, checked against the numpy reference below.
EXACT = PegasusConfig(rouge_noise_ratio=0.0, min_ratio=1.0, mask_sentence_prob=1.0)


def _features(inputs_eos=True, targets_eos=True):
  return ot.features(VOCAB, inputs_eos=inputs_eos, targets_eos=targets_eos)


def _docs(num_tokens, seed):
  """Documents of 1-299 "letters" (ids 67..86, so sentences share words), with a "." after
  about one token in six, and a few empty documents (they must yield no example)."""
  rng = np.random.default_rng(seed)
  docs, total = [], 0
  while total < num_tokens:
    doc = rng.integers(67, 87, size=rng.integers(1, 300)).astype(np.int32)
    doc[rng.random(doc.size) < 1 / 6] = DOT
    docs.append(doc)
    total += doc.size
    if rng.random() < 0.02:
      docs.append(np.zeros([0], np.int32))
  return docs


def _run(docs, seed, cfg=CFG, sequence_length=None, features=None):
  return ot.run(OBJ, cfg, docs, seed, sequence_length or LENGTHS.feature_lengths(),
                features or _features())


# ----------------------------------------------------------------- independent numpy reference
def chunks_of(docs, raw):
  return [d[i:i + raw] for d in docs for i in range(0, d.size, raw)]


def split_sentences(tokens):
  """[a, ., b, c, ., d] -> [[a, .], [b, c, .], [d]] (a sentence ends after an end id)."""
  out, current = [], []
  for tok in tokens:
    current.append(int(tok))
    if tok in END_IDS:
      out.append(current)
      current = []
  return out + ([current] if current else [])


def rouge1_f1(sents):
  """float32 ROUGE-1 F1 of each sentence against the rest, with repetition (Counter algebra)."""
  whole = collections.Counter(t for s in sents for t in s)
  n = sum(whole.values())
  scores = []
  for s in sents:
    cand = collections.Counter(s)
    rest = whole - cand
    overlap = sum(min(c, rest[t]) for t, c in cand.items())
    p = np.float32(overlap) / np.float32(max(len(s), 1))
    r = np.float32(overlap) / np.float32(max(n - len(s), 1))
    scores.append(np.float32(2) * p * r / (p + r) if p > 0 and r > 0 else np.float32(0))
  return scores


def select(sents, ratio, capacity):
  """Indices PEGASUS picks (noise 0): top min(int(max(S * ratio, 1)), S) by score, ties to
  the later sentence, skipping any sentence that would overflow `capacity` target tokens."""
  scores = rouge1_f1(sents)
  want = min(int(max(np.float32(len(sents)) * np.float32(ratio), 1.0)), len(sents))
  chosen, used = [], 0
  for i in sorted(range(len(sents)), key=lambda i: (scores[i], i), reverse=True):
    if len(chosen) < want and used + len(sents[i]) <= capacity:
      chosen.append(i)
      used += len(sents[i])
  return sorted(chosen)


def reconstructs(inputs, targets, chunk, eos=True):
  """Whether putting the targets' sentences back gives `chunk`: each mask in the inputs takes
  the next selected sentence of the targets, and a selected sentence left intact is already
  in the inputs (it takes its target sentence in passing). Which equal-looking input
  sentence was the intact one can be ambiguous ("A <M> B" with targets "A B"), so every
  consistent choice is tried; all target sentences must be used."""
  inputs, targets, chunk = list(inputs), list(targets), list(chunk)
  if eos:
    assert inputs.pop() == EOS and targets.pop() == EOS
  wanted = split_sentences(targets)
  units = []  # Sentences of the inputs, a mask being a sentence of its own.
  for tok in inputs:
    if tok == MASK:
      units.append([MASK])
    elif not units or units[-1] == [MASK] or units[-1][-1] in END_IDS:
      units.append([tok])
    else:
      units[-1].append(tok)

  def search(u, j, pos):
    if u == len(units):
      return j == len(wanted) and pos == len(chunk)
    unit = units[u]
    if unit == [MASK]:
      fill = wanted[j] if j < len(wanted) else None
      return fill is not None and chunk[pos:pos + len(fill)] == fill and search(
          u + 1, j + 1, pos + len(fill))
    if chunk[pos:pos + len(unit)] != unit:
      return False
    intact = j < len(wanted) and unit == wanted[j] and search(u + 1, j + 1, pos + len(unit))
    return intact or search(u + 1, j, pos + len(unit))

  return search(0, 0, 0)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def default_run():
  docs = _docs(1100 * 50, seed=0)
  return docs, _run(docs, 7)


@pytest.fixture(scope="module")
def exact_run():
  docs = _docs(700 * 50, seed=1)
  return docs, _run(docs, 3, cfg=EXACT)


# ------------------------------------------------------------------------------------- tests
def test_worked_example_from_the_docstring():
  text = "A cat sat. The cat ate. A dog ran. The cat sat. Hi"
  docs = [np.array(VOCAB.encode(text), np.int32)]
  lengths = OBJ.lengths(CFG, 60)
  assert lengths == registry.TaskLengths(raw=39, inputs=40, targets=20, exact=False)
  first, second = _run(docs, 0, sequence_length=lengths.feature_lengths())
  ids = lambda s: list(VOCAB.encode(s))
  assert first["inputs"].tolist() == ids("A cat sat.") + [MASK] + ids(" A dog ran. The ") + [EOS]
  assert first["targets"].tolist() == ids(" The cat ate.") + [EOS]
  assert second["inputs"].tolist() == ids("cat sat.") + [MASK, EOS]
  assert second["targets"].tolist() == ids(" Hi") + [EOS]
  scores = pegasus.sentence_scores(pegasus.chunk_documents(tf.ragged.constant(
      [docs[0].tolist()]), 39), END_IDS, VOCAB.vocab_size)
  np.testing.assert_allclose(scores.flat_values.numpy(),
                             [6 / 13, 8 / 13, 4 / 13, 10 / 39, 2 / 11, 2 / 11], rtol=1e-6)


def test_helper_docstring_examples():
  chunks = pegasus.chunk_documents(tf.ragged.constant([[5, 6, 7, 8, 9, 10], [], [11]]), 4)
  assert chunks.to_list() == [[5, 6, 7, 8], [9, 10], [11]]
  scores = pegasus.sentence_scores(tf.ragged.constant([[10, 11, 49, 10, 12, 49]]), END_IDS, 359)
  np.testing.assert_allclose(scores.to_list(), [[2 / 3, 2 / 3]], rtol=1e-6)
  taken = pegasus._greedy_fit(tf.constant([[4, 9, 2, 3]]), tf.constant([[True] * 4]),
                              tf.constant([3]), 8)
  assert taken.numpy().tolist() == [[True, False, True, False]]


def test_greedy_fit_matches_the_sequential_rule():
  rng = np.random.default_rng(5)
  len_KS = rng.integers(1, 12, size=(400, 9)).astype(np.int32)
  alive_KS = rng.random((400, 9)) < 0.9
  want_K = rng.integers(1, 8, size=400).astype(np.int32)
  got = pegasus._greedy_fit(tf.constant(len_KS), tf.constant(alive_KS), tf.constant(want_K),
                            20).numpy()
  for k in range(400):
    taken, used = [], 0
    for j in range(9):
      if alive_KS[k, j] and sum(taken) < want_K[k] and used + len_KS[k, j] <= 20:
        taken.append(True)
        used += len_KS[k, j]
      else:
        taken.append(False)
    assert got[k].tolist() == taken, k


def test_lengths_and_registration():
  assert OBJ.lengths(CFG, BUDGET) == LENGTHS
  assert OBJ.lengths(CFG, 768) == registry.TaskLengths(raw=511, inputs=512, targets=256,
                                                       exact=False)
  assert OBJ.lengths(CFG, 6) == registry.TaskLengths(raw=3, inputs=4, targets=2, exact=False)
  with pytest.raises(ConfigError, match="minimum token budget is 6"):
    OBJ.lengths(CFG, 5)
  assert OBJ is pegasus.OBJECTIVE and OBJ.config_cls is PegasusConfig
  assert set(OBJ.architectures) == {"encoder_decoder", "causal_decoder", "prefix_decoder"}


def test_bounds_chunks_and_reconstruction(default_run):
  docs, examples = default_run
  chunks = chunks_of(docs, LENGTHS.raw)
  assert len(examples) == len(chunks) >= 1000
  for ex, chunk in zip(examples, chunks):
    assert 2 <= ex["inputs"].size <= LENGTHS.inputs and 1 <= ex["targets"].size <= LENGTHS.targets
    assert ex["inputs"][-1] == EOS and ex["targets"][-1] == EOS
    assert reconstructs(ex["inputs"], ex["targets"], chunk)


def test_selected_sentences_are_the_top_rouge_ones(exact_run):
  docs, examples = exact_run
  chunks = chunks_of(docs, LENGTHS.raw)
  assert len(examples) == len(chunks) >= 600
  skipped = 0
  for ex, chunk in zip(examples, chunks):
    sents = split_sentences(chunk)
    expected = select(sents, 0.45, LENGTHS.targets - 1)
    skipped += len(expected) < min(int(max(len(sents) * np.float32(0.45), 1)), len(sents))
    # mask_sentence_prob = 1: every selected sentence is one mask in the inputs.
    expected_inputs = [t for i, s in enumerate(sents) for t in ([MASK] if i in expected else s)]
    assert ex["inputs"][:-1].tolist() == expected_inputs
    assert ex["targets"][:-1].tolist() == [t for i in expected for t in sents[i]]
  assert skipped > 0  # The bound-skipping rule was exercised.


def test_tf_scores_equal_the_numpy_rouge(exact_run):
  docs, _ = exact_run
  chunks = chunks_of(docs, LENGTHS.raw)[:300]
  scores = pegasus.sentence_scores(tf.ragged.constant([c.tolist() for c in chunks]), END_IDS,
                                   VOCAB.vocab_size)
  for got, chunk in zip(scores.to_list(), chunks):
    np.testing.assert_array_equal(np.float32(got), rouge1_f1(split_sentences(chunk)))


def _expected_share(num_sentences, cfg, grid=4001):
  """E[min(int(max(S * ratio, 1)), S) / S] for ratio = gsr * uniform(min_ratio, 1)."""
  ratio = cfg.gap_sentence_ratio * np.linspace(cfg.min_ratio, 1.0, grid, dtype=np.float32)
  want = np.minimum(np.maximum(np.float32(num_sentences) * ratio, 1).astype(int), num_sentences)
  return want.mean() / num_sentences


def test_gap_sentence_ratio_is_dynamic():
  # Targets as long as the inputs: the bound never binds, so the count is PEGASUS's.
  docs = _docs(1200 * 50, seed=2)
  examples = _run(docs, 11, sequence_length={"inputs": 64, "targets": 64})
  chunks = chunks_of(docs, 63)
  assert len(examples) == len(chunks) >= 1000
  shares, expected, low, high = [], [], [], []
  for ex, chunk in zip(examples, chunks):
    n = len(split_sentences(chunk))
    m = len(split_sentences(ex["targets"][:-1]))
    assert min(int(max(n * np.float32(0.1485), 1)), n) <= m <= min(int(max(n * np.float32(0.45),
                                                                           1)), n)
    shares.append(m / n)
    expected.append(_expected_share(n, CFG))
    if n >= 8:  # Where S * 0.1485 >= 1, both ends of the range are reached.
      low.append(m == int(n * np.float32(0.1485)) or m == 1)
      high.append(m == int(n * np.float32(0.45)))
  # Per-example share sd ~0.1, so the mean of >= 1000 has sd <= 0.0035: 4 sd = 0.014.
  tolerance = 4 * np.std(shares) / np.sqrt(len(shares))
  assert abs(np.mean(shares) - np.mean(expected)) < tolerance
  # The continuous ratio is uniform on [0.1485, 0.45] (mean 0.29925); truncation to whole
  # sentences lowers the realized share by about 1/2S (PEGASUS's int()).
  assert 0.2 < np.mean(shares) < 0.29925
  assert 0 < np.mean(low) < 0.5 and 0 < np.mean(high) < 0.5


def test_mask_and_intact_shares(default_run):
  _, examples = default_run
  masks = selected = 0
  for ex in examples:
    masks += int(np.sum(ex["inputs"] == MASK))
    selected += len(split_sentences(ex["targets"][:-1]))
  share = masks / selected
  # Binomial(selected, 0.9): 4 sd of the share is 4 * sqrt(0.09 / selected) ~ 0.01.
  assert selected > 2000 and abs(share - 0.9) < 4 * np.sqrt(0.09 / selected)


def _selection_changes(sents, capacity, noise, draws, rng):
  """P(the noisy selection differs from the noiseless one), by simulating PEGASUS's law:
  score * (1 + noise * N(0, noise)), fixed ratio 0.45, the same greedy skip rule."""
  scores = np.array(rouge1_f1(sents), np.float64)
  lens = np.array([len(s) for s in sents])
  want = min(int(max(np.float32(len(sents)) * np.float32(0.45), 1.0)), len(sents))
  exact = np.zeros(len(sents), bool)
  exact[select(sents, 0.45, capacity)] = True
  noisy_DS = scores * (1 + noise * rng.normal(0, noise, (draws, len(sents))))
  order_DS = np.argsort(-noisy_DS, axis=1, kind="stable")
  taken_DS = np.zeros_like(order_DS, bool)
  used_D, count_D = np.zeros(draws, int), np.zeros(draws, int)
  for j in range(len(sents)):
    fits = (count_D < want) & (used_D + lens[order_DS[:, j]] <= capacity)
    taken_DS[np.arange(draws), order_DS[:, j]] = fits
    used_D += np.where(fits, lens[order_DS[:, j]], 0)
    count_D += fits
  return np.mean(np.any(taken_DS != exact, axis=1))


def test_score_noise_follows_the_pegasus_law(exact_run):
  # How often noise 0.2 changes a chunk's selection, against a simulation of PEGASUS's
  # factor 1 + 0.2 * N(0, 0.2) (sd 0.04); a factor of sd 0.2 changes about twice as many.
  docs, exact = exact_run
  noisy = _run(docs, 9, cfg=PegasusConfig(min_ratio=1.0, mask_sentence_prob=1.0))
  rng = np.random.default_rng(0)
  p = np.array([_selection_changes(split_sentences(c), LENGTHS.targets - 1, 0.2, 400, rng)
                for c in chunks_of(docs, LENGTHS.raw)])
  observed = sum(a["inputs"].tolist() != b["inputs"].tolist() for a, b in zip(noisy, exact))
  # Sum of Bernoulli(p_k): 4 sd, plus the simulation's own error (400 draws per chunk).
  tolerance = 4 * np.sqrt(np.sum(p * (1 - p))) + 4 * np.sqrt(np.sum(p * (1 - p)) / 400)
  assert 0.05 * len(p) < p.sum() and abs(observed - p.sum()) < tolerance, (observed, p.sum())


def test_deterministic_for_a_seed_and_different_for_another():
  docs = _docs(100 * 50, seed=3)
  a, b, c = (_run(docs, s) for s in (11, 11, 12))
  same = lambda x, y: all(np.array_equal(p[k], q[k]) for p, q in zip(x, y)
                          for k in ("inputs", "targets"))
  assert len(a) == len(c) > 60 and same(a, b) and not same(a, c)


def test_in_a_seqio_task_with_seed():
  docs = _docs(60 * 50, seed=4)
  task = ot.task_over_docs("objectax_test_pegasus_gsg", OBJ, CFG, docs, _features())
  first = ot.task_pairs(task, LENGTHS, 5)
  assert first == ot.task_pairs(task, LENGTHS, 5) and first != ot.task_pairs(task, LENGTHS, 6)
  chunks = chunks_of(docs, LENGTHS.raw)
  assert len(first) == len(chunks)
  for (inputs, targets), chunk in zip(first, chunks):
    assert reconstructs(inputs, targets, chunk)


def test_without_eos_the_raw_chunk_is_the_whole_inputs_bound():
  docs = _docs(60 * 50, seed=5)
  examples = _run(docs, 0, sequence_length={"inputs": 63, "targets": 31},
                  features=_features(inputs_eos=False, targets_eos=False))
  chunks = chunks_of(docs, 63)
  assert len(examples) == len(chunks)
  for ex, chunk in zip(examples, chunks):
    assert ex["inputs"].size <= 63 and ex["targets"].size <= 31 and EOS not in ex["inputs"]
    assert reconstructs(ex["inputs"], ex["targets"], chunk, eos=False)


def test_loss_falls_on_the_targets_only(default_run):
  examples = default_run[1][:16]
  ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature={
      k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")})
  lengths = LENGTHS.feature_lengths()
  enc_dec = seqio.EncDecFeatureConverter(pack=False)(ds, lengths)
  for ex, out in zip(examples, enc_dec.as_numpy_iterator()):
    n = ex["targets"].size
    assert out["decoder_target_tokens"][:n].tolist() == ex["targets"].tolist()
    assert out["decoder_loss_weights"].tolist() == [1] * n + [0] * (LENGTHS.targets - n)
  for ex, out in zip(examples, decoder.feature_converter(pack=False)(ds, lengths)
                     .as_numpy_iterator()):
    i, t = ex["inputs"].size, ex["targets"].size
    assert out["decoder_target_tokens"][:i + t].tolist() == ex["inputs"].tolist() + ex[
        "targets"].tolist()
    assert out["decoder_loss_weights"].tolist() == [0] * i + [1] * t + [0] * (
        LENGTHS.budget - i - t)


def test_config_errors():
  for kwargs, name in (({"gap_sentence_ratio": 0.0}, "gap_sentence_ratio"),
                       ({"min_ratio": 1.5}, "min_ratio"),
                       ({"rouge_noise_ratio": -0.1}, "rouge_noise_ratio"),
                       ({"mask_sentence_prob": 2.0}, "mask_sentence_prob")):
    with pytest.raises(ConfigError, match=name):
      PegasusConfig(**kwargs)
  ds = ot.docs_dataset([])
  with pytest.raises(ConfigError, match="sequence_length"):
    OBJ.preprocess(ds, {"targets": 32}, _features(), CFG)
  with pytest.raises(ConfigError, match="minimum token budget is 6"):
    OBJ.preprocess(ds, {"inputs": 64, "targets": 1}, _features(), CFG)
  with pytest.raises(ConfigError, match="extra_ids=0"):
    vocab = seqio.PassThroughVocabulary(1000, eos_id=1)
    OBJ.preprocess(ds, LENGTHS.feature_lengths(), ot.features(vocab), CFG)
  with pytest.raises(ConfigError, match="same vocabulary"):
    OBJ.preprocess(ds, LENGTHS.feature_lengths(),
                   {"inputs": seqio.Feature(seqio.ByteVocabulary(extra_ids=5)),
                    "targets": seqio.Feature(VOCAB)}, CFG)
  with pytest.raises(ConfigError, match="output_features"):
    OBJ.preprocess(ds, LENGTHS.feature_lengths(), ot.features(VOCAB, names=("targets",)), CFG)


def test_config_is_gin_configurable_and_frozen():
  with gin.unlock_config():
    gin.parse_config("PegasusConfig.gap_sentence_ratio = 0.3")
  try:
    assert PegasusConfig() == PegasusConfig(gap_sentence_ratio=0.3)
  finally:
    gin.clear_config()
  assert PegasusConfig() == PegasusConfig(0.45, 0.33, 0.2, 0.9)
  with pytest.raises(AttributeError):
    CFG.min_ratio = 0.5  # pylint: disable=attribute-defined-outside-init
