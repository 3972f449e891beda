"""Objectax's decoders and encoder <-> transformers' LlamaForCausalLM / EuroBertForMaskedLM
(launch/interop/hf.py, hf_llama.py): equal logits on validation text, the same tokens from
the exported tokenizer, the same greedy continuations, and bit-equal round trips.

The models are tiny runs written at step 0 through `hf.write_workdir` (the import's own
path) with random norm scales, whose init (ones) would hide a mix-up of the two norms of a
block; one is the session's trained quickstart run (tests/conftest.py), a real checkpoint.
"""
import json
import os
import time

import numpy as np
import pytest

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")
torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
pytest.importorskip("safetensors", reason="needs the hf extra: pip install -e '.[hf]'")

from objectax.launch.interop import hf, hf_llama  # pylint: disable=g-import-not-at-top
from objectax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.e2e  # reads the built corpus; writes and restores checkpoints

LENGTH = 64  # Experiment.sequence_length of every run here (the quickstart fixture's too)
TOLERANCE = 1e-4  # max |logit difference|, float32 on CPU
FILES = {"causal_decoder": ["arch/causal_decoder.gin", "objective/full_lm.gin"],
         "prefix_decoder": ["arch/prefix_decoder.gin", "objective/prefix_lm.gin"],
         "encoder_only": ["arch/encoder_only.gin", "objective/bert_mlm.gin"]}
VARIANTS = {  # id: (architecture, ModelConfig bindings)
    "cd-untied-geglu": ("causal_decoder", {"tie_embeddings": False, "mlp_activation": "gelu"}),
    "nd-tied-scanned": ("prefix_decoder", {"scan_layers": True}),  # exported unstacked
    "nd-untied-relu": ("prefix_decoder", {"tie_embeddings": False, "mlp_activation": "relu"}),
    "eo-tied": ("encoder_only", {}),
    "eo-untied-geglu": ("encoder_only", {"tie_embeddings": False, "mlp_activation": "gelu"}),
}
PROMPTS = ["def ", "The module", "Return the", "class ", "If the", "This function",
           "import", "A list of"]


def perturbed(params, seed=0):
  """The initial parameters with norm scales drawn from U(0.5, 1.5)."""
  rng = np.random.default_rng(seed)
  def walk(node, name=""):
    if isinstance(node, dict):
      return {k: walk(v, k) for k, v in node.items()}
    if name == "scale":
      return rng.uniform(0.5, 1.5, node.shape).astype(np.float32)
    return node
  return walk(params)


def make_run(workdir, arch, model=None, seed=0):
  """A tiny run of `arch` at step 0 (random weights, perturbed norms) in `workdir`."""
  bindings = [f"Experiment.sequence_length={LENGTH}", "TrainConfig.batch_size=4",
              "TrainConfig.eval_batches=1",
              *(f"ModelConfig.{k}={v!r}" for k, v in (model or {}).items())]
  hf.write_workdir(str(workdir), [*FILES[arch], "mesh/data_parallel.gin"], bindings,
                   lambda p: perturbed(p, seed))
  return str(workdir)


def restored(workdir):
  """(opened run, its restored parameters) as `objectax generate` restores them."""
  from objectax.launch.tools import generate  # pylint: disable=g-import-not-at-top
  opened = generate.open_for_decoding(str(workdir), None)
  return opened, generate.Decoder.restore(opened, str(workdir)).params


def export(workdir, out):
  hf.export(str(workdir), None, str(out), say=lambda msg: None)
  return str(out)


def hf_params(workdir):
  """The plain-layout numpy parameters of a workdir's latest checkpoint."""
  _, params = restored(workdir)
  return hf.plain_layout(hf.unbox_numpy(params))


def rows_of(vocabulary, texts, lengths):
  """One row per text: its first `length` ids."""
  return [list(vocabulary.encode(t))[:n] for t, n in zip(texts, lengths)]


@pytest.fixture(scope="module")
def texts(tfds_data_dir):
  """The embedded corpus's validation documents (all of them: 30 at Python 3.11)."""
  del tfds_data_dir
  from objectax.launch.eval import zeroshot  # pylint: disable=g-import-not-at-top
  return zeroshot.validation_texts("pydocs", 1000)


@pytest.fixture(scope="module")
def trained_export(_trained_quickstart, tmp_path_factory):
  """The session's trained quickstart run (CD, tied, SwiGLU) exported once."""
  return str(_trained_quickstart), export(_trained_quickstart,
                                          tmp_path_factory.mktemp("hf") / "quickstart")


# ------------------------------------------------------------------ logits


def decoder_logits(workdir, out, texts, prefix=False):
  """(max |difference| over real positions, logit scale) of a decoder and its export on
  validation text: rows of different lengths, padded at the end; the prefix decoder with
  a different prefix per row and `prefix_lm_mask`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  opened, params = restored(workdir)
  lengths = [LENGTH, LENGTH - 9, 40, LENGTH - 1]
  targets = rows_of(opened.vocabulary, texts[:4], lengths)
  targets_BL = np.zeros((4, LENGTH), np.int32)
  inputs_BL = np.zeros((4, LENGTH), np.int32)
  for b, row in enumerate(targets):
    targets_BL[b, :len(row)] = row
    inputs_BL[b, 1:len(row)] = row[:-1]
  real_BL = targets_BL > 0
  batch = {"decoder_input_tokens": inputs_BL, "decoder_target_tokens": targets_BL}
  prefixes = [5, 17, 1, 30]  # bidirectional positions: BOS + len(inputs)
  if prefix:
    causal_BL = (np.arange(LENGTH)[None, :] < np.array(prefixes)[:, None]).astype(np.int32)
    batch["decoder_causal_attention"] = causal_BL * real_BL
  ours = np.asarray(opened.model.apply({"params": params},
                                       {k: jnp.asarray(v) for k, v in batch.items()}))
  model = transformers.AutoModelForCausalLM.from_pretrained(out)
  assert type(model).__name__ == "LlamaForCausalLM"
  mask = (hf_llama.prefix_lm_mask(prefixes, real_BL.astype(np.int64)) if prefix
          else torch.as_tensor(real_BL.astype(np.int64)))
  with torch.no_grad():
    theirs = model(torch.as_tensor(inputs_BL, dtype=torch.long), attention_mask=mask).logits
  diff = np.abs(theirs.numpy() - ours)[real_BL]
  return float(diff.max()), float(np.abs(ours[real_BL]).max())


def encoder_logits(workdir, out, texts):
  """The same for the encoder-only model and EuroBertForMaskedLM, on BERT-masked text."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  opened, params = restored(workdir)
  vocabulary = opened.vocabulary
  rows = rows_of(vocabulary, texts[:4], [LENGTH - 1, 40, LENGTH - 1, 20])
  rng = np.random.default_rng(0)
  inputs_BL = np.zeros((4, LENGTH), np.int32)
  for b, row in enumerate(rows):
    row = np.array(row + [1])  # encoder inputs end with EOS
    masked = rng.random(len(row)) < 0.15
    row[masked[:-1].nonzero()[0]] = vocabulary.vocab_size - 1  # <extra_id_0>, BERT's mask
    inputs_BL[b, :len(row)] = row
  real_BL = inputs_BL > 0
  ours = np.asarray(opened.model.apply({"params": params},
                                       {"encoder_input_tokens": jnp.asarray(inputs_BL)}))
  model = transformers.AutoModelForMaskedLM.from_pretrained(out)
  assert type(model).__name__ == "EuroBertForMaskedLM"
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)  # no BOS, EOS last, as trained
  assert tokenizer(texts[0][:300]).input_ids == [*vocabulary.encode(texts[0][:300]), 1]
  assert tokenizer.mask_token_id == vocabulary.vocab_size - 1
  with torch.no_grad():
    theirs = model(torch.as_tensor(inputs_BL, dtype=torch.long),
                   attention_mask=torch.as_tensor(real_BL.astype(np.int64))).logits
  diff = np.abs(theirs.numpy() - ours)[real_BL]
  return float(diff.max()), float(np.abs(ours[real_BL]).max())


def test_the_trained_causal_decoder_gives_its_logits_in_transformers(trained_export, texts):
  workdir, out = trained_export
  config = json.load(open(os.path.join(out, "config.json")))
  # Tied: exported untied with lm_head = E / sqrt(D), the tying recorded for import.
  assert config["tie_word_embeddings"] is False and config["objectax"]["tie_embeddings"]
  diff, scale = decoder_logits(workdir, out, texts)
  print(f"cd-tied-trained: max |logit diff| {diff:.2e} (logits up to {scale:.1f})")
  assert diff < TOLERANCE and scale > 1.0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_architecture_and_head_gives_its_logits_in_transformers(variant, texts, tmp_path):
  t0 = time.perf_counter()
  arch, model = VARIANTS[variant]
  workdir = make_run(tmp_path / "wd", arch, model)
  out = export(workdir, tmp_path / "hf")
  if arch == "encoder_only":
    diff, scale = encoder_logits(workdir, out, texts)
  else:
    diff, scale = decoder_logits(workdir, out, texts, prefix=arch == "prefix_decoder")
  print(f"{variant}: max |logit diff| {diff:.2e} (logits up to {scale:.1f}) in "
        f"{time.perf_counter() - t0:.1f} s")
  assert diff < TOLERANCE


def test_prefix_lm_mask_is_the_prefix_decoders_mask():
  """Row 0: prefix 3 of 5 real tokens, 1 padding; row 1: prefix 1 (causal)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from objectax.models import masks  # pylint: disable=g-import-not-at-top
  real = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
  causal = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
  ours = np.asarray(masks.decoder_mask(jnp.asarray(real), jnp.asarray(causal), True))
  theirs = hf_llama.prefix_lm_mask([3, 1], real) == 0
  real_BLL = real[:, None, :, None].astype(bool)
  assert theirs.shape == (2, 1, 6, 6)
  assert np.array_equal(theirs.numpy() & real_BLL, ours & real_BLL)  # every real query
  assert theirs.numpy()[0, 0, 5].tolist() == [False] * 5 + [True]  # padding sees itself


# ------------------------------------------------------------------ tokenizer, generation


def test_the_exported_tokenizer_gives_the_vocabularys_ids(trained_export, texts):
  from objectax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocabulary = vocab_lib.default_vocabulary()
  tokenizer = transformers.AutoTokenizer.from_pretrained(trained_export[1])
  odd = ["a <extra_id_0> b <extra_id_17>", "[NLU] two  spaces\n\nand\ttab", " lead", "trail ",
         "</s> <pad> <unk> <s>", "<0x41>", "ünïcödé 日本語 😀", "", "\nnewline first"]
  tokens = 0
  for text in texts + odd:
    ids = list(vocabulary.encode(text))
    assert tokenizer(text, add_special_tokens=False).input_ids == ids, text[:60]
    tokens += len(ids)
  # With its special tokens: Objectax's BOS, the pad id 0, first; no EOS.
  assert tokenizer("def f").input_ids == [0, *vocabulary.encode("def f")]
  assert tokenizer.decode(tokenizer("def f(x): return x").input_ids,
                          skip_special_tokens=True) == "def f(x): return x"
  print(f"tokenizer: {len(texts)} validation documents + {len(odd)} odd texts, {tokens} tokens")
  assert len(texts) >= 20 and tokens > 20_000


def test_greedy_generation_is_objectax_generates(trained_export):
  from objectax.launch.tools import generate  # pylint: disable=g-import-not-at-top
  from objectax.models import decoding  # pylint: disable=g-import-not-at-top
  workdir, out = trained_export
  opened = generate.open_for_decoding(workdir, None)
  decoder = generate.Decoder.restore(opened, workdir)
  rows = [list(opened.vocabulary.encode(p)) for p in PROMPTS]
  new = 24
  ours = decoder.decode(rows, new, decoding.Strategy())
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  model = transformers.AutoModelForCausalLM.from_pretrained(out)
  for prompt, row, mine in zip(PROMPTS, rows, ours):
    batch = tokenizer([prompt], return_tensors="pt")
    assert batch.input_ids[0].tolist() == [0, *row]
    with torch.no_grad():
      ids = model.generate(**batch, do_sample=False, max_new_tokens=new)[0, len(row) + 1:]
    theirs = ids.tolist()
    cut = lambda t: t[:t.index(1) + 1] if 1 in t else t  # through the first EOS
    assert cut(theirs) == cut(list(mine)), prompt
  print(f"greedy: {len(PROMPTS)} prompts x {new} new tokens, token for token")


# ------------------------------------------------------------------ round trips


def llama_folder(path, tied, vocabulary):
  """A random LlamaForCausalLM saved with the repo's SentencePiece model (sentinels in)."""
  config = transformers.LlamaConfig(
      vocab_size=8192, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=4, head_dim=16, rms_norm_eps=1e-6,
      tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1, pad_token_id=0,
      rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
  torch.manual_seed(int(tied))
  model = transformers.LlamaForCausalLM(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.uniform_(0.5, 1.5)
  model.save_pretrained(path)
  with open(os.path.join(path, "tokenizer.model"), "wb") as f:
    f.write(vocabulary.sp_model)
  return str(path)


def tensors_of(folder):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return load_file(os.path.join(folder, "model.safetensors"))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_a_hugging_face_llama_imports_and_exports_bit_equal(tied, tfds_data_dir, tmp_path):
  del tfds_data_dir
  from objectax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocabulary = vocab_lib.default_vocabulary()
  source = llama_folder(tmp_path / "llama", tied, vocabulary)
  summary = hf.import_hf(source, str(tmp_path / "wd"), say=lambda msg: None)
  assert summary["extra_ids"] == 100  # the sentinels carried as pieces become seqio's again
  assert summary["vocabulary"] == vocab_lib.fingerprint(vocabulary)
  out = export(tmp_path / "wd", tmp_path / "again")
  before, after = tensors_of(source), tensors_of(out)
  assert sorted(before) == sorted(after)  # a tied model is exported tied again
  for name, tensor in before.items():
    assert after[name].dtype == np.float32 and np.array_equal(after[name], tensor), name
  config = json.load(open(os.path.join(out, "config.json")))
  assert config["tie_word_embeddings"] is tied
  assert config["rope_parameters"]["rope_theta"] == 5000.0
  with open(os.path.join(out, "tokenizer.model"), "rb") as f:
    assert f.read() == vocabulary.sp_model


@pytest.mark.parametrize("arch, model", [("causal_decoder", {}),
                                         ("encoder_only", {"tie_embeddings": False})],
                         ids=["cd-tied", "eo-untied"])
def test_an_objectax_run_exports_and_imports_to_the_same_run(arch, model, tmp_path):
  from objectax.launch import checkpoints  # pylint: disable=g-import-not-at-top
  workdir = make_run(tmp_path / "wd", arch, model)
  out = export(workdir, tmp_path / "hf")
  hf.import_hf(out, str(tmp_path / "back"), say=lambda msg: None)
  before, after = hf_params(workdir), hf_params(tmp_path / "back")
  flat = lambda tree: {"/".join(p): v for p, v in hf._leaves(tree).items()}  # pylint: disable=protected-access
  before, after = flat(before), flat(after)
  assert sorted(before) == sorted(after)
  for name, value in before.items():
    assert np.array_equal(after[name], value), name
  record = lambda wd: checkpoints.read_data(os.path.join(wd, "checkpoints"), 0)["model"]
  mine, theirs = record(workdir), record(tmp_path / "back")
  assert mine == theirs  # the same model and vocabulary (fingerprint), as train records them


def test_options_with_no_llama_twin_are_named():
  cfg = ModelConfig(position_embedding="relative", mlp_gated=False, d_model=100, num_heads=3,
                    head_dim=32)
  problems = hf_llama.unsupported(cfg, "causal_decoder")
  assert [p.split(" ")[0] for p in problems] == [
      "ModelConfig.position_embedding='relative'", "ModelConfig.mlp_gated=False",
      "ModelConfig.num_heads=3"]
  assert hf_llama.unsupported(ModelConfig(mlp_activation="gelu"), "encoder_only") == []
