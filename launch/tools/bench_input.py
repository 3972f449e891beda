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
limits training speed.
"""
from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from typing import Callable

from objectax.launch import builder, configure, input_pipeline, train

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

  @property
  def training_tokens_per_second(self) -> float | None:
    return self.tokens_per_batch / self.seconds_per_step if self.seconds_per_step else None


def pipeline_throughput(stream, *, warmup: int = 5, seconds: float = 3.0,
                        min_batches: int = 5) -> tuple[int, float]:
  """(batches, seconds) read from `stream` after `warmup` batches (tracing, buffers)."""
  for _ in range(warmup):
    next(stream)
  count, t0 = 0, time.perf_counter()
  while count < min_batches or time.perf_counter() - t0 < seconds:
    next(stream)
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
  batches, elapsed = pipeline_throughput(stream, seconds=seconds)
  del stream  # its tf.data threads must not compete with the training run below
  gc.collect()
  shape = " + ".join(f"{n} {k}" for k, n in lengths.items())
  out(f"input pipeline of {cfg.exp.name}: TrainStream, batch {tc.batch_size} x ({shape}) "
      f"tokens, {batches} batches timed after 5 warm-up batches")
  out(f"  pipeline batches/s      {batches / elapsed:,.1f}")
  out(f"  pipeline tokens/s       {batches * tokens_per_batch / elapsed:,.0f}")

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
      data_wait_fraction=summary["data_wait_fraction"], prefetch_batches=tc.prefetch_batches)
  step_s, wait = result.seconds_per_step, result.data_wait_fraction
  out(f"  step time               {step_s * 1e3:,.1f} ms (mean of {steps - 1} steps)")
  out(f"  training tokens/s       {result.training_tokens_per_second:,.0f}")
  out(f"  data-wait fraction      {wait:.2%} of step time "
      f"({'ok' if wait < WAIT_TARGET else 'ABOVE'}: target < {WAIT_TARGET:.0%})")
  headroom = result.pipeline_tokens_per_second / result.training_tokens_per_second
  out(f"  pipeline headroom       {headroom:,.1f}x what training consumes")
  return result
