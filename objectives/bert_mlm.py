"""Original BERT masked LM, 80/10/10, loss on the selected positions (docs/objectives.md#bert-mlm).

BERT's `create_masked_lm_predictions` (google-research/bert, create_pretraining_data.py)
on a stream of documents instead of sentence pairs (no NSP, dynamic masking). Documents get
EOS, are concatenated and chopped into chunks of exactly B tokens (B = the token budget;
the partial last chunk is dropped). In each chunk:

- candidates are all positions that are not EOS (BERT skips [CLS] and [SEP]; a document's
  EOS plays [SEP]'s role) and not the padding id 0 (never a real token);
- exactly n = min(max(1, round(masked_lm_prob * num_candidates)), num_candidates) of them
  are selected, uniformly without replacement (BERT shuffles the candidates and takes the
  first n), and at most `max_predictions` when that is > 0 (BERT's max_predictions_per_seq);
- each selected position independently becomes the mask id with probability
  mask_fraction (0.8), a random token with probability random_fraction (0.1), and stays
  unchanged otherwise (0.1).

Output encoding (position-aligned, both of length B, for the encoder-only model):

  inputs  = the corrupted chunk
  targets = the ORIGINAL token at every selected position and 0 (padding) everywhere else

so the loss weights are simply `targets > 0`: exactly the selected positions, the random
and the unchanged ones included. This avoids a seqio trap
(docs/objectives.md#mlm-loss-positions): seqio's
EncoderFeatureConverter weights only positions where inputs == mask_id and so silently drops
the 20% random/unchanged predictions. The original chunk is recoverable as
`where(targets > 0, targets, inputs)`, and no real token is 0, so nothing is ambiguous.

Choices, where BERT leaves room:
- n counts the candidates, so exactly masked_lm_prob of the maskable tokens are predicted.
  BERT uses round(len(tokens) * masked_lm_prob) with [CLS]/[SEP] counted (at most 3 more
  tokens of a 128-token pair). Rounding is half to even (Python 3's round, as BERT's).
- max_predictions = 0 means no cap. BERT caps at max_predictions_per_seq (flag default 20,
  at max_seq_length 128; its README: set it "around max_seq_length * masked_lm_prob") only
  because it stores the predictions in a fixed-size list; aligned targets need no cap.
- Mask id: <extra_id_0> = vocab_size - 1, T5's `sentinel_id` (see
  docs/objectives.md#sentinel-ids), the shared
  mask token of this codebase (as iid_denoising.py); the vocabulary needs >= 1 extra id.
- Random tokens come from [3, vocab_size - extra_ids), as iid_denoising.py: BERT draws from
  the whole WordPiece vocabulary ([PAD], [CLS], [MASK] included); we exclude PAD/EOS/UNK and
  the sentinels so the mask id never appears by chance. A random draw can equal the
  original token (1/256 of the time with a byte vocabulary), as in BERT.
- Masks are drawn in the input pipeline from seqio's seed (nothing stored; another seed
  gives other masks); BERT masked offline, dupe_factor=10 copies of the data.
- Architectures: encoder-only only, BERT's own. On a decoder BERT MLM
  needs a bidirectional mask and a loss on the selected positions, which is exactly the
  encoder-only layout; on an encoder-decoder the right form is T5's "BERT-style" row
  (90% mask / 10% random, full-sequence target), registered as `t5_bert_style`.

Worked example (a real run of this module under map_seed_manager(54), token budget 20;
seqio.ByteVocabulary(extra_ids=100): vocab_size 359, mask id 358, EOS 1; documents
[3 ... 14] and [15 ... 40]):

  chunk    [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 15, 16, 17, 18, 19, 20, 21]
           19 candidates (all but EOS) -> n = round(0.15 * 19) = 3 selected: 5, 16, 21
  inputs   [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 15, 358, 17, 18, 19, 20, 224]
  targets  [0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 21]
           (5 kept, 16 -> mask, 21 -> random 224; loss weights targets > 0 on all three)
  chunk    [22, 23, ..., 40, 1]: 19 candidates, 3 selected
  inputs   [22, 358, 24, 358, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 358, 1]
  targets  [0, 23, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 0]
           (23, 25, 40 -> mask)
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

NUM_RESERVED_TOKENS = 3  # PAD 0, EOS 1, UNK 2: never drawn as random tokens (as T5).
PAD_ID = 0  # targets at unselected positions; loss weights are targets > 0.
MIN_BUDGET = 2  # Two tokens always hold a non-EOS candidate (EOS never follows EOS).
BLOCK = 64  # chunks masked per vectorized map call.


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BertMLMConfig:
  """BERT MLM hyper-parameters; defaults from BERT (Devlin et al. 2019 sec. 3.1; its code's flags).

  Attributes:
    masked_lm_prob: fraction of candidate tokens selected for prediction, in (0, 1]
      (BERT's masked_lm_prob = 0.15).
    mask_fraction: probability that a selected token becomes the mask id (0.8).
    random_fraction: probability that a selected token becomes a random token (0.1); it
      stays unchanged with probability 1 - mask_fraction - random_fraction (0.1).
    max_predictions: cap on selected positions per chunk, 0 for none (BERT's
      max_predictions_per_seq = 20 at 128 tokens).
  """
  masked_lm_prob: float = 0.15
  mask_fraction: float = 0.8
  random_fraction: float = 0.1
  max_predictions: int = 0

  def __post_init__(self):
    name = type(self).__name__
    p = self.masked_lm_prob
    if not registry.is_number(p) or not 0.0 < p <= 1.0:
      raise ConfigError(f"{name}.masked_lm_prob must be in (0, 1], got {p!r}")
    for field in ("mask_fraction", "random_fraction"):
      value = getattr(self, field)
      if not registry.is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}.{field} must be in [0, 1], got {value!r}")
    if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
      raise ConfigError(f"{name}.mask_fraction + random_fraction must be <= 1, got "
                        f"{self.mask_fraction} + {self.random_fraction}")
    m = self.max_predictions
    if not isinstance(m, int) or isinstance(m, bool) or m < 0:
      raise ConfigError(f"{name}.max_predictions must be an int >= 0 (0: no cap), got {m!r}")


def lengths(cfg: BertMLMConfig, sequence_length: int) -> registry.TaskLengths:
  """The model sees B aligned tokens: lengths(cfg, 512) == TaskLengths(512, 512, 512, aligned)."""
  del cfg
  if sequence_length < MIN_BUDGET:
    raise ConfigError(f"token budget {sequence_length} is too small for bert_mlm; the "
                      f"minimum token budget is {MIN_BUDGET}")
  return registry.TaskLengths(raw=sequence_length, inputs=sequence_length,
                              targets=sequence_length, aligned=True)


def num_to_predict(cfg: BertMLMConfig, num_candidates_K: tf.Tensor) -> tf.Tensor:
  """n = min(max(1, round(p * c)), cap, c) per chunk, int32; float64, half to even (Python's)."""
  n_K = tf.cast(tf.round(tf.cast(num_candidates_K, tf.float64) * cfg.masked_lm_prob), tf.int32)
  n_K = tf.maximum(n_K, 1)
  if cfg.max_predictions:
    n_K = tf.minimum(n_K, cfg.max_predictions)
  return tf.minimum(n_K, num_candidates_K)


def max_to_predict(cfg: BertMLMConfig, length: int) -> int:
  """Static bound on num_to_predict for chunks of `length` tokens (p * c rounds monotonically)."""
  n = max(1, round(length * cfg.masked_lm_prob))
  if cfg.max_predictions:
    n = min(n, cfg.max_predictions)
  return min(n, length)


def select_positions(candidate_KL: tf.Tensor, num_selected_K: tf.Tensor, max_selected: int,
                     seed) -> tuple[tf.Tensor, tf.Tensor]:
  """In row k, num_selected_K[k] of its candidates, uniform without replacement.

  Each candidate gets a random key in [0, 2^31 - 1), non-candidates -1; the top
  max_selected keys, in order, are a uniformly random ordering of the row's candidates (then
  the rest), so their first n are a uniform n-subset (n <= #candidates <= max_selected is
  the caller's duty). Equal keys (~L^2 / 2^32 per row) favour the earlier position.

  Returns:
    index_KN: int32[K, max_selected], positions, distinct within a row.
    valid_KN: bool[K, max_selected], True for the first num_selected_K[k] of row k.
  E.g. candidates [[T, T, F, T]], n [2], max 2 -> index [[3, 0]] (one seed), valid [[T, T]].
  """
  keys_KL = tf.random.stateless_uniform(tf.shape(candidate_KL), seed=seed, minval=0,
                                        maxval=2**31 - 1, dtype=tf.int32)
  keys_KL = tf.where(candidate_KL, keys_KL, -1)
  index_KN = tf.math.top_k(keys_KL, k=max_selected, sorted=True).indices
  valid_KN = tf.range(max_selected)[None, :] < num_selected_K[:, None]
  return index_KN, valid_KN


def _vocabulary(output_features: Mapping[str, seqio.Feature]) -> seqio.Vocabulary:
  return stream.pair_vocabulary(output_features, "bert_mlm", 1,
                                "its mask token <extra_id_0>")


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[BertMLMConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[B], "targets": int32[B]}, aligned.

  B = sequence_length["targets"] (inputs, when given, must equal it). Randomness comes from
  three seqio map seeds per block of BLOCK chunks (deterministic under map_seed_manager).
  """
  cfg = cfg or BertMLMConfig()
  if not sequence_length or not sequence_length.get("targets"):
    raise ConfigError("bert_mlm needs sequence_length['targets'] (take it from its "
                      f"lengths()); got {sequence_length}")
  length = int(sequence_length["targets"])
  if sequence_length.get("inputs", length) != length:
    raise ConfigError(f"bert_mlm inputs and targets are aligned, so sequence_length['inputs'] "
                      f"must equal ['targets']; got {dict(sequence_length)}")
  lengths(cfg, length)  # ConfigError below the minimum budget.
  vocab = _vocabulary(output_features)
  mask_id, first_sentinel = vocab.vocab_size - 1, vocab.vocab_size - vocab.extra_ids
  eos_id = stream.eos_id_or_none(output_features["targets"], "targets")
  keep_threshold = cfg.mask_fraction + cfg.random_fraction

  max_selected = max_to_predict(cfg, length)

  @seqio.map_over_dataset(num_seeds=3)
  def mask_block(ex, seeds):
    tokens_KL = ex["targets"]
    candidate_KL = tokens_KL != PAD_ID
    if eos_id is not None:
      candidate_KL &= tokens_KL != eos_id
    num_candidates_K = tf.reduce_sum(tf.cast(candidate_KL, tf.int32), axis=1)
    index_KN, valid_KN = select_positions(
        candidate_KL, num_to_predict(cfg, num_candidates_K), max_selected, seeds[0])
    # Work on the <= max_selected selected slots only, then scatter back: row k's indices are
    # distinct, and invalid slots write back the original token (a no-op) or 0 (no target).
    original_KN = tf.gather(tokens_KL, index_KN, batch_dims=1)
    shape_KN = tf.shape(index_KN)
    # One uniform per slot picks mask / random / keep (BERT draws 0.8, then 0.5).
    choice_KN = tf.random.stateless_uniform(shape_KN, seed=seeds[1])
    random_KN = tf.random.stateless_uniform(shape_KN, seed=seeds[2], minval=NUM_RESERVED_TOKENS,
                                            maxval=first_sentinel, dtype=tokens_KL.dtype)
    corrupt_KN = tf.where(choice_KN < cfg.mask_fraction, tf.constant(mask_id, tokens_KL.dtype),
                          tf.where(choice_KN < keep_threshold, random_KN, original_KN))
    row_KN = tf.broadcast_to(tf.range(shape_KN[0])[:, None], shape_KN)
    where_KN2 = tf.stack([row_KN, index_KN], axis=-1)
    inputs_KL = tf.tensor_scatter_nd_update(tokens_KL, where_KN2,
                                            tf.where(valid_KN, corrupt_KN, original_KN))
    targets_KL = tf.scatter_nd(where_KN2, tf.where(valid_KN, original_KN, PAD_ID),
                               tf.shape(tokens_KL))
    return {"inputs": tf.ensure_shape(inputs_KL, [None, length]),
            "targets": tf.ensure_shape(targets_KL, [None, length])}

  # As T5's full_lm (EOS marks document ends): EOS after every document, then concatenate and
  # split. Chunks are
  # masked BLOCK at a time (one set of seeds per block): vectorized, this costs under half the
  # CPU time per token of one map call per chunk (measured here, 512-token chunks).
  chunks = stream.concat_and_split(ds, length, "targets", eos_id=eos_id)
  return mask_block(chunks.batch(BLOCK)).unbatch()


OBJECTIVE = registry.register(registry.Objective(
    name="bert_mlm",
    config_cls=BertMLMConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    # BERT's own model. A decoder would need the encoder-only layout
    # (bidirectional, loss on selected positions); on ED use t5_bert_style (module docstring).
    aligned=True,
    lengths=lengths,
    description="BERT MLM: 15% of tokens, 80% mask/10% random/10% kept, loss on selected only",
))
