"""Downstream evaluation: a run scored on text-to-text tasks by `seqio.Evaluator`.

The tasks are ordinary registered seqio Tasks with `metric_fns` (ours in
data/downstream.py and data/t5_downstream.py, or a user's). seqio's Evaluator does what it
does for t5x: it reads and caches the validation examples, calls our `predict_fn` and
`score_fn` with them, decodes the predicted ids with the task's vocabulary, applies the
task's `postprocess_fn` to predictions and targets, and calls the task's metric functions
(`fn(targets, predictions)` or `fn(targets, scores)`).

- `predict_fn`: each example decoded by the run with its own layout and cache, exactly as
  `objectax infer` does (launch/tools/infer.py): the inputs are the prompt as training
  reads them; greedy unless a strategy is given.
- `score_fn`: the summed log-likelihood of each example's targets given its inputs, with
  the architecture's own scoring layout (the prefix decoder's bidirectional prefix, the
  encoder-decoder's encoder input).

The examples reach our functions unpadded (a pass-through feature converter): the decoder
pads them itself. Used by `objectax eval --task` and, every `eval_every` steps, by
training with `TrainConfig.eval_tasks`; both write the same figures.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

from absl import logging
import numpy as np
import seqio

from objectax.data import any_task, text_metrics
from objectax.data import vocab as vocab_lib
from objectax.launch.eval import yardstick, zeroshot
from objectax.launch.tools import generate as generate_lib
from objectax.launch.tools import infer as infer_lib
from objectax.models import decoding, scoring
from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError

EOS_ID = decoding.EOS_ID


class _AsGiven(seqio.PassThroughFeatureConverter):
  """Hands the task's examples to predict_fn and score_fn as they are (ids, unpadded)."""
  TASK_FEATURES = {}

  def __init__(self):  # pylint: disable=super-init-not-called
    self._pack = False


def leaf_tasks(name: str, flag: str = "--task") -> tuple[Any, list[seqio.Task]]:
  """The task or mixture `name` and the tasks it evaluates (a mixture's tasks), each checked
  to have metrics."""
  found = any_task.lookup(name, flag=flag)
  leaves = [t for t, _ in any_task.leaves(found)]
  scored = [t for t in leaves if t.metric_fns]
  if not scored:
    raise ConfigError(f"{flag}={name!r} has no metric_fns to evaluate with; give the task "
                      "metric_fns (seqio's fn(targets, predictions) convention)")
  return found, scored


def check(opened: generate_lib.Opened, names: Sequence[str], split: str = "validation",
          flag: str = "--task") -> list[seqio.Task]:
  """Every task of `names`, checked before anything is restored or compiled: registered,
  has metrics whose packages are installed, has the split, takes the run's layout and
  vocabulary. Built-in tasks are registered again with the run's settings."""
  found = []
  for name in names:
    registered, leaves = leaf_tasks(name, flag)
    for task in leaves:
      text_metrics.check_available(task.metric_fns)
      if hasattr(task.source, "check_available"):  # e.g. TFDS data not prepared
        task.source.check_available()
    infer_lib.check_task(opened, registered, split)
    components, vocabulary = any_task.components(name, opened.cfg)
    if vocab_lib.fingerprint(vocabulary) != vocab_lib.fingerprint(opened.vocabulary):
      raise ConfigError(
          f"task {name!r} uses the vocabulary {vocab_lib.fingerprint(vocabulary)}, the run "
          f"{vocab_lib.fingerprint(opened.vocabulary)}: its ids would mean other pieces")
    metric_names = {t.name for t in leaves}
    found += [c.task for c in components if c.name in metric_names]
  return found


def log_likelihoods(decoder: generate_lib.Decoder, raw: Sequence[dict],
                    batch_size: int = 16) -> list[float]:
  """The summed log-probability of each example's targets given its inputs (nats)."""
  opened = decoder.opened
  spec = arch_registry.get(opened.cfg.exp.arch)
  budget = opened.budget
  pairs = []
  for ex in raw:
    inputs = np.asarray(ex.get("inputs", []), np.int32)
    targets = np.asarray(ex["targets"], np.int32)
    room = (budget["decoder"] - len(targets) if opened.stream == "decoder"
            else budget["encoder"])
    if len(inputs) > room:  # the context nearest the targets is kept
      inputs = inputs[-room:] if opened.stream == "decoder" else inputs[:room]
    aligned = (inputs, targets) if len(inputs) == len(targets) else None
    pairs.append(scoring.Pair(inputs, targets, np.ones(len(targets), bool), 0, aligned))
  longest = max(max(len(p.inputs) + len(p.targets), 1) for p in pairs)
  length = -(-longest // 8) * 8
  scorer = yardstick.make_scorer(opened.model, spec.targets_key)
  rows = -(-batch_size // decoder.dp) * decoder.dp
  with decoder.run.activate():
    ll_N = zeroshot.pair_log_likelihoods(scorer, decoder.params,
                                         spec.score_layout(pairs, length), rows,
                                         decoder.run.put)
  return [float(x) for x in ll_N]


def evaluate_tasks(decoder: generate_lib.Decoder, checked: Sequence[seqio.Task], *,
                   split: str = "validation", max_examples: Optional[int] = None,
                   batch_size: int = 32, strategy: decoding.Strategy = decoding.Strategy(),
                   step: Optional[int] = None, say: Callable[[str], None] = lambda m: None,
                   show_progress: bool = True) -> dict[str, dict]:
  """{task: {"metrics": {name: value}, "examples": N, ...}} for every task of `checked`
  (what `check` returned: checked once, before the restore), each scored by its own
  seqio.Evaluator."""
  opened = decoder.opened
  results = {}
  for task in checked:
    t0 = time.perf_counter()
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # not its note that no logger was asked for
    try:
      evaluator = seqio.Evaluator(
          task.name, feature_converter=_AsGiven(), eval_split=split, seed=0,
          sequence_length=infer_lib.dataset_lengths(task, opened.cfg.exp.sequence_length),
          num_examples=max_examples, use_memory_cache=True, async_compute_metrics=False)
    finally:
      logging.set_verbosity(verbosity)
    counted = {}

    def predict_fn(ds, model_feature_shapes=None):
      del model_feature_shapes
      items = list(ds.as_numpy_iterator())
      _, outputs, counts = infer_lib.predict(
          decoder, [ex for _, ex in items], indices=[int(i) for i, _ in items],
          batch_size=batch_size, strategy=strategy, say=say, show_progress=show_progress)
      counted.update(counts)
      # seqio stacks the predictions into one array: each is cut at its EOS and padded
      # with 0 (decoded as nothing), as t5x's fixed-length decodes are.
      ids = [[t for t in out if t != EOS_ID] for out in outputs]
      width = max(len(x) for x in ids) + 1
      return [(int(i), x + [EOS_ID] + [0] * (width - len(x) - 1))
              for (i, _), x in zip(items, ids)]

    def score_fn(ds, model_feature_shapes=None):
      del model_feature_shapes
      items = list(ds.as_numpy_iterator())
      scores = log_likelihoods(decoder, [ex for _, ex in items])
      counted.setdefault("examples", len(items))
      return [(int(i), s) for (i, _), s in zip(items, scores)]

    say(f"{task.name} {split}: evaluating")
    future, outputs = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict_fn,
                                         score_fn=score_fn)
    values = future.result()[task.name]
    evaluator.close()
    results[task.name] = {
        "metrics": {k: float(v) for k, v in values.items()},
        "examples": counted.get("examples", 0),
        "seconds": time.perf_counter() - t0,
    }
    predicted = outputs[task.name].get(seqio.metrics.ModelOutputType.PREDICTION)
    if predicted is not None:
      results[task.name].update(_per_example(task, evaluator, predicted, values))
    say(f"{task.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                     results[task.name]["metrics"].items())
        + f" over {results[task.name]['examples']} examples")
  return results


def _postprocessed(task: seqio.Task, evaluator, predicted) -> tuple[list, list]:
  """(targets, predictions) as seqio's metrics see them: decoded with the task's
  vocabulary, then through its postprocess_fn."""
  vocabulary = task.output_features["targets"].vocabulary
  targets, predictions = [], []
  for ex, tokens in zip(evaluator.cached_task_datasets[task.name].as_numpy_iterator(),
                        predicted):
    raw = ex.get("targets_pretokenized")
    target = raw.decode("utf-8") if isinstance(raw, bytes) else (
        raw if raw is not None else vocabulary.decode([int(t) for t in ex["targets"]]))
    prediction = vocabulary.decode([int(t) for t in tokens])
    if task.postprocess_fn is not None:
      target = task.postprocess_fn(target, example=ex, is_target=True)
      prediction = task.postprocess_fn(prediction, example=ex, is_target=False)
    targets.append(target)
    predictions.append(prediction)
  return targets, predictions


def _plain(value):
  """A JSON-able copy of a postprocessed target or prediction."""
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_plain(v) for v in value]
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  if isinstance(value, np.generic):
    return value.item()
  return value


def _per_example(task: seqio.Task, evaluator, predicted, values) -> dict:
  """Each example's target and prediction, and, for every metric that is a mean over
  examples (exact match, accuracy, ROUGE), each example's value: what a paired bootstrap
  resamples. Corpus-level metrics (BLEU, F1, correlations) have no per-example values."""
  targets, predictions = _postprocessed(task, evaluator, predicted)
  per: dict[str, list[float]] = {}
  for fn in task.predict_metric_fns:
    singles = [fn([t], [p]) for t, p in zip(targets, predictions)]
    for key in singles[0] if singles else ():
      column = [float(x[key]) for x in singles]
      corpus = float(values.get(key, float("nan")))
      if abs(np.mean(column) - corpus) <= 1e-6 * max(1.0, abs(corpus)):
        per[key] = column
  return {"per_example": per, "targets": _plain(targets), "predictions": _plain(predictions)}


def flat_metrics(results: dict[str, dict]) -> dict[str, float]:
  """{"task/<task>/<metric>": value}: the keys training writes into metrics.jsonl."""
  return {f"task/{task}/{k}": v for task, r in results.items() for k, v in r["metrics"].items()}


def render_table(results: dict[str, dict]) -> str:
  lines = [f"{'task':<32} {'metric':<20} {'value':>8} {'examples':>8}"]
  for task, r in results.items():
    for k, v in r["metrics"].items():
      lines.append(f"{task:<32} {k:<20} {v:>8.2f} {r['examples']:>8}")
  return "\n".join(lines)


def run(workdir: str, step: Optional[int], names: Sequence[str], *, split: str = "validation",
        max_examples: Optional[int] = None, batch_size: int = 32,
        strategy: decoding.Strategy = decoding.Strategy(), bindings: Sequence[str] = (),
        say: Callable[[str], None] = lambda m: None) -> dict:
  """`objectax eval --task`: scores the checkpoint and writes DIR/eval/tasks_<step>.json."""
  opened = generate_lib.open_for_decoding(workdir, step, bindings)
  checked = check(opened, names, split)  # one-line refusals before the restore
  decoder = generate_lib.Decoder.restore(opened, workdir)
  say(decoder.describe(f"tasks {', '.join(names)}, split {split}"))
  results = evaluate_tasks(decoder, checked, split=split, max_examples=max_examples,
                           batch_size=batch_size, strategy=strategy, step=opened.step, say=say)
  path = os.path.join(workdir, "eval", f"tasks_{opened.step}.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"step": opened.step, "split": split, "tasks": results}, f, indent=1)
  os.replace(path + ".tmp", path)
  say(f"wrote {path}")
  return results


def main(workdir: Optional[str], step: Optional[int], names: Sequence[str], *,
         split: str = "validation", max_examples: Optional[int] = None,
         bindings: Sequence[str] = ()) -> None:
  """The command: prints the table of every task's metrics."""
  if not workdir:
    raise ConfigError("objectax eval needs --workdir=DIR (the workdir of a training run)")
  if max_examples is not None and max_examples < 1:
    raise ConfigError(f"--max_examples {max_examples} must be >= 1 (or left out: every example)")
  say = lambda msg: print(f"objectax eval: {msg}", file=sys.stderr, flush=True)
  results = run(workdir, step, names, split=split, max_examples=max_examples,
                bindings=bindings, say=say)
  print(render_table(results))
