"""The objective contract and the registry of objectives.

An objective is a seqio preprocessor that runs after tokenization (the feature "targets"
holds the int32 ids of one document) and does everything else itself: concatenation,
chunking, corruption and EOS. It emits `{"targets"}` or `{"inputs", "targets"}` of exact,
known lengths; the architecture's feature converter lays them out (DESIGN.md). Objectives
never look at the architecture, but each declares which architectures it makes sense on.

    obj = registry.get("span_corruption")
    cfg = obj.config_cls()                                  # defaults, or gin-bound values
    lengths = obj.lengths(cfg, 626)                         # TaskLengths(568, 512, 114)
    prep = functools.partial(obj.preprocess, cfg=cfg)       # a seqio preprocessor
    seqio.Task(..., preprocessors=[rekey, tokenize, prep])  # with lengths.feature_lengths()
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from objectax.data.registry import ConfigError, Registry

# The architecture names of DESIGN.md (models/ registers modules under these names).
ARCHITECTURES = ("causal_decoder", "prefix_decoder", "encoder_decoder", "encoder_only")


@dataclasses.dataclass(frozen=True)
class TaskLengths:
  """Exact per-example lengths of an objective; nothing is padded by accident.

  Attributes:
    raw: raw (pre-objective) tokens consumed per example.
    inputs: inputs length, 0 when the objective emits targets only.
    targets: targets length.
  """
  raw: int
  inputs: int
  targets: int

  def feature_lengths(self) -> dict[str, int]:
    """The seqio `sequence_length`: {"targets": t}, or {"inputs": i, "targets": t}."""
    if self.inputs == 0:
      return {"targets": self.targets}
    return {"inputs": self.inputs, "targets": self.targets}

  @property
  def budget(self) -> int:
    """Tokens the model sees per example: len(inputs) + len(targets)."""
    return self.inputs + self.targets


@dataclasses.dataclass(frozen=True)
class Objective:
  """One pretraining objective (a module of objectives/ builds one and registers it).

  Attributes:
    name: registry name, the `{objective}` of task and experiment names.
    config_cls: frozen gin-configurable dataclass of hyper-parameters; defaults live there.
    preprocess: preprocess(ds, sequence_length, output_features, cfg) -> ds; a seqio
      preprocessor once cfg is bound with functools.partial(preprocess, cfg=cfg).
    features: ("targets",) or ("inputs", "targets").
    architectures: the names from ARCHITECTURES it supports.
    lengths: lengths(cfg, sequence_length) -> TaskLengths, where sequence_length is the
      per-example token budget len(inputs) + len(targets) (626 for every objective on
      the decoder-only models of Wang et al. 2022).
    description: one line for listings.
  """
  name: str
  config_cls: type
  preprocess: Callable
  features: tuple[str, ...]
  architectures: tuple[str, ...]
  lengths: Callable
  description: str

  def __post_init__(self):
    unknown = [a for a in self.architectures if a not in ARCHITECTURES]
    if unknown:
      raise ValueError(f"objective {self.name!r}: unknown architectures {unknown}")
    if self.features not in (("targets",), ("inputs", "targets")):
      raise ValueError(f"objective {self.name!r}: bad features {self.features}")


OBJECTIVES = Registry[Objective]("objective")


def register(objective: Objective) -> Objective:
  """Adds an objective to OBJECTIVES (called by each objective module at import)."""
  return OBJECTIVES.add(objective.name, objective)


def get(name: str) -> Objective:
  """The objective registered as `name`; ConfigError listing the valid names otherwise."""
  return OBJECTIVES.get(name)


def check_architecture(objective: Objective, arch_name: str) -> None:
  """ConfigError, in one line, unless `objective` supports architecture `arch_name`."""
  if arch_name not in ARCHITECTURES:
    raise ConfigError(
        f"unknown architecture {arch_name!r}; valid choices: {', '.join(ARCHITECTURES)}")
  if arch_name not in objective.architectures:
    raise ConfigError(
        f"objective {objective.name!r} does not support architecture {arch_name!r}; "
        f"it supports: {', '.join(objective.architectures)}")


# Objective modules import this module for the contract and register themselves at the end
# of their own import, so importing any of them (or this module) first works.
# pylint: disable=g-import-not-at-top,g-bad-import-order,unused-import,wrong-import-position
from objectax.objectives import full_lm
from objectax.objectives import span_corruption
from objectax.objectives import mass
from objectax.objectives import deshuffle
from objectax.objectives import fim
from objectax.objectives import iid_denoising
