"""SeqIO task registration of the `{corpus}_{objective}` training tasks.

A task is a (corpus, objective) pair named ``{corpus}_{objective}``; its pipeline is
``rekey -> tokenize -> objective preprocessor`` (the objective appends EOS itself, since
where EOS goes is part of its definition: per document for full LM, after the corrupted
example for span corruption; docs/objectives.md#where-eos-goes). The vocabulary and the objective's
hyper-parameters come from the run's config: importing this module registers every
(corpus, objective) pair that can run with the default settings (`register_builtin_tasks`:
the default vocabulary, trained on first use, and for UL2 the default 128-token budget), so
a user's seqio Mixture can name them and `seqio.get_mixture_or_task` finds them in a
notebook; a run re-registers the tasks it reads with its own settings (`get_task`).

Corpora come in two kinds (`sources.Corpus.kind`). A "text" corpus holds documents, which
every pretraining objective cuts up itself. A "prompted" corpus (multitask finetuning)
already holds {"inputs": prompt, "targets": answer} pairs: its pipeline is
``tokenize -> objective preprocessor`` (no rekey), and only an objective whose config
declares ``corpus_kind = "prompted"`` (objectives/prompted.py) can read it. Any other
pairing is refused in one line by `check_pairing`, before a dataset is built.
"""
from __future__ import annotations

import dataclasses
import functools

import seqio
import tensorflow as tf

from objectax.data import mixtures, sources
from objectax.models.registry import ConfigError
from objectax.objectives import mixture
from objectax.objectives import registry as objective_registry


def task_name(corpus: str, objective: str) -> str:
  return f"{corpus}_{objective}"


@dataclasses.dataclass(frozen=True)
class Builtin:
  """What a built-in task name stands for: `{corpus}_{objective}`, or one component of a
  mixture objective, `{corpus}_{objective}_{component}`."""
  corpus: str
  objective: str
  component: str = ""


# Every built-in task and mixture name, registered at import.
BUILTIN: dict[str, Builtin] = {}

# The budget the import-time registration gives a mixture objective's components (the
# default Experiment.sequence_length); a run re-registers them at its own.
DEFAULT_SEQUENCE_LENGTH = 128


def get_task(corpus: str, objective: str, objective_cfg, vocabulary: seqio.Vocabulary,
             sequence_length: int | None = None,
             data: sources.DataConfig | None = None,
             own_lengths: bool = False) -> seqio.Task | seqio.Mixture:
  """Registers (or re-registers) ``{corpus}_{objective}`` with these settings and returns it.

  For a mixture objective (UL2) this registers one task per component and returns the
  seqio Mixture over them; it needs the token budget `sequence_length`, since each
  component's own lengths depend on it. `data` locates the corpus's files (default: the
  gin bindings in effect). Registration reads nothing: the corpus's data is only touched
  when a dataset is built. `own_lengths`: the task makes its examples at the objective's
  exact lengths for `sequence_length` whatever lengths seqio asks for (which are then
  bounds, as when it is one task of a user's mixture); otherwise at the lengths asked for.
  """
  corpus_spec = sources.get_corpus(corpus)
  obj = objective_registry.get(objective)
  check_pairing(corpus_spec, obj)
  if not isinstance(objective_cfg, obj.config_cls):
    raise TypeError(f"objective {objective!r} needs a {obj.config_cls.__name__}, "
                    f"got {type(objective_cfg).__name__}")
  if (obj.mixture is not None or own_lengths) and sequence_length is None:
    raise ValueError(f"objective {objective!r} needs the token budget here "
                     "(get_task(..., sequence_length=...))")
  return _register_pair(corpus_spec, obj, objective_cfg, vocabulary, sequence_length, data,
                        own_lengths)


def _register_pair(corpus_spec: sources.Corpus, obj: objective_registry.Objective,
                   objective_cfg, vocabulary: seqio.Vocabulary | None,
                   sequence_length: int | None, source,
                   own_lengths: bool = False) -> seqio.Task | seqio.Mixture:
  """Registers `{corpus}_{objective}` (a Mixture and its component tasks for a mixture
  objective). `source`: a DataConfig or None (the corpus's source from it), or a callable
  giving the source when it is built for the first time."""
  name = task_name(corpus_spec.name, obj.name)
  make_source = source if callable(source) else lambda: corpus_spec.make_source(source)
  if obj.mixture is None:
    BUILTIN[name] = Builtin(corpus_spec.name, obj.name)
    preprocess = functools.partial(obj.preprocess, cfg=objective_cfg)
    if own_lengths:
      preprocess = functools.partial(
          _at_own_lengths, preprocess=preprocess,
          lengths=obj.lengths(objective_cfg, sequence_length).feature_lengths())
    return _add_task(name, corpus_spec, obj.features, vocabulary, preprocess, make_source())
  components = obj.mixture(objective_cfg, sequence_length, vocabulary)
  task_source = make_source()
  tasks = []
  for c in components:
    BUILTIN[f"{name}_{c.name}"] = Builtin(corpus_spec.name, obj.name, c.name)
    tasks.append((_add_task(f"{name}_{c.name}", corpus_spec, obj.features, vocabulary,
                            functools.partial(mixture.preprocess_component, component=c),
                            task_source), c.rate))
  BUILTIN[name] = Builtin(corpus_spec.name, obj.name)
  return mixtures.register_mixture(name, tasks)


def _at_own_lengths(ds, sequence_length, output_features, *, preprocess, lengths):
  """An objective's preprocessor run at its own `lengths`, not seqio's (bounds here)."""
  del sequence_length
  return preprocess(ds, lengths, output_features)


def register_builtin_tasks() -> None:
  """Registers every runnable (corpus, objective) pair with the default settings.

  Nothing is read: the vocabulary is trained (or found in its cache) and the corpus opened
  only when a dataset is built. A corpus whose source cannot be described without a
  binding it lacks (say, the local corpus without files) is registered with a source
  that reports that binding in one line when read.
  """
  from objectax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocabulary = vocab_lib.default_vocabulary()
  for corpus in sources.CORPORA.names():
    corpus_spec = sources.get_corpus(corpus)
    source = _default_source(corpus_spec)  # one per corpus: its tasks share it
    for objective in objective_registry.OBJECTIVES.names():
      obj = objective_registry.get(objective)
      if corpus_spec.kind != objective_corpus_kind(obj):
        continue
      _register_pair(corpus_spec, obj, _defaults(obj.config_cls),
                     None if obj.mixture else vocabulary, DEFAULT_SEQUENCE_LENGTH,
                     lambda source=source: source)


def _defaults(config_cls: type):
  """A config dataclass at its declared defaults, whatever gin binds at the moment (an
  explicit argument wins over a gin binding)."""
  return config_cls(**{f.name: f.default if f.default is not dataclasses.MISSING
                       else f.default_factory()
                       for f in dataclasses.fields(config_cls) if f.init})


def objective_corpus_kind(obj: objective_registry.Objective) -> str:
  """The corpus kind an objective reads (`Objective.corpus_kind`)."""
  return obj.corpus_kind


def check_pairing(corpus_spec: sources.Corpus, obj: objective_registry.Objective) -> None:
  """ConfigError, in one line, unless the objective reads the corpus's kind of examples."""
  wanted = objective_corpus_kind(obj)
  if corpus_spec.kind == wanted:
    return
  if wanted == "text":
    readers = [n for n in objective_registry.OBJECTIVES.names()
               if objective_corpus_kind(objective_registry.get(n)) == corpus_spec.kind]
    raise ConfigError(
        f"corpus {corpus_spec.name!r} holds {corpus_spec.kind} examples, which objective "
        f"{obj.name!r} cannot read; valid choices for Experiment.objective with it: "
        f"{', '.join(readers)} (or pick a text corpus for {obj.name!r})")
  corpora = [n for n in sources.CORPORA.names() if sources.get_corpus(n).kind == wanted]
  raise ConfigError(
      f"objective {obj.name!r} reads {wanted} examples, not the {corpus_spec.kind} corpus "
      f"{corpus_spec.name!r}; valid choices for Experiment.corpus: {', '.join(corpora)}")


def _default_source(corpus_spec: sources.Corpus) -> seqio.DataSource:
  """The corpus's source under its default settings, or, when those cannot describe one
  (the local corpus has no files until they are bound), a source that says so when read."""
  try:
    return corpus_spec.make_source(None)
  except ConfigError as e:
    return _Unavailable(str(e))


class _Unavailable(seqio.DataSource):
  """A source that cannot be read yet: reading it raises ConfigError with `reason`."""

  def __init__(self, reason: str):
    self._reason = reason
    super().__init__(splits=sources.SPLITS)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> list[str]:
    raise ConfigError(self._reason)

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed=None, shard_info=None,
                  *, sequence_length=None, use_cached=False, num_epochs=1):
    raise ConfigError(self._reason)

  def num_input_examples(self, split: str):
    raise ConfigError(self._reason)


def _add_task(name: str, corpus_spec, features, vocabulary: seqio.Vocabulary,
              preprocess, source: seqio.DataSource) -> seqio.Task:
  output_features = {
      feature: seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)
      for feature in features
  }
  # A prompted corpus already has "inputs" and "targets"; a text corpus's document becomes
  # "targets", which the objective cuts up.
  rekey = [] if corpus_spec.kind != "text" else [
      functools.partial(seqio.preprocessors.rekey, key_map={"targets": corpus_spec.text_key})]
  return _register(name, source,
                   [*rekey, seqio.preprocessors.tokenize, preprocess], output_features)


def _register(name: str, source: seqio.DataSource, preprocessors: list,
              output_features: dict) -> seqio.Task:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, source=source, preprocessors=preprocessors,
                                output_features=output_features, metric_fns=[])


register_builtin_tasks()
# The downstream (fine-tuning) tasks register themselves when imported: offline ones from
# the embedded corpus, and T5's over TFDS.
from objectax.data import downstream, t5_downstream  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
