"""Weighted token cross-entropy with the z-loss of T5X / PaLM.

Returns sums, not means: the caller divides by the weight sum of the whole global batch
(a per-token mean), the same rule for every objective (docs/objectives.md#loss-normalisation).
T5X and
Wang et al. 2022 train with z-loss 1e-4 and `loss_normalizing_factor=None`; normalising
per sequence instead would hand objectives with different target lengths different
effective learning rates, so the rule must not change across objectives.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_cross_entropy(
    logits_BLV: jax.Array,
    targets_BL: jax.Array,
    weights_BL: jax.Array,
    z_loss: float = 0.0,
    groups_BL: jax.Array | None = None,
    num_groups: int = 0,
) -> tuple[jax.Array, ...]:
  """Summed cross-entropy and z-loss over weighted positions, in float32.

  Per position: ce = logsumexp(logits) - logits[target], and
  z = z_loss * logsumexp(logits)^2, which keeps the softmax normaliser near 1
  (Chowdhery et al. 2022 sec. 5; T5X `cross_entropy_with_logits`, z_loss=1e-4).

  Example, V = 2, one position with logits [0, 0], target 1, weight 1, z_loss 0.1:
  logsumexp = log 2 = 0.693, ce = 0.693, z = 0.1 * 0.693^2 = 0.048, so the result is
  (0.693, 0.048, 1.0). Positions of weight 0 add nothing and get exactly zero gradient.

  Args:
    logits_BLV: unnormalised logits; cast to float32.
    targets_BL: integer target ids.
    weights_BL: loss weight per position (0/1 from the feature converter, or real).
    z_loss: coefficient of the z-loss term (0 disables it).
    groups_BL, num_groups: with num_groups > 0, the group of each position (1 ..
      num_groups; 0: none), e.g. the mixture component its example came from.

  Returns:
    (loss_sum, z_loss_sum, weight_sum), float32 scalars. loss_sum is the cross-entropy
    alone (the number to report, log-perplexity); the training objective is
    (loss_sum + z_loss_sum) / weight_sum, the per-token mean over the global batch
    (the same for every objective). With groups, also the cross-entropy and weight sums of
    each group, float32[num_groups] each.
  """
  logits_BLV = logits_BLV.astype(jnp.float32)
  weights_BL = weights_BL.astype(jnp.float32)
  log_z_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
  # A one-hot contraction rather than a gather: stays local when V is sharded.
  one_hot_BLV = jax.nn.one_hot(targets_BL, logits_BLV.shape[-1], dtype=jnp.float32)
  target_logit_BL = jnp.sum(logits_BLV * one_hot_BLV, axis=-1)
  ce_BL = log_z_BL - target_logit_BL
  z_BL = z_loss * jnp.square(log_z_BL)
  z_loss_sum = jnp.sum(z_BL * weights_BL)
  loss_sum = jnp.sum(ce_BL * weights_BL)
  if not num_groups:
    return loss_sum, z_loss_sum, jnp.sum(weights_BL)
  return (loss_sum, z_loss_sum, jnp.sum(weights_BL),
          *group_sums(ce_BL * weights_BL, weights_BL, groups_BL, num_groups))


def group_sums(loss_BL: jax.Array, weights_BL: jax.Array, groups_BL: jax.Array,
               num_groups: int) -> tuple[jax.Array, jax.Array]:
  """(loss sum, weight sum) of each group 1 .. num_groups, float32[num_groups] each."""
  member_BLG = jax.nn.one_hot(groups_BL - 1, num_groups, dtype=jnp.float32)  # 0 -> no group
  return (jnp.einsum("BL,BLG->G", loss_BL, member_BLG),
          jnp.einsum("BL,BLG->G", weights_BL.astype(jnp.float32), member_BLG))


def chunked_cross_entropy(
    hidden_BLD: jax.Array,
    kernel_DV: jax.Array,
    targets_BL: jax.Array,
    weights_BL: jax.Array,
    z_loss: float,
    chunk: int,
    divisor: float | None = None,
    groups_BL: jax.Array | None = None,
    num_groups: int = 0,
) -> tuple[jax.Array, ...]:
  """`weighted_cross_entropy` of logits = hidden @ kernel (/ divisor), `chunk` tokens at a time.

  The matmul runs as `models.layers.project` does: operands in the kernel's dtype, float32
  sums.

  The B*L tokens are cut into chunks of `chunk` (the last padded with weight 0); a scan
  computes each chunk's float32 logits and their loss sums, under `jax.checkpoint`, so the
  backward pass recomputes a chunk's logits instead of keeping all (B, L, V) of them: the
  peak memory of the loss is one (chunk, V) block instead of (B*L, V). The result equals
  the unchunked loss up to float32 summation order.
  """
  d = hidden_BLD.shape[-1]
  x_ND = hidden_BLD.reshape(-1, d)
  n = x_ND.shape[0]
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  x_CKD = jnp.pad(x_ND, ((0, pad), (0, 0))).reshape(num_chunks, chunk, d)
  t_CK = jnp.pad(targets_BL.reshape(-1), (0, pad)).reshape(num_chunks, chunk)
  w_CK = jnp.pad(weights_BL.reshape(-1).astype(jnp.float32), (0, pad)).reshape(num_chunks, chunk)
  g_CK = (jnp.zeros_like(t_CK) if not num_groups else
          jnp.pad(groups_BL.reshape(-1), (0, pad)).reshape(num_chunks, chunk))

  @jax.checkpoint
  def chunk_sums(x_KD, t_K, w_K, g_K):
    logits_KV = jnp.einsum("KD,DV->KV", x_KD.astype(kernel_DV.dtype), kernel_DV,
                           preferred_element_type=jnp.float32)
    if divisor is not None:
      logits_KV = logits_KV / jnp.float32(divisor)
    sums = weighted_cross_entropy(logits_KV[None], t_K[None], w_K[None], z_loss, g_K[None],
                                  num_groups)
    return jnp.concatenate([jnp.stack(sums[:3]), *sums[3:]])

  def body(total, xs):
    return total + chunk_sums(*xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((3 + 2 * num_groups,), jnp.float32),
                          (x_CKD, t_CK, w_CK, g_CK))
  if not num_groups:
    return total[0], total[1], total[2]
  return total[0], total[1], total[2], total[3:3 + num_groups], total[3 + num_groups:]
