"""tf.data helpers shared by objectives: documents -> one token stream -> fixed-size chunks.

Every objective here follows T5's `reduce_concat_tokens` + `split_tokens` recipe (full LM,
span corruption), with one change that keeps the lengths exact: the last partial chunk is
dropped, never padded. Example with chunk length 4 and EOS id 1:

  docs [5, 6, 7], [8, 9], [10, 11, 12]
  -> with EOS    5 6 7 1 8 9 1 10 11 12 1   -> [5 6 7 1] [8 9 1 10]      (11 12 1 dropped)
  -> without EOS 5 6 7 8 9 10 11 12         -> [5 6 7 8] [9 10 11 12]
"""
from __future__ import annotations

from typing import Mapping, Optional

import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError


def eos_id_or_none(feature: seqio.Feature, name: str) -> Optional[int]:
  """The EOS id to append for `feature` (None when add_eos is off); ConfigError if it has none."""
  if not feature.add_eos:
    return None
  eos_id = feature.vocabulary.eos_id
  if eos_id is None:
    raise ConfigError(f"feature {name!r} has add_eos=True but its vocabulary "
                      f"{feature.vocabulary} has no eos_id")
  return int(eos_id)


def pair_vocabulary(output_features: Mapping[str, seqio.Feature], name: str,
                    extra_ids: int = 0, use: str = "sentinels") -> seqio.Vocabulary:
  """The one vocabulary of an objective that emits inputs and targets, checked.

  ConfigError, in one line, unless the task has an "inputs" feature, both features share a
  vocabulary (the objective builds both from one token stream), and that vocabulary
  reserves at least `extra_ids` extra ids (for its `use`: mask id or sentinels).
  """
  if "inputs" not in output_features:
    raise ConfigError(f"{name} emits 'inputs' and 'targets', but the task's output_features "
                      f"are {sorted(output_features)}")
  vocab = output_features["targets"].vocabulary
  if output_features["inputs"].vocabulary != vocab:
    raise ConfigError(f"{name} builds inputs and targets from one token stream, so both "
                      "features need the same vocabulary")
  if (getattr(vocab, "extra_ids", 0) or 0) < extra_ids:
    raise ConfigError(
        f"{name} needs {extra_ids} extra ids ({use}) but the vocabulary {vocab} has "
        f"extra_ids={getattr(vocab, 'extra_ids', 0)}; use a vocabulary with extra_ids>="
        f"{extra_ids} (T5 reserves 100)")
  return vocab


def append_eos(tokens_L: tf.Tensor, eos_id: int) -> tf.Tensor:
  """[5, 6, 7] -> [5, 6, 7, eos_id] (always, unlike seqio's trim-aware append_eos)."""
  return tf.concat([tokens_L, tf.constant([eos_id], dtype=tokens_L.dtype)], axis=0)


def chunk_token_stream(tokens_ds: tf.data.Dataset, chunk_length: int) -> tf.data.Dataset:
  """Concatenates a dataset of 1-D token tensors and yields chunks of exactly chunk_length.

  A `scan` carries the fewer than chunk_length leftover tokens from one document to the
  next and emits all whole chunks at once as a [K, chunk_length] block, which is then
  unbatched. This touches each token once, unlike `unbatch().batch(n)`, which makes one
  dataset element per token. The trailing partial chunk is dropped.
  """
  if chunk_length < 1:
    raise ConfigError(f"chunk length must be >= 1, got {chunk_length}")
  dtype = tokens_ds.element_spec.dtype

  def step(carry_R, doc_L):
    buf_T = tf.concat([carry_R, doc_L], axis=0)
    num_chunks = tf.size(buf_T) // chunk_length
    used = num_chunks * chunk_length
    chunks_KN = tf.reshape(buf_T[:used], [num_chunks, chunk_length])
    return buf_T[used:], chunks_KN

  return tokens_ds.scan(tf.zeros([0], dtype), step).unbatch()


def concat_and_split(ds: tf.data.Dataset, chunk_length: int, feature: str = "targets",
                     eos_id: Optional[int] = None) -> tf.data.Dataset:
  """Documents {feature: int[L]} -> {feature: int[chunk_length]}, remainder dropped.

  Args:
    ds: one tokenized document per element; other features are discarded, since a chunk
      spans several documents.
    chunk_length: the exact length of every output chunk.
    feature: the feature holding the token ids.
    eos_id: when given, appended to every document before concatenation (T5 `full_lm`).
  """
  tokens_ds = ds.map(lambda ex: ex[feature], num_parallel_calls=tf.data.AUTOTUNE)
  if eos_id is not None:
    tokens_ds = tokens_ds.map(lambda t: append_eos(t, eos_id),
                              num_parallel_calls=tf.data.AUTOTUNE)
  chunks = chunk_token_stream(tokens_ds, chunk_length)
  return chunks.map(lambda c: {feature: tf.ensure_shape(c, [chunk_length])},
                    num_parallel_calls=tf.data.AUTOTUNE)


def dense_examples(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Unbatched ragged rows carry a RaggedTensorSpec; a map makes them plain int32[None].

  seqio's converters and `padded_batch` expect plain tensors, so an objective that builds
  examples in ragged batches ends with this.
  """
  return ds.map(lambda ex: {k: tf.ensure_shape(v, [None]) for k, v in ex.items()},
                num_parallel_calls=tf.data.AUTOTUNE)
