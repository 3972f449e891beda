"""Linen building blocks of the decoder: RMSNorm, embedding, RoPE, attention, SwiGLU, Block.

Shape letters: B batch, L length, D d_model, H heads, K head_dim, F mlp_dim, V vocab,
R = K/2 rotation pairs. Every parameter is created through `nn.with_logical_partitioning`
with names from `LOGICAL_AXES`; the sharding rules (launch/) map those names onto mesh
axes. Activations are constrained only at block boundaries, to ("batch", "length",
"embed"). No biases anywhere (T5 v1.1 / PaLM practice).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from objectax.models.config import ModelConfig

# The closed list of logical axis names. Parameters use embed, mlp, heads, kv, vocab,
# norm; activations use batch, length, embed; "layers" is reserved for scanned stacks.
LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "vocab", "norm", "layers")
ACTIVATION_AXES = ("batch", "length", "embed")

Initializer = Callable[..., jax.Array]


def _dtype(name: str) -> jnp.dtype:
  return jnp.dtype(name)


def _param(module: nn.Module, name: str, init: Initializer, shape: tuple[int, ...],
           names: tuple[str, ...], config: ModelConfig) -> jax.Array:
  """Creates a parameter boxed with logical axis names (checked against LOGICAL_AXES)."""
  assert len(names) == len(shape) and all(n in LOGICAL_AXES for n in names), names
  return module.param(name, nn.with_logical_partitioning(init, names), shape,
                      _dtype(config.param_dtype))


def constrain(x_BLD: jax.Array) -> jax.Array:
  """Pins a residual-stream activation to ("batch", "length", "embed"); a no-op without rules."""
  return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)


class RMSNorm(nn.Module):
  """Root-mean-square norm with a learned scale (Zhang & Sennrich 2019), in float32."""

  config: ModelConfig
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    d = x_BLD.shape[-1]
    scale_D = _param(self, "scale", nn.initializers.ones, (d,), ("norm",), self.config)
    x32_BLD = x_BLD.astype(jnp.float32)
    mean_square_BL1 = jnp.mean(jnp.square(x32_BLD), axis=-1, keepdims=True)
    y_BLD = x32_BLD * jax.lax.rsqrt(mean_square_BL1 + self.epsilon)
    return (y_BLD * scale_D.astype(jnp.float32)).astype(_dtype(self.config.dtype))


class Embed(nn.Module):
  """Token embedding; `attend` reuses the table for tied output logits.

  The table is initialised N(0, 1) and logits are scaled by 1/sqrt(D), as T5X does for
  tied embeddings, so the initial logits have unit scale.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.embedding_VD = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                               (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg)

  def __call__(self, tokens_BL: jax.Array) -> jax.Array:
    x_BLD = jnp.take(self.embedding_VD, tokens_BL, axis=0)
    return x_BLD.astype(_dtype(self.config.dtype))

  def attend(self, x_BLD: jax.Array) -> jax.Array:
    """Tied output logits in float32 (stability of the softmax over V)."""
    logits_BLV = jnp.einsum("BLD,VD->BLV", x_BLD.astype(jnp.float32),
                            self.embedding_VD.astype(jnp.float32))
    return logits_BLV / jnp.sqrt(jnp.float32(self.config.d_model))


def apply_rope(x_BLHK: jax.Array, positions_BL: jax.Array, max_wavelength: float) -> jax.Array:
  """Rotary position embedding (Su et al. 2021) at explicit integer positions.

  Positions come from the batch (`decoder_positions`), so packed examples restart at 0
  and see exactly the rotations they would see alone. Half-split ("rotate half") layout:
  feature r is paired with feature r + K/2. Computed in float32.
  """
  k = x_BLHK.shape[-1]
  fraction_R = 2.0 * jnp.arange(k // 2, dtype=jnp.float32) / k
  timescale_R = jnp.float32(max_wavelength) ** fraction_R
  angle_BLR = positions_BL.astype(jnp.float32)[:, :, None] / timescale_R
  sin_BL1R = jnp.sin(angle_BLR)[:, :, None, :]
  cos_BL1R = jnp.cos(angle_BLR)[:, :, None, :]
  first_BLHR, second_BLHR = jnp.split(x_BLHK.astype(jnp.float32), 2, axis=-1)
  rotated_BLHK = jnp.concatenate(
      [first_BLHR * cos_BL1R - second_BLHR * sin_BL1R,
       second_BLHR * cos_BL1R + first_BLHR * sin_BL1R], axis=-1)
  return rotated_BLHK.astype(x_BLHK.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with RoPE and a boolean mask (B, 1, L, L).

  Uses `jax.nn.dot_product_attention` with its default (XLA) implementation, which runs
  on every backend, scales by 1/sqrt(K) and does its softmax in float32. Masked logits are
  replaced by a large negative finite number, so their probability underflows to
  exactly 0 and no gradient reaches a masked key (tests/models/test_masks.py).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD: jax.Array, mask_B1LL: jax.Array, positions_BL: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = _dtype(cfg.dtype)
    d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
    # LeCun-normal over the contracted axes: fan_in = D for q/k/v, H*K for the output.
    in_init = nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
    out_init = nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
    qkv_names = ("embed", "heads", "kv")
    wq_DHK = _param(self, "query", in_init, (d, h, k), qkv_names, cfg).astype(dtype)
    wk_DHK = _param(self, "key", in_init, (d, h, k), qkv_names, cfg).astype(dtype)
    wv_DHK = _param(self, "value", in_init, (d, h, k), qkv_names, cfg).astype(dtype)
    wo_HKD = _param(self, "out", out_init, (h, k, d), ("heads", "kv", "embed"), cfg).astype(dtype)

    x_BLD = x_BLD.astype(dtype)
    q_BLHK = jnp.einsum("BLD,DHK->BLHK", x_BLD, wq_DHK)
    k_BLHK = jnp.einsum("BLD,DHK->BLHK", x_BLD, wk_DHK)
    v_BLHK = jnp.einsum("BLD,DHK->BLHK", x_BLD, wv_DHK)
    q_BLHK = apply_rope(q_BLHK, positions_BL, cfg.rope_max_wavelength)
    k_BLHK = apply_rope(k_BLHK, positions_BL, cfg.rope_max_wavelength)
    out_BLHK = jax.nn.dot_product_attention(q_BLHK, k_BLHK, v_BLHK, mask=mask_B1LL)
    return jnp.einsum("BLHK,HKD->BLD", out_BLHK, wo_HKD)


class Mlp(nn.Module):
  """Gated MLP with SiLU gate, SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer")."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = _dtype(cfg.dtype)
    d, f = cfg.d_model, cfg.mlp_dim
    init = nn.initializers.lecun_normal()
    gate_DF = _param(self, "gate", init, (d, f), ("embed", "mlp"), cfg).astype(dtype)
    up_DF = _param(self, "up", init, (d, f), ("embed", "mlp"), cfg).astype(dtype)
    down_FD = _param(self, "down", init, (f, d), ("mlp", "embed"), cfg).astype(dtype)
    x_BLD = x_BLD.astype(dtype)
    hidden_BLF = (jax.nn.silu(jnp.einsum("BLD,DF->BLF", x_BLD, gate_DF))
                  * jnp.einsum("BLD,DF->BLF", x_BLD, up_DF))
    return jnp.einsum("BLF,FD->BLD", hidden_BLF, down_FD)


class Block(nn.Module):
  """Pre-norm decoder block: x + Attn(Norm(x)), then x + Mlp(Norm(x)).

  Dropout (config.dropout_rate) acts on each residual branch; `jax.nn.dot_product_attention`
  has no attention-probability dropout, so there is none.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD: jax.Array, mask_B1LL: jax.Array, positions_BL: jax.Array,
               deterministic: bool = True) -> jax.Array:
    cfg = self.config
    x_BLD = constrain(x_BLD)
    h_BLD = Attention(cfg, name="attention")(RMSNorm(cfg, name="attention_norm")(x_BLD),
                                             mask_B1LL, positions_BL)
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    h_BLD = Mlp(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x_BLD))
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    return constrain(x_BLD)


def _dropout(x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
  """Dropout that needs no 'dropout' rng when it cannot act (rate 0 or eval)."""
  if rate == 0.0 or deterministic:
    return x
  return nn.Dropout(rate=rate)(x, deterministic=False)
