"""Decoder model: packed == unpacked, loss positions, logical axes, config, registry, sizes."""
import os
import subprocess
import sys

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models.registry import ConfigError
from objectax.models import config as config_lib
from objectax.models import decoder
from objectax.models import registry
from objectax.models.config import ModelConfig
from objectax.models.losses import weighted_cross_entropy
import model_testing as mt  # pylint: disable=g-bad-import-order

CONFIG = mt.tiny_config()
GIN_SIZE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin", "size")


def _init(model, length=8, batch_size=1):
  spec = decoder.batch_spec({"targets": length}, batch_size)
  return decoder.init_params(model, spec, jax.random.key(0))


def _unpacked(inputs, targets, length, prefix):
  """One example laid out as DecoderFeatureConverter(pack=False) would, padded to length."""
  stream = list(inputs) + list(targets)
  n = len(stream)
  pad = [0] * (length - n)
  batch = {
      "decoder_target_tokens": stream + pad,
      "decoder_input_tokens": [0] + stream[:-1] + pad,
      "decoder_loss_weights": [0] * len(inputs) + [1] * len(targets) + pad,
  }
  if prefix:
    batch["decoder_causal_attention"] = [1] * (len(inputs) + 1) + [0] * (length - len(inputs) - 1)
  return {k: np.asarray([v], np.int32) for k, v in batch.items()}


def _packed(examples, length, prefix):
  rows = [_unpacked(i, t, len(i) + len(t), prefix) for i, t in examples]
  batch = {k: np.concatenate([r[k][0] for r in rows]) for k in rows[0]}
  batch["decoder_segment_ids"] = np.concatenate(
      [np.full(len(i) + len(t), s + 1) for s, (i, t) in enumerate(examples)])
  batch["decoder_positions"] = np.concatenate([np.arange(len(i) + len(t)) for i, t in examples])
  used = len(batch["decoder_segment_ids"])
  return {k: np.pad(v, (0, length - used))[None].astype(np.int32) for k, v in batch.items()}


@pytest.mark.parametrize("arch", ["causal_decoder", "prefix_decoder"])
def test_packed_equals_unpacked(arch):
  model = registry.get(arch).make_model(CONFIG)
  params = _init(model, length=12)
  apply = model.apply
  examples = [([5, 6, 1], [7, 8, 1]), ([9, 1], [10, 11, 12, 1])]
  length = 12
  packed = _packed(examples, length, prefix=True)
  logits_packed = apply({"params": params}, packed)
  start = 0
  totals = []
  for inputs, targets in examples:
    n = len(inputs) + len(targets)
    alone = _unpacked(inputs, targets, length, prefix=True)
    logits_alone = apply({"params": params}, alone)
    np.testing.assert_allclose(logits_packed[0, start:start + n], logits_alone[0, :n], atol=1e-5)
    totals.append(weighted_cross_entropy(logits_alone, alone["decoder_target_tokens"],
                                         alone["decoder_loss_weights"], 1e-4))
    start += n
  loss_packed = weighted_cross_entropy(logits_packed, packed["decoder_target_tokens"],
                                       packed["decoder_loss_weights"], 1e-4)
  np.testing.assert_allclose(np.array(loss_packed), np.sum(np.array(totals), 0), rtol=1e-5)
  # The positions are read (RoPE is relative, so only their differences matter: a
  # constant shift would not show; all-zero positions remove the order information).
  flat = dict(packed, decoder_positions=np.zeros((1, length), np.int32))
  assert not np.allclose(apply({"params": params}, flat)[0, 6:12],
                         logits_packed[0, 6:12], atol=1e-3)


def test_loss_only_on_target_positions():
  spec = decoder.batch_spec({"inputs": 10, "targets": 6}, 2)
  batch = decoder.synthetic_batch(spec, CONFIG.vocab_size, 3)
  model = decoder.Model(CONFIG, bidirectional_inputs=True)
  params = _init(model, 16, 2)
  logits = model.apply({"params": params}, batch)
  grad = jax.grad(lambda l: sum(weighted_cross_entropy(  # CE + z-loss, as trained
      l, batch["decoder_target_tokens"], batch["decoder_loss_weights"], 1e-4)[:2]))(logits)
  weight0 = batch["decoder_loss_weights"] == 0
  assert weight0.any() and (~weight0).any()
  grad = np.asarray(grad)
  assert np.all(grad[weight0] == 0.0)
  assert np.all(np.abs(grad[~weight0]).sum(-1) > 0.0)
  # Input positions (causal attention 1, minus the extra one) carry no loss.
  inputs = (batch["decoder_causal_attention"] == 1) & (
      np.roll(batch["decoder_causal_attention"], -1, axis=1) == 1)
  assert np.all(batch["decoder_loss_weights"][inputs] == 0)


@pytest.mark.parametrize("tie", [True, False])
def test_params_carry_logical_axes_and_match_num_params(tie):
  cfg = mt.tiny_config(tie_embeddings=tie)
  mt.assert_num_params(mt.unbox_checked(_init(decoder.Model(cfg))), cfg)


def test_flops_per_token():
  cfg = CONFIG
  n = config_lib.num_matmul_params(cfg)
  assert n == config_lib.num_params(cfg) - (2 * cfg.num_layers + 1) * cfg.d_model
  assert config_lib.flops_per_token(cfg, 128) == 6 * n + 12 * 2 * 2 * 16 * 128


def test_config_validation():
  with pytest.raises(ConfigError, match="valid choices: float32, bfloat16"):
    ModelConfig(dtype="fp16")
  with pytest.raises(ConfigError, match="num_layers"):
    ModelConfig(num_layers=0)
  with pytest.raises(ConfigError, match="head_dim"):
    ModelConfig(head_dim=7)
  with pytest.raises(ConfigError, match="vocab_size"):
    config_lib.num_params(ModelConfig())
  assert ModelConfig().with_vocab_size(32_100).vocab_size == 32_128
  assert ModelConfig().with_vocab_size(256).vocab_size == 256
  assert ModelConfig(vocab_size=300).with_vocab_size(200).vocab_size == 300
  with pytest.raises(ConfigError, match="smaller than the vocabulary"):
    ModelConfig(vocab_size=100).with_vocab_size(200)


def test_registry():
  assert registry.ARCHITECTURES.names()[:2] == ["causal_decoder", "prefix_decoder"]
  assert registry.get("causal_decoder").make_model(CONFIG).bidirectional_inputs is False
  assert registry.get("prefix_decoder").make_model(CONFIG).bidirectional_inputs is True
  assert registry.get("prefix_decoder").targets_key == "decoder_target_tokens"
  assert registry.get("prefix_decoder").weights_key == "decoder_loss_weights"
  with pytest.raises(ConfigError, match="valid choices: causal_decoder, prefix_decoder, "):
    registry.get("casual_decoder")


def test_batch_spec_and_synthetic_batch():
  assert decoder.model_lengths({"inputs": 512, "targets": 114}) == {"decoder": 626}
  lm = decoder.batch_spec({"targets": 32}, 4)
  assert "decoder_causal_attention" not in lm
  spec = decoder.batch_spec({"inputs": 20, "targets": 12}, 4)
  assert set(spec) == set(lm) | {"decoder_causal_attention"}
  assert all(s.shape == (4, 32) and s.dtype == jnp.int32 for s in spec.values())
  base = {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"}
  assert set(decoder.batch_spec({"targets": 32}, 4, pack=False)) == base
  assert set(decoder.batch_spec({"inputs": 20, "targets": 12}, 4, pack=False)) == (
      base | {"decoder_causal_attention"})
  assert set(lm) == base | {"decoder_segment_ids", "decoder_positions"}
  batch = decoder.synthetic_batch(spec, 100, 0)
  for b in range(4):
    seg, pos = batch["decoder_segment_ids"][b], batch["decoder_positions"][b]
    real = seg > 0
    assert real[0] and np.all(np.diff(real.astype(int)) <= 0)  # padding only at the end
    starts = np.flatnonzero(real & (np.r_[-1, seg[:-1]] != seg))
    assert np.all(pos[starts] == 0) and np.all(batch["decoder_input_tokens"][b][starts] == 0)
    shifted = batch["decoder_target_tokens"][b][:-1]
    follows = np.flatnonzero(real[1:] & (seg[1:] == seg[:-1])) + 1
    np.testing.assert_array_equal(batch["decoder_input_tokens"][b][follows], shifted[follows - 1])
    causal, weights = batch["decoder_causal_attention"][b], batch["decoder_loss_weights"][b]
    for s in np.unique(seg[real]):
      # Exactly one position (the last input's successor) is both in the prefix and a target.
      assert np.sum((causal == 1) & (weights == 1) & (seg == s)) == 1
    assert np.all(batch["decoder_target_tokens"][b][~real] == 0)
  assert batch["decoder_target_tokens"].max() < 100


def _check_unpacked_layout(batch):
  """Asserts seqio's unpacked decoder layout: one example per row from 0, padding after."""
  assert "decoder_segment_ids" not in batch and "decoder_positions" not in batch
  for b in range(batch["decoder_target_tokens"].shape[0]):
    targets = batch["decoder_target_tokens"][b]
    weights = batch["decoder_loss_weights"][b]
    real = targets > 0
    n = int(real.sum())
    assert real[0] and np.all(real[:n]) and not real[n:].any()  # padding only at the end
    assert targets[n - 1] == 1  # the example ends in EOS
    # The whole row is shifted right by one (BOS = 0), padding included.
    np.testing.assert_array_equal(batch["decoder_input_tokens"][b],
                                  np.r_[0, targets[:-1]])
    assert np.all(weights[~real] == 0) and weights[n - 1] == 1
    assert np.all(np.diff(weights[:n]) >= 0)  # inputs (weight 0) come before targets
    if "decoder_causal_attention" in batch:
      causal = batch["decoder_causal_attention"][b]
      num_prefix = int(causal.sum())
      assert np.all(causal[:num_prefix] == 1)  # inputs plus one position, then 0
      assert np.sum((causal == 1) & (weights == 1)) == 1
    else:
      assert np.all(weights[:n] == 1)


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("lengths", [{"targets": 6}, {"inputs": 6, "targets": 4}])
def test_feature_converter_emits_batch_spec(pack, lengths):
  seqio = pytest.importorskip("seqio")
  tf = pytest.importorskip("tensorflow")
  tf.config.set_visible_devices([], "GPU")
  example = {"targets": tf.constant([7, 1], tf.int32)}
  if "inputs" in lengths:
    example["inputs"] = tf.constant([5, 6, 1], tf.int32)
  ds = tf.data.Dataset.from_tensors(example).repeat(8)  # >= 2 rows even when packed
  converter = decoder.feature_converter(pack=pack)
  assert isinstance(converter, seqio.DecoderFeatureConverter)
  out = next(iter(converter(ds, lengths).batch(2).as_numpy_iterator()))
  spec = decoder.batch_spec(lengths, 2, pack=pack)
  assert set(out) == set(spec)
  assert all(out[k].shape == spec[k].shape and out[k].dtype == spec[k].dtype for k in spec)
  if not pack:  # the synthetic batch imitates exactly this layout
    _check_unpacked_layout(out)


@pytest.mark.parametrize("arch,lengths", [("causal_decoder", {"targets": 12}),
                                         ("prefix_decoder", {"inputs": 6, "targets": 6})])
def test_model_on_unpacked_synthetic_batch(arch, lengths):
  spec = decoder.batch_spec(lengths, 3, pack=False)
  assert set(spec) == set(decoder.batch_spec(lengths, 3)) - {"decoder_segment_ids",
                                                             "decoder_positions"}
  batch = decoder.synthetic_batch(spec, CONFIG.vocab_size, 1)
  assert set(batch) == set(spec)
  _check_unpacked_layout(batch)
  real = batch["decoder_target_tokens"] > 0
  assert (~real).any()  # some rows are padded
  model = registry.get(arch).make_model(CONFIG)
  params = decoder.init_params(model, spec, jax.random.key(0))
  # Same as the batch packed with one segment per row: the model infers segments from
  # targets > 0 and positions from the row index when they are absent.
  logits = mt.unpacked_logits_checked(model, params, batch, real, "decoder")
  assert logits.shape == (3, 12, CONFIG.vocab_size)
  # Real tokens never attend to padding: changing it leaves their logits unchanged.
  noisy = dict(batch, decoder_input_tokens=np.where(real, batch["decoder_input_tokens"], 42))
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, noisy))[real],
                             logits[real], atol=1e-5)


@pytest.mark.e2e
def test_imports_without_tensorflow_or_seqio():
  code = ("import sys; import objectax.models.registry, objectax.models.losses; "
          "import objectax.models.masks; "
          "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd="/", timeout=120)


def test_dropout_and_bfloat16():
  mt.assert_dropout_only_in_training(decoder)


@pytest.mark.e2e
def test_tiny_model_learns():
  model = decoder.Model(CONFIG)
  batch = decoder.synthetic_batch(decoder.batch_spec({"targets": 16}, 4), 100, 0)
  params = nn.unbox(_init(model, 16, 4))
  mt.assert_fits_one_batch(model, params, batch, "decoder_target_tokens",
                           "decoder_loss_weights", 30)


@pytest.mark.parametrize("size,vocab,low,high", [
    ("tiny", 8192, 1.5e6, 3e6), ("small", 8192, 25e6, 50e6),
    # Decoder-only counts at the T5 vocabulary (32,128), from the shapes in each file.
    ("base", 32128, 100e6, 120e6), ("large", 32128, 320e6, 360e6),
    ("1b", 32128, 0.95e9, 1.05e9), ("wang_xxl", 32128, 4.7e9, 4.9e9)])
def test_size_gin_files(size, vocab, low, high):
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(GIN_SIZE_DIR, f"{size}.gin"))
    cfg = ModelConfig().with_vocab_size(vocab)
  finally:
    gin.clear_config()
  assert low <= config_lib.num_params(cfg) <= high
  assert ModelConfig().d_model == 256  # bindings do not outlive the test
