"""The Llama family: Objectax's decoder-only models as `LlamaForCausalLM`, the encoder-only
model as `EuroBertForMaskedLM`, and back.

Objectax's blocks are Llama's blocks: pre-norm RMSNorm (eps 1e-6, statistics in float32),
multi-head attention scaled by 1/sqrt(head_dim) with rotary positions in the half-split
("rotate half") layout at timescales base**(2i/K), a gated MLP act(x W_gate) * (x W_up)
W_down, no biases, a final RMSNorm, an unscaled token embedding. So the weights move over
with reshapes and transposes only:

  objectax (plain layout)                 transformers (weight is (out, in))
  embed/embedding (V, D)                  model.embed_tokens.weight (V, D)
  block_i/attention_norm/scale (D)        model.layers.i.input_layernorm.weight
  block_i/attention/query (D, H, K)       model.layers.i.self_attn.q_proj.weight (H*K, D)
  ... key, value                          ... k_proj, v_proj
  block_i/attention/out (H, K, D)         model.layers.i.self_attn.o_proj.weight (D, H*K)
  block_i/mlp_norm/scale (D)              model.layers.i.post_attention_layernorm.weight
  block_i/mlp/gate, up (D, F)             model.layers.i.mlp.gate_proj, up_proj (F, D)
  block_i/mlp/down (F, D)                 model.layers.i.mlp.down_proj.weight (D, F)
  final_norm/scale (D)                    model.norm.weight
  head (D, V), untied                     lm_head.weight (V, D)

The one difference is the tied output layer: Objectax's tied logits are x @ E^T / sqrt(D)
(T5X's scaling, models/layers.py `Embed.attend`), which a tied Llama cannot express. A tied
model is therefore exported untied, with lm_head = E / sqrt(D), and config.json records
`"objectax": {"tie_embeddings": true}`; importing it restores the tied model bit for bit
(E comes from embed_tokens; lm_head is checked to be exactly E / sqrt(D), else the folder
was changed after export and it imports untied, as it now computes). An untied model whose
head is exactly the transposed embedding (what importing a tied Hugging Face Llama gives)
is exported tied again, so import -> export returns the same tensors.

Architectures:
- causal_decoder -> LlamaForCausalLM: the same logits for the same ids, decoder inputs
  starting with id 0 (Objectax's BOS is the pad id; the exported tokenizer adds it).
- prefix_decoder -> LlamaForCausalLM with the same weights: the prefix decoder differs only
  in its attention mask, bidirectional over the prefix. transformers takes a 4-D mask as
  it is, so `prefix_lm_mask` builds the one that reproduces its logits.
- encoder_only -> EuroBertForMaskedLM, an exact twin: the same pre-norm blocks with
  bidirectional attention and RoPE, a final RMSNorm and a bias-free linear MLM head
  (`mlp_bias` false), no embedding scaling; inputs without BOS, padding masked by the
  2-D attention mask as Objectax masks `encoder_input_tokens == 0`.

Not exportable (`unsupported`): T5's relative position bias or no positions at all (Llama
and EuroBERT have rotary positions only), the ungated MLP of T5 v1.0, and a d_model that
num_heads does not divide (LlamaConfig refuses it although head_dim is explicit).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from objectax.models.config import ModelConfig
from objectax.models.registry import ConfigError

ARCHS = ("causal_decoder", "prefix_decoder", "encoder_only")
MODEL_TYPES = ("llama", "eurobert")

# Which transformers class each architecture becomes, and which architecture a model type
# imports as (a folder Objectax exported says its own architecture in "objectax").
_HF_CLASS = {"causal_decoder": ("LlamaForCausalLM", "llama"),
             "prefix_decoder": ("LlamaForCausalLM", "llama"),
             "encoder_only": ("EuroBertForMaskedLM", "eurobert")}
_IMPORTS_AS = {"llama": "causal_decoder", "eurobert": "encoder_only"}
# How each architecture's model reads a text: the decoders after the BOS id 0 (training's
# shifted inputs start with it), the encoder ending with EOS (as MLM examples do).
# The causal decoder pads on the left, so that a padded batch generates as each row alone
# would; the prefix decoder keeps right padding, which `prefix_lm_mask` assumes.
_TOKENIZER = {"causal_decoder": {"add_bos_token": True, "add_eos_token": False,
                                 "padding_side": "left"},
              "prefix_decoder": {"add_bos_token": True, "add_eos_token": False},
              "encoder_only": {"add_bos_token": False, "add_eos_token": True}}
# The prefix decoder needs its own attention mask in transformers.
_NEEDS_PREFIX_MASK = {"causal_decoder": False, "prefix_decoder": True, "encoder_only": False}

# ModelConfig.mlp_activation <-> hidden_act. Objectax's "gelu" is the tanh approximation
# (models/layers.py), which is transformers' "gelu_pytorch_tanh" ("gelu" there is erf's).
_ACT_TO_HF = {"silu": "silu", "gelu": "gelu_pytorch_tanh", "relu": "relu"}
_ACT_FROM_HF = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu",
                "gelu_new": "gelu", "relu": "relu"}
RMS_NORM_EPS = 1e-6  # models/layers.py RMSNorm


def unsupported(cfg: ModelConfig, arch: str) -> list[str]:
  """Each option of `cfg` with no twin in the architecture's transformers class."""
  del arch  # the decoders and the encoder have the same blocks
  out = []
  if cfg.position_embedding != "rope":
    out.append(f"ModelConfig.position_embedding={cfg.position_embedding!r} (Llama and EuroBERT "
               "have rotary positions only)")
  if not cfg.mlp_gated:
    out.append("ModelConfig.mlp_gated=False (their MLP is gated: act(x W_gate) * (x W_up))")
  if cfg.d_model % cfg.num_heads:
    out.append(f"ModelConfig.num_heads={cfg.num_heads} (their config requires d_model "
               f"{cfg.d_model} to be a multiple of it)")
  return out


def tokenizer_options(arch: str) -> dict[str, Any]:
  """How the exported tokenizer frames a text for `arch` (hf.py builds the tokenizer)."""
  return dict(_TOKENIZER[arch])


def hf_config(cfg: ModelConfig, arch: str, vocabulary) -> dict[str, Any]:
  """config.json of the exported model."""
  cls, model_type = _HF_CLASS[arch]
  theta = float(cfg.rope_max_wavelength)
  config = {
      "architectures": [cls], "model_type": model_type,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_heads,
      "head_dim": cfg.head_dim, "hidden_act": _ACT_TO_HF[cfg.mlp_activation],
      "rms_norm_eps": RMS_NORM_EPS,
      # transformers 5 reads rope_parameters, 4.x rope_theta: both, the same base.
      "rope_theta": theta, "rope_parameters": {"rope_type": "default", "rope_theta": theta},
      "max_position_embeddings": 2048,  # hf.py puts the run's length here
      "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
      "tie_word_embeddings": False,  # `to_hf` may tie an untied head equal to E^T
      "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 1,
      "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
      "torch_dtype": "float32",
      "objectax": {"arch": arch, "tie_embeddings": bool(cfg.tie_embeddings)},
  }
  if model_type == "eurobert":
    # BERT MLM's mask is the first sentinel <extra_id_0>, the top id (objectives/bert_mlm.py).
    config["mask_token_id"] = int(vocabulary.vocab_size) - 1
    config["classifier_pooling"] = "late"
    del config["pretraining_tp"]
  return config


def _layers(params: Mapping[str, Any]) -> int:
  return sum(1 for k in params if k.startswith("block_") and k[len("block_"):].isdigit())


def to_hf(params: Mapping[str, Any], cfg: ModelConfig, arch: str) -> dict[str, np.ndarray]:
  """Plain-layout parameters -> transformers' state dict (float32 numpy). A head equal to
  the transposed embedding is left out: the model is then saved tied (`finish_config`; see
  the module docstring)."""
  del arch
  f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))
  d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
  embedding_VD = f32(params["embed"]["embedding"])
  out = {"model.embed_tokens.weight": embedding_VD}
  for i in range(_layers(params)):
    block, prefix = params[f"block_{i}"], f"model.layers.{i}."
    attention, mlp = block["attention"], block["mlp"]
    out[prefix + "input_layernorm.weight"] = f32(block["attention_norm"]["scale"])
    for name, hf_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
      out[prefix + f"self_attn.{hf_name}.weight"] = f32(
          np.asarray(attention[name], np.float32).reshape(d, h * k).T)
    out[prefix + "self_attn.o_proj.weight"] = f32(
        np.asarray(attention["out"], np.float32).reshape(h * k, d).T)
    out[prefix + "post_attention_layernorm.weight"] = f32(block["mlp_norm"]["scale"])
    for name in ("gate", "up", "down"):
      out[prefix + f"mlp.{name}_proj.weight"] = f32(np.asarray(mlp[name], np.float32).T)
  out["model.norm.weight"] = f32(params["final_norm"]["scale"])
  if cfg.tie_embeddings:
    out["lm_head.weight"] = tied_head(embedding_VD, d)
  else:
    head_VD = f32(np.asarray(params["head"], np.float32).T)
    if not np.array_equal(head_VD, embedding_VD):
      out["lm_head.weight"] = head_VD
  return out


def finish_config(config: dict[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
  """Ties the exported config when `to_hf` left the head out (it equals the embedding)."""
  config["tie_word_embeddings"] = "lm_head.weight" not in tensors


def tied_head(embedding_VD: np.ndarray, d_model: int) -> np.ndarray:
  """The lm_head that gives Objectax's tied logits x @ E^T / sqrt(D), in float32."""
  return np.ascontiguousarray(np.asarray(embedding_VD, np.float32)
                              / np.float32(np.sqrt(d_model)))


def check_config(config: Mapping[str, Any]) -> list[str]:
  """What in a Llama / EuroBERT config.json has no Objectax twin (empty: importable)."""
  out = []
  heads = int(config.get("num_attention_heads", 0))
  kv_heads = config.get("num_key_value_heads") or heads
  if int(kv_heads) != heads:
    out.append(f"num_key_value_heads={kv_heads} (grouped-query attention; Objectax has "
               f"{heads} key/value heads for {heads} query heads)")
  act = config.get("hidden_act", "silu")
  if act not in _ACT_FROM_HF:
    out.append(f"hidden_act={act!r} (supported: {', '.join(sorted(_ACT_FROM_HF))})")
  for flag in ("attention_bias", "mlp_bias"):
    if config.get(flag):
      out.append(f"{flag}=true (Objectax has no biases)")
  rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
  rope = rope if isinstance(rope, dict) else {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    out.append(f"rope type {rope_type!r} (Objectax's RoPE is the unscaled default)")
  if float(config.get("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0))) != 1.0:
    out.append("partial_rotary_factor < 1 (Objectax rotates every feature of a head)")
  eps = float(config.get("rms_norm_eps", RMS_NORM_EPS))
  if eps != RMS_NORM_EPS:
    out.append(f"rms_norm_eps={eps:g} (Objectax's RMSNorm fixes {RMS_NORM_EPS:g})")
  return out


def _rope_theta(config: Mapping[str, Any]) -> float:
  rope = config.get("rope_parameters")
  if isinstance(rope, dict) and "rope_theta" in rope:
    return float(rope["rope_theta"])
  return float(config.get("rope_theta", 10_000.0))


def from_hf(tensors: Mapping[str, np.ndarray],
            config: Mapping[str, Any]) -> tuple[str, dict, dict]:
  """transformers' tensors and config.json -> (architecture, plain-layout parameters,
  ModelConfig fields). A tied Hugging Face model (tie_word_embeddings, no scaling) imports
  untied, its head a copy of the embedding: Objectax's tied logits are scaled by
  1/sqrt(D), so only an untied head computes what it computed."""
  problems = check_config(config)
  if problems:
    raise ConfigError(f"{config['model_type']} options with no Objectax twin: "
                      + "; ".join(problems))
  meta = config.get("objectax") or {}
  arch = meta.get("arch") if meta.get("arch") in ARCHS else _IMPORTS_AS[config["model_type"]]
  d, h = int(config["hidden_size"]), int(config["num_attention_heads"])
  k = int(config.get("head_dim") or d // h)
  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise ConfigError(f"{config['model_type']} checkpoint lacks the tensor {name}")
    return np.asarray(tensors[name], np.float32)

  layers_ = int(config["num_hidden_layers"])
  embedding_VD = get("model.embed_tokens.weight")
  params: dict[str, Any] = {"embed": {"embedding": embedding_VD}}
  for i in range(layers_):
    prefix = f"model.layers.{i}."
    params[f"block_{i}"] = {
        "attention_norm": {"scale": get(prefix + "input_layernorm.weight")},
        "attention": {
            "query": get(prefix + "self_attn.q_proj.weight").T.reshape(d, h, k),
            "key": get(prefix + "self_attn.k_proj.weight").T.reshape(d, h, k),
            "value": get(prefix + "self_attn.v_proj.weight").T.reshape(d, h, k),
            "out": get(prefix + "self_attn.o_proj.weight").T.reshape(h, k, d)},
        "mlp_norm": {"scale": get(prefix + "post_attention_layernorm.weight")},
        "mlp": {name: get(prefix + f"mlp.{name}_proj.weight").T
                for name in ("gate", "up", "down")},
    }
  params["final_norm"] = {"scale": get("model.norm.weight")}
  head_VD = get("lm_head.weight") if "lm_head.weight" in tensors else embedding_VD
  tied = bool(meta.get("tie_embeddings")) and np.array_equal(head_VD, tied_head(embedding_VD, d))
  if not tied:
    params["head"] = np.ascontiguousarray(head_VD.T)
  params = _float32_tree(params)
  fields = {
      "vocab_size": int(config["vocab_size"]), "d_model": d, "num_heads": h, "head_dim": k,
      "mlp_dim": int(config["intermediate_size"]), "num_layers": layers_,
      "rope_max_wavelength": _rope_theta(config), "tie_embeddings": tied,
      "position_embedding": "rope", "mlp_activation": _ACT_FROM_HF[config.get("hidden_act",
                                                                               "silu")],
      "mlp_gated": True,
  }
  return arch, params, fields


def _float32_tree(tree: Any) -> Any:
  """Every array of a nested dict as a C-contiguous float32 numpy array."""
  if isinstance(tree, dict):
    return {key: _float32_tree(value) for key, value in tree.items()}
  return np.ascontiguousarray(np.asarray(tree, np.float32))


def prefix_lm_mask(prefix_lengths: Sequence[int], attention_mask, dtype=None):
  """The 4-D additive attention mask (batch, 1, L, L) under which LlamaForCausalLM gives
  an exported prefix decoder's logits.

  Query q of row b sees key k when both are real tokens (attention_mask 1) and either
  k <= q (causal) or both lie in the row's first prefix_lengths[b] positions
  (bidirectional prefix). Each position also sees itself, so no softmax row is empty.
  Allowed entries are 0, the others the dtype's most negative number; pass it as
  `model(input_ids, attention_mask=mask)`, which transformers uses as it is.

  The prefix is what Objectax trains bidirectionally (seqio's decoder_causal_attention,
  "the inputs plus one position"): in the shifted ids [0, *inputs, *targets] those are the
  BOS and every input token, so prefix_lengths[b] = 1 + len(inputs of row b). Padding goes
  at the end of a row (position ids stay 0, 1, ... as transformers' default gives them).

  `attention_mask`: (batch, L) of 1 for tokens, 0 for padding (numpy, list or torch).
  `dtype`: a torch dtype (default torch.float32, the exported weights' dtype).
  """
  import torch  # pylint: disable=g-import-not-at-top
  dtype = torch.float32 if dtype is None else dtype
  real_BL = torch.as_tensor(np.asarray(attention_mask)).bool()
  b, length = real_BL.shape
  positions_L = torch.arange(length)
  causal_LL = positions_L[None, :] <= positions_L[:, None]
  prefix_BL = positions_L[None, :] < torch.as_tensor(np.asarray(prefix_lengths))[:, None]
  both_prefix_BLL = prefix_BL[:, :, None] & prefix_BL[:, None, :]
  real_BLL = real_BL[:, :, None] & real_BL[:, None, :]
  allowed_BLL = ((causal_LL[None] | both_prefix_BLL) & real_BLL) | torch.eye(length,
                                                                            dtype=torch.bool)
  mask_B1LL = torch.zeros((b, 1, length, length), dtype=dtype)
  return mask_B1LL.masked_fill(~allowed_BLL[:, None], torch.finfo(dtype).min)


def usage(arch: str, out: str) -> str:
  """The model card's how-to for `arch` (markdown)."""
  cls = _HF_CLASS[arch][0]
  if _HF_CLASS[arch][1] == "eurobert":
    return (f"```python\nfrom transformers import AutoTokenizer, AutoModelForMaskedLM\n"
            f"tokenizer = AutoTokenizer.from_pretrained({out!r})\n"
            f"model = AutoModelForMaskedLM.from_pretrained({out!r})  # {cls}\n"
            "batch = tokenizer([\"The <extra_id_0> is here.\"], return_tensors=\"pt\")\n"
            "logits = model(**batch).logits  # the mask token is <extra_id_0>, the top id\n"
            "```\n\nThe tokenizer ends each text with EOS (id 1) and adds no BOS, as the "
            "model was trained; padding is masked by `attention_mask`.\n")
  text = (f"```python\nfrom transformers import AutoTokenizer, AutoModelForCausalLM\n"
          f"tokenizer = AutoTokenizer.from_pretrained({out!r})\n"
          f"model = AutoModelForCausalLM.from_pretrained({out!r})  # {cls}\n"
          "batch = tokenizer([\"def \"], return_tensors=\"pt\")\n"
          "ids = model.generate(**batch, max_new_tokens=20, do_sample=False)\n"
          "print(tokenizer.decode(ids[0], skip_special_tokens=True))\n```\n\n"
          "The tokenizer starts each text with id 0, Objectax's BOS (the pad id, as T5X "
          "decoders shift their inputs). Always pass the tokenizer's `attention_mask` to "
          "`generate`: without one, transformers would take every id 0, the BOS too, for "
          "padding. `generation_config.json` suppresses the padding rows of the output "
          "layer above the vocabulary, as Objectax's decoding does.\n")
  if _NEEDS_PREFIX_MASK[arch]:
    text += ("\nThis is a **prefix decoder** (non-causal decoder): it attends "
             "bidirectionally over the prefix (BOS, the inputs, and one more position) and "
             "causally after it. transformers takes a 4-D attention mask as given, so pass "
             "the one `prefix_lm_mask` builds (numbers identical to it below):\n\n"
             "```python\nimport torch\n"
             "inputs = tokenizer(\"Translate: hello\", add_special_tokens=False).input_ids\n"
             "targets = tokenizer(\" bonjour\", add_special_tokens=False).input_ids\n"
             "ids = torch.tensor([[0, *inputs, *targets]])\n"
             "L, P = ids.shape[1], 1 + len(inputs)  # P: the bidirectional prefix\n"
             "pos = torch.arange(L)\n"
             "allowed = (pos[None, :] <= pos[:, None]) | ((pos[:, None] < P) & (pos[None, :] < P))\n"
             "mask = torch.zeros(1, 1, L, L).masked_fill(~allowed, torch.finfo(torch.float32).min)\n"
             "logits = model(ids, attention_mask=mask).logits\n```\n\n"
             "Or `from objectax.launch.interop.hf_llama import prefix_lm_mask` with "
             "`prefix_lm_mask([P], [[1] * L])` (padding as 0s in the second argument). "
             "`generate` cannot keep such a mask across its steps; the exported weights "
             "decode causally there.\n")
  return text
