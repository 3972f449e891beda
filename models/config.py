"""The model's hyper-parameters: one frozen dataclass, bound from gin/size/*.gin.

Only shapes and numerics of the network live here. Training settings (z-loss, learning
rate, ...) belong to the training config; the vocabulary size normally comes from the
vocabulary (`with_vocab_size`). This module imports neither jax nor seqio, so configs can
be built and validated anywhere (GPU benchmark hosts carry no TensorFlow or seqio).
"""
from __future__ import annotations

import dataclasses

import gin

from objectax.data.registry import ConfigError

# Activation and parameter dtypes a user may name. float16 is left out on purpose: without
# loss scaling it under/overflows in training, and bfloat16 covers the fast path.
DTYPES = ("float32", "bfloat16")

# Vocabulary rows are padded to a multiple of this so that the embedding and logits
# matmuls tile evenly (TPU MXU/GPU tensor cores like multiples of 128).
VOCAB_MULTIPLE = 128


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a decoder-only Transformer (pre-norm, RoPE, SwiGLU, RMSNorm).

  Attributes:
    vocab_size: rows of the embedding table. 0 = take it from the vocabulary through
      `with_vocab_size`, which rounds up to a multiple of 128.
    d_model: width D of the residual stream.
    num_heads: attention heads H.
    head_dim: width K of one head (q/k/v); must be even for the rotary embedding.
    mlp_dim: hidden width F of the gated MLP.
    num_layers: number of decoder blocks.
    dropout_rate: dropout on the embeddings and on each residual branch.
    dtype: activation dtype, one of DTYPES. Norm statistics, softmax and logits are
      always computed in float32.
    param_dtype: storage dtype of the parameters, one of DTYPES.
    rope_max_wavelength: the base of the rotary embedding (RoFormer, Su et al. 2021).
    tie_embeddings: use the input embedding table for the output logits (T5 v1.0 style).
  """

  vocab_size: int = 0
  d_model: int = 256
  num_heads: int = 4
  head_dim: int = 64
  mlp_dim: int = 1024
  num_layers: int = 4
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  rope_max_wavelength: float = 10_000.0
  tie_embeddings: bool = True

  def __post_init__(self):
    for name in ("d_model", "num_heads", "head_dim", "mlp_dim", "num_layers"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"ModelConfig.{name}={value!r} must be a positive integer")
    if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
      raise ConfigError(
          f"ModelConfig.vocab_size={self.vocab_size!r} must be >= 0 "
          "(0 = take it from the vocabulary)")
    if self.head_dim % 2:
      raise ConfigError(
          f"ModelConfig.head_dim={self.head_dim} must be even (rotary embedding "
          "rotates pairs of features)")
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


def num_params(config: ModelConfig) -> int:
  """The exact number of parameters `Model(config)` creates (no biases anywhere).

  Per block: q, k, v, o projections (4*D*H*K), gate/up/down of the SwiGLU MLP (3*D*F)
  and two RMSNorm scales (2*D). Plus the embedding table (V*D), a final norm (D), and an
  output projection (D*V) only when the embeddings are not tied.
  """
  _require_vocab(config)
  d, v = config.d_model, config.vocab_size
  inner = config.num_heads * config.head_dim
  per_block = 4 * d * inner + 3 * d * config.mlp_dim + 2 * d
  head = 0 if config.tie_embeddings else d * v
  return config.num_layers * per_block + v * d + d + head


def num_matmul_params(config: ModelConfig) -> int:
  """Parameters that take part in a matmul for every token.

  The output projection (tied or not) counts; an untied input embedding is a lookup and
  the norm scales are elementwise, so neither counts.
  """
  _require_vocab(config)
  d = config.d_model
  inner = config.num_heads * config.head_dim
  per_block = 4 * d * inner + 3 * d * config.mlp_dim
  return config.num_layers * per_block + d * config.vocab_size


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward), for MFU.

  The standard estimate of PaLM (Chowdhery et al. 2022, App. B): 6*N for the matmuls
  (2 forward, 4 backward per parameter) plus 12*L*H*K*T for the attention scores and
  the weighted sum over T = seq_len keys. The attention term counts the full LxL score
  matrix, as the kernels compute it, not the causal half. N = `num_matmul_params`.
  """
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * seq_len
  return 6.0 * num_matmul_params(config) + float(attention)
