"""`objectax export` and `objectax import`: a run as a Hugging Face model folder, and back.

    objectax export --workdir=DIR [--step N] --out OUT [--format hf]
    objectax import --format hf --model HFDIR --out WORKDIR

Export writes what `AutoModelForCausalLM.from_pretrained(OUT)` (or the family's Auto
class) loads with no custom code: config.json, model.safetensors (float32),
generation_config.json (models that decode), the tokenizer (tokenizer.json and
tokenizer_config.json, beside the SentencePiece file tokenizer.model) and a README.md
model card naming the run, step, architecture and objective. Import turns a local
Llama-style or T5 v1.1-style folder into an Objectax workdir at step 0 (config.gin and
checkpoints/0, written by the trainer's own checkpoint code), so `objectax generate`,
`objectax eval` and `TrainConfig.init_from=WORKDIR` use it as they use a trained run.

Families: each architecture is exported by the module that knows its transformers twin
(`hf_llama`: the decoders and the encoder-only model; `hf_t5`: the encoder-decoder). A
family module has ARCHS (Objectax architectures it exports), MODEL_TYPES (config.json
model_type values it imports) and `unsupported(cfg, arch)`, `hf_config(cfg, arch,
vocabulary)`, `to_hf(params, cfg, arch)`, `from_hf(tensors, config)`; optionally
`tokenizer_options(arch)`, `finish_config(config, tensors)` and `usage(arch, out)`.

The vocabulary. Objectax's ids are T5's (pad 0, eos 1, unk 2, no bos; seqio assumes pad 0
and eos 1) with the sentinels <extra_id_N> at the top, counting down. The exported
SentencePiece file is the run's model with its sentinels as pieces (seqio's
`vocabulary.sp_model`), and the tokenizer is built from it by transformers' own
SentencePiece conversion (`build_tokenizer`). Import finds the SentencePiece file
(tokenizer.model or spiece.model), refuses one with other pad/eos ids, and counts the
sentinels: pieces `▁<extra_id_N>` at the top of the file (an Objectax export) are taken
off and given back as `VocabConfig.extra_ids`, and so are sentinels the HF tokenizer adds
above the file (T5's 100). seqio then puts them back exactly where they were, so export
-> import -> export gives the same file, the same ids and the same vocabulary fingerprint.

Nothing else in Objectax imports this package (training runs without transformers).
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib
import json
import os
import re
import sys
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from objectax.models.registry import ConfigError

FORMATS = ("hf",)
_FAMILY_MODULES = ("hf_llama", "hf_t5")
SPM_FILES = ("tokenizer.model", "spiece.model")  # Llama's and T5's names, in that order
EXPORTED_SPM = "tokenizer.model"
IMPORTED_SPM = "sentencepiece.model"  # the copy an imported workdir's VocabConfig names
PAD_ID, EOS_ID = 0, 1
_SENTINEL = re.compile(r"^▁?<extra_id_(\d+)>$")
# The data-only objective an imported workdir is configured with, the first of these its
# architecture runs (any other is a --gin.Experiment.objective=... away).
_DEFAULT_OBJECTIVES = ("full_lm", "span_corruption", "bert_mlm")
# SentencePiece piece types (sentencepiece_model.proto): never produced from raw text.
_UNKNOWN, _CONTROL, _BYTE = 2, 3, 6


def _stderr(command: str) -> Callable[[str], None]:
  return lambda msg: print(f"objectax {command}: {msg}", file=sys.stderr, flush=True)


def require(command: str) -> None:
  """One line when the optional `hf` extra is not installed."""
  for module in ("transformers", "safetensors", "torch"):
    try:
      importlib.import_module(module)
    except ImportError:
      raise ConfigError(f"objectax {command} needs the hf extra ({module} is not installed): "
                        "pip install -e '.[hf]'") from None


def families() -> list[Any]:
  """The family modules present (a family still being written is simply absent)."""
  out = []
  for name in _FAMILY_MODULES:
    full = f"objectax.launch.interop.{name}"
    try:
      out.append(importlib.import_module(full))
    except ModuleNotFoundError as e:
      if e.name != full:
        raise
  return out


def family_for_arch(arch: str) -> Any:
  for family in families():
    if arch in family.ARCHS:
      return family
  exportable = [a for f in families() for a in f.ARCHS]
  raise ConfigError(f"Experiment.arch={arch!r} has no Hugging Face export; exportable "
                    f"architectures: {', '.join(exportable)}")


def family_for_model_type(model_type: Any, where: str) -> Any:
  for family in families():
    if model_type in family.MODEL_TYPES:
      return family
  supported = [t for f in families() for t in f.MODEL_TYPES]
  raise ConfigError(f"{where} is a {model_type!r} model; objectax import reads model_type "
                    f"{', '.join(supported)}")


# ------------------------------------------------------------------ parameters


def unbox_numpy(tree: Any) -> Any:
  """A restored parameter tree as nested dicts of float32 numpy arrays."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  tree = jax.device_get(nn.meta.unbox(tree))
  def walk(node):
    if isinstance(node, Mapping):
      return {str(k): walk(v) for k, v in node.items()}
    return np.asarray(node, np.float32)
  return walk(tree)


def plain_layout(params: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned stacks (`scan_<name>`, leading "layers" axis) as `<name>_<i>` blocks: the
  inverse of models/layers.py `stack_block_params`; plain parameters pass unchanged."""
  from objectax.models import layers  # pylint: disable=g-import-not-at-top
  out = {}
  for key, value in params.items():
    if not key.startswith(layers.SCAN_PREFIX):
      out[key] = value
      continue
    name = key[len(layers.SCAN_PREFIX):]
    leaves = _leaves(value)
    for i in range(next(iter(leaves.values())).shape[0]):
      out[f"{name}_{i}"] = _unflatten({path: leaf[i] for path, leaf in leaves.items()})
  return out


def scanned_layout(params: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
  """Plain `<name>_<i>` blocks stacked into `scan_<name>` where `wanted` (the model's
  parameter tree) has that key: `stack_block_params` for every scanned stack."""
  from objectax.models import layers  # pylint: disable=g-import-not-at-top
  out = dict(params)
  for key in wanted:
    if key.startswith(layers.SCAN_PREFIX) and key not in out:
      name = key[len(layers.SCAN_PREFIX):]
      count = sum(1 for k in out if re.fullmatch(rf"{re.escape(name)}_\d+", k))
      blocks = [_leaves(out.pop(f"{name}_{i}")) for i in range(count)]
      out[key] = _unflatten({path: np.stack([b[path] for b in blocks]) for path in blocks[0]})
  return out


def _leaves(tree: Any, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
  if isinstance(tree, Mapping):
    return {p: v for k, sub in tree.items() for p, v in _leaves(sub, prefix + (k,)).items()}
  return {prefix: tree}


def _unflatten(leaves: Mapping[tuple, Any]) -> dict:
  out: dict = {}
  for path, leaf in leaves.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return out


def _shapes(tree: Any) -> dict[str, tuple]:
  return {"/".join(map(str, p)): tuple(np.shape(v)) for p, v in _leaves(tree).items()}


# ------------------------------------------------------------------ the tokenizer


def build_tokenizer(sp_model: bytes, *, add_bos_token: bool, add_eos_token: bool,
                    mask_id: Optional[int] = None, padding_side: str = "right"):
  """A transformers tokenizer that encodes every text to the ids SentencePiece gives.

  transformers' generic `TokenizersBackend` (what `AutoTokenizer` loads from
  tokenizer.json, no custom code) converted from the SentencePiece model follows its
  normalizer, dummy prefix, byte fallback and user-defined pieces (the UL2 mode tokens and
  the sentinels), so the conversion matches `vocabulary.encode` on the corpus
  (tests/interop). Three settings close what remains:
  - legacy=True: the dummy prefix goes before the text as SentencePiece puts it, also
    after leading whitespace or a newline (legacy=False drops it there);
  - the control, unknown and byte pieces (<pad>, </s>, <unk>, <0x41>, ...) get a score no
    segmentation picks: SentencePiece never reads them from text, while transformers'
    Unigram model would match a literal "</s>" to them;
  - split_special_tokens: the special tokens' text is not matched either ("</s>" in a
    document is text, as in Objectax's data).
  T5Tokenizer and LlamaTokenizer are not used: each rebuilds its own pre-tokenizer
  (whitespace split; BPE), which segments this model differently.

  bos_token is the id-0 piece: Objectax's decoders read id 0 before the text (the shifted
  inputs start with the pad id), so `add_bos_token` gives the model what it saw in
  training. add_eos_token ends a text with EOS, as encoder inputs end. padding_side "left"
  for the decoders, so that a padded batch generates as each row would alone.
  """
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  from transformers.tokenization_utils_tokenizers import TokenizersBackend  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto.FromString(sp_model)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, EXPORTED_SPM)
    with open(path, "wb") as f:
      f.write(sp_model)
    kwargs = TokenizersBackend.convert_to_native_format(vocab_file=path, legacy=True)
  state = json.loads(kwargs["tokenizer_object"].to_str())
  vocab = state["model"]["vocab"]
  for i, piece in enumerate(proto.pieces):
    if piece.type in (_UNKNOWN, _CONTROL, _BYTE):
      vocab[i][1] = -1e9
  kwargs["tokenizer_object"] = Tokenizer.from_str(json.dumps(state))
  # The control pieces are already the bos/eos/pad tokens; listed again they would only
  # clutter tokenizer_config.json.
  kwargs.pop("vocab_file", None)
  kwargs.pop("additional_special_tokens", None)
  piece = lambda i: proto.pieces[i].piece
  unk = proto.trainer_spec.unk_id
  special = {"bos_token": piece(PAD_ID), "pad_token": piece(PAD_ID),
             "eos_token": piece(EOS_ID), "unk_token": piece(unk if unk >= 0 else 2)}
  if mask_id is not None:
    special["mask_token"] = piece(mask_id)
  return TokenizersBackend(**{**kwargs, **special, "add_bos_token": add_bos_token,
                              "add_eos_token": add_eos_token, "split_special_tokens": True,
                              "padding_side": padding_side,
                              "clean_up_tokenization_spaces": False})


def _default_tokenizer_options(arch: str) -> dict[str, Any]:
  """An encoder reads a text ending with EOS and no BOS (T5's inputs)."""
  del arch
  return {"add_bos_token": False, "add_eos_token": True}


# ------------------------------------------------------------------ export


def _check_flags(command: str, fmt: str, folders: Sequence[tuple[Optional[str], str, str]]):
  """The extra is installed, the format known and every (value, flag, what) folder given."""
  require(command)
  if fmt not in FORMATS:
    raise ConfigError(f"--format {fmt!r}; valid choices: {', '.join(FORMATS)}")
  for value, flag, what in folders:
    if not value:
      raise ConfigError(f"objectax {command} needs {flag}=DIR ({what})")


def export(workdir: Optional[str], step: Optional[int], out: Optional[str],
           fmt: str = "hf", bindings: Sequence[str] = (),
           say: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
  """Writes the run's checkpoint as a Hugging Face folder; returns a summary dict.

  Everything that can refuse (no run, no checkpoint, an architecture or option with no
  transformers twin, a byte vocabulary, an --out that holds files) refuses in one line
  before anything is written.
  """
  say = say or _stderr("export")
  _check_flags("export", fmt, [(workdir, "--workdir", "the workdir of a training run"),
                               (out, "--out", "the Hugging Face folder to write")])
  out = os.path.abspath(out)
  _check_empty(out, "--out")
  # pylint: disable=g-import-not-at-top
  import seqio
  from objectax.data import vocab as vocab_lib
  from objectax.launch.tools import generate
  from objectax.models import decoding
  opened = generate.open_for_decoding(workdir, step, bindings)
  cfg, model_cfg, vocabulary = opened.cfg, opened.parts.model_cfg, opened.vocabulary
  arch = cfg.exp.arch
  family = family_for_arch(arch)
  problems = family.unsupported(model_cfg, arch)
  if problems:
    raise ConfigError(f"cannot export the {arch} of {workdir}: no Hugging Face twin for "
                      + "; ".join(problems))
  if not isinstance(vocabulary, seqio.SentencePieceVocabulary):
    raise ConfigError(f"the run's vocabulary is {type(vocabulary).__name__} "
                      f"(VocabConfig.kind={cfg.vocab.kind!r}); the export writes a "
                      "SentencePiece tokenizer: train with VocabConfig.kind='sentencepiece'")

  decoder = generate.Decoder.restore(opened, workdir)
  params = unbox_numpy(decoder.params)
  wanted = set(_model_param_names(opened))
  left_behind = sorted(k for k in params if k not in wanted)
  params = plain_layout({k: v for k, v in params.items() if k in wanted})
  tensors = family.to_hf(params, model_cfg, arch)
  config = family.hf_config(model_cfg, arch, vocabulary)
  if hasattr(family, "finish_config"):
    family.finish_config(config, tensors)
  length = opened.budget.get("decoder") or opened.budget.get("encoder")
  if "max_position_embeddings" in config:  # the length the run was trained at
    config["max_position_embeddings"] = int(length)
  config["objectax"] = {
      **config.get("objectax", {}), "arch": arch, "tie_embeddings": model_cfg.tie_embeddings,
      "experiment": cfg.exp.name, "objective": cfg.exp.trains_on, "size": cfg.exp.size,
      "sequence_length": cfg.exp.sequence_length,
      "step": opened.step, "workdir": os.path.abspath(workdir),
      "vocabulary": vocab_lib.fingerprint(vocabulary), "vocabulary_ids": vocabulary.vocab_size,
      "extra_ids": vocabulary.extra_ids}
  options = (family.tokenizer_options(arch) if hasattr(family, "tokenizer_options")
             else _default_tokenizer_options(arch))
  mask_id = config.get("mask_token_id")
  tokenizer = build_tokenizer(vocabulary.sp_model, mask_id=mask_id, **options)

  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
  _write_json(os.path.join(out, "config.json"), config)
  if decoding.can_decode(opened.model):
    _write_json(os.path.join(out, "generation_config.json"),
                _generation_config(config, length, vocabulary.vocab_size, model_cfg.vocab_size))
  with open(os.path.join(out, EXPORTED_SPM), "wb") as f:
    f.write(vocabulary.sp_model)
  tokenizer.save_pretrained(out)
  with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
    f.write(_model_card(config, family, arch, out))
  n = sum(int(np.prod(t.shape)) for t in tensors.values())
  hf_class = config["architectures"][0]
  say(f"{cfg.exp.name} step {opened.step} ({arch}) -> {out}: {hf_class}, {len(tensors)} "
      f"tensors, {n / 1e6:.2f}M parameters, vocabulary {vocabulary.vocab_size} ids"
      + (f"; {len(left_behind)} parameter group(s) of the objective's own modules not "
         f"exported ({', '.join(left_behind)})" if left_behind else ""))
  return {"out": out, "class": hf_class, "tensors": len(tensors), "parameters": n,
          "step": opened.step, "arch": arch}


def _model_param_names(opened) -> list[str]:
  """The top-level parameter groups of the architecture's own model (a model-side
  objective's extra modules, e.g. ELECTRA's generator, are not part of it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in opened.parts.spec.items()}
  shapes = jax.eval_shape(lambda: opened.model.init(jax.random.key(0), batch))
  return list(shapes["params"].keys())


def _generation_config(config: Mapping[str, Any], length: int, vocabulary_ids: int,
                       rows: int) -> dict[str, Any]:
  """Greedy decoding; the output rows above the vocabulary (padding to a multiple of 128)
  are suppressed, as Objectax decodes over its ids only. No max_length: transformers warns
  on every generate(max_new_tokens=...) when both are set (the run's length is in
  config.json's "objectax" entry and the model card)."""
  del length
  out = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id",
                                "decoder_start_token_id") if k in config}
  out.update(do_sample=False)
  if rows > vocabulary_ids:
    out["suppress_tokens"] = list(range(vocabulary_ids, rows))
  return out


def _model_card(config: Mapping[str, Any], family: Any, arch: str, out: str) -> str:
  meta = config["objectax"]
  usage = family.usage(arch, out) if hasattr(family, "usage") else (
      f"Load it with `transformers`' `{config['architectures'][0]}.from_pretrained"
      f"({out!r})` and `AutoTokenizer.from_pretrained({out!r})`.\n")
  return (
      f"---\nlibrary_name: transformers\ntags:\n- objectax\n---\n\n"
      f"# {meta['experiment']}, step {meta['step']}\n\n"
      f"Exported by `objectax export` on {datetime.date.today().isoformat()} from the "
      f"Objectax run `{meta['workdir']}`, checkpoint step {meta['step']}: architecture "
      f"`{arch}`, objective `{meta['objective']}`, size `{meta['size']}`. "
      f"`{config['architectures'][0]}` computes the same logits as Objectax (float32; "
      f"tests/interop check within 1e-4).\n\n"
      f"Vocabulary: SentencePiece (`{EXPORTED_SPM}`, {meta['vocabulary_ids']} ids with "
      f"{meta['extra_ids']} sentinels `<extra_id_N>` at the top; T5's ids: pad 0, EOS 1, "
      f"unk 2; fingerprint `{meta['vocabulary']}`). The tokenizer encodes a text to the ids "
      f"Objectax trained on. `config.json` keeps the source in `\"objectax\"`; "
      f"`objectax import --format hf --model {out} --out WORKDIR` turns the folder back "
      f"into an Objectax run.\n\n## Usage\n\n{usage}")


def _write_json(path: str, value: Any) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")


def _check_empty(path: str, flag: str) -> None:
  if os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path)):
    raise ConfigError(f"{flag} {path} already exists and is not an empty folder; give a new "
                      "folder")


# ------------------------------------------------------------------ import


def read_config(model_dir: str) -> dict[str, Any]:
  """config.json of a local Hugging Face model folder; one-line refusals."""
  config_path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(config_path):
    raise ConfigError(f"--model {model_dir} is not a Hugging Face model folder (no "
                      "config.json); give a local folder saved by save_pretrained")
  try:
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{config_path} cannot be read as JSON ({e})") from None
  if not isinstance(config, dict):
    raise ConfigError(f"{config_path} is not a JSON object")
  return config


def read_tensors(model_dir: str) -> dict[str, np.ndarray]:
  """Every tensor of model.safetensors, or of the shards its index names."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  index = os.path.join(model_dir, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index, encoding="utf-8") as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.isfile(os.path.join(model_dir, "model.safetensors")):
    files = ["model.safetensors"]
  else:
    found = [os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "*.bin"))]
    raise ConfigError(f"--model {model_dir} has no model.safetensors (nor an index of "
                      f"shards){'; it has ' + ', '.join(found) if found else ''}: save it "
                      "with save_pretrained(..., safe_serialization=True)")
  tensors: dict[str, np.ndarray] = {}
  for name in files:
    try:
      tensors.update(load_file(os.path.join(model_dir, name)))
    except Exception as e:  # pylint: disable=broad-except  (safetensors' own error types)
      raise ConfigError(f"{os.path.join(model_dir, name)} cannot be read "
                        f"({str(e).strip().splitlines()[0] if str(e).strip() else e!r})"
                        ) from None
  return tensors


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """What import takes from a folder's tokenizer: the SentencePiece model to copy (its
  sentinel pieces taken off) and the sentinel count seqio adds back on top."""
  source: str
  sp_model: bytes
  pieces: int      # pieces of sp_model
  extra_ids: int   # VocabConfig.extra_ids

  @property
  def size(self) -> int:
    return self.pieces + self.extra_ids


def read_vocabulary(model_dir: str) -> Vocabulary:
  """The folder's SentencePiece file and sentinels, checked against T5's ids (module
  docstring); one-line refusals."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  path = next((os.path.join(model_dir, n) for n in SPM_FILES
               if os.path.isfile(os.path.join(model_dir, n))), None)
  if path is None:
    raise ConfigError(f"--model {model_dir} has no SentencePiece file ({' or '.join(SPM_FILES)}); "
                      "Objectax's vocabularies are SentencePiece models with T5's ids")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    proto = sentencepiece_model_pb2.ModelProto.FromString(raw)
  except Exception:  # pylint: disable=broad-except  (protobuf's DecodeError and friends)
    raise ConfigError(f"{path} is not a SentencePiece model") from None
  spec = proto.trainer_spec
  if spec.pad_id != PAD_ID or spec.eos_id != EOS_ID:
    raise ConfigError(
        f"{path} has pad={spec.pad_id}, eos={spec.eos_id} (unk={spec.unk_id}, "
        f"bos={spec.bos_id}); Objectax needs pad=0 and eos=1 (T5's ids, which seqio assumes)")
  # Sentinels carried as pieces at the top of the file (an Objectax export), counting down.
  carried = 0
  while (carried < len(proto.pieces)
         and _sentinel_number(proto.pieces[len(proto.pieces) - 1 - carried].piece) == carried):
    carried += 1
  base = len(proto.pieces) - carried
  added = _added_sentinels(model_dir, len(proto.pieces))  # id -> N of <extra_id_N> above
  total = carried + len(added)
  expected = {base + total - 1 - n: n for n in range(carried, total)}
  if added and added != expected:
    raise ConfigError(f"the tokenizer of {model_dir} adds <extra_id_N> tokens that do not "
                      f"count down from id {base + total - 1} right above the SentencePiece "
                      "pieces (seqio's sentinel layout)")
  if carried:
    del proto.pieces[base:]
    raw = proto.SerializeToString()
  return Vocabulary(path, raw, base, total)


def _sentinel_number(piece: str) -> int:
  m = _SENTINEL.match(piece)
  return int(m.group(1)) if m else -1


def _added_sentinels(model_dir: str, first_id: int) -> dict[int, int]:
  """{id: N} of the <extra_id_N> tokens the HF tokenizer adds above the SentencePiece
  pieces (ids from `first_id`), from tokenizer_config.json's added_tokens_decoder or
  tokenizer.json's added_tokens; a bare `extra_ids` count (older T5 folders) means
  T5Tokenizer's layout, <extra_id_0> on top."""
  def load(name):
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
      return {}
    try:
      with open(path, encoding="utf-8") as f:
        value = json.load(f)
      return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
      return {}
  config, tokenizer = load("tokenizer_config.json"), load("tokenizer.json")
  found = {}
  for i, token in (config.get("added_tokens_decoder") or {}).items():
    content = token.get("content", "") if isinstance(token, dict) else str(token)
    found[int(i)] = content
  for token in tokenizer.get("added_tokens") or []:
    found.setdefault(int(token.get("id", -1)), token.get("content", ""))
  out = {i: _sentinel_number(c) for i, c in found.items()
         if i >= first_id and _sentinel_number(c) >= 0}
  count = config.get("extra_ids")
  if not out and isinstance(count, int) and not isinstance(count, bool) and count > 0:
    return {first_id + count - 1 - n: n for n in range(count)}
  return out


def import_hf(model_dir: Optional[str], out: Optional[str], fmt: str = "hf",
              bindings: Sequence[str] = (), gin_files: Sequence[str] = (),
              say: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
  """Writes an Objectax workdir at step 0 from a local Hugging Face folder; returns a
  summary dict. `gin_files` and `bindings` (the user's) apply after the model's own
  bindings, e.g. another Experiment.objective. Refusals come in one line before anything
  is written."""
  say = say or _stderr("import")
  _check_flags("import", fmt, [(model_dir, "--model", "a local Hugging Face model folder"),
                               (out, "--out", "the Objectax workdir to write")])
  model_dir, out = os.path.abspath(model_dir), os.path.abspath(out)
  _check_empty(out, "--out")
  config = read_config(model_dir)
  family = family_for_model_type(config.get("model_type"), f"--model {model_dir}")
  vocabulary = read_vocabulary(model_dir)
  tensors = read_tensors(model_dir)
  try:
    arch, params, fields = family.from_hf(tensors, config)
  except (KeyError, ValueError) as e:
    raise ConfigError(f"the tensors of {model_dir} do not match its config.json ({e})") from None
  if vocabulary.size > fields["vocab_size"]:
    raise ConfigError(f"{vocabulary.source} has {vocabulary.size} ids with its sentinels, "
                      f"more than the model's {fields['vocab_size']} embedding rows")
  objective = _default_objective(arch)
  spm_path = os.path.join(out, IMPORTED_SPM)
  length = (config.get("objectax") or {}).get("sequence_length")
  ours = [f"Experiment.arch={arch!r}", "Experiment.variant='hf'",
          *([f"Experiment.sequence_length={int(length)}"] if length else []),
          *(f"ModelConfig.{k}={v!r}" for k, v in fields.items()),
          "VocabConfig.kind='sentencepiece'", f"VocabConfig.sentencepiece_model={spm_path!r}",
          f"VocabConfig.extra_ids={vocabulary.extra_ids}"]
  files = [f"arch/{arch}.gin", f"objective/{objective}.gin", "mesh/data_parallel.gin",
           *gin_files]
  summary = write_workdir(out, files, [*ours, *bindings], params,
                          files_first={IMPORTED_SPM: vocabulary.sp_model})
  say(f"{model_dir} ({config.get('model_type')}, {arch}) -> {out}: step 0, "
      f"{summary['parameters'] / 1e6:.2f}M parameters, vocabulary {vocabulary.size} ids "
      f"({vocabulary.extra_ids} sentinels); continue it with "
      f"--gin.TrainConfig.init_from={out}")
  return {**summary, "arch": arch, "extra_ids": vocabulary.extra_ids}


def _default_objective(arch: str) -> str:
  from objectax.models import registry as arch_registry  # pylint: disable=g-import-not-at-top
  from objectax.objectives import registry as objective_registry  # pylint: disable=g-import-not-at-top
  architecture = arch_registry.get(arch)
  for name in _DEFAULT_OBJECTIVES:
    if arch_registry.supports(architecture, objective_registry.get(name)):
      return name
  raise ConfigError(f"no default objective for {arch}; bind Experiment.objective")


def write_workdir(out: str, files: Sequence[str], bindings: Sequence[str],
                  params: Any = None,
                  files_first: Optional[Mapping[str, bytes]] = None) -> dict[str, Any]:
  """An Objectax workdir at step 0 for the configuration `files` + `bindings`: config.gin
  (the operative config, as the trainer writes it) and checkpoints/0 holding the train
  state (parameters, a fresh optimizer state, step 0) and the data record the trainer
  writes, through the trainer's own Checkpointer. `params` (plain or scanned layout, numpy)
  replace the model's own initialisation, group by group; None keeps it (a random model),
  and a function gets the initial parameters (numpy, plain layout) and returns the ones to
  write (tests perturb the norm scales, whose init, ones, would hide a mix-up).
  `files_first`: files written into `out` before the configuration is read (the
  SentencePiece model its VocabConfig names).

  The data record is the trainer's (`train.run_identity`), so
  `objectax train --workdir=out` resumes this checkpoint as a run of its own. `out` must
  be new or empty; if anything fails, what was written into it is removed again.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  _check_empty(out, "--out")
  created = not os.path.exists(out)
  os.makedirs(out, exist_ok=True)
  try:
    for name, data in (files_first or {}).items():
      with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    return _write_workdir(out, files, bindings, params)
  except BaseException:
    if created:
      shutil.rmtree(out, ignore_errors=True)
    else:
      for name in os.listdir(out):
        path = os.path.join(out, name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    raise


def _write_workdir(out: str, files: Sequence[str], bindings: Sequence[str],
                   params: Any) -> dict[str, Any]:
  # pylint: disable=g-import-not-at-top
  import jax
  from objectax.data import vocab as vocab_lib
  from objectax.launch import builder, checkpoints, configure, input_pipeline, plugins, sharding
  configure.parse(list(files), list(bindings))
  cfg = builder.resolve()
  ti = input_pipeline.build_task_input(cfg)
  vocabulary = ti.vocabulary
  parts = builder.build_for(cfg, ti)
  run = parts.on_mesh(sharding.make_mesh(cfg.mesh))
  wanted = run.abstract.params
  state = run.init()
  if callable(params):
    params = params(plain_layout(unbox_numpy(state.params)))
  if params is not None:
    params = scanned_layout(params, wanted)
    want = _shapes({k: wanted[k] for k in params if k in wanted})
    got = _shapes(params)
    wrong = sorted(k for k in params if k not in wanted)
    wrong += [f"{k} {got.get(k)} -> {v}" for k, v in want.items() if got.get(k) != v]
    wrong += [f"{k} {v} (no such parameter)" for k, v in got.items() if k not in want]
    if wrong:
      raise ConfigError("the imported parameters do not fit the configured model: "
                        f"{wrong[0]}" + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1
                                         else ""))
  from objectax.launch import train as train_lib
  exp, tc = cfg.exp, cfg.train
  fingerprint = vocab_lib.fingerprint(vocabulary)
  model_id, stream_id = train_lib.run_identity(
      cfg, ti, parts, input_pipeline.resolve_input_shards(tc.input_shards, tc.batch_size),
      ti.task_feature_lengths)
  if params is not None:
    merged = dict(state.params)
    for key, group in params.items():
      merged[key] = jax.tree.map(
          lambda a, x: jax.device_put(np.asarray(x, a.dtype), a.sharding), wanted[key], group)
    state = state.replace(params=merged)
  configure.write_operative_config(out)
  plugins.record(out)
  ckpt = checkpoints.Checkpointer(out, keep=1, async_save=False)
  try:
    ckpt.save(0, state, {"batches_consumed": 0, **stream_id, "model": model_id,
                         "process_count": jax.process_count()})
  finally:
    ckpt.close()
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  return {"workdir": out, "parameters": n, "vocabulary": fingerprint, "experiment": exp.name}
