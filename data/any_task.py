"""Training on any registered seqio Task or Mixture (`Experiment.task`).

`Experiment.task=NAME` trains on a task or mixture registered by anyone (a user module
loaded with `--module`, an installed plugin, or our own `{corpus}_{objective}` tasks)
instead of the `{corpus}_{objective}` pair. What the run needs from it:

- the layout, from its output features: {"targets"} is an LM example (every architecture
  that reads "lm" examples), {"inputs", "targets"} a sequence-to-sequence one (ED puts
  the inputs in the encoder; CD and ND see inputs then targets, loss on the targets);
- the vocabulary, from its features (all tasks of a mixture, and both features, must use
  one vocabulary; with a built-in task among them, the run's `VocabConfig` one);
- the lengths: `Experiment.task_lengths` when bound; else those of the built-in tasks it
  mixes (each built-in component keeps its own exact lengths); else the lengths its
  tasks were registered with (`set_default_lengths`, e.g. T5's); else `sequence_length`
  targets for an LM task; else the longest inputs and targets among the first
  MEASURED_EXAMPLES training examples (printed, so they can be bound);
- what to do with a longer example: `Experiment.long_examples` "refuse" (stop with a
  one-line error naming the task and the lengths) or "trim" (cut it to the lengths).

The built-in tasks a mixture names are re-registered with the run's settings (objective
configs, vocabulary, corpus files), so a user's Mixture of `pydocs_span_corruption` and
their own task trains span corruption exactly as `Experiment.objective` would.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import sys
from typing import Mapping

import seqio
import tensorflow as tf

from objectax.data import sources, tasks
from objectax.data.task_lengths import DEFAULT_LENGTHS, set_default_lengths  # pylint: disable=unused-import
from objectax.data import vocab as vocab_lib
from objectax.models.registry import ConfigError
from objectax.objectives import registry as objective_registry

LONG_EXAMPLES = ("refuse", "trim")
_END = sources.BAD_RECORD_END
MEASURED_EXAMPLES = 1000
LAYOUTS = {("targets",): "lm", ("inputs", "targets"): "seq2seq"}


@dataclasses.dataclass(frozen=True)
class Component:
  """One task a run reads, with its share of the examples (1.0 for a plain task)."""
  name: str
  task: seqio.Task
  rate: float


@dataclasses.dataclass(frozen=True)
class TaskSettings:
  """The "objective config" of a run on a named task: its lengths binding and the rule
  for examples longer than the lengths."""
  task: str
  task_lengths: tuple[tuple[str, int], ...] = ()
  long_examples: str = "refuse"


def lookup(name: str, flag: str = "Experiment.task") -> seqio.Task | seqio.Mixture:
  """The registered task or mixture `name`; ConfigError in one line with close matches
  (naming `flag`, where the name came from)."""
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
  hint = (f"close matches: {', '.join(close)}" if close else
          f"{len(known)} are registered (e.g. {', '.join(known[:3])})")
  raise ConfigError(
      f"{flag}={name!r} is not a registered seqio task or mixture; {hint}. A task "
      "defined in your own module needs --module=your.module (or a gin `import` line)")


def leaves(task: seqio.Task | seqio.Mixture) -> list[tuple[seqio.Task, float]]:
  """The tasks a task or mixture reads, with their (unnormalised) rates, zero rates left out."""
  if isinstance(task, seqio.Mixture):
    return [(t, float(task.get_rate(t))) for t in task.tasks if task.get_rate(t) > 0]
  return [(task, 1.0)]


def layout_features(task: seqio.Task | seqio.Mixture) -> tuple[str, ...]:
  """("targets",) or ("inputs", "targets"); ConfigError for features no layout takes."""
  features = tuple(sorted(task.output_features))
  if features not in LAYOUTS:
    raise ConfigError(
        f"task {task.name!r} has output features {features}, which no layout takes; valid: "
        "('targets',) for language modelling or ('inputs', 'targets') for "
        "sequence-to-sequence (rename or drop features in a preprocessor)")
  return features


def objective_for(name: str) -> objective_registry.Objective:
  """An unregistered Objective standing for the task: its features and lengths."""
  task = lookup(name)
  features = layout_features(task)

  def no_preprocess(*args, **kwargs):
    raise RuntimeError(f"task {name!r} preprocesses its own examples")

  return objective_registry.Objective(
      name=name, config_cls=TaskSettings, preprocess=no_preprocess, features=features,
      lengths=lengths, description=f"the registered seqio task or mixture {name!r}")


def settings(exp) -> TaskSettings:
  """A run's TaskSettings from its Experiment."""
  return TaskSettings(task=exp.task, task_lengths=tuple(sorted(exp.task_lengths.items())),
                      long_examples=exp.long_examples)


def _builtin_lengths(name: str, sequence_length: int):
  """The lengths a built-in task (or mixture component) has at this budget."""
  b = tasks.BUILTIN[name]
  obj = objective_registry.get(b.objective)
  cfg = obj.config_cls()
  if not b.component:
    return obj.lengths(cfg, sequence_length)
  (c,) = [c for c in obj.mixture(cfg, sequence_length, None) if c.name == b.component]
  return c.lengths


def lengths(cfg: TaskSettings, sequence_length: int) -> objective_registry.TaskLengths:
  """The run's feature lengths (see the module docstring for the order of the sources)."""
  task = lookup(cfg.task)
  features = layout_features(task)
  if cfg.task_lengths:
    bound = dict(cfg.task_lengths)
    if set(bound) != set(features) or not all(isinstance(v, int) and v > 0
                                               for v in bound.values()):
      raise ConfigError(
          f"Experiment.task_lengths={bound} must give a positive int for each of the task's "
          f"features {features}, e.g. {dict((f, 64) for f in features)}")
    return objective_registry.TaskLengths(raw=0, inputs=bound.get("inputs", 0),
                                          targets=bound["targets"], exact=False)
  if cfg.task in tasks.BUILTIN:  # one of ours, by name: exactly as Experiment.objective
    return _builtin_lengths(cfg.task, sequence_length)
  defaults = [DEFAULT_LENGTHS[t.name] for t, _ in leaves(task) if t.name in DEFAULT_LENGTHS]
  if defaults:  # a task's own lengths (a mixture: the longest of its tasks')
    return objective_registry.TaskLengths(
        raw=0, inputs=max(d.get("inputs", 0) for d in defaults),
        targets=max(d["targets"] for d in defaults), exact=False)
  builtin = [t.name for t, _ in leaves(task) if t.name in tasks.BUILTIN]
  if builtin:
    own = [_builtin_lengths(n, sequence_length) for n in builtin]
    return objective_registry.TaskLengths(
        raw=0, inputs=max(x.inputs for x in own), targets=max(x.targets for x in own),
        exact=False)
  if features == ("targets",):
    return objective_registry.TaskLengths(raw=0, inputs=0, targets=sequence_length,
                                          exact=False)
  measured = measure(cfg.task)
  return objective_registry.TaskLengths(raw=0, inputs=measured["inputs"],
                                        targets=measured["targets"], exact=False)


@functools.lru_cache(maxsize=None)
def measure(name: str) -> dict[str, int]:
  """The longest of each feature among the first MEASURED_EXAMPLES training examples of
  each task `name` reads (unshuffled, so every command measures the same)."""
  longest: dict[str, int] = {}
  for task, _ in leaves(lookup(name)):
    ds = task.get_dataset(sequence_length=None, split="train", shuffle=False, num_epochs=1,
                          trim_output_features=False)
    for ex in ds.take(MEASURED_EXAMPLES).as_numpy_iterator():
      for k in task.output_features:
        longest[k] = max(longest.get(k, 1), len(ex[k]))
  print(f"objectax: task {name}: lengths {longest}, the longest among its first "
        f"{MEASURED_EXAMPLES} training examples (bind Experiment.task_lengths to choose them)",
        file=sys.stderr, flush=True)
  return longest


def _vocabulary_of(task: seqio.Task) -> seqio.Vocabulary:
  vocabularies = {f: task.output_features[f].vocabulary for f in task.output_features}
  prints = {f: vocab_lib.fingerprint(v) for f, v in vocabularies.items()}
  if len(set(prints.values())) > 1:
    raise ConfigError(
        f"task {task.name!r}: its features use different vocabularies ({prints}); the models "
        "here share one embedding, so inputs and targets need one vocabulary")
  return next(iter(vocabularies.values()))


def components(name: str, run_cfg) -> tuple[list[Component], seqio.Vocabulary]:
  """The tasks the run reads (built-in ones re-registered with the run's settings) and
  the vocabulary they share; ConfigError when they disagree on it."""
  task = lookup(name)
  run_vocabulary = None
  found: list[Component] = []
  for leaf, rate in leaves(task):
    builtin = tasks.BUILTIN.get(leaf.name)
    if builtin is not None:
      if run_vocabulary is None:
        run_vocabulary = vocab_lib.get_vocabulary(run_cfg.vocab, run_cfg.data_dir)
      leaf = _reregister(builtin, run_cfg, run_vocabulary, leaf.name)
    found.append(Component(leaf.name, leaf, rate))
  by_print: dict[str, list[str]] = {}
  vocabulary = run_vocabulary
  for c in found:
    v = _vocabulary_of(c.task)
    by_print.setdefault(vocab_lib.fingerprint(v), []).append(c.name)
    vocabulary = vocabulary or v
  if run_vocabulary is not None:
    by_print.setdefault(vocab_lib.fingerprint(run_vocabulary), [])
  if len(by_print) > 1:
    which = "; ".join(f"{', '.join(names) or 'the built-in tasks (VocabConfig)'} use {fp}"
                      for fp, names in by_print.items())
    raise ConfigError(
        f"mixture {name!r}: its tasks disagree on the vocabulary ({which}); give every task "
        "the same one (objectax.data.vocab.default_vocabulary() is the built-in tasks' "
        "default)")
  return found, vocabulary


def _reregister(builtin: tasks.Builtin, run_cfg, vocabulary, leaf_name: str) -> seqio.Task:
  """A built-in task registered again with the run's settings, at its own exact lengths
  (the mixture's lengths are bounds for all of its tasks)."""
  corpus = sources.get_corpus(builtin.corpus)
  corpus.prepare(run_cfg.data)
  obj = objective_registry.get(builtin.objective)
  registered = tasks.get_task(builtin.corpus, builtin.objective, obj.config_cls(), vocabulary,
                              run_cfg.exp.sequence_length, run_cfg.data, own_lengths=True)
  if isinstance(registered, seqio.Mixture):
    return seqio.TaskRegistry.get(leaf_name)
  return registered


def check_lengths(ds: tf.data.Dataset, task_name: str,
                  limits: Mapping[str, int]) -> tf.data.Dataset:
  """`ds` with every example checked to fit `limits` (Experiment.long_examples="refuse"):
  a longer one stops the run with a one-line error (sources.BAD_RECORD_MARKER). The
  message has no quotes: TensorFlow escapes them in an assertion's message."""

  def check(ex):
    asserts = [tf.debugging.assert_less_equal(
        tf.size(ex[k]), limit,
        message=(f"{sources.BAD_RECORD_MARKER}task {task_name}: an example whose {k} is "
                 f"longer than the {k} length {limit} of the run; bind Experiment.long_examples=trim "
                 f"to cut such examples, or Experiment.task_lengths to longer lengths{_END}"))
        for k, limit in limits.items() if k in ex]
    with tf.control_dependencies(asserts):
      return {k: tf.identity(v) for k, v in ex.items()}

  return ds.map(check, num_parallel_calls=tf.data.AUTOTUNE)
