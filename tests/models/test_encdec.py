"""Encoder-decoder: leakage by gradients, packed == unpacked, layouts, sizes, learning.

Leakage is measured on a real (tiny) model as in test_masks.py: influence[b, q, c, k] =
sum_d |d out[b, q] / d x[c, k, d]|, with x an input embedding (encoder or decoder) and out
a random projection of the decoder logits (or of the encoder output). It must be exactly
zero wherever information must not flow and non-zero wherever it may.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models.registry import ConfigError
from objectax.models import config as config_lib
from objectax.models import encdec
from objectax.models import masks
from objectax.models.config import ModelConfig
from objectax.models.losses import weighted_cross_entropy
import model_testing as mt  # pylint: disable=g-bad-import-order

CONFIG = mt.tiny_config(16)
SEQ2SEQ = {"inputs": 12, "targets": 10}
# Three (inputs, targets) examples; all of them fit in one packed row of SEQ2SEQ.
EXAMPLES = [([5, 6, 7, 1], [8, 9, 1]), ([10, 1], [11, 12, 13, 1]), ([14, 15, 16, 1], [17, 1])]
# At these sizes XLA's backend optimisations cost more compile time than they save.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _params(model, lengths=None, batch_size=1):
  """Boxed parameters, as `encdec.init_params` makes them (compiled faster)."""
  spec = encdec.batch_spec(lengths or SEQ2SEQ, batch_size)
  batch = {name: jnp.zeros(s.shape, s.dtype) for name, s in spec.items()}
  return jax.jit(model.init, compiler_options=FAST_COMPILE)(jax.random.key(0), batch)["params"]


@functools.lru_cache(maxsize=None)
def _jitted_apply(model):
  return jax.jit(lambda params, batch: model.apply({"params": params}, batch),
                 compiler_options=FAST_COMPILE)


def _apply(model, params, batch):
  """model.apply, compiled once per model and shape (op-by-op dispatch is slow on CPU)."""
  return _jitted_apply(model)(params, {k: jnp.asarray(v) for k, v in batch.items()})


@functools.lru_cache(maxsize=None)
def _config_params():
  """CONFIG's parameters (they do not depend on the batch shape), initialised once."""
  return _params(encdec.Model(CONFIG))


# ----------------------------------------------------------------------------- leakage


def _influence(batch):
  """(decoder <- decoder, decoder <- encoder, encoder <- encoder) influences, numpy."""
  batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  model = encdec.Model(CONFIG)
  params = _config_params()
  (b, s), t = batch["encoder_input_tokens"].shape, batch["decoder_input_tokens"].shape[1]
  keys = jax.random.split(jax.random.key(1), 4)
  encoder_x_BSD = jax.random.normal(keys[0], (b, s, CONFIG.d_model))
  decoder_x_BTD = jax.random.normal(keys[1], (b, t, CONFIG.d_model))
  r_V = jax.random.normal(keys[2], (CONFIG.vocab_size,))
  r_D = jax.random.normal(keys[3], (CONFIG.d_model,))

  # A fresh closure per call, so a monkeypatched mask is always retraced.
  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(encoder_x_BSD, decoder_x_BTD):
    def out_BT(encoder_x_BSD, decoder_x_BTD):
      return model.apply({"params": params}, encoder_x_BSD, decoder_x_BTD, batch,
                         method=encdec.Model.logits_from_embeddings) @ r_V

    def encoded_BS(encoder_x_BSD):
      return model.apply({"params": params}, encoder_x_BSD, batch,
                         method=encdec.Model.encode_embeddings) @ r_D

    from_encoder, from_decoder = jax.jacrev(out_BT, argnums=(0, 1))(encoder_x_BSD,
                                                                    decoder_x_BTD)
    encoder = jax.jacrev(encoded_BS)(encoder_x_BSD)
    return tuple(jnp.abs(g).sum(-1) for g in (from_decoder, from_encoder, encoder))

  return tuple(np.asarray(x) for x in run(encoder_x_BSD, decoder_x_BTD))


def _expected(encoder_segments, decoder_segments):
  """What may flow, written out from the segment ids alone (independent of `masks`)."""
  enc, dec = np.asarray(encoder_segments), np.asarray(decoder_segments)
  b, s = enc.shape
  t = dec.shape[1]
  dec_dec, dec_enc, enc_enc = (np.zeros((b, t, b, t), bool), np.zeros((b, t, b, s), bool),
                               np.zeros((b, s, b, s), bool))
  for i in range(b):
    for q in range(t):
      dec_dec[i, q, i, :q + 1] = dec[i, :q + 1] == dec[i, q]  # causal, own segment
      dec_enc[i, q, i] = (enc[i] == dec[i, q]) & (enc[i] > 0)  # own inputs, no padding
    for q in range(s):
      enc_enc[i, q, i] = enc[i] == enc[i, q]  # bidirectional, own segment
  return dec_dec, dec_enc, enc_enc


def _assert_flow_matches(influences, expected):
  for name, influence, allowed in zip(("decoder<-decoder", "decoder<-encoder",
                                       "encoder<-encoder"), influences, expected):
    mt.assert_flow_matches(influence, allowed, name)


PACKED_ENCODER = [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 3]]
# Row 0, segment 3 has targets but empty inputs: its decoder sees no encoder position.
PACKED_DECODER = [[1, 1, 2, 2, 3, 0], [1, 2, 2, 2, 3, 3]]


def _packed_batch(encoder_segments, decoder_segments):
  rng = np.random.default_rng(0)
  batch = {}
  for prefix, segments in (("encoder", encoder_segments), ("decoder", decoder_segments)):
    segments = np.asarray(segments, np.int32)
    batch[f"{prefix}_segment_ids"] = segments
    batch[f"{prefix}_positions"] = mt.segment_positions(segments)
  batch["encoder_input_tokens"] = rng.integers(2, 100, (2, 8)) * (batch["encoder_segment_ids"] > 0)
  batch["decoder_target_tokens"] = rng.integers(2, 100, (2, 6)) * (batch["decoder_segment_ids"] > 0)
  batch["decoder_input_tokens"] = rng.integers(2, 100, (2, 6))
  return batch


def test_packed_leakage():
  influences = _influence(_packed_batch(PACKED_ENCODER, PACKED_DECODER))
  _assert_flow_matches(influences, _expected(PACKED_ENCODER, PACKED_DECODER))
  dec_dec, dec_enc, enc_enc = influences
  # The decoder is causal: no later decoder input reaches an earlier position.
  for b in range(2):
    assert np.all(dec_dec[b, :, b, :][np.triu(np.ones((6, 6), bool), k=1)] == 0.0)
  # The encoder is fully visible: every decoder position sees every input of its example.
  assert np.all(dec_enc[0, :2, 0, :3] > 0) and np.all(dec_enc[0, 2:4, 0, 3:7] > 0)
  assert np.all(dec_enc[1, 1:4, 1, 5:7] > 0) and np.all(dec_enc[1, 4:, 1, 7] > 0)
  # Across packed examples nothing flows, in any direction and between any streams.
  assert np.all(dec_enc[0, :2, 0, 3:] == 0) and np.all(dec_enc[0, 2:4, 0, :3] == 0)
  assert np.all(enc_enc[1, :5, 1, 5:] == 0) and np.all(enc_enc[1, 5:, 1, :5] == 0)
  assert np.all(dec_dec[1, 1:4, 1, 0] == 0) and np.all(dec_dec[1, 4:, 1, :4] == 0)
  for b in range(2):  # nor across rows of the batch
    assert np.all(dec_dec[b, :, 1 - b] == 0) and np.all(dec_enc[b, :, 1 - b] == 0)
    assert np.all(enc_enc[b, :, 1 - b] == 0)
  # Inputs-less example (row 0, segment 3): no encoder position reaches it.
  assert np.all(dec_enc[0, 4] == 0)
  # Padding never influences real positions.
  assert np.all(dec_enc[:, :, 0, 7] == 0) and np.all(enc_enc[0, :7, 0, 7] == 0)
  assert np.all(dec_dec[0, :5, 0, 5] == 0)


def test_unpacked_leakage_masks_padding_by_token_ids():
  batch = _packed_batch(PACKED_ENCODER, PACKED_DECODER)
  enc_real = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8])
  dec_real = np.array([[1, 1, 1, 1, 0, 0], [1] * 6])
  unpacked = {"encoder_input_tokens": batch["encoder_input_tokens"].clip(2) * enc_real,
              "decoder_target_tokens": batch["decoder_input_tokens"] * dec_real,
              "decoder_input_tokens": batch["decoder_input_tokens"]}
  influences = _influence(unpacked)
  _assert_flow_matches(influences, _expected(enc_real, dec_real))
  dec_dec, dec_enc, enc_enc = influences
  assert np.all(dec_enc[0, :4, 0, :5] > 0) and np.all(dec_enc[:, :, 0, 5:] == 0)
  assert np.all(enc_enc[0, :5, 0, 5:] == 0) and np.all(dec_dec[0, :4, 0, 4:] == 0)


@pytest.mark.parametrize("mask_fn", ["encoder_mask", "cross_attention_mask", "decoder_mask"])
def test_leakage_test_detects_a_broken_mask(mask_fn, monkeypatch):
  """Sanity check of the harness: an all-True mask anywhere must fail it."""
  batch = _packed_batch(PACKED_ENCODER, PACKED_DECODER)
  original = getattr(masks, mask_fn)
  monkeypatch.setattr(masks, mask_fn, lambda *a: jnp.ones_like(original(*a)))
  influences = _influence(batch)
  monkeypatch.undo()
  with pytest.raises(AssertionError):
    _assert_flow_matches(influences, _expected(PACKED_ENCODER, PACKED_DECODER))


def test_mask_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top
  for fn in (masks.encoder_mask, masks.cross_attention_mask):
    finder = doctest.DocTestFinder().find(fn, globs={"jnp": jnp, **vars(masks)})
    results = [doctest.DocTestRunner().run(test) for test in finder]
    assert sum(r.attempted for r in results) >= 2 and not any(r.failed for r in results)
  mask = masks.cross_attention_mask(jnp.array([[1, 1, 2, 0]]), jnp.array([[1, 2, 2, 0, 0]]))
  assert mask.shape == (1, 1, 4, 5) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(mask[0, 0].astype(int), [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0],
                                                         [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])


# --------------------------------------------------------------- packed == unpacked


def _converted(pack: bool, batch_size: int, repeat: int = 1):
  """EXAMPLES through seqio's EncDec converter (via `encdec.feature_converter`)."""
  seqio = pytest.importorskip("seqio")
  tf = pytest.importorskip("tensorflow")
  tf.config.set_visible_devices([], "GPU")
  spec = tf.TensorSpec([None], tf.int32)
  ds = tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.array(i, np.int32), "targets": np.array(t, np.int32)}
               for i, t in EXAMPLES),
      output_signature={"inputs": spec, "targets": spec}).repeat(repeat)
  converter = encdec.feature_converter(pack=pack, concat_length=99)  # concat: ignored
  assert isinstance(converter, seqio.EncDecFeatureConverter) and converter.pack == pack
  return next(iter(converter(ds, SEQ2SEQ).batch(batch_size).as_numpy_iterator()))


def _per_example_losses(model, params, batch):
  """[(loss_sum, z_loss_sum, weight_sum)] per example, in row-major segment order."""
  logits = np.asarray(_apply(model, params, batch))
  segments = batch.get("decoder_segment_ids", batch["decoder_target_tokens"] > 0)
  out = []
  for b in range(segments.shape[0]):
    for s in np.unique(segments[b][segments[b] > 0]):
      weights = batch["decoder_loss_weights"][b:b + 1] * (segments[b:b + 1] == s)
      out.append(np.array(weighted_cross_entropy(
          logits[b:b + 1], batch["decoder_target_tokens"][b:b + 1], weights, 1e-4)))
  return np.array(out)


def test_packed_equals_unpacked_through_seqio():
  packed, unpacked = _converted(True, 1), _converted(False, 3)
  _check_layout(packed), _check_layout(unpacked)
  assert packed["encoder_segment_ids"].max() == packed["decoder_segment_ids"].max() == 3
  model = encdec.Model(CONFIG)
  params = _config_params()
  losses_packed = _per_example_losses(model, params, packed)
  losses_unpacked = _per_example_losses(model, params, unpacked)
  assert losses_packed.shape == (3, 3) and np.all(losses_unpacked[:, 0] > 0)
  np.testing.assert_allclose(losses_packed, losses_unpacked, rtol=1e-5, atol=1e-5)
  # The packed positions are read (RoPE is relative, so only a change of the order
  # information shows: all-zero positions remove it), in both streams.
  logits = _apply(model, params, packed)
  for key in ("encoder_positions", "decoder_positions"):
    flat = dict(packed, **{key: np.zeros_like(packed[key])})
    assert not np.allclose(_apply(model, params, flat)[0, 3:7], logits[0, 3:7],
                           atol=1e-3), key


def _unpack(batch, lengths):
  """A packed batch as seqio would lay out its examples unpacked, one per row."""
  rows = []
  s_len, t_len = lengths["inputs"], lengths["targets"]
  for b in range(batch["encoder_segment_ids"].shape[0]):
    for s in np.unique(batch["encoder_segment_ids"][b][batch["encoder_segment_ids"][b] > 0]):
      inputs = batch["encoder_input_tokens"][b][batch["encoder_segment_ids"][b] == s]
      targets = batch["decoder_target_tokens"][b][batch["decoder_segment_ids"][b] == s]
      padded = np.pad(targets, (0, t_len - len(targets)))
      rows.append({"encoder_input_tokens": np.pad(inputs, (0, s_len - len(inputs))),
                   "decoder_target_tokens": padded,
                   "decoder_input_tokens": np.r_[0, padded[:-1]],
                   "decoder_loss_weights": (padded > 0).astype(np.int32)})
  return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}


def test_packed_equals_unpacked_on_synthetic_batches():
  lengths = {"inputs": 16, "targets": 12}
  packed = encdec.synthetic_batch(encdec.batch_spec(lengths, 3), CONFIG.vocab_size, 5)
  unpacked = _unpack(packed, lengths)
  assert unpacked["encoder_input_tokens"].shape[0] > 3  # some rows hold several examples
  _check_layout(unpacked)
  model = encdec.Model(CONFIG)
  np.testing.assert_allclose(_per_example_losses(model, _config_params(), packed),
                             _per_example_losses(model, _config_params(), unpacked),
                             rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ features and layouts


def _check_layout(batch):
  """Asserts seqio's EncDec layout (packed when segment ids are present)."""
  packed = "encoder_segment_ids" in batch
  for b in range(batch["encoder_input_tokens"].shape[0]):
    segments = {}
    for stream, tokens in (("encoder", batch["encoder_input_tokens"][b]),
                           ("decoder", batch["decoder_target_tokens"][b])):
      seg = batch[f"{stream}_segment_ids"][b] if packed else (tokens > 0).astype(int)
      real = seg > 0
      n = int(real.sum())
      assert n > 0 and np.all(real[:n]) and not real[n:].any()  # padding only at the end
      assert np.all(tokens[real] > 0) and np.all(tokens[~real] == 0)
      starts = np.flatnonzero(real & (np.r_[-1, seg[:-1]] != seg))
      ends = np.r_[starts[1:], n] - 1
      assert np.all(tokens[ends] == 1)  # every example ends in EOS
      if packed:
        np.testing.assert_array_equal(seg[starts], np.arange(1, len(starts) + 1))
        pos = batch[f"{stream}_positions"][b]
        expected_pos = np.concatenate([np.arange(e - s + 1) for s, e in zip(starts, ends)])
        np.testing.assert_array_equal(pos[:n], expected_pos)
        assert np.all(pos[n:] == 0)
      segments[stream] = seg[starts]
    np.testing.assert_array_equal(segments["encoder"], segments["decoder"])
    targets, inputs = batch["decoder_target_tokens"][b], batch["decoder_input_tokens"][b]
    np.testing.assert_array_equal(batch["decoder_loss_weights"][b], targets > 0)
    if packed:  # shifted right within each segment, BOS = 0 at each start and on padding
      seg = batch["decoder_segment_ids"][b]
      shifted = np.r_[0, targets[:-1]] * (np.r_[-1, seg[:-1]] == seg)
      np.testing.assert_array_equal(inputs, shifted)
    else:  # the whole padded row shifted right: EOS lands in the first padding slot
      np.testing.assert_array_equal(inputs, np.r_[0, targets[:-1]])


@pytest.mark.parametrize("pack", [True, False])
def test_feature_converter_emits_batch_spec(pack):
  out = _converted(pack, 2, repeat=4)
  spec = encdec.batch_spec(SEQ2SEQ, 2, pack=pack)
  assert set(out) == set(spec)
  for k in spec:
    assert out[k].shape == spec[k].shape and out[k].dtype == spec[k].dtype, k
  _check_layout(out)


@pytest.mark.parametrize("pack", [True, False])
def test_synthetic_batch_matches_spec_and_layout(pack):
  spec = encdec.batch_spec({"inputs": 20, "targets": 9}, 6, pack=pack)
  batch = encdec.synthetic_batch(spec, 50, 0)
  assert list(batch) == list(spec)
  for k in spec:
    assert batch[k].shape == spec[k].shape and batch[k].dtype == np.int32, k
  assert spec["encoder_input_tokens"].shape == (6, 20)
  assert spec["decoder_loss_weights"].shape == (6, 9)
  _check_layout(batch)
  assert batch["encoder_input_tokens"].max() < 50
  if pack:
    assert batch["encoder_segment_ids"].max() > 1  # some rows hold several examples
  else:
    assert (batch["encoder_input_tokens"] == 0).any()  # some rows are padded
    assert (batch["decoder_target_tokens"] == 0).any()
  np.testing.assert_array_equal(encdec.synthetic_batch(spec, 50, 0)["decoder_input_tokens"],
                                batch["decoder_input_tokens"])  # seeded


def test_model_lengths():
  assert encdec.model_lengths({"inputs": 512, "targets": 114}) == {"encoder": 512, "decoder": 114}
  assert encdec.model_lengths({"inputs": 512, "targets": 114}, 626) == {"encoder": 512,
                                                                         "decoder": 114}
  with pytest.raises(ConfigError, match="needs an 'inputs' feature"):
    encdec.model_lengths({"targets": 626})
  assert encdec.TARGETS_KEY == "decoder_target_tokens"
  assert encdec.WEIGHTS_KEY == "decoder_loss_weights"


# ------------------------------------------------------------------ parameters, sizes


@pytest.mark.parametrize("tie,encoder_layers", [(True, 0), (False, 3)])
def test_params_carry_logical_axes_and_match_num_params(tie, encoder_layers):
  cfg = mt.tiny_config(16, num_encoder_layers=encoder_layers, tie_embeddings=tie)
  spec = encdec.batch_spec(SEQ2SEQ, 1)
  # Abstract evaluation: shapes and boxes without compiling or running the init.
  params = mt.unbox_checked(jax.eval_shape(
      lambda: encdec.init_params(encdec.Model(cfg), spec, jax.random.key(0))))
  mt.assert_num_params(params, cfg, config_lib.encdec_num_params)
  assert sum(k.startswith("encoder_block_") for k in params) == (encoder_layers or 2)
  assert sum(k.startswith("decoder_block_") for k in params) == 2
  assert set(params["decoder_block_0"]) == {
      "self_attention", "self_attention_norm", "cross_attention", "cross_attention_norm",
      "mlp", "mlp_norm"}
  norms = (cfg.encoder_layers * 2 + cfg.num_layers * 3 + 2) * cfg.d_model
  lookup = 0 if tie else cfg.vocab_size * cfg.d_model  # an untied input table is a lookup
  assert config_lib.encdec_num_matmul_params(cfg) == (
      config_lib.encdec_num_params(cfg) - norms - lookup)


def test_flops_per_token_matches_xla_cost_analysis():
  """Forward FLOPs as XLA counts them (elementwise ops add ~2%) are a third of the estimate.

  S >> T, so counting the cross-attention k/v per decoder token instead of per encoder
  token would miss by ~6% and fail.
  """
  cfg = ModelConfig(d_model=64, num_heads=2, head_dim=32, mlp_dim=256, num_layers=2,
                    num_encoder_layers=3).with_vocab_size(128)
  s, t = 48, 8
  model = encdec.Model(cfg)
  spec = encdec.batch_spec({"inputs": s, "targets": t}, 1, pack=False)
  params = jax.eval_shape(lambda: nn.unbox(encdec.init_params(model, spec, jax.random.key(0))))
  batch = encdec.synthetic_batch(spec, 128, 0)
  cost = jax.jit(lambda p: model.apply({"params": p}, batch)).lower(params).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  predicted = config_lib.encdec_flops_per_token(cfg, s, t) * (s + t) / 3  # forward = 1/3
  assert 0.99 * predicted <= cost["flops"] <= 1.05 * predicted, (cost["flops"], predicted)


def test_wang_sizes_and_config():
  # Wang et al. 2022 Table 1: 11.0B encoder-decoder vs 4.8B decoder, FLOPs roughly matched
  # (the encoder-decoder ~10% more expensive); inputs 512 / targets 114 vs 626 tokens.
  wang = ModelConfig(d_model=4096, num_heads=64, head_dim=64, mlp_dim=10240, num_layers=24,
                     vocab_size=32128)
  assert abs(config_lib.encdec_num_params(wang) / 11.0e9 - 1) < 0.02
  ratio = config_lib.encdec_flops_per_token(wang, 512, 114) / config_lib.flops_per_token(wang, 626)
  assert 1.0 < ratio < 1.2, ratio
  assert encdec.flops_per_token(wang, {"inputs": 512, "targets": 114}) == (
      config_lib.encdec_flops_per_token(wang, 512, 114))
  assert ModelConfig().encoder_layers == 4 and ModelConfig(num_encoder_layers=6).encoder_layers == 6
  with pytest.raises(ConfigError, match="num_encoder_layers"):
    ModelConfig(num_encoder_layers=-1)


# ------------------------------------------------------------------ numerics, training


def test_dropout_and_bfloat16():
  cfg = mt.tiny_config(16, num_layers=1, dropout_rate=0.5, dtype="bfloat16")
  model = encdec.Model(cfg)
  batch = encdec.synthetic_batch(encdec.batch_spec(SEQ2SEQ, 2), 100, 0)
  params = _params(model, batch_size=2)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(params, batch, rng):  # one compile for the three calls
    default = model.apply({"params": params}, batch)
    evaluated = model.apply({"params": params}, batch, deterministic=True)
    train = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
    return default, evaluated, train

  default, evaluated, train = (np.asarray(x) for x in run(params, batch, jax.random.key(1)))
  assert evaluated.dtype == np.float32 and evaluated.shape == (2, 10, cfg.vocab_size)
  assert np.isfinite(train).all() and not np.allclose(evaluated, train)
  np.testing.assert_array_equal(default, evaluated)  # evaluation is the default


@pytest.mark.e2e
def test_tiny_model_learns_to_copy():
  """Targets = inputs, fresh random tokens every step: only cross-attention can do it."""
  batch_size, n, num_symbols = 32, 6, 8
  model = encdec.Model(mt.tiny_config())
  params = nn.unbox(_params(model, {"inputs": n, "targets": n}, batch_size))
  mt.assert_learns_to_copy(model, params, num_symbols, n, batch_size)


@pytest.mark.e2e
def test_imports_without_tensorflow_or_seqio():
  """GPU benchmark hosts carry neither: the model must build and run without them."""
  mt.assert_runs_without_tensorflow_or_seqio("""
import jax
from objectax.models import encdec
from objectax.models.config import ModelConfig
cfg = ModelConfig(d_model=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1).with_vocab_size(50)
spec = encdec.batch_spec({"inputs": 6, "targets": 4}, 2)
batch = encdec.synthetic_batch(spec, 50, 0)
shapes = jax.eval_shape(lambda: encdec.Model(cfg).init(jax.random.key(0), batch))
""")
