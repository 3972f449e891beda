"""The objective contract and the registry of objectives.

An objective is a seqio preprocessor that runs after tokenization (the feature "targets"
holds the int32 ids of one document) and does everything else itself: concatenation,
chunking, corruption and EOS. It emits `{"targets"}` or `{"inputs", "targets"}` of exact,
known lengths; the architecture's feature converter lays them out (see
docs/design.md#objective-contract). Objectives never look at the architecture: each emits
one kind of example (`Objective.example_kind`), and the architectures that read that kind
run it (models/registry.py `supports`).

    obj = registry.get("span_corruption")
    cfg = obj.config_cls()                                  # defaults, or gin-bound values
    lengths = obj.lengths(cfg, 626)                         # TaskLengths(568, 512, 114)
    prep = functools.partial(obj.preprocess, cfg=cfg)       # a seqio preprocessor
    seqio.Task(..., preprocessors=[rekey, tokenize, prep])  # with lengths.feature_lengths()
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError, Registry


def check_fields(cfg: Any, kind: str, *fields: str) -> None:
  """ConfigError, in one line, unless each named field of `cfg` holds a valid value of `kind`:
  "fraction" (a number in (0, 1]), "weight" (a number >= 0) or "count" (an int >= 0)."""
  valid = {"fraction": ("in (0, 1]", lambda v: is_number(v) and 0.0 < v <= 1.0),
           "weight": ("a number >= 0", lambda v: is_number(v) and v >= 0),
           "count": ("an int >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool)
                     and v >= 0)}[kind]
  for field in fields:
    value = getattr(cfg, field)
    if not valid[1](value):
      raise ConfigError(f"{type(cfg).__name__}.{field} must be {valid[0]}, got {value!r}")


def is_number(x: Any) -> bool:
  """A real int or float (bools are not numbers here)."""
  return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class TaskLengths:
  """Per-example lengths of an objective; nothing is padded or truncated by accident.

  Most objectives emit every example at exactly (inputs, targets). Three kinds of
  objective need more, and say so with the optional fields:
  - the split between inputs and targets varies but their sum does not (Wang et al.'s
    prefix LM: 626 tokens split uniformly in [1, 626)): `inputs` and `targets` are then
    upper bounds for the seqio task and `concat` is the decoder row length, so a
    concatenating architecture lays each example out in exactly `concat` positions;
  - the objective itself implies variable lengths (T5's unconcatenated prefix LM pads
    document tails; a Poisson number of BART spans): `exact=False`, the lengths are
    upper bounds the objective guarantees, and the padding is part of its definition;
  - inputs and targets are position-aligned (BERT MLM on the encoder-only model):
    `aligned=True`, and the model sees `targets` tokens, not inputs + targets.

  Attributes:
    raw: raw (pre-objective) tokens consumed per example (at most, when not exact).
    inputs: inputs length, 0 when the objective emits targets only.
    targets: targets length.
    concat: when > 0, len(inputs) + len(targets) of every example is at most this (and
      exactly this when `exact`); 0 means inputs + targets.
    exact: every example fills its layout exactly (no padding).
    aligned: inputs and targets are aligned position by position (encoder-only).
    per_row: budget-sized pieces each example carries: 2 where an objective pairs two
      pieces with complementary splits in one example (Wang et al.'s encoder-decoder
      prefix LM, `PrefixLMConfig.pair_pieces`), already packed with segment ids; tokens
      seen per example are then per_row x the budget.
  """
  raw: int
  inputs: int
  targets: int
  concat: int = 0
  exact: bool = True
  aligned: bool = False
  per_row: int = 1

  def feature_lengths(self) -> dict[str, int]:
    """The seqio `sequence_length`: {"targets": t}, or {"inputs": i, "targets": t}."""
    if self.inputs == 0:
      return {"targets": self.targets}
    return {"inputs": self.inputs, "targets": self.targets}

  @property
  def budget(self) -> int:
    """Tokens the model sees per example (at most, when not exact)."""
    if self.aligned:
      return self.targets
    return self.concat or self.inputs + self.targets


@dataclasses.dataclass(frozen=True)
class Objective:
  """One pretraining objective (a module of objectives/ builds one and registers it).

  Attributes:
    name: registry name, the `{objective}` of task and experiment names.
    config_cls: frozen gin-configurable dataclass of hyper-parameters; defaults live there.
    preprocess: preprocess(ds, sequence_length, output_features, cfg) -> ds; a seqio
      preprocessor once cfg is bound with functools.partial(preprocess, cfg=cfg).
    features: ("targets",) or ("inputs", "targets").
    aligned: inputs and targets are aligned position by position (BERT MLM, ELECTRA), not
      a sequence conditioned on another; see `example_kind`.
    lengths: lengths(cfg, sequence_length) -> TaskLengths, where sequence_length is the
      per-example token budget len(inputs) + len(targets) (626 for every objective on
      the decoder-only models of Wang et al. 2022).
    description: one line for listings.
    mixture: for a mixture of objectives (UL2) instead of `preprocess`:
      mixture(cfg, sequence_length, vocabulary) -> list[MixtureComponent]; data/ registers
      one seqio Task per component and a seqio Mixture over them. `lengths` then gives
      bounds that hold for every component.
    corpus_kind: the kind of corpus it reads (data/sources.py `Corpus.kind`): "text"
      (documents; every pretraining objective) or "prompted" (prompt/answer pairs).
    fills_spans: its inputs hold a sentinel per noise span and its targets are
      `<extra_id_0> span <extra_id_1> span ...`, so a model trained on it fills blanks
      (`objectax generate --infill`).
    model_objective: for an objective that lives partly in the model (a generator, extra
      heads, an auxiliary loss; models/model_objectives.py): the name of its
      ModelObjective, which builds the module and the loss from this objective's cfg.
      None: the data are the whole objective and the loss is the architecture's weighted
      cross-entropy.
    pairs_pieces: it can make each example two budget-sized pieces with complementary
      splits, already packed with segment ids (TaskLengths.per_row = 2), for architectures
      whose rows hold inputs and targets in two streams (`Architecture.pairs_pieces`). Its
      config then has a `pair_pieces` field: None lets the run decide (those architectures,
      packed), True or False is the user's choice.
  """
  name: str
  config_cls: type
  preprocess: Optional[Callable]
  features: tuple[str, ...]
  lengths: Callable
  description: str
  mixture: Optional[Callable] = None
  model_objective: Optional[str] = None
  corpus_kind: str = "text"
  aligned: bool = False
  fills_spans: bool = False
  pairs_pieces: bool = False

  def __post_init__(self):
    if (self.preprocess is None) == (self.mixture is None):
      raise ValueError(f"objective {self.name!r}: give exactly one of preprocess or mixture")
    if self.features not in (("targets",), ("inputs", "targets")):
      raise ValueError(f"objective {self.name!r}: bad features {self.features}")
    if self.aligned and self.features != ("inputs", "targets"):
      raise ValueError(f"objective {self.name!r}: aligned examples need inputs and targets")
    if self.pairs_pieces and "pair_pieces" not in {
        f.name for f in dataclasses.fields(self.config_cls)}:
      raise ValueError(f"objective {self.name!r}: pairs_pieces needs a `pair_pieces` field in "
                       f"{self.config_cls.__name__}")

  @property
  def example_kind(self) -> str:
    """The kind of example it emits (models/registry.py EXAMPLE_KINDS): "lm" (targets
    only), "seq2seq" (targets conditioned on inputs) or "aligned" (position-aligned)."""
    if self.aligned:
      return "aligned"
    return "lm" if self.features == ("targets",) else "seq2seq"

  @property
  def architectures(self) -> tuple[str, ...]:
    """The registered architectures that run it, in registry order (models/registry.py
    `supporting`: those reading its kind of example, and those its model objective wraps)."""
    return tuple(arch_registry.supporting(self.example_kind, self.model_objective))


@dataclasses.dataclass(frozen=True)
class MixtureComponent:
  """One task of a mixture objective: an objective, its settings, its share, its prefix.

  Attributes:
    name: short name, the suffix of the component's task name (`{corpus}_{objective}_{name}`).
    objective: the registered objective that makes its examples.
    cfg: that objective's config.
    lengths: that objective's exact lengths for the component's own budget.
    rate: mixing rate (seqio normalizes the rates of a mixture).
    inputs_prefix: ids prepended to every example's inputs (UL2's mode token).
    shard: (index, count): the component reads documents index, index + count, ... of the
      source (UL2 applies each denoiser to its own shard of the data), or None for all.
    mode: the mode token whose ids make `inputs_prefix` when that is empty: they are
      then looked up in the task's vocabulary when its dataset is built (at most
      `mode_token_length` ids).
  """
  name: str
  objective: "Objective"
  cfg: Any
  lengths: TaskLengths
  rate: float
  inputs_prefix: tuple[int, ...] = ()
  shard: Optional[tuple[int, int]] = None
  mode: str = ""
  mode_token_length: int = 1


# The objective modules, in the order `objectax objectives` lists them.
_MODULES = ("full_lm", "span_corruption", "mass", "deshuffle", "fim", "iid_denoising",
            "prefix_lm", "bert_mlm", "bart", "pegasus", "ul2", "electra", "spactor", "mtp",
            "prompted")


def _import_objective_modules() -> None:
  """Each objective module registers itself on import. Importing them when the registry is
  first read, not when this module loads, lets an objective module import another (ELECTRA's
  config extends BERT MLM's) whichever of them a user imports first."""
  import importlib  # pylint: disable=g-import-not-at-top
  for module in _MODULES:
    importlib.import_module(f"objectax.objectives.{module}")
  rank = {f"objectax.objectives.{m}": i for i, m in enumerate(_MODULES)}
  OBJECTIVES.sort(lambda name, obj: rank.get(obj.config_cls.__module__, len(rank)))


OBJECTIVES = Registry[Objective]("objective", loader=_import_objective_modules)


def register(objective: Objective) -> Objective:
  """Adds an objective to OBJECTIVES (called by each objective module at import)."""
  return OBJECTIVES.add(objective.name, objective)


def get(name: str) -> Objective:
  """The objective registered as `name`; ConfigError listing the valid names otherwise."""
  return OBJECTIVES.get(name)
