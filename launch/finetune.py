"""`objectax finetune --init_from=DIR --task=T`: fine-tune a pretrained run on a task.

The run is an ordinary `objectax train` run, configured as:

1. `gin/adapt/finetune.gin`: T5's fine-tuning recipe (constant learning rate 1e-3, dropout
   0.1, packing; 300 steps at this scale);
2. the source run's own architecture, size, sequence length, model settings and
   vocabulary, read from DIR/config.gin (so nothing about the model has to be repeated, and
   the parameters fit);
3. `Experiment.task=T`, `TrainConfig.init_from=DIR`, and `TrainConfig.eval_tasks=[T]` when
   the task has metrics (scored by generation every `eval_every` steps); without --task, a
   --gin_file recipe names the data (adapt/mtf.gin: multitask finetuning on `prompted`);
4. the user's own gin files and bindings, last, so any of the above can be changed.

The workdir is `workdir/<arch>_<task>_<size>_finetune` unless --workdir says otherwise; a
second call resumes it like any run.
"""
from __future__ import annotations

import os
from typing import Sequence

import gin
from gin import config_parser

from objectax.data import any_task
from objectax.launch import adapt
from objectax.models.registry import ConfigError

RECIPE = "adapt/finetune.gin"
# What a fine-tune takes from its source run: what the parameters were shaped by, and the
# vocabulary their embedding rows mean.
CARRIED_EXPERIMENT = ("arch", "size", "sequence_length")
CARRIED_CONFIGURABLES = ("ModelConfig", "VocabConfig")
NOT_CARRIED = {"ModelConfig.dropout_rate"}  # the recipe's own


def source_workdir(init_from: str, init_from_step: int = -1) -> str:
  """The workdir of the run `init_from` names (a workdir, or one of its checkpoints)."""
  directory, _ = adapt.resolve_source(init_from, init_from_step)
  workdir = os.path.dirname(directory) if os.path.basename(directory) == "checkpoints" \
      else directory
  if not os.path.isfile(os.path.join(workdir, "config.gin")):
    raise ConfigError(f"--init_from={init_from!r}: no config.gin beside its checkpoints; give "
                      "the workdir of an `objectax train` run")
  return workdir


def source_bindings(workdir: str) -> list[str]:
  """The bindings of DIR/config.gin that fix the model's shape and vocabulary."""
  with open(os.path.join(workdir, "config.gin"), encoding="utf-8") as f:
    text = f.read()
  out = []
  parser = config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True))
  for statement in parser:
    if not isinstance(statement, config_parser.BindingStatement) or statement.scope:
      continue
    name = f"{statement.selector}.{statement.arg_name}"
    carried = (statement.selector in CARRIED_CONFIGURABLES or
               (statement.selector == "Experiment" and statement.arg_name in CARRIED_EXPERIMENT))
    if carried and name not in NOT_CARRIED:
      out.append(f"{name}={statement.value!r}")
  return out


def configuration(init_from: str, task: str, files: Sequence[str],
                  bindings: Sequence[str]) -> tuple[list[str], list[str]]:
  """(gin files, bindings) of the fine-tuning run."""
  if not init_from:
    raise ConfigError("objectax finetune needs --init_from=DIR (the workdir of a pretrained run)")
  if not task and not files:
    raise ConfigError("objectax finetune needs --task=TASK (a registered text-to-text seqio "
                      "task or mixture; `objectax list` shows them), or a --gin_file recipe "
                      "that names its data (e.g. adapt/mtf.gin)")
  found = any_task.lookup(task, flag="--task") if task else None
  workdir = source_workdir(init_from)
  ours = [*source_bindings(workdir), f"TrainConfig.init_from={os.path.abspath(workdir)!r}"]
  if task:
    ours.append(f"Experiment.task={task!r}")
  if found is not None and any(t.metric_fns for t, _ in any_task.leaves(found)):
    ours.append(f"TrainConfig.eval_tasks=({task!r},)")
  return [RECIPE, *files], [*ours, *bindings]
