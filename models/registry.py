"""Named-component registries, the one-line configuration error, and the architectures.

Every choice a user makes by name (corpus, objective, architecture, vocabulary, size,
mesh preset) goes through a `Registry`, so a typo fails the same way everywhere: one line
that names the bad value and lists the valid ones, before anything is built or compiled.
This module is the bottom of the package graph (objectives/, data/ and launch/ import it;
it imports nothing of theirs) and imports nothing heavy, so configs validate anywhere,
including GPU hosts without TensorFlow or seqio.

An architecture is everything the training loop, the evaluations and the tools need to
know about a model family, given by module contract rather than a class hierarchy: each
module of models/ that defines one registers it on import (`register`), and the
registry imports those modules the first time it is read. Adding an architecture is one
module, one entry in `_MODULES` (or a `register` call from a user's own module) and one
gin file under gin/arch/.

Which objectives run on which architecture follows from two declarations, so neither side
names the other: an objective emits one kind of example (`EXAMPLE_KINDS`), an
architecture lists the kinds it `reads`, and an objective that lives partly in the model
(models/model_objectives.py) names the architectures its model wraps (`supports`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, Protocol, Sequence, TypeVar


T = TypeVar("T")


class ConfigError(ValueError):
  """A bad configuration value, reported in one line that names the valid choices."""


class Registry(Generic[T]):
  """An ordered name -> component map with helpful errors.

  >>> r = Registry("objective"); r.add("full_lm", 1); r.get("full_lm")
  1
  >>> r.get("ful_lm")
  Traceback (most recent call last):
  ...
  objectax.models.registry.ConfigError: unknown objective 'ful_lm'; valid choices: full_lm
  """

  def __init__(self, kind: str, loader: Optional[Callable[[], None]] = None):
    """`loader`, if given, registers the components (e.g. imports their modules); it runs
    once, the first time the registry is read, so component modules may import the
    module that holds the registry, and each other, in any order."""
    self.kind = kind
    self._items: dict[str, T] = {}
    self._loader = loader

  def _load(self) -> None:
    if self._loader is not None:
      loader, self._loader = self._loader, None  # once, even if loading reads the registry
      loader()

  def add(self, name: str, item: T) -> T:
    if name in self._items and self._items[name] is not item:
      raise ValueError(f"{self.kind} {name!r} is registered twice")
    self._items[name] = item
    return item

  def remove(self, name: str) -> T:
    """Takes a component out again (a test or a notebook that registered its own)."""
    self._load()
    item = self.get(name)
    del self._items[name]
    return item

  def sort(self, key: Callable[[str, T], object]) -> None:
    """Reorders the components by key(name, component) (stable): listings and the valid
    choices in errors then do not depend on which module happened to be imported first."""
    ranked = sorted(enumerate(self._items.items()), key=lambda i_kv: (key(*i_kv[1]), i_kv[0]))
    self._items = {name: item for _, (name, item) in ranked}

  def get(self, name: str) -> T:
    self._load()
    try:
      return self._items[name]
    except KeyError:
      raise ConfigError(
          f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
      ) from None

  def names(self) -> list[str]:
    self._load()
    return list(self._items)

  def __contains__(self, name: str) -> bool:
    self._load()
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    self._load()
    return iter(self._items)


# ------------------------------------------------------------------------ architectures

# The kinds of example an objective emits (objectives/registry.py `Objective.example_kind`):
#   "lm":      {"targets"}, one token stream scored left to right;
#   "seq2seq": {"inputs", "targets"}, the targets conditioned on the inputs;
#   "aligned": {"inputs", "targets"} aligned position by position (BERT MLM: the corrupted
#              tokens and, at the selected positions, the original ones).
EXAMPLE_KINDS = ("lm", "seq2seq", "aligned")


class BatchSpecFn(Protocol):
  """(task feature lengths, batch size, *, pack) -> {feature: ShapeDtypeStruct}.

  Must list exactly the features `feature_converter(pack)` emits: the trainer builds its
  jit in_shardings from these keys.
  """

  def __call__(self, task_feature_lengths: Mapping[str, int], batch_size: int, *,
               pack: bool = True, concat_length: int = 0) -> dict[str, Any]:
    ...


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A model family and the data layout it reads.

  Attributes:
    name: registry name, the `{arch}` part of an experiment name.
    description: one line for listings and logs.
    make_model: ModelConfig -> Linen module whose `apply(params, batch,
      deterministic=...)` returns float32 logits.
    feature_converter: (pack, concat_length=0) -> seqio FeatureConverter (imports seqio
      lazily). concat_length is the objective's TaskLengths.concat: architectures that
      concatenate inputs and targets size their rows by it when it is > 0; others may
      ignore it.
    model_lengths: (task feature lengths, concat_length=0) -> model lengths, e.g.
      {"decoder": 626}.
    batch_spec: (task feature lengths, batch size, *, pack=True, concat_length=0) ->
      {feature: ShapeDtypeStruct}, exactly the features `feature_converter(pack,
      concat_length)` emits (pass the same `pack` and `concat_length` to both).
    synthetic_batch: (spec, vocab size, rng) -> numpy batch with plausible values, packed
      or not as the spec's keys say.
    targets_key: feature holding the target ids for the loss.
    weights_key: feature holding the per-position loss weights.
    flops_per_token: (ModelConfig, task feature lengths, concat_length=0) -> training FLOPs
      per token of the model's streams (for MFU and `objectax info`).
    reads: the kinds of example (EXAMPLE_KINDS) its feature converter lays out, e.g.
      ("lm", "seq2seq") for a decoder-only model.
    budget_lengths: (sequence_length, inputs_length=0) -> task feature lengths giving
      `sequence_length` tokens per example (`objectax bench model`, which has no
      objective); inputs_length, where the architecture splits the budget, is the
      inputs' share (0: its default); ConfigError for a share it cannot take.
    score_layout: (pairs, length) -> (features, all-target weights, scored weights), numpy
      (N, length): how it reads scored (inputs, targets) pairs (models/scoring.py `Pair`),
      exactly as its feature converter would lay them out unpacked (the yardstick and
      zero-shot evaluations score through it; the scored targets are `targets_key`).
    left_to_right: it can score a sequence token by token (a continuation given a prefix).
    pairs_pieces: its rows hold a variable-split objective's pieces in two streams, so it
      wants two pieces per example with complementary splits where the objective offers
      them (`Objective.pairs_pieces`, e.g. Wang et al.'s prefix LM on the
      encoder-decoder); its feature converter then takes examples that arrive packed
      (with `inputs_segment_ids` and the like) as they are.
  """

  name: str
  description: str
  make_model: Callable[..., Any]  # ModelConfig -> Linen module
  feature_converter: Callable[..., Any]
  model_lengths: Callable[..., dict[str, int]]
  batch_spec: BatchSpecFn
  synthetic_batch: Callable[..., dict[str, Any]]
  targets_key: str
  weights_key: str
  flops_per_token: Callable[..., float]
  reads: tuple[str, ...]
  budget_lengths: Callable[..., dict[str, int]]
  score_layout: Callable[[Sequence[Any], int], Any]
  left_to_right: bool
  pairs_pieces: bool = False

  def __post_init__(self):
    unknown = [k for k in self.reads if k not in EXAMPLE_KINDS]
    if not self.reads or unknown:
      raise ValueError(f"architecture {self.name!r}: reads {self.reads}; each must be one of "
                       f"{', '.join(EXAMPLE_KINDS)}")


def from_module(name: str, description: str, module: Any,
                make_model: Optional[Callable[..., Any]] = None) -> Architecture:
  """An Architecture from a model module's contract: Model, feature_converter,
  model_lengths, batch_spec, synthetic_batch, flops_per_token, budget_lengths,
  score_layout, TARGETS_KEY, WEIGHTS_KEY, READS, LEFT_TO_RIGHT (and PAIRS_PIECES, default
  False)."""
  return Architecture(
      name=name,
      description=description,
      make_model=make_model or module.Model,
      feature_converter=module.feature_converter,
      model_lengths=module.model_lengths,
      batch_spec=module.batch_spec,
      synthetic_batch=module.synthetic_batch,
      targets_key=module.TARGETS_KEY,
      weights_key=module.WEIGHTS_KEY,
      flops_per_token=module.flops_per_token,
      reads=tuple(module.READS),
      budget_lengths=module.budget_lengths,
      score_layout=module.score_layout,
      left_to_right=bool(module.LEFT_TO_RIGHT),
      pairs_pieces=bool(getattr(module, "PAIRS_PIECES", False)),
  )


# The model modules that define the built-in architectures, in the order listings show them.
_MODULES = ("decoder", "encoder", "encdec")


def _import_architecture_modules() -> None:
  """Each architecture module registers itself on import; importing them when the registry
  is first read keeps this module free of flax and lets them import it."""
  import importlib  # pylint: disable=g-import-not-at-top
  for module in _MODULES:
    importlib.import_module(f"objectax.models.{module}")


ARCHITECTURES = Registry["Architecture"]("architecture", loader=_import_architecture_modules)


def _listing_rank(name: str, architecture: "Architecture") -> int:
  """Built-ins in `_MODULES` order, then the others in the order they were registered."""
  del name
  model = getattr(architecture.make_model, "func", architecture.make_model)  # a partial's class
  module = getattr(model, "__module__", "")
  rank = {f"objectax.models.{m}": i for i, m in enumerate(_MODULES)}
  return rank.get(module, len(rank))


def register(architecture: "Architecture") -> "Architecture":
  """Adds an architecture (the built-in modules call this on import; so may a user's)."""
  ARCHITECTURES.names()  # the built-ins first, whoever registers first
  ARCHITECTURES.add(architecture.name, architecture)
  # Whichever built-in module was imported first registers last (its import loaded the
  # others): keep the listing, and so the valid choices in errors, in one order.
  ARCHITECTURES.sort(_listing_rank)
  return architecture


def get(name: str) -> "Architecture":
  """The architecture called `name`; a ConfigError lists the valid names otherwise."""
  return ARCHITECTURES.get(name)


# ------------------------------------------------------------ objective compatibility
# Plain values, so that this module knows nothing of objectives/: the architecture's name
# (or the Architecture), the kind of example an objective emits, and the name of its
# model-side objective (None for a data-only objective). Anything with `example_kind`,
# `model_objective` and `name` attributes (an objectives.registry.Objective) may be passed
# in place of the kind, and then supplies the other two.


def _example(kind: Any, model_objective: Optional[str], objective_name: Optional[str]):
  if isinstance(kind, str):
    return kind, model_objective, objective_name
  return kind.example_kind, kind.model_objective, objective_name or kind.name


def _import_model_objective_modules() -> None:
  """The model-side objectives (models/model_objectives.py's contract) register themselves
  when their modules load; the registry imports them the first time it is read."""
  import importlib  # pylint: disable=g-import-not-at-top
  for module in ("mtp", "rtd"):
    importlib.import_module(f"objectax.models.{module}")


# name -> model_objectives.ModelObjective
MODEL_OBJECTIVES = Registry[Any]("model objective", loader=_import_model_objective_modules)


def _wraps(model_objective: str) -> tuple[str, ...]:
  """The architectures a model-side objective's module is built around (() means any)."""
  return MODEL_OBJECTIVES.get(model_objective).wraps


def supports(arch: Any, kind: Any, model_objective: Optional[str] = None) -> bool:
  """Whether architecture `arch` (a name or an Architecture) runs an objective emitting
  examples of `kind` (EXAMPLE_KINDS) with the model-side objective `model_objective`.

  ConfigError, in one line, for an unknown architecture name.
  """
  kind, model_objective, _ = _example(kind, model_objective, None)
  if kind not in EXAMPLE_KINDS:
    raise ValueError(f"unknown example kind {kind!r}; valid: {', '.join(EXAMPLE_KINDS)}")
  architecture = get(arch) if isinstance(arch, str) else arch
  if kind not in architecture.reads:
    return False
  if model_objective:
    wraps = _wraps(model_objective)
    return not wraps or architecture.name in wraps
  return True


def supporting(kind: Any, model_objective: Optional[str] = None) -> list[str]:
  """The names of the architectures that `supports` the objective, in registry order."""
  kind, model_objective, _ = _example(kind, model_objective, None)
  return [name for name in ARCHITECTURES.names() if supports(name, kind, model_objective)]


def check_supports(arch: Any, kind: Any, model_objective: Optional[str] = None, *,
                   objective_name: Optional[str] = None) -> None:
  """ConfigError, in one line, unless `supports(arch, kind, model_objective)`: an unknown
  architecture lists the valid ones, an unsupported one the objective's
  (`objective_name`, taken from `kind` when an objective is passed)."""
  kind, model_objective, objective_name = _example(kind, model_objective, objective_name)
  architecture = get(arch) if isinstance(arch, str) else arch
  if not supports(architecture, kind, model_objective):
    who = f"objective {objective_name!r}" if objective_name else f"an objective of {kind!r} examples"
    raise ConfigError(
        f"{who} does not support architecture {architecture.name!r}; "
        f"it supports: {', '.join(supporting(kind, model_objective))}")
