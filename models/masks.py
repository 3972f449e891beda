"""Boolean attention masks (True = may attend).

Shapes: B batch, L (query) length, S key length where it differs (the encoder's, in
cross-attention); a full mask is mask_B1LL[b, 0, q, k] (query q, key k), the head axis
left at 1 to broadcast in `jax.nn.dot_product_attention`. The semantics follow seqio's
feature converters and T5X's `make_decoder_mask` / `make_attention_mask`:

  causal decoder (CD): causal AND same segment
  prefix decoder (ND): (causal OR both positions in the prefix) AND same segment
  encoder (ED, EO):    same segment (bidirectional)
  cross-attention (ED): same segment AND the key is not padding

Every self-attention row keeps at least its diagonal (a position always sees itself,
padding included), so no softmax row is empty and nothing turns into NaN. A
cross-attention row can be empty (a padding query); the encoder-decoder block zeroes
those rows' output (layers.DecoderBlock).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def causal_mask(length: int) -> jax.Array:
  """mask_LL[q, k] = k <= q: each position sees itself and the past.

  >>> print(causal_mask(4).astype(int))
  [[1 0 0 0]
   [1 1 0 0]
   [1 1 1 0]
   [1 1 1 1]]
  """
  positions_L = jnp.arange(length)
  return positions_L[None, :] <= positions_L[:, None]


def segment_mask(segment_ids_BL: jax.Array) -> jax.Array:
  """mask_B1LL[b, 0, q, k] = segment_ids[b, q] == segment_ids[b, k].

  Packed examples never attend across segments. Padding (segment 0) attends only to
  padding, never to a real token and never from one; its outputs carry no loss weight.

  Two examples packed into one row of 5, then one pad:
  >>> print(segment_mask(jnp.array([[1, 1, 2, 2, 0]]))[0, 0].astype(int))
  [[1 1 0 0 0]
   [1 1 0 0 0]
   [0 0 1 1 0]
   [0 0 1 1 0]
   [0 0 0 0 1]]
  """
  return segment_ids_BL[:, None, :, None] == segment_ids_BL[:, None, None, :]


def prefix_mask(causal_attention_BL: jax.Array) -> jax.Array:
  """mask_B1LL[b, 0, q, k] = causal_attention[b, q] and causal_attention[b, k].

  `decoder_causal_attention` (seqio PrefixLMFeatureConverter) is 1 on the inputs plus
  one more position: the one that reads the last input token (EOS) and predicts the
  first target. Those len(inputs)+1 positions see each other in both directions; on its
  own this mask lets nothing else attend (combine it with `causal_mask`).

  inputs [9, 1] ("x", EOS), targets [4, 1] ("y", EOS) give
  decoder_input_tokens [0, 9, 1, 4], decoder_target_tokens [9, 1, 4, 1],
  decoder_causal_attention [1, 1, 1, 0] and decoder_loss_weights [0, 0, 1, 1]:
  >>> print(prefix_mask(jnp.array([[1, 1, 1, 0]]))[0, 0].astype(int))
  [[1 1 1 0]
   [1 1 1 0]
   [1 1 1 0]
   [0 0 0 0]]
  """
  prefix_BL = causal_attention_BL.astype(bool)
  return prefix_BL[:, None, :, None] & prefix_BL[:, None, None, :]


def decoder_mask(
    segment_ids_BL: jax.Array,
    causal_attention_BL: Optional[jax.Array] = None,
    bidirectional_inputs: bool = False,
) -> jax.Array:
  """The self-attention mask of a decoder-only model, mask_B1LL (bool).

  Causal within each segment; with `bidirectional_inputs` (the prefix decoder) the
  positions flagged in `causal_attention_BL` also see each other both ways. Without
  `bidirectional_inputs`, or without that feature (plain LM data), the mask is causal:
  a prefix decoder with an empty prefix is a causal decoder.

  The example of `prefix_mask` packed with a second example [5, 1] -> [6, 1]
  (decoder_input_tokens [0, 9, 1, 4, 0, 5, 1, 6]):
  >>> segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2]])
  >>> causal_attention = jnp.array([[1, 1, 1, 0, 1, 1, 1, 0]])
  >>> print(decoder_mask(segment_ids, causal_attention, True)[0, 0].astype(int))
  [[1 1 1 0 0 0 0 0]
   [1 1 1 0 0 0 0 0]
   [1 1 1 0 0 0 0 0]
   [1 1 1 1 0 0 0 0]
   [0 0 0 0 1 1 1 0]
   [0 0 0 0 1 1 1 0]
   [0 0 0 0 1 1 1 0]
   [0 0 0 0 1 1 1 1]]

  With bidirectional_inputs=False the same features give the block-diagonal causal mask:
  >>> print(decoder_mask(segment_ids, causal_attention, False)[0, 0, 3].astype(int))
  [1 1 1 1 0 0 0 0]
  """
  length = segment_ids_BL.shape[-1]
  mask_B1LL = causal_mask(length)[None, None, :, :]
  if bidirectional_inputs and causal_attention_BL is not None:
    mask_B1LL = mask_B1LL | prefix_mask(causal_attention_BL)
  return mask_B1LL & segment_mask(segment_ids_BL)


def encoder_mask(segment_ids_BS: jax.Array) -> jax.Array:
  """The self-attention mask of an encoder, mask_B1SS: bidirectional within each segment.

  Packed: the batch's `encoder_segment_ids`. Unpacked: `encoder_input_tokens > 0`
  (1 on real tokens, 0 on padding), as T5X masks encoder padding.

  seqio's packed EncDec example, inputs [7, 8, 5, 1] and [8, 4, 9, 3, 1] in a row of 10
  (encoder_input_tokens [7, 8, 5, 1, 8, 4, 9, 3, 1, 0]):
  >>> mask = encoder_mask(jnp.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]]))
  >>> print(mask[0, 0].astype(int))
  [[1 1 1 1 0 0 0 0 0 0]
   [1 1 1 1 0 0 0 0 0 0]
   [1 1 1 1 0 0 0 0 0 0]
   [1 1 1 1 0 0 0 0 0 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 0 0 0 0 0 1]]
  """
  return segment_mask(segment_ids_BS)


def cross_attention_mask(decoder_segment_ids_BL: jax.Array,
                         encoder_segment_ids_BS: jax.Array) -> jax.Array:
  """mask_B1LS[b, 0, q, k] = dec_seg[b, q] == enc_seg[b, k] != 0.

  Decoder position q of an encoder-decoder sees every real encoder position of its own
  example (segment) and nothing else: no other packed example, never encoder padding.
  Decoder padding (segment 0) sees nothing, so its row is empty (see the module
  docstring). Unpacked, the segment ids are `decoder_target_tokens > 0` and
  `encoder_input_tokens > 0`.

  The same two examples as in `encoder_mask`, with targets [3, 9, 1] and [4, 1] packed
  into a decoder row of 7 (decoder_target_tokens [3, 9, 1, 4, 1, 0, 0]):
  >>> encoder_segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]])
  >>> decoder_segment_ids = jnp.array([[1, 1, 1, 2, 2, 0, 0]])
  >>> mask = cross_attention_mask(decoder_segment_ids, encoder_segment_ids)
  >>> print(mask[0, 0].astype(int))
  [[1 1 1 1 0 0 0 0 0 0]
   [1 1 1 1 0 0 0 0 0 0]
   [1 1 1 1 0 0 0 0 0 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 1 1 1 1 1 0]
   [0 0 0 0 0 0 0 0 0 0]
   [0 0 0 0 0 0 0 0 0 0]]
  """
  same_BLS = decoder_segment_ids_BL[:, :, None] == encoder_segment_ids_BS[:, None, :]
  return (same_BLS & (encoder_segment_ids_BS[:, None, :] > 0))[:, None, :, :]
