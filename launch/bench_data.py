"""`objectax bench data`: how fast each objective's preprocessor turns tokens into examples.

The embedded corpus's train split is tokenized once and held in memory, so the figures
measure the objective (concatenation, chunking, corruption, EOS), not the tokenizer or the
disk. "Source tokens" are the raw corpus tokens an example consumes (`TaskLengths.raw`;
for FIM that is an upper bound, since a FIM example consumes three fewer).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import seqio
import tensorflow as tf

from objectax.data import pydocs, sources
from objectax.data import vocab as vocab_lib
from objectax.objectives import registry as objective_registry

# Keeping eight H100s busy on a 1B model needs about 0.4M source tokens/s per host; the
# bar leaves headroom for hosts with fewer cores per accelerator.
TARGET_TOKENS_PER_SECOND = 1.5e6


@dataclasses.dataclass(frozen=True)
class Result:
  objective: str
  lengths: objective_registry.TaskLengths
  examples_per_second: float
  source_tokens_per_second: float


def tokenized_corpus(vocabulary: seqio.Vocabulary) -> tf.data.Dataset:
  """The embedded train split, tokenized once, as an endless in-memory dataset."""
  corpus = sources.get_corpus("pydocs")
  corpus.prepare()
  texts = corpus.make_source().get_dataset("train", shuffle=False)
  ids = [vocabulary.encode_tf(ex[corpus.text_key]).numpy() for ex in texts]
  ragged = tf.RaggedTensor.from_row_lengths(np.concatenate(ids).astype(np.int32),
                                            [len(x) for x in ids])
  return (tf.data.Dataset.from_tensor_slices(ragged)
          .map(lambda t: {"targets": t}).cache().repeat())


def bench_objective(name: str, docs: tf.data.Dataset, vocabulary: seqio.Vocabulary,
                    budget: int, seconds: float) -> Result:
  obj = objective_registry.get(name)
  cfg = obj.config_cls()
  lengths = obj.lengths(cfg, budget)
  features = {f: seqio.Feature(vocabulary, add_eos=True) for f in obj.features}
  with seqio.utils.map_seed_manager(0):
    ds = obj.preprocess(docs, lengths.feature_lengths(), features, cfg=cfg)
  it = iter(ds.batch(64).prefetch(tf.data.AUTOTUNE))
  for _ in range(4):  # warm-up: traces, fills the cache and the pipeline
    next(it)
  count, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    count += int(next(it)["targets"].shape[0])
  rate = count / (time.perf_counter() - t0)
  return Result(name, lengths, rate, rate * lengths.raw)


def run(budget: int = 626, seconds: float = 3.0, objectives: list[str] | None = None,
        out=print) -> list[Result]:
  """Benchmarks every registered objective (or the named ones) and prints one row each."""
  pydocs.keep_tensorflow_off_accelerators()
  vocabulary = vocab_lib.get_vocabulary(vocab_lib.VocabConfig())
  docs = tokenized_corpus(vocabulary)
  names = objectives or objective_registry.OBJECTIVES.names()
  out(f"objective preprocessors on the embedded corpus (pre-tokenized, in memory), token budget "
      f"{budget}, {seconds:.0f} s each; target {TARGET_TOKENS_PER_SECOND / 1e6:.1f}M source tokens/s")
  out(f"{'objective':<20} {'inputs':>6} {'targets':>7} {'raw':>5} {'examples/s':>11} "
      f"{'source tok/s':>13}  target")
  results = []
  for name in names:
    r = bench_objective(name, docs, vocabulary, budget, seconds)
    results.append(r)
    ok = "ok" if r.source_tokens_per_second >= TARGET_TOKENS_PER_SECOND else "BELOW"
    out(f"{name:<20} {r.lengths.inputs:>6} {r.lengths.targets:>7} {r.lengths.raw:>5} "
        f"{r.examples_per_second:>11,.0f} {r.source_tokens_per_second / 1e6:>12.2f}M  {ok}")
  return results
