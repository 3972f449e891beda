"""MASS, masked sequence-to-sequence pre-training (Song et al. 2019; docs/objectives.md#mass).

This is the real MASS, not T5's "MASS-style" row (that one is i.i.d. shared-mask corruption
with a full-sequence target: docs/objectives.md#t5-mass-style-is-not-mass). Documents are
concatenated without EOS and chopped into
raw chunks of `raw` tokens (remainder dropped, as span corruption does). In every chunk ONE
contiguous fragment of k = round(fragment_fraction * raw) tokens, at a start drawn
uniformly from the raw - k + 1 possible starts, is masked:

  inputs  = the chunk with every fragment token replaced by the mask id, then EOS  (raw + 1)
  targets = the fragment tokens only, then EOS                                     (k + 1)

so the loss falls on the fragment (and its EOS) only. The decoder input of MASS is the
fragment shifted right by one; our feature converters make that shift from the targets, so
the targets are the fragment itself.

Choices, where the sources differ (the MASS code read is `microsoft/MASS`
`MASS/src/trainer.py::restricted_mask_sent`):
- Fragment length: k = round(0.5 * raw) by default, "roughly 50% of the tokens" as in the
  paper (sec. 3.1); the code's `word_mass` = 0.5. Python round (half to even) on a static raw.
- Fragment start: uniform over all raw - k + 1 starts, the paper's "random start position
  u". The MASS code instead puts the fragment at the sentence start 20% of the time, at the
  end 20%, and uniformly 60% (`shuffle_segments`); that is not done here.
- Mask token: every fragment token becomes the mask id. The MASS code's `mask_word` uses
  BERT's 80% mask / 10% random / 10% unchanged; that is not done here (the masked positions
  stay visible in the inputs, so the fragment is exactly recoverable from them).
- Mask id: <extra_id_0> = vocab_size - 1, T5's `sentinel_id(vocab)`, the same id T5's
  shared-mask ("m") corruptions use. A seqio vocabulary has no other mask id, so the
  vocabulary must reserve at least one extra id.
- Decoder side: MASS feeds words[u-1 : u+k-1] at the fragment's own positions and hides the
  encoder's masked positions from cross-attention (`enc_mask`); here the converter feeds
  BOS + fragment[:-1] at positions 0..k and cross-attention sees the whole encoder input.
  The token before the fragment is still visible to the decoder through the encoder.
- fragment_fraction = 1 is the paper's k = m case (encoder sees only masks: an LM);
  a very small fraction approaches k = 1 (BERT-like). For fractions below 1 at least one
  raw token stays unmasked.
- Architectures: encoder-decoder is MASS's own. Causal and prefix decoders see
  concat(inputs, targets) with loss on the targets only, like span corruption on those
  models (Wang et al. 2022); that pairing is ours, not the paper's.

Worked example (a real run of this module under map_seed_manager(0): fragment_fraction 0.5,
token budget 26 -> raw 16, inputs 17, targets 9; vocabulary seqio.ByteVocabulary(extra_ids=100),
so vocab_size 359, mask id <extra_id_0> = 358, EOS = 1; documents [3 ... 12] and [13 ... 22]):

  raw     [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]   (19 ... 22 dropped)
  fragment             ^^^^^^^^^^^^^^^^^^^^^^^^^^^   k = 8 tokens, start 4
  inputs  [3, 4, 5, 6, 358, 358, 358, 358, 358, 358, 358, 358, 15, 16, 17, 18, 1]
  targets [7, 8, 9, 10, 11, 12, 13, 14, 1]
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

import gin
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import registry
from objectax.objectives import stream


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MassConfig:
  """MASS hyper-parameters; the default is the paper's (Song et al. 2019 sec. 3.1: k ~ 50% of m).

  Attributes:
    fragment_fraction: fraction of each raw chunk masked as one contiguous fragment, in
      (0, 1]; the fragment has round(fragment_fraction * raw) tokens.
  """
  fragment_fraction: float = 0.5

  def __post_init__(self):
    f = self.fragment_fraction
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
      raise ConfigError(f"MassConfig.fragment_fraction must be in (0, 1], got {f!r}")


def fragment_length(raw: int, fragment_fraction: float) -> int:
  """Tokens in the masked fragment of a raw chunk: fragment_length(16, 0.5) == 8."""
  return int(round(raw * fragment_fraction))


def is_valid_chunk(raw: int, fragment_fraction: float) -> bool:
  """A non-empty fragment, and (below fraction 1) at least one unmasked token."""
  k = fragment_length(raw, fragment_fraction)
  return k >= 1 and (k < raw or fragment_fraction == 1.0)


def _budget_of(raw: int, fragment_fraction: float) -> int:
  """inputs + targets with EOS on both: raw + 1 + k + 1."""
  return raw + fragment_length(raw, fragment_fraction) + 2


def min_raw_length(fragment_fraction: float) -> int:
  """Smallest valid raw chunk: 2 at fraction 0.5 (k = 1), 1 at fraction 1.

  Validity is monotone in raw (k and raw - k never decrease as raw grows), so scan up
  from just below where round(raw * f) first reaches 1.
  """
  raw = max(1, math.floor(0.5 / fragment_fraction) - 1)
  while not is_valid_chunk(raw, fragment_fraction):
    raw += 1
  return raw


def min_budget(fragment_fraction: float) -> int:
  """Smallest token budget `lengths` accepts: 5 at fraction 0.5 (raw 2, inputs 3, targets 2)."""
  return _budget_of(min_raw_length(fragment_fraction), fragment_fraction)


def mass_lengths(budget: int, fragment_fraction: float) -> registry.TaskLengths:
  """The largest raw chunk whose inputs + targets fit the budget; lengths exact.

  mass_lengths(626, 0.5) == TaskLengths(416, 417, 209): 417 + 209 = 626. The budget is not
  always met exactly, since raw + round(f * raw) can step by 2: at f = 0.5, raw 14 needs 23
  and raw 15 needs 25, so a budget of 24 gets raw 14 (23 tokens). Too small a budget
  raises ConfigError naming the minimum.
  """
  MassConfig(fragment_fraction)  # validates
  lo = min_raw_length(fragment_fraction)
  if budget < _budget_of(lo, fragment_fraction):
    raise ConfigError(
        f"token budget {budget} is too small for MASS with fragment_fraction="
        f"{fragment_fraction}; the minimum token budget is {min_budget(fragment_fraction)}")
  # _budget_of is non-decreasing in raw; invariant: fits(lo) and not fits(hi).
  hi = budget
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if _budget_of(mid, fragment_fraction) <= budget:
      lo = mid
    else:
      hi = mid
  return registry.TaskLengths(raw=lo, inputs=lo + 1,
                              targets=fragment_length(lo, fragment_fraction) + 1)


def mask_id_of(vocab: seqio.Vocabulary) -> int:
  """The MASS mask id: <extra_id_0> = vocab_size - 1 (359-id byte vocabulary -> 358)."""
  return int(vocab.vocab_size) - 1


def _check_vocabulary(output_features: Mapping[str, seqio.Feature]) -> seqio.Vocabulary:
  """The (shared) vocabulary, checked to reserve the mask id."""
  return stream.pair_vocabulary(output_features, "mass", 1,
                                "<extra_id_0> = vocab_size - 1 is its mask id")


def mask_fragment(tokens_R: tf.Tensor, start: tf.Tensor, fragment: int,
                  mask_id: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(inputs, targets) without EOS: the chunk with [start, start + fragment) masked, and it.

  tokens [3, 4, 5, 6, 7], start 1, fragment 2, mask 358 -> ([3, 358, 358, 6, 7], [4, 5]).
  """
  raw = tokens_R.shape[0]
  pos_R = tf.range(raw, dtype=tf.int32)
  in_fragment_R = (pos_R >= start) & (pos_R < start + fragment)
  inputs_R = tf.where(in_fragment_R, tf.constant(mask_id, tokens_R.dtype), tokens_R)
  fragment_F = tf.slice(tokens_R, tf.reshape(start, [1]), [fragment])
  return inputs_R, tf.ensure_shape(fragment_F, [fragment])


def _append_eos_if(tokens: tf.Tensor, eos_id: Optional[int]) -> tf.Tensor:
  return tokens if eos_id is None else stream.append_eos(tokens, eos_id)


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[MassConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[raw + 1], "targets": int32[k + 1]}.

  (sequence_length["inputs"], sequence_length["targets"]) must be a pair that one raw
  chunk gives exactly (take them from `lengths`); anything else raises ConfigError instead
  of padding. Without EOS on a feature its length is one less. One seqio map seed per
  example draws the fragment start, so the output is deterministic under
  `seqio.utils.map_seed_manager(seed)` or a Task's seed.
  """
  cfg = cfg or MassConfig()
  f = cfg.fragment_fraction
  if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
      "targets"):
    raise ConfigError("mass needs sequence_length['inputs'] and ['targets'] (take them "
                      f"from its lengths()); got {sequence_length}")
  mask_id = mask_id_of(_check_vocabulary(output_features))
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  inputs_length = int(sequence_length["inputs"])
  targets_length = int(sequence_length["targets"])
  raw = inputs_length - (inputs_eos is not None)
  if raw < 1 or not is_valid_chunk(raw, f):
    raise ConfigError(
        f"mass inputs length {inputs_length} is too small for fragment_fraction={f}; "
        f"the minimum token budget is {min_budget(f)}")
  fragment = fragment_length(raw, f)
  expected_targets = fragment + (targets_eos is not None)
  if targets_length != expected_targets:
    raise ConfigError(
        f"mass with fragment_fraction={f} and inputs length {inputs_length} makes targets of "
        f"length {expected_targets}, not {targets_length}; take both from lengths()")

  @seqio.map_over_dataset(num_seeds=1)
  def corrupt(ex, seed):
    # raw - fragment + 1 possible starts, each equally likely (paper: random start u).
    start = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=raw - fragment + 1,
                                        dtype=tf.int32)
    inputs, targets = mask_fragment(ex["targets"], start, fragment, mask_id)
    return {
        "inputs": tf.ensure_shape(_append_eos_if(inputs, inputs_eos), [inputs_length]),
        "targets": tf.ensure_shape(_append_eos_if(targets, targets_eos), [targets_length]),
    }

  # No per-document EOS inside the stream; EOS ends each feature (as span corruption does).
  return corrupt(stream.concat_and_split(ds, raw, "targets", eos_id=None))


def lengths(cfg: MassConfig, sequence_length: int) -> registry.TaskLengths:
  """Exact lengths for a token budget: lengths(cfg, 626) == TaskLengths(416, 417, 209)."""
  return mass_lengths(sequence_length, cfg.fragment_fraction)


OBJECTIVE = registry.register(registry.Objective(
    name="mass",
    config_cls=MassConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    description="MASS: one contiguous 50% fragment masked, decoder predicts the fragment only",
))
