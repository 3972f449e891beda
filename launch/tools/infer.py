"""`objectax infer --workdir=DIR --task=TASK`: a run's predictions for every example of a
registered seqio task, written as JSON lines like t5x's infer output.

Any registered task or mixture: the built-in `{corpus}_{objective}` tasks (registered
again with the run's vocabulary and sequence length), or a task of the user's own module
(the run's recorded modules are imported; `--module` adds others). A mixture is inferred
task by task, one file each.

What is decoded from each example, with the run's own layout and cache:

- a task with inputs: the example's tokenized inputs are the prompt, exactly as training
  reads them (the encoder's inputs for the encoder-decoder; the start of the stream for
  the causal and prefix decoders, bidirectional for the latter); the targets are the
  reference;
- a task with targets only (language modelling): the first half of each example is the
  prompt and the second half the reference;
- the encoder-only model predicts each sentinel position's token in one pass (argmax).

A prompt longer than the model's length is cut to it (the encoder keeps the start, as
seqio's trimming does; a decoder keeps the end, the context nearest the continuation),
the count is reported, and the file's "inputs" is then the text the model was given. Sampling gives each example a key of its own (the seed and the
example's index), so predictions do not depend on the batch size.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, Sequence


from objectax.data import any_task, tasks
from objectax.data import vocab as vocab_lib
from objectax.launch import input_pipeline, metrics
from objectax.launch.tools import generate as generate_lib
from objectax.models import decoding
from objectax.models.registry import ConfigError

EOS_ID = decoding.EOS_ID


def _text(vocabulary, ids) -> str:
  return vocabulary.decode([int(i) for i in ids if i not in (0, EOS_ID)])


def _pretokenized(ex, key: str) -> Optional[str]:
  value = ex.get(f"{key}_pretokenized")
  if value is None:
    return None
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Example:
  """One example: the prompt decoded from, and the texts written beside the prediction."""

  def __init__(self, index: int, prompt: list[int], inputs: str, targets: str,
               reference_ids: list[int], mask_positions: Optional[list[int]] = None):
    self.index, self.prompt, self.inputs, self.targets = index, prompt, inputs, targets
    self.reference_ids = reference_ids
    self.mask_positions = mask_positions


def make_example(index: int, ex: dict, vocabulary, *, one_pass: bool,
                 encoder_inputs: bool) -> Example:
  """The prompt and texts of one tokenized task example (see the module docstring)."""
  targets = [int(i) for i in ex["targets"]]
  if one_pass:
    inputs = [int(i) for i in ex["inputs"]]
    first = vocabulary.vocab_size - vocabulary.extra_ids
    masked = [p for p, t in enumerate(inputs) if t >= first]
    aligned = len(inputs) == len(targets)
    reference = [targets[p] for p in masked] if aligned else targets
    return Example(index, inputs, _pretokenized(ex, "inputs") or _text(vocabulary, inputs),
                   _text(vocabulary, reference), reference, masked)
  if "inputs" in ex:
    inputs = [int(i) for i in ex["inputs"]]
    return Example(index, inputs, _pretokenized(ex, "inputs") or _text(vocabulary, inputs),
                   _pretokenized(ex, "targets") or _text(vocabulary, targets), targets)
  body = [i for i in targets if i != EOS_ID]
  half = len(body) // 2
  prompt, rest = body[:half], targets[half:]
  if encoder_inputs:
    prompt = prompt + [EOS_ID]
  return Example(index, prompt, _text(vocabulary, body[:half]), _text(vocabulary, rest), rest)


def _check(opened, task, split: str, max_examples: Optional[int], batch_size: int,
           strategy: decoding.Strategy) -> None:
  """One-line refusals, before anything is read, restored or compiled."""
  if max_examples is not None and max_examples < 1:
    raise ConfigError(f"--max_examples {max_examples} must be >= 1 (or left out: every example)")
  if batch_size < 1:
    raise ConfigError(f"--batch_size {batch_size} must be >= 1")
  if not decoding.can_decode(opened.model) and strategy != decoding.Strategy():
    raise ConfigError("the encoder-only model fills each blank with its argmax in one pass; "
                      "drop --temperature/--top_k/--top_p/--beams")
  check_task(opened, task, split)


def check_task(opened, task, split: str) -> None:
  """Whether the run can decode every task of `task` (a task or mixture) on `split`: the
  split exists, and the task's layout is one the architecture decodes."""
  one_pass = not decoding.can_decode(opened.model)
  for leaf, _ in any_task.leaves(task):
    if split not in leaf.splits:
      raise ConfigError(f"--split {split!r}: task {leaf.name!r} has splits "
                        f"{', '.join(leaf.splits)}")
    features = any_task.layout_features(leaf)
    builtin = tasks.BUILTIN.get(leaf.name)
    aligned = builtin is not None and any_task.lengths(
        any_task.TaskSettings(leaf.name), opened.cfg.exp.sequence_length).aligned
    if aligned and not one_pass:
      raise ConfigError(f"task {leaf.name!r} predicts tokens in place (an encoder-only "
                        f"objective); this run's {opened.cfg.arch.name} decodes left to right: "
                        "infer a task with inputs and targets, or a language-modelling task")
    if one_pass and features != ("inputs", "targets"):
      raise ConfigError(f"the encoder-only model fills masked inputs; task {leaf.name!r} has "
                        f"no inputs (features {features})")


def dataset_lengths(task, sequence_length: int) -> Optional[dict]:
  """The `sequence_length` that `task.get_dataset` needs to read examples whole: a built-in
  task's feature lengths (its preprocessors cut to the objective's), else None."""
  if task.name in tasks.BUILTIN:
    return any_task.lengths(any_task.TaskSettings(task.name), sequence_length).feature_lengths()
  return None


def _read(leaf, split: str, sequence_length: int, max_examples: Optional[int], say):
  """The task's examples of `split`, tokenized and preprocessed, in order, untrimmed."""
  t0 = time.perf_counter()
  ds = leaf.get_dataset(dataset_lengths(leaf, sequence_length), split=split, shuffle=False, seed=0, num_epochs=1,
                        trim_output_features=False)
  if max_examples is not None:
    ds = ds.take(max_examples)
  examples = input_pipeline.read_records(lambda: list(ds.as_numpy_iterator()))
  say(f"{leaf.name} {split}: {len(examples)} example(s) read in "
      f"{time.perf_counter() - t0:.1f} s")
  return examples


def _bucket(n: int, cap: int) -> int:
  """The next power of two >= n (at least 8), at most `cap`: few compiled widths."""
  return min(max(8, 1 << (max(n, 1) - 1).bit_length()), cap)


def predict(decoder: generate_lib.Decoder, raw: Sequence[dict], *, batch_size: int = 32,
            max_new_tokens: Optional[int] = None,
            strategy: decoding.Strategy = decoding.Strategy(), indices: Optional[Sequence[int]] = None,
            say=lambda msg: None, progress_stream=None,
            show_progress: bool = True) -> tuple[list[Example], list[list[int]], dict]:
  """Decodes tokenized task examples (dicts with "targets", and "inputs" if the task has
  them; `indices` their example ids, default their positions): (the examples, each one's
  output ids, counts). See the module docstring for the prompt of each kind of task."""
  opened = decoder.opened
  vocabulary, model, budget = opened.vocabulary, opened.model, opened.budget
  one_pass = not decoding.can_decode(model)
  indices = list(range(len(raw))) if indices is None else list(indices)
  examples = [make_example(i, ex, vocabulary, one_pass=one_pass,
                           encoder_inputs=decoding.reads_inputs_apart(model))
              for i, ex in zip(indices, raw)]
  stream = opened.stream
  wanted = max_new_tokens or max(len(e.reference_ids) for e in examples)
  if stream == "decoder":  # BOS + prompt + new tokens share the decoder's length
    new = max(1, min(wanted, budget["decoder"] - 2))
    cap = budget["decoder"] - 1 - new
  else:
    new = min(wanted, budget.get("decoder", wanted))
    cap = budget["encoder"]
  if max_new_tokens and new < max_new_tokens:
    say(f"--max_new_tokens {max_new_tokens} capped at {new}: the run's decoder length is "
        f"{budget['decoder']}")
  cut = 0
  for e in examples:
    if len(e.prompt) > cap:
      cut += 1
      if stream == "decoder":
        e.prompt = e.prompt[-cap:]
      elif e.prompt[-1] == EOS_ID:  # keep the start; the inputs still end with EOS
        e.prompt = e.prompt[:cap - 1] + [EOS_ID]
      else:
        e.prompt = e.prompt[:cap]
      e.inputs = _text(vocabulary, e.prompt)  # what the model was given
  if cut:
    say(f"{cut} of {len(examples)} prompts were longer than {cap} tokens (the run's {stream} "
        f"length{' less the tokens generated' if stream == 'decoder' else ''}) and were cut")
  progress = metrics.Progress(len(examples), 0, stream=progress_stream, enabled=show_progress)
  rows = max(batch_size, 1)
  outputs: list[list[int]] = []
  t0 = time.perf_counter()
  for start in range(0, len(examples), rows):
    batch = examples[start:start + rows]
    longest = max(len(e.prompt) for e in batch) + (stream == "decoder")
    out = decoder.decode([e.prompt for e in batch], new, strategy,
                         row_ids=[e.index for e in batch],
                         width=_bucket(longest, cap + (stream == "decoder")), pad_to=rows)
    # The encoder-only model's output is (sentinel, token) pairs: its tokens are the text.
    outputs += [list(o[1::2]) if one_pass else list(o) for o in out]
    progress.count(start + len(batch), "examples")
  progress.close()
  counts = {"examples": len(examples), "seconds": time.perf_counter() - t0, "cut": cut,
            "new_tokens": new}
  return examples, outputs, counts


def infer_task(decoder: generate_lib.Decoder, leaf, split: str, max_examples: Optional[int],
               batch_size: int, max_new_tokens: Optional[int], strategy: decoding.Strategy,
               out_path: str, say, progress_stream=None) -> dict:
  """Writes `out_path` (JSON lines: index, inputs, targets, prediction) for one task;
  returns counts and timing."""
  raw = _read(leaf, split, decoder.opened.cfg.exp.sequence_length, max_examples, say)
  if not raw:
    raise ConfigError(f"task {leaf.name!r} has no {split} examples")
  examples, outputs, counts = predict(decoder, raw, batch_size=batch_size,
                                      max_new_tokens=max_new_tokens, strategy=strategy,
                                      say=say, progress_stream=progress_stream)
  vocabulary = decoder.opened.vocabulary
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  tmp = out_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for e, out in zip(examples, outputs):
      f.write(json.dumps({"index": e.index, "inputs": e.inputs, "targets": e.targets,
                          "prediction": _text(vocabulary, out)}, ensure_ascii=False) + "\n")
  os.replace(tmp, out_path)
  return counts


def infer(workdir: str, step: Optional[int], task_name: str, split: str = "validation",
          max_examples: Optional[int] = None, batch_size: int = 32,
          max_new_tokens: Optional[int] = None, strategy: decoding.Strategy = decoding.Strategy(),
          bindings: Sequence[str] = (), say=None) -> list[str]:
  """Infers every task of `task_name` (one, or a mixture's); returns the files written."""
  say = say or (lambda msg: print(f"objectax infer: {msg}", file=sys.stderr, flush=True))
  if not task_name:
    raise ConfigError("objectax infer needs --task=TASK (a registered seqio task or mixture; "
                      "`objectax list` shows them)")
  if max_new_tokens is not None and max_new_tokens < 1:
    raise ConfigError(f"--max_new_tokens {max_new_tokens} must be >= 1")
  opened = generate_lib.open_for_decoding(workdir, step, bindings)
  task = any_task.lookup(task_name, flag="--task")
  _check(opened, task, split, max_examples, batch_size, strategy)
  found, task_vocabulary = any_task.components(task_name, opened.cfg)
  if vocab_lib.fingerprint(task_vocabulary) != vocab_lib.fingerprint(opened.vocabulary):
    raise ConfigError(
        f"task {task_name!r} uses the vocabulary {vocab_lib.fingerprint(task_vocabulary)}, this "
        f"run {vocab_lib.fingerprint(opened.vocabulary)}: its ids would mean other pieces")
  decoder = generate_lib.Decoder.restore(opened, workdir)
  say(decoder.describe(f"task {task_name}, split {split}"))
  written = []
  for component in found:
    path = os.path.join(workdir, "infer", f"{component.name}_{split}_{opened.step}.jsonl")
    counts = infer_task(decoder, component.task, split, max_examples, batch_size,
                        max_new_tokens, strategy, path, say)
    made = ("one token per masked position" if not decoding.can_decode(opened.model)
            else f"{counts['new_tokens']} new tokens at most")
    say(f"{counts['examples']} predictions ({made}) in "
        f"{counts['seconds']:.1f} s, {counts['examples'] / max(counts['seconds'], 1e-9):.1f} "
        f"examples/s -> {path}")
    written.append(path)
  return written


def run(workdir: Optional[str], step: Optional[int], task_name: Optional[str], split: str,
        max_examples: Optional[int], batch_size: int, max_new_tokens: Optional[int],
        strategy: decoding.Strategy, bindings: Sequence[str]) -> None:
  """The command: prints the path of each file written."""
  if not workdir:
    raise ConfigError("objectax infer needs --workdir=DIR (the workdir of a training run)")
  for path in infer(workdir, step, task_name or "", split, max_examples, batch_size,
                    max_new_tokens, strategy, bindings):
    print(path)
