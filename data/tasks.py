"""SeqIO task registration: the only place that calls `seqio.TaskRegistry.add`.

A task is a (corpus, objective) pair named ``{corpus}_{objective}``; its pipeline is
``rekey -> tokenize -> objective preprocessor`` (the objective appends EOS itself, since
where EOS goes is part of its definition: per document for full LM, after the corrupted
example for span corruption; reference P10). The vocabulary and the objective's
hyper-parameters come from the run's config, so a task is (re)registered when it is asked
for, never at import time with stale settings.
"""
from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from objectax.data import mixtures, sources
from objectax.objectives import mixture
from objectax.objectives import registry as objective_registry


def task_name(corpus: str, objective: str) -> str:
  return f"{corpus}_{objective}"


def get_task(corpus: str, objective: str, objective_cfg, vocabulary: seqio.Vocabulary,
             sequence_length: int | None = None) -> seqio.Task | seqio.Mixture:
  """Registers (or re-registers) ``{corpus}_{objective}`` with these settings and returns it.

  For a mixture objective (UL2) this registers one task per component and returns the
  seqio Mixture over them; it needs the token budget `sequence_length`, since each
  component's own lengths depend on it. Registration reads nothing: the corpus's data is
  only touched when a dataset is built.
  """
  corpus_spec = sources.get_corpus(corpus)
  obj = objective_registry.get(objective)
  if not isinstance(objective_cfg, obj.config_cls):
    raise TypeError(f"objective {objective!r} needs a {obj.config_cls.__name__}, "
                    f"got {type(objective_cfg).__name__}")
  name = task_name(corpus, objective)
  if obj.mixture is None:
    return _add_task(name, corpus_spec, obj.features, vocabulary,
                     functools.partial(obj.preprocess, cfg=objective_cfg))
  if sequence_length is None:
    raise ValueError(f"mixture objective {objective!r} needs the token budget "
                     "(get_task(..., sequence_length=...))")
  components = obj.mixture(objective_cfg, sequence_length, vocabulary)
  tasks = [
      (_add_task(f"{name}_{c.name}", corpus_spec, obj.features, vocabulary,
                 functools.partial(mixture.preprocess_component, component=c)), c.rate)
      for c in components]
  return mixtures.register_mixture(name, tasks)


def _add_task(name: str, corpus_spec, features, vocabulary: seqio.Vocabulary,
              preprocess) -> seqio.Task:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  output_features = {
      feature: seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)
      for feature in features
  }
  return seqio.TaskRegistry.add(
      name,
      source=corpus_spec.make_source(),
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={"targets": corpus_spec.text_key}),
          seqio.preprocessors.tokenize,
          preprocess,
      ],
      output_features=output_features,
      metric_fns=[],
  )
