"""Encoder-decoder Transformer (ED): inputs -> bidirectional encoder, targets -> decoder.

The T5 layout (Raffel et al. 2020; T5 v1.1 pre-norm blocks without biases) on the shared
primitives of `layers`: the encoder is the embedding, `encoder_layers` pre-norm blocks with
full attention within each packed segment and a final norm; the decoder reuses the same
embedding table (T5 shares it between the two stacks and the tied output layer) and stacks
`num_layers` blocks of causal self-attention, cross-attention to the encoder output and an
MLP. RoPE rotates the self-attention of both stacks at the batch's positions, or (T5's
own choice, config.position_embedding="relative") each stack adds its relative position
bias, bidirectional in the encoder and causal in the decoder; the cross-attention has no
position information either way (see `layers.DecoderBlock`).

Shape letters as in `layers`, with S the encoder (inputs) length and T the decoder
(targets) length. Features, (B, S) for the encoder and (B, T) for the decoder, int32, are
exactly what `seqio.EncDecFeatureConverter` emits; its packed docstring example, inputs
[7, 8, 5, 1] -> targets [3, 9, 1] and inputs [8, 4, 9, 3, 1] -> targets [4, 1], S = 10, T = 7:
  encoder_input_tokens  [7, 8, 5, 1, 8, 4, 9, 3, 1, 0]
  encoder_segment_ids   [1, 1, 1, 1, 2, 2, 2, 2, 2, 0]
  encoder_positions     [0, 1, 2, 3, 0, 1, 2, 3, 4, 0]
  decoder_target_tokens [3, 9, 1, 4, 1, 0, 0]
  decoder_input_tokens  [0, 3, 9, 0, 4, 0, 0]
  decoder_loss_weights  [1, 1, 1, 1, 1, 0, 0]
  decoder_segment_ids   [1, 1, 1, 2, 2, 0, 0]
  decoder_positions     [0, 1, 2, 0, 1, 0, 0]
Unpacked (pack=False), seqio emits only the first four: one example per row from position
0, padded at the end; the model then masks encoder padding by encoder_input_tokens > 0 and
decoder padding by decoder_target_tokens > 0, as T5X does.

This module imports seqio only inside `feature_converter`, so GPU hosts without
TensorFlow/seqio can build, benchmark and train the model on `synthetic_batch` data.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from objectax.models.registry import ConfigError
from objectax.models import config as config_lib
from objectax.models import layers
from objectax.models import masks
from objectax.models import registry
from objectax.models import scoring
from objectax.models.config import ModelConfig

TARGETS_KEY = "decoder_target_tokens"
WEIGHTS_KEY = "decoder_loss_weights"
READS = ("seq2seq",)  # inputs -> encoder, targets -> decoder
LEFT_TO_RIGHT = True
# Two pieces per row with complementary splits where a variable-split objective offers it
# (Wang et al.'s prefix LM): one piece per row would leave each stream half empty.
PAIRS_PIECES = True
ENCODER_FEATURES = ("encoder_input_tokens",)
DECODER_FEATURES = (TARGETS_KEY, "decoder_input_tokens", WEIGHTS_KEY)
PACKING_FEATURES = ("encoder_segment_ids", "encoder_positions", "decoder_segment_ids",
                    "decoder_positions")


class Model(nn.Module):
  """A pre-norm encoder-decoder returning float32 logits_BTV for the decoder positions.

  Attributes:
    config: shapes and numerics; config.vocab_size must be set (`with_vocab_size`);
      config.encoder_layers encoder blocks, config.num_layers decoder blocks.
  """

  config: ModelConfig
  # > 0: the decoding model (`encode`, then `decode`), whose decoder caches this many
  # positions and the encoder's keys and values; the same parameters as the training model.
  cache_length: int = 0

  def setup(self):
    cfg = self.config
    config_lib._require_vocab(cfg)  # pylint: disable=protected-access
    self.embed = layers.Embed(cfg)  # shared by encoder, decoder and (tied) output
    self.embed_dropout = nn.Dropout(rate=cfg.dropout_rate)
    self.encoder_blocks = layers.stack(cfg, layers.Block, cfg.encoder_layers, "encoder_block")
    self.encoder_norm = layers.RMSNorm(cfg)
    self.decoder_blocks = layers.stack(cfg, layers.DecoderBlock, cfg.num_layers, "decoder_block",
                                       self.cache_length)
    self.decoder_norm = layers.RMSNorm(cfg)
    if cfg.position_embedding == "relative":
      # One table per stack, shared by its layers (T5X t5/network.py: Encoder and Decoder
      # each build a `relpos_bias`, called with bidirectional True and False).
      self.encoder_relpos_bias = layers.RelativePositionBias(cfg, bidirectional=True)
      self.decoder_relpos_bias = layers.RelativePositionBias(cfg, bidirectional=False)
    self.head_DV = layers.untied_head(self, cfg)  # None when tied

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Logits (float32) for every position of `batch["decoder_input_tokens"]`."""
    return self.logits_from_embeddings(self.embed(batch["encoder_input_tokens"]),
                                       self.embed(batch["decoder_input_tokens"]), batch,
                                       deterministic=deterministic)

  def encode(self, encoder_input_tokens_BS: jax.Array) -> jax.Array:
    """The encoder output for unpacked inputs (padding 0), once per decode."""
    batch = {"encoder_input_tokens": encoder_input_tokens_BS}
    return self.encode_embeddings(self.embed(encoder_input_tokens_BS), batch)

  def decode(self, tokens_BT: jax.Array, positions_BT: jax.Array, self_mask_B1TS: jax.Array,
             encoded_BSD: jax.Array | None, encoder_input_tokens_BS: jax.Array) -> jax.Array:
    """Decoding (`cache_length` > 0, the "cache" collection mutable): logits (float32) of
    the decoder tokens at their positions, attending to the cached decoder positions that
    `self_mask_B1TS` allows (slot = position) and to the real encoder positions. The call
    that passes `encoded_BSD` caches each layer's cross-attention keys and values; later
    calls pass None and read them."""
    cfg = self.config
    b = tokens_BT.shape[0]
    slots_BS = jnp.broadcast_to(jnp.arange(self.cache_length), (b, self.cache_length))
    real_BS = (encoder_input_tokens_BS > 0).astype(jnp.int32)
    cross_mask_B1TS = masks.cross_attention_mask(jnp.ones_like(tokens_BT), real_BS)
    bias_BHTS = (self.decoder_relpos_bias(positions_BT, slots_BS)
                 if cfg.position_embedding == "relative" else None)
    x_BTD = layers.run_stack(self.decoder_blocks, self.embed(tokens_BT), encoded_BSD,
                             self_mask_B1TS, cross_mask_B1TS, positions_BT, True, bias_BHTS)
    return layers.output_logits(self.embed, self.head_DV, self.decoder_norm(x_BTD))

  def logits_from_embeddings(self, encoder_x_BSD: jax.Array, decoder_x_BTD: jax.Array,
                             batch: Mapping[str, jax.Array], *,
                             deterministic: bool = True) -> jax.Array:
    """The network after both embedding lookups (also used by the leakage tests)."""
    encoded_BSD = self.encode_embeddings(encoder_x_BSD, batch, deterministic=deterministic)
    return self.decode_embeddings(decoder_x_BTD, encoded_BSD, batch,
                                  deterministic=deterministic)

  def encode_embeddings(self, x_BSD: jax.Array, batch: Mapping[str, jax.Array], *,
                        deterministic: bool = True) -> jax.Array:
    """The encoder output (after its final norm), bidirectional within each segment."""
    segment_ids_BS = encoder_segment_ids(batch)
    positions_BS = _positions(batch, "encoder_positions", batch["encoder_input_tokens"])
    mask_B1SS = masks.encoder_mask(segment_ids_BS)
    bias_BHSS = (self.encoder_relpos_bias(positions_BS)
                 if self.config.position_embedding == "relative" else None)
    x_BSD = self._embed_dropout(x_BSD, deterministic)
    x_BSD = layers.run_stack(self.encoder_blocks, x_BSD, mask_B1SS, positions_BS, deterministic,
                             bias_BHSS)
    return layers.constrain(self.encoder_norm(x_BSD))

  def decode_embeddings(self, x_BTD: jax.Array, encoded_BSD: jax.Array,
                        batch: Mapping[str, jax.Array], *,
                        deterministic: bool = True) -> jax.Array:
    """Decoder logits from its input embeddings and the encoder output."""
    return layers.output_logits(self.embed, self.head_DV, self.decoder_hidden(
        x_BTD, encoded_BSD, batch, deterministic=deterministic))

  def hidden(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """The decoder's final-normed hidden states the logits are read from (chunked loss)."""
    encoded_BSD = self.encode_embeddings(self.embed(batch["encoder_input_tokens"]), batch,
                                         deterministic=deterministic)
    return self.decoder_hidden(self.embed(batch["decoder_input_tokens"]), encoded_BSD, batch,
                               deterministic=deterministic)

  def output_kernel(self) -> tuple[jax.Array, float | None]:
    """(kernel, divisor) with logits = hidden @ kernel / divisor (`layers.output_kernel`)."""
    return layers.output_kernel(self.embed, self.head_DV)

  def decoder_hidden(self, x_BTD: jax.Array, encoded_BSD: jax.Array,
                     batch: Mapping[str, jax.Array], *,
                     deterministic: bool = True) -> jax.Array:
    """The decoder stack and its final norm, before the output projection."""
    cfg = self.config
    segment_ids_BT = decoder_segment_ids(batch)
    positions_BT = _positions(batch, "decoder_positions", batch["decoder_input_tokens"])
    self_mask_B1TT = masks.decoder_mask(segment_ids_BT)
    # Cross-attention sees the real encoder positions of the query's own example only.
    # It carries no RoPE or bias: query positions count decoder tokens, key positions
    # encoder tokens, so their difference is no distance; the order of the inputs reaches
    # the decoder through the encoder's own self-attention.
    cross_mask_B1TS = masks.cross_attention_mask(segment_ids_BT, encoder_segment_ids(batch))
    bias_BHTT = (self.decoder_relpos_bias(positions_BT)
                 if cfg.position_embedding == "relative" else None)
    x_BTD = self._embed_dropout(x_BTD, deterministic)
    x_BTD = layers.run_stack(self.decoder_blocks, x_BTD, encoded_BSD, self_mask_B1TT,
                             cross_mask_B1TS, positions_BT, deterministic, bias_BHTT)
    return self.decoder_norm(x_BTD)

  def _embed_dropout(self, x_BLD: jax.Array, deterministic: bool) -> jax.Array:
    if self.config.dropout_rate > 0.0:
      return self.embed_dropout(x_BLD, deterministic=deterministic)
    return x_BLD


def encoder_segment_ids(batch: Mapping[str, jax.Array]) -> jax.Array:
  """Packed: encoder_segment_ids. Unpacked: 1 on real tokens, 0 on padding (tokens > 0)."""
  segment_ids_BS = batch.get("encoder_segment_ids")
  if segment_ids_BS is not None:
    return segment_ids_BS
  return (batch["encoder_input_tokens"] > 0).astype(jnp.int32)


def decoder_segment_ids(batch: Mapping[str, jax.Array]) -> jax.Array:
  """Packed: decoder_segment_ids. Unpacked: decoder_target_tokens > 0 (T5X's padding mask).

  Without targets (nothing to mask by), every position is real.
  """
  segment_ids_BT = batch.get("decoder_segment_ids")
  if segment_ids_BT is not None:
    return segment_ids_BT
  targets_BT = batch.get(TARGETS_KEY)
  if targets_BT is None:
    return jnp.ones_like(batch["decoder_input_tokens"])
  return (targets_BT > 0).astype(jnp.int32)


def _positions(batch: Mapping[str, jax.Array], key: str, tokens_BL: jax.Array) -> jax.Array:
  """The packed positions, or 0..L-1 in every row when unpacked (one example per row)."""
  positions_BL = batch.get(key)
  if positions_BL is None:
    positions_BL = jnp.broadcast_to(jnp.arange(tokens_BL.shape[1]), tokens_BL.shape)
  return positions_BL


def feature_converter(pack: bool = True, concat_length: int = 0) -> Any:
  """seqio's EncDecFeatureConverter: inputs -> encoder, targets -> decoder, loss on targets.

  Packed, an example that arrives already packed (it has `inputs_segment_ids`: the two
  complementary pieces of Wang et al.'s prefix LM) fills a row by itself, its segment ids
  and positions kept; seqio's packer would number it as one segment. `concat_length` (an
  objective's TaskLengths.concat) is ignored: inputs and targets live in separate streams,
  each sized by its own task feature length. seqio is imported here, not at module level.
  """
  del concat_length
  import seqio  # pylint: disable=g-import-not-at-top

  class EncDecFeatureConverter(seqio.EncDecFeatureConverter):
    """seqio's, plus examples packed by their objective (see `feature_converter`)."""

    def _pack_or_pad(self, ds, packed_lengths):
      if "inputs_segment_ids" not in ds.element_spec:
        return super()._pack_or_pad(ds, packed_lengths)
      if not self.pack:
        raise ConfigError("these examples arrive packed (two pieces per row, with segment "
                          "ids), which needs Experiment.pack = True")
      return seqio.utils.trim_and_pad_dataset(ds, {
          f"{k}{suffix}": n for k, n in packed_lengths.items()
          for suffix in ("", "_segment_ids", "_positions")})

  return EncDecFeatureConverter(pack=pack)


def model_lengths(task_feature_lengths: Mapping[str, int], concat_length: int = 0) -> dict[str, int]:
  """Two streams, e.g. {"inputs": 512, "targets": 114} -> {"encoder": 512, "decoder": 114}.

  `concat_length` is ignored (see `feature_converter`). A task without "inputs" (a plain
  LM) has nothing to encode and is rejected.
  """
  del concat_length
  if "inputs" not in task_feature_lengths:
    raise ConfigError(
        f"encoder_decoder needs an 'inputs' feature, but the task has only "
        f"{sorted(task_feature_lengths)}; use causal_decoder for a plain language model")
  return {"encoder": int(task_feature_lengths["inputs"]),
          "decoder": int(task_feature_lengths["targets"])}


def flops_per_token(config: ModelConfig, task_feature_lengths: Mapping[str, int],
                    concat_length: int = 0) -> float:
  """Training FLOPs per token of inputs + targets (`config.encdec_flops_per_token`)."""
  lengths = model_lengths(task_feature_lengths, concat_length)
  return config_lib.encdec_flops_per_token(config, lengths["encoder"], lengths["decoder"])


def budget_lengths(sequence_length: int, inputs_length: int = 0) -> dict[str, int]:
  """`inputs_length` (default half the budget) in the encoder, the rest in the decoder, so
  that a budget means the same tokens per example as on a decoder (Wang et al. 2022's
  FLOP matching counts inputs + targets)."""
  inputs = inputs_length or sequence_length // 2
  if not 0 < inputs < sequence_length:
    raise ConfigError(f"--inputs_length={inputs} must be in (0, {sequence_length}) "
                      "(Experiment.sequence_length)")
  return {"inputs": inputs, "targets": sequence_length - inputs}


def score_layout(pairs: Sequence[scoring.Pair], length: int) -> scoring.Layout:
  """ED: inputs -> encoder (empty inputs -> [EOS], seqio's add_eos on an empty feature),
  targets -> decoder (seqio EncDecFeatureConverter)."""
  n = len(pairs)
  encoder_NL, targets_NL = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
  all_NL, scored_NL = np.zeros((n, length)), np.zeros((n, length))
  for row, p in enumerate(pairs):
    inputs = p.inputs if len(p.inputs) else np.array([scoring.EOS_ID], np.int32)
    scoring.check_fits(max(len(inputs), len(p.targets)), length)
    encoder_NL[row, :len(inputs)] = inputs
    targets_NL[row, :len(p.targets)] = p.targets
    all_NL[row, :len(p.targets)], scored_NL[row, :len(p.targets)] = 1, p.scored
  features = {"encoder_input_tokens": encoder_NL, "decoder_target_tokens": targets_NL,
              "decoder_input_tokens": scoring.shift_right(targets_NL),
              "decoder_loss_weights": (all_NL > 0).astype(np.int32)}
  return features, all_NL, scored_NL


def batch_spec(task_feature_lengths: Mapping[str, int], batch_size: int, *,
               pack: bool = True, concat_length: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of exactly the features `feature_converter(pack)` emits, int32.

  encoder_* features are (B, inputs length), decoder_* features (B, targets length); the
  segment ids and positions only when packed. The trainer builds its jit in_shardings from
  these keys, so an extra key breaks an unpacked run.
  """
  lengths = model_lengths(task_feature_lengths, concat_length)
  names = list(ENCODER_FEATURES + DECODER_FEATURES) + (list(PACKING_FEATURES) if pack else [])
  return {name: jax.ShapeDtypeStruct(
      (batch_size, lengths["encoder" if name.startswith("encoder") else "decoder"]), jnp.int32)
          for name in names}


def synthetic_batch(spec: Mapping[str, jax.ShapeDtypeStruct], vocab_size: int,
                    rng: Union[np.random.Generator, int, None] = None) -> dict[str, np.ndarray]:
  """A batch with the structure seqio's EncDec converter would produce, from random tokens.

  Packed (encoder_segment_ids in `spec`): each row holds 1-3 examples, each with inputs
  and targets of random lengths >= 1, then up to 1/8 of each stream as padding. Unpacked:
  one example per row from position 0, then up to half of each stream as padding; the
  decoder input row is the whole padded target row shifted right, so the EOS lands in its
  first padding slot (seqio's layout). Inputs and targets end in EOS id 1, other ids are in
  [2, vocab_size); padding is 0 with loss weight 0. Used to init models and to benchmark
  without seqio.
  """
  rng = np.random.default_rng(rng)
  batch_size, encoder_length = spec["encoder_input_tokens"].shape
  decoder_length = spec[TARGETS_KEY].shape[1]
  packed = "encoder_segment_ids" in spec
  out = {name: np.zeros(s.shape, np.int32) for name, s in spec.items()}
  for b in range(batch_size):
    encoder_used = _used_length(encoder_length, packed, rng)
    decoder_used = _used_length(decoder_length, packed, rng)
    num_examples = int(min(rng.integers(1, 4), encoder_used, decoder_used)) if packed else 1
    encoder_bounds = _split(encoder_used, num_examples, rng)
    decoder_bounds = _split(decoder_used, num_examples, rng)
    for segment in range(1, num_examples + 1):
      start, end = encoder_bounds[segment - 1], encoder_bounds[segment]
      out["encoder_input_tokens"][b, start:end] = _tokens(end - start, vocab_size, rng)
      if packed:
        out["encoder_segment_ids"][b, start:end] = segment
        out["encoder_positions"][b, start:end] = np.arange(end - start)
      start, end = decoder_bounds[segment - 1], decoder_bounds[segment]
      targets = _tokens(end - start, vocab_size, rng)
      out[TARGETS_KEY][b, start:end] = targets
      out["decoder_input_tokens"][b, start:end] = np.r_[0, targets[:-1]]  # BOS = 0
      out[WEIGHTS_KEY][b, start:end] = 1
      if packed:
        out["decoder_segment_ids"][b, start:end] = segment
        out["decoder_positions"][b, start:end] = np.arange(end - start)
    if not packed and decoder_used < decoder_length:
      out["decoder_input_tokens"][b, decoder_used] = 1
  return {name: out[name] for name in spec}


def _used_length(length: int, packed: bool, rng: np.random.Generator) -> int:
  """Non-padding length of a row: packed rows are nearly full, unpacked rows often not."""
  max_padding = length // 8 if packed else length // 2
  return length - int(rng.integers(0, max(1, max_padding)))


def _split(used: int, num_examples: int, rng: np.random.Generator) -> list[int]:
  """Bounds [0, ..., used] of `num_examples` non-empty consecutive pieces."""
  cuts = rng.choice(np.arange(1, used), num_examples - 1, replace=False) if num_examples > 1 \
      else np.zeros(0, np.int64)
  return [0, *np.sort(cuts).tolist(), used]


def _tokens(n: int, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
  tokens = rng.integers(2, max(3, vocab_size), n).astype(np.int32)
  tokens[-1] = 1  # EOS
  return tokens


def init_params(model: Model, spec: Mapping[str, jax.ShapeDtypeStruct],
                rng: jax.Array) -> Any:
  """Boxed (logically partitioned) parameters for `model`, from a batch of `spec` shapes.

  Jitted: one compile instead of one dispatch per op (seconds on a CPU).
  """
  batch = {name: jnp.zeros(s.shape, s.dtype) for name, s in spec.items()}
  return jax.jit(model.init)(rng, batch)["params"]


registry.register(registry.from_module(
    "encoder_decoder", "encoder (full attention over the inputs) + decoder (causal "
    "self-attention and cross-attention), loss on the targets", sys.modules[__name__]))
