"""Zero-shot rank classification: each option scored by the architecture's own likelihood.

For every example {prompt, options, answer} of a task (data/zeroshot_tasks.py) each option
is scored as log p(option | prompt), the summed log-probability of its tokens, with the
yardstick's layouts and jitted scorer (launch/eval/yardstick.py), exactly as the yardstick
scores a continuation given its prefix:

  CD  one causal stream prompt + option, loss on the option;
  ND  the prompt bidirectional (decoder_causal_attention), the option causal;
  ED  the prompt in the encoder, the option as decoder targets;
  EO  the prompt, then one mask id (<extra_id_0> = vocab_size - 1, bert_mlm's) for every
      option token, then EOS: the option's log-probs at the masks, all masked at once and
      summed. An approximation (the tokens are predicted independently, and the number of
      masks tells the model the option's length); pseudo-log-likelihood, one mask at a
      time, would be exact-er but costs one forward pass per option token.

No EOS between prompt and option nor after the option (as the yardstick's continuation
rows; the EAI harness scores continuations the same way). Prompt and option are tokenized
apart (as T5's rank_classification feeds inputs and targets), the option read as a new word:
SentencePiece's dummy prefix gives it its leading space; a vocabulary without one (bytes)
gets " " + option. A prompt too long for the run's sequence_length loses its first tokens.

Predictions (Wang et al. 2022 score T0-Eval and EAI-Eval this way;
docs/objectives.md#wang-et-al-2022):
  accuracy       argmax of the summed log-probability (raw);
  accuracy_norm  argmax of log-probability / UTF-8 bytes of the option in context (its
                 leading space included), the EAI harness's acc_norm.
Ties go to the lowest option index (numpy's argmax): a model with uniform output picks the
first of the options with the fewest tokens. Per-example correctness lists (0/1, in example
order) go into DIR/eval/zeroshot.json for the grid runner's paired bootstrap.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from objectax.data import zeroshot_tasks
from objectax.models.registry import ConfigError
from objectax.data.zeroshot_tasks import Example
from objectax.launch.eval import yardstick
from objectax.models import registry as arch_registry

TIE_RULE = "ties go to the lowest option index"
NORMALIZATION = "log-probability / UTF-8 bytes of the option in context (EAI acc_norm)"
ROW_MULTIPLE = 32  # rows: a task's longest example rounded up (few shapes, few compiles)


# ------------------------------------------------------------------------ scoring


def _joins_with_space(vocabulary: Any) -> bool:
  """Whether encode(a) + encode(b) decodes to "a b" (SentencePiece's dummy prefix)."""
  ids = [*vocabulary.encode("a"), *vocabulary.encode("b")]
  return vocabulary.decode([int(i) for i in ids]) == "a b"


def option_ids(vocabulary: Any, option: str, joins_with_space: bool) -> np.ndarray:
  """An option's ids, read as a new word after the prompt: SentencePiece's dummy prefix
  gives it its leading space; a vocabulary without one (bytes) gets " " + option."""
  return np.asarray(vocabulary.encode(option if joins_with_space else " " + option), np.int32)


def scored_pair(vocabulary: Any, prompt_ids: np.ndarray, ids: np.ndarray, max_tokens: int,
                what: str = "an option") -> yardstick.Pair:
  """The yardstick Pair of one option: inputs = the prompt's ids, targets = the option's.

  The prompt keeps its last max_tokens - len(option) - 1 tokens, so that every layout
  (the encoder-only one adds one EOS) fits rows of `max_tokens`. `aligned` is the
  encoder-only form: the option's tokens masked, then EOS. `what` names the option in the
  error when it alone fills the rows.
  """
  mask_id = vocabulary.vocab_size - 1
  keep = max_tokens - len(ids) - 1
  if keep < 1:
    raise ConfigError(f"{what} ({len(ids)} tokens) leaves no room for a prompt in rows of "
                      f"{max_tokens} tokens")
  prompt = np.asarray(prompt_ids, np.int32)[-keep:]
  before = len(vocabulary.decode(prompt.tolist()).encode("utf-8"))
  after = len(vocabulary.decode(np.r_[prompt, ids].tolist()).encode("utf-8"))
  aligned = (np.r_[prompt, np.full(len(ids), mask_id), yardstick.EOS_ID].astype(np.int32),
             np.r_[np.zeros(len(prompt)), ids, 0].astype(np.int32))
  return yardstick.Pair(prompt, ids, np.ones(len(ids), bool), after - before, aligned)


def option_pairs(vocabulary: Any, example: Example, max_tokens: int,
                 joins_with_space: Optional[bool] = None) -> list[yardstick.Pair]:
  """One yardstick Pair per option (`scored_pair`): the prompt and each option tokenized
  apart (`option_ids`), the prompt cut to fit rows of `max_tokens`."""
  if joins_with_space is None:
    joins_with_space = _joins_with_space(vocabulary)
  prompt_ids = np.asarray(vocabulary.encode(example.prompt), np.int32)
  return [scored_pair(vocabulary, prompt_ids, option_ids(vocabulary, option, joins_with_space),
                      max_tokens, f"option {option!r}") for option in example.options]


def row_length(pairs: Sequence[yardstick.Pair], sequence_length: int) -> int:
  """The longest layout any architecture needs (prompt + option + EOS), rounded up to
  ROW_MULTIPLE, at most `sequence_length`."""
  longest = max(len(p.aligned[0]) for p in pairs)
  return min(sequence_length, -(-longest // ROW_MULTIPLE) * ROW_MULTIPLE)


def pair_log_likelihoods(scorer: Callable, params: Any, layout: yardstick.Layout,
                         batch_size: int, put: Callable[[dict], dict] = lambda f: f,
                         greedy: bool = False):
  """float64[N]: each row's summed log-probability of its scored tokens (the yardstick's
  per-row nats, negated); with `greedy` (a scorer made with greedy_vocab) also bool[N],
  whether every scored token is the argmax: (log-likelihoods, greedy)."""
  rows = yardstick.score_rows(scorer, params, layout, batch_size, put, greedy=greedy)
  return (-rows[0], rows[2]) if greedy else -rows[0]


# ------------------------------------------------------------------------ ranking


@dataclasses.dataclass(frozen=True)
class TaskResult:
  """One task's rank-classification outcome."""
  name: str
  description: str
  chance: float                 # mean over examples of 1 / number of options
  correct: tuple[int, ...]      # per example: raw argmax == answer
  correct_norm: tuple[int, ...]  # per example: length-normalized argmax == answer

  @property
  def examples(self) -> int:
    return len(self.correct)

  @property
  def accuracy(self) -> float:
    return float(np.mean(self.correct))

  @property
  def accuracy_norm(self) -> float:
    return float(np.mean(self.correct_norm))

  def as_dict(self) -> dict:
    return {"accuracy": self.accuracy, "accuracy_norm": self.accuracy_norm,
            "chance": self.chance, "examples": self.examples, "correct": list(self.correct),
            "correct_norm": list(self.correct_norm), "description": self.description}


def classify(name: str, description: str, examples: Sequence[Example],
             log_likelihoods: Sequence[Sequence[float]],
             option_bytes: Sequence[Sequence[int]]) -> TaskResult:
  """Rank classification from each example's per-option log-likelihoods and bytes.

  Raw: argmax log p; normalized: argmax log p / bytes. Ties: the lowest index.
  """
  if not examples:
    raise ValueError(f"task {name!r} has no examples")
  correct, correct_norm = [], []
  for ex, ll, nb in zip(examples, log_likelihoods, option_bytes, strict=True):
    ll_O, nb_O = np.asarray(ll, np.float64), np.asarray(nb, np.float64)
    if ll_O.shape != (len(ex.options),) or nb_O.shape != ll_O.shape:
      raise ValueError(f"{name}: {len(ex.options)} options but {ll_O.shape} scores")
    correct.append(int(np.argmax(ll_O) == ex.answer))
    correct_norm.append(int(np.argmax(ll_O / np.maximum(nb_O, 1)) == ex.answer))
  chance = float(np.mean([1.0 / len(ex.options) for ex in examples]))
  return TaskResult(name, description, chance, tuple(correct), tuple(correct_norm))


def evaluate(model: Any, params: Any, arch: str, vocabulary: Any,
             tasks: Mapping[str, tuple[str, Sequence[Example]]], *, sequence_length: int,
             batch_size: int = 16, put: Callable[[dict], dict] = lambda f: f,
             say: Callable[[str], None] = lambda msg: None) -> list[TaskResult]:
  """Rank classification of `model` (the plain architecture's module) on every task.

  Args:
    model, params: the module and its parameters.
    arch: the architecture's registry name (its yardstick layout and scoring).
    vocabulary: the run's vocabulary (tokenizes prompts and options).
    tasks: name -> (description, examples).
    sequence_length: the run's token budget; no row is longer.
    batch_size: rows of `sequence_length` per forward pass (a multiple of the data-parallel
      size); shorter rows go in proportionally larger batches (the same tokens per pass).
    put: places a numpy batch on the devices.
    say: progress messages.
  """
  spec = arch_registry.get(arch)
  scorer = yardstick.make_scorer(model, spec.targets_key)
  joins = _joins_with_space(vocabulary)
  results = []
  for name, (description, examples) in tasks.items():
    pairs = [option_pairs(vocabulary, ex, sequence_length, joins) for ex in examples]
    flat = [p for ps in pairs for p in ps]
    length = row_length(flat, sequence_length)
    rows = batch_size * max(1, sequence_length // length)
    say(f"zero-shot {name}: {len(examples)} examples, {len(flat)} options, rows of {length}")
    ll_R = pair_log_likelihoods(scorer, params, spec.score_layout(flat, length), rows, put)
    ends = np.cumsum([len(ps) for ps in pairs])[:-1]
    results.append(classify(name, description, examples, np.split(ll_R, ends),
                            [[p.num_bytes for p in ps] for ps in pairs]))
  return results


# ------------------------------------------------------------------------ the command


def select(names: Optional[Sequence[str]]) -> list[str]:
  """The tasks to run: None -> every built-in task; else these (checked, deduplicated)."""
  if names is None:
    return zeroshot_tasks.builtin_names()
  for name in names:
    zeroshot_tasks.TASKS.get(name)  # a typo fails here, in one line
  return list(dict.fromkeys(names))


def validation_texts(corpus: str, max_documents: int = 1000, data=None) -> list[str]:
  """The text of the first `max_documents` documents of the corpus's validation split, in
  the order evaluate.held_out reads them (`data`: the run's sources.DataConfig)."""
  # pylint: disable=g-import-not-at-top
  from objectax.data import sources
  spec = sources.get_corpus(corpus)
  spec.prepare(data)
  ds = spec.make_source(data).get_dataset(split="validation", shuffle=False).take(max_documents)
  return [ex[spec.text_key].decode("utf-8") for ex in ds.as_numpy_iterator()]


def load(names: Sequence[str], request: zeroshot_tasks.Request
         ) -> tuple[dict[str, tuple[str, list[Example]]], dict[str, str]]:
  """(name -> (description, examples), name -> why skipped). A built-in task without
  examples is skipped; a TFDS task without data raises ConfigError."""
  tasks, skipped = {}, {}
  for name in names:
    task = zeroshot_tasks.TASKS.get(name)
    try:
      tasks[name] = (task.description, task.make(request))
    except zeroshot_tasks.NoExamples as e:
      skipped[name] = str(e)
  return tasks, skipped


def render_table(results: Sequence[TaskResult], skipped: Mapping[str, str]) -> str:
  """The table `objectax eval` prints."""
  lines = [f"{'zero-shot task':<16} {'accuracy':>8} {'acc_norm':>8} {'chance':>7} "
           f"{'examples':>8}"]
  for r in results:
    lines.append(f"{r.name:<16} {r.accuracy:>8.4f} {r.accuracy_norm:>8.4f} {r.chance:>7.4f} "
                 f"{r.examples:>8d}")
  for name, why in skipped.items():
    lines.append(f"{name:<16} skipped: {why}")
  return "\n".join(lines)


def write_report(path: str, results: Sequence[TaskResult], skipped: Mapping[str, str],
                 run: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
  """Writes (and returns) DIR/eval/zeroshot.json: {"tasks", "skipped", "settings"} and the
  run's identification (`run`: workdir, experiment, step, ... as in yardstick.json)."""
  report = {**run, "settings": dict(settings),
            "tasks": {r.name: r.as_dict() for r in results}, "skipped": dict(skipped)}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  return report


def run_report(model: Any, params: Any, arch: str, vocabulary: Any, names: Sequence[str],
               request: zeroshot_tasks.Request, path: str, run: Mapping[str, Any], *,
               sequence_length: int, batch_size: int,
               put: Callable[[dict], dict] = lambda f: f,
               say: Callable[[str], None] = lambda msg: None) -> dict:
  """Loads the tasks, scores them, writes `path`; the returned report also holds "table"."""
  t_start = time.perf_counter()
  tasks, skipped = load(names, request)
  results = evaluate(model, params, arch, vocabulary, tasks, sequence_length=sequence_length,
                     batch_size=batch_size, put=put, say=say) if tasks else []
  settings = {"examples_per_builtin_task": request.num_examples, "seed": request.seed,
              "tie_rule": TIE_RULE, "accuracy_norm": NORMALIZATION,
              "wall_seconds": time.perf_counter() - t_start}
  report = write_report(path, results, skipped, run, settings)
  say(f"wrote {path} in {settings['wall_seconds']:.0f} s")
  report["table"] = render_table(results, skipped)
  return report
