"""Prefix language modelling, in its two pipelines (docs/objectives.md#two-prefix-lms).

Both objectives split a piece of text in two: inputs = the prefix, targets = the rest, loss
on the targets only. They differ in where the pieces come from and in EOS:

`prefix_lm`: Wang et al. (2022)'s PLM (their ND:PLM / ED:PLM). T5 repo
  `targets_for_prefix_lm_objective` + `pack_prefix_lm_decoder_only`: documents get EOS, are
  concatenated and chopped into pieces of exactly B tokens (B = the token budget, 626 in
  Wang et al.; the partial last piece is dropped), and each piece is split at i drawn
  uniformly from [1, B): inputs = piece[:i], targets = piece[i:]. No EOS is added at the
  split or after the piece, so len(inputs) + len(targets) == B for every example and a
  decoder row is exactly B tokens with no padding (TaskLengths.concat = B). On a decoder
  the seqio prefix-LM layout gives decoder_causal_attention = pos <= i and loss on
  pos >= i, which is what `pack_prefix_lm_decoder_only` builds.
  Encoder-decoder: Wang et al. pack TWO pieces per 1,252-token row
  (`pack_prefix_lm_encoder_decoder`): with one split i the encoder gets
  piece0[:i] + piece1[:626 - i] and the decoder piece0[i:] + piece1[626 - i:], so both
  sides are exactly 626 tokens (batch 1,024 rows; paper App. C). One piece per row would
  leave half of every 625 + 625 row empty, since no two random splits fit one row. With
  `PrefixLMConfig.pair_pieces` (the encoder-decoder sets it when packing; see `lengths`)
  each example is such a pair, already packed: the seqio features
  inputs/targets plus their `_segment_ids` (piece 1 or 2) and `_positions` (from 0 in each
  piece), so attention, cross-attention and positions keep the two pieces apart. The pair
  is made here, not by the feature converter, because seqio shuffles (and mixes) the
  examples before the converter sees them.
  Worked example (a real run of this module under map_seed_manager(0): budget 8, so
  sequence_length {"inputs": 7, "targets": 7}; EOS = 1; documents [3 ... 9], [10 ... 20],
  [21 ... 29]):

    stream   3 4 5 6 7 8 9 1 | 10 11 12 13 14 15 16 17 | 18 19 20 1 21 22 23 24 | 25 ... 1
    piece 1  inputs [3, 4, 5, 6, 7, 8, 9]     targets [1]                         i = 7
    piece 2  inputs [10]                      targets [11, 12, 13, 14, 15, 16, 17] i = 1
    piece 3  inputs [18, 19, 20, 1, 21]       targets [22, 23, 24]                i = 5
    (25 ... 29 1: six tokens, too few for a piece, dropped)

`t5_prefix_lm`: T5's own prefix LM (Raffel et al. 2020, Tables 2 and 4; T5 repo
  `prefix_lm`: select_random_chunk -> split_tokens_to_inputs_length -> denoise with
  `random_prefix_noise_mask`, `drop_nonnoise_tokens` / `drop_noise_tokens`). Documents are
  NOT concatenated: each document is cut into consecutive chunks of C tokens, its last chunk
  shorter, and a chunk of n tokens is split after a prefix of p tokens with p uniform in
  [max(1, round((1 - 2 r)(n - 1))), n - 1], r = noise_density (0.5: p uniform in
  [1, n - 1]). inputs = prefix + EOS, targets = rest + EOS. Short chunks are shorter
  examples, padded (or packed) by the feature converter: that is T5's definition, so the
  lengths are upper bounds (TaskLengths.exact = False) and inputs + targets = n + 2 <= B.
  Choices, where the T5 code leaves room:
  - Every document is split whole. T5 first applies select_random_chunk(max_length=65536),
    which keeps all of a document of <= 65,536 tokens (nearly every C4 document) and ONE
    random 65,536-token window of a longer one; the window is a memory guard of T5's
    pipeline, not part of the objective, so longer documents here give all their chunks.
    Empty documents give no chunk (T5 filters them out).
  - C = B - 2 (two EOS), so a chunk of C tokens fills the budget: inputs <= C and
    targets <= C. T5's split_tokens_to_inputs_length uses C = inputs_length - 1, which
    leaves the last inputs position unused (p <= n - 1); in budget terms that is the same
    chunking with inputs_length = C + 1.
  - A chunk of one token (a document of 1 mod C tokens ends in one) cannot be split into
    two non-empty parts. T5's mask gives it p = 0 (min_input_tokens = min(n - 1, 1)), so
    inputs = [EOS] and targets = [token, EOS]; this module does the same. Where the inputs
    feature has no EOS that example would have empty inputs, and it is dropped instead.
  - noise_density: the T5 code read here (google-research/text-to-text-transfer-transformer
    @ 2bb17322, t5/data/preprocessors.py) raises NotImplementedError unless it is 0.5; the
    general range above is our reading of the later T5 code and of a PyTorch port. Any
    density in (0, 1) is accepted: the targets then hold about r (n - 1) + 1 of the n tokens
    on average, and every r >= 0.5 gives [1, n - 1].
  Worked example (a real run under map_seed_manager(0): budget 8 -> C = 6, noise_density
  0.5, EOS = 1; documents [3 ... 9], [10, 11, 12], [] (no chunk), [13]):

    chunks  [3, 4, 5, 6, 7, 8] [9] | [10, 11, 12] | [13]
    inputs  [3, 4, 5, 1]      targets [6, 7, 8, 1]        p = 3 of n = 6
    inputs  [1]               targets [9, 1]              n = 1: p = 0
    inputs  [10, 11, 1]       targets [12, 1]             p = 2 of n = 3
    inputs  [1]               targets [13, 1]             n = 1: p = 0

Architectures: encoder-decoder (prefix -> encoder) and the prefix decoder
(bidirectional over the prefix plus one position) are PLM's homes; on a causal decoder it
is LM with the prefix's loss masked, so the prefix gets no bidirectional view.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import gin
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import registry
from objectax.objectives import stream

# Pieces split per map call and documents chunked per map call: the work is vectorized over
# a batch, so the per-element cost of tf.data is paid once per batch, not per example.
_PIECES_PER_STEP = 64
_DOCS_PER_STEP = 64


# ------------------------------------------------------------------ shared helpers


def _check_pair_features(name: str, output_features: Mapping[str, seqio.Feature]) -> None:
  """ConfigError unless the task has an inputs feature with the targets' vocabulary."""
  stream.pair_vocabulary(output_features, name)


def _equal_bounds(name: str, sequence_length: Optional[Mapping[str, int]]) -> int:
  """sequence_length["inputs"], checked equal to ["targets"] (both come from lengths())."""
  if not sequence_length or "inputs" not in sequence_length or "targets" not in sequence_length:
    raise ConfigError(f"{name} needs sequence_length['inputs'] and ['targets'] (pass the "
                      f"objective's lengths(...).feature_lengths()); got {sequence_length}")
  inputs, targets = int(sequence_length["inputs"]), int(sequence_length["targets"])
  if inputs != targets:
    raise ConfigError(f"{name} needs equal inputs and targets bounds (take them from its "
                      f"lengths()); got sequence_length {dict(sequence_length)}")
  return inputs


def _append_eos_if(tokens_NR: tf.RaggedTensor, eos_id: Optional[int]) -> tf.RaggedTensor:
  """[[5], []] -> [[5, eos], [eos]] (unchanged when eos_id is None)."""
  if eos_id is None:
    return tokens_NR
  eos_N1 = tf.fill(tf.stack([tokens_NR.nrows(), 1]), tf.constant(eos_id, tokens_NR.dtype))
  return tf.concat([tokens_NR, tf.RaggedTensor.from_tensor(
      eos_N1, row_splits_dtype=tokens_NR.row_splits.dtype)], axis=1)


def _document_batches(ds: tf.data.Dataset) -> tf.data.Dataset:
  """The "targets" of _DOCS_PER_STEP documents at a time as one ragged int32[D, None]."""
  docs = ds.map(lambda ex: ex["targets"], num_parallel_calls=tf.data.AUTOTUNE)
  # ragged_batch gives a dense batch when every document has the same static length.
  return docs.ragged_batch(_DOCS_PER_STEP).map(
      lambda d: d if isinstance(d, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(d),
      num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------------ Wang et al. prefix LM


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PrefixLMConfig:
  """Wang et al.'s PLM has no hyper-parameters beyond the budget: i ~ U[1, B) (T5 repo).

  Attributes:
    pair_pieces: the row layout, not the objective: two pieces per example with
      complementary splits i and B - i (Wang et al.'s encoder-decoder rows). None: the
      architecture decides (the encoder-decoder pairs when `Experiment.pack` is on, the
      decoders never need to); True or False forces it.
  """
  pair_pieces: Optional[bool] = None

  def __post_init__(self):
    if self.pair_pieces is not None and not isinstance(self.pair_pieces, bool):
      raise ConfigError(f"PrefixLMConfig.pair_pieces must be True, False or None, got "
                        f"{self.pair_pieces!r}")


def min_budget() -> int:
  """2: a piece needs at least one inputs token and one targets token."""
  return 2


def split_pieces(pieces_KB: tf.Tensor, split_K: tf.Tensor) -> tuple[tf.RaggedTensor,
                                                                    tf.RaggedTensor]:
  """(pieces[k, :split[k]], pieces[k, split[k]:]) as two ragged [K, None] tensors.

  Example: pieces [[5, 6, 7, 8]], split [1] -> ([[5]], [[6, 7, 8]]).
  """
  budget = tf.shape(pieces_KB)[1]
  is_input_KB = tf.range(budget)[tf.newaxis, :] < split_K[:, tf.newaxis]
  return (tf.ragged.boolean_mask(pieces_KB, is_input_KB),
          tf.ragged.boolean_mask(pieces_KB, ~is_input_KB))


def _flat_document_batches(ds: tf.data.Dataset, eos_id: Optional[int]) -> tf.data.Dataset:
  """Each batch of documents as one flat int32 tensor: [5, 6], [7] -> [5, 6, eos, 7, eos].

  EOS follows every document only when eos_id is given (full LM's EOS,
  docs/objectives.md#where-eos-goes).
  """
  return _document_batches(ds).map(
      lambda docs_DR: _append_eos_if(docs_DR, eos_id).flat_values,
      num_parallel_calls=tf.data.AUTOTUNE)


def _draw_splits(rows: tf.Tensor, seed: tf.Tensor, budget: int) -> tf.Tensor:
  """One split i ~ U[1, budget) per row of `rows` (a piece, or a pair of pieces)."""
  return tf.random.stateless_uniform(tf.shape(rows)[:1], seed=seed, minval=1, maxval=budget,
                                     dtype=tf.int32)


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[PrefixLMConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[i], "targets": int32[B - i]}.

  sequence_length = lengths(cfg, B).feature_lengths() = {"inputs": B - 1, "targets": B - 1}
  (per-feature upper bounds), so B = sequence_length["inputs"] + 1. EOS follows every
  document (when the targets feature has add_eos) and nothing else: the inputs feature's
  add_eos is not consulted, since the split adds no EOS (T5 repo). One seqio map seed per
  batch of pieces, so the output is deterministic under seqio's map_seed_manager or a Task
  seed. With cfg.pair_pieces, sequence_length = {"inputs": B, "targets": B} and each
  example is two pieces (`pair_split`), both features exactly B tokens.
  """
  paired = bool(cfg and cfg.pair_pieces)
  budget = _equal_bounds("prefix_lm", sequence_length) + (0 if paired else 1)
  lengths(PrefixLMConfig(), budget)  # ConfigError below the minimum budget.
  _check_pair_features("prefix_lm", output_features)
  eos_id = stream.eos_id_or_none(output_features["targets"], "targets")
  # stream.concat_and_split(ds, budget, "targets", eos_id), fed a batch of documents per
  # scan step instead of one: the same pieces with 64 times fewer sequential steps.
  pieces = stream.chunk_token_stream(_flat_document_batches(ds, eos_id), budget)
  if paired:
    return _paired(pieces, budget)

  @seqio.map_over_dataset(num_seeds=1)
  def split(pieces_KB, seed):
    # Wang et al. / T5 repo `pack_prefix_lm_decoder_only`: split ~ U[1, B) per piece.
    inputs, targets = split_pieces(pieces_KB, _draw_splits(pieces_KB, seed, budget))
    return {"inputs": inputs, "targets": targets}

  return stream.dense_examples(split(pieces.batch(_PIECES_PER_STEP)).unbatch())


def pair_split(pairs_K2B: tf.Tensor, split_K: tf.Tensor) -> dict[str, tf.Tensor]:
  """Two pieces per row with complementary splits, as packed seqio features [K, B].

  Row k: inputs = piece0[:i] + piece1[:B - i], targets = piece0[i:] + piece1[B - i:]
  (i = split[k]), each exactly B tokens, with `_segment_ids` 1 then 2 and `_positions`
  counting from 0 in each piece. Example, B = 4, i = 1:
  pieces [[5, 6, 7, 8], [9, 10, 11, 12]] -> inputs [5, 9, 10, 11] (segments [1, 2, 2, 2],
  positions [0, 0, 1, 2]), targets [6, 7, 8, 12] (segments [1, 1, 1, 2], positions
  [0, 1, 2, 0]).
  """
  budget = tf.shape(pairs_K2B)[2]
  first_in, first_out = split_pieces(pairs_K2B[:, 0], split_K)
  second_in, second_out = split_pieces(pairs_K2B[:, 1], budget - split_K)
  pos_1B = tf.range(budget)[tf.newaxis, :]
  out = {"inputs": tf.concat([first_in, second_in], axis=1).to_tensor(),
         "targets": tf.concat([first_out, second_out], axis=1).to_tensor()}
  for key, first_K in (("inputs", split_K), ("targets", budget - split_K)):
    second_KB = pos_1B >= first_K[:, tf.newaxis]
    out[f"{key}_segment_ids"] = 1 + tf.cast(second_KB, tf.int32)
    out[f"{key}_positions"] = pos_1B - tf.where(second_KB, first_K[:, tf.newaxis], 0)
  return out


def _paired(pieces: tf.data.Dataset, budget: int) -> tf.data.Dataset:
  """Consecutive pieces two by two (an odd last one dropped) -> `pair_split` examples."""

  @seqio.map_over_dataset(num_seeds=1)
  def split(pairs_K2B, seed):
    # One draw per pair: i for the first piece, B - i for the second (T5 repo
    # `pack_prefix_lm_encoder_decoder`), so both rows are exactly B tokens.
    return pair_split(pairs_K2B, _draw_splits(pairs_K2B, seed, budget))

  pairs = pieces.batch(2, drop_remainder=True).batch(_PIECES_PER_STEP // 2)
  return split(pairs).unbatch().map(
      lambda ex: {k: tf.ensure_shape(v, [budget]) for k, v in ex.items()},
      num_parallel_calls=tf.data.AUTOTUNE)


def lengths(cfg: PrefixLMConfig, sequence_length: int) -> registry.TaskLengths:
  """lengths(cfg, 626) == TaskLengths(626, 625, 625, concat=626): bounds, and an exact row.

  With cfg.pair_pieces: TaskLengths(626, 626, 626, per_row=2), two pieces per row.
  """
  if sequence_length < min_budget():
    raise ConfigError(f"prefix_lm token budget {sequence_length} is too small; the minimum "
                      f"token budget is {min_budget()} (one inputs and one targets token)")
  if cfg.pair_pieces:
    return registry.TaskLengths(raw=sequence_length, inputs=sequence_length,
                                targets=sequence_length, exact=True, per_row=2)
  return registry.TaskLengths(raw=sequence_length, inputs=sequence_length - 1,
                              targets=sequence_length - 1, concat=sequence_length, exact=True)


# ------------------------------------------------------------------------ T5's prefix LM


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5PrefixLMConfig:
  """T5 prefix LM hyper-parameters (T5 repo `prefix_lm`: noise_density=0.5).

  Attributes:
    noise_density: r in (0, 1); the prefix of an n-token chunk is uniform in
      [max(1, round((1 - 2 r)(n - 1))), n - 1] (T5's rule). 0.5, T5's only value,
      gives [1, n - 1]; r >= 0.5 all give that range.
  """
  noise_density: float = 0.5

  def __post_init__(self):
    r = self.noise_density
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r < 1.0:
      raise ConfigError(f"T5PrefixLMConfig.noise_density must be in (0, 1), got {r!r}")


def t5_min_budget() -> int:
  """4: a C = 2 token chunk (the smallest that splits into two parts) plus two EOS."""
  return 4


def prefix_bounds(n_N: tf.Tensor, noise_density: float) -> tuple[tf.Tensor, tf.Tensor]:
  """(lo, hi) of the prefix length of chunks of n tokens; T5's `random_prefix_noise_mask`.

  hi = n - 1 and lo = min(hi, max(1, round((1 - 2 r)(n - 1)))), half to even in float64.
  Example, r = 0.25: n [1, 2, 6, 11] -> lo [0, 1, 2, 5], hi [0, 1, 5, 10].
  """
  hi_N = n_N - 1
  scaled_N = tf.round(tf.cast(hi_N, tf.float64) * (1.0 - 2.0 * float(noise_density)))
  lo_N = tf.minimum(hi_N, tf.maximum(tf.cast(scaled_N, n_N.dtype), 1))
  return lo_N, hi_N


def chunk_lengths(doc_lengths_D: tf.Tensor, chunk_length: int) -> tf.Tensor:
  """Lengths of every document's consecutive chunks of chunk_length, its last one shorter.

  T5 `split_tokens(max_tokens_per_segment=C)` on each document. Example, C = 6:
  doc lengths [7, 3, 0, 1] -> [6, 1, 3, 1] (an empty document has no chunk).
  """
  num_chunks_D = (doc_lengths_D + chunk_length - 1) // chunk_length
  doc_N = tf.repeat(tf.range(tf.size(doc_lengths_D)), num_chunks_D)
  first_chunk_D = tf.cumsum(num_chunks_D, exclusive=True)
  index_N = tf.range(tf.size(doc_N)) - tf.gather(first_chunk_D, doc_N)
  return tf.minimum(chunk_length, tf.gather(doc_lengths_D, doc_N) - index_N * chunk_length)


def split_chunks(flat_T: tf.Tensor, n_N: tf.Tensor,
                 prefix_N: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
  """(prefixes, rests) of consecutive chunks of flat_T, as two ragged [N, None] tensors.

  Example: flat [5, 6, 7, 8, 9], chunk lengths [3, 2], prefixes [1, 0]
  -> ([[5], []], [[6, 7], [8, 9]]).
  """
  start_T = tf.repeat(tf.cumsum(n_N, exclusive=True), n_N)
  is_input_T = tf.range(tf.size(flat_T)) - start_T < tf.repeat(prefix_N, n_N)
  return (tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat_T, is_input_T), prefix_N),
          tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat_T, ~is_input_T),
                                           n_N - prefix_N))


def t5_preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
                  output_features: Mapping[str, seqio.Feature],
                  cfg: Optional[T5PrefixLMConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[<= C], "targets": int32[<= C]}.

  sequence_length = lengths(...).feature_lengths() = {"inputs": C, "targets": C}, C = B - 2,
  the chunk length. inputs = prefix + EOS and targets = rest + EOS (each EOS only where the
  feature has add_eos). One seqio map seed per batch of documents, so the output is
  deterministic under seqio's map_seed_manager or a Task seed.
  """
  cfg = cfg or T5PrefixLMConfig()
  chunk = _equal_bounds("t5_prefix_lm", sequence_length)
  t5_lengths(cfg, chunk + 2)  # ConfigError below the minimum budget.
  _check_pair_features("t5_prefix_lm", output_features)
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  noise_density = float(cfg.noise_density)

  @seqio.map_over_dataset(num_seeds=1)
  def split(docs_DR, seed):
    flat_T = docs_DR.flat_values  # The chunks partition the documents in order.
    n_N = chunk_lengths(tf.cast(docs_DR.row_lengths(), tf.int32), chunk)
    lo_N, hi_N = prefix_bounds(n_N, noise_density)
    u_N = tf.random.stateless_uniform(tf.shape(n_N), seed=seed, dtype=tf.float64)
    span_N = tf.cast(hi_N - lo_N + 1, tf.float64)
    prefix_N = tf.minimum(lo_N + tf.cast(u_N * span_N, tf.int32), hi_N)  # U[lo, hi]
    if inputs_eos is None:  # A one-token chunk (prefix 0) would have empty inputs: drop it.
      keep_N = prefix_N > 0
      flat_T = tf.boolean_mask(flat_T, tf.repeat(keep_N, n_N))
      n_N, prefix_N = tf.boolean_mask(n_N, keep_N), tf.boolean_mask(prefix_N, keep_N)
    inputs, targets = split_chunks(flat_T, n_N, prefix_N)
    return {"inputs": _append_eos_if(inputs, inputs_eos),
            "targets": _append_eos_if(targets, targets_eos)}

  return stream.dense_examples(split(_document_batches(ds)).unbatch())


def t5_lengths(cfg: T5PrefixLMConfig, sequence_length: int) -> registry.TaskLengths:
  """Upper bounds: lengths(cfg, 626) == TaskLengths(624, 624, 624, concat=626, exact=False)."""
  del cfg
  if sequence_length < t5_min_budget():
    raise ConfigError(f"t5_prefix_lm token budget {sequence_length} is too small; the minimum "
                      f"token budget is {t5_min_budget()} (a 2-token chunk plus two EOS)")
  chunk = sequence_length - 2
  return registry.TaskLengths(raw=chunk, inputs=chunk, targets=chunk, concat=sequence_length,
                              exact=False)


OBJECTIVE = registry.register(registry.Objective(
    name="prefix_lm",
    config_cls=PrefixLMConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    description="Wang et al. PLM: documents + EOS concatenated into budget-sized pieces, "
                "split uniformly in [1, B)",
    pairs_pieces=True,
))

T5_OBJECTIVE = registry.register(registry.Objective(
    name="t5_prefix_lm",
    config_cls=T5PrefixLMConfig,
    preprocess=t5_preprocess,
    features=("inputs", "targets"),
    lengths=t5_lengths,
    description="T5 prefix LM: each document chunked (no concatenation), random prefix "
                "split, EOS on both; padded",
))
