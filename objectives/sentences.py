"""Sentence boundaries on token ids, for the objectives that work on sentences.

BART's sentence permutation splits "at full stops" (fairseq `permute_sentences` looks for
the id of "."); PEGASUS selects whole sentences. Both run after tokenization here, so a
sentence ends after any token whose text ends in ".", "!" or "?" (a SentencePiece piece
such as "." or "▁." or "s." ; the byte "." of the byte vocabulary), and after EOS.
Abbreviations ("e.g.") therefore end a sentence too: a simple, documented rule that needs
no tokenizer in the graph.

Example with the byte vocabulary (id = byte + 3, so "." = 49, "!" = 36, " " = 35, EOS = 1),
the text "Hi. Ok! h", EOS, "E" (a real run of `sentence_ids`):

  tokens        [75, 108, 49, 35, 82, 110, 36, 35, 107, 1, 72]
  sentence ids  [ 0,   0,  0,  1,  1,   1,  1,  2,   2, 2,  3]
"""
from __future__ import annotations

import seqio
import tensorflow as tf

SENTENCE_END_CHARS = (".", "!", "?")


_CACHE: dict[int, tuple[seqio.Vocabulary, tuple[int, ...]]] = {}


def sentence_end_ids(vocabulary: seqio.Vocabulary) -> tuple[int, ...]:
  """Ids of the vocabulary's tokens whose text ends a sentence, plus EOS.

  Looks at every regular id once (about 10 ms for 8,000 SentencePiece pieces) and caches
  the answer per vocabulary object. Sentinels (extra ids) are never sentence ends.
  """
  cached = _CACHE.get(id(vocabulary))
  if cached is not None and cached[0] is vocabulary:  # seqio vocabularies are unhashable
    return cached[1]
  regular = vocabulary.vocab_size - getattr(vocabulary, "extra_ids", 0)
  ends = set()
  for i in range(regular):
    try:
      text = vocabulary.decode([i])
    except Exception:  # pylint: disable=broad-except  (control ids some vocabularies refuse)
      continue
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="ignore")
    if text.rstrip().endswith(SENTENCE_END_CHARS):
      ends.add(i)
  if vocabulary.eos_id is not None:
    ends.add(int(vocabulary.eos_id))
  _CACHE[id(vocabulary)] = (vocabulary, tuple(sorted(ends)))
  return _CACHE[id(vocabulary)][1]


def sentence_ids(tokens_L: tf.Tensor, end_ids: tuple[int, ...]) -> tf.Tensor:
  """int32[L]: the index of the sentence each token belongs to (a sentence ends after an end id)."""
  ends_L = tf.reduce_any(
      tf.equal(tokens_L[:, None], tf.constant(end_ids, tokens_L.dtype)[None, :]), axis=1)
  return tf.cumsum(tf.cast(ends_L, tf.int32), exclusive=True)
