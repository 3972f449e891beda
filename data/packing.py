"""First-fit packing: examples of varying length into fixed rows, with little padding.

seqio's packer (`seqio.utils.trim_and_pack_dataset` without t2t's custom ops) fills a row
with the next examples in order and closes it as soon as one does not fit, so a short
example followed by a long one leaves the short one's row mostly empty. Objectives whose
examples vary in length (T5's prefix LM on document tails, PEGASUS's one example per
document, BART) lose up to a third of every batch that way.

`first_fit_pack` keeps the same output contract (for every packed feature `k`: `k`,
`k_segment_ids` numbered 1, 2, ... within a row, `k_positions` from 0 in each example,
0 on padding) and places each example in the first row, among all rows opened for the
current window of `window` examples, where every one of its features fits. Once the
window is placed, its rows come out in an order shuffled with a fixed seed per window, so
that a batch mixes the window's fullest rows with the rest. An example is cut to the
feature lengths first, as seqio does. An example's length is its feature's size, not its
count of non-zero ids, so ids equal to 0 inside an example stay in place.

`use_first_fit(converter)` makes a seqio FeatureConverter pack this way: every converter
that packs through seqio's `FeatureConverter._pack_or_pad` (all of seqio's, ours, and a
plugin's built on them) does. Examples that arrive already packed (they carry
`*_segment_ids`, e.g. the encoder-decoder prefix LM's pairs) go to the converter's own
method unchanged. `Experiment.packer` chooses: "first_fit" (default) or "in_order"
(seqio's packer exactly).
"""
from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf

_LENGTH = "__length__"  # per-example feature lengths, (num features,), while packing


def first_fit_pack(ds: tf.data.Dataset, feature_lengths: Mapping[str, int],
                   window: int = 0) -> tf.data.Dataset:
  """Packs `ds` into rows of `feature_lengths` by first fit over `window` examples.

  `window` defaults to the longest feature length, the number of examples seqio's packer
  takes at a time. Features not in `feature_lengths` are dropped, as seqio does.
  """
  keys = list(feature_lengths)
  for k in keys:
    if k not in ds.element_spec:
      raise ValueError(f"feature {k!r} is not in the dataset; it has {sorted(ds.element_spec)}")
    if ds.element_spec[k].shape.rank != 1:
      raise ValueError(f"feature {k!r} must be one-dimensional to be packed, "
                       f"not {ds.element_spec[k].shape}")
  limits = tf.constant([int(feature_lengths[k]) for k in keys], tf.int32)
  window = int(window) or max(int(n) for n in feature_lengths.values())

  def trim(ex):
    out = {k: tf.cast(ex[k][:feature_lengths[k]], tf.int32) for k in keys}
    out[_LENGTH] = tf.stack([tf.size(out[k], out_type=tf.int32) for k in keys])
    return out

  def pack_window(index, chunk):
    lengths_NF = chunk[_LENGTH]
    n = tf.shape(lengths_NF)[0]
    # Place each example: its row, its offset in each feature, its segment id.
    fill_RF = tf.zeros([n, len(keys)], tf.int32)      # at most n rows
    count_R = tf.zeros([n], tf.int32)
    rows = tf.TensorArray(tf.int32, size=n)
    offsets = tf.TensorArray(tf.int32, size=n, element_shape=[len(keys)])
    segments = tf.TensorArray(tf.int32, size=n)
    for e in tf.range(n):
      fits_R = tf.reduce_all(fill_RF + lengths_NF[e] <= limits, axis=1)
      row = tf.argmax(tf.cast(fits_R, tf.int32), output_type=tf.int32)  # an empty row fits
      rows = rows.write(e, row)
      offsets = offsets.write(e, fill_RF[row])
      segments = segments.write(e, count_R[row] + 1)
      fill_RF = tf.tensor_scatter_nd_add(fill_RF, [[row]], [lengths_NF[e]])
      count_R = tf.tensor_scatter_nd_add(  # an empty example takes no segment id
          count_R, [[row]], [tf.cast(tf.reduce_any(lengths_NF[e] > 0), tf.int32)])
    row_N, offset_NF, segment_N = rows.stack(), offsets.stack(), segments.stack()
    used = tf.reduce_max(row_N) + 1
    # The first rows opened are the fullest and the last hold what was left; shuffled, each
    # batch draws from the whole window instead of from one end of it.
    order_R = tf.argsort(tf.random.stateless_uniform([used], seed=tf.stack([index, 0])))
    row_N = tf.gather(tf.argsort(order_R), row_N)
    out = {}
    for f, k in enumerate(keys):
      tokens_NL = chunk[k]
      length = feature_lengths[k]
      # Every real token (e, j): to row row_N[e], column offset_NF[e, f] + j.
      j_NL = tf.broadcast_to(tf.range(tf.shape(tokens_NL)[1]), tf.shape(tokens_NL))
      real_NL = j_NL < lengths_NF[:, f:f + 1]
      where = tf.where(real_NL)
      e_T, j_T = tf.cast(where[:, 0], tf.int32), tf.cast(where[:, 1], tf.int32)
      index_T2 = tf.stack([tf.gather(row_N, e_T), tf.gather(offset_NF[:, f], e_T) + j_T], 1)
      shape = tf.stack([used, length])
      out[k] = tf.scatter_nd(index_T2, tf.boolean_mask(tokens_NL, real_NL), shape)
      out[f"{k}_segment_ids"] = tf.scatter_nd(index_T2, tf.gather(segment_N, e_T), shape)
      out[f"{k}_positions"] = tf.scatter_nd(index_T2, j_T, shape)
    return out

  ds = ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.padded_batch(window, padded_shapes={**{k: [-1] for k in keys}, _LENGTH: [len(keys)]})
  ds = ds.enumerate().map(pack_window, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

  def set_shapes(row):
    for name, v in row.items():
      v.set_shape([feature_lengths[name.removesuffix("_segment_ids").removesuffix("_positions")]])
    return row

  return ds.map(set_shapes, num_parallel_calls=tf.data.AUTOTUNE)


def use_first_fit(converter: Any) -> Any:
  """Makes `converter` (a seqio FeatureConverter) and the converters it delegates to
  (seqio's DecoderFeatureConverter keeps one per layout) pack by first fit. Returns it."""
  targets = [converter] + [v for v in vars(converter).values() if hasattr(v, "_pack_or_pad")]
  for target in targets:
    own = target._pack_or_pad  # pylint: disable=protected-access

    def pack_or_pad(ds, packed_lengths, target=target, own=own):
      prepacked = any(f"{k}_segment_ids" in ds.element_spec for k in packed_lengths)
      if not target.pack or prepacked:
        return own(ds, packed_lengths)
      return first_fit_pack(ds, packed_lengths)

    target._pack_or_pad = pack_or_pad  # pylint: disable=protected-access
  return converter
