"""The architecture registry: name -> (model factory, feature converter, shapes, keys).

An architecture is everything the training loop needs to know about a model family,
given by module contract rather than a class hierarchy. "causal_decoder" and
"prefix_decoder" are one module (`decoder.Model`) with the `bidirectional_inputs` switch
flipped: the AO repo's `DecoderOnlyModel.inputs_bidirectional_attention` (Wang et al.
2022, gins c_dec_xxl.gin / nc_dec_xxl.gin). Nothing here imports seqio or TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Protocol

import flax.linen as nn
import jax
import numpy as np

from objectax.data.registry import Registry
from objectax.models import decoder
from objectax.models import encdec
from objectax.models import encoder
from objectax.models.config import ModelConfig


class BatchSpecFn(Protocol):
  """(task feature lengths, batch size, *, pack) -> {feature: ShapeDtypeStruct}.

  Must list exactly the features `feature_converter(pack)` emits: the trainer builds its
  jit in_shardings from these keys.
  """

  def __call__(self, task_feature_lengths: Mapping[str, int], batch_size: int, *,
               pack: bool = True, concat_length: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
    ...


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A model family and the data layout it reads.

  Attributes:
    name: registry name, the `{arch}` part of an experiment name.
    description: one line for listings and logs.
    make_model: ModelConfig -> Linen module whose `apply(params, batch,
      deterministic=...)` returns float32 logits.
    feature_converter: (pack, concat_length=0) -> seqio FeatureConverter (imports seqio
      lazily). concat_length is the objective's TaskLengths.concat: architectures that
      concatenate inputs and targets size their rows by it when it is > 0; others may
      ignore it.
    model_lengths: (task feature lengths, concat_length=0) -> model lengths, e.g.
      {"decoder": 626}.
    batch_spec: (task feature lengths, batch size, *, pack=True, concat_length=0) ->
      {feature: ShapeDtypeStruct}, exactly the features `feature_converter(pack,
      concat_length)` emits (pass the same `pack` and `concat_length` to both).
    synthetic_batch: (spec, vocab size, rng) -> numpy batch with plausible values, packed
      or not as the spec's keys say.
    targets_key: feature holding the target ids for the loss.
    weights_key: feature holding the per-position loss weights.
    flops_per_token: (ModelConfig, task feature lengths, concat_length=0) -> training FLOPs
      per token of the model's streams (for MFU and `objectax info`).
  """

  name: str
  description: str
  make_model: Callable[[ModelConfig], nn.Module]
  feature_converter: Callable[..., Any]
  model_lengths: Callable[..., dict[str, int]]
  batch_spec: BatchSpecFn
  synthetic_batch: Callable[..., dict[str, np.ndarray]]
  targets_key: str
  weights_key: str
  flops_per_token: Callable[..., float]


ARCHITECTURES = Registry[Architecture]("architecture")


def _from_module(name: str, description: str, module: Any,
                 make_model: Callable[[ModelConfig], nn.Module] | None = None) -> Architecture:
  """An Architecture from a model module's contract: Model, feature_converter,
  model_lengths, batch_spec, synthetic_batch, flops_per_token, TARGETS_KEY, WEIGHTS_KEY."""
  return Architecture(
      name=name,
      description=description,
      make_model=make_model or module.Model,
      feature_converter=module.feature_converter,
      model_lengths=module.model_lengths,
      batch_spec=module.batch_spec,
      synthetic_batch=module.synthetic_batch,
      targets_key=module.TARGETS_KEY,
      weights_key=module.WEIGHTS_KEY,
      flops_per_token=module.flops_per_token,
  )


ARCHITECTURES.add("causal_decoder", _from_module(
    "causal_decoder", "decoder-only, causal attention over concat(inputs, targets)", decoder,
    functools.partial(decoder.Model, bidirectional_inputs=False)))
ARCHITECTURES.add("prefix_decoder", _from_module(
    "prefix_decoder", "decoder-only, bidirectional over inputs (+1 position), causal after",
    decoder, functools.partial(decoder.Model, bidirectional_inputs=True)))
ARCHITECTURES.add("encoder_only", _from_module(
    "encoder_only", "encoder-only, full attention within each example, loss where targets > 0 "
    "(BERT MLM's selected positions)", encoder))
ARCHITECTURES.add("encoder_decoder", _from_module(
    "encoder_decoder", "encoder (full attention over the inputs) + decoder (causal "
    "self-attention and cross-attention), loss on the targets", encdec))


def get(name: str) -> Architecture:
  """The architecture called `name`; a ConfigError lists the valid names otherwise."""
  return ARCHITECTURES.get(name)
