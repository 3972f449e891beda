"""T5 span corruption (Raffel et al. 2020 sec. 3.1.4; Wang et al. 2022's "MLM").

See docs/objectives.md#span-corruption.

Pipeline (T5 `span_corruption`, with the chunking made exact): documents are concatenated
without EOS, split into chunks of `raw` tokens (remainder dropped), and each chunk gets a
`random_spans_noise_mask`: exactly round(raw * r) noise tokens in round(noise / mu) spans.
Inputs keep the non-noise tokens and replace each noise span by a unique sentinel; targets
keep the noise tokens and replace each non-noise span by the matching sentinel. Sentinels
count down from vocab_size - 1 (<extra_id_0>), as T5's (docs/objectives.md#sentinel-ids).
EOS ends both features.

Worked example (a real run of this module under map_seed_manager(0): r=0.15, mu=3, token
budget 45 -> raw 39, inputs 36, targets 9; vocabulary seqio.ByteVocabulary(extra_ids=100),
so vocab_size 359, <extra_id_0> = 358, <extra_id_1> = 357, EOS = 1; one document 3 ... 42):

  raw     [3, 4, 5, 6, 7, 8, 9, 10, 11, ..., 38, 39, 40, 41]    (the 39 ids 3 ... 41; 42 dropped)
  noise                ^^^^^^^                   ^^^^^^^^^^     6 noise tokens in 2 spans
  inputs  [3, 4, 5, 6, 358, 10, 11, ..., 38, 357, 1]            36 = 33 kept + 2 sentinels + EOS
  targets [358, 7, 8, 9, 357, 39, 40, 41, 1]                    9 = 6 noise + 2 sentinels + EOS
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import lengths as span_lengths
from objectax.objectives import registry
from objectax.objectives import stream


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SpanCorruptionConfig:
  """Span corruption hyper-parameters; defaults are T5's final objective (T5 Table 7, 15%/3).

  Attributes:
    noise_density: fraction r of raw tokens corrupted, in (0, 1).
    mean_noise_span_length: mean span length mu >= 1 (T5 Table 7 compares 2, 3, 5, 10).
    min_noise_spans: the fewest spans a chunk may have (2: one span is a suffix blank,
      docs/objectives.md#where-the-noise-spans-fall); UL2's mu=64 X-denoisers set 1, as T5's
      code allows.
  """
  noise_density: float = 0.15
  mean_noise_span_length: float = 3.0
  min_noise_spans: int = span_lengths.MIN_NOISE_SPANS

  def __post_init__(self):
    span_lengths.check_span_params(self.noise_density, self.mean_noise_span_length)
    if self.min_noise_spans not in (1, 2):
      raise ConfigError(f"SpanCorruptionConfig.min_noise_spans must be 1 or 2, got "
                        f"{self.min_noise_spans!r}")


def _random_partition(num_items: int, num_parts: int, seed) -> tf.Tensor:
  """int32[num_parts] of positive lengths summing to num_items, uniform over all such splits.

  Cutting the items at a uniform random subset of num_parts - 1 of the num_items - 1 gaps
  is the same distribution as T5's `_random_segmentation` (a shuffled boundary indicator).
  E.g. num_items=6, num_parts=2, cut gap 4 -> [4, 2].
  """
  scores_G = tf.random.stateless_uniform([num_items - 1], seed=seed)
  _, gaps_C = tf.math.top_k(scores_G, k=num_parts - 1)
  cuts_C = tf.sort(gaps_C + 1)
  bounds_P1 = tf.concat([[0], cuts_C, [num_items]], axis=0)
  return bounds_P1[1:] - bounds_P1[:-1]


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            seeds: Sequence) -> tf.Tensor:
  """bool[length]: exactly round(length*r) noise tokens in round(noise/mu) spans (T5, roll off).

  The noise and non-noise span lengths are independent random partitions (seeds[0] and
  seeds[1]); spans alternate starting with non-noise and ending with noise, as T5's
  `random_spans_noise_mask(random_roll=False)` (so a chunk always ends in noise).
  Example, length=39, r=0.15, mu=3: round(5.85) = 6 noise tokens in 2 spans; the module
  docstring's run drew non-noise lengths [4, 29] and noise lengths [3, 3], so the mask is
  [F]*4 + [T]*3 + [F]*29 + [T]*3 (noise at positions 4-6 and 36-38).
  """
  counts = span_lengths.span_counts(length, noise_density, mean_noise_span_length)
  # T5's clipping: at least one token of each kind and at least one span.
  num_noise = min(max(counts.num_noise, 1), length - 1)
  num_spans = max(min(counts.num_spans, num_noise, length - num_noise), 1)
  noise_lengths_S = _random_partition(num_noise, num_spans, seeds[0])
  nonnoise_lengths_S = _random_partition(length - num_noise, num_spans, seeds[1])
  span_lengths_2S = tf.reshape(tf.stack([nonnoise_lengths_S, noise_lengths_S], axis=1), [-1])
  is_noise_2S = tf.tile([False, True], [num_spans])
  mask_L = tf.repeat(is_noise_2S, span_lengths_2S)
  return tf.ensure_shape(mask_L, [length])


def noise_span_to_unique_sentinel(tokens_L: tf.Tensor, noise_L: tf.Tensor,
                                  vocab_size: int) -> tf.Tensor:
  """Replaces each run of noise by one sentinel, counting down from vocab_size - 1.

  With vocab_size 359: tokens [3, 4, 5, 6, 7, 8], noise [F, T, T, F, F, T]
  -> [3, 358, 6, 7, 357]. Called with ~noise it makes the targets: [358, 4, 5, 357, 8]
  (same sentinel ids, since the chunk starts with non-noise).
  """
  prev_noise_L = tf.concat([[False], noise_L[:-1]], axis=0)
  first_noise_L = noise_L & ~prev_noise_L
  sentinel_L = vocab_size - tf.cumsum(tf.cast(first_noise_L, tokens_L.dtype))
  tokens_L = tf.where(first_noise_L, sentinel_L, tokens_L)
  return tf.boolean_mask(tokens_L, ~(noise_L & prev_noise_L))


def _append_eos_if(tokens: tf.Tensor, eos_id: Optional[int]) -> tf.Tensor:
  return tokens if eos_id is None else stream.append_eos(tokens, eos_id)


def _check_vocabulary(output_features: Mapping[str, seqio.Feature],
                      num_spans: int) -> seqio.Vocabulary:
  """The (shared) vocabulary, checked to hold a sentinel for every span."""
  return stream.pair_vocabulary(
      output_features, "span_corruption", num_spans,
      f"one sentinel per noise span; or use fewer spans: shorter inputs or a longer "
      f"mean_noise_span_length")


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[SpanCorruptionConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[I], "targets": int32[T]}.

  (I, T) = (sequence_length["inputs"], sequence_length["targets"]) must be a pair that a
  raw chunk gives exactly (take them from `lengths`); any other pair raises ConfigError
  instead of padding. Randomness comes from seqio's map seeds (two per example), so the
  output is deterministic under `seqio.utils.map_seed_manager(seed)` or a Task's seed.
  """
  cfg = cfg or SpanCorruptionConfig()
  if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
      "targets"):
    raise ConfigError("span_corruption needs sequence_length['inputs'] and ['targets'] "
                      f"(take them from its lengths()); got {sequence_length}")
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  # The length helper counts one EOS on each feature; shift when a feature has none.
  raw = span_lengths.exact_raw_length(
      int(sequence_length["inputs"]) + (inputs_eos is None),
      int(sequence_length["targets"]) + (targets_eos is None),
      cfg.noise_density, cfg.mean_noise_span_length, cfg.min_noise_spans)
  counts = span_lengths.span_counts(raw, cfg.noise_density, cfg.mean_noise_span_length,
                                    cfg.min_noise_spans)
  vocab_size = _check_vocabulary(output_features, counts.num_spans).vocab_size
  inputs_length = counts.inputs - (inputs_eos is None)
  targets_length = counts.targets - (targets_eos is None)

  @seqio.map_over_dataset(num_seeds=2)
  def corrupt(ex, seeds):
    tokens_L = ex["targets"]
    noise_L = random_spans_noise_mask(raw, cfg.noise_density, cfg.mean_noise_span_length,
                                      seeds)
    inputs = noise_span_to_unique_sentinel(tokens_L, noise_L, vocab_size)
    targets = noise_span_to_unique_sentinel(tokens_L, ~noise_L, vocab_size)
    return {
        "inputs": tf.ensure_shape(_append_eos_if(inputs, inputs_eos), [inputs_length]),
        "targets": tf.ensure_shape(_append_eos_if(targets, targets_eos), [targets_length]),
    }

  # T5 concatenates documents without EOS before span corruption; EOS comes after.
  return corrupt(stream.concat_and_split(ds, raw, "targets", eos_id=None))


def lengths(cfg: SpanCorruptionConfig, sequence_length: int) -> registry.TaskLengths:
  """Largest exact inputs within the budget: lengths(cfg, 626) == TaskLengths(568, 512, 114)."""
  inputs, targets, raw = span_lengths.span_corruption_lengths_for_budget(
      sequence_length, cfg.noise_density, cfg.mean_noise_span_length, cfg.min_noise_spans)
  return registry.TaskLengths(raw=raw, inputs=inputs, targets=targets)


OBJECTIVE = registry.register(registry.Objective(
    name="span_corruption",
    fills_spans=True,
    config_cls=SpanCorruptionConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    description="T5 span corruption: unique sentinels replace noise spans (r=0.15, mu=3)",
))
