"""`objectax bench data`: how fast each objective's preprocessor turns tokens into examples.

The embedded corpus's train split is tokenized once and held in memory, so the figures
measure the objective (concatenation, chunking, corruption, EOS), not the tokenizer or the
disk. "Source tokens" are corpus tokens consumed: whole passes over the corpus are timed,
so objectives whose examples consume varying amounts (FIM, T5's prefix LM, PEGASUS) are
counted exactly. A mixture (UL2) counts each component's examples times its raw length.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import seqio
import tensorflow as tf

from objectax.data import pydocs, sources
from objectax.data import vocab as vocab_lib
from objectax.objectives import mixture as mixture_lib
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


def tokenized_corpus(vocabulary: seqio.Vocabulary) -> tuple[tf.data.Dataset, int]:
  """The embedded train split, tokenized once, in memory: (one pass, its token count)."""
  corpus = sources.get_corpus("pydocs")
  corpus.prepare()
  texts = corpus.make_source().get_dataset("train", shuffle=False)
  ids = [vocabulary.encode_tf(ex[corpus.text_key]).numpy() for ex in texts]
  ragged = tf.RaggedTensor.from_row_lengths(np.concatenate(ids).astype(np.int32),
                                            [len(x) for x in ids])
  docs = tf.data.Dataset.from_tensor_slices(ragged).map(lambda t: {"targets": t}).cache()
  for _ in docs:  # fill the cache, so no pass below pays for it
    pass
  return docs, int(sum(len(x) for x in ids))


def _drain(ds: tf.data.Dataset, deadline: float = float("inf")) -> tuple[int, float]:
  """(examples, seconds) to read `ds` to its end, or until `deadline` (perf_counter)."""
  count, t0 = 0, time.perf_counter()
  for batch in ds.padded_batch(64).prefetch(tf.data.AUTOTUNE):
    count += int(batch["targets"].shape[0])
    if time.perf_counter() > deadline:
      break
  return count, time.perf_counter() - t0


def bench_objective(name: str, docs: tf.data.Dataset, corpus_tokens: int,
                    vocabulary: seqio.Vocabulary, budget: int, seconds: float) -> Result:
  """Source tokens/s = corpus tokens of whole passes / time to turn them into examples.

  Timing whole passes counts exactly the tokens the objective consumed, also for
  objectives whose examples consume a varying number (T5's prefix LM, PEGASUS). One pass
  first warms up (tracing) and sizes the timed run to about `seconds`.
  """
  obj = objective_registry.get(name)
  cfg = obj.config_cls()
  lengths = obj.lengths(cfg, budget)
  features = {f: seqio.Feature(vocabulary, add_eos=True) for f in obj.features}
  if obj.mixture is not None:
    return _bench_mixture(name, obj, cfg, lengths, docs, features, vocabulary, budget, seconds)

  def examples(passes: int) -> tf.data.Dataset:
    with seqio.utils.map_seed_manager(0):
      return obj.preprocess(docs.repeat(passes), lengths.feature_lengths(), features, cfg=cfg)

  _, warm_seconds = _drain(examples(1))
  passes = max(1, math.ceil(seconds / max(warm_seconds, 1e-3)))
  count, elapsed = _drain(examples(passes))
  return Result(name, lengths, count / elapsed, passes * corpus_tokens / elapsed)


def _bench_mixture(name, obj, cfg, lengths, docs, features, vocabulary, budget,
                   seconds) -> Result:
  """A mixture samples its components' endless streams; tokens = sum of examples x raw."""
  components = obj.mixture(cfg, budget, vocabulary)
  streams = []
  for k, c in enumerate(components):
    with seqio.utils.map_seed_manager(k):
      ds = mixture_lib.preprocess_component(docs.repeat(), None, features, c)
    streams.append(ds.map(lambda ex, k=k: {"targets": ex["targets"], "component": k}))
  total = sum(c.rate for c in components)
  mixed = tf.data.Dataset.sample_from_datasets(
      streams, weights=[c.rate / total for c in components], seed=0)
  it = iter(mixed.padded_batch(64).prefetch(tf.data.AUTOTUNE))
  for _ in range(4):  # warm-up: traces every component
    next(it)
  counts = np.zeros(len(components), np.int64)
  t0 = time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    counts += np.bincount(next(it)["component"].numpy(), minlength=len(components))
  elapsed = time.perf_counter() - t0
  tokens = sum(int(n) * c.lengths.raw for n, c in zip(counts, components))
  return Result(name, lengths, counts.sum() / elapsed, tokens / elapsed)


def run(budget: int = 626, seconds: float = 3.0, objectives: list[str] | None = None,
        out=print) -> list[Result]:
  """Benchmarks every registered objective (or the named ones) and prints one row each."""
  pydocs.keep_tensorflow_off_accelerators()
  vocabulary = vocab_lib.get_vocabulary(vocab_lib.VocabConfig())
  docs, corpus_tokens = tokenized_corpus(vocabulary)
  names = objectives or [n for n in objective_registry.OBJECTIVES.names()
                         if objective_registry.get(n).corpus_kind == "text"]
  out(f"objective preprocessors on the embedded corpus (pre-tokenized, in memory), token budget "
      f"{budget}, {seconds:.0f} s each; target {TARGET_TOKENS_PER_SECOND / 1e6:.1f}M source tokens/s")
  out(f"{'objective':<20} {'inputs':>6} {'targets':>7} {'raw':>5} {'examples/s':>11} "
      f"{'source tok/s':>13}  target")
  results = []
  for name in names:
    r = bench_objective(name, docs, corpus_tokens, vocabulary, budget, seconds)
    results.append(r)
    ok = "ok" if r.source_tokens_per_second >= TARGET_TOKENS_PER_SECOND else "BELOW"
    out(f"{name:<20} {r.lengths.inputs:>6} {r.lengths.targets:>7} {r.lengths.raw:>5} "
        f"{r.examples_per_second:>11,.0f} {r.source_tokens_per_second / 1e6:>12.2f}M  {ok}")
  return results
