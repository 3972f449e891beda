"""`objectax inspect OBJECTIVE`: one real example as text, with the loss positions marked.

The example goes through exactly what training uses: the objective's preprocessor at its
exact lengths, then the architecture's feature converter. Sentinels, mode tokens and EOS
are shown by name, and the stretches of the model's stream that carry loss weight are
wrapped in ⟦ ⟧, so one glance shows what the objective asks the model to predict.
"""
from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from objectax.data import pydocs
from objectax.launch import input_pipeline
from objectax.launch.train import Resolved

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


def one_example(cfg: Resolved, ti: input_pipeline.TaskInput, *, seed: int,
                text: str | None) -> dict[str, np.ndarray]:
  """The objective's first example from `text` (repeated as needed) or the validation split."""
  lengths = ti.task_feature_lengths
  if text is None:
    ds = ti.task.get_dataset(sequence_length=lengths, split="validation", shuffle=True,
                             seed=seed, num_epochs=None)
  else:
    vocabulary = ti.vocabulary
    ds = tf.data.Dataset.from_tensors({"targets": tf.constant(text)}).repeat()
    ds = ds.map(lambda ex: {"targets": vocabulary.encode_tf(ex["targets"])})
    with seqio.utils.map_seed_manager(seed):
      ds = cfg.objective.preprocess(ds, lengths, ti.task.output_features, cfg=cfg.objective_cfg)
  return next(ds.take(1).as_numpy_iterator())


def inspect(cfg: Resolved, *, seed: int = 0, text: str | None = None) -> str:
  """A few lines describing one example of the configured objective on its architecture."""
  pydocs.keep_tensorflow_off_accelerators()
  ti = input_pipeline.build_task_input(cfg.exp, cfg.objective_cfg, cfg.vocab, cfg.arch)
  example = one_example(cfg, ti, seed=seed, text=text)
  converted = next(cfg.arch.feature_converter(False)(
      tf.data.Dataset.from_tensors(example), ti.task_feature_lengths).as_numpy_iterator())
  tokens = converted[cfg.arch.targets_key]
  weights = converted[cfg.arch.weights_key]
  vocabulary = ti.vocabulary
  lengths = dict(ti.task_feature_lengths)
  lines = [f"objective {cfg.exp.objective} {cfg.objective_cfg} on {cfg.exp.arch}, token budget "
           f"{cfg.exp.sequence_length} -> {lengths}, seed {seed}"]
  for feature in cfg.objective.features:
    lines.append(f"{feature:>8}: {_token_text(vocabulary, list(example[feature]))}")
  real = tokens != 0
  lines.append(f"    loss: {int((weights > 0).sum())} of {int(real.sum())} positions of the "
               f"{cfg.exp.arch} stream carry loss, marked ⟦ ⟧:")
  lines.append(f"  stream: {render_stream(vocabulary, tokens[real], weights[real])}")
  return "\n".join(lines)
