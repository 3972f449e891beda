"""Fill-in-the-middle (FIM; Bavarian et al. 2022, arXiv 2207.14255;
docs/objectives.md#fill-in-the-middle).

A targets-only LM objective. Documents get EOS and are concatenated into one token stream,
as in full LM; the stream is cut into consecutive pieces, and with probability
`fim_rate` a piece is split at two uniformly random points into (prefix, middle, suffix)
and rearranged around three sentinels so that the model learns to write the middle last:

  PSM  <PRE> prefix <SUF> suffix <MID> middle
  SPM  <PRE> <SUF> suffix <MID> prefix middle        (with probability spm_rate)

The layouts are those of the public code read for this module (bigcode Megatron-LM
`gpt_dataset.py::permute`, from gpt-neox FIM-clean), whose SPM keeps prefix and middle
adjacent. Every token, sentinels included, carries the ordinary next-token loss: the
Megatron dataset masks nothing.

Choices this module makes (the FIM hyper-parameters come from secondary summaries, not
from the papers' text):
- Defaults fim_rate 0.5 and spm_rate 0.5: StarCoder's settings, as summarised. Bavarian et
  al. report FIM rates up to about 0.9 cost no left-to-right loss, so fim_rate may be
  raised.
- Split points are two independent uniform TOKEN positions in [0, n], sorted, so any of the
  three parts may be empty. Megatron cuts the detokenized text at two uniform CHARACTER
  positions and re-tokenizes; this preprocessor runs after tokenization and never
  detokenizes, so it cuts between tokens (prompts at inference should do the same).
- FIM is applied to each piece of the concatenated stream as a whole (Megatron without
  `fim_split_sample`): a piece may span several documents and their EOS tokens.
- Exact lengths without trimming or padding: the three sentinels take three positions, so a
  FIM example holds n = budget - 3 stream tokens and a plain example holds budget tokens.
  The stream is cut into consecutive pieces of those two lengths, so nothing is dropped
  (Megatron trims the suffix's overflow instead): undoing the rearrangement of every example
  and concatenating gives back the stream exactly. Whether a piece is FIM is one
  Bernoulli(fim_rate) draw per piece, made before its length is needed. TaskLengths.raw is
  therefore the most an example consumes (budget); a FIM example consumes budget - 3.
- Sentinels: <PRE>, <SUF>, <MID> = <extra_id_0>, <extra_id_1>, <extra_id_2> = vocab_size - 1,
  vocab_size - 2, vocab_size - 3 (T5's count-down convention,
  docs/objectives.md#sentinel-ids), so the
  vocabulary needs extra_ids >= 3. They are span corruption's first sentinel ids; no
  mixture here combines FIM with a sentinel objective.

Worked example (a real run of this module under map_seed_manager(4): token budget 12, so a
FIM piece holds n = 9 stream tokens; vocabulary seqio.ByteVocabulary(extra_ids=100), so
vocab_size 359, <PRE> = 358, <SUF> = 357, <MID> = 356, EOS = 1; one document 3 ... 42):

  stream  3 4 5 ... 41 42 1                                   (41 tokens)
  plain   [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]             stream 3 ... 14 as is
  SPM     [358, 357, 20, 21, 22, 23, 356, 15, 16, 17, 18, 19]   piece 15 ... 23, j = 5:
          suffix 20-23, then prefix + middle 15-19 (the SPM text does not show i)
  SPM     [358, 357, 26, 27, 28, 29, 30, 31, 32, 356, 24, 25]   piece 24 ... 32, j = 2
  PSM     [358, 33, 34, 35, 36, 357, 39, 40, 41, 356, 37, 38]   piece 33 ... 41, i = 4,
          j = 6: prefix 33-36, suffix 39-41, middle 37-38
  (42 1 left over: too short for any piece, dropped)
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

NUM_SENTINELS = 3  # <PRE>, <SUF>, <MID>
SENTINEL_NAMES = ("<PRE>", "<SUF>", "<MID>")  # <extra_id_0>, <extra_id_1>, <extra_id_2>
# Documents per scan step: the stream is cut on batches of documents, which gives the same
# stream and pieces as one document at a time but far fewer (sequential) scan steps.
_DOCS_PER_STEP = 64


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FimConfig:
  """FIM hyper-parameters (defaults: StarCoder's, from secondary summaries).

  Attributes:
    fim_rate: probability that an example is rearranged (PSM or SPM), in [0, 1].
    spm_rate: probability that a rearranged example uses SPM rather than PSM, in [0, 1].
  """
  fim_rate: float = 0.5
  spm_rate: float = 0.5

  def __post_init__(self):
    for name in ("fim_rate", "spm_rate"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"FimConfig.{name} must be a number in [0, 1], got {value!r}")


def sentinel_ids(vocab_size: int) -> tuple[int, int, int]:
  """(<PRE>, <SUF>, <MID>) = <extra_id_0..2>: sentinel_ids(359) == (358, 357, 356)."""
  return vocab_size - 1, vocab_size - 2, vocab_size - 3


def fim_layout(budget: int, is_fim_K: tf.Tensor, is_spm_K: tf.Tensor, cut_i_K: tf.Tensor,
               cut_j_K: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Where each of the budget output positions of K examples comes from.

  An example of a piece r[0:n] (n = budget - 3, cut points 0 <= i <= j <= n) is
    PSM  <PRE> r[0:i] <SUF> r[j:n] <MID> r[i:j]
    SPM  <PRE>        <SUF> r[j:n] <MID> r[0:j]     (= r[0:i] r[i:j])
  one layout with a = i for PSM and a = 0 for SPM. A plain example is r[0:budget].

  Returns:
    offset_KP: int32[K, budget], the index into the piece of each position (0 at sentinels).
    slot_KP: int32[K, budget], 0/1/2 where <PRE>/<SUF>/<MID> goes, -1 elsewhere.

  Example, budget 8 (n = 5), PSM with i=1, j=3: offsets [0, 0, 0, 3, 4, 0, 1, 2] and slots
  [0, -1, 1, -1, -1, 2, -1, -1], i.e. <PRE> r0 <SUF> r3 r4 <MID> r1 r2.
  """
  n = budget - NUM_SENTINELS
  p_1P = tf.range(budget, dtype=tf.int32)[None, :]
  a_K1 = tf.where(is_spm_K, 0, cut_i_K)[:, None]
  j_K1 = cut_j_K[:, None]
  mid_K1 = a_K1 + 2 + n - j_K1  # position of <MID>
  offset_KP = tf.where(p_1P <= a_K1, p_1P - 1,                    # r[0:a] after <PRE>
                       tf.where(p_1P < mid_K1, p_1P - 2 - a_K1 + j_K1,  # r[j:n] after <SUF>
                                p_1P - 3 - n + j_K1))            # r[a:j] after <MID>
  slot_KP = tf.where(p_1P == 0, 0,
                     tf.where(p_1P == a_K1 + 1, 1, tf.where(p_1P == mid_K1, 2, -1)))
  fim_K1 = is_fim_K[:, None]
  slot_KP = tf.where(fim_K1, slot_KP, -1)
  offset_KP = tf.where(fim_K1, tf.where(slot_KP >= 0, 0, offset_KP), p_1P)
  return offset_KP, slot_KP


def _fim_scan_step(budget: int, cfg: FimConfig, vocab_size: int):
  """The scan step: (leftover tokens, pending FIM bit) x token batch -> whole examples."""
  n = budget - NUM_SENTINELS
  fim_rate, spm_rate = float(cfg.fim_rate), float(cfg.spm_rate)

  def step(carry, batch):
    leftover_R, pending = carry  # pending: the next piece's FIM bit, -1 before the first.
    buf_T = tf.concat([leftover_R, batch["tokens"]], axis=0)
    total = tf.size(buf_T, out_type=tf.int32)
    # Every piece has >= n tokens, so at most total // n fit and one more bit is drawn,
    # which becomes the pending bit of the first piece of the next step.
    num_draws = total // n + 1
    u_N2 = tf.random.stateless_uniform([num_draws, 2], seed=batch["seeds"][0])
    cuts_N2 = tf.random.stateless_uniform([num_draws, 2], seed=batch["seeds"][1], minval=0,
                                          maxval=n + 1, dtype=tf.int32)
    first_N = tf.equal(tf.range(num_draws), 0)
    is_fim_N = tf.where(first_N & (pending >= 0), pending > 0, u_N2[:, 0] < fim_rate)
    length_N = budget - NUM_SENTINELS * tf.cast(is_fim_N, tf.int32)
    end_N = tf.cumsum(length_N)
    num = tf.reduce_sum(tf.cast(end_N <= total, tf.int32))
    used = tf.reduce_sum(length_N[:num])
    offset_KP, slot_KP = fim_layout(budget, is_fim_N[:num], u_N2[:num, 1] < spm_rate,
                                    tf.reduce_min(cuts_N2[:num], axis=1),
                                    tf.reduce_max(cuts_N2[:num], axis=1))
    start_K1 = (end_N[:num] - length_N[:num])[:, None]
    tokens_KP = tf.gather(buf_T, start_K1 + offset_KP)
    # <PRE>, <SUF>, <MID> = vocab_size - 1 - slot.
    tokens_KP = tf.where(slot_KP >= 0, tf.cast(vocab_size - 1 - slot_KP, buf_T.dtype),
                         tokens_KP)
    return (buf_T[used:], tf.cast(is_fim_N[num], tf.int32)), tokens_KP

  return step


def _check_vocabulary(output_features: Mapping[str, seqio.Feature]) -> seqio.Vocabulary:
  vocab = output_features["targets"].vocabulary
  if (vocab.extra_ids or 0) < NUM_SENTINELS:
    raise ConfigError(
        f"fim needs {NUM_SENTINELS} sentinel ids (<PRE>, <SUF>, <MID> = <extra_id_0..2>) but "
        f"the vocabulary {vocab} has extra_ids={vocab.extra_ids}; use a vocabulary with "
        f"extra_ids>={NUM_SENTINELS}")
  return vocab


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[FimConfig] = None) -> tf.data.Dataset:
  """Documents {"targets": int32[L]} -> {"targets": int32[sequence_length["targets"]]}.

  Randomness comes from seqio's map seeds (two per batch of documents), so the output is
  deterministic under `seqio.utils.map_seed_manager(seed)` or a Task's seed. The last
  partial piece of the stream is dropped, as in full LM.
  """
  cfg = cfg or FimConfig()
  if not sequence_length or not sequence_length.get("targets"):
    raise ConfigError("fim needs sequence_length['targets'] (pass the objective's "
                      f"lengths(...).feature_lengths() to get_dataset); got {sequence_length}")
  budget = lengths(cfg, int(sequence_length["targets"])).targets
  eos_id = stream.eos_id_or_none(output_features["targets"], "targets")
  vocab_size = _check_vocabulary(output_features).vocab_size

  tokens_ds = ds.map(lambda ex: ex["targets"], num_parallel_calls=tf.data.AUTOTUNE)
  if eos_id is not None:  # Full LM's EOS: after every document, before concatenation.
    tokens_ds = tokens_ds.map(lambda t: stream.append_eos(t, eos_id),
                              num_parallel_calls=tf.data.AUTOTUNE)
  dtype = tokens_ds.element_spec.dtype
  batches = tokens_ds.ragged_batch(_DOCS_PER_STEP).map(
      lambda docs: docs.flat_values, num_parallel_calls=tf.data.AUTOTUNE)

  @seqio.map_over_dataset(num_seeds=2)
  def with_seeds(tokens, seeds: Sequence):
    return {"tokens": tokens, "seeds": tf.convert_to_tensor(seeds)}

  examples = with_seeds(batches).scan((tf.zeros([0], dtype), tf.constant(-1, tf.int32)),
                                      _fim_scan_step(budget, cfg, vocab_size)).unbatch()
  return examples.map(lambda t: {"targets": tf.ensure_shape(t, [budget])},
                      num_parallel_calls=tf.data.AUTOTUNE)


def min_budget() -> int:
  """4: a FIM example needs its three sentinels and at least one stream token."""
  return NUM_SENTINELS + 1


def lengths(cfg: FimConfig, sequence_length: int) -> registry.TaskLengths:
  """The whole budget is targets: lengths(cfg, 626) == TaskLengths(626, 0, 626).

  raw is the most one example consumes (a plain one); a FIM example consumes budget - 3.
  """
  del cfg
  if sequence_length < min_budget():
    raise ConfigError(f"fim token budget {sequence_length} is too small; the minimum token "
                      f"budget is {min_budget()} (3 sentinels + 1 token)")
  return registry.TaskLengths(raw=sequence_length, inputs=0, targets=sequence_length)


OBJECTIVE = registry.register(registry.Objective(
    name="fim",
    config_cls=FimConfig,
    preprocess=preprocess,
    features=("targets",),
    lengths=lengths,
    description="fill-in-the-middle: full LM with PSM/SPM rearranged pieces (rate 0.5, SPM 0.5)",
))
