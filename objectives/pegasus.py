"""PEGASUS gap-sentence generation, GSG (Zhang et al. 2020).

See docs/objectives.md#pegasus-gap-sentences.

Settings of PEGASUS-Large (`google-research/pegasus`, `pegasus_params.py::pegasus_large_params`
and the `SentenceMaskAndEncode` op of `ops/pretrain_parsing_ops.cc` + `ops/sentence_selection.cc`):
strategy "dynamic_rouge", ROUGE-1 F1 with "standard" counting (Ind-Orig), gap
sentence ratio 0.45 scaled by uniform(0.33, 1), noise ratio 0.2 on the scores, selected
sentences masked 90% / left intact 10%, no word masking (masked_words_ratio = 0).

Per example (one chunk of one document; documents are never concatenated):
  1. a tokenized document is cut into consecutive chunks of at most `raw` tokens, and every
     chunk is an example. PEGASUS makes one example per document and truncates it to its
     first 512 input tokens (after masking) and 256 target tokens; here the rest of a long
     document becomes further chunks, so no text is discarded;
  2. sentences: `objectax.objectives.sentences` (a sentence ends after ".", "!", "?" tokens);
     a chunk boundary also ends a sentence;
  3. importance of sentence s: ROUGE-1 F1 between s (candidate) and the rest of the chunk
     (reference), unigrams counted with repetition, computed on token ids;
  4. noise: score * (1 + r * N(0, r)), r = 0.2, exactly as `GetSentenceIndicesByRouge`
     (its normal distribution already has stddev r and is scaled by r again, so the factor's
     stddev is r^2 = 0.04; PEGASUS also re-seeds that generator per document, so every
     document got the same noise sequence: here the noise is fresh per example);
  5. ratio = gap_sentence_ratio * uniform(min_ratio, 1), i.e. uniform in [0.1485, 0.45];
     m = min(floor(max(S * ratio, 1)), S) sentences (PEGASUS `GetNumMaskedSentences`
     truncates; it does not round), taken in decreasing noisy score (ties: the later
     sentence first, as PEGASUS sorts (score, index) pairs descending), SKIPPING any sentence
     that would push the targets past their bound: nothing is ever truncated;
  6. each selected sentence is replaced in the inputs by ONE mask token with prob 0.9 and
     left intact with prob 0.1; mask = <extra_id_0> = vocab_size - 1 (T5's sentinel_id,
     this codebase's shared mask; PEGASUS uses its reserved id 2, MASK1);
  7. inputs = the chunk with the replacements + EOS; targets = the selected sentences in
     document order + EOS.

Choices where we differ from PEGASUS (it works on words, we on subword ids after
tokenization): ROUGE counts token ids, punctuation included, with no lower-casing and no
stop-word list (PEGASUS-Large strips non-alphanumerics and English stop words).

Lengths: PEGASUS-Large uses inputs 512 / targets 256 (2:1). For a token budget B,
targets T = B // 3, inputs I = B - T and raw R = I - 1; every bound is an upper bound
(`exact=False`): an example is at most I and T long, and shorter when its document ends,
when sentences are masked, or when the selected sentences are short. B = 768 gives
TaskLengths(raw=511, inputs=512, targets=256, exact=False). Measured padding at B = 768 (share
of the bound left empty, default config): on the embedded corpus (pydocs train, 433k
SentencePiece tokens, 1,087 chunks, 62% of them full) inputs 52%, targets 30%, the two
together 45%; on full chunks alone inputs 38%, targets 11%, together 29%: masking removes
about 40% of a chunk's tokens from the inputs. PEGASUS instead masks the whole document and
then truncates the inputs to 512, so its inputs of long documents come out full but the text
past them is lost. Packing (first fit, data/packing.py) recovers part of the space: a full
chunk's example fills about two thirds of a decoder row of I + T, so two never share one,
and at B = 626 the rows keep 23% padding on a decoder and 28% on the encoder-decoder.

Worked example (a real run of this module under map_seed_manager(0), default config, budget
60 -> raw 39, inputs 40, targets 20; vocabulary seqio.ByteVocabulary(extra_ids=100), so
id = byte + 3, "." = 49, " " = 35, <extra_id_0> = 358 (<M>), EOS = 1). One document of 50
ids, "A cat sat. The cat ate. A dog ran. The cat sat. Hi", makes two chunks:

  chunk 1  "A cat sat." " The cat ate." " A dog ran." " The"     39 ids, 4 sentences
    ROUGE-1 F1 [0.462, 0.615, 0.308, 0.256]; m = int(4 * ratio) = 1 -> sentence 2, masked
    inputs  [68, 35, 102, 100, 119, 35, 118, 100, 119, 49, 358, 35, 68, 35, 103, 114, 106,
             35, 117, 100, 113, 49, 35, 87, 107, 104, 35, 1]  "A cat sat.<M> A dog ran. The " EOS
    targets [35, 87, 107, 104, 35, 102, 100, 119, 35, 100, 119, 104, 49, 1]  " The cat ate." EOS
  chunk 2  "cat sat." " Hi"                                            the last 11 ids
    ROUGE-1 F1 [0.182, 0.182], equal: the noise picks sentence 2; m = 1, masked
    inputs  [102, 100, 119, 35, 118, 100, 119, 49, 358, 1]           "cat sat.<M>" EOS
    targets [35, 75, 108, 1]                                           " Hi" EOS
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import gin
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import registry
from objectax.objectives import sentences
from objectax.objectives import stream

# Documents processed together by one vectorized step (then unbatched into examples). The
# per-step work is a handful of ops over all their tokens, so larger is faster, up to cache.
_DOCS_PER_STEP = 128
# The smallest budget: T = 2 (one target token + EOS) and I = 4 (raw R = 3).
MIN_BUDGET = 6


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PegasusConfig:
  """PEGASUS-Large GSG hyper-parameters (`pegasus_large_params`).

  Attributes:
    gap_sentence_ratio: `parser_masked_sentence_ratio` = 0.45, the largest share of a
      chunk's sentences selected, in (0, 1].
    min_ratio: `parser_dynamic_mask_min_ratio` = 0.33: each example's ratio is
      gap_sentence_ratio * uniform(min_ratio, 1); 1 gives a fixed ratio.
    rouge_noise_ratio: `parser_rouge_noise_ratio` = 0.2: scores are multiplied by
      1 + r * N(0, r); 0 selects the exact top sentences.
    mask_sentence_prob: `parser_mask_sentence_by_msk_token_prob` = 0.9; a selected sentence
      is otherwise left intact in the inputs (`..._by_intact_prob` = 0.1). PEGASUS's other
      two options, a random sentence and removal, have probability 0 in Large and are not
      implemented.
  """
  gap_sentence_ratio: float = 0.45
  min_ratio: float = 0.33
  rouge_noise_ratio: float = 0.2
  mask_sentence_prob: float = 0.9

  def __post_init__(self):
    if not 0.0 < self.gap_sentence_ratio <= 1.0:
      raise ConfigError(f"gap_sentence_ratio must be in (0, 1], got {self.gap_sentence_ratio}")
    if not 0.0 <= self.min_ratio <= 1.0:
      raise ConfigError(f"min_ratio must be in [0, 1], got {self.min_ratio}")
    if not self.rouge_noise_ratio >= 0.0:  # PEGASUS's only check (CHECK_GE).
      raise ConfigError(f"rouge_noise_ratio must be >= 0, got {self.rouge_noise_ratio}")
    if not 0.0 <= self.mask_sentence_prob <= 1.0:
      raise ConfigError(f"mask_sentence_prob must be in [0, 1], got {self.mask_sentence_prob}")


def chunk_documents(docs: tf.RaggedTensor, raw: int) -> tf.RaggedTensor:
  """[N, (L)] documents -> [K, (<= raw)] consecutive chunks; empty documents give none.

  raw 4: [[5, 6, 7, 8, 9, 10], [], [11]] -> [[5, 6, 7, 8], [9, 10], [11]].
  """
  len_N = tf.cast(docs.row_lengths(), tf.int32)
  chunks_N = (len_N + raw - 1) // raw
  doc_K = tf.repeat(tf.range(tf.size(len_N)), chunks_N)
  index_K = tf.range(tf.size(doc_K)) - tf.gather(tf.cumsum(chunks_N, exclusive=True), doc_K)
  len_K = tf.minimum(raw, tf.gather(len_N, doc_K) - raw * index_K)
  return tf.RaggedTensor.from_row_lengths(docs.flat_values, len_K, validate=False)


@dataclasses.dataclass(frozen=True)
class _Sentences:
  """Flat sentence bookkeeping for a batch of K chunks, T tokens, G sentences in all."""
  row_T: tf.Tensor     # chunk of each token
  seg_T: tf.Tensor     # sentence (0..G-1, batch-wide) of each token
  count_K: tf.Tensor   # sentences per chunk
  len_G: tf.Tensor     # tokens per sentence
  row_G: tf.Tensor     # chunk of each sentence


def _sentences(chunks: tf.RaggedTensor, end_ids: tuple[int, ...]) -> _Sentences:
  """Sentence ids that restart at every chunk (a chunk boundary ends a sentence)."""
  tokens_T = chunks.flat_values
  row_T = tf.cast(chunks.value_rowids(), tf.int32)
  sid_T = sentences.sentence_ids(tokens_T, end_ids)  # batch-wide, not restarted per chunk
  start_K = tf.cast(chunks.row_starts(), tf.int32)
  local_T = sid_T - tf.gather(tf.gather(sid_T, start_K), row_T)
  num_chunks = tf.size(start_K)
  count_K = tf.math.unsorted_segment_max(local_T, row_T, num_chunks) + 1
  seg_T = local_T + tf.gather(tf.cumsum(count_K, exclusive=True), row_T)
  num_sentences = tf.reduce_sum(count_K)
  len_G = tf.math.unsorted_segment_sum(tf.ones_like(seg_T), seg_T, num_sentences)
  row_G = tf.repeat(tf.range(num_chunks), count_K)
  return _Sentences(row_T, seg_T, count_K, len_G, row_G)


def _rouge1_f1(tokens_T: tf.Tensor, sent: _Sentences, vocab_size: int) -> tf.Tensor:
  """float32[G]: ROUGE-1 F1 of each sentence against the rest of its chunk.

  Counting with repetition (PEGASUS "standard"): overlap = sum over ids v of
  min(count_s(v), count_chunk(v) - count_s(v)); precision = overlap / len(s), recall =
  overlap / (len(chunk) - len(s)), each denominator at least 1; F1 = 0 unless both > 0.
  Only the (sentence, id) pairs that occur contribute, so two `unique` calls over the
  tokens replace an S x V count matrix.
  """
  ids_T = tf.cast(tokens_T, tf.int64)
  _, pair_T, count_P = tf.unique_with_counts(tf.cast(sent.seg_T, tf.int64) * vocab_size + ids_T)
  _, chunk_id_T, chunk_count_U = tf.unique_with_counts(
      tf.cast(sent.row_T, tf.int64) * vocab_size + ids_T)
  num_pairs = tf.size(count_P)
  chunk_count_P = tf.math.unsorted_segment_max(
      tf.gather(chunk_count_U, chunk_id_T), pair_T, num_pairs)
  seg_P = tf.math.unsorted_segment_max(sent.seg_T, pair_T, num_pairs)
  overlap_P = tf.minimum(count_P, chunk_count_P - count_P)
  num_sentences = tf.size(sent.len_G)
  overlap_G = tf.cast(tf.math.unsorted_segment_sum(overlap_P, seg_P, num_sentences), tf.float32)
  chunk_len_K = tf.math.unsorted_segment_sum(sent.len_G, sent.row_G, tf.size(sent.count_K))
  rest_G = tf.gather(chunk_len_K, sent.row_G) - sent.len_G
  precision_G = overlap_G / tf.cast(tf.maximum(sent.len_G, 1), tf.float32)
  recall_G = overlap_G / tf.cast(tf.maximum(rest_G, 1), tf.float32)
  both_G = (precision_G > 0) & (recall_G > 0)
  return tf.where(both_G, 2 * precision_G * recall_G
                  / tf.where(both_G, precision_G + recall_G, 1.0), 0.0)


def sentence_scores(chunks: tf.RaggedTensor, end_ids: tuple[int, ...],
                    vocab_size: int) -> tf.RaggedTensor:
  """[K, (S)] ROUGE-1 F1 of every sentence of every chunk (no noise), for inspection.

  Byte ids, "." = 49: chunk [10, 11, 49, 10, 12, 49] -> sentences [10 11 .] and [10 12 .]
  share 10 and ".", so each scores P = R = 2/3, F1 = 0.667.
  """
  sent = _sentences(chunks, end_ids)
  return tf.RaggedTensor.from_row_lengths(
      _rouge1_f1(chunks.flat_values, sent, vocab_size), sent.count_K)


def _greedy_fit(len_KS: tf.Tensor, alive_KS: tf.Tensor, want_K: tf.Tensor,
                capacity: int) -> tf.Tensor:
  """bool[K, S]: walk each row in order, take a sentence while fewer than want_K are taken
  and it fits in the remaining capacity, else skip it (exactly that sequential rule).

  Vectorized: with the skipped sentences removed, the taken ones are a prefix; the first
  sentence of that prefix that overflows is skipped, and so is every later sentence longer
  than the capacity left before it (capacity only shrinks). Repeat until none overflows;
  each round removes at least one sentence of every row that still overflows, and most
  rows need none.

  len [4, 9, 2, 3], want 3, capacity 8 -> takes 4, skips 9 (4 + 9 > 8), takes 2, skips 3
  (4 + 2 + 3 > 8): [T, F, T, F].
  """
  want_K1 = want_K[:, None]

  def overflow(alive):
    used_KS = tf.cumsum(tf.where(alive, len_KS, 0), axis=1)
    rank_KS = tf.cumsum(tf.cast(alive, tf.int32), axis=1)
    over_KS = alive & (rank_KS <= want_K1) & (used_KS > capacity)
    return over_KS, used_KS

  def body(alive):
    over_KS, used_KS = overflow(alive)
    first_K = tf.argmax(tf.cast(over_KS, tf.int32), axis=1, output_type=tf.int32)
    has_K = tf.reduce_any(over_KS, axis=1)
    first_len = tf.gather(len_KS, first_K, batch_dims=1)
    left_K = capacity - (tf.gather(used_KS, first_K, batch_dims=1) - first_len)
    later_KS = tf.range(tf.shape(len_KS)[1])[None, :] >= first_K[:, None]
    drop_KS = has_K[:, None] & later_KS & (len_KS > left_K[:, None])
    return (alive & ~drop_KS,)

  (alive_KS,) = tf.while_loop(
      lambda alive: tf.reduce_any(overflow(alive)[0]), body, (alive_KS,))
  rank_KS = tf.cumsum(tf.cast(alive_KS, tf.int32), axis=1)
  return alive_KS & (rank_KS <= want_K1)


def _gap_sentences(chunks: tf.RaggedTensor, seeds, cfg: PegasusConfig,
                   end_ids: tuple[int, ...], vocab_size: int, capacity: int,
                   inputs_eos: Optional[int], targets_eos: Optional[int]) -> dict:
  """One vectorized GSG step over a batch of chunks -> {"inputs", "targets"} ragged [K, (.)]."""
  tokens_T = chunks.flat_values
  sent = _sentences(chunks, end_ids)
  num_chunks = tf.size(sent.count_K)
  num_sentences = tf.size(sent.len_G)
  # Noise exactly as PEGASUS: std::normal_distribution(0, r), then score * (1 + r * noise).
  noise_G = tf.random.stateless_normal([num_sentences], seeds[0], stddev=cfg.rouge_noise_ratio)
  score_G = _rouge1_f1(tokens_T, sent, vocab_size) * (1.0 + cfg.rouge_noise_ratio * noise_G)
  # Descending noisy score, ties to the later sentence: a stable sort of reversed rows.
  score_KS = tf.RaggedTensor.from_row_lengths(score_G, sent.count_K).to_tensor(float("-inf"))
  width = tf.shape(score_KS)[1]
  order_KS = width - 1 - tf.argsort(tf.reverse(score_KS, [1]), axis=1,
                                    direction="DESCENDING", stable=True)
  len_KS = tf.RaggedTensor.from_row_lengths(sent.len_G, sent.count_K).to_tensor(0)
  sorted_len_KS = tf.gather(len_KS, order_KS, batch_dims=1)
  sorted_alive_KS = tf.gather(len_KS > 0, order_KS, batch_dims=1)
  # Dynamic ratio and PEGASUS's count: min(int(max(S * ratio, 1)), S).
  ratio_K = cfg.gap_sentence_ratio * tf.random.stateless_uniform(
      [num_chunks], seeds[1], minval=cfg.min_ratio, maxval=1.0)
  count_f = tf.cast(sent.count_K, tf.float32)
  want_K = tf.minimum(tf.cast(tf.maximum(count_f * ratio_K, 1.0), tf.int32), sent.count_K)
  chosen_sorted_KS = _greedy_fit(sorted_len_KS, sorted_alive_KS, want_K, capacity)
  chosen_KS = tf.gather(chosen_sorted_KS, tf.argsort(order_KS, axis=1), batch_dims=1)
  chosen_G = tf.RaggedTensor.from_tensor(chosen_KS, lengths=sent.count_K).flat_values
  masked_G = chosen_G & (tf.random.stateless_uniform([num_sentences], seeds[2])
                         < cfg.mask_sentence_prob)
  # Token level: a masked sentence keeps its first position, which becomes the mask id.
  chosen_T = tf.gather(chosen_G, sent.seg_T)
  masked_T = tf.gather(masked_G, sent.seg_T)
  first_T = tf.concat([[True], sent.seg_T[1:] != sent.seg_T[:-1]], axis=0)[:tf.size(tokens_T)]
  keep_T = ~masked_T | first_T
  inputs_T = tf.where(masked_T, tf.constant(vocab_size - 1, tokens_T.dtype), tokens_T)

  def rows(values_T, keep):
    lengths_K = tf.math.unsorted_segment_sum(tf.cast(keep, tf.int32), sent.row_T, num_chunks)
    return tf.RaggedTensor.from_row_lengths(tf.boolean_mask(values_T, keep), lengths_K,
                                            validate=False)

  def with_eos(rt, eos_id):
    if eos_id is None:
      return rt
    eos_K1 = tf.fill([num_chunks, 1], tf.constant(eos_id, rt.dtype))
    return tf.concat([rt, eos_K1], axis=1)

  return {"inputs": with_eos(rows(inputs_T, keep_T), inputs_eos),
          "targets": with_eos(rows(tokens_T, chosen_T), targets_eos)}


def _check_vocabulary(output_features: Mapping[str, seqio.Feature]) -> seqio.Vocabulary:
  return stream.pair_vocabulary(output_features, "pegasus_gsg", 1,
                                "its sentence mask <extra_id_0>")


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[PegasusConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[<= I], "targets": int32[<= T]}.

  (I, T) = (sequence_length["inputs"], sequence_length["targets"]) are upper bounds (take
  them from `lengths`): chunks hold I - 1 raw tokens (I when the inputs get no EOS), and the
  selected sentences fill at most T - 1 targets tokens. Three seqio map seeds per step of
  _DOCS_PER_STEP documents (score noise, ratio, mask), so the output is deterministic under
  `seqio.utils.map_seed_manager(seed)` or a Task's seed.
  """
  cfg = cfg or PegasusConfig()
  if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
      "targets"):
    raise ConfigError("pegasus_gsg needs sequence_length['inputs'] and ['targets'] (take "
                      f"them from its lengths()); got {sequence_length}")
  vocab = _check_vocabulary(output_features)
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  raw = int(sequence_length["inputs"]) - (inputs_eos is not None)
  capacity = int(sequence_length["targets"]) - (targets_eos is not None)
  if raw < 1 or capacity < 1:
    raise ConfigError(f"pegasus_gsg lengths {dict(sequence_length)} leave no room for text; "
                      f"the minimum token budget is {MIN_BUDGET}")
  end_ids = sentences.sentence_end_ids(vocab)  # Python, once per pipeline.
  vocab_size = vocab.vocab_size

  @seqio.map_over_dataset(num_seeds=3)
  def gsg(batch, seeds):
    return _gap_sentences(chunk_documents(batch["targets"], raw), seeds, cfg, end_ids,
                          vocab_size, capacity, inputs_eos, targets_eos)

  # Only "targets" travels on (a chunk is not a document, so other features do not apply).
  docs = ds.map(lambda ex: {"targets": ex["targets"]}) if len(ds.element_spec) > 1 else ds
  return stream.dense_examples(gsg(docs.ragged_batch(_DOCS_PER_STEP)).unbatch())


def lengths(cfg: PegasusConfig, sequence_length: int) -> registry.TaskLengths:
  """PEGASUS's 2:1 split of the budget: lengths(cfg, 768) == TaskLengths(511, 512, 256, ...)."""
  del cfg
  if sequence_length < MIN_BUDGET:
    raise ConfigError(f"token budget {sequence_length} is too small for pegasus_gsg; the "
                      f"minimum token budget is {MIN_BUDGET}")
  targets = sequence_length // 3  # PEGASUS-Large: inputs 512, targets 256.
  inputs = sequence_length - targets
  return registry.TaskLengths(raw=inputs - 1, inputs=inputs, targets=targets, exact=False)


OBJECTIVE = registry.register(registry.Objective(
    name="pegasus_gsg",
    config_cls=PegasusConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    description="PEGASUS GSG: top-ROUGE sentences (15-45%) masked, predicted as targets",
))
