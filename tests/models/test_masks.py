"""Mask values and gradient-based leakage tests: no information flows where a mask forbids.

Leakage is measured on a real (tiny) model: influence[b, q, c, k] = sum |d out[b, q] /
d x[c, k, :]|, where x is the input embedding and out a random projection of the logits.
It must be exactly zero wherever the mask forbids and non-zero wherever it allows
(2 layers of a transitive mask reach exactly what one layer reaches).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models import masks
from objectax.models.decoder import Model
import model_testing as mt  # pylint: disable=g-bad-import-order

CONFIG = mt.tiny_config(16)
L = 8


def test_causal_mask_docstring_example():
  np.testing.assert_array_equal(
      masks.causal_mask(4).astype(int),
      [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])


def test_segment_mask_docstring_example():
  np.testing.assert_array_equal(
      masks.segment_mask(jnp.array([[1, 1, 2, 2, 0]]))[0, 0].astype(int),
      [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])


def test_prefix_mask_docstring_example():
  np.testing.assert_array_equal(
      masks.prefix_mask(jnp.array([[1, 1, 1, 0]]))[0, 0].astype(int),
      [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])


def test_decoder_mask_docstring_example():
  segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2]])
  causal_attention = jnp.array([[1, 1, 1, 0, 1, 1, 1, 0]])
  block = [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
  expected = np.zeros((8, 8), int)
  expected[:4, :4] = block
  expected[4:, 4:] = block
  mask = masks.decoder_mask(segment_ids, causal_attention, True)
  assert mask.shape == (1, 1, 8, 8) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(mask[0, 0].astype(int), expected)
  causal = masks.decoder_mask(segment_ids, causal_attention, False)[0, 0]
  np.testing.assert_array_equal(causal[:4, :4].astype(int), np.tril(np.ones((4, 4), int)))
  assert not causal[:4, 4:].any() and not causal[4:, :4].any()


def test_every_row_attends_somewhere():
  """Padding (segment 0) keeps its diagonal, so no softmax row is empty."""
  segment_ids = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]])
  mask = masks.decoder_mask(segment_ids, jnp.array([[1, 0, 0, 0], [0, 0, 0, 0]]), True)
  assert mask.any(axis=-1).all()


@functools.lru_cache(maxsize=None)
def _params():
  batch = {"decoder_input_tokens": jnp.zeros((1, L), jnp.int32)}
  return Model(CONFIG).init(jax.random.key(0), batch)["params"]


def _influence(batch, bidirectional: bool) -> np.ndarray:
  """influence[b, q, c, k] = sum_d |d (logits[b, q] . r) / d x[c, k, d]|."""
  batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  x_BLD = jax.random.normal(jax.random.key(1),
                            batch["decoder_input_tokens"].shape + (CONFIG.d_model,))
  return np.asarray(_influence_jit(_params(), x_BLD, batch, bidirectional))


@functools.partial(jax.jit, static_argnums=3)
def _influence_jit(params, x_BLD, batch, bidirectional):
  model = Model(CONFIG, bidirectional_inputs=bidirectional)
  r_V = jax.random.normal(jax.random.key(2), (CONFIG.vocab_size,))

  def out_BL(x_BLD):
    logits_BLV = model.apply({"params": params}, x_BLD, batch,
                             method=Model.logits_from_embeddings)
    return logits_BLV @ r_V

  return jnp.abs(jax.jacrev(out_BL)(x_BLD)).sum(-1)


def _expected_flow(batch, bidirectional: bool) -> np.ndarray:
  """allowed[b, q, c, k]: the mask within a row, nothing across rows."""
  mask_BLL = np.asarray(masks.decoder_mask(
      jnp.asarray(batch["decoder_segment_ids"]),
      None if "decoder_causal_attention" not in batch
      else jnp.asarray(batch["decoder_causal_attention"]), bidirectional))[:, 0]
  b, length = mask_BLL.shape[:2]
  allowed = np.zeros((b, length, b, length), bool)
  for i in range(b):
    allowed[i, :, i, :] = mask_BLL[i]
  return allowed


def _batch(segment_ids, causal_attention=None):
  segment_ids = np.asarray(segment_ids, np.int32)
  rng = np.random.default_rng(0)
  batch = {
      "decoder_input_tokens": rng.integers(2, 100, segment_ids.shape),
      "decoder_target_tokens": rng.integers(2, 100, segment_ids.shape) * (segment_ids > 0),
      "decoder_segment_ids": segment_ids,
      "decoder_positions": mt.segment_positions(segment_ids),
  }
  if causal_attention is not None:
    batch["decoder_causal_attention"] = np.asarray(causal_attention, np.int32)
  return batch


def test_causal_leakage_single_segment():
  batch = _batch([[1] * L])
  influence = _influence(batch, bidirectional=False)
  mt.assert_flow_matches(influence, _expected_flow(batch, False))
  # The explicit statement: no future position reaches the past.
  future = np.triu(np.ones((L, L), bool), k=1)
  assert np.all(influence[0, :, 0, :][future] == 0.0)


def test_packed_segments_do_not_leak():
  batch = _batch([[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 3]])
  for bidirectional in (False, True):
    influence = _influence(batch, bidirectional)
    mt.assert_flow_matches(influence, _expected_flow(batch, bidirectional))
    assert np.all(influence[0, :3, 0, 3:] == 0.0) and np.all(influence[0, 3:7, 0, :3] == 0.0)


def test_prefix_decoder_sees_later_inputs_but_not_targets():
  # inputs of 3 tokens -> causal_attention covers 3 + 1 positions.
  causal_attention = [[1, 1, 1, 1, 0, 0, 0, 0]]
  batch = _batch([[1] * L], causal_attention)
  influence = _influence(batch, bidirectional=True)[0, :, 0, :]
  mt.assert_flow_matches(influence[None, :, None, :], _expected_flow(batch, True))
  for q in range(4):
    for k in range(q + 1, 4):
      assert influence[q, k] > 0.0, (q, k)  # later input -> earlier input
    for k in range(4, L):
      assert influence[q, k] == 0.0, (q, k)  # target -> prefix
  for q in range(4, L):
    for k in range(q + 1, L):
      assert influence[q, k] == 0.0, (q, k)  # causal after the prefix
  # The same features through the causal decoder: no backward flow at all.
  causal = _influence(batch, bidirectional=False)[0, :, 0, :]
  assert np.all(causal[np.triu(np.ones((L, L), bool), k=1)] == 0.0)
  assert causal[L - 1].min() > 0.0  # the last position sees the whole row


def test_prefix_decoder_packed_prefixes_stay_in_their_segment():
  batch = _batch([[1, 1, 1, 1, 2, 2, 2, 0]], [[1, 1, 0, 0, 1, 1, 0, 0]])
  influence = _influence(batch, bidirectional=True)
  mt.assert_flow_matches(influence, _expected_flow(batch, True))
  assert influence[0, 0, 0, 1] > 0.0 and influence[0, 4, 0, 5] > 0.0
  assert influence[0, 3, 0, 4] == 0.0 and influence[0, 4, 0, 3] == 0.0


def test_padding_outputs_are_finite():
  batch = {k: jnp.asarray(v) for k, v in _batch([[1, 1, 1, 0, 0, 0, 0, 0]],
                                                [[1, 1, 0, 0, 0, 0, 0, 0]]).items()}
  for bidirectional in (False, True):
    logits = Model(CONFIG, bidirectional_inputs=bidirectional).apply(
        {"params": _params()}, batch)
    assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_leakage_test_detects_a_broken_mask(bidirectional, monkeypatch):
  """Sanity check of the harness: an all-True mask must fail the causal expectation."""
  batch = _batch([[1] * L])
  monkeypatch.setattr(masks, "decoder_mask",
                      lambda s, c=None, b=False: jnp.ones((s.shape[0], 1, L, L), bool))
  _influence_jit.clear_cache()  # retrace with the broken mask ...
  try:
    influence = _influence(batch, bidirectional)
  finally:
    monkeypatch.undo()
    _influence_jit.clear_cache()  # ... and never let it serve another test
  with pytest.raises(AssertionError):
    mt.assert_flow_matches(influence, _expected_flow(batch, False))


def test_docstring_worked_examples_hold():
  import doctest  # pylint: disable=g-import-not-at-top
  result = doctest.testmod(masks)
  assert result.attempted >= 7 and result.failed == 0
