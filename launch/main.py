"""The `objectax` command line. Parses flags only; the work happens in the modules it calls.

  objectax train [--gin_file=FILE ...] [--gin.Configurable.param=VALUE ...] [--workdir=DIR]
  objectax finetune --init_from=DIR --task=TASK [gin flags] [--workdir=DIR]
  objectax objectives
  objectax inspect OBJECTIVE [--text TEXT] [--seed N] [gin flags]
  objectax inspect --task TASK [--seed N] [gin flags]
  objectax bench data [--budget N] [--seconds S] [--objective NAME ...]
  objectax bench input [gin flags] [--steps N] [--padding_table [--json FILE]]
  objectax bench model [gin flags] [--steps N] [--batch_size B] [--json FILE]
  objectax bench peer [gin flags] [--steps N] [--rounds R] [--batch_size B] [--maxtext_venv DIR]
  objectax info [--devices N] [gin flags]
  objectax plan [--devices N] [--device_memory_gib G] [gin flags]
  objectax launch {tpu,slurm} [launcher flags] [--dry_run] -- [train flags]
    (train exits 75 after SIGTERM/Ctrl-C saved a checkpoint: rerun it to resume)
  objectax eval --workdir=DIR [--step N] [--documents N] [--zeroshot TASK ...] [--no_zeroshot]
  objectax eval --workdir=DIR --task TASK [--task ...] [--split S] [--max_examples N]
  objectax generate --workdir=DIR [--prompt TEXT ...] [--infill TEXT ...] [--temperature T] [--top_k K] [--top_p P] [--beams N]
  objectax infer --workdir=DIR --task=TASK [--split S] [--max_examples N] [strategy flags]
  objectax export --workdir=DIR [--step N] --out OUT [--format hf]
  objectax import --format hf --model HFDIR --out WORKDIR [gin flags]
  objectax ablate GRID.gin [--size S] [--seeds N] [--out DIR] [--dry_run] [--print_commands]
  objectax harness --model objectax --model_args workdir=DIR[,step=N,batch_size=B] --tasks T [lm-eval flags]
  objectax list
  objectax vocab train --out=FILE [gin flags] [--max_documents N]
  (any command) --module=NAME    import your own module first (tasks, objectives, configs)

`objectax train` with no flags runs gin/run/quickstart.gin (causal decoder, full LM, tiny
size, the embedded corpus) into ./workdir/<experiment name>.
"""
from __future__ import annotations

import argparse
import os
import sys

QUICKSTART = "run/quickstart.gin"

_EPILOG = """\
gin flags (t5x style):
  --gin_file=FILE            a gin file, as a path or relative to the installed gin/ folder
                             (arch/, objective/, size/, mesh/, run/, experiments/); repeatable
  --gin.Configurable.param=VALUE
                             one binding, applied after the files; repeatable. A bare word is a
                             string: --gin.Experiment.objective=span_corruption

  --module=NAME              import your module first (its seqio tasks, objectives, gin
                             configurables; any command; repeatable). Installed packages with
                             an `objectax.plugins` entry point are imported without it

examples:
  objectax train                                            # the quickstart
  objectax train --gin.Experiment.objective=span_corruption # same run, T5 span corruption
  objectax train --gin_file=run/quickstart.gin --gin.TrainConfig.steps=50 --workdir=/tmp/wd
"""


def _add_strategy_flags(parser) -> None:
  """The decoding strategy's flags, shared by generate and infer."""
  parser.add_argument("--temperature", type=float, default=0.0,
                      help="0 = greedy (default); > 0 samples")
  parser.add_argument("--top_k", type=int, default=0,
                      help="sample among the k likeliest (0 = all)")
  parser.add_argument("--top_p", type=float, default=1.0,
                      help="sample among the likeliest tokens of probability p (1 = all)")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
  parser.add_argument("--beams", type=int, default=1,
                      help="beam search with this many beams (default 1: greedy or sampling)")
  parser.add_argument("--alpha", type=float, default=0.6,
                      help="beam search length penalty ((5 + n) / 6) ** alpha (default 0.6)")


def _add_run_flags(parser) -> None:
  """--workdir and --step: the training run and checkpoint a command reads."""
  parser.add_argument("--workdir", default=None, help="the workdir of an `objectax train` run")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step (default: latest)")


def _strategy(args):
  from objectax.models import decoding
  return decoding.Strategy(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           seed=args.seed, beams=args.beams, alpha=args.alpha)


def _split_gin_flags(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
  """Pulls --gin_file and --gin.X=Y out of argv (argparse can't declare dynamic flags)."""
  files, bindings, rest = [], [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    # The value of a flag given as two words; never the next flag (a forgotten value
    # would swallow it and fail far from the mistake).
    following = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
    if arg.startswith("--gin_file"):
      files.append(arg.split("=", 1)[1] if "=" in arg else following or "")
      i += "=" not in arg and following is not None
    elif arg.startswith("--gin."):
      body = arg[len("--gin."):]
      # No value at all: kept without '=', which configure refuses in one line.
      bindings.append(body if "=" in body or following is None else f"{body}={following}")
      i += "=" not in body and following is not None
    else:
      rest.append(arg)
    i += 1
  return files, bindings, rest


class _OneLineParser(argparse.ArgumentParser):
  """A usage mistake (unknown flag, bad value, missing argument) in one line; argparse's
  own error prints the usage first."""

  def error(self, message: str):
    self.exit(2, f"objectax: error: {' '.join(message.split())}; see {self.prog} --help\n")


def _split_modules(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls --module NAME / --module=NAME (any command, any position) out of argv."""
  modules, rest = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--module" and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
      modules.append(argv[i + 1])
      i += 1
    elif arg.startswith("--module="):
      modules.append(arg.split("=", 1)[1])
    else:
      rest.append(arg)
    i += 1
  return modules, rest


def _parser() -> argparse.ArgumentParser:
  parser = _OneLineParser(
      prog="objectax",
      description="Compare language-model pretraining objectives across architectures "
                  "(JAX/Flax/SeqIO). Each run is a point on the grid (architecture, "
                  "objective, size, corpus), chosen with gin.",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  train = sub.add_parser(
      "train", help="train (or resume) the experiment the gin config describes",
      description="Train, or resume from the workdir's latest checkpoint, the experiment the gin "
                  f"config describes. With no gin flags: {QUICKSTART}.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  train.add_argument("--workdir", default=None,
                     help="where checkpoints, metrics.jsonl, tensorboard/ and config.gin go "
                          "(default: TrainConfig.workdir, else ./workdir/<experiment name>)")
  train.add_argument("--quiet", action="store_true", help="no progress output")
  fin = sub.add_parser(
      "finetune", help="fine-tune a pretrained run on a text-to-text task, scored as it goes",
      description="Train a new run from DIR's parameters on TASK with gin/adapt/finetune.gin "
                  "(T5's recipe: constant learning rate 1e-3, dropout 0.1), DIR's own "
                  "architecture, size, model and vocabulary settings, and the task's metrics "
                  "every eval_every steps (TrainConfig.eval_tasks). Gin flags come last and "
                  "change any of it.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  fin.add_argument("--init_from", default=None, help="the workdir of the pretrained run")
  fin.add_argument("--task", default=None, help="a registered text-to-text task or mixture")
  fin.add_argument("--workdir", default=None,
                   help="default: ./workdir/<arch>_<task>_<size>_finetune")
  fin.add_argument("--quiet", action="store_true", help="no progress output")
  info = sub.add_parser(
      "info", help="parameters, training FLOPs per token and bytes per device of the "
                   "configured model on its mesh, without needing those devices",
      description="Print the configured model's parameter count, training FLOPs per token, "
                  "and per-device bytes of parameters and optimizer state on the configured "
                  "mesh (abstract evaluation: no devices, no data). Gin flags as for train.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  info.add_argument("--devices", type=int, default=None,
                    help="number of devices the mesh spans (default: this host's)")
  plan = sub.add_parser(
      "plan", help="each parameter's sharding and the per-device bytes of parameters, "
                   "optimizer state and activations on the configured mesh, without the devices",
      description="Print every array of the train state with its logical and mesh axes and "
                  "the bytes one device holds, then per-device totals: parameters, optimizer "
                  "state, an activation estimate, and their sum (abstract evaluation: no "
                  "devices, no data). Gin flags as for train.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  plan.add_argument("--devices", type=int, default=None,
                    help="number of devices the mesh spans (default: this host's)")
  plan.add_argument("--device_memory_gib", type=float, default=None,
                    help="memory of one device (e.g. 32 for TPU v4, 80 for H100): says "
                         "whether the total fits")
  sub.add_parser("launch", help="run on every worker of a TPU pod slice or every task of a "
                                "SLURM job (`objectax launch {tpu,slurm} --help`)", add_help=False)
  sub.add_parser("harness", help="the EleutherAI lm-evaluation-harness with `--model objectax` "
                                 "registered (its own flags: `objectax harness --help`)",
                 add_help=False)
  voc = sub.add_parser(
      "vocab", help="train a SentencePiece vocabulary on the configured corpus",
      description="Train a SentencePiece unigram model on the train split of "
                  "Experiment.corpus (same recipe as the default vocabulary: T5 ids, the UL2 "
                  "mode tokens, byte fallback) and write it to --out. Gin flags as for train; "
                  "VocabConfig.vocab_size sets its size.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  voc.add_argument("action", choices=["train"])
  voc.add_argument("--out", default="", help="where to write the model (required)")
  voc.add_argument("--max_documents", type=int, default=0,
                   help="train on at most this many documents (default 0: all)")
  sub.add_parser("list", help="list the registered architectures, objectives, corpora, sizes "
                              "and gin files",
                 description="List every name a gin config may use.")
  sub.add_parser("objectives", help="list every objective with a one-line description and the "
                                    "architectures it supports",
                 description="List every objective, its description and its architectures.")
  insp = sub.add_parser(
      "inspect", help="show one real example of an objective as text, loss positions marked",
      description="Show one example of OBJECTIVE as text, through the same preprocessor and "
                  "feature converter as training: inputs and targets with sentinels and mode "
                  "tokens visible, and the model stream with its loss-weighted stretches in ⟦ ⟧. "
                  "Gin flags apply as for train (e.g. --gin.Experiment.arch=prefix_decoder, "
                  "--gin.SpanCorruptionConfig.noise_density=0.5).",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  bench = sub.add_parser("bench", help="benchmarks: `objectax bench data` times every objective's "
                                       "preprocessor",
                         description="Benchmarks that print figures.")
  bench.add_argument("what", choices=["data", "input", "model", "decode", "peer"], help="data: source tokens/s and "
                     "examples/s of each objective's preprocessor on the embedded corpus; "
                     "input: the configured experiment's input pipeline (batches/s, tokens/s) "
                     "and the fraction of a short training run's step time spent waiting "
                     "for data (gin flags as for train); model: the training step of the "
                     "configured model on synthetic batches (compile time, step time, tokens/s, "
                     "MFU, peak memory), without TensorFlow or seqio; decode: cached decoding "
                     "against full recomputation on synthetic prompts (prefill time, tokens/s, "
                     "their ratio), without TensorFlow or seqio; peer: the causal decoder's "
                     "training step against MaxText's on the same shape, alternating rounds, "
                     "with the ratio of their median step times; --steps timed steps a side "
                     "per round, default 5 (MaxText in its own Python 3.12 venv, made once)")
  bench.add_argument("--prompt_length", type=int, default=64,
                     help="decode: tokens per synthetic prompt (default 64)")
  bench.add_argument("--new_tokens", type=int, default=64,
                     help="decode: tokens generated per prompt (default 64)")
  bench.add_argument("--steps", type=int, default=None,
                     help="input: training steps of the timed run (default 30); model: timed "
                          "steps (default 20)")
  bench.add_argument("--warmup", type=int, default=3, help="model: untimed steps after "
                     "compilation (default 3)")
  bench.add_argument("--batch_size", type=int, default=0, help="model: global batch "
                     "(default TrainConfig.batch_size)")
  bench.add_argument("--inputs_length", type=int, default=0, help="model, encoder_decoder: "
                     "encoder tokens of Experiment.sequence_length (default half)")
  bench.add_argument("--vocab_size", type=int, default=0, help="model: vocabulary rows "
                     "when ModelConfig.vocab_size is 0 (default 8192, the default vocabulary's)")
  bench.add_argument("--json", default=None, help="model, input --padding_table: also write "
                     "the figures to this file")
  bench.add_argument("--padding_table", action="store_true",
                     help="input: instead, the padding of every (architecture, objective) pair "
                          "that can run, at Wang et al.'s budget (tiny, pydocs, 626 tokens, "
                          "batch 8): 20 training batches each, no model; gin flags apply on "
                          "top (e.g. --gin.Experiment.pack=False)")
  bench.add_argument("--budget", type=int, default=626,
                     help="per-example token budget (default 626, Wang et al. 2022)")
  bench.add_argument("--seconds", type=float, default=3.0, help="time per objective")
  bench.add_argument("--rounds", type=int, default=2,
                     help="peer: rounds of (Objectax, MaxText) runs (default 2)")
  bench.add_argument("--maxtext_venv", default="", help="peer: MaxText's virtualenv, made on "
                     "first use (default ~/.cache/objectax/maxtext_venv)")
  bench.add_argument("--maxtext_python", default="", help="peer: the Python >= 3.12 to make "
                     "that venv with (default: python3.12 on PATH, else pyenv's)")
  bench.add_argument("--objective", action="append", default=None,
                     help="only this objective (repeatable); default: all")
  ev = sub.add_parser(
      "eval", help="score a run's checkpoint on the common yardstick (bits per byte)",
      description="Restore DIR's latest (or --step) checkpoint with DIR/config.gin and score it "
                  "on the held-out text: continuation after 25/50/75% of each sequence, "
                  "left-to-right loss, span infilling (0.15/3, 0.5/32); prints a table and "
                  "writes DIR/eval/yardstick.json. Then zero-shot rank classification "
                  "(accuracy, length-normalized accuracy): DIR/eval/zeroshot.json.")
  _add_run_flags(ev)
  ev.add_argument("--documents", type=int, default=64,
                  help="held-out documents of the validation split (default 64)")
  ev.add_argument("--zeroshot", action="append", default=None, metavar="TASK",
                  help="zero-shot rank-classification task (repeatable; default: every "
                       "built-in task); writes DIR/eval/zeroshot.json")
  ev.add_argument("--no_zeroshot", action="store_true", help="skip the zero-shot tasks")
  ev.add_argument("--task", action="append", default=None, metavar="TASK",
                  help="instead of the yardstick: score the run on a text-to-text seqio task "
                       "(or mixture) with metric_fns, by generation through seqio's "
                       "Evaluator (repeatable); writes DIR/eval/tasks_<step>.json")
  ev.add_argument("--split", default="validation", help="--task: the split (default validation)")
  ev.add_argument("--max_examples", type=int, default=None,
                  help="--task: the first N examples of each task (default: all)")
  gen = sub.add_parser(
      "generate", help="continue prompts or fill <X> blanks with a run's checkpoint",
      description="Restore DIR's latest (or --step) checkpoint and decode with its cache: each "
                  "--prompt (or line of --prompts_file, or of stdin) is continued; each "
                  "--infill text has its <X>, <Y>, ... (or <extra_id_N>) markers filled, for "
                  "a model trained with sentinels. Greedy unless --temperature > 0.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_run_flags(gen)
  gen.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
  gen.add_argument("--prompts_file", default=None, help="a file of prompts, one per line")
  gen.add_argument("--infill", action="append", default=[],
                   help="a text with <X>, <Y>, ... blanks to fill (repeatable)")
  gen.add_argument("--max_new_tokens", type=int, default=64,
                   help="tokens to generate at most (default 64; capped at the run's length)")
  _add_strategy_flags(gen)
  gen.add_argument("--mode", default="", help="UL2 runs: NLU, NLG or S2S (the mode token)")
  inf = sub.add_parser(
      "infer", help="write a run's predictions for every example of a seqio task",
      description="Restore DIR's latest (or --step) checkpoint and decode every example of "
                  "--split of TASK (a registered seqio task or mixture: a built-in one, or "
                  "one of your module's) with the run's own layout; writes "
                  "DIR/infer/<task>_<split>_<step>.jsonl with index, inputs, targets and "
                  "prediction as text (a mixture: one file per task). A task with targets "
                  "only is continued from the first half of each example.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_run_flags(inf)
  inf.add_argument("--task", default=None, help="a registered seqio task or mixture")
  inf.add_argument("--split", default="validation", help="the split (default validation)")
  inf.add_argument("--max_examples", type=int, default=None,
                   help="the first N examples only (default: all)")
  inf.add_argument("--batch_size", type=int, default=32,
                   help="examples decoded together (default 32)")
  inf.add_argument("--max_new_tokens", type=int, default=None,
                   help="tokens to generate at most (default: the longest reference)")
  _add_strategy_flags(inf)
  exp = sub.add_parser(
      "export", help="write a run's checkpoint as a Hugging Face model folder",
      description="Restore DIR's latest (or --step) checkpoint and write OUT as a Hugging "
                  "Face folder that transformers loads with no custom code: config.json, "
                  "model.safetensors (float32), generation_config.json, the tokenizer "
                  "(the run's SentencePiece model) and a README.md model card. The causal "
                  "and prefix decoders become LlamaForCausalLM, the encoder-only model "
                  "EuroBertForMaskedLM, the encoder-decoder T5ForConditionalGeneration; "
                  "options with no twin there are refused. Needs the hf extra.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_run_flags(exp)
  exp.add_argument("--out", default=None, help="the folder to write (new or empty)")
  exp.add_argument("--format", default="hf", choices=["hf"],
                   help="hf: a Hugging Face transformers folder (default)")
  imp = sub.add_parser(
      "import", help="turn a local Hugging Face Llama or T5 folder into a workdir at step 0",
      description="Read HFDIR (config.json, model.safetensors or its shards, a SentencePiece "
                  "tokenizer with T5's ids: pad 0, EOS 1) and write WORKDIR: config.gin "
                  "and checkpoints/0, so `objectax generate`, `objectax eval` and "
                  "TrainConfig.init_from=WORKDIR use it like a trained run. Gin flags "
                  "change the run's other settings (e.g. Experiment.objective). Needs the "
                  "hf extra.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  imp.add_argument("--model", default=None, help="a local Hugging Face model folder")
  imp.add_argument("--out", default=None, help="the workdir to write (new or empty)")
  imp.add_argument("--format", default="hf", choices=["hf"],
                   help="hf: a Hugging Face transformers folder (default)")
  abl = sub.add_parser(
      "ablate", help="run a paper's grid (every cell x seed: train, then eval) and write "
                     "results.md, results.csv and plots",
      description="Run every (cell, seed) of GRID in sequence as `objectax train` then "
                  "`objectax eval` subprocesses into OUT/<cell>/seed_<k> (runs already trained "
                  "and evaluated are skipped), then write OUT/results.md, OUT/results.csv and "
                  "PNG plots: mean +- std over seeds, paired-bootstrap 95% intervals against the "
                  "reference cell, and the paper's published numbers beside ours.")
  abl.add_argument("grid", help="a grid file, e.g. gin/experiments/wang2022/grid.gin")
  abl.add_argument("--size", default="tiny", help="picks <cell>_<size>_<corpus>.gin (default tiny)")
  abl.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per cell (TrainConfig.seed)")
  abl.add_argument("--out", default=None, help="output folder (default "
                   "workdir/ablate/<experiment dir>_<grid>_<size>)")
  abl.add_argument("--dry_run", action="store_true",
                   help="list the cells, their tokens and each run's state; run nothing")
  abl.add_argument("--print_commands", action="store_true",
                   help="print one shell command per (cell, seed) instead of running (for a "
                        "cluster); rerun without it afterwards to write the report")
  insp.add_argument("objective", nargs="?", default=None,
                    help="an objective name (see `objectax objectives`)")
  insp.add_argument("--task", default=None,
                    help="instead of OBJECTIVE: a registered seqio task or mixture (one example "
                         "of each of its tasks), as Experiment.task")
  insp.add_argument("--text", default=None,
                    help="text to corrupt (repeated until it fills one example); default: "
                         "a document of the embedded corpus's validation split")
  insp.add_argument("--seed", type=int, default=0, help="seed of the example (default 0)")
  return parser


def _objectives() -> None:
  # pylint: disable=g-import-not-at-top
  from objectax.models import registry as arch_registry
  from objectax.objectives import registry as objective_registry
  names = objective_registry.OBJECTIVES.names()
  width = max(map(len, names))
  for name in names:
    obj = objective_registry.get(name)
    print(f"{name:<{width}}  {obj.description}  [{', '.join(arch_registry.supporting(obj))}]")


def _list() -> None:
  # pylint: disable=g-import-not-at-top
  from objectax.data import sources
  from objectax.launch import configure, sharding
  from objectax.models import registry as arch_registry
  from objectax.objectives import registry as objective_registry
  print("architectures:", ", ".join(arch_registry.ARCHITECTURES.names()))
  for name in objective_registry.OBJECTIVES.names():
    obj = objective_registry.get(name)
    runnable = arch_registry.supporting(obj)
    print(f"objective {name}: {obj.description} (architectures: {', '.join(runnable)})")
  print("corpora:", ", ".join(sources.CORPORA.names()))
  import seqio
  from objectax.data import tasks
  others = sorted((set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
                  - set(tasks.BUILTIN))
  print(f"seqio tasks and mixtures (Experiment.task): {len(tasks.BUILTIN)} built-in "
        "{corpus}_{objective} ones (e.g. pydocs_span_corruption, pydocs_ul2); others: "
        + (", ".join(others) or "none (a --module or plugin registers yours)"))
  print("sizes:", ", ".join(f[:-4] for f in configure.axis_choices("size")))
  print("sharding rule presets:", ", ".join(sharding.RULE_PRESETS.names()))
  for axis in ("arch", "objective", "size", "mesh", "run", "adapt", "experiments"):
    print(f"gin/{axis}/:", ", ".join(configure.axis_choices(axis)) or "-")


def _import_tensorflow_quietly() -> None:
  """TensorFlow's C++ runtime logs a screenful before its log level can apply (oneDNN, CUDA
  stubs); keep the user's terminal for Objectax's own output. Errors still surface: the
  Python exception is raised after stderr is restored."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass  # the model-only path (GPU hosts) runs without TensorFlow
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


# The commands that load torch (the hf extra) beside TensorFlow.
_TORCH_COMMANDS = ("export", "import", "harness")


def run(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["launch"]:  # its own parser: the train flags after `--` are passed through
    from objectax.launch import launchers  # pylint: disable=g-import-not-at-top
    return launchers.run(argv[1:])
  if argv[:1] and argv[0] in _TORCH_COMMANDS:
    from objectax.launch.interop import load_triton_before_tensorflow  # pylint: disable=g-import-not-at-top
    load_triton_before_tensorflow()
  if argv[:1] == ["harness"]:  # lm-eval's own command line, `--model objectax` registered
    _import_tensorflow_quietly()
    try:
      from objectax.launch.interop import lm_eval_adapter  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      print(f"objectax: error: objectax harness needs the hf extra (pip install -e '.[hf]'): "
            f"{e}", file=sys.stderr)
      return 2
    return lm_eval_adapter.main(argv[1:])
  modules, argv = _split_modules(argv)
  files, bindings, rest = _split_gin_flags(argv)
  parser = _parser()
  args = parser.parse_args(rest)
  if args.command is None:
    parser.print_help()
    return 2
  # pylint: disable=g-import-not-at-top
  from objectax.launch import plugins, preemption
  from objectax.models.registry import ConfigError
  if args.command == "bench" and args.what == "peer":  # model side only, as bench model
    from objectax.launch.tools import bench_peer
    try:
      plugins.load(modules)
      steps = bench_peer.DEFAULT_STEPS if args.steps is None else args.steps
      bench_peer.main(files, bindings, steps, args.rounds,
                      args.batch_size, args.vocab_size, args.maxtext_venv, args.maxtext_python)
    except ConfigError as e:
      print(f"objectax: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
      return 2
    return 0
  if args.command == "bench" and args.what in ("model", "decode"):  # GPU hosts: no TF/seqio
    from objectax.launch.tools import bench_decode, bench_model
    try:
      plugins.load(modules)
      if args.what == "decode":
        bench_decode.main(files, bindings, args.batch_size, args.prompt_length,
                          args.new_tokens, args.vocab_size)
      else:
        bench_model.main(files, bindings, args.steps or 20, args.warmup, args.batch_size,
                         args.inputs_length, args.vocab_size, args.json)
    except ConfigError as e:
      print(f"objectax: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
      return 2
    return 0
  _import_tensorflow_quietly()
  from objectax.launch import config, configure
  try:
    plugins.load(modules)  # installed plugins and --module: before any registry is read
    if args.command in ("list", "objectives"):
      if files or bindings:  # the modules gin files import register names too
        configure.parse(files, bindings)
      _list() if args.command == "list" else _objectives()  # pylint: disable=expression-not-assigned
      return 0
    if args.command == "bench" and args.what == "input":
      from objectax.launch.tools import bench_input
      if args.padding_table:
        bench_input.padding_table(files, bindings, json_path=args.json)
      else:
        bench_input.run(files or [QUICKSTART], bindings, steps=args.steps or 30)
      return 0
    if args.command == "bench":
      from objectax.launch.tools import bench_data
      if args.objective:
        from objectax.objectives import registry as objective_registry
        for name in args.objective:
          objective_registry.get(name)  # one-line error for a typo
      bench_data.run(args.budget, args.seconds, args.objective)
      return 0
    if args.command == "ablate":
      from objectax.launch.grid import ablate
      return ablate.main(args.grid, args.size, args.seeds, args.out, dry_run=args.dry_run,
                         print_commands=args.print_commands)
    if args.command == "generate":
      from objectax.launch.tools import generate
      generate.run(args.workdir, args.step, args.prompt, args.prompts_file, args.infill,
                   bindings, args.max_new_tokens, _strategy(args), args.mode)
      return 0
    if args.command == "infer":
      from objectax.launch.tools import infer
      infer.run(args.workdir, args.step, args.task, args.split, args.max_examples,
                args.batch_size, args.max_new_tokens, _strategy(args), bindings)
      return 0
    if args.command == "export":
      from objectax.launch.interop import hf
      hf.export(args.workdir, args.step, args.out, args.format, bindings)
      return 0
    if args.command == "import":
      from objectax.launch.interop import hf
      hf.import_hf(args.model, args.out, args.format, bindings, gin_files=files)
      return 0
    if args.command == "eval" and args.task:
      from objectax.launch.eval import downstream
      downstream.main(args.workdir, args.step, args.task, split=args.split,
                      max_examples=args.max_examples, bindings=bindings)
      return 0
    if args.command == "eval":
      from objectax.launch.eval import evaluate
      evaluate.run(args.workdir, args.step, args.documents, tuple(bindings),
                   zeroshot_names=args.zeroshot, no_zeroshot=args.no_zeroshot)
      return 0
    from objectax.launch import configure, train
    if args.command == "vocab":
      from objectax.launch.tools import vocab_train
      configure.parse(files or [QUICKSTART], bindings)
      vocab_train.run(args.out, args.max_documents)
      return 0
    if args.command == "info":
      from objectax.launch.tools import info as info_lib
      configure.parse(files or [QUICKSTART], bindings)
      print(info_lib.render(info_lib.compute(args.devices)))
      return 0
    if args.command == "plan":
      from objectax.launch.tools import info as info_lib
      from objectax.launch.tools import plan as plan_lib
      configure.parse(files or [QUICKSTART], bindings)
      print(plan_lib.render(info_lib.setup(args.devices), args.device_memory_gib))
      return 0
    if args.command == "inspect":
      from objectax.launch.tools import inspect_example
      chosen = ([f"Experiment.objective={args.objective!r}"] if args.objective else []) + (
          [f"Experiment.task={args.task!r}"] if args.task else [])
      configure.parse(files or [QUICKSTART], [*bindings, *chosen])
      if not chosen and not config.Experiment().task:  # a gin file may name the task
        raise ConfigError("objectax inspect needs an OBJECTIVE (see `objectax objectives`) or "
                          "--task=TASK (a registered seqio task or mixture)")
      print(inspect_example.inspect(inspect_example.resolve_config(), seed=args.seed,
                                    text=args.text))
      return 0
    if args.command == "finetune":
      from objectax.launch import finetune
      files, bindings = finetune.configuration(args.init_from, args.task, files, bindings)
    configure.parse(files or [QUICKSTART], bindings)
    summary = train.train(args.workdir, quiet=args.quiet)
  except ConfigError as e:
    print(f"objectax: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
    return 2
  except FloatingPointError as e:  # diverged: the message names the checkpoint kept
    print(f"objectax: error: {e}", file=sys.stderr)
    return 1
  except (KeyboardInterrupt, preemption.Interrupted) as e:  # a second Ctrl-C: no traceback
    print(f"objectax: interrupted ({str(e) or 'Ctrl-C'}); checkpoints already written are kept",
          file=sys.stderr)
    return 130
  if summary.get("stopped_by"):
    return preemption.EXIT_PREEMPTED
  return 0 if summary["final_step"] > 0 else 1


if __name__ == "__main__":
  sys.exit(run())
