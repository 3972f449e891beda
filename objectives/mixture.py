"""The preprocessor of one component of a mixture objective (UL2's denoisers).

A mixture objective (Objective.mixture) is a list of `MixtureComponent`s; data/tasks.py
registers one seqio Task per component, whose last preprocessor is `preprocess_component`,
and data/mixtures.py a seqio Mixture over them. All components of a mixture share one
`sequence_length` (seqio passes the mixture's to every task), which holds bounds for all of
them; each component ignores it and uses its own exact lengths instead, so a denoiser with
r=0.5 and one with r=0.15 each get the inputs/targets split that fills the same budget.

Example (UL2's R-denoiser mu=3 r=0.15 under a 64-token budget, mode token [NLU] = id 8003
in the embedded SentencePiece vocabulary): the component's own lengths are those of span
corruption for 63 tokens (inputs 51, targets 12); the mode token makes inputs 52, so every
example has 52 + 12 = 64 tokens, while the mixture's bounds are the maxima over components.
"""
from __future__ import annotations

from typing import Mapping, Optional

import seqio
import tensorflow as tf

from objectax.objectives import registry


def preprocess_component(ds: tf.data.Dataset, sequence_length: Optional[Mapping[str, int]],
                         output_features: Mapping[str, seqio.Feature],
                         component: registry.MixtureComponent) -> tf.data.Dataset:
  """Documents -> the component's examples, with its inputs prefix (mode token) prepended."""
  del sequence_length  # the mixture's bounds; the component has its own exact lengths
  if component.shard is not None:
    index, count = component.shard
    ds = ds.shard(count, index)
  ds = component.objective.preprocess(ds, component.lengths.feature_lengths(), output_features,
                                      cfg=component.cfg)
  prefix_ids = component.inputs_prefix
  if not prefix_ids and component.mode:
    from objectax.objectives import ul2  # pylint: disable=g-import-not-at-top
    prefix_ids = ul2.check_mode_token(output_features["inputs"].vocabulary, component.mode,
                                      component.mode_token_length)
  if prefix_ids:
    prefix = tf.constant(prefix_ids, tf.int32)

    def prepend(ex):
      return {**ex, "inputs": tf.concat([tf.cast(prefix, ex["inputs"].dtype), ex["inputs"]], 0)}

    ds = ds.map(prepend, num_parallel_calls=tf.data.AUTOTUNE)
  return ds
