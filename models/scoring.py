"""Scored (inputs, targets) pairs, what an architecture's `score_layout` reads.

An evaluation that scores text (the yardstick's bits per byte, zero-shot rank
classification; launch/eval/) builds `Pair`s, and each architecture lays them out in its
own features (`Architecture.score_layout`, defined beside its model):

    features, all_NL, scored_NL = registry.get(arch).score_layout(pairs, length)

`features` are numpy (N, length) arrays, exactly the features the architecture's feature
converter would emit for the pairs unpacked; `all_NL` weighs every target token (sentinels
and EOS included) and `scored_NL` only the text tokens counted in bits per byte. Numpy
only: no seqio, no TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

EOS_ID = 1

# (model features, all-target weights, scored weights), numpy (N, L).
Layout = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Pair:
  """One scored example, before an architecture lays it out.

  Attributes:
    inputs: int32[I], what conditions the targets (I may be 0).
    targets: int32[T], what is scored.
    scored: bool[T], the text tokens counted in bits per byte (not sentinels or EOS).
    num_bytes: UTF-8 bytes of the scored tokens.
    aligned: (inputs, targets) of the aligned form, int32[M] each, for architectures that
      read "aligned" examples (the encoder-only model): the inputs with the scored tokens
      masked, the original ids there and 0 elsewhere. None when the evaluation has no
      aligned form.
  """
  inputs: np.ndarray
  targets: np.ndarray
  scored: np.ndarray
  num_bytes: int
  aligned: Optional[tuple[np.ndarray, np.ndarray]] = None


def shift_right(rows_NL: np.ndarray) -> np.ndarray:
  """seqio's autoregressive inputs: BOS 0, then the padded row shifted by one."""
  return np.pad(rows_NL[:, :-1], ((0, 0), (1, 0)))


def check_fits(used: int, length: int) -> None:
  """ValueError unless an example of `used` positions fits rows of `length`."""
  if used > length:
    raise ValueError(f"an example of {used} tokens does not fit rows of {length}")
