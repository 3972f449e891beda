"""Deshuffling: restore a chunk from its shuffled tokens (T5 Table 4).

See docs/objectives.md#deshuffling.

Two registered objectives share one pipeline:

- `deshuffle`: T5's "Deshuffling" row (Raffel et al. 2020 sec. 3.3.1, Table 4; T5 gin
  `all_permute.gin` = `denoise(noise_density=1.0, inputs_fn=permute_noise_tokens,
  targets_fn=None)`): every token of the chunk is shuffled.
- `partial_deshuffle`: Birdie's deshuffling (Blouir et al. 2024; `samblouir/birdie`,
  `birdie_rl/objectives/deshuffling.py`, `percentage_to_shuffle`, default 0.75, also run
  at 0.25): K = floor(raw * shuffle_fraction) positions are drawn uniformly without
  replacement (scattered, not a contiguous window) and their tokens are permuted among
  themselves; the other tokens stay put.

Both are T5's `permute_noise_tokens` over a mask of exactly K positions: inputs = the chunk
with the masked tokens permuted (a uniform permutation, so about one of the K keeps its
place: a shuffled chunk moves K - 1 tokens on average, a little under the fraction);
targets = the original chunk; EOS appended to both, loss on the whole target.

Pipeline: documents are concatenated WITHOUT per-document EOS (as T5's denoising
pipelines) and chopped into raw chunks of exactly `raw` tokens, the remainder dropped.
Deviations, chosen so that nothing is padded: T5's `all_permute.gin` skips
`reduce_concat_tokens` and pads short documents, and Birdie shuffles characters of the
decoded text and re-tokenizes, with a paradigm token `<|DESHUFFLE|>` prepended; here the
tokens themselves are shuffled and no paradigm token is added (mixtures add mode tokens).

Lengths: inputs = targets = raw + 1 (EOS), so a per-example token budget B gives
raw = (B - 2) // 2. The budget is an upper bound: an odd budget leaves one token unused
(B = 626 and B = 627 both give raw 312, inputs 313, targets 313, 626 tokens).

Worked example (a real run of this module under map_seed_manager(0), token budget 22 ->
raw 10, inputs 11, targets 11; EOS = 1; one document 3 ... 14):

  raw                      [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]        (13, 14 dropped)
  deshuffle inputs         [9, 4, 11, 8, 7, 12, 5, 10, 3, 6, 1]     all 10 shuffled
  partial_deshuffle (0.75) [12, 4, 5, 6, 7, 11, 10, 8, 3, 9, 1]     K = 7 drawn positions:
                            ^      ^        ^   ^   ^  ^  ^         0, 2, 5, 6, 7, 8, 9
  targets (both)           [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1]

(Positions 1 and 4 keep their tokens in the full shuffle by chance; in the partial one
position 2 was drawn but its token 5 came back to it, so 6 of the 10 tokens moved.)
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

# Shuffling fewer than two tokens leaves the chunk unchanged: not a deshuffling example.
MIN_SHUFFLED = 2
# Guards floor(raw * fraction) against float error, e.g. 100 * 0.29 = 28.999999999999996.
_FLOOR_EPS = 1e-9


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DeshuffleConfig:
  """T5 deshuffling has no hyper-parameters: every token is shuffled (all_permute.gin, 1.0)."""

  @property
  def shuffle_fraction(self) -> float:
    return 1.0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PartialDeshuffleConfig:
  """Birdie partial deshuffling (Blouir et al. 2024; birdie `DeshufflingConfig`).

  Attributes:
    shuffle_fraction: fraction of the raw chunk's positions whose tokens are permuted among
      themselves, in (0, 1); K = floor(raw * shuffle_fraction), Birdie's
      `int(n_tokens * percentage_to_shuffle)`. Default 0.75, Birdie's default (its config
      also runs 0.25). For 1.0 use the `deshuffle` objective.
  """
  shuffle_fraction: float = 0.75

  def __post_init__(self):
    if not 0.0 < self.shuffle_fraction < 1.0:
      raise ConfigError(f"PartialDeshuffleConfig.shuffle_fraction must be in (0, 1), got "
                        f"{self.shuffle_fraction}; for 1.0 use the 'deshuffle' objective")


def num_shuffled(raw: int, shuffle_fraction: float) -> int:
  """K = floor(raw * fraction) positions shuffled: num_shuffled(10, 0.75) == 7."""
  if shuffle_fraction >= 1.0:
    return raw
  return int(raw * shuffle_fraction + _FLOOR_EPS)


def min_raw(shuffle_fraction: float) -> int:
  """Smallest raw chunk with at least MIN_SHUFFLED shuffled tokens (2 at 1.0, 3 at 0.75)."""
  raw = MIN_SHUFFLED
  while num_shuffled(raw, shuffle_fraction) < MIN_SHUFFLED:
    raw += 1
  return raw


def min_budget(shuffle_fraction: float) -> int:
  """Smallest token budget: raw + EOS on both features (6 at 1.0, 8 at 0.75, 18 at 0.25)."""
  return 2 * (min_raw(shuffle_fraction) + 1)


def _check_raw(name: str, raw: int, shuffle_fraction: float, what: str) -> None:
  if raw < min_raw(shuffle_fraction):
    raise ConfigError(
        f"{what} is too small for {name} with shuffle_fraction={shuffle_fraction} (it needs "
        f">= {MIN_SHUFFLED} shuffled tokens per example); the minimum token budget is "
        f"{min_budget(shuffle_fraction)}")


def shuffled_positions(length: int, count: int, seed) -> tf.Tensor:
  """int32[count]: a uniform random subset of range(length), sorted (all of it if count == length).

  The `count` largest of `length` i.i.d. uniform scores pick a uniformly random subset, the
  stateless counterpart of Birdie's `rng.choice(n, k, replace=False)`.
  E.g. length 10, count 7 -> [0, 2, 5, 6, 7, 8, 9] in the module docstring's run.
  """
  if count == length:
    return tf.range(length, dtype=tf.int32)
  scores_L = tf.random.stateless_uniform([length], seed=seed)
  _, positions_K = tf.math.top_k(scores_L, k=count)
  return tf.sort(positions_K)


def permute_at(tokens_L: tf.Tensor, positions_K: tf.Tensor, seed) -> tf.Tensor:
  """Permutes tokens_L[positions_K] uniformly among those positions; the rest stay put.

  T5's `permute_noise_tokens` with the mask given as positions. E.g. tokens
  [3, 4, 5, 6, 7], positions [0, 2, 4], seed (0, 1) -> [3, 4, 7, 6, 5]: 5 and 7 swap
  places and 3, though drawn, stays (a uniform permutation keeps 1 of K in place on average).
  """
  order_K = tf.argsort(tf.random.stateless_uniform(tf.shape(positions_K), seed=seed))
  sources_K = tf.gather(positions_K, order_K)
  return tf.tensor_scatter_nd_update(tokens_L, positions_K[:, tf.newaxis],
                                     tf.gather(tokens_L, sources_K))


def _append_eos_if(tokens: tf.Tensor, eos_id: Optional[int]) -> tf.Tensor:
  return tokens if eos_id is None else stream.append_eos(tokens, eos_id)


def _raw_from_sequence_length(name: str, sequence_length: Optional[Mapping[str, int]],
                              inputs_eos: Optional[int], targets_eos: Optional[int]) -> int:
  """The raw chunk length that gives exactly sequence_length; ConfigError otherwise."""
  if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
      "targets"):
    raise ConfigError(f"{name} needs sequence_length['inputs'] and ['targets'] (take them "
                      f"from its lengths()); got {sequence_length}")
  raw_inputs = int(sequence_length["inputs"]) - (inputs_eos is not None)
  raw_targets = int(sequence_length["targets"]) - (targets_eos is not None)
  if raw_inputs != raw_targets:
    raise ConfigError(
        f"{name} shuffles and restores the same chunk, so inputs and targets hold the same "
        f"tokens (plus EOS where add_eos is on); got sequence_length {dict(sequence_length)}, "
        f"i.e. {raw_inputs} and {raw_targets} raw tokens")
  return raw_inputs


def _preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
                output_features: Mapping[str, seqio.Feature], shuffle_fraction: float,
                name: str) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[raw(+1)], "targets": int32[raw(+1)]}."""
  stream.pair_vocabulary(output_features, name)
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  raw = _raw_from_sequence_length(name, sequence_length, inputs_eos, targets_eos)
  _check_raw(name, raw, shuffle_fraction, f"sequence_length {dict(sequence_length)}")
  count = num_shuffled(raw, shuffle_fraction)
  inputs_length = raw + (inputs_eos is not None)
  targets_length = raw + (targets_eos is not None)

  @seqio.map_over_dataset(num_seeds=2)
  def shuffle(ex, seeds):
    tokens_L = ex["targets"]
    positions_K = shuffled_positions(raw, count, seeds[0])
    inputs_L = permute_at(tokens_L, positions_K, seeds[1])
    return {
        "inputs": tf.ensure_shape(_append_eos_if(inputs_L, inputs_eos), [inputs_length]),
        "targets": tf.ensure_shape(_append_eos_if(tokens_L, targets_eos), [targets_length]),
    }

  # T5's denoising pipelines concatenate without EOS; EOS comes after the objective
  # (docs/objectives.md#where-eos-goes).
  return shuffle(stream.concat_and_split(ds, raw, "targets", eos_id=None))


def _lengths(name: str, shuffle_fraction: float, sequence_length: int) -> registry.TaskLengths:
  raw = (sequence_length - 2) // 2  # Two EOS; an odd budget leaves one token unused.
  _check_raw(name, raw, shuffle_fraction, f"token budget {sequence_length}")
  return registry.TaskLengths(raw=raw, inputs=raw + 1, targets=raw + 1)


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[DeshuffleConfig] = None) -> tf.data.Dataset:
  """T5 deshuffling: inputs = the raw chunk fully shuffled (+EOS), targets = the chunk (+EOS).

  sequence_length must be {"inputs": raw + 1, "targets": raw + 1} (without the + 1 on a
  feature whose add_eos is off); take it from `lengths`. Two seqio map seeds per example,
  so the output is deterministic under `seqio.utils.map_seed_manager(seed)` or a Task seed.
  """
  cfg = cfg or DeshuffleConfig()
  return _preprocess(ds, sequence_length, output_features, cfg.shuffle_fraction, "deshuffle")


def lengths(cfg: DeshuffleConfig, sequence_length: int) -> registry.TaskLengths:
  """lengths(cfg, 626) == lengths(cfg, 627) == TaskLengths(312, 313, 313)."""
  return _lengths("deshuffle", cfg.shuffle_fraction, sequence_length)


def preprocess_partial(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
                       output_features: Mapping[str, seqio.Feature],
                       cfg: Optional[PartialDeshuffleConfig] = None) -> tf.data.Dataset:
  """Birdie partial deshuffling: floor(raw * fraction) random positions permuted.

  Otherwise as `preprocess` (same lengths, seeds and EOS handling).
  """
  cfg = cfg or PartialDeshuffleConfig()
  return _preprocess(ds, sequence_length, output_features, cfg.shuffle_fraction,
                     "partial_deshuffle")


def lengths_partial(cfg: PartialDeshuffleConfig, sequence_length: int) -> registry.TaskLengths:
  """Same split as `lengths`; the minimum budget grows as the fraction shrinks (18 at 0.25)."""
  return _lengths("partial_deshuffle", cfg.shuffle_fraction, sequence_length)


OBJECTIVE = registry.register(registry.Objective(
    name="deshuffle",
    config_cls=DeshuffleConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    description="T5 deshuffling: inputs = the chunk's tokens shuffled, targets = the chunk",
))

PARTIAL_OBJECTIVE = registry.register(registry.Objective(
    name="partial_deshuffle",
    config_cls=PartialDeshuffleConfig,
    preprocess=preprocess_partial,
    features=("inputs", "targets"),
    lengths=lengths_partial,
    description="Birdie partial deshuffling: a random 75% of positions permuted, target = chunk",
))
