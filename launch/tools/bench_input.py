"""`objectax bench input`: how fast the input pipeline runs, and how long training waits for it.

Two figures for the configured experiment (gin flags as for `objectax train`):

  (a) the training stream alone (`TrainStream`: seqio task, feature converter, host
      batches as numpy): batches/s and tokens/s after a warm-up;
  (b) a short real run of the training loop itself in a temporary workdir (checkpoints
      and evaluation only at its last step, excluded from the timing): the fraction of the
      step time it spent blocked on the next batch, and the step time.

Tokens count every stream the model reads, padding included (the unit of the training
log's tokens/s), so (a) over (b)'s tokens/s is the pipeline's headroom. The target is a
data wait below 2% of the step time for the `small` model on the CPU, so that input never
limits training speed. (a) also gives the padding fraction of the timed batches and the
useful (non-padding) tokens/s, counted as the train step counts them
(`step.token_counts`).

`--padding_table` (`padding_table`) reads a few batches of the training stream of every
(architecture, objective) pair that can run, at Wang et al.'s budget, and prints the
padding of each: the share of what the model computes on that is padding, which MFU counts
as work all the same.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import tempfile
import time
from typing import Callable, Sequence

from objectax.launch import builder, configure, input_pipeline, train
from objectax.launch import step as step_lib

WAIT_TARGET = 0.02  # under 2% of the step time spent waiting for data: input never limits training


@dataclasses.dataclass(frozen=True)
class Result:
  experiment: str
  tokens_per_batch: int
  pipeline_batches_per_second: float
  pipeline_tokens_per_second: float
  steps: int
  seconds_per_step: float | None
  data_wait_fraction: float | None
  prefetch_batches: int
  pipeline_padding_fraction: float  # of the timed TrainStream batches, every stream pooled

  @property
  def training_tokens_per_second(self) -> float | None:
    return self.tokens_per_batch / self.seconds_per_step if self.seconds_per_step else None

  @property
  def pipeline_useful_tokens_per_second(self) -> float:
    return self.pipeline_tokens_per_second * (1.0 - self.pipeline_padding_fraction)


class PaddingTally:
  """Real (non-padding) tokens and positions of each stream, summed over host batches."""

  def __init__(self):
    self.real: dict[str, int] = {}
    self.total: dict[str, int] = {}

  def add(self, batch) -> None:
    for stream, (real, total) in step_lib.token_counts(batch).items():
      self.real[stream] = self.real.get(stream, 0) + int(real)
      self.total[stream] = self.total.get(stream, 0) + total

  def fraction(self, stream: str | None = None) -> float:
    """The padding fraction of one stream, or of all of them pooled (nan before any batch)."""
    streams = [stream] if stream else list(self.total)
    total = sum(self.total.get(s, 0) for s in streams)
    return 1.0 - sum(self.real.get(s, 0) for s in streams) / total if total else float("nan")


def pipeline_throughput(stream, *, warmup: int = 5, seconds: float = 3.0,
                        min_batches: int = 5,
                        tally: PaddingTally | None = None) -> tuple[int, float]:
  """(batches, seconds) read from `stream` after `warmup` batches (tracing, buffers); the
  timed batches' padding goes into `tally` (a few numpy sums per batch, inside the timing)."""
  for _ in range(warmup):
    next(stream)
  count, t0 = 0, time.perf_counter()
  while count < min_batches or time.perf_counter() - t0 < seconds:
    batch = next(stream)
    if tally is not None:
      tally.add(batch)
    count += 1
  return count, time.perf_counter() - t0


def run(gin_files: list[str], bindings: list[str], *, steps: int = 30, seconds: float = 3.0,
        out: Callable[[str], None] = print) -> Result:
  """Measures (a) and (b) for the experiment the gin files and bindings configure."""
  if steps < 2:
    from objectax.models.registry import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"--steps={steps} must be >= 2 (the first step compiles and is not timed)")
  configure.parse(gin_files, bindings)
  cfg = builder.resolve()
  tc = cfg.train
  ti = input_pipeline.build_task_input(cfg)
  lengths = cfg.arch.model_lengths(dict(ti.task_feature_lengths), ti.lengths.concat)
  tokens_per_batch = tc.batch_size * sum(lengths.values())

  stream = input_pipeline.TrainStream(
      ti, tc.batch_size, tc.seed,
      input_shards=input_pipeline.resolve_input_shards(tc.input_shards, tc.batch_size))
  tally = PaddingTally()
  batches, elapsed = pipeline_throughput(stream, seconds=seconds, tally=tally)
  del stream  # its tf.data threads must not compete with the training run below
  gc.collect()
  shape = " + ".join(f"{n} {k}" for k, n in lengths.items())
  out(f"input pipeline of {cfg.exp.name}: TrainStream, batch {tc.batch_size} x ({shape}) "
      f"tokens, {batches} batches timed after 5 warm-up batches")
  out(f"  pipeline batches/s      {batches / elapsed:,.1f}")
  out(f"  pipeline tokens/s       {batches * tokens_per_batch / elapsed:,.0f}")
  padding = tally.fraction()
  per_stream = (" (" + ", ".join(f"{k} {tally.fraction(k):.1%}" for k in tally.total) + ")"
                if len(tally.total) > 1 else "")
  out(f"  padding fraction        {padding:.1%} of the tokens{per_stream}")
  out(f"  useful tokens/s         {batches * tokens_per_batch * (1 - padding) / elapsed:,.0f} "
      "(non-padding)")

  out(f"training loop: {steps} steps of {cfg.exp.arch}/{cfg.exp.size} in a temporary workdir, "
      f"prefetch_batches={tc.prefetch_batches} (first step, compilation, not timed) ...")
  # Checkpoint and evaluate only at the last step (the loop always does there); the loop
  # keeps both out of its step time. Logging every step keeps the loop within a step of the
  # devices (it reads step N-1's metrics after dispatching step N): between log lines it
  # may run ahead of them, and time blocked on a batch then costs the devices nothing,
  # which the fraction would count anyway.
  # The schedule warms up over min(warmup_steps, steps - 1) steps: binding that keeps it and
  # keeps warmup_steps <= steps, which TrainConfig requires.
  configure.parse(gin_files, [*bindings, f"TrainConfig.steps={steps}",
                              f"TrainConfig.warmup_steps={min(tc.warmup_steps, steps - 1)}",
                              f"TrainConfig.checkpoint_every={steps}",
                              f"TrainConfig.eval_every={steps}", "TrainConfig.eval_batches=1",
                              "TrainConfig.log_every=1", "TrainConfig.keep_checkpoints=1"])
  with tempfile.TemporaryDirectory(prefix="objectax_bench_input_") as workdir:
    summary = train.train(workdir, quiet=True)
  result = Result(
      experiment=cfg.exp.name, tokens_per_batch=tokens_per_batch,
      pipeline_batches_per_second=batches / elapsed,
      pipeline_tokens_per_second=batches * tokens_per_batch / elapsed,
      steps=steps, seconds_per_step=summary["seconds_per_step"],
      data_wait_fraction=summary["data_wait_fraction"], prefetch_batches=tc.prefetch_batches,
      pipeline_padding_fraction=padding)
  step_s, wait = result.seconds_per_step, result.data_wait_fraction
  out(f"  step time               {step_s * 1e3:,.1f} ms (mean of {steps - 1} steps)")
  out(f"  training tokens/s       {result.training_tokens_per_second:,.0f}")
  out(f"  data-wait fraction      {wait:.2%} of step time "
      f"({'ok' if wait < WAIT_TARGET else 'ABOVE'}: target < {WAIT_TARGET:.0%})")
  headroom = result.pipeline_tokens_per_second / result.training_tokens_per_second
  out(f"  pipeline headroom       {headroom:,.1f}x what training consumes")
  return result


# ------------------------------------------------------------------ the padding table

WANG_BUDGET = 626  # Wang et al. 2022's tokens per example (inputs 512 + targets 114 for SC)
TABLE_BINDINGS = ("Experiment.size='tiny'", "Experiment.corpus='pydocs'",
                  f"Experiment.sequence_length={WANG_BUDGET}", "TrainConfig.batch_size=8")


@dataclasses.dataclass(frozen=True)
class PaddingRow:
  """One (architecture, objective) pair of the padding table.

  `lengths`: the model's streams and their lengths, e.g. {"encoder": 512, "decoder": 114};
  `padding`: pooled over the streams; `stream_padding`: each stream's own; `refused`: the
  one-line reason the pair could not be set up (then no figures).
  """
  arch: str
  objective: str
  lengths: dict
  padding: float
  stream_padding: dict
  batches: int
  seconds: float
  refused: str = ""


def table_pairs() -> list[tuple[str, str]]:
  """Every (architecture, objective) pair whose objective runs on the architecture and
  reads text (the `objectax objectives` listing), architectures in registry order."""
  # pylint: disable=g-import-not-at-top
  from objectax.models import registry as arch_registry
  from objectax.objectives import registry as objective_registry
  objectives = [objective_registry.get(n) for n in objective_registry.OBJECTIVES.names()]
  return [(arch, obj.name) for arch in arch_registry.ARCHITECTURES.names() for obj in objectives
          if obj.corpus_kind == "text" and arch_registry.supports(arch, obj)]


def _pair_files(arch: str, objective: str) -> list[str]:
  """The pair's gin/arch and gin/objective files, where they exist (an objective's file
  holds its published settings)."""
  names = [os.path.join("arch", f"{arch}.gin"), os.path.join("objective", f"{objective}.gin")]
  return [n for n in names if os.path.exists(os.path.join(configure.GIN_DIR, n))]


def padding_of_pair(arch: str, objective: str, gin_files: Sequence[str] = (),
                    bindings: Sequence[str] = (), *, batches: int = 20) -> PaddingRow:
  """Reads `batches` batches of the pair's training stream (no model) and counts padding."""
  from objectax.models.registry import ConfigError  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  try:
    configure.parse([*gin_files, *_pair_files(arch, objective)],
                    [*TABLE_BINDINGS, *bindings, f"Experiment.arch={arch!r}",
                     f"Experiment.objective={objective!r}"])
    cfg = builder.resolve()
    ti = input_pipeline.build_task_input(cfg)
    lengths = cfg.arch.model_lengths(dict(ti.task_feature_lengths), ti.lengths.concat)
    stream = input_pipeline.TrainStream(
        ti, cfg.train.batch_size, cfg.train.seed,
        input_shards=input_pipeline.resolve_input_shards(cfg.train.input_shards,
                                                         cfg.train.batch_size))
    tally = PaddingTally()
    for _ in range(batches):
      tally.add(next(stream))
    del stream
  except ConfigError as e:
    return PaddingRow(arch, objective, {}, float("nan"), {}, 0, time.perf_counter() - t0,
                      refused=str(e).strip().splitlines()[0])
  return PaddingRow(arch, objective, dict(lengths), tally.fraction(),
                    {k: tally.fraction(k) for k in tally.total}, batches,
                    time.perf_counter() - t0)


_STREAMS_WIDTH = len("encoder 512 + decoder 114")


def _row_text(r: PaddingRow, arch_w: int, obj_w: int) -> str:
  if r.refused:
    return f"{r.arch:<{arch_w}}  {r.objective:<{obj_w}}  refused: {r.refused}"
  streams = " + ".join(f"{k} {n}" for k, n in r.lengths.items())
  apart = ("  (" + ", ".join(f"{k} {v:.2%}" for k, v in r.stream_padding.items()) + ")"
           if len(r.stream_padding) > 1 else "")
  return (f"{r.arch:<{arch_w}}  {r.objective:<{obj_w}}  {streams:<{_STREAMS_WIDTH}}  "
          f"{r.padding:>7.2%}{apart}")


def padding_table(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), *,
                  batches: int = 20, pairs: Sequence[tuple[str, str]] | None = None,
                  json_path: str | None = None,
                  out: Callable[[str], None] = print) -> list[PaddingRow]:
  """`objectax bench input --padding_table`: the padding of every runnable pair.

  Each pair's stream is read as training would read it at Wang et al.'s budget
  (TABLE_BINDINGS: tiny, the embedded corpus, 626 tokens per example, batch 8, packed),
  with its gin/objective file; `gin_files` and `bindings` apply on top (e.g.
  Experiment.pack=False), the pair's arch and objective last. One progress line per pair
  as it finishes (a mixture such as UL2 takes longest to set up), then the table, most
  padded first; a pair the configuration refuses is a row saying why.
  """
  pairs = list(pairs) if pairs is not None else table_pairs()
  out(f"padding of {len(pairs)} (architecture, objective) pairs: {batches} training batches "
      f"each, {', '.join([*TABLE_BINDINGS, *bindings])}")
  rows, t0 = [], time.perf_counter()
  for i, (arch, objective) in enumerate(pairs, 1):
    r = padding_of_pair(arch, objective, gin_files, bindings, batches=batches)
    rows.append(r)
    figure = f"refused: {r.refused}" if r.refused else f"padding {r.padding:.2%}"
    out(f"  [{i}/{len(pairs)}] {arch} {objective}: {figure} ({r.seconds:.1f} s)")
  arch_w = max([len("architecture"), *(len(r.arch) for r in rows)])
  obj_w = max([len("objective"), *(len(r.objective) for r in rows)])
  out("")
  out(f"{'architecture':<{arch_w}}  {'objective':<{obj_w}}  {'model streams':<{_STREAMS_WIDTH}}  "
      f"{'padding':>7}")
  ranked = sorted(rows, key=lambda r: (bool(r.refused), 0.0 if r.refused else -r.padding))
  for r in ranked:
    out(_row_text(r, arch_w, obj_w))
  out(f"({time.perf_counter() - t0:.0f} s in all; padding: the share of the positions the "
      "model computes on, every stream pooled, that are padding)")
  if json_path:
    with open(json_path, "w", encoding="utf-8") as f:
      json.dump({"bindings": [*TABLE_BINDINGS, *bindings], "batches": batches,
                 "rows": [{**dataclasses.asdict(r), "padding": None if r.refused
                           else r.padding} for r in rows]}, f, indent=1)
    out(f"wrote {json_path}")
  return rows
