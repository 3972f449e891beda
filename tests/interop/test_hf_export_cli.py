"""`objectax export` and `objectax import` from the command line: a trained run goes out
to a Hugging Face folder and comes back as a workdir that `objectax generate`, `objectax
eval` and `TrainConfig.init_from` use like the run itself.
"""
import importlib.util
import json
import os
import shutil
import sys

import pytest

from objectax.launch import main

# The first test runs without the extra; the others need it.
requires_hf = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "torch", "safetensors")),
    reason="needs the hf extra: pip install -e '.[hf]'")


def test_export_without_the_hf_extra_is_one_line(monkeypatch, capsys, tmp_path):
  """No transformers: one line naming the extra, nothing written (runs without the extra)."""
  monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
  code = main.run(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "hf")])
  lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("objectax: error: objectax export needs the hf extra")
  assert lines[0].endswith("pip install -e '.[hf]'") and not (tmp_path / "hf").exists()


@pytest.fixture(scope="module")
def round_trip(_trained_quickstart, tmp_path_factory):
  """A copy of the session's trained quickstart (eval writes into its workdir), exported,
  then imported, through `objectax`."""
  root = tmp_path_factory.mktemp("cli")
  workdir, out, back = root / "wd", root / "hf", root / "imported"
  shutil.copytree(_trained_quickstart, workdir)
  assert main.run(["export", f"--workdir={workdir}", "--out", str(out)]) == 0
  assert main.run(["import", "--format", "hf", "--model", str(out), "--out", str(back)]) == 0
  return str(workdir), str(out), str(back)


@requires_hf
@pytest.mark.e2e
def test_export_writes_a_folder_transformers_loads(round_trip):
  import transformers  # pylint: disable=g-import-not-at-top
  workdir, out, _ = round_trip
  assert sorted(os.listdir(out)) == [
      "README.md", "config.json", "generation_config.json", "model.safetensors",
      "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
  config = json.load(open(os.path.join(out, "config.json")))
  assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "float32"
  assert config["objectax"]["step"] == 12 and config["objectax"]["workdir"] == workdir
  generation = json.load(open(os.path.join(out, "generation_config.json")))
  assert (generation["eos_token_id"], generation["pad_token_id"]) == (1, 0)
  assert "max_length" not in generation  # with max_new_tokens, transformers would warn
  assert config["objectax"]["sequence_length"] == 64
  assert generation["suppress_tokens"] == list(range(8100, 8192))  # rows above the ids
  card = open(os.path.join(out, "README.md")).read()
  assert "causal_decoder_full_lm_tiny_pydocs" in card and "step 12" in card
  assert type(transformers.AutoModelForCausalLM.from_pretrained(out)).__name__ == \
      "LlamaForCausalLM"


@requires_hf
@pytest.mark.e2e
def test_the_imported_run_generates_what_the_run_generates(round_trip, capsys):
  workdir, _, back = round_trip
  config = open(os.path.join(back, "config.gin")).read()
  assert "Experiment.variant = 'hf'" in config and "Experiment.sequence_length = 64" in config
  assert "VocabConfig.extra_ids = 100" in config
  capsys.readouterr()
  outputs = []
  for wd in (workdir, back):
    assert main.run(["generate", f"--workdir={wd}", "--prompt", "def ", "--prompt", "The",
                     "--max_new_tokens", "12"]) == 0
    outputs.append(capsys.readouterr().out)
  assert outputs[0] == outputs[1] and outputs[0].count("output: ") == 2


@requires_hf
@pytest.mark.e2e
def test_the_imported_run_continues_pretraining_with_another_objective(round_trip, tmp_path,
                                                                        capsys):
  """TrainConfig.init_from=WORKDIR (launch/adapt.py, its vocabulary check included) with
  span corruption, from the imported run's own config.gin."""
  _, _, back = round_trip
  capsys.readouterr()
  code = main.run(["train", f"--gin_file={back}/config.gin",
                   f"--gin.TrainConfig.init_from={back}",
                   "--gin.Experiment.objective=span_corruption",
                   "--gin.TrainConfig.steps=2", "--gin.TrainConfig.batch_size=4",
                   "--gin.TrainConfig.eval_batches=1", "--gin.TrainConfig.warmup_steps=1",
                   "--gin.TrainConfig.checkpoint_every=2", "--gin.TrainConfig.eval_every=2",
                   f"--workdir={tmp_path / 'continued'}"])
  out = capsys.readouterr().out
  assert code == 0, out[-2000:]
  assert f"parameters from {back} step 0" in out
  summary = json.load(open(tmp_path / "continued" / "summary.json"))
  assert summary["final_step"] == 2


@requires_hf
@pytest.mark.e2e
def test_eval_scores_the_imported_run_as_the_run(round_trip, capsys):
  workdir, _, back = round_trip
  tables = []
  for wd in (workdir, back):
    capsys.readouterr()
    assert main.run(["eval", f"--workdir={wd}", "--documents", "4", "--no_zeroshot"]) == 0
    tables.append(capsys.readouterr().out.split("\n", 1)[1])
  assert tables[0] == tables[1]


@requires_hf
@pytest.mark.e2e
def test_the_encoder_decoder_goes_out_and_back_the_same_way(tfds_data_dir, tmp_path):
  """The common path with the T5 family (launch/interop/hf_t5.py): a T5.1.1-style run out
  as T5ForConditionalGeneration with its logits, and back bit for bit, sentinels too."""
  pytest.importorskip("objectax.launch.interop.hf_t5", reason="the T5 family is not there")
  del tfds_data_dir
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from objectax.launch import checkpoints  # pylint: disable=g-import-not-at-top
  from objectax.launch.eval import zeroshot  # pylint: disable=g-import-not-at-top
  from objectax.launch.interop import hf  # pylint: disable=g-import-not-at-top
  from objectax.launch.tools import generate  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  def perturbed(params):
    def walk(node, name=""):
      if isinstance(node, dict):
        return {k: walk(v, k) for k, v in node.items()}
      if name in ("scale", "table"):
        return rng.uniform(0.5, 1.5, node.shape).astype(np.float32)
      return node
    return walk(params)
  workdir, out, back = tmp_path / "wd", tmp_path / "hf", tmp_path / "back"
  hf.write_workdir(str(workdir), ["arch/encoder_decoder.gin", "objective/span_corruption.gin",
                                  "mesh/data_parallel.gin"],
                   ["Experiment.sequence_length=64", "ModelConfig.position_embedding='relative'",
                    "ModelConfig.mlp_activation='gelu'", "ModelConfig.tie_embeddings=False",
                    "ModelConfig.d_model=64", "ModelConfig.num_heads=4", "ModelConfig.head_dim=16",
                    "ModelConfig.mlp_dim=128"], perturbed)
  assert main.run(["export", f"--workdir={workdir}", "--out", str(out)]) == 0
  assert main.run(["import", "--model", str(out), "--out", str(back)]) == 0

  opened = generate.open_for_decoding(str(workdir), None)
  params = generate.Decoder.restore(opened, str(workdir)).params
  texts = zeroshot.validation_texts("pydocs", 2)
  inputs = np.array([list(opened.vocabulary.encode(texts[0]))[:40] + [1]], np.int32)
  targets = np.array([list(opened.vocabulary.encode(texts[1]))[:16]], np.int32)
  shifted = np.concatenate([[[0]], targets[:, :-1]], axis=1).astype(np.int32)
  ours = np.asarray(opened.model.apply({"params": params}, {
      "encoder_input_tokens": jnp.asarray(inputs), "decoder_input_tokens": jnp.asarray(shifted),
      "decoder_target_tokens": jnp.asarray(targets)}))
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(out))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  assert tokenizer(texts[0][:200]).input_ids == [*opened.vocabulary.encode(texts[0][:200]), 1]
  with torch.no_grad():
    theirs = model(input_ids=torch.as_tensor(inputs, dtype=torch.long),
                   decoder_input_ids=torch.as_tensor(shifted, dtype=torch.long)).logits.numpy()
  diff = float(np.abs(theirs - ours).max())
  print(f"ed-untied-geglu: max |logit diff| {diff:.2e}")
  assert diff < 1e-4

  leaves = lambda wd: {"/".join(p): v for p, v in hf._leaves(hf.plain_layout(hf.unbox_numpy(  # pylint: disable=protected-access
      generate.Decoder.restore(generate.open_for_decoding(str(wd), None), str(wd)).params)
  )).items()}
  before, after = leaves(workdir), leaves(back)
  assert sorted(before) == sorted(after)
  assert all(np.array_equal(before[k], after[k]) for k in before)
  record = lambda wd: checkpoints.read_data(os.path.join(wd, "checkpoints"), 0)["model"]
  assert record(workdir) == record(back)  # the vocabulary's fingerprint and its sentinels
