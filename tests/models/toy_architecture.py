"""A toy fifth architecture, written as a user would write one outside the package.

"toy_decoder": a causal bag-of-embeddings language model. Position t reads the mean of the
input embeddings at positions 0..t of its own example (packed segments never mix), one
pre-norm MLP on that average, a final norm and the output projection (tied or not, as
ModelConfig.tie_embeddings says). No attention, no depth: `num_layers`, heads and
positions of the ModelConfig are ignored.

It reads the decoder's data layout (one stream, concat(inputs, targets), loss on the
targets), so the feature converter, shapes, synthetic batches, token budget and scoring
layout are models/decoder.py's; the model, its size and its FLOPs are its own. Importing
this module registers it; a gin file that selects it holds one line,
`Experiment.arch = 'toy_decoder'` (`GIN`).
"""
from __future__ import annotations

import sys
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from objectax.models import config as config_lib
from objectax.models import decoder
from objectax.models import layers
from objectax.models import masks
from objectax.models import registry
from objectax.models.config import ModelConfig

NAME = "toy_decoder"
GIN = f"Experiment.arch = '{NAME}'\n"

# The data side of the contract: the decoder's layout.
TARGETS_KEY = decoder.TARGETS_KEY
WEIGHTS_KEY = decoder.WEIGHTS_KEY
READS = ("lm", "seq2seq")
LEFT_TO_RIGHT = True
feature_converter = decoder.feature_converter
model_lengths = decoder.model_lengths
batch_spec = decoder.batch_spec
synthetic_batch = decoder.synthetic_batch
budget_lengths = decoder.budget_lengths
score_layout = decoder.score_layout


class Model(nn.Module):
  """Causal bag of embeddings -> MLP -> logits (float32, B x L x V)."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    config_lib._require_vocab(cfg)  # pylint: disable=protected-access
    self.embed = layers.Embed(cfg)
    self.mlp_norm = layers.RMSNorm(cfg)
    self.mlp = layers.Mlp(cfg)
    self.final_norm = layers.RMSNorm(cfg)
    self.head_DV = layers.untied_head(self, cfg)  # None when tied

  def __call__(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    return layers.output_logits(self.embed, self.head_DV,
                                self.hidden(batch, deterministic=deterministic))

  def hidden(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """The final-normed stream the logits are read from (the chunked loss calls this)."""
    del deterministic  # no dropout
    x_BLD = self.embed(batch["decoder_input_tokens"])
    segment_ids_BL = batch.get("decoder_segment_ids")
    if segment_ids_BL is None:  # unpacked: one example per row, padding where targets are 0
      segment_ids_BL = (batch[TARGETS_KEY] > 0).astype(jnp.int32)
    see_BLL = masks.decoder_mask(segment_ids_BL)[:, 0].astype(jnp.float32)  # causal, per segment
    count_BL1 = jnp.maximum(see_BLL.sum(axis=-1, keepdims=True), 1.0)
    bag_BLD = (jnp.einsum("BLS,BSD->BLD", see_BLL, x_BLD.astype(jnp.float32))
               / count_BL1).astype(x_BLD.dtype)
    h_BLD = bag_BLD + self.mlp(self.mlp_norm(bag_BLD))
    return self.final_norm(h_BLD)

  def output_kernel(self) -> tuple[jax.Array, float | None]:
    return layers.output_kernel(self.embed, self.head_DV)


def num_params(config: ModelConfig) -> int:
  """Embedding table, two norm scales, the MLP, and the head when untied."""
  d, v, f = config.d_model, config.vocab_size, config.mlp_dim
  mlp = (3 if config.mlp_gated else 2) * d * f
  return v * d + 2 * d + mlp + (0 if config.tie_embeddings else d * v)


def flops_per_token(config: ModelConfig, task_feature_lengths: Mapping[str, int],
                    concat_length: int = 0) -> float:
  """6 x the matmul parameters (MLP, output projection) plus the averaging over the row's
  L positions (6 L D: a D-vector per key, forward and backward)."""
  d, v, f = config.d_model, config.vocab_size, config.mlp_dim
  length = model_lengths(task_feature_lengths, concat_length)["decoder"]
  return 6.0 * ((3 if config.mlp_gated else 2) * d * f + d * v) + 6.0 * length * d


registry.register(registry.from_module(
    NAME, "toy: causal mean of the previous embeddings, one MLP (a user's own module)",
    sys.modules[__name__]))
