"""Weighted token cross-entropy with the z-loss of T5X / PaLM.

Returns sums, not means: the caller divides by the weight sum of the whole global batch
(a per-token mean), the same rule for every objective. Reference pitfall P9: T5X and
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
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Summed cross-entropy and z-loss over weighted positions, in float32.

  Per position: ce = logsumexp(logits) - logits[target], and
  z = z_loss * logsumexp(logits)^2, which keeps the softmax normaliser near 1
  (Chowdhery et al. 2022 §5; T5X `cross_entropy_with_logits`, z_loss=1e-4).

  Example, V = 2, one position with logits [0, 0], target 1, weight 1, z_loss 0.1:
  logsumexp = log 2 = 0.693, ce = 0.693, z = 0.1 * 0.693^2 = 0.048, so the result is
  (0.693, 0.048, 1.0). Positions of weight 0 add nothing and get exactly zero gradient.

  Args:
    logits_BLV: unnormalised logits; cast to float32.
    targets_BL: integer target ids.
    weights_BL: loss weight per position (0/1 from the feature converter, or real).
    z_loss: coefficient of the z-loss term (0 disables it).

  Returns:
    (loss_sum, z_loss_sum, weight_sum), float32 scalars. loss_sum is the cross-entropy
    alone (the number to report, log-perplexity); the training objective is
    (loss_sum + z_loss_sum) / weight_sum, the per-token mean over the global batch
    (pitfall P9).
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
  return loss_sum, z_loss_sum, jnp.sum(weights_BL)
