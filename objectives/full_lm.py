"""Full (causal) language modelling: targets only, every token carries loss.

See docs/objectives.md#full-lm.

T5's `full_lm` (select_random_chunk -> append EOS -> reduce_concat_tokens -> split_tokens)
without the random chunk selection and without padding: documents get EOS, are
concatenated into one stream and chopped into examples of exactly sequence_length["targets"]
tokens; the partial last chunk is dropped. Wang et al. (2022) use 626-token examples.

Worked example, targets length 8, EOS id 1:

  docs     [37, 12, 408]  [99, 5]  [250, 251, 252, 253]  [7]
  stream   37 12 408 1 99 5 1 250 251 252 253 1 7 1
  examples {"targets": [37, 12, 408, 1, 99, 5, 1, 250]}         (251 ... 1 dropped)
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import gin
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.objectives import registry
from objectax.objectives import stream


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FullLMConfig:
  """Full LM has no hyper-parameters beyond the sequence length (T5 `lm.gin`)."""


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[FullLMConfig] = None) -> tf.data.Dataset:
  """Tokenized documents {"targets": int32[L]} -> {"targets": int32[sequence_length["targets"]]}."""
  del cfg  # No hyper-parameters.
  if not sequence_length or not sequence_length.get("targets"):
    raise ConfigError("full_lm needs sequence_length['targets'] (pass the objective's "
                      f"lengths(...).feature_lengths() to get_dataset); got {sequence_length}")
  eos_id = stream.eos_id_or_none(output_features["targets"], "targets")
  return stream.concat_and_split(ds, int(sequence_length["targets"]), "targets", eos_id)


def lengths(cfg: FullLMConfig, sequence_length: int) -> registry.TaskLengths:
  """The whole token budget is targets: lengths(cfg, 626) == TaskLengths(626, 0, 626)."""
  del cfg
  if sequence_length < 1:
    raise ConfigError(f"full_lm token budget must be >= 1, got {sequence_length}")
  return registry.TaskLengths(raw=sequence_length, inputs=0, targets=sequence_length)


OBJECTIVE = registry.register(registry.Objective(
    name="full_lm",
    config_cls=FullLMConfig,
    preprocess=preprocess,
    features=("targets",),
    lengths=lengths,
    description="full causal LM: documents + EOS concatenated, chopped to the budget (T5 full_lm)",
))
