"""`objectax inspect OBJECTIVE`: one real example as text, with the loss positions marked.

The example goes through exactly what training uses: the objective's preprocessor at its
exact lengths, then the architecture's feature converter. Sentinels, mode tokens and EOS
are shown by name, and the stretches of the model's stream that carry loss weight are
wrapped in ⟦ ⟧, so one glance shows what the objective asks the model to predict.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import seqio
import tensorflow as tf

from objectax.data import pydocs
from objectax.launch import builder, input_pipeline
from objectax.objectives import mixture as mixture_lib

EOS_ID = 1


def _token_text(vocabulary: seqio.Vocabulary, ids: list[int]) -> str:
  """Decodes ids, naming EOS and sentinels (seqio's decode stops at EOS / drops them)."""
  extra = getattr(vocabulary, "extra_ids", 0) or 0
  first_sentinel = vocabulary.vocab_size - extra
  parts, run = [], []

  def flush():
    if run:
      parts.append(vocabulary.decode(run))
      run.clear()

  for i in ids:
    if i == EOS_ID:
      flush()
      parts.append("</s>")
    elif extra and i >= first_sentinel:
      flush()
      parts.append(f"<extra_id_{vocabulary.vocab_size - 1 - i}>")
    elif i != 0:
      run.append(int(i))
  flush()
  return " ".join(p for p in parts if p)


def render_stream(vocabulary: seqio.Vocabulary, tokens: np.ndarray, weights: np.ndarray) -> str:
  """Text of a model stream with each loss-weighted stretch wrapped in ⟦ ⟧."""
  out, start = [], 0
  for end in range(1, len(tokens) + 1):
    if end == len(tokens) or (weights[end] > 0) != (weights[start] > 0):
      text = _token_text(vocabulary, list(tokens[start:end]))
      out.append(f"⟦{text}⟧" if weights[start] > 0 else text)
      start = end
  return " ".join(t for t in out if t)


def one_example(provider, preprocess, output_features, sequence_length, vocabulary, *,
                seed: int, text: str | None) -> dict[str, np.ndarray]:
  """The first example of `provider` (a seqio Task or Mixture) on the validation split, or
  of `preprocess` over `text` (repeated as needed)."""
  if text is None:
    ds = provider.get_dataset(sequence_length=sequence_length, split="validation",
                              shuffle=True, seed=seed, num_epochs=None)
  else:
    ds = tf.data.Dataset.from_tensors({"targets": tf.constant(text)}).repeat()
    ds = ds.map(lambda ex: {"targets": vocabulary.encode_tf(ex["targets"])})
    with seqio.utils.map_seed_manager(seed):
      ds = preprocess(ds, sequence_length, output_features)
  return next(ds.take(1).as_numpy_iterator())


def _render(cfg: builder.RunConfig, ti: input_pipeline.TaskInput, example, features) -> list[str]:
  """The example's features as text, then the architecture's stream with ⟦loss⟧ marked."""
  if ti.lengths.aligned:  # aligned (encoder-only): mark the inputs
    vocabulary = ti.vocabulary
    weights = np.asarray(example["targets"]) > 0
    return [f"{'targets':>8}: {_token_text(vocabulary, list(example['targets']))}",
            f"    loss: {int(weights.sum())} of {len(weights)} positions carry loss (targets > 0),"
            " marked ⟦ ⟧ on the inputs:",
            f"  inputs: {render_stream(vocabulary, np.asarray(example['inputs']), weights)}"]
  converted = next(cfg.arch.feature_converter(False, ti.lengths.concat)(
      tf.data.Dataset.from_tensors(example), ti.task_feature_lengths).as_numpy_iterator())
  tokens = converted[cfg.arch.targets_key]
  weights = converted[cfg.arch.weights_key]
  vocabulary = ti.vocabulary
  lines = [f"{feature:>8}: {_token_text(vocabulary, list(example[feature]))}"
           for feature in features]
  real = tokens != 0
  lines.append(f"    loss: {int((weights > 0).sum())} of {int(real.sum())} positions of the "
               f"{cfg.arch.name} stream carry loss, marked ⟦ ⟧:")
  lines.append(f"  stream: {render_stream(vocabulary, tokens[real], weights[real])}")
  return lines


def resolve_config() -> builder.RunConfig:
  """The run as `objectax train` resolves it, except that an architecture the objective
  cannot run is replaced by the first that can: `objectax inspect bert_mlm` should show
  BERT's example, not fail because the default architecture is the causal decoder. The
  header names the architecture used."""
  return builder.resolve(fallback_arch=True)


def inspect(cfg: builder.RunConfig, *, seed: int = 0, text: str | None = None) -> str:
  """A few lines describing one example of the configured objective on its architecture.

  For a mixture objective (UL2) it shows one example of every component, each headed by
  its name, objective, settings and share of the mixture.
  """
  pydocs.keep_tensorflow_off_accelerators()
  ti = input_pipeline.build_task_input(cfg)
  lengths = dict(ti.task_feature_lengths)
  obj = cfg.objective
  arch_name = cfg.arch.name
  if cfg.exp.task:
    return _inspect_task(cfg, ti, seed, text)
  lines = [f"objective {cfg.exp.objective} {cfg.objective_cfg} on {arch_name}, token budget "
           f"{cfg.exp.sequence_length} -> {lengths}, seed {seed}"]
  if obj.mixture is None:
    example = one_example(ti.task, functools.partial(obj.preprocess, cfg=cfg.objective_cfg),
                          ti.task.output_features, lengths, ti.vocabulary, seed=seed, text=text)
    return "\n".join(lines + _render(cfg, ti, example, obj.features))
  components = obj.mixture(cfg.objective_cfg, cfg.exp.sequence_length, ti.vocabulary)
  total = sum(c.rate for c in components)
  for c in components:
    task = seqio.get_mixture_or_task(f"{ti.task.name}_{c.name}")  # Mixture.tasks is sorted
    example = one_example(task, functools.partial(mixture_lib.preprocess_component, component=c),
                          task.output_features, lengths, ti.vocabulary, seed=seed, text=text)
    lines.append(f"--- {c.name}: {c.objective.name} {c.cfg}, share {c.rate / total:.1%}")
    lines += _render(cfg, ti, example, obj.features)
  return "\n".join(lines)


def _inspect_task(cfg: builder.RunConfig, ti: input_pipeline.TaskInput, seed: int,
                  text: str | None) -> str:
  """One validation example of each task a run on `Experiment.task` reads (one per
  mixture component, with its share), laid out as training lays it out."""
  if text is not None:
    from objectax.models.registry import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"--text applies to an objective; task {cfg.exp.task!r} makes its "
                      "examples from its own data (drop --text)")
  lines = [f"task {cfg.exp.task} on {cfg.arch.name}, lengths {dict(ti.task_feature_lengths)}"
           f" (long examples: {cfg.exp.long_examples}), seed {seed}"]
  total = sum(c.rate for c in ti.components)
  for c in ti.components:
    one = dataclasses.replace(ti, components=(c,))
    ds = input_pipeline.task_dataset(one, "validation", shuffle=True, seed=seed,
                                     shard_info=None, num_epochs=None)
    example = input_pipeline.read_records(lambda ds=ds: next(ds.take(1).as_numpy_iterator()))
    if len(ti.components) > 1:
      lines.append(f"--- {c.name}, share {c.rate / total:.1%}")
    lines += _render(cfg, ti, example, cfg.objective.features)
  return "\n".join(lines)
