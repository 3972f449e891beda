"""Encoder-only model (EO): bidirectional leakage, packing, the MLM converter, training.

Leakage is measured as in test_masks.py: influence[b, q, c, k] = sum |d out[b, q] /
d x[c, k, :]|, x the input embedding and out a random projection of the logits. Within a
segment every position must reach every other one (both directions); nothing may cross a
segment, a row, or flow from padding into a real token.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models.registry import ConfigError
from objectax.models import encoder
from objectax.models import masks
from objectax.models.losses import weighted_cross_entropy
import model_testing as mt  # pylint: disable=g-bad-import-order

CONFIG = mt.tiny_config()
MASK_ID = CONFIG.vocab_size - 1  # the synthetic mask id (vocab_size 100 rounds up to 128)
L = 8


def _init(model, length=L, batch_size=1):
  return encoder.init_params(model, encoder.batch_spec({"targets": length}, batch_size),
                             jax.random.key(0))


# ---------------------------------------------------------------- leakage by gradients


@functools.lru_cache(maxsize=None)
def _params():
  return _init(encoder.Model(CONFIG))


@jax.jit
def _influence_jit(params, x_BLD, batch):
  r_V = jax.random.normal(jax.random.key(2), (CONFIG.vocab_size,))

  def out_BL(x_BLD):
    return encoder.Model(CONFIG).apply({"params": params}, x_BLD, batch,
                                       method=encoder.Model.logits_from_embeddings) @ r_V

  return jnp.abs(jax.jacrev(out_BL)(x_BLD)).sum(-1)


def _influence(batch):
  batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  shape = batch[encoder.INPUTS_KEY].shape + (CONFIG.d_model,)
  x_BLD = jax.random.normal(jax.random.key(1), shape)
  return np.asarray(_influence_jit(_params(), x_BLD, batch))


def _allowed(segment_ids):
  """allowed[b, q, c, k]: same row and same segment (padding only with padding)."""
  segment_ids = np.asarray(segment_ids)
  b, length = segment_ids.shape
  allowed = np.zeros((b, length, b, length), bool)
  for i in range(b):
    allowed[i, :, i, :] = segment_ids[i][:, None] == segment_ids[i][None, :]
  return allowed


def _packed_batch(segment_ids):
  segment_ids = np.asarray(segment_ids, np.int32)
  rng = np.random.default_rng(0)
  return {encoder.INPUTS_KEY: rng.integers(3, 100, segment_ids.shape) * (segment_ids > 0),
          encoder.SEGMENT_IDS_KEY: segment_ids,
          encoder.POSITIONS_KEY: mt.segment_positions(segment_ids)}


def test_bidirectional_within_segments_nothing_across_or_from_padding():
  segment_ids = [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 3]]
  influence = _influence(_packed_batch(segment_ids))
  mt.assert_flow_matches(influence, _allowed(segment_ids))
  # Spelled out: the first position reads the last of its segment (no causal mask) ...
  assert influence[0, 0, 0, 2] > 0.0 and influence[0, 3, 0, 6] > 0.0
  # ... and no real token reads the other segment, the other row, or the padding.
  assert np.all(influence[0, :7, 0, 7] == 0.0) and np.all(influence[0, :3, 0, 3:] == 0.0)
  assert np.all(influence[0, :, 1, :] == 0.0)


def test_unpacked_padding_is_inputs_zero():
  tokens = np.array([[5, 6, 7, MASK_ID, 9, 0, 0, 0], [4] * L], np.int32)
  influence = _influence({encoder.INPUTS_KEY: tokens})
  mt.assert_flow_matches(influence, _allowed(tokens > 0))
  assert np.all(influence[0, :5, 0, 5:] == 0.0)


def test_leakage_harness_detects_broken_masks(monkeypatch):
  """A causal mask (not bidirectional) and an all-True mask (leaks) must both fail."""
  segment_ids = [[1, 1, 1, 2, 2, 2, 2, 0]]
  segment_mask = masks.segment_mask
  broken = {
      "causal": lambda s: segment_mask(s) & masks.causal_mask(s.shape[-1])[None, None],
      "all": lambda s: jnp.ones((s.shape[0], 1, s.shape[1], s.shape[1]), bool),
  }
  for fn in broken.values():
    monkeypatch.setattr(masks, "segment_mask", fn)
    _influence_jit.clear_cache()  # retrace with the broken mask ...
    try:
      influence = _influence(_packed_batch(segment_ids))
    finally:
      monkeypatch.undo()
      _influence_jit.clear_cache()  # ... and never let it serve another test
    with pytest.raises(AssertionError):
      mt.assert_flow_matches(influence, _allowed(segment_ids))


# ---------------------------------------------------------------- packed == unpacked


EXAMPLES = [  # (inputs, targets), aligned; MASK_ID masked, 42 random, 7 kept
    ([5, MASK_ID, 7, 1], [0, 6, 7, 0]),
    ([9, 10, 42, MASK_ID, 1], [0, 0, 11, 12, 0]),
]


def _unpacked(inputs, targets, length):
  pad = [0] * (length - len(inputs))
  return {encoder.INPUTS_KEY: np.asarray([list(inputs) + pad], np.int32),
          encoder.TARGETS_KEY: np.asarray([list(targets) + pad], np.int32),
          encoder.WEIGHTS_KEY: np.asarray([[int(t > 0) for t in targets] + pad], np.int32)}


def _packed(examples, length):
  rows = [_unpacked(i, t, len(i)) for i, t in examples]
  batch = {k: np.concatenate([r[k][0] for r in rows]) for k in rows[0]}
  batch[encoder.SEGMENT_IDS_KEY] = np.concatenate(
      [np.full(len(i), s + 1) for s, (i, _) in enumerate(examples)])
  batch[encoder.POSITIONS_KEY] = np.concatenate([np.arange(len(i)) for i, _ in examples])
  used = len(batch[encoder.SEGMENT_IDS_KEY])
  return {k: np.pad(v, (0, length - used))[None].astype(np.int32) for k, v in batch.items()}


@pytest.mark.parametrize("tie", [True, False])
def test_packed_equals_unpacked(tie):
  cfg = mt.tiny_config(tie_embeddings=tie)
  length = 12
  model = encoder.Model(cfg)
  params = _init(model, length)
  packed = _packed(EXAMPLES, length)
  logits_packed = model.apply({"params": params}, packed)
  start = 0
  for inputs, targets in EXAMPLES:
    n = len(inputs)
    alone = _unpacked(inputs, targets, length)
    logits_alone = model.apply({"params": params}, alone)
    np.testing.assert_allclose(logits_packed[0, start:start + n], logits_alone[0, :n],
                               atol=1e-5)
    part = slice(start, start + n)
    loss_packed = weighted_cross_entropy(
        logits_packed[:, part], packed[encoder.TARGETS_KEY][:, part],
        packed[encoder.WEIGHTS_KEY][:, part], 1e-4)
    loss_alone = weighted_cross_entropy(logits_alone, alone[encoder.TARGETS_KEY],
                                        alone[encoder.WEIGHTS_KEY], 1e-4)
    np.testing.assert_allclose(np.array(loss_packed), np.array(loss_alone), rtol=1e-5,
                               atol=1e-5)
    start += n
  # Positions are read: all-zero positions remove the order information.
  flat = dict(packed, encoder_positions=np.zeros((1, length), np.int32))
  assert not np.allclose(model.apply({"params": params}, flat)[0, 4:9],
                         logits_packed[0, 4:9], atol=1e-3)


def test_unpacked_synthetic_batch_equals_one_segment_per_row():
  spec = encoder.batch_spec({"inputs": 12, "targets": 12}, 3, pack=False)
  batch = encoder.synthetic_batch(spec, CONFIG.vocab_size, 0)
  real = batch[encoder.INPUTS_KEY] > 0
  assert (~real).any()  # some rows are padded
  model = encoder.Model(CONFIG)
  params = encoder.init_params(model, spec, jax.random.key(0))
  logits = mt.unpacked_logits_checked(model, params, batch, real, "encoder")
  assert logits.shape == (3, 12, CONFIG.vocab_size)


# ---------------------------------------------------------------- the feature converter


def _tf():
  tf = pytest.importorskip("tensorflow")
  tf.config.set_visible_devices([], "GPU")
  return tf


def _dataset(tf, examples):
  return tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.asarray(i, np.int32), "targets": np.asarray(t, np.int32)}
               for i, t in examples),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})


def _bert_examples(tf, seqio, length, seed=3):
  """Real bert_mlm examples (objectives/bert_mlm.py) over random byte-id documents."""
  from objectax.objectives import bert_mlm  # pylint: disable=g-import-not-at-top
  vocab = seqio.ByteVocabulary(extra_ids=100)
  features = {k: seqio.Feature(vocab, add_eos=True) for k in ("inputs", "targets")}
  rng = np.random.default_rng(seed)
  docs = [rng.integers(3, 259, rng.integers(5, 40)).astype(np.int32) for _ in range(40)]
  docs_ds = tf.data.Dataset.from_generator(
      lambda: ({"targets": d} for d in docs),
      output_signature={"targets": tf.TensorSpec([None], tf.int32)})
  with seqio.utils.map_seed_manager(seed):
    ds = bert_mlm.preprocess(docs_ds, {"inputs": length, "targets": length}, features)
  examples = [(ex["inputs"], ex["targets"]) for ex in ds.as_numpy_iterator()]
  return examples, vocab.vocab_size - 1


def test_docstring_worked_example_and_seqio_faults():
  tf = _tf()
  seqio = pytest.importorskip("seqio")
  examples = [([3, 358, 5, 6, 7, 1], [0, 4, 5, 0, 0, 0]),
              ([9, 10, 11, 358, 77, 1], [0, 0, 0, 12, 13, 0])]
  lengths = {"inputs": 14, "targets": 14}
  row = next(encoder.feature_converter(pack=True)(_dataset(tf, examples), lengths)
             .as_numpy_iterator())
  expected = {
      "encoder_input_tokens": [3, 358, 5, 6, 7, 1, 9, 10, 11, 358, 77, 1, 0, 0],
      "encoder_target_tokens": [0, 4, 5, 0, 0, 0, 0, 0, 0, 12, 13, 0, 0, 0],
      "encoder_loss_weights": [0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0],
      "encoder_segment_ids": [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0],
      "encoder_positions": [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 0],
  }
  assert set(row) == set(expected)
  for k, v in expected.items():
    np.testing.assert_array_equal(row[k], v, err_msg=k)
  # seqio's converter on the same row: half the predictions lost, and packing cuts
  # each example's targets to its count of non-zero ids, moving them (12 and 13 vanish).
  theirs = next(seqio.EncoderFeatureConverter(mask_id=358, pack=True)(
      _dataset(tf, examples), lengths).as_numpy_iterator())
  assert theirs["encoder_loss_weights"].sum() == 2
  assert not np.array_equal(theirs["encoder_target_tokens"], expected["encoder_target_tokens"])


@pytest.mark.parametrize("pack", [True, False])
def test_converter_weights_every_selected_position_of_bert_mlm(pack):
  tf = _tf()
  seqio = pytest.importorskip("seqio")
  examples, mask_id = _bert_examples(tf, seqio, 16)
  assert len(examples) >= 20
  # Rows of 40 hold two 16-token chunks and 8 padding when packed.
  lengths = {"inputs": 40, "targets": 40}
  rows = list(encoder.feature_converter(pack=pack)(_dataset(tf, examples), lengths)
              .as_numpy_iterator())
  spec = encoder.batch_spec(lengths, 1, pack=pack)
  for row in rows:
    assert set(row) == set(spec)
    assert all(row[k].shape == spec[k].shape[1:] and row[k].dtype == np.int32 for k in spec)
  # Cut the rows back into examples: they must be the originals, in order.
  got = []
  for row in rows:
    seg = row["encoder_segment_ids"] if pack else (row["encoder_input_tokens"] > 0)
    np.testing.assert_array_equal(row["encoder_loss_weights"], row["encoder_target_tokens"] > 0)
    assert np.all(row["encoder_target_tokens"][seg == 0] == 0)
    for s in np.unique(seg[seg > 0]):
      where = np.flatnonzero(seg == s)
      assert np.all(np.diff(where) == 1)
      if pack:
        np.testing.assert_array_equal(row["encoder_positions"][where], np.arange(len(where)))
      got.append((row["encoder_input_tokens"][where], row["encoder_target_tokens"][where]))
  assert len(got) == len(examples)
  if pack:
    assert len(rows) == -(-len(examples) // 2)
  for (inputs, targets), (got_inputs, got_targets) in zip(examples, got):
    np.testing.assert_array_equal(got_inputs, inputs)
    np.testing.assert_array_equal(got_targets, targets)
  # The weights cover the random and kept predictions, which seqio's converter drops.
  inputs = np.concatenate([i for i, _ in examples])
  targets = np.concatenate([t for _, t in examples])
  selected = targets > 0
  random, kept = selected & (inputs != mask_id) & (inputs != targets), selected & (inputs == targets)
  assert random.sum() > 0 and kept.sum() > 0
  assert sum(int(r["encoder_loss_weights"].sum()) for r in rows) == selected.sum()
  theirs = list(seqio.EncoderFeatureConverter(mask_id=mask_id, pack=pack)(
      _dataset(tf, examples), lengths).as_numpy_iterator())
  assert sum(int(r["encoder_loss_weights"].sum()) for r in theirs) == (
      selected.sum() - random.sum() - kept.sum())


def test_converter_rejects_misaligned_data():
  tf = _tf()
  with pytest.raises(ConfigError, match="aligned"):
    encoder.model_lengths({"inputs": 16, "targets": 12})
  with pytest.raises(ConfigError, match="aligned"):
    encoder.feature_converter()(_dataset(tf, [([5, 6], [0, 6])]), {"inputs": 16, "targets": 12})
  ds = _dataset(tf, [([5, 6, 1], [0, 6])])
  with pytest.raises(tf.errors.InvalidArgumentError, match="position-aligned"):
    list(encoder.feature_converter(pack=False)(ds, {"inputs": 8, "targets": 8}))


# ---------------------------------------------------------------- shapes, params, training


@pytest.mark.parametrize("pack", [True, False])
def test_synthetic_batch_matches_spec_and_bert_statistics(pack):
  assert encoder.model_lengths({"inputs": 512, "targets": 512}, 999) == {"encoder": 512}
  spec = encoder.batch_spec({"inputs": 64, "targets": 64}, 16, pack=pack)
  base = {encoder.INPUTS_KEY, encoder.TARGETS_KEY, encoder.WEIGHTS_KEY}
  assert set(spec) == (base | {encoder.SEGMENT_IDS_KEY, encoder.POSITIONS_KEY} if pack else base)
  batch = encoder.synthetic_batch(spec, CONFIG.vocab_size, 0)
  assert set(batch) == set(spec)
  assert all(batch[k].shape == (16, 64) and batch[k].dtype == np.int32 for k in spec)
  inputs, targets = batch[encoder.INPUTS_KEY], batch[encoder.TARGETS_KEY]
  np.testing.assert_array_equal(batch[encoder.WEIGHTS_KEY], targets > 0)
  real = inputs > 0
  num_segments = 0
  for b in range(16):
    n = int(real[b].sum())
    assert np.all(real[b, :n]) and not real[b, n:].any()  # padding only at the end
    if pack:
      seg, pos = batch[encoder.SEGMENT_IDS_KEY][b], batch[encoder.POSITIONS_KEY][b]
      np.testing.assert_array_equal(seg > 0, real[b])
      assert np.all(np.diff(seg[:n]) >= 0) and seg[0] == 1
      for s in np.unique(seg[:n]):
        where = np.flatnonzero(seg == s)
        np.testing.assert_array_equal(pos[where], np.arange(len(where)))
        assert inputs[b, where[-1]] == 1 and targets[b, where[-1]] == 0  # EOS, not selected
        num_segments += 1
    else:
      assert inputs[b, n - 1] == 1
  if pack:
    assert num_segments > 16  # some rows hold several examples
  selected = targets > 0
  candidates = real & (inputs != 1)
  assert 0.10 < selected.sum() / candidates.sum() < 0.20  # 15%
  assert selected.sum() > 100
  masked = (inputs == MASK_ID) & selected
  kept = (inputs == targets) & selected
  assert 0.65 < masked.sum() / selected.sum() < 0.92  # 80% mask
  assert kept.any() and (selected & ~masked & ~kept).any()  # some random, some kept
  assert np.all(inputs[real & ~selected] != MASK_ID) and inputs.max() < CONFIG.vocab_size


@pytest.mark.parametrize("tie", [True, False])
def test_params_carry_logical_axes_and_match_num_params(tie):
  cfg = mt.tiny_config(tie_embeddings=tie)
  mt.assert_num_params(mt.unbox_checked(_init(encoder.Model(cfg))), cfg)


def test_dropout_and_bfloat16():
  mt.assert_dropout_only_in_training(encoder)


@pytest.mark.e2e
def test_tiny_model_learns_mlm():
  model = encoder.Model(CONFIG)
  spec = encoder.batch_spec({"targets": 32}, 4)
  batch = encoder.synthetic_batch(spec, CONFIG.vocab_size, 0)
  params = nn.unbox(encoder.init_params(model, spec, jax.random.key(0)))
  mt.assert_fits_one_batch(model, params, batch, encoder.TARGETS_KEY, encoder.WEIGHTS_KEY, 40)


@pytest.mark.e2e
def test_imports_and_runs_without_tensorflow_or_seqio():
  mt.assert_runs_without_tensorflow_or_seqio("""
import jax
from objectax.models import encoder
from objectax.models.config import ModelConfig
cfg = ModelConfig(d_model=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1).with_vocab_size(128)
spec = encoder.batch_spec({"inputs": 8, "targets": 8}, 2)
model = encoder.Model(cfg)
params = encoder.init_params(model, spec, jax.random.key(0))
logits = model.apply({"params": params}, encoder.synthetic_batch(spec, 128, 0))
assert logits.shape == (2, 8, 128), logits.shape
""")
