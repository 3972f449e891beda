"""SeqIO task registration of the `{corpus}_{objective}` training tasks.

A task is a (corpus, objective) pair named ``{corpus}_{objective}``; its pipeline is
``rekey -> tokenize -> objective preprocessor`` (the objective appends EOS itself, since
where EOS goes is part of its definition: per document for full LM, after the corrupted
example for span corruption; docs/objectives.md#where-eos-goes). The vocabulary and the objective's
hyper-parameters come from the run's config, so a task is (re)registered when it is asked
for, never at import time with stale settings.

Corpora come in two kinds (`sources.Corpus.kind`). A "text" corpus holds documents, which
every pretraining objective cuts up itself. A "prompted" corpus (multitask finetuning)
already holds {"inputs": prompt, "targets": answer} pairs: its pipeline is
``tokenize -> objective preprocessor`` (no rekey), and only an objective whose config
declares ``corpus_kind = "prompted"`` (objectives/prompted.py) can read it. Any other
pairing is refused in one line by `check_pairing`, before a dataset is built.
"""
from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from objectax.data import mixtures, sources
from objectax.models.registry import ConfigError
from objectax.objectives import mixture
from objectax.objectives import registry as objective_registry


def task_name(corpus: str, objective: str) -> str:
  return f"{corpus}_{objective}"


def get_task(corpus: str, objective: str, objective_cfg, vocabulary: seqio.Vocabulary,
             sequence_length: int | None = None,
             data: sources.DataConfig | None = None) -> seqio.Task | seqio.Mixture:
  """Registers (or re-registers) ``{corpus}_{objective}`` with these settings and returns it.

  For a mixture objective (UL2) this registers one task per component and returns the
  seqio Mixture over them; it needs the token budget `sequence_length`, since each
  component's own lengths depend on it. `data` locates the corpus's files (default: the
  gin bindings in effect). Registration reads nothing: the corpus's data is only touched
  when a dataset is built.
  """
  corpus_spec = sources.get_corpus(corpus)
  obj = objective_registry.get(objective)
  check_pairing(corpus_spec, obj)
  if not isinstance(objective_cfg, obj.config_cls):
    raise TypeError(f"objective {objective!r} needs a {obj.config_cls.__name__}, "
                    f"got {type(objective_cfg).__name__}")
  name = task_name(corpus, objective)
  if obj.mixture is None:
    return _add_task(name, corpus_spec, obj.features, vocabulary,
                     functools.partial(obj.preprocess, cfg=objective_cfg), data)
  if sequence_length is None:
    raise ValueError(f"mixture objective {objective!r} needs the token budget "
                     "(get_task(..., sequence_length=...))")
  components = obj.mixture(objective_cfg, sequence_length, vocabulary)
  tasks = [
      (_add_task(f"{name}_{c.name}", corpus_spec, obj.features, vocabulary,
                 functools.partial(mixture.preprocess_component, component=c), data), c.rate)
      for c in components]
  return mixtures.register_mixture(name, tasks)


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


def _add_task(name: str, corpus_spec, features, vocabulary: seqio.Vocabulary,
              preprocess, data: sources.DataConfig | None) -> seqio.Task:
  output_features = {
      feature: seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)
      for feature in features
  }
  # A prompted corpus already has "inputs" and "targets"; a text corpus's document becomes
  # "targets", which the objective cuts up.
  rekey = [] if corpus_spec.kind != "text" else [
      functools.partial(seqio.preprocessors.rekey, key_map={"targets": corpus_spec.text_key})]
  return _register(name, corpus_spec.make_source(data),
                   [*rekey, seqio.preprocessors.tokenize, preprocess], output_features)


def _register(name: str, source: seqio.DataSource, preprocessors: list,
              output_features: dict) -> seqio.Task:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, source=source, preprocessors=preprocessors,
                                output_features=output_features, metric_fns=[])
