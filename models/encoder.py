"""Encoder-only Transformer (EO) for BERT-style masked LM, and its feature converter.

Full bidirectional self-attention within each packed segment (never across segments;
padding sees only padding), RoPE at the batch positions (or T5's bidirectional relative
position bias, or nothing: config.position_embedding), pre-norm blocks shared with the
decoder (`layers.Block`), a final norm and an LM head at every position.

Features (B, L) int32. Two bert_mlm examples of 6 tokens (mask id 358, EOS 1; position 2
of the first example was kept, position 4 of the second became the random token 77),
packed into one row of 14:
  encoder_input_tokens   [3, 358,  5, 6, 7, 1, 9, 10, 11, 358, 77, 1, 0, 0]
  encoder_target_tokens  [0,   4,  5, 0, 0, 0, 0,  0,  0,  12, 13, 0, 0, 0]
  encoder_loss_weights   [0,   1,  1, 0, 0, 0, 0,  0,  0,   1,  1, 0, 0, 0]
  encoder_segment_ids    [1,   1,  1, 1, 1, 1, 2,  2,  2,   2,  2, 2, 0, 0]
  encoder_positions      [0,   1,  2, 3, 4, 5, 0,  1,  2,   3,  4, 5, 0, 0]
The loss weights are `targets > 0`: every selected position, the kept (5) and random (77)
ones included. seqio's EncoderFeatureConverter weights only inputs == mask_id
(docs/objectives.md#mlm-loss-positions), here 2 of the 4. Unpacked (pack=False) there are no
encoder_segment_ids / encoder_positions: one example per row from position 0, padded with
0 at the end, and the model treats encoder_input_tokens == 0 as padding (no real input
token is 0).

This module imports seqio only inside `feature_converter`, so GPU hosts without
TensorFlow/seqio can build, benchmark and train the model on `synthetic_batch` data.
"""
from __future__ import annotations

import functools
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

INPUTS_KEY = "encoder_input_tokens"
TARGETS_KEY = "encoder_target_tokens"
WEIGHTS_KEY = "encoder_loss_weights"
READS = ("aligned",)  # position-aligned (inputs, targets): BERT MLM
LEFT_TO_RIGHT = False  # no left-to-right factorisation: cannot score a continuation
SEGMENT_IDS_KEY = "encoder_segment_ids"
POSITIONS_KEY = "encoder_positions"


class Model(nn.Module):
  """A pre-norm bidirectional Transformer encoder returning float32 logits_BLV.

  Attributes:
    config: shapes and numerics; config.vocab_size must be set (`with_vocab_size`).
      The parameters are exactly those of the decoder (`config_lib.num_params`).
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    config_lib._require_vocab(cfg)  # pylint: disable=protected-access
    self.embed = layers.Embed(cfg)
    self.embed_dropout = nn.Dropout(rate=cfg.dropout_rate)
    self.blocks = layers.stack(cfg, layers.Block, cfg.num_layers, "block")
    self.final_norm = layers.RMSNorm(cfg)
    if cfg.position_embedding == "relative":
      # Bidirectional buckets, as T5's encoder (T5X t5/network.py Encoder `relpos_bias`).
      self.relpos_bias = layers.RelativePositionBias(cfg, bidirectional=True)
    self.head_DV = layers.untied_head(self, cfg)  # None when tied

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Logits (float32) for every position of `batch["encoder_input_tokens"]`."""
    x_BLD = self.embed(batch[INPUTS_KEY])
    return self.logits_from_embeddings(x_BLD, batch, deterministic=deterministic)

  def logits_from_embeddings(self, x_BLD: jax.Array, batch: Mapping[str, jax.Array], *,
                             deterministic: bool = True) -> jax.Array:
    """The network after the embedding lookup (also used by the leakage tests)."""
    x_BLD = self.hidden_from_embeddings(x_BLD, batch, deterministic=deterministic)
    return layers.output_logits(self.embed, self.head_DV, x_BLD)

  def hidden_from_embeddings(self, x_BLD: jax.Array, batch: Mapping[str, jax.Array], *,
                             deterministic: bool = True) -> jax.Array:
    """The final-normed hidden states x_BLD (ELECTRA's discriminator and generator read
    these; models/rtd.py)."""
    cfg = self.config
    tokens_BL = batch[INPUTS_KEY]
    segment_ids_BL = segment_ids(batch)
    positions_BL = batch.get(POSITIONS_KEY)
    if positions_BL is None:  # unpacked: every row is one example starting at 0
      positions_BL = jnp.broadcast_to(jnp.arange(tokens_BL.shape[1]), tokens_BL.shape)
    # Fully visible within a segment (BERT, Devlin et al. 2019 sec. 3); padding only to padding.
    mask_B1LL = masks.segment_mask(segment_ids_BL)
    bias_BHLL = (self.relpos_bias(positions_BL) if cfg.position_embedding == "relative"
                 else None)
    if cfg.dropout_rate > 0.0:
      x_BLD = self.embed_dropout(x_BLD, deterministic=deterministic)
    x_BLD = layers.run_stack(self.blocks, x_BLD, mask_B1LL, positions_BL, deterministic,
                             bias_BHLL)
    return self.final_norm(x_BLD)

  def hidden(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """The final-normed hidden states the logits are read from (chunked loss)."""
    return self.hidden_from_embeddings(self.embed(batch[INPUTS_KEY]), batch,
                                       deterministic=deterministic)

  def output_kernel(self) -> tuple[jax.Array, float | None]:
    """(kernel, divisor) with logits = hidden @ kernel / divisor (`layers.output_kernel`)."""
    return layers.output_kernel(self.embed, self.head_DV)


def segment_ids(batch: Mapping[str, jax.Array]) -> jax.Array:
  """Packed: the batch's segment ids. Unpacked: 1 on real tokens, 0 on padding.

  Unlike the decoder, `targets > 0` cannot mark real tokens here: MLM targets are 0 at
  every unselected position. Inputs are never 0 on a real token (T5X's encoder padding
  mask is `encoder_input_tokens > 0` too).
  """
  segment_ids_BL = batch.get(SEGMENT_IDS_KEY)
  if segment_ids_BL is not None:
    return segment_ids_BL
  return (batch[INPUTS_KEY] > 0).astype(jnp.int32)


def model_lengths(task_feature_lengths: Mapping[str, int],
                  concat_length: int = 0) -> dict[str, int]:
  """Aligned inputs and targets: {"inputs": 512, "targets": 512} -> {"encoder": 512}.

  `concat_length` is ignored (nothing is concatenated). A task whose inputs length differs
  from its targets length cannot be aligned: ConfigError.
  """
  del concat_length
  length = int(task_feature_lengths["targets"])
  if int(task_feature_lengths.get("inputs", length)) != length:
    raise ConfigError(
        "encoder_only needs position-aligned inputs and targets of equal length; got "
        f"task lengths {dict(task_feature_lengths)} (objectives for it, e.g. bert_mlm, "
        "emit aligned pairs)")
  return {"encoder": length}


def feature_converter(pack: bool = True, concat_length: int = 0) -> Any:
  """The encoder-only converter: loss on every position with targets > 0.

  seqio's own converter would drop BERT's random and kept positions
  (docs/objectives.md#mlm-loss-positions).

  `concat_length` is ignored. seqio is imported here, not at module level.
  """
  del concat_length
  return _converter_cls()(pack=pack)


@functools.cache
def _converter_cls() -> type:
  """Defines the converter class lazily (its class attributes need TensorFlow)."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  spec = seqio.FeatureConverter.FeatureSpec

  class EncoderOnlyFeatureConverter(seqio.FeatureConverter):
    """Aligned {"inputs", "targets"} -> encoder features, weights = targets > 0.

    seqio's EncoderFeatureConverter has two faults for BERT's 80/10/10 data:
    - it weights only inputs == mask_id, dropping the random and kept predictions;
    - when packing, seqio (`utils._pack_with_tf_ops`) cuts every feature of an example to
      its count of non-zero ids, as if zeros were trailing padding. MLM targets are 0 at
      every unselected position, so packed targets come out shortened and shifted onto
      the wrong positions.
    Here the targets travel through packing as targets + 1 (never 0 inside an example,
    so an example keeps its length len(inputs)) and are shifted back after, with 0 on
    padding. Inputs are never 0 on a real token (asserted), so they pack correctly.
    """

    TASK_FEATURES = {"inputs": spec(dtype=tf.int32), "targets": spec(dtype=tf.int32)}
    MODEL_FEATURES = {TARGETS_KEY: spec(dtype=tf.int32), INPUTS_KEY: spec(dtype=tf.int32),
                      WEIGHTS_KEY: spec(dtype=tf.int32)}
    PACKING_FEATURE_DTYPES = {SEGMENT_IDS_KEY: tf.int32, POSITIONS_KEY: tf.int32}

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
      length = model_lengths(task_feature_lengths)["encoder"]
      pack = self.pack

      def check_and_shift(ex):
        inputs, targets = ex["inputs"], ex["targets"]
        checks = [
            tf.debugging.assert_equal(tf.size(inputs), tf.size(targets), message=(
                "encoder_only: inputs and targets must be position-aligned")),
            tf.debugging.assert_positive(inputs, message=(
                "encoder_only: 0 is padding and cannot be a real input token")),
        ]
        with tf.control_dependencies(checks):
          targets = tf.identity(targets)
        return {"inputs": inputs, "targets": targets + 1 if pack else targets}

      ds = ds.map(check_and_shift, num_parallel_calls=tf.data.AUTOTUNE)
      ds = self._pack_or_pad(ds, {"inputs": length, "targets": length})

      def convert(ex):
        inputs, targets = ex["inputs"], ex["targets"]
        if pack:
          real = ex["inputs_segment_ids"] > 0
          targets = tf.where(real, targets - 1, tf.zeros_like(targets))
        out = {INPUTS_KEY: inputs, TARGETS_KEY: targets,
               WEIGHTS_KEY: tf.cast(targets > 0, tf.int32)}
        if pack:
          out[SEGMENT_IDS_KEY] = ex["inputs_segment_ids"]
          out[POSITIONS_KEY] = ex["inputs_positions"]
        return out

      return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> dict[str, int]:
      length = model_lengths(task_feature_lengths)["encoder"]
      names = [TARGETS_KEY, INPUTS_KEY, WEIGHTS_KEY]
      if self.pack:
        names += [SEGMENT_IDS_KEY, POSITIONS_KEY]
      return {name: length for name in names}

  return EncoderOnlyFeatureConverter


def flops_per_token(config: ModelConfig, task_feature_lengths: Mapping[str, int],
                    concat_length: int = 0) -> float:
  """Training FLOPs per token (6N + attention, `config.flops_per_token`) at the row length."""
  return config_lib.flops_per_token(
      config, model_lengths(task_feature_lengths, concat_length)["encoder"])


def budget_lengths(sequence_length: int, inputs_length: int = 0) -> dict[str, int]:
  """Aligned inputs and targets of `sequence_length` tokens each (one stream)."""
  del inputs_length
  return {"inputs": sequence_length, "targets": sequence_length}


def score_layout(pairs: Sequence[scoring.Pair], length: int) -> scoring.Layout:
  """EO: the aligned (masked inputs, targets) form; loss where targets > 0."""
  n = len(pairs)
  inputs_NL, targets_NL = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
  for row, p in enumerate(pairs):
    inputs, targets = p.aligned
    scoring.check_fits(len(inputs), length)
    inputs_NL[row, :len(inputs)], targets_NL[row, :len(targets)] = inputs, targets
  weights_NL = (targets_NL > 0).astype(np.float64)
  features = {"encoder_input_tokens": inputs_NL, "encoder_target_tokens": targets_NL,
              "encoder_loss_weights": weights_NL.astype(np.int32)}
  return features, weights_NL, weights_NL


def batch_spec(task_feature_lengths: Mapping[str, int], batch_size: int, *,
               pack: bool = True, concat_length: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of exactly the features `feature_converter(pack)` emits, int32 (B, L).

  Always encoder_target_tokens, encoder_input_tokens and encoder_loss_weights;
  encoder_segment_ids and encoder_positions only when packed.
  """
  shape = (batch_size, model_lengths(task_feature_lengths, concat_length)["encoder"])
  names = [TARGETS_KEY, INPUTS_KEY, WEIGHTS_KEY]
  if pack:
    names += [SEGMENT_IDS_KEY, POSITIONS_KEY]
  return {name: jax.ShapeDtypeStruct(shape, jnp.int32) for name in names}


# BERT's masking rates (Devlin et al. 2019 sec. 3.1; objectives/bert_mlm.py): select 15% of
# the candidates, then 80% mask / 10% random / 10% unchanged.
_MASKED_LM_PROB, _MASK_FRACTION, _RANDOM_FRACTION = 0.15, 0.8, 0.1
_FIRST_TOKEN = 3  # PAD 0, EOS 1, UNK 2 are never drawn.


def synthetic_batch(spec: Mapping[str, jax.ShapeDtypeStruct], vocab_size: int,
                    rng: Union[np.random.Generator, int, None] = None) -> dict[str, np.ndarray]:
  """A batch with the layout the converter emits for `spec`, BERT-masked random tokens.

  Packed (encoder_segment_ids in `spec`): each row holds 1-3 examples of >= 2 tokens,
  then up to L/8 padding. Unpacked: one example per row from position 0, then up to L/8
  padding. Each example is random ids in [3, vocab_size - 1) ending in EOS 1; of its
  non-EOS positions round(15%) (at least 1) are selected, each becoming the mask id
  vocab_size - 1 (80%), a random id (10%) or staying (10%). Targets hold the original id
  at the selected positions, 0 elsewhere; loss weights are targets > 0. Used to init
  models and to benchmark without seqio.
  """
  rng = np.random.default_rng(rng)
  batch_size, length = next(iter(spec.values())).shape
  packed = SEGMENT_IDS_KEY in spec
  out = {name: np.zeros((batch_size, length), np.int32) for name in spec}
  for b in range(batch_size):
    used = length - int(rng.integers(0, length // 8 + 1))
    num_examples = int(min(rng.integers(1, 4), max(1, used // 2))) if packed else 1
    # Lengths >= 2 (bert_mlm's minimum budget) summing to `used`.
    sizes = 2 + rng.multinomial(used - 2 * num_examples, np.ones(num_examples) / num_examples) \
        if used >= 2 * num_examples else np.array([used])
    start = 0
    for segment, n in enumerate(sizes.tolist(), start=1):
      inputs, targets = _mlm_example(n, vocab_size, rng)
      out[INPUTS_KEY][b, start:start + n] = inputs
      out[TARGETS_KEY][b, start:start + n] = targets
      if packed:
        out[SEGMENT_IDS_KEY][b, start:start + n] = segment
        out[POSITIONS_KEY][b, start:start + n] = np.arange(n)
      start += n
  out[WEIGHTS_KEY] = (out[TARGETS_KEY] > 0).astype(np.int32)
  return {name: out[name] for name in spec}


def _mlm_example(n: int, vocab_size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one BERT-masked example of n tokens."""
  mask_id = max(vocab_size - 1, _FIRST_TOKEN + 1)
  tokens = rng.integers(_FIRST_TOKEN, mask_id, n).astype(np.int32)
  if n > 1:
    tokens[-1] = 1  # EOS: not a candidate
  candidates = np.flatnonzero(tokens != 1)
  num_selected = min(max(1, round(_MASKED_LM_PROB * len(candidates))), len(candidates))
  selected = rng.choice(candidates, num_selected, replace=False)
  inputs, targets = tokens.copy(), np.zeros(n, np.int32)
  targets[selected] = tokens[selected]
  choice = rng.random(num_selected)
  random_ids = rng.integers(_FIRST_TOKEN, mask_id, num_selected)
  inputs[selected] = np.where(choice < _MASK_FRACTION, mask_id,
                              np.where(choice < _MASK_FRACTION + _RANDOM_FRACTION,
                                       random_ids, tokens[selected]))
  return inputs, targets


def init_params(model: Model, spec: Mapping[str, jax.ShapeDtypeStruct],
                rng: jax.Array) -> Any:
  """Boxed (logically partitioned) parameters for `model`, from a batch of `spec` shapes."""
  batch = {name: jnp.zeros(s.shape, s.dtype) for name, s in spec.items()}
  return model.init(rng, batch)["params"]


registry.register(registry.from_module(
    "encoder_only", "encoder-only, full attention within each example, loss where targets > 0 "
    "(BERT MLM's selected positions)", sys.modules[__name__]))
