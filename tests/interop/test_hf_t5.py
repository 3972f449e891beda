"""The encoder-decoder <-> HF T5ForConditionalGeneration (launch/interop/hf_t5.py): equal
logits and greedy tokens on real text, bit-equal round trips both ways, and refusals of
what HF's T5 cannot express.

Heads are 16 wide (sqrt(K) = 4) or 64 (T5's d_kv, sqrt = 8): the K**-0.5 folded into the
query is then exact, which the bit-equality of the round trips relies on.
"""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

transformers = pytest.importorskip("transformers",
                                   reason="needs the hf extra: pip install -e '.[hf]'")
torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
safetensors_numpy = pytest.importorskip("safetensors.numpy",
                                        reason="needs the hf extra: pip install -e '.[hf]'")

from objectax.launch.interop import hf_t5  # pylint: disable=g-import-not-at-top
from objectax.models import decoding, encdec  # pylint: disable=g-import-not-at-top
from objectax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
from objectax.models.registry import ConfigError  # pylint: disable=g-import-not-at-top

SHAPES = dict(d_model=64, num_heads=4, head_dim=16, mlp_dim=128, num_layers=2)
T5_1_1 = dict(position_embedding="relative", mlp_activation="gelu", mlp_gated=True,
              tie_embeddings=False)
OPTION_SETS = {
    "t5.1.1": dict(T5_1_1, num_encoder_layers=3),
    "geglu-tied": dict(T5_1_1, tie_embeddings=True),  # Wang et al. 2022
    # T5 v1.0's MLP, with buckets that saturate within the test's 61 encoder tokens.
    "relu-ungated-tied": dict(T5_1_1, mlp_activation="relu", mlp_gated=False,
                              tie_embeddings=True, relative_attention_num_buckets=16,
                              relative_attention_max_distance=32),
    "gelu-ungated": dict(T5_1_1, mlp_gated=False),  # feed_forward_proj "gelu_new"
    "swiglu": dict(T5_1_1, mlp_activation="silu"),  # "gated-silu"
}
INPUTS, TARGETS = 60, 24  # tokens of each text read as encoder inputs (+ EOS) and targets
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tokenized(tfds_data_dir):
  """The repo's vocabulary and 8 validation documents of the embedded corpus, tokenized."""
  del tfds_data_dir  # builds the corpus and the SentencePiece model once per session
  from objectax.data import vocab  # pylint: disable=g-import-not-at-top
  from objectax.launch.eval import zeroshot  # pylint: disable=g-import-not-at-top
  vocabulary = vocab.default_vocabulary()
  rows = [list(vocabulary.encode(text)) for text in zeroshot.validation_texts("pydocs", 8)]
  assert len(rows) == 8 and min(map(len, rows)) >= INPUTS + TARGETS
  return vocabulary, rows


def _objectax(options, vocabulary, seed=0):
  """A tiny encoder-decoder with random non-trivial norm scales and relative bias tables
  (their inits, ones and small values, would let a mix-up go unnoticed)."""
  cfg = ModelConfig(**{**SHAPES, **options}).with_vocab_size(vocabulary.vocab_size)
  model = encdec.Model(cfg)
  params = nn.unbox(model.init(jax.random.key(seed), {
      "encoder_input_tokens": jnp.ones((1, 8), jnp.int32),
      "decoder_input_tokens": jnp.zeros((1, 4), jnp.int32)})["params"])
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: _randomized(path, np.asarray(x), rng), params)
  return cfg, model, params


def _randomized(path, x, rng):
  name = jax.tree_util.keystr(path)
  if name.endswith("['scale']"):
    return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
  if name.endswith("['table']"):
    return rng.normal(0.0, 1.0, x.shape).astype(np.float32)
  return x


def _export(params, cfg, vocabulary, tmp_path):
  """to_hf + hf_config written as safetensors and config.json, loaded by from_pretrained;
  asserts HF found every tensor it needs and nothing else."""
  config = hf_t5.hf_config(cfg, "encoder_decoder", vocabulary)
  (tmp_path / "config.json").write_text(json.dumps(config))
  safetensors_numpy.save_file(hf_t5.to_hf(params, cfg, "encoder_decoder"),
                              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  model, info = transformers.T5ForConditionalGeneration.from_pretrained(
      str(tmp_path), output_loading_info=True)
  assert not any(info.values()), info  # missing, unexpected, mismatched, errors
  assert (model.lm_head.weight is model.shared.weight) == cfg.tie_embeddings
  assert model.config.scale_decoder_outputs == cfg.tie_embeddings
  assert model.dtype == torch.float32
  return model.eval()


def _batch(rows):
  """Unpadded rows: INPUTS tokens + EOS into the encoder, TARGETS tokens shifted right."""
  inputs = np.array([r[:INPUTS] + [1] for r in rows], np.int32)
  targets = np.array([r[INPUTS:INPUTS + TARGETS] for r in rows], np.int32)
  shifted = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": inputs, "decoder_input_tokens": shifted,
          "decoder_target_tokens": targets}


def _hf_logits(model, batch):
  with torch.no_grad():
    inputs = torch.from_numpy(batch["encoder_input_tokens"]).long()
    return model(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                 decoder_input_ids=torch.from_numpy(batch["decoder_input_tokens"]).long()
                 ).logits.numpy()


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_exported_logits_equal(name, tokenized, tmp_path):
  vocabulary, rows = tokenized
  cfg, model, params = _objectax(OPTION_SETS[name], vocabulary)
  assert hf_t5.unsupported(cfg, "encoder_decoder") == []
  hf = _export(params, cfg, vocabulary, tmp_path)
  batch = _batch(rows)
  ours = np.asarray(model.apply({"params": params}, batch))
  theirs = _hf_logits(hf, batch)
  assert ours.shape == theirs.shape == (8, TARGETS, cfg.vocab_size)
  diff = np.abs(ours - theirs).max()
  print(f"{name}: max |logit diff| {diff:.2e} (logits up to {np.abs(ours).max():.1f})")
  assert diff < 1e-4


def test_greedy_generation_equals(tokenized, tmp_path):
  """8 prompts of different lengths in one padded batch: HF's greedy generate and ours
  give the same tokens, up to and including EOS (HF pads after it). EOS's head column is
  doubled, so that some rows stop early (3 of them with this seed) and others do not."""
  vocabulary, rows = tokenized
  cfg, model, params = _objectax(OPTION_SETS["t5.1.1"], vocabulary, seed=1)
  params["head"] = params["head"].copy()
  params["head"][:, 1] *= 2
  hf = _export(params, cfg, vocabulary, tmp_path)
  prompts = [r[:n] + [1] for r, n in zip(rows, (5, 40, 12, 27, 8, 33, 19, 50))]
  ours = decoding.generate(model, params, prompts, max_new_tokens=NEW_TOKENS,
                           vocab_size=cfg.vocab_size).tokens
  width = max(map(len, prompts))
  ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
  with torch.no_grad():
    out = hf.generate(input_ids=ids, attention_mask=(ids > 0).long(), do_sample=False,
                      num_beams=1, max_new_tokens=NEW_TOKENS).numpy()
  assert (out[:, 0] == 0).all()  # decoder_start_token_id
  theirs = []
  for row in out[:, 1:].tolist():
    theirs.append(row[:row.index(1) + 1] if 1 in row else row)
  print(f"greedy: {sum(map(len, ours))} tokens, row lengths {[len(r) for r in ours]}")
  assert ours == theirs
  assert len({tuple(r) for r in ours}) > 1  # the prompts matter
  ended = [r[-1] == 1 for r in ours]
  assert any(ended) and not all(ended)


def _random_hf(tied, encoder_layers, d_kv, feed_forward_proj, seed):
  """A randomly initialised HF T5 (no download) with random norm scales too (HF's init
  sets them to ones) and, untied, a separate random lm_head (fan-in scaled, as ours)."""
  config = transformers.T5Config(
      vocab_size=256, d_model=64, d_kv=d_kv, num_heads=4, d_ff=128, num_layers=encoder_layers,
      num_decoder_layers=2, feed_forward_proj=feed_forward_proj, tie_word_embeddings=tied,
      dropout_rate=0.0, decoder_start_token_id=0)
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        p.uniform_(0.5, 1.5)
    if not tied:
      model.lm_head.weight = torch.nn.Parameter(torch.randn(256, 64) / 8)
  return model


@pytest.mark.parametrize("tied, encoder_layers, d_kv, feed_forward_proj", [
    (False, 2, 16, "gated-gelu"), (True, 3, 64, "relu")], ids=["t5.1.1", "t5.1.0"])
def test_hf_round_trip_is_bit_equal(tied, encoder_layers, d_kv, feed_forward_proj):
  """HF -> from_hf -> to_hf gives HF's tensors back (its tied aliases of `shared` aside),
  hf_config gives its config back, and the imported model computes HF's logits."""
  hf = _random_hf(tied, encoder_layers, d_kv, feed_forward_proj, seed=2)
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  arch, params, fields = hf_t5.from_hf(state, hf.config.to_dict())
  assert arch == "encoder_decoder"
  assert fields == dict(
      d_model=64, num_heads=4, head_dim=d_kv, mlp_dim=128, num_layers=2,
      num_encoder_layers=0 if encoder_layers == 2 else encoder_layers, vocab_size=256,
      tie_embeddings=tied, position_embedding="relative", relative_attention_num_buckets=32,
      relative_attention_max_distance=128, mlp_activation="relu" if tied else "gelu",
      mlp_gated=not tied)
  cfg = ModelConfig(**fields)
  back = hf_t5.to_hf(params, cfg, "encoder_decoder")
  aliases = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
  aliases |= {"lm_head.weight"} if tied else set()
  assert set(back) == set(state) - aliases
  for name, tensor in back.items():
    assert tensor.dtype == np.float32 and np.array_equal(tensor, state[name]), name
  again = transformers.T5Config(**hf_t5.hf_config(cfg, "encoder_decoder", None))
  for key in ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
              "vocab_size", "dense_act_fn", "is_gated_act", "scale_decoder_outputs",
              "relative_attention_num_buckets", "relative_attention_max_distance",
              "layer_norm_epsilon", "decoder_start_token_id", "pad_token_id", "eos_token_id"):
    assert getattr(again, key) == getattr(hf.config, key), key
  batch = _batch([list(range(3, 120))] * 2)
  ours = np.asarray(encdec.Model(cfg).apply({"params": params}, batch))
  diff = np.abs(ours - _hf_logits(hf, batch)).max()
  print(f"imported {'tied' if tied else 'untied'}: max |logit diff| {diff:.2e} (logits up "
        f"to {np.abs(ours).max():.1f})")
  assert diff < 1e-4


@pytest.mark.parametrize("name", ["t5.1.1", "geglu-tied", "relu-ungated-tied"])
def test_objectax_round_trip_is_bit_equal(name, tokenized):
  """objectax -> to_hf -> from_hf gives the same params tree, bit for bit, and the same
  ModelConfig fields."""
  vocabulary, _ = tokenized
  cfg, _, params = _objectax(OPTION_SETS[name], vocabulary, seed=3)
  tensors = hf_t5.to_hf(params, cfg, "encoder_decoder")
  config = hf_t5.hf_config(cfg, "encoder_decoder", vocabulary)
  arch, back, fields = hf_t5.from_hf(tensors, config)
  assert arch == "encoder_decoder"
  assert fields == {k: getattr(cfg, k) for k in fields}
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(back)):
    assert y.dtype == np.float32 and np.array_equal(np.asarray(x), y), jax.tree_util.keystr(path)


def test_other_head_widths_round_trip_within_an_ulp(tokenized):
  """K = 32 (sqrt(K) not a power of two): the query's rescaling rounds, once each way."""
  vocabulary, _ = tokenized
  cfg, _, params = _objectax(dict(OPTION_SETS["t5.1.1"], head_dim=32), vocabulary, seed=6)
  tensors = hf_t5.to_hf(params, cfg, "encoder_decoder")
  _, back, _ = hf_t5.from_hf(tensors, hf_t5.hf_config(cfg, "encoder_decoder", vocabulary))
  query, again = params["decoder_block_1"]["cross_attention"]["query"], back[
      "decoder_block_1"]["cross_attention"]["query"]
  np.testing.assert_array_max_ulp(np.asarray(query), again, maxulp=1)
  assert np.array_equal(np.asarray(params["decoder_block_1"]["cross_attention"]["key"]),
                        back["decoder_block_1"]["cross_attention"]["key"])


def test_older_checkpoint_layouts_import():
  """The aliases older checkpoints store (embed_tokens, the ignored cross-attention bias)
  are accepted, embed_tokens stands in for a missing shared, and an untied config
  without lm_head gets HF's tied-unscaled head."""
  hf = _random_hf(False, 2, 16, "gated-gelu", seed=4)
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  ignored = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
  extra = dict(state, **{ignored: np.zeros((32, 4), np.float32)})
  hf_t5.from_hf(extra, {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
                        "d_model": 64, "d_kv": 16, "num_heads": 4, "d_ff": 128,
                        "num_layers": 2, "vocab_size": 256})
  headless = {k: v for k, v in state.items() if k not in ("lm_head.weight", "shared.weight")}
  _, params, fields = hf_t5.from_hf(headless, hf.config.to_dict())
  assert not fields["tie_embeddings"]
  assert np.array_equal(params["head"], state["shared.weight"].T)


@pytest.mark.parametrize("change, says", [
    (dict(feed_forward_proj="gelu"), "erf GELU"),
    (dict(feed_forward_proj="gated-tanh"), "feed_forward_proj"),
    (dict(layer_norm_epsilon=1e-5), "layer_norm_epsilon"),
    (dict(is_encoder_decoder=False), "encoder-decoder"),
    (dict(relative_attention_num_buckets=38, relative_attention_max_distance=256), "bucket"),
    (dict(d_ff=96), "shape"),
    (dict(scale_decoder_outputs=True), "lm_head"),  # a tied config with a separate head
    (dict(decoder_start_token_id=2), "decoder_start_token_id"),
    (dict(eos_token_id=[1, 2]), "eos_token_id"),
])
def test_from_hf_refuses_in_one_line(change, says):
  hf = _random_hf(False, 2, 16, "gated-gelu", seed=5)
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  with pytest.raises(ConfigError, match=says) as e:
    hf_t5.from_hf(state, dict(hf.config.to_dict(), **change))
  assert "\n" not in str(e.value)


def test_unsupported_names_each_option():
  cfg = lambda **kw: ModelConfig(**SHAPES, **dict(T5_1_1, **kw), vocab_size=256)
  assert hf_t5.unsupported(cfg(), "encoder_decoder") == []
  for gated in (True, False):
    for activation in ("gelu", "silu", "relu"):
      assert hf_t5.unsupported(cfg(mlp_activation=activation, mlp_gated=gated),
                               "encoder_decoder") == []
  for position in ("rope", "none"):
    [problem] = hf_t5.unsupported(cfg(position_embedding=position), "encoder_decoder")
    assert problem.startswith(f"ModelConfig.position_embedding='{position}' (")
  [problem] = hf_t5.unsupported(cfg(relative_attention_num_buckets=38,
                                    relative_attention_max_distance=256), "encoder_decoder")
  assert problem.startswith("ModelConfig.relative_attention_num_buckets=38") and "48" in problem
  [problem] = hf_t5.unsupported(cfg(), "causal_decoder")
  assert "causal_decoder" in problem
  with pytest.raises(ConfigError, match="position_embedding"):
    hf_t5.hf_config(cfg(position_embedding="rope"), "encoder_decoder", None)
