"""Linen building blocks: RMSNorm, embedding, positions, self/cross attention, MLP, blocks.

Positions are RoPE (the default) or T5's relative position bias (`RelativePositionBias`,
one table per stack, built by the model and passed to every block) or none, as
`ModelConfig.position_embedding` says; the MLP is gated (SwiGLU, GeGLU, ReGLU) or T5
v1.0's two-matrix one, as `mlp_activation` and `mlp_gated` say.

Shape letters: B batch, L length, S key length (the encoder's, in cross-attention),
D d_model, H heads, K head_dim, F mlp_dim, V vocab, R = K/2 rotation pairs, N relative
position buckets. Every parameter is created through `nn.with_logical_partitioning` with
names from `LOGICAL_AXES`; the sharding rules (launch/) map those names onto mesh axes.
Activations are constrained only at block boundaries, to ("batch", "length", "embed").
No biases anywhere (T5 v1.1 / PaLM practice), apart from the relative position bias.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from objectax.models.registry import Registry
from objectax.models.config import ModelConfig

# The closed list of logical axis names. Parameters use embed, mlp, heads, kv, vocab,
# norm, relpos_buckets (T5X's name for the relative bias table's second axis; no sharding
# rule lists it, so it stays replicated); activations use batch, length, embed; "layers"
# is reserved for scanned stacks.
LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "vocab", "norm",
                "relpos_buckets", "layers")
ACTIVATION_AXES = ("batch", "length", "embed")

# ModelConfig.mlp_activation -> function (the names are validated in config.MLP_ACTIVATIONS).
# "gelu" is the tanh approximation: T5X's MlpBlock resolves "gelu" to flax.linen.gelu,
# which is jax.nn.gelu with approximate=True (T5.1.1's GeGLU, Wang et al. 2022).
MLP_ACTIVATIONS: Registry[Callable[[jax.Array], jax.Array]] = Registry("mlp activation")
MLP_ACTIVATIONS.add("silu", jax.nn.silu)
MLP_ACTIVATIONS.add("gelu", lambda x: jax.nn.gelu(x, approximate=True))
MLP_ACTIVATIONS.add("relu", jax.nn.relu)

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
    scale_11D = scale_D.astype(jnp.float32).reshape((1,) * (y_BLD.ndim - 1) + (d,))
    return (y_BLD * scale_11D).astype(_dtype(self.config.dtype))


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
    """Tied output logits, float32 (stability of the softmax over V); see `project`."""
    return project(x_BLD, *output_kernel(self, None))


def untied_head(module: nn.Module, config: ModelConfig) -> jax.Array | None:
  """The D x V output kernel "head" of an untied model, created on `module`; None if tied.

  T5.1.1 / T5X `logits_dense`: a separate kernel (fan-in init) whose logits are not
  rescaled; only tied logits get 1/sqrt(D) (`Embed.attend`).
  """
  if config.tie_embeddings:
    return None
  return module.param("head", nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                           ("embed", "vocab")),
                      (config.d_model, config.vocab_size), _dtype(config.param_dtype))


def output_logits(embed: Embed, head_DV: jax.Array | None, x_BLD: jax.Array) -> jax.Array:
  """float32 logits: through the tied embedding, or the untied head when there is one."""
  return project(x_BLD, *output_kernel(embed, head_DV))


def output_kernel(embed: Embed, head_DV: jax.Array | None) -> tuple[jax.Array, float | None]:
  """(D x V kernel in the activation dtype, divisor or None) with logits = x @ kernel / divisor.

  Tied: the embedding table transposed, divided by sqrt(D) after the matmul (T5X). Untied:
  the head, not rescaled.
  """
  dtype = _dtype(embed.config.dtype)
  if head_DV is None:
    return embed.embedding_VD.T.astype(dtype), float(np.sqrt(embed.config.d_model))
  return head_DV.astype(dtype), None


def project(x_BLD: jax.Array, kernel_DV: jax.Array, divisor: float | None) -> jax.Array:
  """float32 logits x @ kernel (/ divisor): operands in the activation dtype (bfloat16 runs
  the largest matmul of a big-vocabulary model on the fast path), products summed in
  float32, as MaxText and T5X do."""
  logits_BLV = jnp.einsum("BLD,DV->BLV", x_BLD.astype(kernel_DV.dtype), kernel_DV,
                          preferred_element_type=jnp.float32)
  return logits_BLV if divisor is None else logits_BLV / jnp.float32(divisor)


def apply_rope(x_BLHK: jax.Array, positions_BL: jax.Array, max_wavelength: float) -> jax.Array:
  """Rotary position embedding (Su et al. 2021) at explicit integer positions.

  Positions come from the batch (`decoder_positions`), so packed examples restart at 0
  and see exactly the rotations they would see alone. Half-split ("rotate half") layout:
  feature r is paired with feature r + K/2. Computed in float32.
  """
  k = x_BLHK.shape[-1]
  fraction_R = 2.0 * jnp.arange(k // 2, dtype=jnp.float32) / k
  timescale_R = jnp.float32(max_wavelength) ** fraction_R
  angle_BLR = positions_BL.astype(jnp.float32)[:, :, None] / timescale_R[None, None, :]
  sin_BL1R = jnp.sin(angle_BLR)[:, :, None, :]
  cos_BL1R = jnp.cos(angle_BLR)[:, :, None, :]
  first_BLHR, second_BLHR = jnp.split(x_BLHK.astype(jnp.float32), 2, axis=-1)
  rotated_BLHK = jnp.concatenate(
      [first_BLHR * cos_BL1R - second_BLHR * sin_BL1R,
       second_BLHR * cos_BL1R + first_BLHR * sin_BL1R], axis=-1)
  return rotated_BLHK.astype(x_BLHK.dtype)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bucket of each relative position = key position - query position (numpy, int32).

  Raffel et al. 2020 sec. 2.1 (Mesh TF / T5X `RelativePositionBiases._relative_position_bucket`,
  same float32 arithmetic): bidirectional, half the buckets are for keys after the query;
  causal, every key after the query falls in bucket 0 (it is masked anyway). Within a
  direction of E buckets (buckets / 2 bidirectional, all of them causal), distances
  n < max_exact = E // 2 get one bucket each, larger ones max_exact + floor(log(n /
  max_exact) / log(max_distance / max_exact) * (E - max_exact)), capped at E - 1.

  With the defaults (32 buckets, max distance 128), bidirectional: distance 0..7 -> 0..7,
  8..11 -> 8, 12..15 -> 9, 16..22 -> 10, 32 -> 12, 64 -> 14, >= 91 -> 15, keys after the
  query +16:
  >>> relative_position_bucket(np.array([-1, 0, 1, -12, 12, -200]), True, 32, 128)
  array([ 1,  0, 17,  9, 25, 15], dtype=int32)
  """
  n = -np.asarray(relative_position, np.int64)  # distance back from the query
  bucket = np.zeros(n.shape, np.int32)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(np.int32) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  # T5X adds float32 eps inside the log; at the defaults it moves no bucket (checked for
  # |distance| <= 300 against float64 without it).
  with np.errstate(divide="ignore"):
    log_ratio = (np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
                 / np.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return (bucket + np.where(n < max_exact, n, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
  """T5's learned attention bias per (head, relative-position bucket), for one stack.

  One table of shape (H, N), logical axes ("heads", "relpos_buckets"), initialised as in
  T5X (variance_scaling(1, fan_avg, uniform)); the model builds one per stack and hands
  its output to every block (T5 shares it across layers, Raffel et al. 2020 sec. 2.1).

  The distances come from the batch's positions, so packed examples (positions restart
  at 0 in each segment) get exactly the bias they get alone. Relative positions are
  clipped to +-max_distance, which all T5 buckets saturate at, and looked up in a table
  of their buckets computed with numpy at trace time (as T5X computes its buckets).

  Attributes:
    config: num_heads, relative_attention_num_buckets / _max_distance, dtype.
    bidirectional: True for encoders (keys after the query get their own buckets);
      False for decoders. T5X uses False for every decoder-only model, prefix LM included
      (t5x/examples/decoder_only/network.py: `relative_embedding(l, l, False)`).
  """

  config: ModelConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions_BL: jax.Array,
               key_positions_BS: jax.Array | None = None) -> jax.Array:
    """bias_BHLS[b, h, q, k] = table[h, bucket(key_position - query_position)]."""
    cfg = self.config
    num_buckets, max_distance = (cfg.relative_attention_num_buckets,
                                 cfg.relative_attention_max_distance)
    init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
    table_HN = _param(self, "table", init, (cfg.num_heads, num_buckets),
                      ("heads", "relpos_buckets"), cfg)
    if key_positions_BS is None:
      key_positions_BS = query_positions_BL
    relative_BLS = (key_positions_BS[:, None, :].astype(jnp.int32)
                    - query_positions_BL[:, :, None].astype(jnp.int32))
    bucket_of_R = jnp.asarray(relative_position_bucket(
        np.arange(-max_distance, max_distance + 1), self.bidirectional, num_buckets,
        max_distance))
    bucket_BLS = bucket_of_R[jnp.clip(relative_BLS, -max_distance, max_distance) + max_distance]
    bias_BLSH = table_HN.astype(_dtype(cfg.dtype)).T[bucket_BLS]
    return jnp.transpose(bias_BLSH, (0, 3, 1, 2))


class Attention(nn.Module):
  """Multi-head attention with a boolean mask (B, 1, L, S): self- or cross-attention.

  Self-attention (kv_BSD None): queries, keys and values all come from x_BLD (S = L);
  with use_rope, RoPE rotates q and k at `positions_BL`; `bias_BHLS` (T5's relative
  position bias, `RelativePositionBias`) is added to the scaled logits when given.
  Cross-attention (kv_BSD given, the encoder output of an encoder-decoder): queries from
  x_BLD, keys and values from kv_BSD; built with use_rope=False and given no bias, since
  query and key positions then index two different sequences and their difference means
  nothing (T5 likewise has no position bias in its encoder-decoder attention).

  Uses `jax.nn.dot_product_attention` with its default (XLA) implementation, which runs
  on every backend, scales by 1/sqrt(K) and does its softmax in float32. Masked logits are
  replaced by a large negative finite number, so their probability underflows to
  exactly 0 and no gradient reaches a masked key (tests/models/test_masks.py).
  """

  config: ModelConfig
  use_rope: bool = True
  # Decoding (> 0): self-attention keeps the keys and values of every position in a
  # "cache" collection of this many slots, slot = position: each call writes its tokens'
  # at their `positions_BL` and attends to all slots under `mask_B1LS` (B, 1, L, slots).
  cache_length: int = 0
  # Cross-attention while decoding: the keys and values of `kv_BSD` are cached by the call
  # that passes it and read from the cache by the calls that pass kv_BSD=None.
  cross: bool = False

  @nn.compact
  def __call__(self, x_BLD: jax.Array, mask_B1LS: jax.Array,
               positions_BL: jax.Array | None = None,
               kv_BSD: jax.Array | None = None,
               bias_BHLS: jax.Array | None = None) -> jax.Array:
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
    if self.cross and self.cache_length and kv_BSD is None:  # decoding: the cached encoder
      k_BSHK = self.get_variable("cache", "key")
      v_BSHK = self.get_variable("cache", "value")
    else:
      kv_BSD = x_BLD if kv_BSD is None else kv_BSD.astype(dtype)
      k_BSHK = jnp.einsum("BSD,DHK->BSHK", kv_BSD, wk_DHK)
      v_BSHK = jnp.einsum("BSD,DHK->BSHK", kv_BSD, wv_DHK)
      if self.cross and self.cache_length:
        self.put_variable("cache", "key", k_BSHK)
        self.put_variable("cache", "value", v_BSHK)
    if self.use_rope:
      if positions_BL is None or q_BLHK.shape[1] != k_BSHK.shape[1]:
        raise ValueError("RoPE needs positions and keys from the queries' own sequence")
      q_BLHK = apply_rope(q_BLHK, positions_BL, cfg.rope_max_wavelength)
      k_BSHK = apply_rope(k_BSHK, positions_BL, cfg.rope_max_wavelength)
    if self.cache_length and not self.cross:
      k_BSHK, v_BSHK = self._cached(k_BSHK, v_BSHK, positions_BL)
    out_BLHK = dot_product_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS, bias_BHLS,
                                     cfg.attention)
    return jnp.einsum("BLHK,HKD->BLD", out_BLHK, wo_HKD)

  def _cached(self, k_BLHK: jax.Array, v_BLHK: jax.Array,
              positions_BL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes this call's keys and values into their position's slots of the cache (a
    scatter: each row at its own positions, in place; a position past the cache is
    dropped) and returns every slot's."""
    b, _, h, k = k_BLHK.shape
    shape = (b, self.cache_length, h, k)
    cached_k = self.variable("cache", "key", jnp.zeros, shape, k_BLHK.dtype)
    cached_v = self.variable("cache", "value", jnp.zeros, shape, v_BLHK.dtype)
    rows_BL = jnp.broadcast_to(jnp.arange(b)[:, None], positions_BL.shape)
    for cached, new_BLHK in ((cached_k, k_BLHK), (cached_v, v_BLHK)):
      cached.value = cached.value.at[rows_BL, positions_BL].set(new_BLHK, mode="drop")
    return cached_k.value, cached_v.value


# A masked logit in the cuDNN path: finite, so a row with no visible key (cross-attention
# of decoder padding) gives a uniform average instead of NaN, and far enough below any
# real logit that exp() underflows to exactly 0, as in the XLA path.
_CUDNN_MASKED = -1e9
_warned: set[str] = set()


def _warn_once(message: str) -> None:
  if message not in _warned:
    _warned.add(message)
    print(f"objectax: {message}", flush=True)


def cudnn_unsupported(q_BLHK: jax.Array) -> str | None:
  """Why the cuDNN fused attention cannot run these queries here, or None if it can.

  cuDNN's flash attention (jax.nn.dot_product_attention(implementation="cudnn")) needs an
  NVIDIA GPU, float16/bfloat16 operands and a head width that is a multiple of 8, at most
  128 (cuDNN 9's fused kernels).
  """
  platform = jax.devices()[0].platform
  if platform != "gpu":
    return f"the backend is {platform}, not gpu"
  if q_BLHK.dtype not in (jnp.bfloat16, jnp.float16):
    return f"activations are {q_BLHK.dtype} (cuDNN needs bfloat16 or float16)"
  k = q_BLHK.shape[-1]
  if k % 8 or k > 128:
    return f"head_dim {k} is not a multiple of 8 up to 128"
  return None


def dot_product_attention(q_BLHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array,
                          mask_B1LS: jax.Array, bias_BHLS: jax.Array | None,
                          implementation: str) -> jax.Array:
  """Softmax attention with a boolean mask (B, 1, L, S) and an optional additive bias.

  "xla": `jax.nn.dot_product_attention` with mask and bias (every backend). "cudnn": the
  cuDNN fused kernel; the mask, which carries packing (segment ids), padding and
  causality, becomes an additive bias (0 or -1e9), added to T5's relative bias if any.
  Where cuDNN cannot run (`cudnn_unsupported`) the XLA path runs instead, with one warning.
  """
  if implementation == "cudnn":
    reason = cudnn_unsupported(q_BLHK)
    if reason is None:
      bias_B_LS = jnp.where(mask_B1LS, 0.0, _CUDNN_MASKED).astype(q_BLHK.dtype)
      if bias_BHLS is not None:
        bias_B_LS = bias_B_LS + bias_BHLS.astype(q_BLHK.dtype)
      try:
        return jax.nn.dot_product_attention(q_BLHK, k_BSHK, v_BSHK, bias=bias_B_LS,
                                            implementation="cudnn")
      except (ValueError, NotImplementedError, RuntimeError) as e:  # this cuDNN refuses it
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    _warn_once(f"ModelConfig.attention='cudnn' falls back to 'xla': {reason}")
  return jax.nn.dot_product_attention(q_BLHK, k_BSHK, v_BSHK, bias=bias_BHLS, mask=mask_B1LS)


class Mlp(nn.Module):
  """The feed-forward block: gated (GLU variants) or T5 v1.0's two-matrix MLP.

  Gated (config.mlp_gated, the default): act(x W_gate) * (x W_up) W_down, i.e. SwiGLU,
  GeGLU or ReGLU for mlp_activation silu, gelu, relu (Shazeer 2020, "GLU Variants
  Improve Transformer"; T5X's MlpBlock with activations (act, "linear")). Ungated:
  act(x W_up) W_down (T5 v1.0: relu, T5X activations ("relu",)).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = _dtype(cfg.dtype)
    d, f = cfg.d_model, cfg.mlp_dim
    activation = MLP_ACTIVATIONS.get(cfg.mlp_activation)
    init = nn.initializers.lecun_normal()
    # Creation order (gate, up, down) fixes each parameter's init rng: keep it.
    if cfg.mlp_gated:
      gate_DF = _param(self, "gate", init, (d, f), ("embed", "mlp"), cfg).astype(dtype)
    up_DF = _param(self, "up", init, (d, f), ("embed", "mlp"), cfg).astype(dtype)
    down_FD = _param(self, "down", init, (f, d), ("mlp", "embed"), cfg).astype(dtype)
    x_BLD = x_BLD.astype(dtype)
    if cfg.mlp_gated:
      hidden_BLF = (activation(jnp.einsum("BLD,DF->BLF", x_BLD, gate_DF))
                    * jnp.einsum("BLD,DF->BLF", x_BLD, up_DF))
    else:
      hidden_BLF = activation(jnp.einsum("BLD,DF->BLF", x_BLD, up_DF))
    return jnp.einsum("BLF,FD->BLD", hidden_BLF, down_FD)


class Block(nn.Module):
  """Pre-norm decoder block: x + Attn(Norm(x)), then x + Mlp(Norm(x)).

  Dropout (config.dropout_rate) acts on each residual branch; `jax.nn.dot_product_attention`
  has no attention-probability dropout, so there is none. RoPE rotates the attention when
  config.position_embedding is "rope"; `bias_BHLL` is the stack's relative position bias
  when it is "relative" (None otherwise).
  """

  config: ModelConfig
  scanned: bool = False  # inside nn.scan: return (x, None), the carry and no output
  cache_length: int = 0  # decoding: the attention's cache slots (`Attention`)

  @nn.compact
  def __call__(self, x_BLD: jax.Array, mask_B1LL: jax.Array, positions_BL: jax.Array,
               deterministic: bool = True, bias_BHLL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    x_BLD = constrain(x_BLD)
    h_BLD = Attention(cfg, use_rope=_uses_rope(cfg), cache_length=self.cache_length,
                      name="attention")(
        RMSNorm(cfg, name="attention_norm")(x_BLD), mask_B1LL, positions_BL,
        bias_BHLS=bias_BHLL)
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    h_BLD = Mlp(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x_BLD))
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    x_BLD = constrain(x_BLD)
    return (x_BLD, None) if self.scanned else x_BLD


class DecoderBlock(nn.Module):
  """Pre-norm decoder block of an encoder-decoder (Vaswani et al. 2017, T5 v1.1 layout).

  x + SelfAttn(Norm(x)) (causal; RoPE or the decoder stack's relative bias `bias_BHLL`),
  then x + CrossAttn(Norm(x), encoded) (no position information), then x + Mlp(Norm(x));
  dropout on each residual branch as in `Block`.

  A query whose cross-attention row allows no key (decoder padding, or an example with
  empty inputs) gets a zero cross-attention update instead of the uniform average over
  all keys that `jax.nn.dot_product_attention` returns for an all-masked row: that
  average would reach other packed segments and padding.
  """

  config: ModelConfig
  scanned: bool = False  # inside nn.scan: return (x, None)
  cache_length: int = 0  # decoding: self-attention cache slots; encoded_BSD None = cached

  @nn.compact
  def __call__(self, x_BLD: jax.Array, encoded_BSD: jax.Array | None, self_mask_B1LL: jax.Array,
               cross_mask_B1LS: jax.Array, positions_BL: jax.Array,
               deterministic: bool = True, bias_BHLL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    x_BLD = constrain(x_BLD)
    h_BLD = Attention(cfg, use_rope=_uses_rope(cfg), cache_length=self.cache_length,
                      name="self_attention")(
        RMSNorm(cfg, name="self_attention_norm")(x_BLD), self_mask_B1LL, positions_BL,
        bias_BHLS=bias_BHLL)
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    h_BLD = Attention(cfg, use_rope=False, cache_length=self.cache_length, cross=True,
                      name="cross_attention")(
        RMSNorm(cfg, name="cross_attention_norm")(x_BLD), cross_mask_B1LS,
        kv_BSD=encoded_BSD)
    has_key_BL1 = jnp.any(cross_mask_B1LS[:, 0], axis=-1)[:, :, None]
    h_BLD = jnp.where(has_key_BL1, h_BLD, jnp.zeros_like(h_BLD))
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    h_BLD = Mlp(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x_BLD))
    x_BLD = x_BLD + _dropout(h_BLD, cfg.dropout_rate, deterministic)
    x_BLD = constrain(x_BLD)
    return (x_BLD, None) if self.scanned else x_BLD


def _uses_rope(config: ModelConfig) -> bool:
  return config.position_embedding == "rope"


def _dropout(x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
  """Dropout that needs no 'dropout' rng when it cannot act (rate 0 or eval)."""
  if rate == 0.0 or deterministic:
    return x
  return nn.Dropout(rate=rate)(x, deterministic=False)


# --- Stacks of blocks: a Python loop, or one nn.scan; optionally rematerialised. --------

SCAN_PREFIX = "scan_"  # a scanned stack's parameters live under scan_<stack name>

_REMAT_POLICIES = {
    "full": None,  # jax.checkpoint's default: save nothing, recompute the whole block
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# Index of `deterministic` in each block's __call__, counting `self` as 0 (nn.remat's
# static_argnums convention): a Python bool, so it must be static under remat.
_DETERMINISTIC_ARG = {"Block": 4, "DecoderBlock": 6}


def stack(config: ModelConfig, block_cls: type, num_layers: int, name: str,
          cache_length: int = 0) -> list[nn.Module] | nn.Module:
  """The blocks of one stack, as `config` says: a list of `block_cls` named
  `<name>_<i>` (the plain layout), or one scanned module named `scan_<name>` whose
  parameters have a leading axis of `num_layers` (logical axis "layers").
  `cache_length` > 0: blocks that decode with a cache of that many slots (never
  rematerialised: nothing is differentiated), the same parameters.

  Call it from `setup` and apply the result with `run_stack`.
  """
  cls = block_cls
  extra = {"cache_length": cache_length} if cache_length else {}
  if config.remat != "none" and not cache_length:
    cls = nn.remat(cls, policy=_REMAT_POLICIES[config.remat], prevent_cse=not config.scan_layers,
                   static_argnums=(_DETERMINISTIC_ARG[block_cls.__name__],))
  if not config.scan_layers:
    return [cls(config, name=f"{name}_{i}", **extra) for i in range(num_layers)]
  num_args = _DETERMINISTIC_ARG[block_cls.__name__]  # every argument after x, bias included
  scanned = nn.scan(cls, variable_axes={"params": 0, "cache": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast,) * num_args, length=num_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
  return scanned(config, scanned=True, name=f"{SCAN_PREFIX}{name}", **extra)


def run_stack(blocks: list[nn.Module] | nn.Module, x_BLD: jax.Array, *args) -> jax.Array:
  """Applies a `stack` to the residual stream; `args` are each block's other arguments."""
  if isinstance(blocks, (list, tuple)):
    for block in blocks:
      x_BLD = block(x_BLD, *args)
    return x_BLD
  x_BLD, _ = blocks(x_BLD, *args)
  return x_BLD


def stack_block_params(params: dict, name: str, num_layers: int) -> dict:
  """Plain-layout parameters -> the scanned layout of the stack `name` (a copy).

  {name_0: tree, ..., name_{n-1}: tree} becomes {scan_name: tree of arrays stacked on a
  new leading axis}; everything else is kept. Lets a plain checkpoint run with
  scan_layers=True (and the tests compare the two paths from one initialisation).
  """
  out = {k: v for k, v in params.items() if not k.startswith(f"{name}_")}
  layers_ = [params[f"{name}_{i}"] for i in range(num_layers)]
  out[f"{SCAN_PREFIX}{name}"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers_)
  return out
