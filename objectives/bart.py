"""BART denoising: text infilling + sentence permutation (Lewis et al. 2020).

See docs/objectives.md#bart.

fairseq `DenoisingDataset` with BART-large's pretraining flags (as posted by the fairseq
authors, github.com/facebookresearch/fairseq/issues/1899):
`--mask 0.3 --mask-random 0.1 --poisson-lambda 3.5 --permute-sentences 1
--mask-length span-poisson --replace-length 1 --rotate 0 --insert 0`. Per example:

1. Raw chunk: documents get EOS, are concatenated and chopped into chunks of exactly `raw`
   tokens (remainder dropped). targets = the ORIGINAL chunk + EOS: the decoder
   reconstructs the whole document, loss on every target token.
2. Sentence permutation (fairseq `permute_sentences`, p=1): the chunk is split into
   sentences by `objectax.objectives.sentences` (a sentence ends after ".", "!", "?" or EOS;
   the chunk's last sentence may be open) and ALL sentences are shuffled (uniformly).
3. Text infilling (fairseq `add_whole_word_mask`, span-poisson, replace_length=1) on the
   permuted chunk: N = round(mask_ratio * raw) tokens are masked in spans whose lengths are
   Poisson(lambda) draws, drawn until their sum reaches N, the last one clipped so the sum
   is exactly N. Each span collapses to ONE token: the mask id <extra_id_0> = vocab_size - 1
   (T5's sentinel_id, this codebase's shared mask token), or with probability mask_random a
   random token from [3, vocab_size - extra_ids) (iid_denoising's range). A zero-length
   draw inserts one such token (fairseq turns these into `add_insertion_noise`).
   inputs = the infilled chunk + EOS, of length raw - N + S + 1 for S spans.

Choices and differences from fairseq, all documented here:
- Tokens, not words: spans are counted in SentencePiece tokens; fairseq masks whole words
  (GPT-2 BPE word starts). EOS tokens inside the chunk are ordinary, maskable tokens.
- Placement: the S spans (in a random order, so the clipped one is not always last) are
  laid into a uniformly random split of the raw - N kept tokens into S + 1 gaps whose S - 1
  interior gaps are >= 1 and whose two end gaps may be empty. Spans therefore never touch
  or overlap, every mask/random token stands for exactly one span, and exactly N tokens are
  masked. fairseq starts spans at random distinct word starts, so its spans may touch or
  overlap (masking fewer than N tokens), never cover its BOS/EOS, and puts insertions at
  independent random positions with exactly ceil(mask_random * inserts) random tokens;
  here every span, insertions included, flips its own mask/random coin.
- N = round(mask_ratio * raw) (fairseq: ceil over word starts); mask_ratio = 0 disables
  infilling (fairseq's early return).
- Span-count bound: S is unbounded in principle (zero-length draws), so at most
  K = max_spans(N, lambda) lengths are drawn: the least k with
  P(k Poisson(lambda) draws sum to < N) = P(Poisson(k * lambda) <= N - 1) <= 1e-9
  (TAIL_PROBABILITY). If the K draws fall short of N, the last span takes the rest. So
  S <= K always and the distribution is changed with probability <= 1e-9 per example.
  The inputs bound raw - N + K + 1 is far tighter than the naive raw + 1 (S <= N): at a
  626-token budget: raw 337, N 101, K 50, inputs bound 287 (+ targets 338 = 625) against
  a mean inputs length of 266.4 (E[S] = 29.36), so 20.6 padding positions per example on
  average, 3.3% of the budget; the naive bound would give raw 312 and pad 10.6%.
- lambda: 3.5 as in the BART-large command; the BART paper's text says lambda = 3 (as
  quoted by secondary sources); set `poisson_lambda=3.0` for that.

Worked example (a real run of this module under map_seed_manager(2), token budget 72 ->
TaskLengths(raw=34, inputs=37, targets=35, exact=False): N = 10 masked tokens, at most
K = 12 spans; seqio.ByteVocabulary(extra_ids=100): id = byte + 3, "." = 49, " " = 35,
EOS 1, <extra_id_0> = 358; documents "Ab cd. Ef gh. Ij kl." and "Mn op. Qr st. Uv wx yz."):

  chunk    [68, 101, 35, 102, 103, 49, 35, 72, 105, 35, 106, 107, 49, 35, 76, 109, 35, 110,
            111, 49, 1, 80, 113, 35, 114, 115, 49, 35, 84, 117, 35, 118, 119, 49]
           "Ab cd." " Ef gh." " Ij kl." EOS "Mn op." " Qr st."   (6 sentences, 34 tokens)
  permuted [35, 84, 117, 35, 118, 119, 49, 1, 68, 101, 35, 102, 103, 49, 80, 113, 35, 114,
            115, 49, 35, 76, 109, 35, 110, 111, 49, 35, 72, 105, 35, 106, 107, 49]
           " Qr st." EOS "Ab cd." "Mn op." " Ij kl." " Ef gh."    (mask_ratio=0, same seed)
  inputs   [35, 84, 117, 35, 118, 119, 358, 101, 35, 102, 103, 49, 80, 113, 35, 114, 358,
            115, 49, 241, 110, 147, 72, 105, 35, 106, 107, 49, 1]
           " Qr st" <M> "b cd.Mn o" <M> "p." 241 "k" 147 "Ef gh." EOS
  targets  [68, 101, 35, 102, 103, 49, ..., 118, 119, 49, 1]       (the chunk + EOS, 35)

S = 4 spans of lengths 3, 0, 4, 3 (sum N = 10): ". EOS A" -> 358, an insertion -> 358
between "o" and "p", " Ij " -> random 241, "l. " -> random 147; inputs 34 - 10 + 4 + 1 =
29 <= 37. (At this tiny budget the 1e-9 bound K = 12 exceeds N; at 626 it is 50 < 101.)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Optional

import gin
import numpy as np
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import iid_denoising
from objectax.objectives import registry
from objectax.objectives import sentences
from objectax.objectives import stream

# Per-example probability that the span-count cap K changes the masking (module docstring).
TAIL_PROBABILITY = 1e-9
# Chunks corrupted together: vectorizing over a batch amortizes TF's per-op overhead.
BATCH = 128


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BartConfig:
  """BART-large pretraining noise (the released BART-large command; docs/objectives.md#bart).

  Attributes:
    mask_ratio: fraction of the raw chunk's tokens masked, in [0, 1) (`--mask 0.3`);
      0 turns text infilling off.
    poisson_lambda: mean span length, > 0 (`--poisson-lambda 3.5`; the BART paper's text
      says 3, as secondary sources quote it: we follow the released command).
    mask_random: probability a span becomes a random token instead of <extra_id_0>, in
      [0, 1] (`--mask-random 0.1`).
    permute_sentences: shuffle all sentences of the chunk first (`--permute-sentences 1`).
  """
  mask_ratio: float = 0.3
  poisson_lambda: float = 3.5
  mask_random: float = 0.1
  permute_sentences: bool = True

  def __post_init__(self):
    def number(x):
      return not isinstance(x, bool) and isinstance(x, (int, float))
    if not number(self.mask_ratio) or not 0.0 <= self.mask_ratio < 1.0:
      raise ConfigError(f"BartConfig.mask_ratio must be in [0, 1), got {self.mask_ratio!r}")
    if not number(self.poisson_lambda) or not 0.0 < self.poisson_lambda < float("inf"):
      raise ConfigError(f"BartConfig.poisson_lambda must be > 0, got {self.poisson_lambda!r}")
    if not number(self.mask_random) or not 0.0 <= self.mask_random <= 1.0:
      raise ConfigError(f"BartConfig.mask_random must be in [0, 1], got {self.mask_random!r}")
    if not isinstance(self.permute_sentences, bool):
      raise ConfigError("BartConfig.permute_sentences must be True or False, got "
                        f"{self.permute_sentences!r}")
    if self.mask_ratio == 0.0 and not self.permute_sentences:
      raise ConfigError("BartConfig with mask_ratio=0 and permute_sentences=False leaves the "
                        "inputs equal to the targets; turn one of them on")
    # About mask_ratio * raw / lambda spans need as many kept tokens between them.
    if self.mask_ratio * (1.0 + 1.0 / self.poisson_lambda) >= 1.0:
      raise ConfigError(
          f"BartConfig.mask_ratio={self.mask_ratio} with poisson_lambda={self.poisson_lambda} "
          "leaves less than one kept token between spans; lower mask_ratio or raise lambda")


def _poisson_cdf(n: int, mus: np.ndarray) -> np.ndarray:
  """P(Poisson(mu) <= n) for each mu in mus (log-space sum; 0 where n < 0)."""
  mus = np.asarray(mus, np.float64)
  if n < 0:
    return np.zeros_like(mus)
  k = np.arange(n + 1, dtype=np.float64)
  log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
  positive = mus > 0
  log_mu = np.log(np.where(positive, mus, 1.0))[:, None]
  log_terms = -mus[:, None] + k * log_mu - log_fact
  # Poisson(0) is 0 with certainty: only the k = 0 term, exp(0) = 1.
  log_terms = np.where(positive[:, None], log_terms, np.where(k == 0, 0.0, -np.inf))
  return np.exp(log_terms).sum(axis=1)


@functools.lru_cache(maxsize=4096)
def max_spans(num_noise: int, poisson_lambda: float) -> int:
  """K: least k with P(Poisson(k * lambda) <= num_noise - 1) <= TAIL_PROBABILITY.

  P(sum of k Poisson(lambda) draws < N) is that probability, so K draws reach N except
  with probability <= 1e-9. max_spans(101, 3.5) == 50, max_spans(10, 3.5) == 12, 0 for N = 0.
  """
  if num_noise <= 0:
    return 0
  k = max(1, int(num_noise / poisson_lambda))
  while True:  # Test 16 candidates at once; the tail falls fast past N / lambda.
    ks = np.arange(k, k + 16)
    ok = _poisson_cdf(num_noise - 1, ks * poisson_lambda) <= TAIL_PROBABILITY
    if ok.any():
      return int(ks[np.argmax(ok)])
    k += 16


def expected_num_spans(num_noise: int, poisson_lambda: float) -> float:
  """E[S], S = draws until the sum reaches N: sum_k P(S > k) = sum_k P(Poisson(k lam) <= N-1).

  Ignores the 1e-9 cap. expected_num_spans(101, 3.5) ~= 29.4 (N / lambda plus the overshoot).
  """
  if num_noise <= 0:
    return 0.0
  ks = np.arange(0, max_spans(num_noise, poisson_lambda) + 64)
  return float(_poisson_cdf(num_noise - 1, ks * poisson_lambda).sum())


@dataclasses.dataclass(frozen=True)
class BartCounts:
  """Static counts of one raw chunk; inputs and targets count one EOS each."""
  raw: int
  num_noise: int   # N
  max_spans: int   # K: S <= K
  inputs: int      # raw - N + K + 1, the guaranteed bound
  targets: int     # raw + 1
  valid: bool


def counts(cfg: BartConfig, raw: int) -> BartCounts:
  """Counts for a raw chunk: counts(BartConfig(), 337) -> N 101, K 50, inputs <= 287, targets 338."""
  n = int(round(raw * cfg.mask_ratio))
  k = max_spans(n, cfg.poisson_lambda)
  valid = raw >= 1 and (cfg.mask_ratio == 0.0 or n >= 1)
  # K spans need K - 1 interior kept tokens (the gaps between spans are >= 1).
  valid = valid and raw - n >= k - 1
  return BartCounts(raw, n, k, raw - n + k + 1, raw + 1, valid)


def min_budget(cfg: BartConfig) -> int:
  """Smallest token budget with a valid chunk (23 for the defaults: raw 8, N 2, K 7)."""
  raw = 1
  while not counts(cfg, raw).valid:
    raw += 1
  c = counts(cfg, raw)
  return c.inputs + c.targets


def lengths(cfg: BartConfig, sequence_length: int) -> registry.TaskLengths:
  """Largest raw whose guaranteed bounds fit the budget (lengths grow with raw).

  lengths(BartConfig(), 626) == TaskLengths(raw=337, inputs=287, targets=338, exact=False).
  """
  def total(raw):
    c = counts(cfg, raw)
    return c.inputs + c.targets
  lo, hi = 0, max(sequence_length, 1)  # total(raw) > raw, so total(hi) > budget.
  while hi - lo > 1:  # invariant: total(lo) <= budget < total(hi), total(0) := 0
    mid = (lo + hi) // 2
    if total(mid) <= sequence_length:
      lo = mid
    else:
      hi = mid
  while lo >= 1 and not counts(cfg, lo).valid:
    lo -= 1
  if lo < 1:
    raise ConfigError(f"token budget {sequence_length} is too small for bart with {cfg}; "
                      f"the minimum token budget is {min_budget(cfg)}")
  c = counts(cfg, lo)
  return registry.TaskLengths(raw=c.raw, inputs=c.inputs, targets=c.targets, exact=False)


def permute_sentences(tokens_BR: tf.Tensor, end_ids: tuple[int, ...], seed) -> tf.Tensor:
  """Each row's sentences in a uniformly random order, each sentence intact.

  The P = (most sentences in a row of the batch) sentence slots of each row are put in the
  order of i.i.d. uniform scores (argsort, as seqio's stateless shuffle); slots past a
  row's own sentences are empty and change nothing. Output position q falls in the j-th
  sentence of the new order, s = order[j], and copies old_start[s] + q - new_start[j].
  Sorting P scores instead of all raw tokens keeps this cheap. E.g. sentences
  [A A A][B B][C] with scores (.9, .2, .5) -> order B, C, A -> [B B][C][A A A].
  """
  batch, raw = tf.shape(tokens_BR)[0], tokens_BR.shape[1]
  # sentence_ids over the flattened batch counts ends across rows; subtract each row's start.
  flat_ids = tf.reshape(sentences.sentence_ids(tf.reshape(tokens_BR, [-1]), end_ids),
                        [batch, raw])
  sentence_BR = flat_ids - flat_ids[:, :1]
  slots = tf.reduce_max(sentence_BR[:, -1]) + 1
  slot_BP = tf.broadcast_to(tf.range(slots)[None, :], [batch, slots])
  old_start_BP = tf.searchsorted(sentence_BR, slot_BP, side="left")
  length_BP = tf.searchsorted(sentence_BR, slot_BP, side="right") - old_start_BP
  order_BP = tf.argsort(tf.random.stateless_uniform([batch, slots], seed=seed), axis=1)
  length_in_order_BP = tf.gather(length_BP, order_BP, batch_dims=1)
  new_end_BP = tf.cumsum(length_in_order_BP, axis=1)
  # Position q in the j-th sentence of the new order copies old_start[s] + q - new_start[j].
  shift_BP = tf.gather(old_start_BP, order_BP, batch_dims=1) - (new_end_BP - length_in_order_BP)
  position_BR = tf.broadcast_to(tf.range(raw)[None, :], [batch, raw])
  new_slot_BR = tf.searchsorted(new_end_BP, position_BR, side="right")
  source_BR = position_BR + tf.gather(shift_BP, new_slot_BR, batch_dims=1)
  return tf.gather(tokens_BR, source_BR, batch_dims=1)


def poisson_span_lengths(batch: tf.Tensor, num_noise: int, max_span_count: int,
                         poisson_lambda: float, seeds) -> tuple[tf.Tensor, tf.Tensor]:
  """(int32[B, K] span lengths, int32[B] span counts S): Poisson draws until the sum reaches N.

  Draws K Poisson(lambda) lengths per row; S is the number needed for the running sum to
  reach N (at most K; if the K draws fall short, the K-th span takes the rest, probability
  <= TAIL_PROBABILITY), the S-th clipped so the S lengths sum to exactly N. The S active
  lengths are put in a random order (so the clipped span is not always the last); the K - S
  inactive ones are 0 and come last. E.g. N 12, draws [4, 0, 5, 6, 2, ...] -> clipped
  [4, 0, 5, 3, 0, ...], S = 4, shuffled -> [5, 3, 4, 0, 0, ...].
  """
  k = max_span_count
  draws_BK = tf.random.stateless_poisson([batch, k], seed=seeds[0], lam=poisson_lambda,
                                         dtype=tf.int32)
  cum_BK = tf.cumsum(draws_BK, axis=1)
  num_spans_B = tf.minimum(1 + tf.reduce_sum(tf.cast(cum_BK < num_noise, tf.int32), axis=1), k)
  lengths_BK = tf.minimum(cum_BK, num_noise) - tf.minimum(cum_BK - draws_BK, num_noise)
  shortfall_B = tf.maximum(num_noise - cum_BK[:, -1], 0)
  lengths_BK += shortfall_B[:, None] * tf.one_hot(k - 1, k, dtype=tf.int32)[None, :]
  active_BK = tf.range(k)[None, :] < num_spans_B[:, None]
  keys_BK = tf.where(active_BK, tf.random.stateless_uniform([batch, k], seed=seeds[1]), 2.0)
  return tf.gather(lengths_BK, tf.argsort(keys_BK, axis=1), batch_dims=1), num_spans_B


def random_gaps(num_kept: int, num_spans_B: tf.Tensor, max_span_count: int, seed) -> tf.Tensor:
  """int32[B, K + 1]: kept tokens between S spans, uniform; interior gaps >= 1, end gaps >= 0.

  A uniform composition of num_kept + 2 into S + 1 positive parts (cut at a uniform
  S-subset of the num_kept + 1 inner places: the first S of the top K scores) minus one at
  each end; the K - S parts after the S + 1 real ones are 0. E.g. num_kept 5, S 2: cuts
  {2, 3} -> parts [2, 1, 4] -> gaps [1, 1, 3], i.e. k <span> k <span> k k k.
  """
  k = max_span_count
  batch = tf.shape(num_spans_B)[0]
  scores_BC = tf.random.stateless_uniform([batch, num_kept + 1], seed=seed)
  _, cut_BK = tf.math.top_k(scores_BC, k=k)
  used_BK = tf.range(k)[None, :] < num_spans_B[:, None]
  cuts_BK = tf.sort(tf.where(used_BK, cut_BK + 1, num_kept + 2), axis=1)
  zeros_B1 = tf.zeros([batch, 1], tf.int32)
  bounds_BK2 = tf.concat([zeros_B1, cuts_BK, zeros_B1 + num_kept + 2], axis=1)
  parts_BK1 = bounds_BK2[:, 1:] - bounds_BK2[:, :-1]
  ends_BK1 = tf.one_hot(num_spans_B, k + 1, dtype=tf.int32) + tf.one_hot(0, k + 1,
                                                                          dtype=tf.int32)
  return parts_BK1 - ends_BK1


def infill(tokens_BR: tf.Tensor, num_noise: int, max_span_count: int, cfg: BartConfig,
           mask_id: int, first_sentinel: int, seeds) -> tuple[tf.Tensor, tf.Tensor]:
  """(int32[B, raw - N + K] infilled rows, int32[B] lengths raw - N + S): text infilling.

  Span j's token goes to output position (kept tokens in gaps 0..j) + j. Any other output
  position q, with `before` spans ahead of it, holds kept token q - before, which sits in
  gap `before` and so comes from chunk position q - before + (noise in spans 0..before-1).
  Positions past raw - N + S (the K - S unused spans) are junk the caller cuts off.
  """
  batch, raw = tf.shape(tokens_BR)[0], tokens_BR.shape[1]
  k, num_kept = max_span_count, raw - num_noise
  span_len_BK, num_spans_B = poisson_span_lengths(batch, num_noise, k, cfg.poisson_lambda,
                                                  seeds[:2])
  gaps_BK1 = random_gaps(num_kept, num_spans_B, k, seeds[2])
  span_dst_BK = tf.cumsum(gaps_BK1, axis=1)[:, :k] + tf.range(k)[None, :]  # increasing
  noise_before_BK1 = tf.concat(
      [tf.cumsum(span_len_BK, axis=1, exclusive=True), tf.fill([batch, 1], num_noise)], axis=1)
  position_BW = tf.broadcast_to(tf.range(num_kept + k)[None, :], [batch, num_kept + k])
  before_BW = tf.searchsorted(span_dst_BK, position_BW, side="left")
  is_span_BW = tf.searchsorted(span_dst_BK, position_BW, side="right") > before_BW
  source_BW = position_BW - before_BW + tf.gather(noise_before_BK1, before_BW, batch_dims=1)
  kept_BW = tf.gather(tokens_BR, tf.minimum(source_BW, raw - 1), batch_dims=1)
  replace_BK = tf.fill([batch, k], tf.constant(mask_id, tokens_BR.dtype))
  if cfg.mask_random > 0:
    is_random_BK = tf.random.stateless_uniform([batch, k], seed=seeds[3]) < cfg.mask_random
    random_BK = tf.random.stateless_uniform(
        [batch, k], seed=seeds[4], minval=iid_denoising.NUM_RESERVED_TOKENS,
        maxval=first_sentinel, dtype=tokens_BR.dtype)
    replace_BK = tf.where(is_random_BK, random_BK, replace_BK)
  span_token_BW = tf.gather(replace_BK, tf.minimum(before_BW, k - 1), batch_dims=1)
  return tf.where(is_span_BW, span_token_BW, kept_BW), num_kept + num_spans_B


def _vocabulary(output_features: Mapping[str, seqio.Feature], cfg: BartConfig):
  return stream.pair_vocabulary(output_features, "bart", 1 if cfg.mask_ratio > 0 else 0,
                                "its mask token <extra_id_0>")


def _append_eos_if(tokens_BL: tf.Tensor, eos_id: Optional[int]) -> tf.Tensor:
  if eos_id is None:
    return tokens_BL
  return tf.concat([tokens_BL, tf.fill([tf.shape(tokens_BL)[0], 1], eos_id)], axis=1)


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[BartConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[<= I], "targets": int32[T]}.

  T = raw + 1 fixes the raw chunk (raw without EOS on targets); I must be at least the
  guaranteed bound raw - N + K + 1 (take both from `lengths`). The inputs length varies per
  example, never above I. Chunks are corrupted BATCH at a time (vectorized), with six seqio
  map seeds per batch: deterministic under `seqio.utils.map_seed_manager(seed)` or a
  Task's seed.
  """
  cfg = cfg or BartConfig()
  if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
      "targets"):
    raise ConfigError("bart needs sequence_length['inputs'] and ['targets'] (take them from "
                      f"its lengths()); got {sequence_length}")
  vocab = _vocabulary(output_features, cfg)
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  raw = int(sequence_length["targets"]) - (targets_eos is not None)
  c = counts(cfg, raw)
  if not c.valid:
    raise ConfigError(f"bart cannot use sequence_length {dict(sequence_length)} (raw chunk "
                      f"{raw}); the minimum token budget is {min_budget(cfg)}")
  needed = c.inputs - (inputs_eos is None)
  if int(sequence_length["inputs"]) < needed:
    raise ConfigError(f"bart with targets length {sequence_length['targets']} needs inputs "
                      f"length >= {needed} (the guaranteed bound); got "
                      f"{sequence_length['inputs']}; take both from its lengths()")
  end_ids = sentences.sentence_end_ids(vocab) if cfg.permute_sentences else ()
  mask_id = vocab.vocab_size - 1
  first_sentinel = vocab.vocab_size - getattr(vocab, "extra_ids", 0)
  targets_length = c.targets - (targets_eos is None)

  @seqio.map_over_dataset(num_seeds=6)
  def corrupt(batch, seeds):
    tokens_BR = tf.ensure_shape(batch["targets"], [None, raw])
    source_BR = tokens_BR
    if cfg.permute_sentences:
      source_BR = permute_sentences(tokens_BR, end_ids, seeds[5])
    if c.num_noise > 0:
      inputs_BW, length_B = infill(source_BR, c.num_noise, c.max_spans, cfg, mask_id,
                                   first_sentinel, seeds)
    else:
      inputs_BW, length_B = source_BR, tf.fill([tf.shape(tokens_BR)[0]], raw)
    if inputs_eos is not None:  # EOS right after each row's last token.
      inputs_BW = tf.pad(inputs_BW, [[0, 0], [0, 1]])
      at_end_BW = tf.range(tf.shape(inputs_BW)[1])[None, :] == length_B[:, None]
      inputs_BW = tf.where(at_end_BW, inputs_eos, inputs_BW)
      length_B += 1
    return {"inputs": inputs_BW, "length": length_B,
            "targets": tf.ensure_shape(_append_eos_if(tokens_BR, targets_eos),
                                       [None, targets_length])}

  def cut(ex):
    return {"inputs": ex["inputs"][:ex["length"]], "targets": ex["targets"]}

  chunks = stream.concat_and_split(ds, raw, "targets", eos_id=targets_eos)
  return corrupt(chunks.batch(BATCH)).unbatch().map(cut, num_parallel_calls=tf.data.AUTOTUNE)


OBJECTIVE = registry.register(registry.Objective(
    name="bart",
    config_cls=BartConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    description="BART text infilling (Poisson(3.5) spans -> one mask, 30%) + sentence permutation",
))
