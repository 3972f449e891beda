"""Start a run from another run's parameters: adaptation (Wang et al. 2022 sec. 5) and finetuning.

`TrainConfig.init_from` names a training workdir (or its checkpoints/<step> folder). A
fresh run whose own workdir has no checkpoint takes that run's parameters, and only its
parameters: the step restarts at 0, the optimizer state is new, the data stream is the new
run's. The new run may change the objective and the attention mask, as long as the
parameter tree it needs is in the checkpoint:

- LM adaptation (LM-A): ND:MLM -> CD:FLM, the same decoder with the causal mask and full LM;
- non-causal adaptation (NC-A): CD:FLM -> ND:MLM, the mask flipped to bidirectional over
  the inputs, span corruption;
- ED:MLM -> ED:PLM, and multitask finetuning of any of them.

Extra parameters in the checkpoint (an ELECTRA generator, MTP heads) are left behind; a
parameter the new model needs but the checkpoint lacks, or one of another shape, is an
error in one line, before any step runs. Orbax's partial restore reads only the
parameters, straight onto the new run's shardings.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from objectax.models.registry import ConfigError
from objectax.launch import checkpoints


def resolve_source(path: str, step: int = -1) -> tuple[str, int]:
  """(checkpoints directory, step) named by `path`: a workdir, its checkpoints/ folder, or
  one checkpoints/<step> folder. `step` -1 takes the latest."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.basename(path).isdigit() and os.path.isdir(path):
    directory, step = os.path.dirname(path), int(os.path.basename(path))
  elif os.path.isdir(os.path.join(path, "checkpoints")):
    directory = os.path.join(path, "checkpoints")
  else:
    directory = path
  steps = checkpoints.complete_steps(directory)
  if not steps:
    raise ConfigError(f"TrainConfig.init_from={path!r} holds no checkpoint; give the workdir "
                      "of a finished `objectax train` run")
  if step < 0:
    return directory, steps[-1]
  if step not in steps:
    raise ConfigError(f"TrainConfig.init_from_step={step} is not in {directory}; valid choices: "
                      f"{', '.join(map(str, steps))}")
  return directory, step


def check_vocabulary(path: str, step: int, fingerprint: str) -> None:
  """One line when the source run was trained with another vocabulary than this run's:
  its embedding rows would mean other pieces. Older checkpoints without the record pass."""
  directory, step = resolve_source(path, step)
  recorded = ((checkpoints.read_data(directory, step) or {}).get("model") or {}).get("vocabulary")
  if recorded and recorded != fingerprint:
    raise ConfigError(
        f"TrainConfig.init_from={path!r} was trained with the vocabulary {recorded}, this run "
        f"has {fingerprint}: fine-tune with the source run's vocabulary (its VocabConfig, or "
        "a task whose features use it)")


def _paths(tree: Any) -> dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


def restore_params(path: str, step: int, abstract_params: Any) -> tuple[Any, int, list[str]]:
  """(parameters of `abstract_params`'s structure and shardings, the step read, names of
  checkpoint parameters left behind), read from the run at `path`."""
  directory, step = resolve_source(path, step)
  with checkpoints.read_only(directory, f"TrainConfig.init_from: checkpoint step {step} in "
                             f"{directory}",
                             item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
    saved_params = _paths(_tree_of(manager.item_metadata(step)["state"])["params"])
    wanted = _paths(abstract_params)
    missing = [k for k in wanted if k not in saved_params]
    reshaped = [f"{k} {tuple(saved_params[k].shape)} -> {tuple(v.shape)}"
                for k, v in wanted.items() if k in saved_params
                and tuple(saved_params[k].shape) != tuple(v.shape)]
    if missing or reshaped:
      what = (f"lacks {len(missing)} parameter(s) the new model needs, e.g. {missing[0]}"
              if missing else f"has parameters of another shape, e.g. {reshaped[0]}")
      raise ConfigError(f"checkpoint step {step} in {directory} {what}; adaptation keeps the "
                        "architecture's parameters (same size, same stacks)")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item={"params": abstract_params},
            restore_args=jax.tree.map(
                lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype),
                {"params": abstract_params}),
            partial_restore=True)))
  left_behind = sorted(set(saved_params) - set(_paths(abstract_params)))
  return restored.state["params"], step, left_behind


def _tree_of(metadata: Any) -> Any:
  """The nested dict of a checkpoint item's metadata (orbax wraps it in newer versions)."""
  tree = getattr(metadata, "tree", metadata)
  return tree if isinstance(tree, dict) else dict(tree)
