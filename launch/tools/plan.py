"""`objectax plan`: how a configured run lays out on a mesh, before the devices exist.

For every array of the train state: its shape, logical axes, the mesh axes they map to and
the bytes one device holds (from abstract evaluation, as `objectax info`). Layers that
repeat are folded into one line (`block_*`, x24). Then the per-device totals: parameters,
optimizer state, an estimate of the activations a training step keeps for its backward
pass, and their sum, so a user knows whether a 1B or 11B model fits a slice.

The activation estimate counts, per layer and token, the tensors a plain (no remat)
backward pass reads, in the activation dtype: the residual stream and the two norm outputs
(3 D), q, k, v and the attention output (4 H K), the attention probabilities (H x keys),
the MLP's hidden activations (3 F gated, 2 F not); plus cross-attention in encoder-decoder
decoders (q, output: 2 H K; probabilities H x S), and the float32 logits and their
gradient (2 V per output token). It follows `ModelConfig.remat`: with "full" a layer keeps
only its input (D per token) and the backward pass recomputes one layer at a time, so the
layers' inputs plus one layer's full set are held; with "save_dots" a layer keeps its input
and the outputs of its weight matmuls (q, k, v and the attention's output projection, the
MLP's gate/up and down: 3 D + 3 H K + 2 F gated, F not; cross-attention adds q and its
output, H K + D, and its keys and values over S) but recomputes norms, attention
probabilities and activations, again one layer at a time. `scan_layers` stacks the same
per-layer residuals, so it changes no term. With `logits_chunk` N the logits term is N
tokens' at a time instead of the whole batch's. Tensor parallelism divides the head, MLP
and vocabulary terms; the batch is split over data x fsdp. XLA's scheduling and fusion move
the real figure; treat it as the order of magnitude, within a factor of about 2.
"""
from __future__ import annotations

import collections
import math
import re

import jax.numpy as jnp

from objectax.launch.tools import info as info_lib
from objectax.launch import sharding
from objectax.models.config import ModelConfig

_LAYER_INDEX = re.compile(r"(?<=_)\d+(?=/|$)")


def _per_token_layer_elements(cfg: ModelConfig, keys: int, tensor: int, cross_keys: int = 0) -> float:
  """Stored activation elements per token of one layer without remat (module docstring)."""
  heads_kv = cfg.num_heads * cfg.head_dim / tensor
  mlp = (3 if cfg.mlp_gated else 2) * cfg.mlp_dim / tensor
  per_token = 3 * cfg.d_model + 4 * heads_kv + cfg.num_heads / tensor * keys + mlp
  if cross_keys:
    per_token += 2 * heads_kv + cfg.num_heads / tensor * cross_keys + cfg.d_model
  return per_token


def _per_token_saved_elements(cfg: ModelConfig, tensor: int, cross: bool = False) -> float:
  """Elements per token one layer keeps between the forward and backward pass under
  `cfg.remat` "full" (its input) or "save_dots" (its input and weight-matmul outputs)."""
  if cfg.remat == "full":
    return cfg.d_model
  heads_kv = cfg.num_heads * cfg.head_dim / tensor
  mlp = (2 if cfg.mlp_gated else 1) * cfg.mlp_dim / tensor
  per_token = 3 * cfg.d_model + 3 * heads_kv + mlp
  if cross:
    per_token += heads_kv + cfg.d_model
  return per_token


def _stack_elements(cfg: ModelConfig, layers: int, length: int, tensor: int,
                    cross_keys: int = 0) -> tuple[float, float]:
  """(elements held for the whole backward pass, elements of one layer recomputed at a
  time) of one stack of `layers` layers over `length` tokens."""
  full = length * _per_token_layer_elements(cfg, length, tensor, cross_keys)
  if cfg.remat == "none":
    return layers * full, 0.0
  return layers * length * _per_token_saved_elements(cfg, tensor, bool(cross_keys)), full


def activation_bytes(su: info_lib.Setup) -> int:
  """Estimated bytes of activations one device keeps for a training step's backward."""
  cfg = su.model
  tensor = su.mesh["tensor"]
  itemsize = jnp.dtype(cfg.dtype).itemsize
  lengths = su.arch.model_lengths(su.lengths.feature_lengths(), su.lengths.concat)
  b = su.batch_per_replica
  if "decoder" in lengths and "encoder" in lengths:  # encoder-decoder
    s, t = lengths["encoder"], lengths["decoder"]
    enc_held, enc_peak = _stack_elements(cfg, cfg.encoder_layers, s, tensor)
    dec_held, dec_peak = _stack_elements(cfg, cfg.num_layers, t, tensor, cross_keys=s)
    cross_kv = cfg.num_layers * s * 2 * cfg.num_heads * cfg.head_dim / tensor  # kept: matmuls
    elements = enc_held + dec_held + cross_kv + max(enc_peak, dec_peak)
    out_tokens = t
  else:
    length = next(iter(lengths.values()))
    held, peak = _stack_elements(cfg, cfg.num_layers, length, tensor)
    elements = held + peak
    out_tokens = length
  # float32 logits and their gradient: the whole batch's, or one chunk of tokens at a time.
  logit_tokens = (min(cfg.logits_chunk, b * out_tokens) if cfg.logits_chunk
                  else b * out_tokens)
  logits = logit_tokens * 2 * cfg.vocab_size / tensor * 4
  return int(b * elements * itemsize + logits)


def describe_activations(cfg: ModelConfig) -> str:
  """How the estimate was made, for the printed line."""
  remat = "no rematerialisation" if cfg.remat == "none" else f"remat {cfg.remat}"
  chunk = f", logits {cfg.logits_chunk} tokens at a time" if cfg.logits_chunk else ""
  return f"estimate, {remat}, {cfg.dtype}{chunk}"


def _fold(name: str) -> str:
  return _LAYER_INDEX.sub("*", name)


def render(su: info_lib.Setup, device_memory_gib: float | None = None) -> str:
  """The table and the per-device totals; with `device_memory_gib`, a last line saying
  whether the total fits a device of that memory."""
  rules = sharding.rules(su.mesh_cfg)
  params = info_lib.shards(su.abstract.params, su.mesh, rules)
  opt = info_lib.shards(su.abstract.opt_state, su.mesh, rules)
  groups: dict[tuple, list[info_lib.Shard]] = collections.defaultdict(list)
  for s in params:
    groups[(_fold(s.path), s.shape, s.logical, s.spec)].append(s)
  fmt = lambda axes: "(" + ", ".join("-" if a is None else (a if isinstance(a, str) else
                                                          "+".join(a)) for a in axes) + ")"
  rows = [("parameter", "shape", "logical axes", "mesh axes", "per device")]
  for (name, shape, logical, spec), members in groups.items():
    count = f" x{len(members)}" if len(members) > 1 else ""
    rows.append((name + count, "x".join(map(str, shape)), fmt(logical), fmt(spec),
                 info_lib._gb(sum(m.bytes_per_device for m in members))))  # pylint: disable=protected-access
  widths = [max(len(r[i]) for r in rows) for i in range(5)]
  table = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  p_bytes = sum(s.bytes_per_device for s in params)
  o_bytes = sum(s.bytes_per_device for s in opt)
  a_bytes = activation_bytes(su)
  num_params = sum(math.prod(s.shape) for s in params)
  devices = math.prod(su.mesh.values())
  gb = info_lib._gb  # pylint: disable=protected-access
  return "\n".join([
      f"plan {su.exp.name} ({su.exp.arch}): {num_params:,} parameters on mesh {su.mesh} "
      f"({devices} devices), rules {su.mesh_cfg.rules!r}, {su.batch_per_replica} examples of "
      f"{su.lengths.budget} tokens per data shard",
      *table,
      "per device:",
      f"  parameters        {gb(p_bytes)}",
      f"  optimizer state   {gb(o_bytes)}",
      f"  activations       {gb(a_bytes)} ({describe_activations(su.model)})",
      f"  total             {gb(p_bytes + o_bytes + a_bytes)}",
      *([_verdict(p_bytes + o_bytes + a_bytes, device_memory_gib)] if device_memory_gib else []),
  ])


def _verdict(total_bytes: int, device_memory_gib: float) -> str:
  total = total_bytes / 2**30
  return (f"{'fits' if total <= device_memory_gib else 'does NOT fit'}: {total:.2f} GiB of "
          f"{device_memory_gib:g} GiB per device ({100 * total / device_memory_gib:.0f}%)")
