"""The model's hyper-parameters: one frozen dataclass, bound from gin/size/*.gin.

Only shapes and numerics of the network live here. Training settings (z-loss, learning
rate, ...) belong to the training config; the vocabulary size normally comes from the
vocabulary (`with_vocab_size`). This module imports neither jax nor seqio, so configs can
be built and validated anywhere (GPU benchmark hosts carry no TensorFlow or seqio).
"""
from __future__ import annotations

import dataclasses

import gin

from objectax.models.registry import ConfigError

# Activation and parameter dtypes a user may name. float16 is left out on purpose: without
# loss scaling it under/overflows in training, and bfloat16 covers the fast path.
DTYPES = ("float32", "bfloat16")

# Position information a user may choose: RoPE (Su et al. 2021, the modern default), T5's
# bucketed relative position bias (Raffel et al. 2020 sec. 2.1), or none at all.
POSITION_EMBEDDINGS = ("rope", "relative", "none")

# Activations of the MLP: with mlp_gated, SwiGLU / GeGLU / ReGLU (Shazeer 2020, "GLU
# Variants Improve Transformer"); GeGLU is T5.1.1's and Wang et al. 2022's. "gelu" is the
# tanh approximation, as T5X's "gelu" (flax.linen.gelu = jax.nn.gelu, approximate=True).
MLP_ACTIVATIONS = ("silu", "gelu", "relu")

# Fast paths, for speed and memory at scale. Each gives the plain path's loss
# (tests/models/test_fast_paths.py).
# remat: what the backward pass recomputes per block instead of keeping it (jax.checkpoint
# policies): nothing ("none"), everything ("full"), everything but the matmul outputs
# ("save_dots", jax.checkpoint_policies.dots_with_no_batch_dims_saveable).
REMAT_POLICIES = ("none", "full", "save_dots")
# attention: "xla" (jax.nn.dot_product_attention's portable path) or "cudnn" (the cuDNN
# fused flash-attention kernel; GPU with bfloat16/float16 activations only, elsewhere it
# falls back to "xla" with one warning).
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")

# Vocabulary rows are padded to a multiple of this so that the embedding and logits
# matmuls tile evenly (TPU MXU/GPU tensor cores like multiples of 128).
VOCAB_MULTIPLE = 128

# ModelConfig fields that change how the model runs, not what it computes (memory, kernels,
# chunking): a run may resume with other values of these, e.g. another attention kernel on
# another machine, and they do not make a different model.
EXECUTION_SETTINGS = ("remat", "attention", "logits_chunk")


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of the Transformer (pre-norm, RMSNorm; RoPE and SwiGLU by default).

  The defaults are the modern recipe (RoPE, SwiGLU, tied embeddings). T5.1.1 (Raffel et
  al. 2020; T5X t5_1_1/base.gin) and Wang et al. 2022 are position_embedding="relative",
  mlp_activation="gelu" (GeGLU), with tie_embeddings=False (T5.1.1) or True (Wang et al.);
  T5 v1.0 is relative, mlp_activation="relu", mlp_gated=False, tied.

  Attributes:
    vocab_size: rows of the embedding table. 0 = take it from the vocabulary through
      `with_vocab_size`, which rounds up to a multiple of 128.
    d_model: width D of the residual stream.
    num_heads: attention heads H.
    head_dim: width K of one head (q/k/v); must be even for the rotary embedding
      (position_embedding "rope").
    mlp_dim: hidden width F of the MLP.
    num_layers: number of decoder blocks.
    num_encoder_layers: encoder blocks of the encoder-decoder; 0 = as many as num_layers
      (T5's symmetric stacks). Other architectures ignore it.
    dropout_rate: dropout on the embeddings and on each residual branch.
    dtype: activation dtype, one of DTYPES. Norm statistics, softmax and logits are
      always computed in float32.
    param_dtype: storage dtype of the parameters, one of DTYPES.
    rope_max_wavelength: the base of the rotary embedding (RoFormer, Su et al. 2021).
    tie_embeddings: use the input embedding table for the output logits (T5 v1.0 style),
      scaled by 1/sqrt(D); untied, a separate D x V head without any scaling (T5.1.1,
      T5X network.py `logits_dense`).
    position_embedding: one of POSITION_EMBEDDINGS. "rope" rotates q and k of every
      self-attention; "relative" adds T5's learned bias per (head, distance bucket) to
      the self-attention logits, one table per stack shared by its layers; "none" gives
      no position information (cross-attention never gets any).
    relative_attention_num_buckets: buckets of the relative bias (T5: 32), half per
      direction in bidirectional stacks.
    relative_attention_max_distance: distances >= this share the last bucket (T5: 128).
    mlp_activation: one of MLP_ACTIVATIONS.
    mlp_gated: True = act(x W_gate) * (x W_up) then W_down (three matrices, GLU);
      False = act(x W_up) W_down (two matrices, T5 v1.0's ReLU MLP).
    remat: one of REMAT_POLICIES, applied to every block of every stack.
    scan_layers: run each stack's blocks with one `nn.scan` (one compiled block, the
      parameters stacked on a leading "layers" axis under `scan_<stack>`) instead of a
      Python loop; compiles in time independent of depth. The checkpoint layout differs
      from the unscanned one (`stack_block_params` converts).
    attention: one of ATTENTION_IMPLEMENTATIONS.
    logits_chunk: 0 = compute the (B, L, V) logits at once; N > 0 = the data-only loss
      computes logits and cross-entropy over N tokens at a time, recomputing them in the
      backward pass, so (B, L, V) float32 logits are never held (large vocabularies).
  """

  vocab_size: int = 0
  d_model: int = 256
  num_heads: int = 4
  head_dim: int = 64
  mlp_dim: int = 1024
  num_layers: int = 4
  num_encoder_layers: int = 0
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  rope_max_wavelength: float = 10_000.0
  tie_embeddings: bool = True
  position_embedding: str = "rope"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  mlp_activation: str = "silu"
  mlp_gated: bool = True
  remat: str = "none"
  scan_layers: bool = False
  attention: str = "xla"
  logits_chunk: int = 0

  def __post_init__(self):
    for name in ("d_model", "num_heads", "head_dim", "mlp_dim", "num_layers"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"ModelConfig.{name}={value!r} must be a positive integer")
    if (not isinstance(self.num_encoder_layers, int) or isinstance(self.num_encoder_layers, bool)
        or self.num_encoder_layers < 0):
      raise ConfigError(
          f"ModelConfig.num_encoder_layers={self.num_encoder_layers!r} must be >= 0 "
          "(0 = as many as num_layers)")
    if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
      raise ConfigError(
          f"ModelConfig.vocab_size={self.vocab_size!r} must be >= 0 "
          "(0 = take it from the vocabulary)")
    if self.position_embedding not in POSITION_EMBEDDINGS:
      raise ConfigError(
          f"ModelConfig.position_embedding={self.position_embedding!r} is not valid; "
          f"valid choices: {', '.join(POSITION_EMBEDDINGS)}")
    if self.mlp_activation not in MLP_ACTIVATIONS:
      raise ConfigError(
          f"ModelConfig.mlp_activation={self.mlp_activation!r} is not valid; valid choices: "
          f"{', '.join(MLP_ACTIVATIONS)}")
    if not isinstance(self.mlp_gated, bool):
      raise ConfigError(f"ModelConfig.mlp_gated={self.mlp_gated!r} must be True or False")
    for name, choices in (("remat", REMAT_POLICIES), ("attention", ATTENTION_IMPLEMENTATIONS)):
      if getattr(self, name) not in choices:
        raise ConfigError(f"ModelConfig.{name}={getattr(self, name)!r} is not valid; valid "
                          f"choices: {', '.join(choices)}")
    if not isinstance(self.scan_layers, bool):
      raise ConfigError(f"ModelConfig.scan_layers={self.scan_layers!r} must be True or False")
    if (not isinstance(self.logits_chunk, int) or isinstance(self.logits_chunk, bool)
        or self.logits_chunk < 0):
      raise ConfigError(f"ModelConfig.logits_chunk={self.logits_chunk!r} must be an integer "
                        ">= 0 (0 = logits at once)")
    if self.position_embedding == "rope" and self.head_dim % 2:
      raise ConfigError(
          f"ModelConfig.head_dim={self.head_dim} must be even (rotary embedding "
          "rotates pairs of features)")
    self._validate_relative_buckets()
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"ModelConfig.dropout_rate={self.dropout_rate!r} must be in [0, 1)")
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if value not in DTYPES:
        raise ConfigError(
            f"ModelConfig.{name}={value!r} is not a valid dtype; valid choices: "
            f"{', '.join(DTYPES)}")
    if not self.rope_max_wavelength > 0:
      raise ConfigError(
          f"ModelConfig.rope_max_wavelength={self.rope_max_wavelength!r} must be > 0")

  def _validate_relative_buckets(self) -> None:
    """T5's bucketing needs an exact bucket per direction and a max distance past them."""
    buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 4:
      raise ConfigError(
          f"ModelConfig.relative_attention_num_buckets={buckets!r} must be an integer >= 4 "
          "(half per direction when bidirectional, each half exact then log-spaced)")
    if (not isinstance(distance, int) or isinstance(distance, bool)
        or distance <= buckets // 2):
      raise ConfigError(
          f"ModelConfig.relative_attention_max_distance={distance!r} must be an integer > "
          f"relative_attention_num_buckets / 2 = {buckets // 2} (the exact buckets)")

  @property
  def encoder_layers(self) -> int:
    """Encoder blocks of the encoder-decoder: num_encoder_layers, or num_layers if 0."""
    return self.num_encoder_layers or self.num_layers

  def with_vocab_size(self, n: int) -> ModelConfig:
    """Returns a copy sized for a vocabulary of `n` ids.

    With vocab_size == 0 (the default) the table gets `n` rounded up to a multiple of
    128, e.g. 32_100 -> 32_128 (the T5 vocabulary's padding). An explicit vocab_size is
    kept, but must hold all `n` ids.
    """
    if n <= 0:
      raise ConfigError(f"vocabulary size must be positive, got {n}")
    if self.vocab_size == 0:
      return dataclasses.replace(self, vocab_size=_round_up(n, VOCAB_MULTIPLE))
    if self.vocab_size < n:
      raise ConfigError(
          f"ModelConfig.vocab_size={self.vocab_size} is smaller than the vocabulary ({n} "
          "ids); set it to 0 to take the size from the vocabulary")
    return self


def _require_vocab(config: ModelConfig) -> None:
  if config.vocab_size <= 0:
    raise ConfigError(
        "ModelConfig.vocab_size is 0; call config.with_vocab_size(vocabulary size) first")


def _mlp_params(config: ModelConfig) -> int:
  """One MLP's matrices: gate, up, down (3*D*F) when gated, up and down (2*D*F) otherwise."""
  return (3 if config.mlp_gated else 2) * config.d_model * config.mlp_dim


def _relative_bias_params(config: ModelConfig) -> int:
  """One stack's relative position bias table (H x buckets, shared by its layers), or 0."""
  if config.position_embedding != "relative":
    return 0
  return config.num_heads * config.relative_attention_num_buckets


def num_params(config: ModelConfig) -> int:
  """The exact number of parameters `Model(config)` creates (no biases anywhere).

  Per block: q, k, v, o projections (4*D*H*K), the MLP (3*D*F gated, 2*D*F not) and two
  RMSNorm scales (2*D). Plus the embedding table (V*D), a final norm (D), an output
  projection (D*V) only when the embeddings are not tied, and with relative positions one
  H x buckets bias table for the stack (T5 shares it across layers, Raffel et al. sec. 2.1).
  The encoder-only model (models/encoder.py) has exactly these parameters too.
  """
  _require_vocab(config)
  d, v = config.d_model, config.vocab_size
  inner = config.num_heads * config.head_dim
  per_block = 4 * d * inner + _mlp_params(config) + 2 * d
  head = 0 if config.tie_embeddings else d * v
  return config.num_layers * per_block + v * d + d + head + _relative_bias_params(config)


def num_matmul_params(config: ModelConfig) -> int:
  """Parameters that take part in a matmul for every token.

  The output projection (tied or not) counts; an untied input embedding and the relative
  bias table are lookups and the norm scales are elementwise, so none of those counts.
  """
  _require_vocab(config)
  d = config.d_model
  inner = config.num_heads * config.head_dim
  per_block = 4 * d * inner + _mlp_params(config)
  return config.num_layers * per_block + d * config.vocab_size


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward), for MFU.

  The standard estimate of PaLM (Chowdhery et al. 2022, App. B): 6*N for the matmuls
  (2 forward, 4 backward per parameter) plus 12*L*H*K*T for the attention scores and
  the weighted sum over T = seq_len keys. The attention term counts the full LxL score
  matrix, as the kernels compute it, not the causal half. N = `num_matmul_params`. The
  relative position bias (a gather and an add per score) is left out, like the softmax.
  """
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * seq_len
  return 6.0 * num_matmul_params(config) + float(attention)


# Encoder-decoder (models/encdec.py) sizes. The encoder runs on the inputs, the decoder on
# the targets, so "per token" means per token of the example (inputs + targets), the
# unit in which Wang et al. 2022 (Table 1) match an 11B encoder-decoder to a 4.8B
# decoder-only model: each token passes through only one of the two stacks.


def _encdec_matmul_parts(config: ModelConfig) -> tuple[int, int]:
  """(matmul parameters applied per encoder token, per decoder token).

  Encoder block: q, k, v, o and the MLP. Decoder block: the same plus the
  cross-attention, whose k and v projections read the encoder output (so they run once
  per encoder token) and whose q and o run per decoder token. The output projection
  (tied or not) runs per decoder token.
  """
  d = config.d_model
  attention = d * config.num_heads * config.head_dim  # one of q, k, v, o
  mlp = _mlp_params(config)
  cross_kv, cross_qo = 2 * attention, 2 * attention
  per_encoder_token = config.encoder_layers * (4 * attention + mlp) + config.num_layers * cross_kv
  per_decoder_token = (config.num_layers * (4 * attention + cross_qo + mlp)
                       + d * config.vocab_size)
  return per_encoder_token, per_decoder_token


def encdec_num_params(config: ModelConfig) -> int:
  """The exact number of parameters `encdec.Model(config)` creates (no biases anywhere).

  Encoder block: 4*D*H*K + MLP (3*D*F gated, 2*D*F not) + 2*D (two norms). Decoder
  block: 8*D*H*K (self and cross attention) + MLP + 3*D (three norms). Plus the shared
  embedding (V*D), a final norm per stack (2*D), an output projection (D*V) only when
  embeddings are untied, and with relative positions one H x buckets table per stack
  (T5X t5/network.py: `relpos_bias` in Encoder and in Decoder; cross-attention has none).
  Wang et al. 2022's shapes (Table 1: D 4096, 64 heads of 64, F 10240 gated, 24 + 24
  layers, V 32128, tied) give 11.004B, their "11.0B" encoder-decoder; T5.1.1-base
  (gin/size/base_t5_1_1.gin: untied, GeGLU, relative) gives 247,577,856.
  """
  _require_vocab(config)
  d, v = config.d_model, config.vocab_size
  inner = config.num_heads * config.head_dim
  mlp = _mlp_params(config)
  encoder = config.encoder_layers * (4 * d * inner + mlp + 2 * d) + d
  decoder_ = config.num_layers * (8 * d * inner + mlp + 3 * d) + d
  head = 0 if config.tie_embeddings else d * v
  return encoder + decoder_ + v * d + head + 2 * _relative_bias_params(config)


def encdec_num_matmul_params(config: ModelConfig) -> int:
  """Parameters of the encoder-decoder that take part in a matmul (see num_matmul_params)."""
  _require_vocab(config)
  per_encoder_token, per_decoder_token = _encdec_matmul_parts(config)
  return per_encoder_token + per_decoder_token  # each matrix sits in exactly one part


def encdec_flops_per_token(config: ModelConfig, encoder_length: int, decoder_length: int) -> float:
  """Training FLOPs (forward + backward) of one example, per token of inputs + targets.

  The PaLM estimate (see `flops_per_token`) applied per stack: 6 FLOPs per matmul
  parameter per token it runs on (S encoder, T decoder tokens), plus 12*H*K per layer and
  (query, key) pair of the full score matrices: S*S in the encoder, T*T in the decoder's
  self-attention, T*S in its cross-attention. Divided by S + T.
  """
  _require_vocab(config)
  s, t = int(encoder_length), int(decoder_length)
  per_encoder_token, per_decoder_token = _encdec_matmul_parts(config)
  matmul = 6.0 * (s * per_encoder_token + t * per_decoder_token)
  pairs = config.encoder_layers * s * s + config.num_layers * (t * t + t * s)
  attention = 12.0 * config.num_heads * config.head_dim * pairs
  return (matmul + attention) / (s + t)
