"""The encoder-decoder <-> Hugging Face `T5ForConditionalGeneration`, exactly.

models/encdec.py is the T5 v1.1 layout (pre-norm RMSNorm blocks, no biases, one relative
position bias table per stack), so every option set HF's T5 can express converts both
ways with equal logits (float32) and parameter conversions that are identities, but for
the query rescaling of the first point below:

- Attention scale. Ours scales the logits by 1/sqrt(K) (`jax.nn.dot_product_attention`);
  HF T5 does not scale at all (Mesh TF folded the scale into the query initialisation).
  Export multiplies every query kernel (self- and cross-attention) by K**-0.5 and import
  multiplies it back by sqrt(K). Both are exact, so round trips are bit-equal, when
  sqrt(K) is a power of two (K = 4, 16, 64, 256, ...: T5's d_kv 64 included); for other K
  each product is rounded once and round trips agree within an ulp.
- Output layer. Tied, ours divides the logits by sqrt(D) (`layers.output_kernel`) and HF
  multiplies the decoder output by D**-0.5 (`scale_decoder_outputs`, what transformers 5
  makes of T5 v1.0's tie_word_embeddings=True); untied (T5.1.1), neither side rescales
  and the D x V head is HF's separate lm_head.
- Relative position bias. Ours keeps one (H, N) table per stack, shared by its layers; HF
  keeps it, transposed (N, H), in block 0's self-attention of each stack and hands it to
  the later blocks. The two bucket functions agree at T5's 32 buckets / distance 128 but
  not at every setting (ours adds T5X's float32 eps inside the log and divides in
  float64, HF's torch code divides in float32): `unsupported` compares them on every
  distance for the config's setting and refuses where a distance lands elsewhere.
- MLP. T5Config.feed_forward_proj is "[gated-]<ACT2FN name>": GeGLU is "gated-gelu",
  which HF maps to gelu_new, the tanh approximation our "gelu" is (jax.nn.gelu,
  approximate=True); the ungated tanh GELU is "gelu_new", since a bare "gelu" is HF's
  erf GELU. silu and relu, gated or not, keep their names.
- Norms. HF's T5LayerNorm is our RMSNorm (no mean, no bias, float32 statistics) with
  layer_norm_epsilon, which ours fixes at 1e-6; a checkpoint with another epsilon is
  refused.

`to_hf` / `from_hf` read and write the plain (unscanned) layout of unboxed "params";
`launch/interop/hf.py` (the common export/import path) calls them through ARCHS and
MODEL_TYPES.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from objectax.models.config import ModelConfig
from objectax.models.registry import ConfigError

ARCHS = ("encoder_decoder",)
MODEL_TYPES = ("t5",)

PAD_ID = 0  # also the decoder's first input (seqio's EncDecFeatureConverter shifts in 0)
EOS_ID = 1  # models/decoding.py stops a row at this id
EPSILON = 1e-6  # layers.RMSNorm's, not a ModelConfig field

# Ours (mlp_activation, mlp_gated) -> feed_forward_proj.
_FEED_FORWARD = {("gelu", True): "gated-gelu", ("silu", True): "gated-silu",
                 ("relu", True): "gated-relu", ("gelu", False): "gelu_new",
                 ("silu", False): "silu", ("relu", False): "relu"}
# HF activation (ACT2FN name, after T5Config's "gated-gelu" -> gelu_new) -> ours. The tanh
# GELUs are the same function as jax.nn.gelu(approximate=True); "gelu" (erf) is not.
_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "silu": "silu",
                "swish": "silu", "relu": "relu"}
# Present in some T5 checkpoints, never read by HF (its _keys_to_ignore_on_load_unexpected).
_IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
# HF's aliases of `shared` (its _tied_weights_keys), stored by older checkpoints.
_EMBED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def unsupported(cfg: ModelConfig, arch: str) -> list[str]:
  """Each option of `cfg` that HF's T5 cannot express exactly; [] = exportable."""
  out = []
  if arch not in ARCHS:
    out.append(f"architecture {arch!r} (HF T5 is the encoder-decoder; use "
               f"{', '.join(ARCHS)})")
  if cfg.position_embedding != "relative":
    out.append(f"ModelConfig.position_embedding={cfg.position_embedding!r} (HF T5 has only "
               "its relative position bias: use 'relative')")
  else:
    distances = _bucket_disagreements(cfg.relative_attention_num_buckets,
                                      cfg.relative_attention_max_distance)
    if distances:
      out.append(
          f"ModelConfig.relative_attention_num_buckets={cfg.relative_attention_num_buckets}"
          f" with relative_attention_max_distance={cfg.relative_attention_max_distance} "
          f"(HF T5's float32 bucketing puts relative positions {distances[:4]} in other "
          "buckets than ours; T5's 32 / 128 agree)")
  if (cfg.mlp_activation, cfg.mlp_gated) not in _FEED_FORWARD:
    out.append(f"ModelConfig.mlp_activation={cfg.mlp_activation!r} with "
               f"mlp_gated={cfg.mlp_gated} (no T5Config.feed_forward_proj computes it)")
  return out


def hf_config(cfg: ModelConfig, arch: str, vocabulary: Any) -> dict:
  """config.json of the T5ForConditionalGeneration that `to_hf(params, cfg)` fills.

  tie_word_embeddings is the tying as T5 v1.0 / v1.1 checkpoints state it (transformers
  4 reads it so); transformers 5 always ties lm_head to shared in T5Config and reads the
  output scaling from scale_decoder_outputs instead (written too, so both agree), and
  unties a checkpoint whose lm_head differs from shared, with a warning no config
  silences. dropout_rate is 0: HF's T5 drops out in more places than ours (the attention
  probabilities, the MLP hidden), so the training setting would not carry over anyway.
  `vocabulary` is unused: ids 0 (padding and decoder start) and 1 (EOS) are fixed by
  seqio's T5 conventions, which the models and decoding assume.
  """
  del vocabulary
  if cfg.vocab_size <= 0:
    raise ConfigError("ModelConfig.vocab_size is 0; export the config the model was built "
                      "with (config.with_vocab_size(vocabulary size))")
  problems = unsupported(cfg, arch)
  if problems:
    raise ConfigError(f"HF T5 cannot express {'; '.join(problems)}")
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "d_model": cfg.d_model,
      "d_kv": cfg.head_dim,
      "d_ff": cfg.mlp_dim,
      "num_layers": cfg.encoder_layers,
      "num_decoder_layers": cfg.num_layers,
      "num_heads": cfg.num_heads,
      "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
      "relative_attention_max_distance": cfg.relative_attention_max_distance,
      "feed_forward_proj": _FEED_FORWARD[cfg.mlp_activation, cfg.mlp_gated],
      "layer_norm_epsilon": EPSILON,
      "dropout_rate": 0.0,
      "vocab_size": cfg.vocab_size,
      "tie_word_embeddings": cfg.tie_embeddings,
      "scale_decoder_outputs": cfg.tie_embeddings,
      "is_encoder_decoder": True,
      "pad_token_id": PAD_ID,
      "eos_token_id": EOS_ID,
      "decoder_start_token_id": PAD_ID,
      "torch_dtype": "float32",
  }


def to_hf(params: Mapping, cfg: ModelConfig, arch: str) -> dict[str, np.ndarray]:
  """Plain-layout unboxed params -> HF state dict (float32 numpy; Linear weights (out, in)).

  Writes `shared.weight` once (HF re-ties encoder/decoder embed_tokens to it) and
  `lm_head.weight` only when untied. Query kernels get K**-0.5 (see the module docstring).
  """
  problems = unsupported(cfg, arch)
  if problems:
    raise ConfigError(f"HF T5 cannot express {'; '.join(problems)}")
  k = cfg.head_dim
  out = {"shared.weight": _f32(params["embed"]["embedding"])}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = _f32(params["head"]).T
  for stack, blocks, names in (("encoder", cfg.encoder_layers, _ENCODER_LAYERS),
                               ("decoder", cfg.num_layers, _DECODER_LAYERS)):
    out[f"{stack}.final_layer_norm.weight"] = _f32(params[f"{stack}_norm"]["scale"])
    out[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        _f32(params[f"{stack}_relpos_bias"]["table"]).T)
    for i in range(blocks):
      block = params[f"{stack}_block_{i}"]
      prefix = f"{stack}.block.{i}.layer"
      for layer, (norm, attention, hf_attention) in enumerate(names):
        out[f"{prefix}.{layer}.layer_norm.weight"] = _f32(block[norm]["scale"])
        if attention == "mlp":
          out.update(_mlp_to_hf(block["mlp"], f"{prefix}.{layer}.DenseReluDense", cfg.mlp_gated))
        else:
          out.update(_attention_to_hf(block[attention], f"{prefix}.{layer}.{hf_attention}", k))
  # C order: safetensors writes an array's buffer as it lies, so a transposed view would
  # be stored scrambled.
  return {name: np.ascontiguousarray(x) for name, x in out.items()}


def from_hf(tensors: Mapping[str, np.ndarray], config: Mapping) -> tuple[str, dict, dict]:
  """An HF T5ForConditionalGeneration state dict and config.json -> ("encoder_decoder",
  plain-layout params (float32 numpy), ModelConfig fields to bind).

  Raises ConfigError (one line) for a T5 that has no exact twin here: another
  feed_forward_proj activation (the erf "gelu" included), layer_norm_epsilon other than
  1e-6, bucket settings on which the two bucket functions disagree, a tied config whose
  checkpoint holds a different lm_head (HF would scale it and not tie), special ids other
  than T5's (pad = decoder start = 0, EOS = 1: our masks and decoding assume them),
  tensors missing, unexpected or of the wrong shape.
  """
  fields, tied = _fields(config)
  names = set(tensors)
  if "shared.weight" not in names:  # a checkpoint that kept only an alias
    alias = next((a for a in _EMBED_ALIASES if a in names), None)
    if alias is None:
      raise ConfigError("HF T5 checkpoint has no shared.weight (nor encoder/decoder "
                        "embed_tokens.weight): no token embedding to import")
    tensors = dict(tensors, **{"shared.weight": tensors[alias]})
    names = set(tensors)
  shared = _tensor(tensors, "shared.weight")
  for alias in _EMBED_ALIASES:
    if alias in names and not np.array_equal(_tensor(tensors, alias), shared):
      raise ConfigError(f"HF T5 checkpoint: {alias} differs from shared.weight; ours shares "
                        "one embedding between the encoder and the decoder")
  if tied and "lm_head.weight" in names and not np.array_equal(
      _tensor(tensors, "lm_head.weight"), shared):
    raise ConfigError("HF T5 checkpoint: the config ties the embeddings (scaled logits) but "
                      "lm_head.weight differs from shared.weight; HF would apply the "
                      "separate lm_head to scaled outputs, which has no twin here")
  if not tied and "lm_head.weight" not in names:
    # HF ties the missing head to `shared`, unscaled: an untied head equal to it.
    tensors = dict(tensors, **{"lm_head.weight": shared})
    names = set(tensors)
  cfg = _model_config(fields)
  expected = _expected_shapes(cfg)
  missing = sorted(set(expected) - names)
  unexpected = sorted(names - set(expected) - set(_IGNORED) - set(_EMBED_ALIASES)
                      - ({"lm_head.weight"} if tied else set()))
  if missing or unexpected:
    raise ConfigError(f"HF T5 checkpoint does not match its config: missing {missing[:3]}"
                      f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                      f"{' ...' if len(unexpected) > 3 else ''}")
  for name, shape in expected.items():
    if tuple(np.shape(tensors[name])) != shape:
      raise ConfigError(f"HF T5 checkpoint: {name} has shape {tuple(np.shape(tensors[name]))}, "
                        f"the config says {shape}")
  get = lambda name: _tensor(tensors, name)
  params: dict[str, Any] = {"embed": {"embedding": shared}}
  if not tied:
    params["head"] = np.ascontiguousarray(get("lm_head.weight").T)
  for stack, blocks, layer_names in (("encoder", cfg.encoder_layers, _ENCODER_LAYERS),
                                     ("decoder", cfg.num_layers, _DECODER_LAYERS)):
    params[f"{stack}_norm"] = {"scale": get(f"{stack}.final_layer_norm.weight")}
    params[f"{stack}_relpos_bias"] = {"table": np.ascontiguousarray(get(
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight").T)}
    for i in range(blocks):
      block: dict[str, Any] = {}
      prefix = f"{stack}.block.{i}.layer"
      for layer, (norm, attention, hf_attention) in enumerate(layer_names):
        block[norm] = {"scale": get(f"{prefix}.{layer}.layer_norm.weight")}
        if attention == "mlp":
          block["mlp"] = _mlp_from_hf(get, f"{prefix}.{layer}.DenseReluDense", cfg)
        else:
          block[attention] = _attention_from_hf(get, f"{prefix}.{layer}.{hf_attention}", cfg)
      params[f"{stack}_block_{i}"] = block
  return "encoder_decoder", params, fields


# (our norm, our attention or "mlp", HF's attention module) per HF layer of a block.
_ENCODER_LAYERS = (("attention_norm", "attention", "SelfAttention"),
                   ("mlp_norm", "mlp", None))
_DECODER_LAYERS = (("self_attention_norm", "self_attention", "SelfAttention"),
                   ("cross_attention_norm", "cross_attention", "EncDecAttention"),
                   ("mlp_norm", "mlp", None))


def _f32(x: Any) -> np.ndarray:
  return np.asarray(x, np.float32)


def _tensor(tensors: Mapping[str, Any], name: str) -> np.ndarray:
  """float32 numpy (a bfloat16/float16 checkpoint widens exactly)."""
  return np.asarray(tensors[name], np.float32)


def _query_scale(k: int) -> float:
  """The 1/sqrt(K) ours applies to the logits, folded into HF's query."""
  return float(k) ** -0.5


def _attention_to_hf(attention: Mapping, prefix: str, k: int) -> dict[str, np.ndarray]:
  """q/k/v (D, H, K) -> (H*K, D); out (H, K, D) -> (D, H*K); the query times K**-0.5,
  computed in float64 and rounded once (exact when sqrt(K) is a power of two)."""
  d, h, _ = np.shape(attention["query"])
  flat = lambda w: _f32(w).reshape(d, h * k).T
  query = (np.asarray(attention["query"], np.float64) * _query_scale(k)).astype(np.float32)
  return {f"{prefix}.q.weight": query.reshape(d, h * k).T,
          f"{prefix}.k.weight": flat(attention["key"]),
          f"{prefix}.v.weight": flat(attention["value"]),
          f"{prefix}.o.weight": _f32(attention["out"]).reshape(h * k, d).T}


def _attention_from_hf(get, prefix: str, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The inverse of `_attention_to_hf` (the query times sqrt(K), rounded once)."""
  d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
  unflat = lambda w: np.ascontiguousarray(w.T.reshape(d, h, k))
  query = (np.asarray(get(f"{prefix}.q.weight"), np.float64) / _query_scale(k)).astype(np.float32)
  return {"query": unflat(query), "key": unflat(get(f"{prefix}.k.weight")),
          "value": unflat(get(f"{prefix}.v.weight")),
          "out": np.ascontiguousarray(get(f"{prefix}.o.weight").T.reshape(h, k, d))}


def _mlp_to_hf(mlp: Mapping, prefix: str, gated: bool) -> dict[str, np.ndarray]:
  """gate (D, F) -> wi_0, up -> wi_1 (ungated: up -> wi), down (F, D) -> wo, all (out, in)."""
  t = lambda w: _f32(w).T
  if gated:
    return {f"{prefix}.wi_0.weight": t(mlp["gate"]), f"{prefix}.wi_1.weight": t(mlp["up"]),
            f"{prefix}.wo.weight": t(mlp["down"])}
  return {f"{prefix}.wi.weight": t(mlp["up"]), f"{prefix}.wo.weight": t(mlp["down"])}


def _mlp_from_hf(get, prefix: str, cfg: ModelConfig) -> dict[str, np.ndarray]:
  t = lambda name: np.ascontiguousarray(get(f"{prefix}.{name}.weight").T)
  if cfg.mlp_gated:
    return {"gate": t("wi_0"), "up": t("wi_1"), "down": t("wo")}
  return {"up": t("wi"), "down": t("wo")}


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every tensor `to_hf(params, cfg)` writes, with its shape."""
  d, f, inner = cfg.d_model, cfg.mlp_dim, cfg.num_heads * cfg.head_dim
  shapes = {"shared.weight": (cfg.vocab_size, d)}
  if not cfg.tie_embeddings:
    shapes["lm_head.weight"] = (cfg.vocab_size, d)
  mlp = ({"wi_0": (f, d), "wi_1": (f, d), "wo": (d, f)} if cfg.mlp_gated
         else {"wi": (f, d), "wo": (d, f)})
  for stack, blocks, layer_names in (("encoder", cfg.encoder_layers, _ENCODER_LAYERS),
                                     ("decoder", cfg.num_layers, _DECODER_LAYERS)):
    shapes[f"{stack}.final_layer_norm.weight"] = (d,)
    shapes[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        cfg.relative_attention_num_buckets, cfg.num_heads)
    for i in range(blocks):
      for layer, (_, attention, hf_attention) in enumerate(layer_names):
        prefix = f"{stack}.block.{i}.layer.{layer}"
        shapes[f"{prefix}.layer_norm.weight"] = (d,)
        if attention == "mlp":
          shapes.update({f"{prefix}.DenseReluDense.{n}.weight": s for n, s in mlp.items()})
        else:
          shapes.update({f"{prefix}.{hf_attention}.{n}.weight": (inner, d)
                         for n in ("q", "k", "v")})
          shapes[f"{prefix}.{hf_attention}.o.weight"] = (d, inner)
  return shapes


def _fields(config: Mapping) -> tuple[dict, bool]:
  """ModelConfig fields of an HF T5 config.json (or T5Config.to_dict()), and whether the
  output layer is tied and scaled.

  transformers 5 writes scale_decoder_outputs (and always tie_word_embeddings=True);
  transformers 4 and the hub's T5 configs state tie_word_embeddings alone (default True).
  """
  model_type = config.get("model_type", "t5")
  if model_type not in MODEL_TYPES:
    raise ConfigError(f"HF config model_type={model_type!r} is not T5 ({', '.join(MODEL_TYPES)})")
  if not config.get("is_encoder_decoder", True) or config.get("is_decoder", False):
    raise ConfigError("HF T5 config is not an encoder-decoder (is_encoder_decoder false or "
                      "is_decoder true); only T5ForConditionalGeneration converts")
  epsilon = float(config.get("layer_norm_epsilon", EPSILON))
  if epsilon != EPSILON:
    raise ConfigError(f"HF T5 config layer_norm_epsilon={epsilon} has no twin: our RMSNorm "
                      f"epsilon is fixed at {EPSILON}")
  projection = str(config.get("feed_forward_proj", "relu"))
  parts = projection.split("-")
  gated = len(parts) == 2 and parts[0] == "gated"
  activation = "gelu_new" if projection == "gated-gelu" else parts[-1]
  if len(parts) > 2 or (len(parts) == 2 and not gated) or activation not in _ACTIVATIONS:
    raise ConfigError(
        f"HF T5 config feed_forward_proj={projection!r} has no twin here: use one of "
        f"{', '.join(sorted(set(_FEED_FORWARD.values())))} (a bare 'gelu' is HF's erf GELU; "
        "ours is the tanh approximation)")
  for key, ours in (("pad_token_id", PAD_ID), ("decoder_start_token_id", PAD_ID),
                    ("eos_token_id", EOS_ID)):
    value = config.get(key, ours)
    if value is not None and list(np.atleast_1d(value)) != [ours]:
      raise ConfigError(f"HF T5 config {key}={value!r} has no twin: ours pads with and starts "
                        f"the decoder from {PAD_ID} and stops at EOS {EOS_ID} (seqio's T5 ids)")
  if "scale_decoder_outputs" in config:
    tied = bool(config["scale_decoder_outputs"])
  else:
    tied = config.get("tie_word_embeddings", True) is not False
  encoder_layers = int(config.get("num_layers", 6))
  decoder_layers = config.get("num_decoder_layers")
  decoder_layers = encoder_layers if decoder_layers is None else int(decoder_layers)
  if encoder_layers < 1 or decoder_layers < 1:
    raise ConfigError(f"HF T5 config has {encoder_layers} encoder and {decoder_layers} "
                      "decoder layers; ours needs at least one of each")
  fields = {
      "d_model": int(config.get("d_model", 512)),
      "num_heads": int(config.get("num_heads", 8)),
      "head_dim": int(config.get("d_kv", 64)),
      "mlp_dim": int(config.get("d_ff", 2048)),
      "num_layers": decoder_layers,
      # 0 = as many as the decoder (ModelConfig's convention), so symmetric T5s bind as
      # their configs here say them.
      "num_encoder_layers": 0 if encoder_layers == decoder_layers else encoder_layers,
      "vocab_size": int(config.get("vocab_size", 32128)),
      "tie_embeddings": tied,
      "position_embedding": "relative",
      "relative_attention_num_buckets": int(config.get("relative_attention_num_buckets", 32)),
      "relative_attention_max_distance": int(config.get("relative_attention_max_distance", 128)),
      "mlp_activation": _ACTIVATIONS[activation],
      "mlp_gated": gated,
  }
  return fields, tied


def _model_config(fields: Mapping) -> ModelConfig:
  """The ModelConfig the fields make, refused if HF's T5 would compute something else."""
  try:
    cfg = ModelConfig(**fields)
  except ConfigError as e:
    raise ConfigError(f"HF T5 config has no twin here: {e}") from None
  problems = unsupported(cfg, ARCHS[0])
  if problems:
    raise ConfigError(f"HF T5 config has no exact twin here: {'; '.join(problems)}")
  return cfg


@functools.lru_cache(maxsize=None)
def _bucket_disagreements(num_buckets: int, max_distance: int) -> tuple[int, ...]:
  """Relative positions (key - query) whose bucket differs between ours
  (`layers.relative_position_bucket`) and HF's `T5Attention._relative_position_bucket`,
  either direction, encoder and decoder. Past max_distance ours clips the distance and
  HF's saturates, so +-(max_distance + 1) covers every distance. Needs torch (the hf
  extra)."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers.models.t5 import modeling_t5  # pylint: disable=g-import-not-at-top
  from objectax.models import layers  # pylint: disable=g-import-not-at-top
  relative = np.arange(-max_distance - 1, max_distance + 2)
  bad = set()
  for bidirectional in (True, False):
    ours = layers.relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    theirs = modeling_t5.T5Attention._relative_position_bucket(  # pylint: disable=protected-access
        torch.from_numpy(relative), bidirectional=bidirectional, num_buckets=num_buckets,
        max_distance=max_distance).numpy()
    bad.update(int(r) for r in relative[ours != theirs])
  return tuple(sorted(bad, key=abs))
