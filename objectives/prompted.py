"""Supervised prompted examples: inputs -> targets as given (multitask finetuning, MTF).

Wang et al. 2022 (sec. 2.1) finetune every pretrained model on T0's mixture of
prompted tasks: the prompt is the inputs, the answer the targets, loss on the targets only,
inputs 1,024 and targets 256 tokens. This objective does nothing to the text but fit it to
the run's lengths; the corpus must already hold {"inputs", "targets"} pairs (the prompted
corpus, data/sources.py; any other pairing fails in one line, data/tasks.py). On each
architecture the pair is laid out by its feature converter (docs/design.md#data-flow):

  ED  inputs -> encoder, targets -> decoder;
  ND  concat(inputs, targets), bidirectional over the inputs, loss on the targets;
  CD  concat(inputs, targets), causal, loss on the targets.

Lengths: the budget B = Experiment.sequence_length is split as Wang's 1,024 / 256, i.e.
inputs = round(0.8 B) and targets = B - inputs (128 -> 102 + 26). Examples are shorter
than that (padded, or packed when Experiment.pack), so the lengths are upper bounds
(TaskLengths.exact = False).

Over-long examples are cut, never dropped: inputs lose their FIRST tokens (the question
sits at the end of a prompt: "facts ... Bob's color is"; the zero-shot scorer,
launch/eval/zeroshot.py, cuts prompts the same way), targets lose their last tokens before
the EOS.

EOS (docs/objectives.md#where-eos-goes): the answer ends with EOS, as a document does in full_lm;
the prompt gets none by default (`eos_after_inputs=False`), because the zero-shot scorer
reads an option directly after the prompt with nothing between; T5/T0's seqio tasks put
EOS after both (set `PromptedConfig.eos_after_inputs = True` for that).

Worked example (the embedded SentencePiece vocabulary, EOS = 1; budget 12, so inputs <= 10
and targets <= 2):

  inputs  "k 3, b 7, x 1, d 9. b ->"
          ids [1731, 1175, 415, 1258, 264, 470, 1109, 709, 1960, 262, 415, 269, 602]
          ->  [1258, 264, 470, 1109, 709, 1960, 262, 415, 269, 602]   (first 3 cut)
  targets "7"  ids [1258]  ->  [1258, 1]
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

# Wang et al. 2022 sec. 2.1: MTF inputs 1,024 and targets 256 tokens -> inputs are 4/5.
WANG_INPUTS_FRACTION = 1024 / (1024 + 256)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PromptedConfig:
  """Attributes:
    inputs_fraction: share of the token budget given to the inputs (the rest: targets).
    eos_after_inputs: append EOS to the prompt too (T5/T0 style; off to match the
      zero-shot scorer's layout, see the module docstring).
  """
  inputs_fraction: float = WANG_INPUTS_FRACTION
  eos_after_inputs: bool = False

  def __post_init__(self):
    if not (registry.is_number(self.inputs_fraction) and 0.0 < self.inputs_fraction < 1.0):
      raise ConfigError(f"PromptedConfig.inputs_fraction must be in (0, 1), got "
                        f"{self.inputs_fraction!r}")


def lengths(cfg: PromptedConfig, sequence_length: int) -> registry.TaskLengths:
  """Bounds: lengths(cfg, 128) == TaskLengths(128, 102, 26, exact=False); targets keep at
  least 2 tokens (an answer token and EOS), inputs at least 1."""
  if sequence_length < 3:
    raise ConfigError(f"prompted needs a token budget >= 3 (a prompt token, an answer token "
                      f"and EOS), got {sequence_length}")
  inputs = min(max(1, round(cfg.inputs_fraction * sequence_length)), sequence_length - 2)
  return registry.TaskLengths(raw=sequence_length, inputs=inputs,
                              targets=sequence_length - inputs, exact=False)


def _fit(tokens_L: tf.Tensor, length: int, eos_id: Optional[int], keep_end: bool) -> tf.Tensor:
  """The last (keep_end) or first `length` tokens, EOS included when eos_id is set.

  [5, 6, 7, 8], length 3, eos 1: keep_end -> [7, 8, 1]; else -> [5, 6, 1].
  """
  room = length - (eos_id is not None)
  kept_K = tokens_L[-room:] if keep_end else tokens_L[:room]
  if eos_id is None:
    return kept_K
  return stream.append_eos(kept_K, eos_id)


def preprocess(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
               output_features: Mapping[str, seqio.Feature],
               cfg: Optional[PromptedConfig] = None) -> tf.data.Dataset:
  """Tokenized pairs {"inputs": int32[I'], "targets": int32[T']} -> the same, fitted to
  sequence_length (inputs cut from the left, targets from the right, EOS appended).

  Pairs with an empty prompt or answer are dropped (there is nothing to condition on or
  to learn); other features (the raw strings) are dropped too.
  """
  cfg = cfg or PromptedConfig()
  if "inputs" not in ds.element_spec:
    raise ConfigError("objective 'prompted' reads {'inputs', 'targets'} pairs, but got "
                      f"features {sorted(ds.element_spec)}; use Experiment.corpus = 'prompted'")
  stream.pair_vocabulary(output_features, "prompted")
  if not sequence_length or "inputs" not in sequence_length or "targets" not in sequence_length:
    raise ConfigError("prompted needs sequence_length['inputs'] and ['targets'] (pass the "
                      f"objective's lengths(...).feature_lengths()); got {sequence_length}")
  inputs_length, targets_length = int(sequence_length["inputs"]), int(sequence_length["targets"])
  targets_eos = stream.eos_id_or_none(output_features["targets"], "targets")
  inputs_eos = (stream.eos_id_or_none(output_features["inputs"], "inputs")
                if cfg.eos_after_inputs else None)
  if inputs_length < 1 + (inputs_eos is not None) or targets_length < 1 + (targets_eos is not None):
    raise ConfigError(f"prompted: sequence_length {dict(sequence_length)} leaves no room for "
                      "a prompt or an answer token")

  def fit(ex):
    return {"inputs": _fit(ex["inputs"], inputs_length, inputs_eos, keep_end=True),
            "targets": _fit(ex["targets"], targets_length, targets_eos, keep_end=False)}

  def nonempty(ex):
    return tf.logical_and(tf.size(ex["inputs"]) > 0, tf.size(ex["targets"]) > 0)

  return ds.filter(nonempty).map(fit, num_parallel_calls=tf.data.AUTOTUNE)


OBJECTIVE = registry.register(registry.Objective(
    name="prompted",
    config_cls=PromptedConfig,
    preprocess=preprocess,
    features=("inputs", "targets"),
    lengths=lengths,
    corpus_kind="prompted",  # prompt/answer pairs, not documents (data/tasks.check_pairing)
    description="supervised prompted pairs, inputs -> targets + EOS (multitask finetuning; "
                "corpus 'prompted')",
))
