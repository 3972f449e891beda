"""`objectax eval --workdir=DIR`: restore a run's checkpoint and score it on the yardstick.

Reads DIR/config.gin (the operative config the trainer wrote, parsed as `objectax train`
parses gin files; extra --gin.X=Y bindings apply on top, e.g. a TfdsConfig.data_dir valid
on this host), restores the latest checkpoint (or --step N) onto the run's mesh, runs the
evaluations of `yardstick.py` and prints a table. DIR/eval/yardstick.json holds the same
numbers for the grid runner:

  {"workdir", "experiment", "arch", "objective", "size", "corpus", "step",
   "sequence_length", "documents", "vocab_size", "uniform_bits_per_token",
   "settings": {...}, "evaluations": {name: {"bits_per_byte", "bits_per_token",
   "bits_per_target_token", "tokens_per_byte", "nats", "scored_tokens", "bytes",
   "target_nats", "target_tokens", "examples", "description", "skipped"}},
   "task_loss": {"task", "batches", "loss", "components": {name: loss}},
   "wall_seconds"}

`task_loss` is the loss training logs as eval_loss, on the run's own task (a user's seqio
task or mixture, or `{corpus}_{objective}`), with each mixture component's beside it.

Rates of a skipped evaluation are null. `uniform_bits_per_token` = log2(V) of the model's
logits, what a model with uniform output scores.

Then the zero-shot rank classification of `zeroshot.py` (default: every built-in task of
data/zeroshot_tasks.py; --zeroshot TASK chooses, --no_zeroshot skips) prints its own table
and writes DIR/eval/zeroshot.json: the same run identification, "settings", and
  "tasks": {name: {"accuracy", "accuracy_norm", "chance", "examples", "correct",
                   "correct_norm", "description"}}, "skipped": {name: reason}
Task names and the data of TFDS-backed tasks are checked before anything is restored.

The checkpoint is opened read-only: evaluating a run that is still training neither
deletes its in-progress temporaries nor prunes its steps. One process; the parameters of
a model-side objective's extra modules (ELECTRA's generator, MTP heads) are restored and
ignored, the architecture's own model scores. No mode token is prepended: a UL2 model is
scored as it reads unmarked text.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

import orbax.checkpoint as ocp
import seqio
import tensorflow as tf

from objectax.data import sources, zeroshot_tasks
from objectax.models.registry import ConfigError
from objectax.launch import builder, checkpoints, configure, input_pipeline, plugins, sharding
from objectax.launch import step as step_lib
from objectax.launch.eval import yardstick
from objectax.launch.eval import zeroshot


def _stderr(msg: str) -> None:
  print(f"objectax eval: {msg}", file=sys.stderr, flush=True)


def checkpoint_steps(workdir: str) -> list[int]:
  """The complete checkpoint steps under DIR/checkpoints, oldest first (may be empty)."""
  return checkpoints.complete_steps(os.path.join(workdir, "checkpoints"))


def _pick_step(workdir: str, step: Optional[int]) -> int:
  steps = checkpoint_steps(workdir)
  if not steps:
    raise ConfigError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; train first "
                      "(objectax train --workdir=DIR)")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise ConfigError(f"no checkpoint step {step} in {workdir}; valid choices: "
                      f"{', '.join(map(str, steps))}")
  return step


def open_run(workdir: str, step: Optional[int], bindings: Sequence[str] = ()):
  """(the run's resolved config, the checkpoint step chosen) of a training workdir: its
  recorded modules imported and its config.gin parsed (`bindings` on top); one-line
  errors for a folder no run wrote, or one without that checkpoint."""
  config_path = os.path.join(workdir, "config.gin")
  if not os.path.isfile(config_path):
    raise ConfigError(f"{workdir} is not a training workdir (no config.gin); pass the "
                      "--workdir of an `objectax train` run")
  chosen = _pick_step(workdir, step)
  plugins.load_recorded(workdir)  # the run's own modules (its tasks, objectives, configs)
  configure.parse([config_path], list(bindings))
  return builder.resolve(), chosen


def restore_params(workdir: str, step: int, abstract) -> Any:
  """The parameters of checkpoint `step` (the whole train state is read: a model-side
  objective's extra modules come along), on the shardings of `abstract`."""
  return _restore(workdir, step, abstract).params


def _restore(workdir: str, step: int, abstract) -> object:
  """The train state of `step`, on the shardings of `abstract`, read-only."""
  with checkpoints.read_only(os.path.join(workdir, "checkpoints"),
                             f"checkpoint step {step} in {workdir}",
                             item_names=("state", "data")) as manager:
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract))).state


def held_out(corpus: str, vocabulary: Any, num_documents: int, max_tokens: int,
             data: Optional[sources.DataConfig] = None) -> list[yardstick.Document]:
  """The first `num_documents` validation documents of `corpus` with >= 2 tokens.

  Tokenised exactly as training tokenises (rekey, then seqio.preprocessors.tokenize, i.e.
  the vocabulary's encode_tf; seqio's Python encode differs on a few documents), then
  truncated to `max_tokens`.
  """
  spec = sources.get_corpus(corpus)
  spec.prepare(data)
  ds = spec.make_source(data).get_dataset(split="validation", shuffle=False)
  ds = seqio.preprocessors.rekey(ds, key_map={"targets": spec.text_key})
  ds = seqio.preprocessors.tokenize(
      ds, {"targets": seqio.Feature(vocabulary, add_eos=False)}, copy_pretokenized=True)
  ds = ds.filter(lambda ex: tf.size(ex["targets"]) >= 2).take(num_documents)
  return [yardstick.make_document(vocabulary, ex["targets_pretokenized"].decode("utf-8"),
                                  ex["targets"], max_tokens) for ex in ds.as_numpy_iterator()]


def evaluate_workdir(workdir: str, *, step: Optional[int] = None, documents: int = 64,
                     bindings: tuple[str, ...] = (),
                     say: Callable[[str], None] = _stderr,
                     zeroshot_names: Optional[Sequence[str]] = None,
                     zeroshot_examples: int = 128, zeroshot_seed: int = 0) -> dict:
  """Scores DIR's checkpoint on the yardstick; writes and returns DIR/eval/yardstick.json
  (the returned dict also holds the printed "table"). Re-parses gin: the caller's bindings
  are replaced by DIR's config.

  Then the zero-shot tasks `zeroshot_names` (None: every built-in task; empty: none), with
  `zeroshot_examples` examples per built-in task drawn with `zeroshot_seed`; their report
  (DIR/eval/zeroshot.json, plus its "table") is the returned dict's "zeroshot" (absent
  when none ran).
  """
  t_start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  settings = yardstick.Settings(documents=documents)
  cfg, chosen = open_run(workdir, step, bindings)
  exp = cfg.exp
  zs_names = zeroshot.select(zeroshot_names)
  zeroshot_tasks.check_available(zs_names)  # absent TFDS data fails before any restore
  say(f"{exp.name} step {chosen} from {workdir}")

  ti = input_pipeline.build_task_input(cfg)
  vocabulary = ti.vocabulary
  # The checkpoint holds the whole train state of the model training built (a model-side
  # objective's extra modules included); restore it all, score with the architecture's own.
  parts = builder.build_for(cfg, ti)
  run = parts.on_mesh(sharding.make_mesh(cfg.mesh))
  params = _restore(workdir, chosen, run.abstract).params
  model_cfg = parts.model_cfg
  task_loss = _task_loss(run, params, ti, cfg.train)
  say(f"task {ti.task.name}: validation loss {task_loss['loss']:.4f} nats per target token "
      f"over {task_loss['batches']} batches" + "".join(
          f"; {n} {v:.4f}" for n, v in task_loss["components"].items()))

  # The held-out text is the run's own corpus, or, for a run on prompt/answer pairs
  # (multitask finetuning), the embedded text corpus its vocabulary was trained on.
  text_corpus = exp.corpus if sources.get_corpus(exp.corpus).kind == "text" else "pydocs"
  docs = held_out(text_corpus, vocabulary, documents, exp.sequence_length, cfg.data)
  fewer = f" (the split has no more of >= 2 tokens)" if len(docs) < documents else ""
  say(f"held-out text: the first {len(docs)} validation documents of {text_corpus}{fewer}, "
      f"truncated to {exp.sequence_length} tokens")
  dp = sharding.data_parallel_size(run.mesh.shape, cfg.mesh)
  settings = dataclasses.replace(settings, batch_size=-(-settings.batch_size // dp) * dp)
  model = parts.scoring_model()
  with run.activate():
    scores = yardstick.evaluate(model, params, exp.arch, docs,
                                vocab_size=vocabulary.vocab_size,
                                sequence_length=exp.sequence_length, settings=settings,
                                put=run.put, say=say)
  result = {
      "workdir": workdir, "experiment": exp.name, "arch": exp.arch, "objective": exp.objective,
      "size": exp.size, "corpus": exp.corpus, "text_corpus": text_corpus, "step": chosen,
      "sequence_length": exp.sequence_length, "documents": len(docs),
      "vocab_size": model_cfg.vocab_size,
      "uniform_bits_per_token": math.log2(model_cfg.vocab_size),
      "settings": dataclasses.asdict(settings),
      "evaluations": {s.name: s.as_dict() for s in scores},
      "task_loss": task_loss,
      "wall_seconds": time.perf_counter() - t_start,
  }
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  path = os.path.join(workdir, "eval", "yardstick.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  say(f"wrote {path} in {result['wall_seconds']:.0f} s")
  result["table"] = yardstick.render_table(scores)

  if zs_names:
    run_id = {k: result[k] for k in ("workdir", "experiment", "arch", "objective", "size",
                                     "corpus", "step", "sequence_length", "vocab_size")}
    request = zeroshot_tasks.Request(
        num_examples=zeroshot_examples, seed=zeroshot_seed,
        texts=lambda: zeroshot.validation_texts(text_corpus, data=cfg.data))
    with run.activate():
      result["zeroshot"] = zeroshot.run_report(
          model, params, exp.arch, vocabulary, zs_names, request,
          os.path.join(workdir, "eval", "zeroshot.json"), run_id,
          sequence_length=exp.sequence_length, batch_size=settings.batch_size, put=run.put,
          say=say)
  return result


def _task_loss(run, params, ti: input_pipeline.TaskInput, tc) -> dict:
  """The loss training reports as eval_loss: the run's own task's first `eval_batches`
  validation batches (and each mixture component's), with the restored parameters."""
  batches = input_pipeline.eval_batches(ti, tc.batch_size, tc.eval_batches,
                                        input_shards=tc.input_shards)
  with run.activate():
    sums = [run.eval_step(params, run.put(b)) for b in batches]
  loss, components = step_lib.eval_losses(sums, run.parts.components)
  return {"task": ti.task.name, "batches": len(batches), "loss": loss, "components": components}


def run(workdir: Optional[str], step: Optional[int], documents: int,
        bindings: tuple[str, ...] = (), zeroshot_names: Optional[Sequence[str]] = None,
        no_zeroshot: bool = False) -> None:
  """The command: evaluate, then print the header and the tables on stdout.

  `zeroshot_names`: --zeroshot TASK (repeatable; None: every built-in task);
  `no_zeroshot`: --no_zeroshot.
  """
  if not workdir:
    raise ConfigError("objectax eval needs --workdir=DIR (the workdir of a training run)")
  if no_zeroshot and zeroshot_names:
    raise ConfigError("objectax eval: pass either --zeroshot TASK or --no_zeroshot, not both")
  result = evaluate_workdir(workdir, step=step, documents=documents, bindings=bindings,
                            zeroshot_names=() if no_zeroshot else zeroshot_names)
  print(f"{result['experiment']} step {result['step']}: {result['documents']} held-out "
        f"sequences of <= {result['sequence_length']} tokens; uniform output = "
        f"{result['uniform_bits_per_token']:.4f} bits/token")
  print(result["table"])
  if "zeroshot" in result:
    print()
    print(result["zeroshot"]["table"])
