"""Multi-token prediction on the decoder: n heads, head k predicts the token k steps ahead.

Gloeckle et al. 2024 ("Better & Faster Large Language Models via Multi-token
Prediction"; docs/objectives.md#multi-token-prediction): a shared trunk and n output
heads, each one Transformer layer and the shared unembedding; loss = sum over heads of
their cross-entropies, n = 4.
Here head 1 is the decoder's own output (final norm, unembedding), so with n = 1 the model
and its loss are exactly the causal decoder's, and the trunk's parameters keep the causal
decoder's names; heads 2..n each add one block and a norm on the trunk's residual stream
(the layer before the final norm), with the same masks and positions. Heads 2..n are
weighted by `extra_head_weight` (1.0: Gloeckle's plain sum; DeepSeek-V3 uses 0.3).

Targets of head k at position t: the decoder target k - 1 positions later, i.e. token
x_{t+k}, weighted only when that position is in the same packed segment (and carries
loss): no head is trained to predict across a document boundary.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from objectax.models import decoder
from objectax.models import layers
from objectax.models import model_objectives as mo
from objectax.models.config import ModelConfig


class MtpDecoder(decoder.Model):
  """The decoder with `num_predicted_tokens` - 1 extra heads; calling it gives head 1."""

  num_predicted_tokens: int = 4

  def setup(self):
    super().setup()
    extra = range(2, self.num_predicted_tokens + 1)
    self.mtp_blocks = [layers.Block(self.config, name=f"mtp_block_{k}") for k in extra]
    self.mtp_norms = [layers.RMSNorm(self.config, name=f"mtp_norm_{k}") for k in extra]

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """Head 1's logits; runs every head so that `init` creates their parameters."""
    return self.all_logits(batch, deterministic=deterministic)[0]

  def next_token_logits(self, batch: Mapping[str, jax.Array], *,
                        deterministic: bool = True) -> jax.Array:
    """Head 1 alone: the plain decoder (evaluation, and the leakage tests)."""
    return super().__call__(batch, deterministic=deterministic)

  def all_logits(self, batch: Mapping[str, jax.Array], *,
                 deterministic: bool = True) -> list[jax.Array]:
    """[logits_BLV of head k for k = 1..n]; head k at position t predicts x_{t+k}."""
    h_BLD, ctx = self.trunk(self.embed(batch["decoder_input_tokens"]), batch,
                            deterministic=deterministic)
    logits = [layers.output_logits(self.embed, self.head_DV, self.final_norm(h_BLD))]
    for block, norm in zip(self.mtp_blocks, self.mtp_norms):
      y_BLD = block(h_BLD, ctx.mask_B1LL, ctx.positions_BL, deterministic, ctx.bias_BHLL)
      logits.append(layers.output_logits(self.embed, self.head_DV, norm(y_BLD)))
    return logits


def _ahead(x_BL: jax.Array, offset: int) -> jax.Array:
  """x_BL[:, t + offset] at position t, zero past the end of the row."""
  if offset == 0:
    return x_BL
  return jnp.pad(x_BL[:, offset:], ((0, 0), (0, offset)))


def future_targets(batch: Mapping[str, jax.Array], offset: int) -> tuple[jax.Array, jax.Array]:
  """(targets_BL, weights_BL) of the head that predicts `offset` tokens past the next one.

  Weight only where the target position lies in the same segment as the query (segment
  id > 0) and carries loss weight itself.
  """
  segment_ids_BL = decoder._segment_ids(batch)  # pylint: disable=protected-access
  same_BL = (_ahead(segment_ids_BL, offset) == segment_ids_BL) & (segment_ids_BL > 0)
  weights_BL = _ahead(batch[decoder.WEIGHTS_KEY], offset) * same_BL
  return _ahead(batch[decoder.TARGETS_KEY], offset), weights_BL


def make_model(arch: Any, model_cfg: ModelConfig, cfg: Any, vocab: mo.Vocab) -> MtpDecoder:
  """Causal only: on a bidirectional prefix the extra heads would see their targets."""
  del arch, vocab
  return MtpDecoder(model_cfg, bidirectional_inputs=False,
                    num_predicted_tokens=cfg.num_predicted_tokens)


def make_loss(cfg: Any) -> mo.LossFn:
  """Sum over heads of each head's per-token mean; "loss" is head 1's (next-token) loss."""

  def loss(model, params, batch, *, rng, step, evaluate, z_loss):
    del step
    if evaluate:
      all_logits = [model.apply({"params": params}, batch, deterministic=True,
                                method=MtpDecoder.next_token_logits)]
    else:
      all_logits = model.apply({"params": params}, batch, deterministic=False,
                               rngs={"dropout": rng}, method=MtpDecoder.all_logits)
    objective, metrics = 0.0, {}
    for offset, logits_BLV in enumerate(all_logits):
      targets_BL, weights_BL = future_targets(batch, offset)
      ce, z, weight = mo.mean_cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss)
      objective += (1.0 if offset == 0 else cfg.extra_head_weight) * (ce + z)
      if offset == 0:
        metrics.update(loss=ce, z_loss=z, target_tokens=weight)
      else:
        metrics[f"loss_token_{offset + 1}"] = ce
    return objective, metrics

  return loss


def extra_flops(model_cfg: ModelConfig, cfg: Any, lengths: Mapping[str, int]) -> float:
  """Each extra head: one block over the row and one more unembedding, per token."""
  per_head = (mo.block_flops_per_token(model_cfg, lengths["decoder"])
              + 6.0 * model_cfg.d_model * model_cfg.vocab_size)
  return (cfg.num_predicted_tokens - 1) * per_head


mo.MODEL_OBJECTIVES.add("mtp", mo.ModelObjective("mtp", make_model, make_loss, extra_flops,
                                                 wraps=("causal_decoder",)))
