"""Decoder-only Transformer: the causal decoder (CD) and the prefix decoder (ND).

Both read the features of `seqio.DecoderFeatureConverter`; they share every parameter and
differ only in the attention mask (`bidirectional_inputs`), as in the T5X fork of Wang et
al. 2022 (`DecoderOnlyModel.inputs_bidirectional_attention`). With plain LM data
(no `decoder_causal_attention`) the two are the same model.

Features (B, L) int32, packed example from seqio's PrefixLMFeatureConverter docstring:
  decoder_target_tokens    [7, 8, 5, 1, 3, 9, 1, 8, 4, 9, 3, 1, 4, 1, 0]
  decoder_input_tokens     [0, 7, 8, 5, 1, 3, 9, 0, 8, 4, 9, 3, 1, 4, 0]
  decoder_loss_weights     [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]
  decoder_positions        [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0]
  decoder_segment_ids      [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0]
  decoder_causal_attention [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
Unpacked (pack=False), seqio emits no decoder_segment_ids / decoder_positions: each row is
one example from position 0, padded at the end (the model then masks by targets > 0).

This module imports seqio only inside `feature_converter`, so GPU hosts without
TensorFlow/seqio can build, benchmark and train the model on `synthetic_batch` data.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from objectax.models import config as config_lib
from objectax.models import layers
from objectax.models import masks
from objectax.models import registry
from objectax.models import scoring
from objectax.models.config import ModelConfig

TARGETS_KEY = "decoder_target_tokens"
WEIGHTS_KEY = "decoder_loss_weights"
READS = ("lm", "seq2seq")  # LM data; (inputs, targets) concatenated in one stream
LEFT_TO_RIGHT = True


class Model(nn.Module):
  """A pre-norm decoder-only Transformer returning float32 logits_BLV.

  Attributes:
    config: shapes and numerics; config.vocab_size must be set (`with_vocab_size`).
    bidirectional_inputs: False = causal decoder ("causal_decoder"); True = prefix decoder
      ("prefix_decoder"): positions with decoder_causal_attention == 1 see each other
      both ways.
  """

  config: ModelConfig
  bidirectional_inputs: bool = False
  # > 0: the decoding model (`decode`), whose attention caches this many positions; the
  # same parameters as the training model.
  cache_length: int = 0

  def setup(self):
    cfg = self.config
    config_lib._require_vocab(cfg)  # pylint: disable=protected-access
    self.embed = layers.Embed(cfg)
    self.embed_dropout = nn.Dropout(rate=cfg.dropout_rate)
    self.blocks = layers.stack(cfg, layers.Block, cfg.num_layers, "block", self.cache_length)
    self.final_norm = layers.RMSNorm(cfg)
    if cfg.position_embedding == "relative":
      # One table for the stack, causal buckets even for the prefix decoder, as in the
      # T5X decoder-only model Wang et al. 2022 trained (t5x/examples/decoder_only/
      # network.py: `relative_embedding(l, l, False)` whatever decoder_causal_attention).
      self.relpos_bias = layers.RelativePositionBias(cfg, bidirectional=False)
    self.head_DV = layers.untied_head(self, cfg)  # None when tied

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Logits (float32) for every position of `batch["decoder_input_tokens"]`."""
    x_BLD = self.embed(batch["decoder_input_tokens"])
    return self.logits_from_embeddings(x_BLD, batch, deterministic=deterministic)

  def decode(self, tokens_BL: jax.Array, positions_BL: jax.Array,
             mask_B1LS: jax.Array) -> jax.Array:
    """Decoding (`cache_length` > 0, the "cache" collection mutable): logits (float32) of
    `tokens_BL` at `positions_BL`, each row at its own positions, attending to the cached
    positions (slot = position) that `mask_B1LS` allows; their keys and values are cached.

    A prompt's prefill passes its whole stream (causal, or bidirectional over the prefix
    for the prefix decoder, exactly as in training); each step after it one token per row.
    """
    cfg = self.config
    b = tokens_BL.shape[0]
    slots_BS = jnp.broadcast_to(jnp.arange(self.cache_length), (b, self.cache_length))
    bias_BHLS = (self.relpos_bias(positions_BL, slots_BS)
                 if cfg.position_embedding == "relative" else None)
    x_BLD = layers.run_stack(self.blocks, self.embed(tokens_BL), mask_B1LS, positions_BL, True,
                             bias_BHLS)
    return layers.output_logits(self.embed, self.head_DV, self.final_norm(x_BLD))

  def hidden(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """The final-normed residual stream the logits are read from (chunked loss)."""
    x_BLD, _ = self.trunk(self.embed(batch["decoder_input_tokens"]), batch,
                          deterministic=deterministic)
    return self.final_norm(x_BLD)

  def output_kernel(self) -> tuple[jax.Array, float | None]:
    """(kernel, divisor) with logits = hidden @ kernel / divisor (`layers.output_kernel`)."""
    return layers.output_kernel(self.embed, self.head_DV)

  def logits_from_embeddings(self, x_BLD: jax.Array, batch: Mapping[str, jax.Array], *,
                             deterministic: bool = True) -> jax.Array:
    """The network after the embedding lookup (also used by the leakage tests)."""
    x_BLD, _ = self.trunk(x_BLD, batch, deterministic=deterministic)
    return layers.output_logits(self.embed, self.head_DV, self.final_norm(x_BLD))

  def trunk(self, x_BLD: jax.Array, batch: Mapping[str, jax.Array], *,
            deterministic: bool = True) -> tuple[jax.Array, "Context"]:
    """The blocks' output before the final norm, and the masks and positions they used.

    Model-side objectives (models/mtp.py) put extra heads on this residual stream with the
    same attention context.
    """
    cfg = self.config
    tokens_BL = batch["decoder_input_tokens"]
    positions_BL = batch.get("decoder_positions")
    if positions_BL is None:  # unpacked: every row is one example starting at 0
      positions_BL = jnp.broadcast_to(jnp.arange(tokens_BL.shape[1]), tokens_BL.shape)
    mask_B1LL = masks.decoder_mask(_segment_ids(batch), batch.get("decoder_causal_attention"),
                                   self.bidirectional_inputs)
    bias_BHLL = (self.relpos_bias(positions_BL) if cfg.position_embedding == "relative"
                 else None)
    if cfg.dropout_rate > 0.0:
      x_BLD = self.embed_dropout(x_BLD, deterministic=deterministic)
    x_BLD = layers.run_stack(self.blocks, x_BLD, mask_B1LL, positions_BL, deterministic, bias_BHLL)
    return x_BLD, Context(mask_B1LL, positions_BL, bias_BHLL)


class Context(NamedTuple):
  """What every block of the stack reads besides the residual stream."""
  mask_B1LL: jax.Array
  positions_BL: jax.Array
  bias_BHLL: Optional[jax.Array]


def _segment_ids(batch: Mapping[str, jax.Array]) -> jax.Array:
  """Packed: the batch's segment ids. Unpacked: 1 on real tokens, 0 on padding.

  T5X's padding mask is `decoder_target_tokens > 0`; trailing padding then only sees
  padding, and real tokens never see it.
  """
  segment_ids_BL = batch.get("decoder_segment_ids")
  if segment_ids_BL is not None:
    return segment_ids_BL
  targets_BL = batch.get(TARGETS_KEY)
  if targets_BL is None:
    return jnp.ones_like(batch["decoder_input_tokens"])
  return (targets_BL > 0).astype(jnp.int32)


def feature_converter(pack: bool = True, concat_length: int = 0) -> Any:
  """seqio's decoder converter: LM without "inputs", prefix LM with them.

  loss_on_targets_only=True puts weight only on the "targets" part (inputs get 0), for
  both the causal and the prefix decoder. With `concat_length` > 0 (an objective whose
  split varies while len(inputs) + len(targets) stays at most concat_length, such as
  Wang et al.'s prefix LM: TaskLengths.concat), rows are concat_length long instead of
  the sum of the task's per-feature upper bounds. seqio is imported here, not at module
  level.
  """
  import seqio  # pylint: disable=g-import-not-at-top

  if concat_length:
    return _fixed_row_converter_cls()(concat_length, loss_on_targets_only=True, pack=pack)
  return seqio.DecoderFeatureConverter(loss_on_targets_only=True, pack=pack)


@functools.cache
def _fixed_row_converter_cls() -> type:
  """seqio's PrefixLM converter with the row length fixed (defined lazily: seqio)."""
  import seqio  # pylint: disable=g-import-not-at-top

  class FixedRowPrefixLMFeatureConverter(seqio.PrefixLMFeatureConverter):
    """Rows of `concat_length`, whatever the per-feature bounds of the task are.

    seqio sizes a prefix-LM row as inputs + targets of the task lengths; for a prefix LM
    whose split is uniform in [1, L) those bounds are L - 1 each, which would double the
    row. The per-feature bounds still validate the task's output (seqio's check 2).
    """

    def __init__(self, concat_length: int, **kwargs):
      self._concat_length = int(concat_length)
      super().__init__(**kwargs)

    def _concat_task_feature_lengths(self, task_feature_lengths):
      del task_feature_lengths
      return super()._concat_task_feature_lengths({"targets": self._concat_length})

    def get_model_feature_lengths(self, task_feature_lengths):
      del task_feature_lengths
      return super().get_model_feature_lengths({"targets": self._concat_length})

  return FixedRowPrefixLMFeatureConverter


def model_lengths(task_feature_lengths: Mapping[str, int], concat_length: int = 0) -> dict[str, int]:
  """One stream of inputs + targets, e.g. {"inputs": 512, "targets": 114} -> 626.

  `concat_length` > 0 overrides the sum (TaskLengths.concat, see `feature_converter`).
  """
  return {"decoder": int(concat_length) or (int(task_feature_lengths.get("inputs", 0))
                                              + int(task_feature_lengths["targets"]))}


def flops_per_token(config: ModelConfig, task_feature_lengths: Mapping[str, int],
                    concat_length: int = 0) -> float:
  """Training FLOPs per token (6N + attention, `config.flops_per_token`) at the row length."""
  return config_lib.flops_per_token(
      config, model_lengths(task_feature_lengths, concat_length)["decoder"])


def budget_lengths(sequence_length: int, inputs_length: int = 0) -> dict[str, int]:
  """One LM stream of `sequence_length` tokens (a decoder does not split the budget)."""
  del inputs_length
  return {"targets": sequence_length}


def score_layout(pairs: Sequence[scoring.Pair], length: int) -> scoring.Layout:
  """CD / ND: concat(inputs, targets); causal attention on inputs + 1 position (seqio
  PrefixLMFeatureConverter); loss on the targets."""
  n = len(pairs)
  targets_NL, causal_NL = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
  all_NL, scored_NL = np.zeros((n, length)), np.zeros((n, length))
  for row, p in enumerate(pairs):
    k, s = len(p.inputs), len(p.inputs) + len(p.targets)
    scoring.check_fits(s, length)
    targets_NL[row, :s] = np.r_[p.inputs, p.targets]
    causal_NL[row, :k + 1] = 1
    all_NL[row, k:s], scored_NL[row, k:s] = 1, p.scored
  features = {"decoder_target_tokens": targets_NL,
              "decoder_input_tokens": scoring.shift_right(targets_NL),
              "decoder_loss_weights": (all_NL > 0).astype(np.int32),
              "decoder_causal_attention": causal_NL}
  return features, all_NL, scored_NL


def batch_spec(task_feature_lengths: Mapping[str, int], batch_size: int, *,
               pack: bool = True, concat_length: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of exactly the features `feature_converter(pack, concat_length)` emits, int32 (B, L).

  Always decoder_target_tokens, decoder_input_tokens and decoder_loss_weights;
  decoder_segment_ids and decoder_positions only when packed; decoder_causal_attention
  only when the task has "inputs" (prefix-LM data). The trainer builds its jit
  in_shardings from these keys, so an extra key breaks an unpacked run.
  """
  shape = (batch_size, model_lengths(task_feature_lengths, concat_length)["decoder"])
  names = [TARGETS_KEY, "decoder_input_tokens", WEIGHTS_KEY]
  if pack:
    names += ["decoder_segment_ids", "decoder_positions"]
  if "inputs" in task_feature_lengths:
    names.append("decoder_causal_attention")
  return {name: jax.ShapeDtypeStruct(shape, jnp.int32) for name in names}


def synthetic_batch(spec: Mapping[str, jax.ShapeDtypeStruct], vocab_size: int,
                    rng: Union[np.random.Generator, int, None] = None) -> dict[str, np.ndarray]:
  """A batch with the structure seqio would produce for `spec`, from random tokens.

  Packed (decoder_segment_ids in `spec`): each row holds 1-3 examples (random lengths),
  then up to L/8 padding. Unpacked: one example per row starting at position 0, then up
  to L/2 padding (unpacked rows are rarely full). Each example ends in EOS id 1, other
  token ids are in [2, vocab_size); padding has target 0 and loss weight 0. With
  decoder_causal_attention in `spec`, each example is split at a random point into inputs
  and targets: loss weights 1 on the targets only, causal attention 1 on the inputs plus
  one position. Used to init models and to benchmark without seqio.
  """
  rng = np.random.default_rng(rng)
  first = next(iter(spec.values()))
  batch_size, length = first.shape
  prefix_lm = "decoder_causal_attention" in spec
  packed = "decoder_segment_ids" in spec
  out = {name: np.zeros((batch_size, length), np.int32) for name in spec}
  max_padding = length // 8 if packed else length // 2
  for b in range(batch_size):
    used = length - int(rng.integers(0, max(1, max_padding)))
    num_examples = int(min(rng.integers(1, 4), max(1, used // 2))) if packed else 1
    cuts = np.sort(rng.choice(np.arange(1, used), num_examples - 1, replace=False)) \
        if num_examples > 1 else np.zeros(0, np.int64)
    bounds = [0, *cuts.tolist(), used]
    for segment, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
      n = end - start
      tokens = rng.integers(2, max(3, vocab_size), n).astype(np.int32)
      tokens[-1] = 1  # EOS
      _fill_example(out, b, start, end, segment, tokens, rng, prefix_lm)
    if not packed and used < length:
      # seqio shifts the whole padded row right, so the EOS lands in the first padding
      # slot of decoder_input_tokens (its target and weight stay 0).
      out["decoder_input_tokens"][b, used] = 1
  return {name: out[name] for name in spec}


def _fill_example(out: dict[str, np.ndarray], b: int, start: int, end: int, segment: int,
                  tokens: np.ndarray, rng: np.random.Generator, prefix_lm: bool) -> None:
  """Writes one example, laid out as seqio packs it, into row b at [start, end)."""
  n = end - start
  positions = np.arange(n, dtype=np.int32)
  out["decoder_target_tokens"][b, start:end] = tokens
  out["decoder_input_tokens"][b, start:end] = np.concatenate([[0], tokens[:-1]])  # BOS = 0
  if "decoder_segment_ids" in out:
    out["decoder_segment_ids"][b, start:end] = segment
  if "decoder_positions" in out:
    out["decoder_positions"][b, start:end] = positions
  num_inputs = int(rng.integers(1, n)) if (prefix_lm and n > 1) else 0
  out["decoder_loss_weights"][b, start:end] = positions >= num_inputs
  if prefix_lm:
    out["decoder_causal_attention"][b, start:end] = positions <= num_inputs


def init_params(model: Model, spec: Mapping[str, jax.ShapeDtypeStruct],
                rng: jax.Array) -> Any:
  """Boxed (logically partitioned) parameters for `model`, from a batch of `spec` shapes."""
  batch = {name: jnp.zeros(s.shape, s.dtype) for name, s in spec.items()}
  return model.init(rng, batch)["params"]


CAUSAL = "causal_decoder"


def is_causal_decoder(architecture: str) -> bool:
  """Whether `architecture` is this module's causal decoder: the one shape every
  decoder-only codebase trains (tools that compare against one, e.g. `bench peer`)."""
  return architecture == CAUSAL


registry.register(registry.from_module(
    CAUSAL, "decoder-only, causal attention over concat(inputs, targets)",
    sys.modules[__name__], functools.partial(Model, bidirectional_inputs=False)))
registry.register(registry.from_module(
    "prefix_decoder", "decoder-only, bidirectional over inputs (+1 position), causal after",
    sys.modules[__name__], functools.partial(Model, bidirectional_inputs=True)))
