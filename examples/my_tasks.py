"""A user's module, outside the package: a seqio Task of their own, a Mixture of it with a
built-in task, and a new objective with its gin config class.

    cd examples
    objectax objectives --module my_tasks     # lists reversed_lm
    objectax train --module my_tasks --gin.Experiment.objective=reversed_lm --workdir=/tmp/rev
    objectax train --module my_tasks --gin.Experiment.task=word_reversal --workdir=/tmp/wr
    objectax train --module my_tasks --gin.Experiment.task=word_reversal_and_spans \
        --gin.Experiment.arch=encoder_decoder --workdir=/tmp/mix
    objectax eval --workdir=/tmp/wr           # re-imports my_tasks from the run's record

`word_reversal` is an ordinary seqio Task: a FunctionDataSource over JSON-lines files
({"text": sentence} per line; data/make_sentences.py wrote them), a text preprocessor
that turns each sentence into {"inputs": "reverse: <sentence>", "targets": <its words in
reverse order>} as strings, then seqio's tokenizer. Written before tokenization, the
word-level transform needs no objective at all: any architecture trains on the pairs.

`word_reversal_and_spans` mixes it 1:3 with `pydocs_span_corruption`, one of the tasks
objectax registers for every corpus and objective; the run logs each one's loss, tokens
and share of the examples.

`reversed_lm` is full LM on documents whose tokens are reversed: the same contract as
every built-in objective (a seqio preprocessor after tokenization that emits exact
lengths), built here on top of full LM's own preprocessor.
"""
import dataclasses
import functools
import json
import os

import gin
import seqio
import tensorflow as tf

from objectax.data import tasks  # registers the built-in tasks a Mixture may name
from objectax.data import vocab
from objectax.objectives import full_lm, registry

# The sentences' folder: MY_TASKS_DATA, else data/ beside this file.
DATA = os.environ.get("MY_TASKS_DATA",
                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))


def read_sentences(split, shuffle_files=False, seed=None):
  """The split's sentences as {"text": string} examples (a seqio dataset_fn)."""
  del shuffle_files, seed  # one file per split: seqio shuffles the examples themselves
  with open(os.path.join(DATA, f"sentences_{split}.jsonl"), encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f if line.strip()]
  return tf.data.Dataset.from_tensor_slices({"text": texts})


def to_reversal_pair(ds):
  """{"text"} -> {"inputs": "reverse: <text>", "targets": the words in reverse order}."""
  def pair(ex):
    words = tf.strings.split(ex["text"])
    return {"inputs": tf.strings.join(["reverse:", ex["text"]], separator=" "),
            "targets": tf.strings.reduce_join(tf.reverse(words, [0]), separator=" ")}
  return ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE)


_features = {k: seqio.Feature(vocab.default_vocabulary(), add_eos=True, dtype=tf.int32)
             for k in ("inputs", "targets")}
for _name in ("word_reversal", "word_reversal_and_spans"):  # re-importing re-registers
  if _name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(_name)
  if _name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(_name)
seqio.TaskRegistry.add(
    "word_reversal",
    source=seqio.FunctionDataSource(read_sentences, splits=("train", "validation")),
    preprocessors=[to_reversal_pair, seqio.preprocessors.tokenize],
    output_features=_features, metric_fns=[])
seqio.MixtureRegistry.add(
    "word_reversal_and_spans", [("word_reversal", 1), ("pydocs_span_corruption", 3)])


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReversedLMConfig:
  """flip: reverse each document's tokens (False: plain full LM)."""
  flip: bool = True


def preprocess(ds, sequence_length, output_features, cfg=None):
  """Tokenized documents {"targets": int32[L]} -> full-LM examples of reversed documents."""
  if (cfg or ReversedLMConfig()).flip:
    ds = ds.map(lambda ex: {**ex, "targets": tf.reverse(ex["targets"], [0])})
  return full_lm.preprocess(ds, sequence_length, output_features)


_full_lm = registry.get("full_lm")
registry.register(registry.Objective(
    name="reversed_lm", config_cls=ReversedLMConfig, preprocess=preprocess,
    features=_full_lm.features,
    lengths=lambda cfg, sequence_length: _full_lm.lengths(_full_lm.config_cls(), sequence_length),
    description="full LM on reversed documents (examples/my_tasks.py, a user's module)"))
