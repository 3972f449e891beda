"""T5 i.i.d. token denoising family (Raffel et al. 2020 sec. 3.3.1-3.3.3, Tables 4-5).

See docs/objectives.md#t5-iid-denoising.

T5's `denoise` splits a corruption into a noise mask, an inputs encoding and a targets
encoding; its gin names read `iid_<density%>_<inputs>_<targets>`. Documents
are concatenated without EOS and chopped into raw chunks of `raw` tokens (remainder dropped),
each chunk gets a noise mask, both features are encoded, and EOS ends both. Codes:

  inputs   m  each noise token -> the mask id <extra_id_0> = vocab_size - 1 (T5 sentinel_id);
              with random_fraction p each noise token is instead, with probability p, a random
              token (T5 `noise_token_to_random_token_or_sentinel`; no "keep" case,
              unlike BERT: docs/objectives.md#t5-bert-style-is-not-bert)
           r  each noise token -> a random token
           g  each noise token -> a token gathered from a uniformly random position of the
              same chunk (T5 `noise_token_to_gathered_token`)
           p  the noise tokens permuted among the noise positions (T5 `permute_noise_tokens`)
           s  each noise span -> one shared sentinel <extra_id_0>
           u  each noise span -> a unique sentinel, counting down from vocab_size - 1
           d  noise tokens dropped
  targets  f  the full raw chunk
           u  each non-noise span -> a unique sentinel (T5 "replace corrupted spans")
           s  each non-noise span -> the shared sentinel <extra_id_0> (T5
              `nonnoise_span_to_sentinel`)
           d  non-noise tokens dropped: the noise tokens only (T5 "drop corrupted tokens")

Registered objectives (each its own gin-configurable config class, shared code below):
  t5_bert_style      iid_15_r10s90_f  T5 Table 4 "BERT-style" (90% mask / 10% random, full target)
  t5_mass_style      iid_15_m_f       T5 Table 5 "MASS-style" (NOT real MASS; see mass.py)
  iid_replace_spans  iid_15_u_u       T5 Table 5 "Replace corrupted spans"
  iid_drop_tokens    iid_15_d_d       T5 Table 5 "Drop corrupted tokens"
  iid_denoising      any combination through IidDenoisingConfig (default iid_15_m_f)

Deviations from T5, all to keep every example at exactly its `lengths()` (no padding):
- Noise count: T5's `iid_noise_mask` is Bernoulli(r) per token. Here EXACTLY
  n = round(raw * r) positions are noise, uniform over all C(raw, n) choices, i.e. the
  Bernoulli mask conditioned on its count. For m/r/f encodings T5's lengths are fixed anyway;
  d and u encodings need a fixed n.
- Span count (only when an encoding is s or u): the number of noise runs of an i.i.d. mask
  varies, so it is fixed too: S = round(n * (raw - n + 1) / raw), the expected run count of
  a uniform n-of-raw mask, and the chunk's first and last tokens are non-noise. The mask is
  uniform over all masks with n noise tokens in S runs and non-noise ends (the i.i.d. mask
  conditioned on those), drawn as two independent uniform compositions. Then the targets
  "u" always end in a sentinel (T5's trailing <Z> when the text ends in non-noise).
- Random tokens come from [3, vocab_size - extra_ids): T5 draws from [3, vocab_size)
  (`noise_token_to_random_token`, num_reserved_tokens=3), which includes the sentinels; we
  exclude them so the mask id and sentinels never appear by chance.

Worked examples (real runs of this module under map_seed_manager(0), token budget 30, one
document 3 ... 42; seqio.ByteVocabulary(extra_ids=100): vocab_size 359, mask id / <extra_id_0>
358, EOS 1):

  t5_bert_style: raw 14, inputs 15, targets 15; round(14 * 0.15) = 2 noise tokens per chunk
    inputs  [3, 4, 5, 6, 7, 8, 9, 10, 358, 358, 13, 14, 15, 16, 1]
    targets [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 1]
    inputs  [17, 18, 19, 20, 21, 22, 23, 24, 25, 71, 27, 28, 29, 358, 1]   (26 -> random 71)
    targets [17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 1]
  iid_replace_spans: raw 21, inputs 22, targets 8; 3 noise tokens in 3 runs
    inputs  [3, 358, 5, 6, 7, 357, 9, 10, 11, 12, 356, 14, 15, ..., 23, 1]
    targets [358, 4, 357, 8, 356, 13, 355, 1]
  iid_drop_tokens: raw 28, inputs 25, targets 5; 4 noise tokens
    inputs  [3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, ..., 30, 1]
    targets [9, 11, 12, 21, 1]
With a 626-token budget: m_f / r10s90_f 313 + 313 (raw 312), u_u 486 + 139 (raw 496),
d_d 531 + 95 (raw 624).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import registry
from objectax.objectives import stream

INPUTS_ENCODINGS = ("m", "r", "g", "p", "s", "u", "d")
TARGETS_ENCODINGS = ("f", "u", "s", "d")
NUM_RESERVED_TOKENS = 3  # PAD 0, EOS 1, UNK 2: never drawn as random tokens (as T5).


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IidDenoisingConfig:
  """i.i.d. denoising hyper-parameters; defaults are T5's "MASS-style" iid_15_m_f (Table 5).

  Attributes:
    noise_density: fraction r of raw tokens corrupted, in (0, 1) (T5 sec. 3.3.3 sweeps 10-50%).
    inputs_encoding: one of m, r, g, p, s, u, d (module docstring).
    targets_encoding: one of f, u, s, d.
    random_fraction: with inputs "m", the probability that a noise token becomes a random
      token instead of the mask id (0.1 for T5's BERT-style, sec. 3.3.1); 0 otherwise.
  """
  noise_density: float = 0.15
  inputs_encoding: str = "m"
  targets_encoding: str = "f"
  random_fraction: float = 0.0

  def __post_init__(self):
    name = type(self).__name__
    r = self.noise_density
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r < 1.0:
      raise ConfigError(f"{name}.noise_density must be in (0, 1), got {r!r}")
    if self.inputs_encoding not in INPUTS_ENCODINGS:
      raise ConfigError(f"{name}.inputs_encoding must be one of {INPUTS_ENCODINGS}, "
                        f"got {self.inputs_encoding!r}")
    if self.targets_encoding not in TARGETS_ENCODINGS:
      raise ConfigError(f"{name}.targets_encoding must be one of {TARGETS_ENCODINGS}, "
                        f"got {self.targets_encoding!r}")
    p = self.random_fraction
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
      raise ConfigError(f"{name}.random_fraction must be in [0, 1], got {p!r}")
    if p and self.inputs_encoding != "m":
      raise ConfigError(f"{name}.random_fraction applies to inputs_encoding 'm' only, got "
                        f"inputs_encoding {self.inputs_encoding!r}")

  @property
  def span_mode(self) -> bool:
    """Whether an encoding works per span, so the span count must be fixed."""
    return self.inputs_encoding in ("s", "u") or self.targets_encoding in ("s", "u")

  @property
  def gin_name(self) -> str:
    """T5's gin name, e.g. iid_15_r10s90_f or iid_15_u_u."""
    enc = self.inputs_encoding
    if enc == "m" and self.random_fraction:
      enc = f"r{round(100 * self.random_fraction)}s{round(100 * (1 - self.random_fraction))}"
    return f"iid_{round(100 * self.noise_density)}_{enc}_{self.targets_encoding}"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5BertStyleConfig(IidDenoisingConfig):
  """T5 "BERT-style" iid_15_r10s90_f (T5 sec. 3.3.1, Table 4): 90% mask/10% random, full target."""
  random_fraction: float = 0.1


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5MassStyleConfig(IidDenoisingConfig):
  """T5 "MASS-style" iid_15_m_f (T5 Table 5): shared mask, full target. Not MASS (mass.py)."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IidReplaceSpansConfig(IidDenoisingConfig):
  """T5 "Replace corrupted spans" iid_15_u_u (T5 sec. 3.3.2, Table 5)."""
  inputs_encoding: str = "u"
  targets_encoding: str = "u"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IidDropTokensConfig(IidDenoisingConfig):
  """T5 "Drop corrupted tokens" iid_15_d_d (T5 sec. 3.3.2, Table 5)."""
  inputs_encoding: str = "d"
  targets_encoding: str = "d"


@dataclasses.dataclass(frozen=True)
class IidCounts:
  """Static counts of one chunk of `raw` tokens; inputs/targets include one EOS each."""
  raw: int
  num_noise: int
  num_spans: int  # noise runs; 0 unless cfg.span_mode
  inputs: int
  targets: int
  sentinels: int  # extra ids needed (mask id or sentinels)
  valid: bool


def counts(cfg: IidDenoisingConfig, raw: int) -> IidCounts:
  """Counts for a raw chunk, e.g. counts(IidReplaceSpansConfig(), 134): 20 noise in 17 runs."""
  n = int(round(raw * cfg.noise_density))
  spans = max(1, int(round(n * (raw - n + 1) / raw))) if cfg.span_mode and raw else 0
  inputs = {"m": raw, "r": raw, "g": raw, "p": raw, "s": raw - n + spans,
            "u": raw - n + spans, "d": raw - n}[cfg.inputs_encoding]
  # Span mode keeps the chunk's ends non-noise, so there are spans + 1 non-noise runs.
  targets = {"f": raw, "u": n + spans + 1, "s": n + spans + 1, "d": n}[cfg.targets_encoding]
  sentinels = max({"m": 1, "r": 0, "g": 0, "p": 0, "s": 1, "u": spans, "d": 0}[cfg.inputs_encoding],
                  {"u": spans + 1, "s": 1}.get(cfg.targets_encoding, 0))
  valid = n >= 1 and raw - n >= 1
  if cfg.span_mode:  # S runs of noise need S noise tokens and S + 1 non-noise gaps.
    valid = valid and n >= spans and raw - n >= spans + 1
  return IidCounts(raw, n, spans, inputs + 1, targets + 1, sentinels, valid)


def _exact_raw(cfg: IidDenoisingConfig, inputs_length: int, targets_length: int) -> int:
  """Largest valid raw giving exactly these lengths (EOS counted); ConfigError otherwise."""
  matches = [c.raw for c in (counts(cfg, raw) for raw in range(1, inputs_length + targets_length))
             if c.valid and c.inputs == inputs_length and c.targets == targets_length]
  if not matches:
    raise ConfigError(
        f"{cfg.gin_name} cannot make inputs {inputs_length} and targets {targets_length} "
        "exactly; take both from its lengths()")
  return matches[-1]


def min_budget(cfg: IidDenoisingConfig) -> int:
  """Smallest token budget with a valid chunk (10 for iid_15_m_f: raw 4, 1 noise token)."""
  raw = 1
  while not counts(cfg, raw).valid:
    raw += 1
  return min(c.inputs + c.targets for c in (counts(cfg, r) for r in range(raw, 4 * raw + 8))
             if c.valid)


def lengths(cfg: IidDenoisingConfig, sequence_length: int) -> registry.TaskLengths:
  """Largest raw with inputs + targets <= budget: iid_15_m_f, 626 -> TaskLengths(312, 313, 313)."""
  fitting = [c for c in (counts(cfg, raw) for raw in range(1, sequence_length))
             if c.valid and c.inputs + c.targets <= sequence_length]
  if not fitting:
    raise ConfigError(f"token budget {sequence_length} is too small for {cfg.gin_name}; "
                      f"the minimum token budget is {min_budget(cfg)}")
  best = fitting[-1]
  return registry.TaskLengths(raw=best.raw, inputs=best.inputs, targets=best.targets)


def exact_noise_mask(length: int, num_noise: int, seed) -> tf.Tensor:
  """bool[length] with exactly num_noise True, uniform over all C(length, num_noise) subsets."""
  scores_L = tf.random.stateless_uniform([length], seed=seed)
  _, noise_idx_N = tf.math.top_k(scores_L, k=num_noise)
  return tf.scatter_nd(noise_idx_N[:, None], tf.ones([num_noise], tf.bool), [length])


def _random_composition(total: int, parts: int, seed) -> tf.Tensor:
  """int32[parts] of positive ints summing to total, uniform (cut at parts-1 random gaps)."""
  scores_G = tf.random.stateless_uniform([total - 1], seed=seed)
  _, gaps_C = tf.math.top_k(scores_G, k=parts - 1)
  bounds = tf.concat([[0], tf.sort(gaps_C + 1), [total]], axis=0)
  return bounds[1:] - bounds[:-1]


def exact_runs_noise_mask(length: int, num_noise: int, num_spans: int, seeds) -> tf.Tensor:
  """bool[length]: num_noise noise tokens in num_spans runs, first and last token non-noise.

  Uniform over all such masks: noise run lengths and the num_spans + 1 non-noise gaps are
  independent uniform compositions. E.g. length 7, 2 noise, 2 runs -> [F, T, F, F, T, F, F].
  """
  noise_S = _random_composition(num_noise, num_spans, seeds[0])
  gaps_G = _random_composition(length - num_noise, num_spans + 1, seeds[1])
  run_lengths = tf.concat([tf.reshape(tf.stack([gaps_G[:-1], noise_S], axis=1), [-1]),
                           gaps_G[-1:]], axis=0)
  is_noise = tf.concat([tf.tile([False, True], [num_spans]), [False]], axis=0)
  return tf.ensure_shape(tf.repeat(is_noise, run_lengths), [length])


def span_to_sentinel(tokens_L: tf.Tensor, span_L: tf.Tensor, vocab_size: int,
                     unique: bool) -> tf.Tensor:
  """Each run of span_L -> one sentinel (unique: vocab_size-1, -2, ...; else vocab_size-1).

  vocab 359, tokens [3, 4, 5, 6, 7], span [F, T, T, F, T] -> unique [3, 358, 6, 357],
  shared [3, 358, 6, 358].
  """
  prev_L = tf.concat([[False], span_L[:-1]], axis=0)
  first_L = span_L & ~prev_L
  if unique:
    sentinel_L = vocab_size - tf.cumsum(tf.cast(first_L, tokens_L.dtype))
  else:
    sentinel_L = tf.fill(tf.shape(tokens_L), tf.constant(vocab_size - 1, tokens_L.dtype))
  return tf.boolean_mask(tf.where(first_L, sentinel_L, tokens_L), ~(span_L & prev_L))


def _vocabulary(output_features: Mapping[str, seqio.Feature], cfg: IidDenoisingConfig,
                sentinels: int) -> seqio.Vocabulary:
  return stream.pair_vocabulary(output_features, cfg.gin_name, sentinels,
                                "sentinel/mask ids per example")


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[IidDenoisingConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"inputs": int32[I], "targets": int32[T]}, exact.

  (I, T) must be a pair a raw chunk gives exactly (take them from `lengths`). Randomness
  comes from four seqio map seeds per example (deterministic under map_seed_manager).
  """
  cfg = cfg or IidDenoisingConfig()
  if not sequence_length or not sequence_length.get("inputs") or not sequence_length.get(
      "targets"):
    raise ConfigError(f"{cfg.gin_name} needs sequence_length['inputs'] and ['targets'] "
                      f"(take them from its lengths()); got {sequence_length}")
  inputs_eos = stream.eos_id_or_none(output_features["inputs"], "inputs")
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  raw = _exact_raw(cfg, int(sequence_length["inputs"]) + (inputs_eos is None),
                   int(sequence_length["targets"]) + (targets_eos is None))
  c = counts(cfg, raw)
  vocab = _vocabulary(output_features, cfg, c.sentinels)
  vocab_size, first_sentinel = vocab.vocab_size, vocab.vocab_size - vocab.extra_ids
  inputs_length, targets_length = c.inputs - (inputs_eos is None), c.targets - (targets_eos is None)

  def random_tokens(shape, seed):
    return tf.random.stateless_uniform(shape, seed=seed, minval=NUM_RESERVED_TOKENS,
                                       maxval=first_sentinel, dtype=tf.int32)

  def encode_inputs(tokens_L, noise_L, seeds):
    enc = cfg.inputs_encoding
    if enc == "m":
      mask_L = tf.fill([raw], vocab_size - 1)
      if cfg.random_fraction:  # T5 noise_token_to_random_token_or_sentinel: a coin per token.
        use_random_L = tf.random.stateless_uniform([raw], seed=seeds[2]) < cfg.random_fraction
        mask_L = tf.where(use_random_L, random_tokens([raw], seeds[3]), mask_L)
      return tf.where(noise_L, mask_L, tokens_L)
    if enc == "r":
      return tf.where(noise_L, random_tokens([raw], seeds[3]), tokens_L)
    if enc == "g":
      from_L = tf.random.stateless_uniform([raw], seed=seeds[3], maxval=raw, dtype=tf.int32)
      return tf.where(noise_L, tf.gather(tokens_L, from_L), tokens_L)
    if enc == "p":
      at_N = tf.where(noise_L)  # int64[n, 1], the noise positions in order
      order_N = tf.argsort(tf.random.stateless_uniform([c.num_noise], seed=seeds[2]))
      return tf.tensor_scatter_nd_update(tokens_L, at_N,
                                         tf.gather(tf.gather_nd(tokens_L, at_N), order_N))
    if enc in ("s", "u"):
      return span_to_sentinel(tokens_L, noise_L, vocab_size, unique=enc == "u")
    return tf.boolean_mask(tokens_L, ~noise_L)

  def encode_targets(tokens_L, noise_L):
    if cfg.targets_encoding == "f":
      return tokens_L
    if cfg.targets_encoding in ("s", "u"):
      return span_to_sentinel(tokens_L, ~noise_L, vocab_size, unique=cfg.targets_encoding == "u")
    return tf.boolean_mask(tokens_L, noise_L)

  def maybe_eos(tokens, eos_id):
    return tokens if eos_id is None else stream.append_eos(tokens, eos_id)

  @seqio.map_over_dataset(num_seeds=4)
  def corrupt(ex, seeds):
    tokens_L = ex["targets"]
    if cfg.span_mode:
      noise_L = exact_runs_noise_mask(raw, c.num_noise, c.num_spans, seeds[:2])
    else:
      noise_L = exact_noise_mask(raw, c.num_noise, seeds[0])
    return {
        "inputs": tf.ensure_shape(maybe_eos(encode_inputs(tokens_L, noise_L, seeds), inputs_eos),
                                  [inputs_length]),
        "targets": tf.ensure_shape(maybe_eos(encode_targets(tokens_L, noise_L), targets_eos),
                                   [targets_length]),
    }

  # As T5's iid gins: reduce_concat_tokens without EOS, split, denoise, then EOS, so EOS
  # ends each feature rather than each document.
  return corrupt(stream.concat_and_split(ds, raw, "targets", eos_id=None))


def _register(name: str, config_cls: type, description: str,
              fills_spans: bool = False) -> registry.Objective:
  def objective_preprocess(ds, sequence_length, output_features, cfg=None):
    return preprocess(ds, sequence_length, output_features, cfg or config_cls())
  objective_preprocess.__doc__ = preprocess.__doc__
  return registry.register(registry.Objective(
      name=name,
      config_cls=config_cls,
      preprocess=objective_preprocess,
      features=("inputs", "targets"),
      lengths=lengths,
      description=description,
      fills_spans=fills_spans,
  ))


OBJECTIVES = {
    "t5_bert_style": _register("t5_bert_style", T5BertStyleConfig,
                               "T5 BERT-style iid_15_r10s90_f: 90% mask/10% random, full target"),
    "t5_mass_style": _register("t5_mass_style", T5MassStyleConfig,
                               "T5 MASS-style iid_15_m_f: shared mask, full target (not MASS)"),
    "iid_replace_spans": _register("iid_replace_spans", IidReplaceSpansConfig,
                                   "T5 iid_15_u_u: unique sentinels on both sides",
                                   fills_spans=True),
    "iid_drop_tokens": _register("iid_drop_tokens", IidDropTokensConfig,
                                 "T5 iid_15_d_d: noise dropped from inputs, targets = noise"),
    "iid_denoising": _register("iid_denoising", IidDenoisingConfig,
                               "T5 iid denoising, any <inputs>_<targets> encoding (gin)"),
}
