"""Exact length arithmetic for span corruption (T5 `random_spans_helper`).

See docs/objectives.md#exact-span-corruption-lengths.

Span corruption turns a raw chunk of `L` tokens into

  inputs  = non-noise tokens + one sentinel per noise span + EOS
  targets = noise tokens     + one sentinel per noise span + EOS

with `noise = round(L * r)` and `spans = round(noise / mu)` (Raffel et al. 2020, sec. 3.1.4 and
the T5 repo's `random_spans_noise_mask`). The functions here pick `L` so that the inputs
come out at exactly the configured length, so nothing is padded by accident.
Worked example (the T5 / Wang et al. 2022 setting): inputs 512 at r=0.15, mu=3 needs
L=568 raw tokens -> 85 noise tokens in 28 spans -> inputs 483+28+1=512, targets
85+28+1=114; 512+114=626 is the per-example token budget of Wang et al. (2022).

Python's `round` is round-half-to-even, the same rule as `tf.round` that T5 uses, and every
count is computed here in Python once (the chunk length is static), so the TensorFlow mask
and these lengths can never disagree.

Pure Python: no TensorFlow import, so configs can be checked anywhere.
"""
from __future__ import annotations

import dataclasses

from objectax.models.registry import ConfigError

# Fewer than two spans is a single suffix blank, not span corruption (and with the default
# random_roll=False mask it is always the end of the chunk: see
# docs/objectives.md#where-the-noise-spans-fall). T5's code allows one span; UL2's long-span
# X-denoisers need it (mu=64 at r=0.15 gives one span at inputs 512), so
# SpanCorruptionConfig.min_noise_spans can lower this default.
MIN_NOISE_SPANS = 2


@dataclasses.dataclass(frozen=True)
class SpanCounts:
  """Token counts of one span-corrupted chunk of `raw` tokens (EOS on both features)."""
  raw: int
  num_noise: int
  num_nonnoise: int
  num_spans: int
  inputs: int   # num_nonnoise + num_spans + 1 (EOS)
  targets: int  # num_noise + num_spans + 1 (EOS)


def check_span_params(noise_density: float, mean_noise_span_length: float) -> None:
  """ConfigError unless 0 < r < 1, mu >= 1 and non-noise spans average >= 1 token."""
  if not 0.0 < noise_density < 1.0:
    raise ConfigError(f"noise_density must be in (0, 1), got {noise_density}")
  if not mean_noise_span_length >= 1.0:
    raise ConfigError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
  # There are as many non-noise spans as noise spans, r*L/mu of them, sharing (1-r)*L tokens.
  if noise_density / mean_noise_span_length > 1.0 - noise_density:
    raise ConfigError(
        f"noise_density={noise_density} with mean_noise_span_length={mean_noise_span_length} "
        f"leaves less than one non-noise token per span; lower the density or lengthen the spans")


def span_counts(raw: int, noise_density: float, mean_noise_span_length: float,
                min_spans: int = MIN_NOISE_SPANS) -> SpanCounts:
  """Counts for a raw chunk of `raw` tokens; e.g. span_counts(568, .15, 3) -> 85 noise, 28 spans.

  With min_spans=1 the span count is clipped to at least one, as T5's
  random_spans_noise_mask does (max(num_noise_spans, 1)); T5's random_spans_helper does not
  clip, and with the default (2) neither do we, so the lengths table is T5's.
  """
  num_noise = int(round(raw * noise_density))
  num_spans = int(round(num_noise / mean_noise_span_length))
  if min_spans <= 1:
    num_spans = max(1, num_spans)
  num_nonnoise = raw - num_noise
  return SpanCounts(raw=raw, num_noise=num_noise, num_nonnoise=num_nonnoise,
                    num_spans=num_spans, inputs=num_nonnoise + num_spans + 1,
                    targets=num_noise + num_spans + 1)


def _largest_raw_for_inputs(inputs_length: int, density: float, mean: float,
                            min_spans: int = MIN_NOISE_SPANS) -> int:
  """Largest L with span_counts(L).inputs <= inputs_length.

  inputs(L) is non-decreasing in L with steps of 0 or 1 (one more raw token adds either a
  non-noise token, or a noise token and at most one span since mean >= 1), so the search
  below finds what T5's linear scan finds, in O(log L) steps.
  """
  inputs_of = lambda raw: span_counts(raw, density, mean, min_spans).inputs
  lo = max(inputs_length - 1, 0)  # inputs(L) <= L + 1, so L = inputs_length - 1 always fits.
  hi = max(2 * inputs_length, 2)
  while inputs_of(hi) <= inputs_length:
    lo, hi = hi, 2 * hi
  while hi - lo > 1:  # invariant: inputs(lo) <= inputs_length < inputs(hi)
    mid = (lo + hi) // 2
    if inputs_of(mid) <= inputs_length:
      lo = mid
    else:
      hi = mid
  return lo


def random_spans_lengths(inputs_length: int, noise_density: float,
                         mean_noise_span_length: float) -> tuple[int, int]:
  """T5's `random_spans_helper`: (raw tokens per example, targets length) for inputs_length.

  Reproduces every cell of T5's lengths table (tested; docs/objectives.md#span-corruption),
  e.g. (512, 0.15, 3.0) -> (568, 114),
  (512, 0.5, 3.0) -> (766, 512). raw is the largest chunk whose inputs fit inputs_length.

  For noise_density == 0.5 T5 cuts raw by one when the targets come out longer than the
  inputs and reports targets - 1 (its "minor hack", so targets == inputs, a round number).
  That report is not always what the chunk gives: (512, 0.5, 32.0) -> (990, 512) but 990 raw
  tokens make 511 inputs and 511 targets, which T5 pads. The objective therefore never
  trusts these numbers blindly: it uses `exact_raw_length` and `span_counts`.
  """
  check_span_params(noise_density, mean_noise_span_length)
  if inputs_length < 1:
    raise ConfigError(f"span corruption inputs length must be >= 1, got {inputs_length}")
  raw = _largest_raw_for_inputs(inputs_length, noise_density, mean_noise_span_length)
  targets = span_counts(raw, noise_density, mean_noise_span_length).targets
  if noise_density == 0.5 and targets > inputs_length:
    raw, targets = raw - 1, targets - 1
  return raw, targets


def raw_lengths_for_inputs(inputs_length: int, noise_density: float,
                           mean_noise_span_length: float,
                           min_spans: int = MIN_NOISE_SPANS) -> range:
  """Every raw chunk length whose inputs come out at exactly inputs_length (never empty).

  raw_lengths_for_inputs(512, 0.15, 3.0) == range(568, 569), but
  raw_lengths_for_inputs(508, 0.15, 3.0) == range(563, 565): 563 raw tokens give targets
  113 and 564 give 114 (85 noise tokens in 28 spans, against 84 in 28).
  """
  check_span_params(noise_density, mean_noise_span_length)
  if inputs_length < 1:
    raise ConfigError(f"span corruption inputs length must be >= 1, got {inputs_length}")
  hi = _largest_raw_for_inputs(inputs_length, noise_density, mean_noise_span_length, min_spans)
  lo = (_largest_raw_for_inputs(inputs_length - 1, noise_density, mean_noise_span_length,
                                min_spans) + 1 if inputs_length > 1 else 0)
  return range(lo, hi + 1)


def is_valid_span_chunk(counts: SpanCounts, min_spans: int = MIN_NOISE_SPANS) -> bool:
  """At least `min_spans` spans, and every noise and non-noise span non-empty."""
  return (counts.num_spans >= min_spans and counts.num_noise >= counts.num_spans
          and counts.num_nonnoise >= counts.num_spans)


def exact_raw_length(inputs_length: int, targets_length: int, noise_density: float,
                     mean_noise_span_length: float, min_spans: int = MIN_NOISE_SPANS) -> int:
  """The largest raw chunk length giving exactly (inputs_length, targets_length), else ConfigError.

  exact_raw_length(512, 114, 0.15, 3.0) == 568. exact_raw_length(512, 512, 0.5, 32.0) fails
  (T5's table pads that cell: no chunk gives 512 and 512; 991 raw tokens give 512 and 513).
  """
  counts = [span_counts(raw, noise_density, mean_noise_span_length, min_spans)
            for raw in raw_lengths_for_inputs(inputs_length, noise_density,
                                              mean_noise_span_length, min_spans)]
  matches = [c for c in counts if c.targets == targets_length]
  if not matches:
    choices = sorted({c.targets for c in counts})
    raise ConfigError(
        f"span corruption (noise_density={noise_density}, mean_noise_span_length="
        f"{mean_noise_span_length}) cannot make inputs {inputs_length} and targets "
        f"{targets_length} without padding; with inputs {inputs_length} the targets length "
        f"must be one of {choices} (or derive both with span_corruption_lengths_for_budget)")
  best = matches[-1]
  if not is_valid_span_chunk(best, min_spans):
    _raise_too_small(f"inputs {inputs_length} + targets {targets_length}", noise_density,
                     mean_noise_span_length, min_spans)
  return best.raw


def _pick_for_budget(budget: int, density: float, mean: float,
                     min_spans: int = MIN_NOISE_SPANS) -> SpanCounts | None:
  """Counts of the largest inputs (then largest raw) with inputs + targets <= budget."""
  # targets grow with raw and the smallest raw for inputs I grows with I, so the least
  # total for I, I + targets(min raw for I), is non-decreasing in I: binary search on it.
  def least_total(inputs_length: int) -> int:
    raw = raw_lengths_for_inputs(inputs_length, density, mean, min_spans)[0]
    return inputs_length + span_counts(raw, density, mean, min_spans).targets
  if budget < 2 or least_total(1) > budget:
    return None
  lo, hi = 1, budget  # least_total(lo) <= budget < least_total(hi) (targets >= 1).
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if least_total(mid) <= budget:
      lo = mid
    else:
      hi = mid
  fitting = [c for c in (span_counts(raw, density, mean, min_spans)
                         for raw in raw_lengths_for_inputs(lo, density, mean, min_spans))
             if c.inputs + c.targets <= budget]
  return fitting[-1]


def span_corruption_min_budget(noise_density: float, mean_noise_span_length: float,
                               min_spans: int = MIN_NOISE_SPANS) -> int:
  """Smallest token budget that span_corruption_lengths_for_budget accepts (37 at r=.15, mu=3)."""
  check_span_params(noise_density, mean_noise_span_length)
  # MIN_NOISE_SPANS spans need round(noise / mu) >= 2, so noise >= 1.5 mu and raw >= 1.5 mu / r:
  # no smaller budget can work, so start the scan just below it.
  budget = max(2, int((min_spans - 0.5) * mean_noise_span_length / noise_density) - 2)
  while True:
    counts = _pick_for_budget(budget, noise_density, mean_noise_span_length, min_spans)
    if counts is not None and is_valid_span_chunk(counts, min_spans):
      return budget
    budget += 1


def _raise_too_small(what: str, density: float, mean: float,
                     min_spans: int = MIN_NOISE_SPANS) -> None:
  minimum = span_corruption_min_budget(density, mean, min_spans)
  raise ConfigError(
      f"{what} is too small for span corruption with noise_density={density}, "
      f"mean_noise_span_length={mean} (it needs >= {min_spans} noise span{'s' if min_spans > 1 else ''}); "
      f"the minimum token budget is {minimum}")


def span_corruption_lengths_for_budget(budget: int, noise_density: float,
                                       mean_noise_span_length: float,
                                       min_spans: int = MIN_NOISE_SPANS) -> tuple[int, int, int]:
  """(inputs, targets, raw) with the LARGEST inputs such that inputs + targets <= budget.

  The lengths are exact: a raw chunk of `raw` tokens gives exactly these inputs and targets.
  span_corruption_lengths_for_budget(626, 0.15, 3.0) == (512, 114, 568), the lengths of
  Wang et al. (2022), whose decoder-only models see 626 tokens per example for every
  objective. At density 0.5 the largest raw that fits plays the part of T5's hack:
  (1024, 0.5, 3.0) -> (512, 512, 766). Too small a budget raises ConfigError.
  """
  check_span_params(noise_density, mean_noise_span_length)
  counts = _pick_for_budget(budget, noise_density, mean_noise_span_length, min_spans)
  if counts is None or not is_valid_span_chunk(counts, min_spans):
    _raise_too_small(f"token budget {budget}", noise_density, mean_noise_span_length,
                     min_spans)
  return counts.inputs, counts.targets, counts.raw
