"""Every bad input a user can give stops in one line, before anything compiles or is written.

Each case below runs `objectax` in process (`main.run(argv)`) and must exit with its code,
print exactly one non-empty line on stderr that starts with "objectax: error:", print no
traceback, and compile nothing. The lines they print, with the parts that differ between
machines replaced (<tmp>, <pid>, <host>, <time>), are the table of docs/bad_inputs.md;
`OBJECTAX_WRITE_DOCS=1 pytest tests/launch/test_bad_inputs.py` rewrites it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
from typing import Callable, Optional

import jax
import pytest

from objectax.launch import main
from objectax.launch import workdir as workdir_lib

pytestmark = pytest.mark.e2e  # the data cases read the built corpus (tfds_data_dir)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bad_inputs.md"
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"

# The bindings the session's trained quickstart workdir was trained with (tests/conftest.py,
# `_trained_quickstart`): a case on that workdir passes them all plus its one bad binding,
# so the refusal is about that one difference. `{run}` in an argv stands for them.
RUN_BINDINGS = ["TrainConfig.steps=12", "TrainConfig.checkpoint_every=6",
                "TrainConfig.eval_every=12", "TrainConfig.batch_size=8",
                "TrainConfig.eval_batches=1", "TrainConfig.warmup_steps=2",
                "TrainConfig.learning_rate=1e-2", "Experiment.sequence_length=64"]
RUN_FLAGS = [f"--gin.{b}" for b in RUN_BINDINGS]
TRAIN = ["train", "--workdir={wd}", "--quiet"]
SLURM = ["launch", "slurm", "--nodes", "2", "--script", "{tmp}/job.sbatch"]
LAUNCH_TRAIN = ["--", "--workdir=/gcs/bucket/run"]


class Ctx:
  """What a case's setup prepares: its folder (`tmp`, the workdir `wd` under it), the
  trained workdir when the case needs one (copied to `wd`), and cleanups to run after."""

  def __init__(self, tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    self.tmp, self.wd, self.monkeypatch = tmp, tmp / "wd", monkeypatch
    self.cleanups: list[Callable[[], None]] = []


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  what: str                                   # what the user did, in words
  argv: list[str]                             # {tmp}, {wd} and {run} are filled in
  setup: Optional[Callable[[Ctx], None]] = None
  code: int = 2
  trained: bool = False                       # `wd` is a copy of the trained quickstart
  says: str = ""                              # the setting the line must name


# ------------------------------------------------------------------ setups


def _include_size(ctx: Ctx) -> None:
  (ctx.tmp / "exp.gin").write_text("include 'run/quickstart.gin'\ninclude 'size/small.gin'\n")


def _write(name: str, text: str) -> Callable[[Ctx], None]:
  def setup(ctx: Ctx) -> None:
    path = ctx.tmp / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return setup


_DOCS = [f"document number {i} about the objectives of pretraining, sentence {i}."
         for i in range(40)]
_BROKEN_LINE_3 = "".join(json.dumps({"text": d}) + "\n" for d in _DOCS[:2]) + \
    '{"text": "a record cut off\n' + "".join(json.dumps({"text": d}) + "\n" for d in _DOCS[2:])
_NO_TEXT_KEY = "".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(_DOCS[:3]))


def _no_validation_docs(ctx: Ctx) -> None:
  """A few documents, none of which the hash split holds out for validation."""
  from objectax.data import pydocs  # pylint: disable=g-import-not-at-top
  docs = [d for d in _DOCS if not pydocs.is_validation(d)][:8]
  _write("few.txt", "\n".join(docs) + "\n")(ctx)


# A user's module of tasks for the Experiment.task cases, imported with --module.
_TASKS_MODULE = """
import seqio
import tensorflow as tf
from objectax.data import tasks, vocab

def source(features, targets="c d e f g h i j k l m n o p"):
  texts = {"inputs": "a b", "targets": targets, "extra": "x"}
  def make(split, shuffle_files=False, seed=None):
    return tf.data.Dataset.from_tensor_slices({k: [texts[k]] * 8 for k in features})
  return seqio.FunctionDataSource(make, splits=("train", "validation"))

def add(name, features, vocabulary):
  for registry in (seqio.TaskRegistry, seqio.MixtureRegistry):
    if name in registry.names():
      registry.remove(name)
  seqio.TaskRegistry.add(name, source=source(features),
                         preprocessors=[seqio.preprocessors.tokenize],
                         output_features={k: seqio.Feature(vocabulary) for k in features})

add("three_features", ("inputs", "targets", "extra"), vocab.default_vocabulary())
add("long_pairs", ("inputs", "targets"), vocab.default_vocabulary())
add("byte_pairs", ("inputs", "targets"), seqio.ByteVocabulary())
if "bytes_and_spans" in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.remove("bytes_and_spans")
seqio.MixtureRegistry.add("bytes_and_spans", [("byte_pairs", 1), ("pydocs_span_corruption", 3)])
"""


def _tasks_module(ctx: Ctx) -> None:
  """bad_tasks.py in the case's folder, importable, and no bytecode written beside it."""
  (ctx.tmp / "bad_tasks.py").write_text(_TASKS_MODULE)
  ctx.monkeypatch.syspath_prepend(str(ctx.tmp))
  ctx.monkeypatch.setattr("sys.dont_write_bytecode", True)


def _a_file(ctx: Ctx) -> None:
  ctx.wd.write_text("not a directory\n")


def _read_only_parent(ctx: Ctx) -> None:
  ro = ctx.tmp / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  ctx.cleanups.append(lambda: ro.chmod(0o700))
  if os.access(ro, os.W_OK):
    pytest.skip("this user (root) may write a read-only folder")


def _locked(ctx: Ctx) -> None:
  ctx.wd.mkdir()
  lock = workdir_lib.WorkdirLock(str(ctx.wd))
  lock.acquire()  # flock is per open file: main.run's own acquire is refused
  ctx.cleanups.append(lock.release)


def _unreadable_data_records(ctx: Ctx) -> None:
  for step in ("6", "12"):
    (ctx.wd / "checkpoints" / step / "data" / "metadata").write_text("{torn")


def _no_checkpoints(ctx: Ctx) -> None:
  shutil.rmtree(ctx.wd / "checkpoints")


def _needs_hf() -> None:
  pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")


def _no_hf_twin(ctx: Ctx) -> None:
  """The trained run's config.gin with T5's relative positions and ungated MLP."""
  _needs_hf()
  with open(ctx.wd / "config.gin", "a", encoding="utf-8") as f:
    f.write("\nModelConfig.position_embedding = 'relative'\nModelConfig.mlp_gated = False\n")


def _no_checkpoints_hf(ctx: Ctx) -> None:
  _needs_hf()
  _no_checkpoints(ctx)


def _hf_folder(name: str, config: dict, llama_ids: bool = False) -> Callable[[Ctx], None]:
  """{tmp}/<name>/config.json; with llama_ids, a SentencePiece model with Llama's ids
  (SentencePiece's defaults: unk 0, bos 1, eos 2, no pad) as its tokenizer.model."""
  def setup(ctx: Ctx) -> None:
    _needs_hf()
    folder = ctx.tmp / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if llama_ids:
      import io  # pylint: disable=g-import-not-at-top
      import sentencepiece as spm  # pylint: disable=g-import-not-at-top
      model = io.BytesIO()
      spm.SentencePieceTrainer.train(sentence_iterator=iter(_DOCS), model_writer=model,
                                     vocab_size=60, minloglevel=2)
      (folder / "tokenizer.model").write_bytes(model.getvalue())
  return setup


def _no_sbatch(ctx: Ctx) -> None:
  empty = ctx.tmp / "bin"
  empty.mkdir()
  ctx.monkeypatch.setenv("PATH", str(empty))


# ------------------------------------------------------------------ the cases

CASES = [
    # gin: names, types and syntax
    Case("unknown_configurable", "misspelt a configurable",
         [*TRAIN, "--gin.Experimant.objective=full_lm"], says="Experimant"),
    Case("unknown_parameter", "misspelt a parameter of a configurable",
         [*TRAIN, "--gin.Experiment.objectiv=full_lm"], says="Experiment.objectiv"),
    Case("wrong_type", "gave a word where a number goes",
         [*TRAIN, "--gin.TrainConfig.steps=ten"], says="TrainConfig.steps"),
    Case("unparseable_value", "gave a value that starts like gin but does not parse",
         [*TRAIN, "--gin.TrainConfig.init_from=(oops"], says="TrainConfig.init_from"),
    Case("binding_without_value", "left out the `=` and the value of a binding",
         [*TRAIN, "--gin.TrainConfig.steps"], says="TrainConfig.steps"),
    Case("undefined_macro", "used a gin macro no binding defines",
         [*TRAIN, "--gin.TrainConfig.steps=%STEPS"], says="%STEPS"),
    Case("unknown_command", "misspelt the command", ["trian"], says="trian"),
    Case("module_missing", "named a --module that is not on the path",
         [*TRAIN, "--module=my_taskz"], says="--module my_taskz"),
    Case("unknown_flag", "gave train a flag it does not have",
         [*TRAIN, "--steps=10"], says="--steps=10"),
    Case("missing_gin_file", "named a gin file that does not exist",
         [*TRAIN, "--gin_file=run/quikstart.gin"], says="run/quikstart.gin"),
    Case("gin_file_syntax_error", "wrote a gin file with an unclosed bracket",
         [*TRAIN, "--gin_file={tmp}/bad.gin"],
         lambda ctx: (ctx.tmp / "bad.gin").write_text("TrainConfig.steps = 10\nMeshConfig.axes = (('data', 1),\n"),
         says="bad.gin line"),
    Case("gin_file_missing_include", "wrote a gin file that includes a file that does not exist",
         [*TRAIN, "--gin_file={tmp}/inc.gin"],
         lambda ctx: (ctx.tmp / "inc.gin").write_text("include 'run/quikstart.gin'\n"),
         says="run/quikstart.gin"),
    Case("binding_value_forgotten", "forgot a binding's value before the next flag",
         [*TRAIN, "--gin.TrainConfig.steps", "--gin.TrainConfig.seed=1"], says="TrainConfig.steps"),
    Case("gin_file_includes_size", "wrote a gin file that includes a size file",
         [*TRAIN, "--gin_file={tmp}/exp.gin"], _include_size, says="Experiment.size"),
    # the grid point
    Case("unknown_objective", "misspelt the objective",
         [*TRAIN, "--gin.Experiment.objective=ful_lm"], says="ful_lm"),
    Case("unknown_architecture", "misspelt the architecture",
         [*TRAIN, "--gin.Experiment.arch=rnn"], says="rnn"),
    Case("objective_not_on_architecture", "chose an objective the architecture cannot run",
         [*TRAIN, "--gin.Experiment.objective=bert_mlm"], says="bert_mlm"),
    Case("paired_pieces_on_a_decoder", "forced two prefix-LM pieces per row on a decoder",
         [*TRAIN, "--gin.Experiment.objective=prefix_lm", "--gin.PrefixLMConfig.pair_pieces=True"],
         says="PrefixLMConfig.pair_pieces"),
    Case("unknown_packer", "misspelt the packer", [*TRAIN, "--gin.Experiment.packer='best_fit'"],
         says="first_fit, in_order"),
    Case("unknown_size", "misspelt the size", [*TRAIN, "--gin.Experiment.size=huge"],
         says="huge"),
    Case("unknown_corpus", "misspelt the corpus", [*TRAIN, "--gin.Experiment.corpus=c5"],
         says="c5"),
    Case("corpus_not_prepared", "chose a TFDS corpus that is not prepared here",
         [*TRAIN, "--gin.Experiment.corpus=c4"], says="c4"),
    Case("objective_not_on_corpus", "chose an objective that does not read a text corpus",
         [*TRAIN, "--gin.Experiment.objective=prompted"], says="Experiment.corpus"),
    Case("unknown_mlp_activation", "misspelt a model setting's value",
         [*TRAIN, "--gin.ModelConfig.mlp_activation=swish"], says="ModelConfig.mlp_activation"),
    Case("sequence_length_1", "gave a token budget of 1",
         [*TRAIN, "--gin.Experiment.sequence_length=1"], says="Experiment.sequence_length"),
    Case("span_corruption_short", "gave span corruption a token budget too small for it",
         [*TRAIN, "--gin.Experiment.objective=span_corruption",
          "--gin.Experiment.sequence_length=12"], says="token budget 12"),
    Case("ul2_budget_2", "gave UL2 a token budget of 2",
         [*TRAIN, "--gin.Experiment.objective=ul2", "--gin.Experiment.sequence_length=2"],
         says="token budget"),
    Case("bad_variant", "gave a variant name with a space",
         [*TRAIN, "--gin.Experiment.variant=a b"], says="Experiment.variant"),
    # mesh
    Case("mesh_not_dividing_devices", "chose mesh axes that do not divide the devices",
         ["info", "--devices", "6", "--gin.MeshConfig.axes=(('data', -1), ('fsdp', 4), "
          "('tensor', 1))"], says="mesh"),
    Case("batch_not_divided_by_mesh", "chose a batch the data-parallel mesh does not divide",
         ["info", "--devices", "8", "--gin.TrainConfig.batch_size=12"],
         says="TrainConfig.batch_size"),
    Case("zero_devices", "asked info about 0 devices", ["info", "--devices", "0"],
         says="--devices"),
    Case("unknown_rules_preset", "misspelt the sharding rules preset",
         [*TRAIN, "--gin.MeshConfig.rules=zero3"], says="zero3"),
    # optimisation and loop settings
    Case("negative_learning_rate", "gave a negative learning rate",
         [*TRAIN, "--gin.TrainConfig.learning_rate=-1"], says="TrainConfig.learning_rate"),
    Case("warmup_beyond_run", "warmed up for longer than the run",
         [*TRAIN, "--gin.TrainConfig.steps=10", "--gin.TrainConfig.warmup_steps=20"],
         says="TrainConfig.warmup_steps"),
    Case("end_lr_fraction_2", "ended the schedule above its peak",
         [*TRAIN, "--gin.TrainConfig.end_lr_fraction=2"], says="TrainConfig.end_lr_fraction"),
    Case("adam_b2_1", "set Adam's b2 to 1", [*TRAIN, "--gin.TrainConfig.adam_b2=1.0"],
         says="TrainConfig.adam_b2"),
    Case("clip_grad_norm_0", "set clipping to 0 to turn it off",
         [*TRAIN, "--gin.TrainConfig.clip_grad_norm=0"], says="TrainConfig.clip_grad_norm"),
    Case("steps_0", "asked for 0 steps", [*TRAIN, "--gin.TrainConfig.steps=0"],
         says="TrainConfig.steps"),
    Case("batch_size_0", "asked for a batch of 0", [*TRAIN, "--gin.TrainConfig.batch_size=0"],
         says="TrainConfig.batch_size"),
    Case("input_shards_not_dividing_batch", "split the input into shards the batch cannot share",
         [*TRAIN, "--gin.TrainConfig.input_shards=3"], says="TrainConfig.input_shards"),
    Case("prefetch_negative", "asked for -1 prefetched batches",
         [*TRAIN, "--gin.TrainConfig.prefetch_batches=-1"], says="TrainConfig.prefetch_batches"),
    Case("coordinator_without_port", "gave the coordinator address without a port",
         [*TRAIN, "--gin.DistributedConfig.coordinator_address=localhost"],
         says="DistributedConfig.coordinator_address"),
    # local text
    Case("local_without_train_glob", "chose the local corpus without naming its files",
         [*TRAIN, "--gin.Experiment.corpus=local"], says="LocalTextConfig.train_glob"),
    Case("glob_matches_nothing", "named local files that do not exist",
         [*TRAIN, "--gin.Experiment.corpus=local",
          "--gin.LocalTextConfig.train_glob={tmp}/data/*.txt"], says="LocalTextConfig.train_glob"),
    Case("jsonl_broken_line_3", "gave a .jsonl file whose line 3 is cut off",
         [*TRAIN, "--gin.Experiment.corpus=local",
          "--gin.LocalTextConfig.train_glob={tmp}/data/docs.jsonl"],
         _write("docs.jsonl", _BROKEN_LINE_3), says="docs.jsonl:3"),
    Case("jsonl_without_text", "gave .jsonl records without a `text` key",
         [*TRAIN, "--gin.Experiment.corpus=local",
          "--gin.LocalTextConfig.train_glob={tmp}/data/docs.jsonl"],
         _write("docs.jsonl", _NO_TEXT_KEY), says="LocalTextConfig.text_key"),
    Case("empty_train_file", "gave an empty file as the only train file",
         [*TRAIN, "--gin.Experiment.corpus=local",
          "--gin.LocalTextConfig.train_glob={tmp}/data/empty.txt"],
         _write("empty.txt", ""), says="LocalTextConfig.train_glob"),
    Case("no_validation_documents", "gave so few documents the hash split holds none out",
         [*TRAIN, "--gin.Experiment.corpus=local",
          "--gin.LocalTextConfig.train_glob={tmp}/data/few.txt"],
         _no_validation_docs, says="LocalTextConfig.validation_glob"),
    Case("bad_records_maybe", "gave bad_records a value it does not know",
         [*TRAIN, "--gin.LocalTextConfig.bad_records=maybe"], says="LocalTextConfig.bad_records"),
    # where the run starts from and writes to
    Case("init_from_missing", "started from a run that does not exist",
         [*TRAIN, "--gin.TrainConfig.init_from={tmp}/no_such_run"], says="TrainConfig.init_from"),
    Case("init_from_step_missing", "started from a checkpoint step the run does not have",
         ["train", "--workdir={tmp}/new", "--quiet", "--gin.TrainConfig.init_from={wd}",
          "--gin.TrainConfig.init_from_step=7"], trained=True,
         says="TrainConfig.init_from_step"),
    Case("workdir_is_a_file", "gave a file as the workdir", TRAIN, _a_file, says="workdir"),
    Case("workdir_url", "gave a gs:// URL as the workdir",
         ["train", "--workdir=gs://bucket/run", "--quiet"], says="workdir"),
    Case("workdir_under_a_file", "gave a workdir inside a file",
         ["train", "--workdir={tmp}/wd/inner", "--quiet"], _a_file, says="workdir"),
    Case("workdir_not_writable", "gave a workdir in a folder it may not write",
         ["train", "--workdir={tmp}/ro/wd", "--quiet"], _read_only_parent, says="workdir"),
    Case("workdir_locked", "trained into a workdir another trainer holds", TRAIN, _locked,
         says="workdir"),
    # resuming
    Case("resume_other_model", "resumed a run with another model",
         [*TRAIN, "{run}", "--gin.ModelConfig.mlp_activation=relu"], trained=True,
         says="mlp_activation"),
    Case("resume_other_seed", "resumed a run with another data seed",
         [*TRAIN, "{run}", "--gin.TrainConfig.seed=1"], trained=True, says="seed"),
    Case("resume_unreadable_records", "resumed a run whose every checkpoint record is torn",
         [*TRAIN, "{run}"], _unreadable_data_records, trained=True, says="data record"),
    # the other commands
    Case("eval_no_workdir", "ran eval without a workdir", ["eval"], says="--workdir"),
    Case("eval_not_a_workdir", "ran eval on a folder no run wrote",
         ["eval", "--workdir={tmp}"], says="config.gin"),
    Case("eval_no_checkpoints", "ran eval on a workdir without checkpoints",
         ["eval", "--workdir={wd}"], _no_checkpoints, trained=True, says="checkpoint"),
    Case("eval_step_missing", "ran eval at a step with no checkpoint",
         ["eval", "--workdir={wd}", "--step", "7"], trained=True, says="step 7"),
    Case("eval_step_not_a_number", "gave eval a step that is not a number",
         ["eval", "--workdir={wd}", "--step", "last"], trained=True, says="--step"),
    Case("eval_unknown_zeroshot", "named a zero-shot task that does not exist",
         ["eval", "--workdir={wd}", "--zeroshot", "nope"], trained=True, says="nope"),
    Case("generate_no_checkpoints", "ran generate on a workdir without checkpoints",
         ["generate", "--workdir={wd}", "--prompt", "def "], _no_checkpoints, trained=True,
         says="checkpoint"),
    Case("generate_prompt_too_long", "gave generate a prompt longer than the run's length",
         ["generate", "--workdir={wd}", "--prompt", "return " * 80], trained=True,
         says="longer than"),
    Case("generate_infill_no_sentinels", "asked a full-LM run to fill blanks",
         ["generate", "--workdir={wd}", "--infill", "Thank you <X> me"], trained=True,
         says="--infill"),
    Case("generate_mode_not_ul2", "gave a mode token to a run that is not UL2",
         ["generate", "--workdir={wd}", "--prompt", "def ", "--mode", "NLG"], trained=True,
         says="--mode"),
    Case("generate_top_p_0", "gave generate top_p 0",
         ["generate", "--workdir={wd}", "--prompt", "def ", "--top_p", "0"], trained=True,
         says="top_p"),
    Case("generate_beams_0", "asked generate for 0 beams",
         ["generate", "--workdir={wd}", "--prompt", "def ", "--beams", "0"], trained=True,
         says="beam size"),
    Case("infer_unknown_task", "asked infer for a task that is not registered",
         ["infer", "--workdir={wd}", "--task", "pydocs_span_corupt"], trained=True,
         says="pydocs_span_corruption"),
    Case("infer_no_task", "ran infer without a task", ["infer", "--workdir={wd}"],
         trained=True, says="--task"),
    Case("infer_unknown_split", "asked infer for a split the task does not have",
         ["infer", "--workdir={wd}", "--task", "pydocs_full_lm", "--split", "test"],
         trained=True, says="validation"),
    Case("infer_in_place_task", "asked a causal decoder to infer an encoder-only task",
         ["infer", "--workdir={wd}", "--task", "pydocs_bert_mlm"], trained=True,
         says="in place"),
    Case("infer_no_checkpoints", "ran infer on a workdir without checkpoints",
         ["infer", "--workdir={wd}", "--task", "pydocs_full_lm"], _no_checkpoints,
         trained=True, says="checkpoint"),
    Case("export_no_hf_twin", "exported a run with T5's relative positions and ungated MLP",
         ["export", "--workdir={wd}", "--out", "{tmp}/hf"], _no_hf_twin, trained=True,
         says="ModelConfig.position_embedding='relative'"),
    Case("export_no_checkpoints", "exported a workdir without checkpoints",
         ["export", "--workdir={wd}", "--out", "{tmp}/hf"], _no_checkpoints_hf, trained=True,
         says="checkpoint"),
    Case("import_unsupported_model_type", "imported a Hugging Face model of another kind",
         ["import", "--format", "hf", "--model", "{tmp}/gpt2", "--out", "{tmp}/wd2"],
         _hf_folder("gpt2", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}),
         says="'gpt2'"),
    Case("import_vocabulary_mismatch", "imported a Llama whose tokenizer has Llama's ids",
         ["import", "--format", "hf", "--model", "{tmp}/llama", "--out", "{tmp}/wd2"],
         _hf_folder("llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                    llama_ids=True), says="pad=0 and eos=1"),
    Case("eval_task_unknown", "scored a run on a task that is not registered",
         ["eval", "--workdir={wd}", "--task", "pydocs_sumary"], trained=True,
         says="pydocs_summary"),
    Case("eval_task_no_metrics", "scored a run on a task without metrics",
         ["eval", "--workdir={wd}", "--task", "pydocs_full_lm"], trained=True,
         says="metric_fns"),
    Case("eval_task_data_absent", "scored a run on a T5 task whose TFDS data is absent",
         ["eval", "--workdir={wd}", "--task", "glue_rte_v002"], trained=True,
         says="tfds build glue/rte"),
    Case("finetune_no_task", "fine-tuned without a task", ["finetune", "--init_from={wd}"],
         trained=True, says="--task"),
    Case("finetune_unknown_task", "fine-tuned on a task that is not registered",
         ["finetune", "--init_from={wd}", "--task", "pydocs_pakage"], trained=True,
         says="pydocs_package"),
    Case("finetune_arch_cannot_take_task", "fine-tuned an encoder-only model on text-to-text pairs",
         ["finetune", "--init_from={wd}", "--task", "pydocs_package",
          "--gin.Experiment.arch='encoder_only'", "--workdir={tmp}/ft"], trained=True,
         says="task 'pydocs_package' does not support architecture 'encoder_only'"),
    Case("finetune_no_source", "fine-tuned from a folder without checkpoints",
         ["finetune", "--init_from={tmp}", "--task", "pydocs_package"], says="checkpoint"),
    Case("finetune_data_absent", "fine-tuned on a T5 task whose TFDS data is absent",
         ["finetune", "--init_from={wd}", "--task", "glue_rte_v002", "--workdir={tmp}/ft"],
         trained=True, says="tfds build glue/rte"),
    Case("inspect_unknown_objective", "inspected an objective that does not exist",
         ["inspect", "nope"], says="nope"),
    Case("inspect_nothing", "ran inspect with neither an objective nor a task",
         ["inspect"], says="--task"),
    # a registered seqio task or mixture (Experiment.task)
    Case("task_not_registered", "named a task that is not registered (a typo)",
         [*TRAIN, "--gin.Experiment.task=pydocs_span_corruptoin"], says="pydocs_span_corruption"),
    Case("task_features_no_layout", "named a task whose features no layout takes",
         [*TRAIN, "--module=bad_tasks", "--gin.Experiment.task=three_features"], _tasks_module,
         says="extra"),
    Case("task_mixture_vocabularies", "mixed a byte-vocabulary task with a built-in task",
         [*TRAIN, "--module=bad_tasks", "--gin.Experiment.task=bytes_and_spans"], _tasks_module,
         says="vocabulary"),
    Case("task_examples_too_long", "gave a task lengths shorter than its examples",
         [*TRAIN, "--module=bad_tasks", "--gin.Experiment.task=long_pairs",
          "--gin.Experiment.task_lengths={'inputs': 8, 'targets': 4}"], _tasks_module,
         says="long_examples"),
    Case("task_lengths_without_task", "bound task lengths for an objective's run",
         [*TRAIN, "--gin.Experiment.task_lengths={'targets': 4}"], says="Experiment.task"),
    Case("task_long_examples_typo", "misspelt the rule for long examples",
         [*TRAIN, "--gin.Experiment.task=pydocs_full_lm", "--gin.Experiment.long_examples=cut"],
         says="trim"),
    Case("ablate_missing_grid", "named a grid file that does not exist",
         ["ablate", "experiments/wang2022/grids.gin", "--dry_run"], says="grids.gin"),
    Case("bench_unknown_objective", "benchmarked an objective that does not exist",
         ["bench", "data", "--objective", "nope"], says="nope"),
    # launchers
    Case("launch_dry_run_after_dashes", "put --dry_run after `--`",
         [*SLURM, *LAUNCH_TRAIN, "--dry_run"], says="--dry_run"),
    Case("launch_tpu_without_zone", "launched on a TPU without its zone",
         ["launch", "tpu", "--tpu", "v4-64", *LAUNCH_TRAIN], says="--zone"),
    Case("launch_newline_job_name", "put a newline in the job name",
         [*SLURM, "--job_name", "run\n#SBATCH --mem=0", *LAUNCH_TRAIN], says="--job_name"),
    Case("launch_nodes_0", "asked for 0 nodes",
         ["launch", "slurm", "--nodes", "0", *LAUNCH_TRAIN], says="--nodes"),
    Case("launch_no_sbatch", "submitted from a machine without sbatch",
         [*SLURM, *LAUNCH_TRAIN], _no_sbatch, says="sbatch"),
    Case("launch_bad_time", "gave a time limit SLURM does not read",
         [*SLURM, "--time", "25h", *LAUNCH_TRAIN], says="--time"),
]
assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


# ------------------------------------------------------------------ running a case


def _fill(case: Case, ctx: Ctx) -> list[str]:
  out = []
  for arg in case.argv:
    if arg == "{run}":
      out += RUN_FLAGS
    else:
      out.append(arg.replace("{tmp}", str(ctx.tmp)).replace("{wd}", str(ctx.wd)))
  return out


class _Compiles:
  """Counts XLA compilations (and compilation-cache lookups) while it is listening."""

  def __init__(self):
    self.count, self.on = 0, False
    jax.monitoring.register_event_listener(self._event)
    jax.monitoring.register_event_duration_secs_listener(self._duration)

  def _event(self, event: str, **_) -> None:
    if self.on and event == "/jax/compilation_cache/compile_requests_use_cache":
      self.count += 1

  def _duration(self, event: str, duration: float, **_) -> None:
    del duration
    if self.on and event == "/jax/core/compile/backend_compile_duration":
      self.count += 1


_COMPILES = None


@dataclasses.dataclass
class Outcome:
  code: int
  out: str
  err: str
  compiles: int      # XLA compilations while it ran
  tmp: str           # the case's folder
  changed: list      # files under it written, changed or removed while it ran


def _tree(root: pathlib.Path) -> dict[str, str]:
  """relative path -> sha256 of every file under root (folders alone do not count)."""
  import test_reliability  # pylint: disable=g-import-not-at-top  (a sibling test module)
  return test_reliability._tree_hash(root)  # pylint: disable=protected-access


def run_case(case: Case, tmp: pathlib.Path, monkeypatch, capsys, trained_source) -> Outcome:
  """Runs `case` in `tmp` (a fresh folder); trained_source() gives the trained workdir."""
  global _COMPILES
  if _COMPILES is None:
    _COMPILES = _Compiles()
  ctx = Ctx(tmp, monkeypatch)
  if case.trained:
    shutil.copytree(trained_source(), ctx.wd)
  try:
    if case.setup is not None:
      case.setup(ctx)
    argv = _fill(case, ctx)
    before = _tree(tmp)
    capsys.readouterr()
    _COMPILES.on, _COMPILES.count = True, 0
    try:
      code = main.run(argv)
    except SystemExit as e:  # argparse's usage errors exit; `objectax` exits with the code
      code = e.code
    finally:
      _COMPILES.on = False
    captured = capsys.readouterr()
    after = _tree(tmp)
  finally:
    for cleanup in reversed(ctx.cleanups):
      cleanup()
  changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
  return Outcome(code, captured.out, captured.err, _COMPILES.count, str(tmp), changed)


_REPLACEMENTS = [
    (re.compile(r"\bpid \d+"), "pid <pid>"),
    (re.compile(r"\bon host [^,\s]+"), "on host <host>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?"), "<time>"),
]


def normalise(text: str, tmp: str) -> str:
  """`text` with this machine's parts replaced: the case's folder, the repository, the
  corpus folder, the process id, the host name and times."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  for path, name in ((tmp, "<tmp>"), (os.environ.get("TFDS_DATA_DIR", ""), "<tfds>"),
                     (os.path.dirname(configure.GIN_DIR), "<repo>"), (str(ROOT), "<repo>")):
    if path:
      text = text.replace(os.path.realpath(path), name).replace(path, name)
  for pattern, name in _REPLACEMENTS:
    text = pattern.sub(name, text)
  return text


def the_line(outcome: Outcome) -> str:
  lines = [l for l in outcome.err.splitlines() if l.strip()]
  return lines[0] if len(lines) == 1 else " ".join(lines)


def _trained(request) -> Callable[[], pathlib.Path]:
  """The session's trained quickstart workdir (tests/conftest.py), trained on first use;
  run_case copies it into the case's folder, as the `trained_quickstart` fixture does."""
  return lambda: request.getfixturevalue("_trained_quickstart")


# Outcomes of this session's cases (None: skipped), for the table.
_OUTCOMES: dict[str, Optional[Outcome]] = {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_stops_in_one_line_before_compiling(case, tmp_path, monkeypatch, capsys,
                                                        request, tfds_data_dir):
  del tfds_data_dir  # the corpus and vocabulary the data cases read
  try:
    outcome = run_case(case, tmp_path, monkeypatch, capsys, _trained(request))
  except pytest.skip.Exception:
    _OUTCOMES[case.id] = None
    raise
  _OUTCOMES[case.id] = outcome
  lines = [l for l in outcome.err.splitlines() if l.strip()]
  assert "Traceback" not in outcome.out + outcome.err, outcome.err[-3000:]
  assert outcome.code == case.code, (outcome.code, outcome.err[-3000:])
  assert len(lines) == 1, lines
  assert lines[0].startswith(("objectax: error: ", "objectax: interrupted")), lines[0]
  assert outcome.compiles == 0, f"{outcome.compiles} compilation(s) before: {lines[0]}"
  assert not outcome.changed, f"written before the refusal: {outcome.changed}"


def test_every_line_names_its_setting_not_the_generic_fallback():
  """Each case's line says which setting is wrong (checked on the lines that ran)."""
  missing = [c.id for c in CASES if c.id not in _OUTCOMES]
  if missing:
    pytest.skip(f"runs after the cases: {len(missing)} of them did not run in this session")
  for case in CASES:
    outcome = _OUTCOMES[case.id]
    if outcome is None:
      continue
    line = the_line(outcome)
    assert "bad gin config:" not in line, (case.id, line)
    assert case.says and case.says in line, (case.id, case.says, line)


# ------------------------------------------------------------------ the table


def _code(text: str) -> str:
  """`text` as an inline code span in a table cell."""
  text = text.replace("|", "\\|")
  return f"`` {text} ``" if "`" in text else f"`{text}`"


_SHELL_SPECIAL = set(" \t\n'\"()$;&|*?[]`\\<>")


def _shell_word(arg: str) -> str:
  """`arg` as a POSIX shell (bash, for a newline) would need it typed."""
  if not set(arg) & _SHELL_SPECIAL:
    return arg
  if "\n" in arg:
    return "$'" + arg.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
  if "'" in arg and not set(arg) & set('"$`\\'):
    return f'"{arg}"'
  return "'" + arg.replace("'", "'\\''") + "'"


def _command(case: Case) -> str:
  """The case's command line as the user typed it; <tmp> is the case's folder and
  <run flags> the trained run's own flags."""
  words = []
  for arg in case.argv:
    if arg == "{run}":
      words.append("<run flags>")
    else:
      marked = arg.replace("{tmp}", "\0").replace("{wd}", "\0/wd")
      words.append(_shell_word(marked).replace("\0", "<tmp>"))
  return "objectax " + " ".join(words)


def _what(case: Case) -> str:
  return f"{case.what}: {_code(_command(case))}"


def render_rows(lines: dict[str, str]) -> list[str]:
  rows = ["| # | what the user did | exit | the one line objectax prints |",
          "|---|---|---|---|"]
  for i, case in enumerate(CASES, start=1):
    rows.append(f"| {i} | {_what(case)} | {case.code} | {_code(lines[case.id])} |")
  return rows


def _doc_block(text: str) -> list[str]:
  start, stop = text.index(BEGIN), text.index(END)
  return text[start + len(BEGIN):stop].strip("\n").splitlines()


def _doc_lines(block: list[str]) -> dict[str, str]:
  """The printed line of each case in the doc's table, by case id (a row is a case's when
  its "what the user did" cell is)."""
  by_what = {_what(case): case.id for case in CASES}
  out = {}
  for row in block[2:]:
    cells = row.strip().strip("|").split(" | ")
    if len(cells) < 4 or " | ".join(cells[1:-2]) not in by_what:
      continue
    cell = cells[-1].strip()
    cell = cell[3:-3] if cell.startswith("`` ") else cell[1:-1]
    out[by_what[" | ".join(cells[1:-2])]] = cell.replace("\\|", "|")
  return out


def test_the_table_in_docs_bad_inputs_md_is_what_objectax_prints(tmp_path_factory, monkeypatch,
                                                                 capsys, request, tfds_data_dir):
  del tfds_data_dir  # the corpus and vocabulary the data cases read
  text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
  documented = _doc_lines(_doc_block(text)) if BEGIN in text else {}
  lines = {}
  for case in CASES:
    if case.id not in _OUTCOMES:  # not run in this session (e.g. -k): run it now
      tmp = tmp_path_factory.mktemp(case.id)
      try:
        _OUTCOMES[case.id] = run_case(case, tmp, monkeypatch, capsys, _trained(request))
      except pytest.skip.Exception:
        _OUTCOMES[case.id] = None
    outcome = _OUTCOMES[case.id]
    if outcome is None:  # cannot run here (a root user writes read-only folders): keep the doc's
      lines[case.id] = documented.get(case.id, "(not run on the machine that wrote this table)")
    else:
      lines[case.id] = normalise(the_line(outcome), outcome.tmp)
  rows = render_rows(lines)
  if os.environ.get("OBJECTAX_WRITE_DOCS") == "1":
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + "\n".join(rows) + "\n" + text[stop:], encoding="utf-8")
    return
  assert BEGIN in text and END in text, f"{DOC} has no {BEGIN} ... {END} block"
  assert _doc_block(text) == rows, (
      "docs/bad_inputs.md is out of date; rewrite its table with "
      "OBJECTAX_WRITE_DOCS=1 pytest tests/launch/test_bad_inputs.py")
