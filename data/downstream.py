"""Three offline fine-tuning tasks made from the standard library's own source code.

Downstream evaluation needs labelled examples that exist on a laptop with no network; the
stdlib that the embedded corpus (`objectax.data.pydocs`) reads carries three kinds of
label for free. Each task is a seqio Task of {"inputs": text, "targets": text} with
splits "train" and "validation", the default vocabulary (EOS appended), a postprocessor
that strips whitespace, and the lengths it trains with registered with
`task_lengths.set_default_lengths`:

  pydocs_summary  (generative, ROUGE-L; inputs 128, targets 32 tokens)
      A class/function docstring whose first line is a one-line summary (PEP 257: the
      second line is blank), one sentence of 3-20 words ending in ".", with a body of at
      least 15 words that does not contain it. inputs: "summarize: " + the body (cleaned
      as the corpus cleans text, on one line, cut at a word boundary to at most 300
      characters so it fits in ~100 tokens); targets: the summary line. Only docstrings
      laid out that way: the summary line is what the author wrote as the summary, and
      splitting a paragraph into sentences instead breaks on "e.g." and friends.
  pydocs_package  (classification, accuracy; inputs 128, targets 8 tokens)
      A module/class/function docstring of at least 6 words (shorter ones, "Return
      self.", carry no cue) from a module inside one of the packages PACKAGE_LABELS =
      asyncio, email, http, multiprocessing, unittest, xml; inputs: "package: " + the
      docstring (cut as above); targets: the package name. These six have enough
      docstrings on both sides of the split with none dominant (8-30% of train, 10-26%
      of validation), exist on every supported Python, and their prose has lexical cues
      (event loops, MIME headers, processes, requests, test cases, elements) that a tiny
      model can pick up.
  pydocs_default  (short answer, exact match; inputs 128, targets 16 tokens)
      One example per parameter whose default is a literal (what ast.literal_eval
      accepts: numbers, strings, bytes, containers of them; a name such as `_sentinel`
      or `subprocess.PIPE` is not a value): inputs: "question: what is the default of
      <param>? signature: <name>(<params>)", the parameters as written (with `/`, `*`,
      `*args`, `**kwargs`; annotations left out: they cost tokens and say nothing about
      the default), every default in its source text; targets: that default exactly as
      written in the source (`'r'`, `-1`, `0o666`, `"utf-8"`). The defaults None, True
      and False are left out (two thirds of all defaults: one answer would dominate),
      as are defaults longer than 20 characters, defaults whose spaces the tokenizer
      would collapse (no model could write them), and questions longer than 250
      characters (so inputs fit in ~100 tokens).

Split rule. Examples come only from stdlib modules that are documents of the pretraining
*train* split (`pydocs.split_documents("train")`), so no example comes from a document
held out of pretraining validation. Each module then goes to downstream validation iff
the second 8 bytes of sha1(doc id), as an integer, are 0 mod 5 (about 1 in 5); the
pretraining split reads the first 8 bytes, so the two assignments are independent. The
splits therefore share no source document, and a module never moves when others change.
Within a split an input is kept once (first in order), and a validation example whose
input also occurs in train is dropped, so a model cannot score by memorising train.
Validation is capped at MAX_VALIDATION examples (chosen by a hash of the example, then
kept in order) so that evaluating a task on a 2-core CPU stays quick.

Examples are in a fixed order (modules sorted by id, nodes in source order) and are built
once, on first read (`examples`); importing this module only registers the tasks. The
sources are parsed with `ast`, never imported, as in `pydocs`.

`python -m objectax.data.downstream` prints each task's sizes and two validation
baselines: "majority" (always the most frequent train target; ties go to the smaller
string) and "copy" (the input itself; for the summary task the body without its prefix).
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import functools
import hashlib
import inspect
import re
import sys
import sysconfig
from pathlib import Path
from typing import Callable, Iterator, Sequence

import seqio
import tensorflow as tf

from objectax.data import task_lengths
from objectax.data import pydocs
from objectax.data import text_metrics
from objectax.data import vocab as vocab_lib

SUMMARY, PACKAGE, DEFAULT = "pydocs_summary", "pydocs_package", "pydocs_default"
TASKS = (SUMMARY, PACKAGE, DEFAULT)
MIXTURE = "pydocs_downstream"
SPLITS = ("train", "validation")

# The package task's labels: stdlib packages with enough docstrings in both splits.
PACKAGE_LABELS = ("asyncio", "email", "http", "multiprocessing", "unittest", "xml")

# About 1 in VALIDATION_MODULUS modules is downstream validation.
VALIDATION_MODULUS = 5
# Enough for a stable score, few enough to decode on a 2-core CPU in a minute or two.
MAX_VALIDATION = 300
# Docstring text in an input is cut to this many characters (at a word boundary): about
# 100 tokens of the default vocabulary at most, measured, so inputs fit in 128.
INPUT_CHARS = 300
SUMMARY_WORDS = (3, 20)  # a one-line summary, not a title ("Helpers.") or a paragraph
MIN_BODY_WORDS = 15  # enough body to summarize
MIN_PACKAGE_WORDS = 6  # fewer words carry no cue of the package
MAX_DEFAULT_CHARS = 20  # a literal answer, not an expression to reproduce
MAX_QUESTION_CHARS = 250  # ~100 tokens at most: fits inputs of 128
# Defaults left out of pydocs_default: together they are two thirds of all defaults.
TRIVIAL_DEFAULTS = frozenset({"None", "True", "False"})

# Lengths measured with the default vocabulary on CPython 3.11, EOS included: inputs at
# most 117, 111 and 87 tokens (one summary input of 300 has 160: box-drawing characters
# spelled byte by byte); targets at most 26, 3 and 12.
LENGTHS = {
    SUMMARY: {"inputs": 128, "targets": 32},
    PACKAGE: {"inputs": 128, "targets": 8},
    DEFAULT: {"inputs": 128, "targets": 16},
}

_METRICS: dict[str, Callable[..., dict]] = {
    SUMMARY: text_metrics.rouge_l,
    PACKAGE: text_metrics.accuracy,
    DEFAULT: text_metrics.exact_match,
}
_PREFIX = {SUMMARY: "summarize: ", PACKAGE: "package: "}
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclasses.dataclass(frozen=True)
class Example:
  """One example; `doc_id` is the pretraining document it comes from (for the split)."""
  doc_id: str
  inputs: str
  targets: str


def downstream_split(doc_id: str) -> str:
  """"validation" iff the second 8 bytes of sha1(doc_id) are 0 mod VALIDATION_MODULUS.

  Not the first 8 bytes: `pydocs.is_validation` reads those (mod 20), and every id that is
  0 mod 20 is 0 mod 5, so reusing them would tie this split to the pretraining one.
  """
  digest = hashlib.sha1(doc_id.encode("utf-8")).digest()
  held_out = int.from_bytes(digest[8:16], "big") % VALIDATION_MODULUS == 0
  return "validation" if held_out else "train"


def _one_line(text: str) -> str:
  return " ".join(text.split())


def _cut(text: str, limit: int = INPUT_CHARS) -> str:
  """`text` on one line, cut at a word boundary to at most `limit` characters."""
  text = _one_line(text)
  if len(text) <= limit:
    return text
  head = text[:limit + 1].rsplit(" ", 1)[0]
  return head if head else text[:limit]


class _Source:
  """A module's source, split into lines once, for `ast.get_source_segment`'s result.

  ast.get_source_segment re-splits the whole file on every call, which made building
  the examples take a minute; this returns the same text (unpadded) from lines split once.
  """

  def __init__(self, text: str):
    # Line ends as the parser counts them: \r\n, \r or \n (str.splitlines also splits
    # on \f and others, which would shift the line numbers).
    self._lines, start = [], 0
    for end in _LINE_END.finditer(text):
      self._lines.append(text[start:end.end()].encode("utf-8"))
      start = end.end()
    self._lines.append(text[start:].encode("utf-8"))

  def segment(self, node: ast.AST) -> str | None:
    """The source text of `node` (col offsets are UTF-8 byte offsets, as ast gives them)."""
    end_lineno, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset",
                                                                     None)
    if end_lineno is None or end_col is None:
      return None
    first, last = node.lineno - 1, end_lineno - 1
    if first == last:
      return self._lines[first][node.col_offset:end_col].decode("utf-8")
    return b"".join([self._lines[first][node.col_offset:], *self._lines[first + 1:last],
                     self._lines[last][:end_col]]).decode("utf-8")


def _modules() -> Iterator[tuple[str, _Source, ast.Module]]:
  """(doc id, source, tree) of each stdlib module of the pretraining train split, by id."""
  train_ids = {doc_id for doc_id, _ in pydocs.split_documents("train")}
  root = Path(sysconfig.get_paths()["stdlib"])
  for path in pydocs._stdlib_files(root):  # pylint: disable=protected-access
    doc_id = f"stdlib/{path.relative_to(root).as_posix()}"
    if doc_id not in train_ids:
      continue
    try:
      source = path.read_bytes().decode("utf-8")
      tree = ast.parse(source)
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, OSError):
      continue  # as pydocs: a file this interpreter cannot parse is not in the corpus
    yield doc_id, _Source(source), tree


def _nodes(tree: ast.Module) -> list[ast.AST]:
  """The module, then its classes and functions in source order (ast.walk is breadth-first)."""
  found = [n for n in ast.walk(tree)
           if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
  return [tree] + sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _summary_example(doc_id: str, node: ast.AST) -> Example | None:
  if isinstance(node, ast.Module):
    return None  # a module docstring's first line is often a title, not a summary
  raw = ast.get_docstring(node, clean=False)
  if not raw:
    return None
  lines = inspect.cleandoc(raw).split("\n")
  if len(lines) < 3 or lines[1].strip():
    return None  # no one-line summary followed by a blank line
  summary = _one_line(lines[0])
  body = _one_line(pydocs.clean_text("\n".join(lines[2:])))
  if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1]:
    return None
  if not summary.endswith(".") or ". " in summary:
    return None  # not one sentence: a signature ("f(x) -> y"), a title or two sentences
  if len(body.split()) < MIN_BODY_WORDS or summary in body:
    return None
  return Example(doc_id, _PREFIX[SUMMARY] + _cut(body), summary)


def _package_example(doc_id: str, node: ast.AST) -> Example | None:
  family = doc_id.split("/")[1]
  if family not in PACKAGE_LABELS or doc_id.count("/") < 2:
    return None  # not inside one of the labelled packages
  raw = ast.get_docstring(node, clean=False)
  text = _one_line(pydocs.clean_text(raw)) if raw else ""
  if len(text.split()) < MIN_PACKAGE_WORDS:
    return None
  return Example(doc_id, _PREFIX[PACKAGE] + _cut(text), family)


def _is_literal(node: ast.expr) -> bool:
  """Whether `node` is a literal value (what ast.literal_eval accepts: numbers, strings,
  bytes, and tuples, lists, dicts and sets of them)."""
  try:
    ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    return False
  return True


def _default_examples(doc_id: str, source: _Source, node: ast.AST) -> list[Example]:
  """One example per parameter of `node` whose default is a short non-trivial literal."""
  if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
    return []
  args = node.args
  positional = args.posonlyargs + args.args
  defaults = dict(zip((a.arg for a in positional[len(positional) - len(args.defaults):]),
                      args.defaults))
  defaults.update((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults)
                  if d is not None)
  written = {name: source.segment(d) for name, d in defaults.items()}
  if any(text is None for text in written.values()):
    return []

  def param(arg: ast.arg) -> str:
    if arg.arg not in written:
      return arg.arg
    # On one line: a default written over several lines reads the same to the tokenizer.
    return f"{arg.arg}={_one_line(written[arg.arg])}"

  params = [param(a) for a in args.posonlyargs]
  if args.posonlyargs:
    params.append("/")
  params += [param(a) for a in args.args]
  if args.vararg:
    params.append(f"*{args.vararg.arg}")
  elif args.kwonlyargs:
    params.append("*")
  params += [param(a) for a in args.kwonlyargs]
  if args.kwarg:
    params.append(f"**{args.kwarg.arg}")
  signature = f"{node.name}({', '.join(params)})"
  found = []
  for name in [a.arg for a in positional + args.kwonlyargs if a.arg in written]:
    answer = written[name]
    if answer in TRIVIAL_DEFAULTS or len(answer) > MAX_DEFAULT_CHARS:
      continue
    if not _is_literal(defaults[name]):
      continue  # a name or expression (`_sentinel`, `subprocess.PIPE`): not a value
    if answer != _one_line(answer):
      continue  # e.g. '  ': SentencePiece collapses the spaces, so no model could say it
    question = f"question: what is the default of {name}? signature: {signature}"
    if len(question) <= MAX_QUESTION_CHARS:
      found.append(Example(doc_id, question, answer))
  return found


def _select(train: list[Example], validation: list[Example]) -> dict[str, tuple[Example, ...]]:
  """Each input once per split, validation inputs not seen in train, validation capped."""
  def unique(items: Sequence[Example], exclude: set[str]) -> list[Example]:
    seen = set(exclude)
    kept = []
    for ex in items:
      if ex.inputs not in seen:
        seen.add(ex.inputs)
        kept.append(ex)
    return kept

  train = unique(train, set())
  validation = unique(validation, {ex.inputs for ex in train})
  if len(validation) > MAX_VALIDATION:
    # A hash picks the kept ones: spread over all validation modules, not the first few.
    rank = sorted(range(len(validation)), key=lambda i: hashlib.sha1(
        f"{validation[i].doc_id}\n{validation[i].inputs}".encode("utf-8")).digest())
    keep = set(rank[:MAX_VALIDATION])
    validation = [ex for i, ex in enumerate(validation) if i in keep]
  return {"train": tuple(train), "validation": tuple(validation)}


def build_examples() -> dict[str, dict[str, tuple[Example, ...]]]:
  """Every task's examples, task -> split -> examples, built from scratch (a few seconds)."""
  found = {t: {s: [] for s in SPLITS} for t in TASKS}
  for doc_id, source, tree in _modules():
    split = downstream_split(doc_id)
    for node in _nodes(tree):
      for task, ex in ((SUMMARY, _summary_example(doc_id, node)),
                       (PACKAGE, _package_example(doc_id, node))):
        if ex is not None:
          found[task][split].append(ex)
      found[DEFAULT][split].extend(_default_examples(doc_id, source, node))
  return {t: _select(found[t]["train"], found[t]["validation"]) for t in TASKS}


@functools.lru_cache(maxsize=1)
def _cached() -> dict[str, dict[str, tuple[Example, ...]]]:
  return build_examples()


def examples(task_name: str, split: str) -> tuple[Example, ...]:
  """The examples of one task and split, built on the first call of the process."""
  if task_name not in TASKS or split not in SPLITS:
    raise ValueError(f"no examples for task {task_name!r} split {split!r}; tasks: {TASKS}, "
                     f"splits: {SPLITS}")
  return _cached()[task_name][split]


def strip_text(text, example=None, is_target: bool = False) -> str:
  """The postprocessor: decoded text without surrounding whitespace (bytes decoded)."""
  del example, is_target
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  return text.strip()


def _dataset_fn(task_name: str) -> Callable[..., tf.data.Dataset]:
  def read(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    """The split's {"inputs", "targets"} strings (one list: nothing to shuffle per file)."""
    del shuffle_files, seed
    items = examples(task_name, split)
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.constant([ex.inputs for ex in items], dtype=tf.string, shape=[len(items)]),
        "targets": tf.constant([ex.targets for ex in items], dtype=tf.string,
                               shape=[len(items)]),
    })
  return read


class _InMemorySource(seqio.FunctionDataSource):
  """A `FunctionDataSource` over examples built in memory, read in their one fixed order.

  seqio warns that an uncached FunctionDataSource shuffles poorly across restarts; here the
  task's own shuffle buffer (1,000 examples after preprocessing) holds nearly a whole split,
  so the source is always read unshuffled and the warning, repeated by every fine-tune, is
  not raised.
  """

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed=None,
                  shard_info=None, **kwargs) -> tf.data.Dataset:
    del shuffle  # the Task shuffles after preprocessing
    return super().get_dataset(split, False, seed, shard_info, **kwargs)


def register() -> None:
  """(Re-)registers the three tasks and their default lengths; reads no example."""
  features = {k: seqio.Feature(vocab_lib.default_vocabulary(), add_eos=True, dtype=tf.int32)
              for k in ("inputs", "targets")}
  for name in TASKS:
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=_InMemorySource(_dataset_fn(name), splits=SPLITS),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=features,
        postprocess_fn=strip_text, metric_fns=[_METRICS[name]])
    task_lengths.set_default_lengths(name, LENGTHS[name])
  # The three together, equal rates: one fine-tune that stands for three where CPU time
  # counts (the T5 grid's fine-tuning stage).
  if MIXTURE in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(MIXTURE)
  seqio.MixtureRegistry.add(MIXTURE, [(name, 1.0) for name in TASKS])


def _copy_prediction(task_name: str, ex: Example) -> str:
  """The input as the prediction; for the summary task without its "summarize: " prefix,
  so the baseline measures the body's overlap with the summary, not the prefix's."""
  if task_name == SUMMARY:
    return ex.inputs.removeprefix(_PREFIX[SUMMARY])
  return ex.inputs


def majority_target(task_name: str) -> str:
  """The most frequent train target (ties: the smaller string)."""
  counts = collections.Counter(ex.targets for ex in examples(task_name, "train"))
  return min(counts, key=lambda t: (-counts[t], t))


def baselines(task_name: str) -> dict[str, dict[str, float]]:
  """The task's validation metrics for the majority and the copy baselines.

  {"majority": {...}, "copy": {...}}, each what the task's metric functions return on
  the postprocessed targets and predictions, as seqio's evaluator would call them.
  """
  validation = examples(task_name, "validation")
  targets = [strip_text(ex.targets, is_target=True) for ex in validation]
  predictions = {
      "majority": [majority_target(task_name)] * len(validation),
      "copy": [_copy_prediction(task_name, ex) for ex in validation],
  }
  task = seqio.TaskRegistry.get(task_name)
  result = {}
  for name, preds in predictions.items():
    preds = [strip_text(p) for p in preds]
    result[name] = {}
    for fn in task.metric_fns:
      result[name].update(fn(targets, preds))
  return result


def table() -> str:
  """A markdown table of the tasks: metric, sizes and the two baselines."""
  rows = ["| task | metric | train examples | validation examples | majority | copy |",
          "|---|---|---:|---:|---:|---:|"]
  for name in TASKS:
    scores = baselines(name)
    metric = next(iter(scores["majority"]))
    rows.append(f"| {name} | {metric} | {len(examples(name, 'train'))} | "
                f"{len(examples(name, 'validation'))} | {scores['majority'][metric]:.1f} | "
                f"{scores['copy'][metric]:.1f} |")
  return "\n".join(rows)


def main() -> None:
  print(table())


register()

if __name__ == "__main__":
  sys.exit(main())
