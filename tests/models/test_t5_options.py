"""T5-style model options: relative position bias, GeGLU/ReGLU, ungated MLP, untied head.

Covers every architecture (CD, ND, ED, EO) with a sample of the option combinations:
parameter counts equal the config functions', packed == unpacked per-example losses,
leakage by gradients with the relative bias (influence[b, q, c, k] = sum_d |d out[b, q] /
d x[c, k, d]|, x an input embedding, out a random projection of the logits, as in
test_masks.py), T5's bucketing against hand-computed tables, permutation equivariance
without positions, learning with the T5.1.1 options, and the default model unchanged.
"""
import functools
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.models.registry import ConfigError
from objectax.launch import sharding
from objectax.models import config as config_lib
from objectax.models import decoder
from objectax.models import encdec
from objectax.models import encoder
from objectax.models import layers
from objectax.models.config import ModelConfig
from objectax.models.losses import weighted_cross_entropy
import model_testing as mt  # pylint: disable=g-bad-import-order

GIN_SIZE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin", "size")
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny shapes: compile time dominates
T5_1_1 = dict(position_embedding="relative", mlp_activation="gelu", tie_embeddings=False)
T5_1_0 = dict(position_embedding="relative", mlp_activation="relu", mlp_gated=False)
# arch -> (module, Model kwargs, task lengths of the test batches)
ARCHS = {
    "CD": (decoder, {"bidirectional_inputs": False}, {"targets": 16}),
    "ND": (decoder, {"bidirectional_inputs": True}, {"inputs": 8, "targets": 8}),
    "ED": (encdec, {}, {"inputs": 12, "targets": 10}),
    "EO": (encoder, {}, {"targets": 16}),
}


def _config(**overrides) -> ModelConfig:
  return mt.tiny_config(16, **overrides)


def _model(arch: str, cfg: ModelConfig) -> nn.Module:
  module, kwargs, _ = ARCHS[arch]
  return module.Model(cfg, **kwargs)


@functools.lru_cache(maxsize=None)
def _params(arch: str, cfg: ModelConfig):
  module, _, lengths = ARCHS[arch]
  batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in module.batch_spec(lengths, 1).items()}
  init = jax.jit(_model(arch, cfg).init, compiler_options=FAST_COMPILE)
  return nn.unbox(init(jax.random.key(0), batch)["params"])


@functools.lru_cache(maxsize=None)
def _apply_fn(arch: str, cfg: ModelConfig):
  model = _model(arch, cfg)
  return jax.jit(lambda p, b: model.apply({"params": p}, b), compiler_options=FAST_COMPILE)


def _logits(arch: str, cfg: ModelConfig, batch) -> np.ndarray:
  batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  return np.asarray(_apply_fn(arch, cfg)(_params(arch, cfg), batch))


# ------------------------------------------------------------------ T5's bucketing


def test_relative_position_bucket_matches_hand_computed_tables():
  bucket = layers.relative_position_bucket
  # Defaults (32 buckets, max distance 128). Bidirectional: 16 per direction, distances
  # 0..7 exact, then 8 + floor(8 * log(n / 8) / log(16)) = 8 + floor(2 * log2(n / 8)),
  # capped at 15; keys after the query (relative position > 0) add 16.
  distance = np.array([0, 1, 7, 8, 11, 12, 16, 22, 23, 32, 64, 90, 91, 127, 128, 1000])
  expected = np.array([0, 1, 7, 8, 8, 9, 10, 10, 11, 12, 14, 14, 15, 15, 15, 15])
  np.testing.assert_array_equal(bucket(-distance, True, 32, 128), expected)
  np.testing.assert_array_equal(bucket(distance[1:], True, 32, 128), expected[1:] + 16)
  # Causal: 32 buckets for the past, 0..15 exact, then 16 + floor(16 * log(n / 16) /
  # log(8)): 16..18 -> 16, 19..20 -> 17 (20: 1.72), 21 -> 18 (2.09), 32 -> 21, 64 -> 26,
  # 112 -> 30, >= 113 -> 31 (16 * log(113 / 16) / log(8) = 15.03); every key after the
  # query is bucket 0.
  distance = np.array([0, 1, 15, 16, 18, 19, 20, 21, 32, 64, 112, 113, 128, 5000])
  expected = np.array([0, 1, 15, 16, 16, 17, 17, 18, 21, 26, 30, 31, 31, 31])
  np.testing.assert_array_equal(bucket(-distance, False, 32, 128), expected)
  np.testing.assert_array_equal(bucket(np.array([1, 5, 200]), False, 32, 128), [0, 0, 0])
  # 8 buckets, max distance 16. Bidirectional: 4 per direction, 0..1 exact, then
  # 2 + floor(2 * log(n / 2) / log(8)): 2..5 -> 2, 6..15 -> 3, capped at 3.
  distance = np.array([0, 1, 2, 5, 6, 15, 16, 40])
  np.testing.assert_array_equal(bucket(-distance, True, 8, 16), [0, 1, 2, 2, 3, 3, 3, 3])
  np.testing.assert_array_equal(bucket(distance, True, 8, 16), [0, 5, 6, 6, 7, 7, 7, 7])
  # Causal: 0..3 exact, then 4 + floor(4 * log(n / 4) / log(4)): 4,5 -> 4, 6,7 -> 5,
  # 8..11 -> 6, 12.. -> 7.
  distance = np.array([0, 3, 4, 5, 6, 8, 11, 12, 16, 99])
  np.testing.assert_array_equal(bucket(-distance, False, 8, 16), [0, 3, 4, 4, 5, 6, 6, 7, 7, 7])


def test_bucket_docstring_example():
  import doctest  # pylint: disable=g-import-not-at-top
  tests = doctest.DocTestFinder().find(layers.relative_position_bucket,
                                       globs={"np": np, **vars(layers)})
  results = [doctest.DocTestRunner().run(t) for t in tests]
  assert sum(r.attempted for r in results) == 1 and not any(r.failed for r in results)


def test_bias_module_reads_key_minus_query_positions():
  cfg = _config(position_embedding="relative", relative_attention_num_buckets=8,
                relative_attention_max_distance=16)
  positions = jnp.array([[0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]])
  for bidirectional in (True, False):
    module = layers.RelativePositionBias(cfg, bidirectional=bidirectional)
    params = module.init(jax.random.key(0), positions)["params"]
    table = np.asarray(nn.unbox(params)["table"])
    assert table.shape == (2, 8) and np.all(table != 0)
    bias = np.asarray(module.apply({"params": params}, positions))
    assert bias.shape == (1, 2, 20, 20)
    relative = np.asarray(positions)[0][None, :] - np.asarray(positions)[0][:, None]
    buckets = layers.relative_position_bucket(relative, bidirectional, 8, 16)
    np.testing.assert_array_equal(bias[0], table[:, buckets])
    # A packed segment restarting at 0 sees what the same positions see anywhere.
    np.testing.assert_array_equal(bias[0, :, 0:3, 0:3], bias[0, :, 3:6, 3:6])


def test_prefix_decoder_uses_causal_buckets_like_t5x():
  """T5X's decoder-only model (Wang et al.'s fork, bigscience-workshop/architecture-objective)
  calls its bias with bidirectional=False."""
  cfg = _config(position_embedding="relative")
  batch = {"decoder_input_tokens": np.full((1, 6), 5, np.int32),
           "decoder_causal_attention": np.array([[1, 1, 1, 1, 0, 0]], np.int32)}
  for arch in ("ND", "EO"):
    model = _model(arch, cfg)
    if arch == "EO":
      batch = {"encoder_input_tokens": batch["decoder_input_tokens"]}
    params = _params(arch, cfg)
    _, state = jax.jit(functools.partial(
        model.apply, capture_intermediates=lambda mdl, _: mdl.name == "relpos_bias",
        mutable=["intermediates"]), compiler_options=FAST_COMPILE)({"params": params}, batch)
    bias = np.asarray(state["intermediates"]["relpos_bias"]["__call__"][0])[0]
    table = np.asarray(params["relpos_bias"]["table"])
    future = np.triu(np.ones((6, 6), bool), k=1)
    if arch == "ND":  # every later key, prefix or not, shares bucket 0 with the query itself
      assert np.all(bias[:, future] == table[:, :1])
    else:  # the encoder's keys one to the right use bucket 16 + 1
      np.testing.assert_array_equal(bias[:, 0, 1], table[:, 17])


# ------------------------------------------------------------- parameters and sizes

COMBOS = [
    T5_1_1,                                                                  # GeGLU, untied
    T5_1_0,                                                                  # ReLU, 2 matrices
    dict(position_embedding="none", mlp_activation="silu"),
    dict(position_embedding="rope", mlp_activation="relu", mlp_gated=False,
         tie_embeddings=False),
    dict(position_embedding="none", mlp_activation="gelu", mlp_gated=False, head_dim=7),
]


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("combo", range(len(COMBOS)))
def test_params_carry_logical_axes_and_match_num_params(arch, combo):
  cfg = _config(**COMBOS[combo])
  module, _, lengths = ARCHS[arch]
  spec = module.batch_spec(lengths, 1)
  boxed = jax.eval_shape(lambda: module.init_params(_model(arch, cfg), spec, jax.random.key(0)))
  params = nn.unbox(boxed)
  count = sum(x.size for x in jax.tree.leaves(params))
  count_fn = config_lib.encdec_num_params if arch == "ED" else config_lib.num_params
  assert count == count_fn(cfg)
  specs = nn.get_partition_spec(boxed)
  flat = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
  assert all(set(s) <= set(layers.LOGICAL_AXES) for _, s in flat)
  tables = [(jax.tree_util.keystr(path), s) for path, s in flat if "table" in str(path)]
  relative = cfg.position_embedding == "relative"
  assert len(tables) == (2 if arch == "ED" else 1) * relative  # one per stack, not per layer
  assert all(tuple(s) == ("heads", "relpos_buckets") for _, s in tables)
  assert not any("cross" in path for path, _ in tables)  # cross-attention: no position bias
  mlps = [path for path, _ in flat if "'mlp'" in str(path)]
  assert any("gate" in str(p) for p in mlps) == cfg.mlp_gated
  assert ("head" in params) != cfg.tie_embeddings
  # Matmul parameters: all but the norms, an untied input table and the bias tables.
  norms = (cfg.encoder_layers * 2 + cfg.num_layers * 3 + 2 if arch == "ED"
           else cfg.num_layers * 2 + 1) * cfg.d_model
  lookups = (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model) + sum(
      cfg.num_heads * cfg.relative_attention_num_buckets for _ in tables)
  matmul_fn = (config_lib.encdec_num_matmul_params if arch == "ED"
               else config_lib.num_matmul_params)
  assert matmul_fn(cfg) == count - norms - lookups


@pytest.mark.parametrize("size,expected", [("base_t5_1_1", 247_577_856),
                                           ("large_t5_1_1", 783_150_080)])
def test_t5_1_1_size_files(size, expected):
  """The public T5.1.1 encoder-decoder checkpoints' counts, from gin/size/<size>.gin."""
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(GIN_SIZE_DIR, f"{size}.gin"))
    cfg = ModelConfig().with_vocab_size(32_100)  # 32,128 after padding
  finally:
    gin.clear_config()
  assert (cfg.position_embedding, cfg.mlp_activation, cfg.mlp_gated, cfg.tie_embeddings) == (
      "relative", "gelu", True, False)
  assert config_lib.encdec_num_params(cfg) == expected


def test_ungated_mlp_flops():
  gated, ungated = _config(), _config(mlp_gated=False)
  assert (config_lib.flops_per_token(gated, 64) - config_lib.flops_per_token(ungated, 64)
          == 6 * 2 * 16 * 32)  # one D x F matrix per layer, 6 FLOPs per parameter
  assert config_lib.encdec_flops_per_token(gated, 8, 8) > config_lib.encdec_flops_per_token(
      ungated, 8, 8)


def test_config_validation_lists_the_choices():
  with pytest.raises(ConfigError, match="valid choices: rope, relative, none"):
    ModelConfig(position_embedding="alibi")
  with pytest.raises(ConfigError, match="valid choices: silu, gelu, relu"):
    ModelConfig(mlp_activation="swish")
  with pytest.raises(ConfigError, match="mlp_gated"):
    ModelConfig(mlp_gated="yes")
  with pytest.raises(ConfigError, match="head_dim"):
    ModelConfig(head_dim=7)  # odd widths only fail where RoPE rotates pairs
  assert ModelConfig(head_dim=7, position_embedding="relative").head_dim == 7
  with pytest.raises(ConfigError, match="relative_attention_num_buckets"):
    ModelConfig(relative_attention_num_buckets=2)
  with pytest.raises(ConfigError, match="relative_attention_max_distance"):
    ModelConfig(relative_attention_num_buckets=32, relative_attention_max_distance=16)
  assert layers.MLP_ACTIVATIONS.names() == list(config_lib.MLP_ACTIVATIONS)
  # "gelu" is the tanh approximation (T5X: flax.linen.gelu), not the erf form.
  x = jnp.linspace(-4.0, 4.0, 81)
  tanh_form = 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x ** 3)))
  np.testing.assert_allclose(layers.MLP_ACTIVATIONS.get("gelu")(x), tanh_form, atol=1e-6)
  assert np.abs(jax.nn.gelu(x, approximate=False) - tanh_form).max() > 1e-4


def test_relpos_buckets_axis_is_replicated_by_every_rule_preset():
  for preset in sharding.RULE_PRESETS.names():
    axes = nn.logical_to_mesh_axes(("heads", "relpos_buckets"), sharding.RULE_PRESETS.get(preset))
    assert axes[1] is None, (preset, axes)


@pytest.mark.parametrize("arch", ["CD", "ED"])
def test_untied_head_logits_are_not_rescaled(arch):
  """T5.1.1 (T5X network.py): tied logits are x E^T / sqrt(D), untied logits x W, unscaled."""
  module, _, lengths = ARCHS[arch]
  batch = module.synthetic_batch(module.batch_spec(lengths, 2), 100, 0)
  norm = "final_norm" if arch == "CD" else "decoder_norm"
  for tie in (True, False):
    cfg = _config(**dict(T5_1_1, tie_embeddings=tie))
    params = _params(arch, cfg)
    logits, state = jax.jit(functools.partial(
        _model(arch, cfg).apply, capture_intermediates=lambda mdl, _: mdl.name == norm,
        mutable=["intermediates"]), compiler_options=FAST_COMPILE)({"params": params}, batch)
    h = np.asarray(state["intermediates"][norm]["__call__"][0], np.float64)
    if tie:
      expected = h @ np.asarray(params["embed"]["embedding"]).T / np.sqrt(cfg.d_model)
    else:
      expected = h @ np.asarray(params["head"])
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
    assert 0.5 < np.std(np.asarray(logits)) < 2.0  # both start at unit scale


# --------------------------------------------------------------- packed == unpacked


def _keys(arch: str) -> tuple[str, str, str]:
  module = ARCHS[arch][0]
  segments = "encoder_segment_ids" if arch == "EO" else "decoder_segment_ids"
  return module.TARGETS_KEY, module.WEIGHTS_KEY, segments


def _unpack(arch: str, packed):
  """Each packed example alone in a row from position 0, padded: seqio's unpacked layout."""
  rows = []
  segment_keys = [k for k in packed if k.endswith("_segment_ids")]
  for b in range(packed[segment_keys[0]].shape[0]):
    for s in np.unique(packed[segment_keys[0]][b][packed[segment_keys[0]][b] > 0]):
      row = {}
      for name, value in packed.items():
        if name.endswith(("_segment_ids", "_positions")):
          continue
        stream = "encoder" if name.startswith("encoder") else "decoder"
        piece = value[b][packed[f"{stream}_segment_ids"][b] == s]
        row[name] = np.pad(piece, (0, value.shape[1] - len(piece)))
      rows.append(row)
  return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}


def _per_example_losses(arch: str, cfg: ModelConfig, batch) -> np.ndarray:
  """[(loss, z_loss, weight)] per example, in row-major segment order."""
  targets_key, weights_key, segments_key = _keys(arch)
  logits = _logits(arch, cfg, batch)
  if segments_key in batch:
    segments = batch[segments_key]
  else:  # unpacked: real tokens are targets > 0, or inputs > 0 for the encoder (MLM)
    real = batch["encoder_input_tokens"] if arch == "EO" else batch[targets_key]
    segments = (real > 0).astype(np.int32)
  out = []
  for b in range(segments.shape[0]):
    for s in np.unique(segments[b][segments[b] > 0]):
      weights = batch[weights_key][b:b + 1] * (segments[b:b + 1] == s)
      out.append(np.array(weighted_cross_entropy(
          logits[b:b + 1], batch[targets_key][b:b + 1], weights, 1e-4)))
  return np.array(out)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("options", ["t5_1_1", "t5_1_0_none"])
def test_packed_equals_unpacked(arch, options):
  combo = T5_1_1 if options == "t5_1_1" else dict(T5_1_0, position_embedding="none")
  cfg = _config(**combo)
  module, _, lengths = ARCHS[arch]
  packed = module.synthetic_batch(module.batch_spec(lengths, 2), 100, 4)
  unpacked = _unpack(arch, packed)
  assert unpacked[_keys(arch)[0]].shape[0] == 6  # both rows hold several examples
  losses_packed = _per_example_losses(arch, cfg, packed)
  assert np.all(losses_packed[:, 2] > 0)  # every example carries loss weight
  np.testing.assert_allclose(losses_packed, _per_example_losses(arch, cfg, unpacked),
                             rtol=1e-5, atol=1e-5)
  # The relative bias reads the packed positions (all-zero positions change the logits
  # of later examples); without position information they change nothing.
  logits = _logits(arch, cfg, packed)
  flat = {k: (np.zeros_like(v) if k.endswith("_positions") else v) for k, v in packed.items()}
  moved = np.abs(_logits(arch, cfg, flat) - logits).max()
  assert (moved > 1e-3) if cfg.position_embedding == "relative" else (moved == 0.0)


# ------------------------------------------------------------- leakage by gradients

SEGMENTS = [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 3]]
CAUSAL_ATTENTION = [[1, 1, 0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 1, 0, 1]]  # ND prefixes
ENCODER_SEGMENTS = [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 3]]
DECODER_SEGMENTS = [[1, 1, 2, 2, 3, 0], [1, 2, 2, 2, 3, 3]]  # row 0 segment 3: no inputs


def _leakage_batch(arch: str):
  rng = np.random.default_rng(0)
  if arch == "ED":
    enc, dec = np.array(ENCODER_SEGMENTS, np.int32), np.array(DECODER_SEGMENTS, np.int32)
    return {"encoder_input_tokens": rng.integers(2, 100, enc.shape) * (enc > 0),
            "encoder_segment_ids": enc, "encoder_positions": mt.segment_positions(enc),
            "decoder_input_tokens": rng.integers(2, 100, dec.shape),
            "decoder_target_tokens": rng.integers(2, 100, dec.shape) * (dec > 0),
            "decoder_segment_ids": dec, "decoder_positions": mt.segment_positions(dec)}
  seg = np.array(SEGMENTS, np.int32)
  if arch == "EO":
    return {"encoder_input_tokens": rng.integers(3, 100, seg.shape) * (seg > 0),
            "encoder_segment_ids": seg, "encoder_positions": mt.segment_positions(seg)}
  batch = {"decoder_input_tokens": rng.integers(2, 100, seg.shape),
           "decoder_target_tokens": rng.integers(2, 100, seg.shape) * (seg > 0),
           "decoder_segment_ids": seg, "decoder_positions": mt.segment_positions(seg)}
  if arch == "ND":
    batch["decoder_causal_attention"] = np.array(CAUSAL_ATTENTION, np.int32)
  return batch


def _allowed(arch: str, batch) -> list[np.ndarray]:
  """What may flow, written from the segment ids alone (independent of models.masks)."""
  def block(query_seg, key_seg, rule):
    b, lq, lk = query_seg.shape[0], query_seg.shape[1], key_seg.shape[1]
    out = np.zeros((b, lq, b, lk), bool)
    for i in range(b):
      for q in range(lq):
        for k in range(lk):
          out[i, q, i, k] = query_seg[i, q] == key_seg[i, k] and rule(i, q, k)
    return out

  if arch == "ED":
    enc, dec = batch["encoder_segment_ids"], batch["decoder_segment_ids"]
    return [block(dec, dec, lambda i, q, k: k <= q),
            block(dec, enc, lambda i, q, k: enc[i, k] > 0),
            block(enc, enc, lambda i, q, k: True)]
  if arch == "EO":
    seg = batch["encoder_segment_ids"]
    return [block(seg, seg, lambda i, q, k: True)]
  seg = batch["decoder_segment_ids"]
  prefix = batch.get("decoder_causal_attention", np.zeros_like(seg))
  return [block(seg, seg, lambda i, q, k: k <= q or (prefix[i, q] and prefix[i, k]))]


def _influence(arch: str, cfg: ModelConfig, batch) -> list[np.ndarray]:
  model, params = _model(arch, cfg), _params(arch, cfg)
  batch = {k: jnp.asarray(v, jnp.int32) for k, v in batch.items()}
  keys = jax.random.split(jax.random.key(1), 4)
  r_V = jax.random.normal(keys[0], (cfg.vocab_size,))
  if arch == "ED":
    (b, s), t = batch["encoder_input_tokens"].shape, batch["decoder_input_tokens"].shape[1]
    enc_x = jax.random.normal(keys[1], (b, s, cfg.d_model))
    dec_x = jax.random.normal(keys[2], (b, t, cfg.d_model))
    r_D = jax.random.normal(keys[3], (cfg.d_model,))

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(enc_x, dec_x):
      out = lambda e, d: model.apply({"params": params}, e, d, batch,
                                     method=encdec.Model.logits_from_embeddings) @ r_V
      encoded = lambda e: model.apply({"params": params}, e, batch,
                                      method=encdec.Model.encode_embeddings) @ r_D
      from_enc, from_dec = jax.jacrev(out, argnums=(0, 1))(enc_x, dec_x)
      return [jnp.abs(g).sum(-1) for g in (from_dec, from_enc, jax.jacrev(encoded)(enc_x))]

    return [np.asarray(x) for x in run(enc_x, dec_x)]
  tokens = batch["encoder_input_tokens" if arch == "EO" else "decoder_input_tokens"]
  x = jax.random.normal(keys[1], tokens.shape + (cfg.d_model,))
  method = type(model).logits_from_embeddings

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(x):
    out = lambda x: model.apply({"params": params}, x, batch, method=method) @ r_V
    return jnp.abs(jax.jacrev(out)(x)).sum(-1)

  return [np.asarray(run(x))]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_relative_bias_leaks_nothing(arch):
  cfg = _config(**T5_1_1)
  batch = _leakage_batch(arch)
  for influence, allowed in zip(_influence(arch, cfg, batch), _allowed(arch, batch)):
    assert allowed.any() and (~allowed).any()
    mt.assert_flow_matches(influence, allowed, arch)


def test_leakage_check_fails_on_a_leaky_model():
  """The harness can fail: a prefix-decoder mask on CD data lets the prefix see ahead."""
  cfg = _config(**T5_1_1)
  batch = _leakage_batch("ND")
  influence = _influence("ND", cfg, batch)[0]
  allowed_causal = _allowed("CD", {k: v for k, v in batch.items()
                                   if k != "decoder_causal_attention"})[0]
  assert np.any(influence[~allowed_causal] > 0.0)


# ----------------------------------------------------------------- position sanity


def test_encoder_without_positions_is_permutation_equivariant():
  tokens = np.random.default_rng(0).integers(3, 100, (1, 10)).astype(np.int32)
  perm = np.random.default_rng(1).permutation(10)
  for position_embedding in ("none", "relative", "rope"):
    cfg = _config(position_embedding=position_embedding)
    logits = _logits("EO", cfg, {"encoder_input_tokens": tokens})
    permuted = _logits("EO", cfg, {"encoder_input_tokens": tokens[:, perm]})
    if position_embedding == "none":
      np.testing.assert_allclose(permuted, logits[:, perm], atol=1e-5)
    else:
      assert np.abs(permuted - logits[:, perm]).max() > 1e-3, position_embedding


# ------------------------------------------------------------------------ learning


@pytest.mark.e2e
def test_t5_1_1_encoder_decoder_learns_to_copy():
  """Targets = inputs, fresh random tokens every step: needs the relative positions."""
  batch_size, n, num_symbols = 32, 6, 8
  model = encdec.Model(mt.tiny_config(**T5_1_1))
  spec = encdec.batch_spec({"inputs": n, "targets": n}, batch_size, pack=False)
  params = nn.unbox(encdec.init_params(model, spec, jax.random.key(0)))
  mt.assert_learns_to_copy(model, params, num_symbols, n, batch_size)


# ------------------------------------------------------------ defaults unchanged

# Computed with the implementation before these options existed (same configs, init key
# 0, synthetic batch seed 0): sum |logits| and logits[1, -2:, 5:8].
BEFORE = {
    ("CD", True): (2494.851806640625,
                   [[2.777942657470703, 0.41921883821487427, -1.20867121219635],
                    [0.27670541405677795, 0.9791133999824524, 0.5888994932174683]]),
    ("ND", False): (2501.48828125,
                    [[0.8177801370620728, -0.9644495844841003, 0.7104288339614868],
                     [-0.6232620477676392, 1.9188647270202637, -0.44354739785194397]]),
    ("ED", False): (1717.48291015625,
                    [[-0.3690549433231354, 1.0940529108047485, 0.8560916185379028],
                     [-0.3331470489501953, 0.695815920829773, 0.8877544403076172]]),
    ("EO", True): (2453.7958984375,
                   [[2.560256242752075, 0.8729311227798462, -0.6644179821014404],
                    [0.0762304961681366, 1.4437037706375122, -1.354724645614624]]),
}
BEFORE_LENGTHS = {"CD": {"targets": 12}, "ND": {"inputs": 6, "targets": 6},
                  "ED": {"inputs": 10, "targets": 8}, "EO": {"targets": 12}}


@pytest.mark.parametrize("arch,tie", list(BEFORE))
def test_default_logits_unchanged(arch, tie):
  cfg = _config(tie_embeddings=tie)
  assert (cfg.position_embedding, cfg.mlp_activation, cfg.mlp_gated) == ("rope", "silu", True)
  module, kwargs, _ = ARCHS[arch]
  spec = module.batch_spec(BEFORE_LENGTHS[arch], 2)
  model = module.Model(cfg, **kwargs)
  init = jax.jit(model.init, compiler_options=FAST_COMPILE)
  params = init(jax.random.key(0), {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()})
  batch = module.synthetic_batch(spec, 100, 0)
  logits = np.asarray(jax.jit(model.apply, compiler_options=FAST_COMPILE)(params, batch))
  total, corner = BEFORE[(arch, tie)]
  np.testing.assert_allclose(np.abs(logits).sum(), total, rtol=1e-5)
  np.testing.assert_allclose(logits[1, -2:, 5:8], corner, rtol=1e-5, atol=1e-6)
