"""Zero-shot rank-classification tasks: examples {prompt, options, answer}.

`launch/eval/zeroshot.py` scores log p(option | prompt) for every option with the architecture's
own scoring and takes the argmax (rank classification, as T0-Eval and the EAI harness do;
Wang et al. 2022 sec. 3.4; docs/objectives.md#wang-et-al-2022). A task only makes examples; it never
sees a model or a tokenizer.

Built-in tasks (offline, generated with known answers, deterministic from a seed; the words
are plain English that the embedded corpus's SentencePiece vocabulary spells in 1-2 pieces):

  last_word       LAMBADA-style cloze (Paperno et al. 2016; favours left-to-right LMs) on
                  the corpus's validation split: a 40-word passage minus its last word;
                  options: that word and 3 other words of the same document.
  recall          associative recall (Arora et al. 2023, MQAR; in-context retrieval):
                  "k 3, b 7, x 1, d 9, m 2, q 5. b ->"; options: 4 of the listed values.
  copy            a string of 6 words then " ->"; options: the same string, the string with
                  two neighbours swapped, with one word replaced, with another word replaced.
  facts_forward   4 facts "Alice's color is red." then "Bob's color is"; options: the 4
                  values. The answer follows the name in the facts (causal reading suffices).
  facts_backward  the same facts then "The one whose color is red is"; options: the 4
                  names, which precede the value in the facts (the reversal direction,
                  Berglund et al. 2023: causal LMs tend to fail it).

Training split (multitask finetuning, gin/adapt/mtf.gin): `training_example(i, split)` makes
example i of the prompted corpus (data/sources.py) from the families TRAIN_FAMILIES
(recall, copy, facts_forward); facts_backward and last_word are held out, as T0 holds out
whole task families. Training prompts cannot equal evaluation prompts (TRAIN_SIZES).

TFDS-backed tasks (SuperGLUE validation splits, for users who have the prepared data; never
downloaded here): boolq, cb, copa, rte, with the GPT-3-style prompts of the EleutherAI LM
evaluation harness (lm_eval/tasks/superglue.py, glue.py), the EAI-Eval prompts that Wang et
al. report beside T0-Eval. They are seqio Tasks (TfdsDataSource, read-only) whose one
preprocessor applies the template; a missing dataset fails in one line naming it and the
data dir. They are registered as seqio tasks named `zeroshot_{name}` when first used.
"""
from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Callable, Optional, Sequence

import numpy as np

from objectax.models.registry import ConfigError, Registry

NUM_OPTIONS = 4  # built-in tasks: chance = 1/4
CLOZE_CONTEXT_WORDS = 40
_PLAIN_WORD = re.compile(r"^[A-Za-z]{3,}$")
_TRAILING_PUNCTUATION = ".,;:!?"

# Each spelled by the embedded vocabulary in 1-2 pieces (checked by a test).
NAMES = ("Ann", "Fred", "Mark", "Alan", "Alice", "Anna", "Ben", "Bob", "Dan", "Eve", "Jack",
         "Jane", "Mary", "Max", "Ray", "Sam", "Tim", "Tom")
ATTRIBUTES = {
    "color": ("red", "blue", "green", "yellow", "black", "white", "gray"),
    "pet": ("cat", "dog", "fish", "mouse", "bear", "lion"),
    "job": ("cook", "writer", "painter", "engineer", "author", "driver", "actor", "miner"),
    "food": ("apple", "bread", "rice", "soup", "pasta", "salt", "wine"),
}
COPY_WORDS = ("table", "tree", "window", "white", "cook", "mouse", "writer", "apple", "bear",
              "black", "blue", "book", "bread", "cat", "dog", "door", "fish", "green", "lion",
              "red", "rice", "salt", "soup", "stone", "water", "wine")
RECALL_KEYS = tuple("bcdefghjklmnpqrstuvwxyz")  # letters that are not English words


@dataclasses.dataclass(frozen=True)
class Example:
  """One rank-classification item: the options are read as a new word after the prompt."""
  prompt: str
  options: tuple[str, ...]
  answer: int  # index of the correct option

  def __post_init__(self):
    if len(self.options) < 2 or len(set(self.options)) != len(self.options):
      raise ValueError(f"an example needs >= 2 distinct options, got {self.options}")
    if not 0 <= self.answer < len(self.options):
      raise ValueError(f"answer {self.answer} is not an index of {self.options}")


@dataclasses.dataclass(frozen=True)
class Request:
  """What a task may read when it makes its examples.

  Attributes:
    num_examples: built-in tasks generate this many (TFDS tasks read their whole split).
    seed: built-in tasks draw from (seed, crc32(task name)).
    texts: the held-out documents (the corpus's validation split), read only by last_word.
    data_dir: TFDS data dir of the TFDS-backed tasks (None: TfdsConfig, $TFDS_DATA_DIR).
  """
  num_examples: int = 128
  seed: int = 0
  texts: Callable[[], Sequence[str]] = lambda: ()
  data_dir: Optional[str] = None


class NoExamples(ValueError):
  """A built-in task cannot make any example from what it was given (reported as skipped)."""


@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
  """A registered task: `make(request)` returns its examples."""
  name: str
  description: str
  make: Callable[[Request], list[Example]]
  tfds_name: Optional[str] = None  # None: built in

  @property
  def builtin(self) -> bool:
    return self.tfds_name is None


TASKS = Registry[ZeroShotTask]("zero-shot task")


def builtin_names() -> list[str]:
  return [n for n in TASKS.names() if TASKS.get(n).builtin]


def _rng(seed: int, name: str) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _shuffled(rng: np.random.Generator, correct: str,
              others: Sequence[str]) -> tuple[tuple[str, ...], int]:
  """(options in a random order, index of `correct`)."""
  options = [correct, *others]
  order = rng.permutation(len(options))
  return tuple(options[i] for i in order), int(np.argmax(order == 0))


# ---------------------------------------------------------------------------- built in


def last_word_examples(texts: Sequence[str], num_examples: int, seed: int,
                       context_words: int = CLOZE_CONTEXT_WORDS) -> list[Example]:
  """Passages of `context_words` words, each followed in its document by a plain word.

  Candidate targets are plain words (>= 3 letters; trailing punctuation dropped) at least
  `context_words` words into a document and `context_words` apart; `num_examples` of them
  are drawn (in document order). Distractors: 3 other plain words of the same document.
  """
  rng = _rng(seed, "last_word")
  candidates = []  # (prompt, target, the document's other plain words)
  for text in texts:
    words = text.split()
    plain = [w.rstrip(_TRAILING_PUNCTUATION) for w in words]
    vocab = sorted({w for w in plain if _PLAIN_WORD.match(w)})
    last = -context_words
    for i in range(context_words, len(words)):
      target = plain[i]
      if i - last < context_words or not _PLAIN_WORD.match(target):
        continue
      others = [w for w in vocab if w.lower() != target.lower()]
      if len(others) < NUM_OPTIONS - 1:
        continue
      candidates.append((" ".join(words[i - context_words:i]), target, others))
      last = i
  if not candidates:
    raise NoExamples(f"no held-out document has a plain word after {context_words} words")
  chosen = np.sort(rng.choice(len(candidates), min(num_examples, len(candidates)), replace=False))
  examples = []
  for c in chosen:
    prompt, target, others = candidates[c]
    distractors = [others[j] for j in rng.choice(len(others), NUM_OPTIONS - 1, replace=False)]
    options, answer = _shuffled(rng, target, distractors)
    examples.append(Example(prompt, options, answer))
  return examples


def _recall_example(rng: np.random.Generator, pairs: int) -> Example:
  keys = rng.choice(RECALL_KEYS, pairs, replace=False)
  values = rng.choice(10, pairs, replace=False)
  q = int(rng.integers(pairs))
  listing = ", ".join(f"{k} {v}" for k, v in zip(keys, values))
  others = [str(values[j]) for j in rng.choice(
      [j for j in range(pairs) if j != q], NUM_OPTIONS - 1, replace=False)]
  options, answer = _shuffled(rng, str(values[q]), others)
  return Example(f"{listing}. {keys[q]} ->", options, answer)


def recall_examples(num_examples: int, seed: int, pairs: int = 6) -> list[Example]:
  """"k 3, b 7, x 1, d 9, m 2, q 5. b ->" with options 4 of the listed digits."""
  rng = _rng(seed, "recall")
  return [_recall_example(rng, pairs) for _ in range(num_examples)]


def _copy_example(rng: np.random.Generator, length: int) -> Example:
  words = list(rng.choice(COPY_WORDS, length, replace=False))
  unused = [w for w in COPY_WORDS if w not in words]
  fresh = rng.choice(unused, 2, replace=False)
  j = int(rng.integers(length - 1))
  swapped = words[:j] + [words[j + 1], words[j]] + words[j + 2:]
  a, b = rng.choice(length, 2, replace=False)
  replaced_a = [fresh[0] if i == a else w for i, w in enumerate(words)]
  replaced_b = [fresh[1] if i == b else w for i, w in enumerate(words)]
  corrupted = [" ".join(s) for s in (swapped, replaced_a, replaced_b)]
  options, answer = _shuffled(rng, " ".join(words), corrupted)
  return Example(f"{' '.join(words)} ->", options, answer)


def copy_examples(num_examples: int, seed: int, length: int = 6) -> list[Example]:
  """A string of distinct words then " ->"; options: the copy and 3 corrupted copies."""
  rng = _rng(seed, "copy")
  return [_copy_example(rng, length) for _ in range(num_examples)]


def _facts_example(rng: np.random.Generator, backward: bool, people: int) -> Example:
  kinds = sorted(ATTRIBUTES)
  kind = kinds[int(rng.integers(len(kinds)))]
  names = [str(n) for n in rng.choice(NAMES, people, replace=False)]
  values = [str(v) for v in rng.choice(ATTRIBUTES[kind], people, replace=False)]
  facts = " ".join(f"{n}'s {kind} is {v}." for n, v in zip(names, values))
  q = int(rng.integers(people))
  if backward:
    prompt = f"{facts} The one whose {kind} is {values[q]} is"
    options, answer = _shuffled(rng, names[q], names[:q] + names[q + 1:])
  else:
    prompt = f"{facts} {names[q]}'s {kind} is"
    options, answer = _shuffled(rng, values[q], values[:q] + values[q + 1:])
  return Example(prompt, options, answer)


def facts_examples(num_examples: int, seed: int, backward: bool,
                   people: int = NUM_OPTIONS) -> list[Example]:
  """Facts "Alice's color is red." about `people` people, then one question.

  Forward: "Bob's color is" -> the 4 values. Backward: "The one whose color is red is" ->
  the 4 names.
  """
  rng = _rng(seed, "facts_backward" if backward else "facts_forward")
  return [_facts_example(rng, backward, people) for _ in range(num_examples)]


TASKS.add("last_word", ZeroShotTask(
    "last_word", "last word of a held-out passage (LAMBADA-style cloze), 4 options",
    lambda r: last_word_examples(r.texts(), r.num_examples, r.seed)))
TASKS.add("recall", ZeroShotTask(
    "recall", "associative recall: 6 key-value pairs, then a key; 4 values",
    lambda r: recall_examples(r.num_examples, r.seed)))
TASKS.add("copy", ZeroShotTask(
    "copy", "copy a 6-word string; the copy vs 3 corrupted copies",
    lambda r: copy_examples(r.num_examples, r.seed)))
TASKS.add("facts_forward", ZeroShotTask(
    "facts_forward", "4 facts in context; attribute given the name (read forward), 4 options",
    lambda r: facts_examples(r.num_examples, r.seed, backward=False)))
TASKS.add("facts_backward", ZeroShotTask(
    "facts_backward", "4 facts in context; name given the attribute (reversal), 4 options",
    lambda r: facts_examples(r.num_examples, r.seed, backward=True)))


# ------------------------------------------------------------ training split (MTF)
# Multitask finetuning (Wang et al. 2022 sec. 2.1) trains on prompted examples
# of some task families and evaluates zero-shot on held-out ones, as T0 does (Sanh et al.
# 2022: trained on e.g. QA and summarization, evaluated on NLI, coreference, ...). Here:
TRAIN_FAMILIES = ("recall", "copy", "facts_forward")
HELD_OUT_FAMILIES = ("facts_backward", "last_word")  # never generated for training
# Disjointness from the evaluation examples, by construction rather than by seed alone:
# evaluation examples have 6 recall pairs, 6 copied words and 4 people's facts (the
# generators' defaults above, whatever the seed); training and validation examples draw
# their size from these tuples, which never hold the evaluation size, so no training
# prompt can equal an evaluation prompt. They also draw from their own seed stream
# (SeedSequence entropy [tag, seed, crc32(family), index] vs the evaluation's [seed,
# crc32(task)]), so the same sizes with another split would not repeat either.
TRAIN_SIZES = {"recall": (4, 5, 7, 8), "copy": (4, 5, 7, 8), "facts_forward": (2, 3, 5, 6)}
_SPLIT_TAGS = {"train": 0x7472, "validation": 0x7661}  # "tr", "va": distinct seed streams
VALIDATION_EXAMPLES = 512  # the fixed validation split: indices 0 .. 511


def training_example(index: int, split: str = "train", seed: int = 0) -> tuple[str, Example]:
  """(family, example) number `index` of the prompted `split` ("train": endless;
  "validation": indices < VALIDATION_EXAMPLES), a pure function of its arguments.

  Families take turns (index mod 3), so every family has a third of any window of the
  stream (T0 mixes its datasets in proportion to size, capped; ours are unbounded).
  """
  if split not in _SPLIT_TAGS:
    raise ConfigError(f"unknown split {split!r}; valid choices: {', '.join(_SPLIT_TAGS)}")
  family = TRAIN_FAMILIES[index % len(TRAIN_FAMILIES)]
  rng = np.random.default_rng([_SPLIT_TAGS[split], seed, zlib.crc32(family.encode()), index])
  size = int(rng.choice(TRAIN_SIZES[family]))
  if family == "recall":
    return family, _recall_example(rng, size)
  if family == "copy":
    return family, _copy_example(rng, size)
  return family, _facts_example(rng, backward=False, people=size)


def training_pair(index: int, split: str = "train", seed: int = 0) -> tuple[str, str]:
  """(inputs, targets) text of training_example: the prompt and its correct option, read
  as the rank classifier reads it (data/tasks.py tokenizes them apart)."""
  _, ex = training_example(index, split, seed)
  return ex.prompt, ex.options[ex.answer]


# ------------------------------------------------------------------------- TFDS-backed
# Templates of the EleutherAI harness (GPT-3 style); options are read as " option".


def _boolq_template(ex):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  prompt = tf.strings.join([ex["passage"], "\nQuestion: ", ex["question"], "?\nAnswer:"])
  return {"prompt": prompt, "options": tf.constant(["no", "yes"]),  # label 1 = True
          "answer": tf.cast(ex["label"], tf.int32)}


def _cb_template(ex):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  prompt = tf.strings.join([ex["premise"], "\nQuestion: ", ex["hypothesis"],
                            ". True, False or Neither?\nAnswer:"])
  # labels: entailment, contradiction, neutral
  return {"prompt": prompt, "options": tf.constant(["True", "False", "Neither"]),
          "answer": tf.cast(ex["label"], tf.int32)}


def _copa_template(ex):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  premise = tf.strings.strip(ex["premise"])
  premise = tf.strings.substr(premise, 0, tf.strings.length(premise) - 1)  # drop the period
  connector = tf.where(tf.equal(ex["question"], "cause"), "because", "therefore")

  def lower_first(choice):
    rest = tf.strings.substr(choice, 1, tf.strings.length(choice) - 1)
    return tf.strings.join([tf.strings.lower(tf.strings.substr(choice, 0, 1)), rest])

  return {"prompt": tf.strings.join([premise, " ", connector]),
          "options": tf.stack([lower_first(ex["choice1"]), lower_first(ex["choice2"])]),
          "answer": tf.cast(ex["label"], tf.int32)}


def _rte_template(ex):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  prompt = tf.strings.join([ex["premise"], "\nQuestion: ", ex["hypothesis"],
                            " True or False?\nAnswer:"])
  # labels: entailment, not_entailment
  return {"prompt": prompt, "options": tf.constant(["True", "False"]),
          "answer": tf.cast(ex["label"], tf.int32)}


TEMPLATES = {"boolq": _boolq_template, "cb": _cb_template, "copa": _copa_template,
             "rte": _rte_template}
SUPER_GLUE_VERSION = "1.0.2"


def seqio_task_name(name: str) -> str:
  return f"zeroshot_{name}"


def register_seqio_task(name: str, source, template: Callable):
  """(Re-)registers the seqio Task `zeroshot_{name}`: `source`, then the template. Its
  examples are strings {prompt, options[n], answer}; tokenizing is the scorer's job.
  Nothing is tokenized, so the task has no output features."""
  import seqio  # pylint: disable=g-import-not-at-top
  task_name = seqio_task_name(name)
  if task_name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(task_name)
  apply = lambda ds: ds.map(template, num_parallel_calls=1)  # a seqio preprocessor
  return seqio.TaskRegistry.add(task_name, source=source, preprocessors=[apply],
                                output_features={}, metric_fns=[])


def check_tfds_data(name: str, tfds_name: str, data_dir: Optional[str] = None) -> str:
  """The data dir holding `tfds_name`; a one-line ConfigError when it is not prepared."""
  from objectax.data import pydocs  # pylint: disable=g-import-not-at-top
  data_dir = pydocs.resolve_data_dir(data_dir)
  pydocs.require_tfds(tfds_name, data_dir, f"zero-shot task {name!r}")
  return data_dir


def examples_of(task) -> list[Example]:
  """Every example of a registered seqio zero-shot task's validation split, in order."""
  ds = task.get_dataset(sequence_length=None, split="validation", shuffle=False,
                        num_epochs=1, trim_output_features=False)
  return [Example(ex["prompt"].decode("utf-8"),
                  tuple(o.decode("utf-8") for o in ex["options"]), int(ex["answer"]))
          for ex in ds.as_numpy_iterator()]


def _super_glue(name: str) -> Callable[[Request], list[Example]]:
  tfds_name = f"super_glue/{name}:{SUPER_GLUE_VERSION}"

  def make(request: Request) -> list[Example]:
    import seqio  # pylint: disable=g-import-not-at-top
    data_dir = check_tfds_data(name, tfds_name, request.data_dir)
    source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir,
                                  splits={"validation": "validation"}, read_only=True)
    return examples_of(register_seqio_task(name, source, TEMPLATES[name]))
  return make


for _name, _description in (
    ("boolq", "SuperGLUE BoolQ validation (passage, question -> no/yes)"),
    ("cb", "SuperGLUE CommitmentBank validation (True/False/Neither)"),
    ("copa", "SuperGLUE COPA validation (premise because/therefore -> 2 choices)"),
    ("rte", "SuperGLUE RTE validation (True/False)")):
  TASKS.add(_name, ZeroShotTask(_name, _description, _super_glue(_name),
                                tfds_name=f"super_glue/{_name}:{SUPER_GLUE_VERSION}"))


def check_available(names: Sequence[str], data_dir: Optional[str] = None) -> None:
  """Fails in one line on an unknown task or a TFDS task whose data is absent."""
  for name in names:
    task = TASKS.get(name)
    if not task.builtin:
      check_tfds_data(name, task.tfds_name, data_dir)


def make_examples(name: str, request: Request = Request()) -> list[Example]:
  """The examples of task `name` (raises NoExamples when a built-in task has none)."""
  return TASKS.get(name).make(request)
