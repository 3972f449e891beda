"""BART (text infilling + sentence permutation): targets, alignment, statistics, bounds, seeds."""
import collections
import dataclasses
import functools
import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.models import decoder
from objectax.objectives import bart
from objectax.objectives import registry
from objectax.objectives import sentences
from objectax.objectives.bart import BartConfig
import objective_testing as ot  # pylint: disable=g-bad-import-order

tf.config.set_visible_devices([], "GPU")

# Byte vocabulary: id = byte + 3 (ids 3..258), sentinels 259..358, EOS = 1.
VOCAB = seqio.ByteVocabulary(extra_ids=100)
EOS = VOCAB.eos_id
MASK = VOCAB.vocab_size - 1  # <extra_id_0>
FIRST_SENTINEL = VOCAB.vocab_size - VOCAB.extra_ids
FULL_STOP = ord(".") + 3  # 49
END_IDS = (EOS, ord("!") + 3, FULL_STOP, ord("?") + 3)  # written out, not taken from sentences
OBJ = bart.OBJECTIVE
CFG = BartConfig()
LAMBDA = CFG.poisson_lambda
BUDGET = 150  # -> raw 76: N = 23 masked tokens, at most K = 19 spans, inputs <= 73.
RAW, N, K, INPUTS_BOUND = 76, 23, 19, 73
NUM_EXAMPLES = 1000


_features = functools.partial(ot.features, VOCAB)  # (inputs_eos=True, targets_eos=True)


def _docs(num_tokens, seed=0):
  """Random byte-id documents with a full stop (id 49) on ~1 token in 10: ~10-token sentences."""
  rng = np.random.default_rng(seed)
  docs = ot.random_docs(num_tokens, seed, high=FIRST_SENTINEL)
  for doc in docs:
    doc[doc == FULL_STOP] = FULL_STOP + 1
    doc[rng.random(len(doc)) < 0.1] = FULL_STOP
  return docs


def _reference_chunks(docs, raw, eos=EOS):
  """Independent numpy chunking: each document + EOS, concatenated, cut, remainder dropped."""
  parts = [np.append(d, eos) if eos is not None else d for d in docs]
  stream = np.concatenate(parts).astype(np.int32)
  n = len(stream) // raw
  return [stream[i * raw:(i + 1) * raw] for i in range(n)]


def _run(cfg, docs, seed, sequence_length=None, features=None):
  sequence_length = sequence_length or OBJ.lengths(CFG, BUDGET).feature_lengths()
  return ot.run(OBJ, cfg, docs, seed, sequence_length, features or _features())


def _is_replacement_value(tok):
  return tok == MASK or 3 <= tok < FIRST_SENTINEL  # <extra_id_0> or a random regular token


def align(chunk, tokens, num_spans):
  """Spans [(start, length, token)] turning `chunk` into `tokens`, or None if impossible.

  The structure the objective promises: tokens = gap_0 r_0 gap_1 r_1 ... r_{S-1} gap_S, the
  gaps being the chunk's kept tokens in order (interior gaps non-empty), each r_j ONE token
  (mask or random) standing for a contiguous span of >= 0 chunk tokens. Dynamic programming
  over (chunk position, spans used) after each token; `keep[j]` / `repl[j]` hold the states
  whose last token was kept / a replacement (or the start).
  """
  raw, length = len(chunk), len(tokens)
  keep = np.zeros((length + 1, raw + 1, num_spans + 1), bool)
  repl = np.zeros_like(keep)
  keep[0, 0, 0] = True
  for j, tok in enumerate(tokens):
    both = keep[j] | repl[j]
    keep[j + 1, 1:, :] = both[:-1, :] & (chunk == tok)[:, None]
    if _is_replacement_value(tok):  # after a kept token or at the start; span = any run
      repl[j + 1, :, 1:] = np.logical_or.accumulate(keep[j, :, :-1], axis=0)
  state = "keep" if keep[length, raw, num_spans] else "repl" if repl[length, raw,
                                                                        num_spans] else None
  if state is None:
    return None
  spans, i, r = [], raw, num_spans
  for j in range(length, 0, -1):
    if state == "keep":
      i -= 1
      state = "keep" if keep[j - 1, i, r] else "repl"
    else:
      start = max(i0 for i0 in range(i + 1) if keep[j - 1, i0, r - 1])
      spans.append((start, i - start, int(tokens[j - 1])))
      i, r, state = start, r - 1, "keep"
  assert i == 0 and r == 0
  return spans[::-1]


def _split_sentences(tokens):
  """Sentences of a token list (a sentence ends after an END_IDS token); the last may be open."""
  out, current = [], []
  for tok in tokens:
    current.append(int(tok))
    if tok in END_IDS:
      out.append(tuple(current))
      current = []
  return out + ([tuple(current)] if current else [])


def sentence_order(chunk, tokens):
  """The chunk's sentence indices in the order `tokens` holds them, or None if not a permutation."""
  sents = _split_sentences(chunk)
  pos, order = 0, []
  remaining = dict(collections.Counter(sents))
  index_of = collections.defaultdict(list)
  for i, s in enumerate(sents):
    index_of[s].append(i)
  while pos < len(tokens):
    # Closed sentences cannot be prefixes of one another; the open one can, so try it last.
    for s in sorted(remaining, key=lambda s: s[-1] not in END_IDS):
      if remaining[s] and tuple(tokens[pos:pos + len(s)]) == s:
        remaining[s] -= 1
        order.append(index_of[s][remaining[s]])
        pos += len(s)
        break
    else:
      return None
  return order if not any(remaining.values()) else None


def test_worked_example_from_the_docstring():
  lengths = OBJ.lengths(CFG, 72)
  assert lengths == registry.TaskLengths(raw=34, inputs=37, targets=35, exact=False)
  docs = [np.array(VOCAB.encode(t), np.int32)
          for t in ("Ab cd. Ef gh. Ij kl.", "Mn op. Qr st. Uv wx yz.")]
  (ex,) = _run(CFG, docs, 2, lengths.feature_lengths())
  chunk = [68, 101, 35, 102, 103, 49, 35, 72, 105, 35, 106, 107, 49, 35, 76, 109, 35, 110,
           111, 49, 1, 80, 113, 35, 114, 115, 49, 35, 84, 117, 35, 118, 119, 49]
  assert ex["targets"].tolist() == chunk + [EOS]
  assert ex["inputs"].tolist() == [35, 84, 117, 35, 118, 119, 358, 101, 35, 102, 103, 49, 80,
                                   113, 35, 114, 358, 115, 49, 241, 110, 147, 72, 105, 35, 106,
                                   107, 49, 1]
  (perm,) = _run(dataclasses.replace(CFG, mask_ratio=0.0), docs, 2,
                 {"inputs": 35, "targets": 35})
  permuted = [35, 84, 117, 35, 118, 119, 49, 1, 68, 101, 35, 102, 103, 49, 80, 113, 35, 114,
              115, 49, 35, 76, 109, 35, 110, 111, 49, 35, 72, 105, 35, 106, 107, 49]
  assert perm["inputs"].tolist() == permuted + [EOS]
  assert sentence_order(chunk, permuted) == [5, 3, 0, 4, 2, 1]
  assert align(np.array(permuted), ex["inputs"][:-1], 4) == [
      (6, 3, 358), (18, 0, 358), (20, 4, 241), (25, 3, 147)]


def test_lengths_bounds_and_minimum_budget():
  assert OBJ.lengths(CFG, 626) == registry.TaskLengths(raw=337, inputs=287, targets=338,
                                                       exact=False)
  assert OBJ.lengths(CFG, BUDGET) == registry.TaskLengths(RAW, INPUTS_BOUND, RAW + 1,
                                                          exact=False)
  c = bart.counts(CFG, RAW)
  assert (c.num_noise, c.max_spans) == (N, K)
  # The largest raw that fits: one more raw token breaks the budget.
  bigger = bart.counts(CFG, 338)
  assert bigger.inputs + bigger.targets > 626
  assert bart.min_budget(CFG) == 23 and OBJ.lengths(CFG, 23).raw == 8
  with pytest.raises(ConfigError, match="minimum token budget is 23"):
    OBJ.lengths(CFG, 22)
  # Permutation only: nothing is masked, inputs are the chunk + EOS.
  assert OBJ.lengths(BartConfig(mask_ratio=0.0), 100) == registry.TaskLengths(
      49, 50, 50, exact=False)


def test_max_spans_is_the_1e9_quantile_of_the_span_count():
  from scipy import stats  # pylint: disable=g-import-not-at-top
  for num_noise in (1, 2, 10, 23, 101, 500):
    k = bart.max_spans(num_noise, LAMBDA)
    # P(S > k) = P(k draws sum to < N) = P(Poisson(k * lambda) <= N - 1).
    assert stats.poisson.cdf(num_noise - 1, k * LAMBDA) <= bart.TAIL_PROBABILITY
    assert stats.poisson.cdf(num_noise - 1, (k - 1) * LAMBDA) > bart.TAIL_PROBABILITY
    expected = sum(stats.poisson.cdf(num_noise - 1, j * LAMBDA) for j in range(k + 100))
    assert bart.expected_num_spans(num_noise, LAMBDA) == pytest.approx(expected, rel=1e-9)
  assert bart.max_spans(0, LAMBDA) == 0 and bart.max_spans(101, LAMBDA) == 50


def test_span_lengths_sum_to_n_even_when_the_cap_binds():
  # K = 3 draws of mean 3.5 almost never reach 50: the last span takes the rest.
  lengths, spans = bart.poisson_span_lengths(500, 50, 3, LAMBDA, [(1, 2), (3, 4)])
  assert (lengths.numpy().sum(axis=1) == 50).all() and (spans.numpy() == 3).all()
  lengths, spans = bart.poisson_span_lengths(2000, N, K, LAMBDA, [(5, 6), (7, 8)])
  lengths, spans = lengths.numpy(), spans.numpy()
  assert (lengths.sum(axis=1) == N).all() and (lengths >= 0).all()
  assert all((row[s:] == 0).all() for row, s in zip(lengths, spans))
  # The S active lengths are shuffled, so the clipped one is not always last: the first and
  # the last active span have the same law (means within 4 SE, sd ~2, 2,000 rows).
  first = lengths[:, 0]
  last = lengths[np.arange(len(spans)), spans - 1]
  assert abs(first.mean() - last.mean()) < 4 * math.sqrt((first.var() + last.var()) / len(first))


def test_random_gaps_are_uniform_compositions():
  num_kept, num_spans, k = 5, 2, 4
  gaps = bart.random_gaps(num_kept, tf.fill([6000], num_spans), k, (9, 9)).numpy()
  assert (gaps.sum(axis=1) == num_kept).all() and (gaps[:, num_spans + 1:] == 0).all()
  assert (gaps[:, 1:num_spans] >= 1).all() and (gaps >= 0).all()
  # Interior gap >= 1, ends >= 0: C(num_kept + 1, num_spans) = 15 equally likely layouts.
  hist = collections.Counter(tuple(g[:num_spans + 1]) for g in gaps)
  assert len(hist) == math.comb(num_kept + 1, num_spans)
  expected = len(gaps) / len(hist)  # 400; binomial sd ~19.4, tolerance 5 sd
  assert max(abs(v - expected) for v in hist.values()) < 5 * math.sqrt(expected)


@pytest.fixture(scope="module")
def default_examples():
  docs = _docs(NUM_EXAMPLES * RAW + 200, seed=0)
  return _run(CFG, docs, 7), _reference_chunks(docs, RAW)


def test_targets_are_the_original_chunk_and_inputs_within_bounds(default_examples):
  examples, chunks = default_examples
  assert len(examples) == len(chunks) >= NUM_EXAMPLES
  num_spans = []
  for ex, chunk in zip(examples, chunks):
    np.testing.assert_array_equal(ex["targets"], np.append(chunk, EOS))
    inputs = ex["inputs"]
    assert len(inputs) <= INPUTS_BOUND and inputs[-1] == EOS
    s = len(inputs) - 1 - (RAW - N)
    assert 1 <= s <= K
    num_spans.append(s)
    body = inputs[:-1]
    # Only <extra_id_0> of the extra ids appears; every mask is one span.
    assert not ((body >= FIRST_SENTINEL) & (body != MASK)).any()
    n_mask = int((body == MASK).sum())
    assert n_mask <= s
    # Multisets: the chunk loses exactly its N noise tokens (some may come back as random
    # tokens by chance), and at most S - n_mask random tokens are new.
    kept = collections.Counter(body[body != MASK].tolist())
    original = collections.Counter(chunk.tolist())
    assert sum((kept - original).values()) <= s - n_mask
    assert N - (s - n_mask) <= sum((original - kept).values()) <= N
  # The bound's padding: mean inputs length vs the exact E[S] (reported in the docstring).
  expected_s = bart.expected_num_spans(N, LAMBDA)
  assert abs(np.mean(num_spans) - expected_s) < 4 * np.std(num_spans) / math.sqrt(
      len(num_spans))


def test_permutation_only_shuffles_whole_sentences_uniformly():
  cfg = BartConfig(mask_ratio=0.0)
  docs = _docs(NUM_EXAMPLES * RAW + 200, seed=1)
  examples = _run(cfg, docs, 3, {"inputs": RAW + 1, "targets": RAW + 1})
  chunks = _reference_chunks(docs, RAW)
  assert len(examples) == len(chunks) >= NUM_EXAMPLES
  assert sentences.sentence_end_ids(VOCAB) == END_IDS
  first_pos, first_var, changed, adjacent, adjacent_p = [], [], 0, 0, []
  for ex, chunk in zip(examples, chunks):
    np.testing.assert_array_equal(ex["targets"], np.append(chunk, EOS))
    assert len(ex["inputs"]) == RAW + 1 and ex["inputs"][-1] == EOS
    order = sentence_order(chunk.tolist(), ex["inputs"][:-1].tolist())
    assert order is not None and sorted(order) == list(range(len(order)))
    n = len(order)
    if n >= 2:
      # Uniform permutation: sentence 0 lands at a uniform index in [0, n).
      first_pos.append(order.index(0) / (n - 1))
      first_var.append((n + 1) / (12 * (n - 1)))
      changed += order != sorted(order)
      # Sentence 1 right after sentence 0 with probability 1/n (a rotation would keep it).
      adjacent += order.index(1) == order.index(0) + 1
      adjacent_p.append(1 / n)
  assert len(first_pos) > 0.9 * len(examples)
  tolerance = 4 * math.sqrt(sum(first_var)) / len(first_var)  # 4 sd of the mean (~0.04)
  assert abs(np.mean(first_pos) - 0.5) < tolerance
  assert changed > 0.95 * len(first_pos)  # chunks have ~8 sentences: identity is rare
  adjacent_sd = math.sqrt(sum(p * (1 - p) for p in adjacent_p))
  assert abs(adjacent - sum(adjacent_p)) < 4 * adjacent_sd


def _poisson_pmf(k):
  return math.exp(-LAMBDA + k * math.log(LAMBDA) - math.lgamma(k + 1))


def _poisson_cdf(n, mu):
  return sum(math.exp(-mu + i * math.log(mu) - math.lgamma(i + 1)) if mu else float(i == 0)
             for i in range(n + 1)) if n >= 0 else 0.0


def expected_span_length_counts(num_noise, max_len=40):
  """E[# spans of length l] per chunk, exactly (the 1e-9 cap aside).

  With c_k ~ Poisson(k lambda) the sum of the first k draws: a non-final span of length l
  is a draw X = l with c_k + l < N; the final, clipped span has length l >= 1 when some
  c_k = N - l and the next draw is >= l.
  """
  ks = range(0, 4 * num_noise + 40)
  out = {}
  for l in range(0, max_len):
    nonfinal = _poisson_pmf(l) * sum(_poisson_cdf(num_noise - 1 - l, k * LAMBDA) for k in ks)
    final = 0.0
    if 1 <= l <= num_noise:
      tail = 1.0 - _poisson_cdf(l - 1, LAMBDA)
      final = tail * sum(_poisson_cdf(num_noise - l, k * LAMBDA)
                         - _poisson_cdf(num_noise - l - 1, k * LAMBDA) for k in ks)
    out[l] = nonfinal + final
  return out


@pytest.fixture(scope="module")
def infill_alignments():
  """Infilling alone (no permutation): 1,000+ chunks, each aligned against its target."""
  cfg = BartConfig(permute_sentences=False)
  docs = _docs(NUM_EXAMPLES * RAW + 200, seed=2)
  examples = _run(cfg, docs, 5)
  out = []
  for ex in examples:
    chunk, inputs = ex["targets"][:-1], ex["inputs"][:-1]
    num_spans = len(inputs) - (RAW - N)
    out.append((chunk, inputs, align(chunk, inputs, num_spans)))
  return out


def test_infilling_keeps_the_chunk_minus_contiguous_spans(infill_alignments):
  assert len(infill_alignments) >= NUM_EXAMPLES
  for chunk, inputs, spans in infill_alignments:
    assert spans is not None, (chunk.tolist(), inputs.tolist())
    # Exactly N noise tokens per chunk, in non-touching spans, one token each.
    assert sum(length for _, length, _ in spans) == N
    ends = [start + length for start, length, _ in spans]
    assert all(ends[j] < spans[j + 1][0] for j in range(len(spans) - 1))
    # Rebuild the inputs from the chunk and the spans; the kept tokens are the chunk minus
    # the spans, in order.
    rebuilt, replaced, pos = [], [], 0
    for start, length, tok in spans:
      rebuilt += chunk[pos:start].tolist()
      replaced.append(len(rebuilt))
      rebuilt.append(tok)
      pos = start + length
    rebuilt += chunk[pos:].tolist()
    assert rebuilt == inputs.tolist()
    kept = np.ones(RAW, bool)
    for start, length, _ in spans:
      kept[start:start + length] = False
    np.testing.assert_array_equal(np.delete(inputs, replaced), chunk[kept])
    assert (inputs == MASK).sum() <= len(spans)


def test_span_statistics(infill_alignments):
  lengths = [length for _, _, spans in infill_alignments for _, length, _ in spans]
  tokens = [tok for _, _, spans in infill_alignments for _, _, tok in spans]
  total_spans = len(lengths)
  # Mean span length: sum N per chunk / spans. Clipping the last span biases it below
  # lambda to N / E[S] (3.25 here, not 3.5); its standard error is the Poisson one,
  # sqrt(lambda / spans) (delta method: Var(S) ~ N / lambda^2). Tolerance 4 SE (~0.09).
  expected_mean = N / bart.expected_num_spans(N, LAMBDA)
  assert 3.2 < expected_mean < 3.3
  assert abs(np.mean(lengths) - expected_mean) < 4 * math.sqrt(LAMBDA / total_spans)
  # The whole span-length histogram (insertions l = 0 included) against its exact law:
  # total variation < 0.04 (sampling noise ~0.015 at ~7,000 spans).
  expected = expected_span_length_counts(N)
  assert sum(l * v for l, v in expected.items()) == pytest.approx(N, rel=1e-6)
  norm = sum(expected.values())
  hist = collections.Counter(lengths)
  tv = 0.5 * sum(abs(hist[l] / total_spans - v / norm) for l, v in expected.items())
  assert tv < 0.04 and set(hist) <= set(expected), (tv, hist)
  assert hist[0] > 0  # zero-length spans are insertions
  # Mask vs random token: Binomial(spans, 0.1); tolerance 4 sd (~0.014).
  random_share = np.mean([t != MASK for t in tokens])
  p = CFG.mask_random
  assert abs(random_share - p) < 4 * math.sqrt(p * (1 - p) / total_spans)
  assert all(3 <= t < FIRST_SENTINEL for t in tokens if t != MASK)


def test_deterministic_for_a_seed_and_different_for_another():
  docs = _docs(40 * RAW, seed=3)
  a, b, c = (_run(CFG, docs, s) for s in (11, 11, 12))
  assert len(a) == len(b) == len(c) >= 39
  ot.assert_same_examples(a, b)
  assert sum(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c)) > 35


def test_in_a_seqio_task_with_seed():
  docs = _docs(20 * RAW, seed=4)
  lengths = OBJ.lengths(CFG, BUDGET)
  first = ot.seeded_task_pairs("objectax_test_bart", OBJ, CFG, docs, _features(), lengths)
  chunks = _reference_chunks(docs, RAW)
  assert len(first) == len(chunks)
  for (inputs, targets), chunk in zip(first, chunks):
    assert targets == chunk.tolist() + [EOS] and len(inputs) <= lengths.inputs


def test_without_eos():
  docs = _docs(30 * RAW, seed=5)
  examples = _run(CFG, docs, 0, {"inputs": INPUTS_BOUND - 1, "targets": RAW},
                  features=_features(inputs_eos=False, targets_eos=False))
  chunks = _reference_chunks(docs, RAW, eos=None)
  assert len(examples) == len(chunks) > 0
  for ex, chunk in zip(examples, chunks):
    np.testing.assert_array_equal(ex["targets"], chunk)
    assert RAW - N + 1 <= len(ex["inputs"]) <= INPUTS_BOUND - 1 and EOS not in ex["inputs"]


def test_loss_falls_on_the_whole_target_only():
  lengths = OBJ.lengths(CFG, BUDGET)
  examples = _run(CFG, _docs(8 * RAW, seed=6), 0)[:8]
  # Encoder-decoder (BART's own): the decoder reconstructs the whole chunk, all weighted.
  for ex, out in zip(examples, ot.converted(seqio.EncDecFeatureConverter(pack=False), examples,
                                             lengths)):
    pad = lengths.inputs - len(ex["inputs"])
    assert out["encoder_input_tokens"].tolist() == ex["inputs"].tolist() + [0] * pad
    assert out["decoder_loss_weights"].tolist() == [1] * lengths.targets
  # Causal / prefix decoder: inputs + targets in one row, weight on the targets only; the
  # unused part of the inputs bound is padding at the end of the row.
  for ex, out in zip(examples, ot.converted(decoder.feature_converter(pack=False), examples,
                                             lengths)):
    n_in, pad = len(ex["inputs"]), lengths.inputs - len(ex["inputs"])
    assert out["decoder_target_tokens"].tolist() == (
        ex["inputs"].tolist() + ex["targets"].tolist() + [0] * pad)
    assert out["decoder_loss_weights"].tolist() == [0] * n_in + [1] * lengths.targets + [0] * pad


def test_registration_and_architectures():
  assert registry.get("bart") is OBJ and OBJ.config_cls is BartConfig
  ot.assert_seq2seq_for_decoders_and_encdec(OBJ)


def test_config_errors():
  for bad in (1.0, -0.1, float("nan"), "0.3", True):
    with pytest.raises(ConfigError, match="mask_ratio must be in"):
      BartConfig(mask_ratio=bad)
  for bad in (0.0, -1.0, float("inf"), float("nan")):
    with pytest.raises(ConfigError, match="poisson_lambda must be > 0"):
      BartConfig(poisson_lambda=bad)
  with pytest.raises(ConfigError, match="mask_random must be in"):
    BartConfig(mask_random=1.5)
  with pytest.raises(ConfigError, match="permute_sentences must be True or False"):
    BartConfig(permute_sentences=1)
  with pytest.raises(ConfigError, match="inputs equal to the targets"):
    BartConfig(mask_ratio=0.0, permute_sentences=False)
  with pytest.raises(ConfigError, match="less than one kept token between spans"):
    BartConfig(mask_ratio=0.6, poisson_lambda=1.0)
  ds = ot.docs_dataset([])
  with pytest.raises(ConfigError, match="needs inputs length >= 73"):
    OBJ.preprocess(ds, {"inputs": 72, "targets": RAW + 1}, _features(), CFG)
  with pytest.raises(ConfigError, match="minimum token budget is 23"):
    OBJ.preprocess(ds, {"inputs": 10, "targets": 4}, _features(), CFG)
  ot.assert_rejects_bad_features(OBJ, CFG, {"inputs": 73, "targets": RAW + 1}, VOCAB)
  with pytest.raises(ConfigError, match="emits 'inputs' and 'targets'"):
    OBJ.preprocess(ds, {"inputs": 73, "targets": 77}, ot.features(VOCAB, names=("targets",)),
                   CFG)
