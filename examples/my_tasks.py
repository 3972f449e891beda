"""A user's module, outside the package: one new objective and its gin config class.

    cd examples
    objectax objectives --module my_tasks     # lists reversed_lm
    objectax train --module my_tasks --gin.Experiment.objective=reversed_lm --workdir=/tmp/rev
    objectax eval --workdir=/tmp/rev          # re-imports my_tasks from the run's record

The objective is full LM on documents whose tokens are reversed: the same contract as
every built-in objective (a seqio preprocessor after tokenization that emits exact
lengths), built here on top of full LM's own preprocessor.
"""
import dataclasses

import gin
import tensorflow as tf

from objectax.objectives import full_lm, registry


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReversedLMConfig:
  """flip: reverse each document's tokens (False: plain full LM)."""
  flip: bool = True


def preprocess(ds, sequence_length, output_features, cfg=None):
  """Tokenized documents {"targets": int32[L]} -> full-LM examples of reversed documents."""
  if (cfg or ReversedLMConfig()).flip:
    ds = ds.map(lambda ex: {**ex, "targets": tf.reverse(ex["targets"], [0])})
  return full_lm.preprocess(ds, sequence_length, output_features)


_full_lm = registry.get("full_lm")
registry.register(registry.Objective(
    name="reversed_lm", config_cls=ReversedLMConfig, preprocess=preprocess,
    features=_full_lm.features,
    lengths=lambda cfg, sequence_length: _full_lm.lengths(_full_lm.config_cls(), sequence_length),
    description="full LM on reversed documents (examples/my_tasks.py, a user's module)"))
