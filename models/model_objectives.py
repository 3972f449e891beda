"""How a batch becomes a loss: the token loss, and objectives that live partly in the model.

Most objectives are data only: they shape (inputs, targets), the architecture lays them
out, and the loss is one weighted cross-entropy (`token_loss`). Some objectives need the
model itself: ELECTRA's generator and replaced-token detector (models/rtd.py), SpacTor's
hybrid of both with span corruption for its first tau steps (models/rtd.py), extra heads
predicting several future tokens (models/mtp.py). Such an objective names a
`ModelObjective` here (`Objective.model_objective`); it supplies the Linen module (the
architecture's model plus its heads) and the loss function. The train step stays
objective-agnostic: it differentiates whatever `build` returns.

The loss contract, shared by every objective:

    objective, metrics = loss(model, params, batch, rng=key, step=state.step,
                              evaluate=False, z_loss=1e-4)

- `objective`: the float32 scalar to minimise (per-token means, the same for every objective:
  docs/objectives.md#loss-normalisation);
- `metrics["loss"]`: the headline per-token loss logged and evaluated, chosen so that it
  compares with the data-only objective it extends (SpacTor: the span-corruption loss;
  multi-token prediction: the next-token loss; ELECTRA, which has no plain LM loss:
  ELECTRA's own total);
- `metrics["target_tokens"]`: the weight of that mean (evaluation sums loss * weight over
  batches); `metrics["z_loss"]`; further named float metrics as the objective likes;
- `evaluate=True`: no dropout, and the loss is the headline one at its evaluation setting
  (SpacTor evaluates plain span corruption, as it trains after tau).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from objectax.models import registry
from objectax.models.registry import ConfigError
from objectax.models import losses
from objectax.models.config import ModelConfig

Metrics = dict[str, jax.Array]


class LossFn(Protocol):
  """(model, params, batch, *, rng, step, evaluate, z_loss) -> (objective, metrics)."""

  def __call__(self, model: nn.Module, params: Any, batch: Mapping[str, jax.Array], *,
               rng: jax.Array, step: jax.Array, evaluate: bool,
               z_loss: float) -> tuple[jax.Array, Metrics]:
    ...


@dataclasses.dataclass(frozen=True)
class Vocab:
  """What model-side objectives must know of the vocabulary (the model sees only ids).

  Attributes:
    size: ids of the vocabulary (model rows beyond it are padding, never sampled).
    extra_ids: sentinel ids at its top (T5: <extra_id_0> = size - 1, counting down).
  """
  size: int
  extra_ids: int

  @property
  def regular_ids(self) -> tuple[int, int]:
    """[low, high) of ordinary tokens: not PAD/EOS/UNK (0, 1, 2), not a sentinel."""
    return 3, self.size - self.extra_ids


@dataclasses.dataclass(frozen=True)
class ModelObjective:
  """The model half of an objective.

  Attributes:
    name: registry name (an Objective's `model_objective`).
    make_model: (Architecture, ModelConfig, objective cfg, Vocab) -> module whose
      `init(rngs, batch, deterministic=True)` creates every parameter it uses. The
      modules subclass the architecture's model, so its parameters keep their names and
      a checkpoint's trunk restores into the plain architecture.
    make_loss: objective cfg -> LossFn.
    extra_flops: (ModelConfig, objective cfg, model lengths) -> training FLOPs per token
      the objective adds to (or, negative, removes from) the architecture's count, in the
      architecture's unit (per token of the streams its `flops_per_token` divides by).
    wraps: the architectures whose model `make_model` builds around (registry names);
      an objective naming this model objective runs on those only (models/registry.py
      `supports`). Empty: any architecture that reads the objective's examples.
  """
  name: str
  make_model: Callable[[Any, ModelConfig, Any, Vocab], nn.Module]
  make_loss: Callable[[Any], LossFn]
  extra_flops: Optional[Callable[[ModelConfig, Any, Mapping[str, int]], float]] = None
  wraps: tuple[str, ...] = ()


# The registry itself lives in models/registry.py, which checks what a model-side
# objective wraps without importing this module; mtp.py and rtd.py add to it on import.
MODEL_OBJECTIVES = registry.MODEL_OBJECTIVES


def mean_cross_entropy(logits_BLV: jax.Array, targets_BL: jax.Array, weights_BL: jax.Array,
                       z_loss: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(cross-entropy mean, z-loss mean, weight sum) over the weighted positions."""
  return _means(*losses.weighted_cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss))


# The batch feature holding each target position's mixture component (1, 2, ...; 0 none),
# present when a run reads a mixture and logs its components apart.
COMPONENT_KEY = "component_ids"
# 1 at the first target position of each example, beside COMPONENT_KEY.
COMPONENT_START_KEY = "component_starts"
# Metric holding the (per-component) cross-entropy and weight sums, float32[components].
COMPONENT_LOSS_SUMS, COMPONENT_WEIGHT_SUMS = "component_loss_sums", "component_weight_sums"


def token_loss(targets_key: str, weights_key: str, logits_chunk: int = 0,
               components: int = 0) -> LossFn:
  """The loss of every data-only objective: weighted cross-entropy of the model's logits.

  With `logits_chunk` > 0 (ModelConfig.logits_chunk) the logits are never formed whole:
  the model returns its final hidden states and output kernel, and
  `losses.chunked_cross_entropy` computes the same sums `logits_chunk` tokens at a time.
  With `components` > 0 the batch holds COMPONENT_KEY, and the metrics also hold each
  component's cross-entropy and weight sums (COMPONENT_LOSS_SUMS, COMPONENT_WEIGHT_SUMS).
  """

  def loss(model, params, batch, *, rng, step, evaluate, z_loss):
    del step
    rngs = None if evaluate else {"dropout": rng}
    groups = dict(groups_BL=batch[COMPONENT_KEY], num_groups=components) if components else {}
    if logits_chunk:
      hidden_BLD = model.apply({"params": params}, batch, deterministic=evaluate, rngs=rngs,
                               method="hidden")
      kernel_DV, divisor = model.apply({"params": params}, method="output_kernel")
      sums = losses.chunked_cross_entropy(hidden_BLD, kernel_DV, batch[targets_key],
                                          batch[weights_key], z_loss, logits_chunk, divisor,
                                          **groups)
    else:
      logits_BLV = model.apply({"params": params}, batch, deterministic=evaluate, rngs=rngs)
      sums = losses.weighted_cross_entropy(logits_BLV, batch[targets_key], batch[weights_key],
                                           z_loss, **groups)
    ce, z, weight = _means(*sums[:3])
    metrics = {"loss": ce, "z_loss": z, "target_tokens": weight}
    if components:
      metrics[COMPONENT_LOSS_SUMS], metrics[COMPONENT_WEIGHT_SUMS] = sums[3], sums[4]
    return ce + z, metrics

  return loss


def _means(loss_sum: jax.Array, z_sum: jax.Array, weight_sum: jax.Array):
  denom = jnp.maximum(weight_sum, 1.0)  # per-token mean over the global batch, for every objective
  return loss_sum / denom, z_sum / denom, weight_sum


def build(arch: Any, model_cfg: ModelConfig, objective: Any, objective_cfg: Any,
          vocab: Vocab, components: int = 0) -> tuple[nn.Module, LossFn]:
  """(model, loss) for an objective on an architecture (`arch`: models.registry.Architecture).

  Data-only objectives get the architecture's model and `token_loss` (with the loss of
  each of `components` mixture components beside it); an objective with a
  `model_objective` gets that objective's module, built around the architecture's model.
  """
  name = getattr(objective, "model_objective", None)
  if not name:
    return arch.make_model(model_cfg), token_loss(arch.targets_key, arch.weights_key,
                                                  model_cfg.logits_chunk, components)
  mo = MODEL_OBJECTIVES.get(name)
  if vocab.size - vocab.extra_ids <= 3:
    raise ConfigError(f"objective {objective.name!r} needs ordinary tokens beside PAD/EOS/UNK "
                      f"and {vocab.extra_ids} sentinels; the vocabulary has {vocab.size} ids")
  return mo.make_model(arch, model_cfg, objective_cfg, vocab), mo.make_loss(objective_cfg)


def flops_per_token(arch: Any, model_cfg: ModelConfig, objective: Any, objective_cfg: Any,
                    feature_lengths: Mapping[str, int], concat: int = 0) -> float:
  """Training FLOPs per token: the architecture's, plus what a model-side objective adds
  (extra heads, a generator; SpacTor's count is that of its hybrid stage)."""
  flops = arch.flops_per_token(model_cfg, feature_lengths, concat)
  name = getattr(objective, "model_objective", None)
  if name:
    extra = MODEL_OBJECTIVES.get(name).extra_flops
    if extra is not None:
      flops += extra(model_cfg, objective_cfg, arch.model_lengths(feature_lengths, concat))
  return flops


def block_flops_per_token(cfg: ModelConfig, keys: int) -> float:
  """One self-attention + MLP block, per token: 6 x its matmul parameters plus the PaLM
  attention term 12 H K x keys (as config.flops_per_token counts each layer)."""
  inner = cfg.num_heads * cfg.head_dim
  matmul = 4 * cfg.d_model * inner + (3 if cfg.mlp_gated else 2) * cfg.d_model * cfg.mlp_dim
  return 6.0 * matmul + 12.0 * inner * keys

