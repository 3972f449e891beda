"""Training, top to bottom: config -> data -> model -> state (fresh or restored) -> loop.

The run is resolved and built by `builder.py` (model, loss, optimizer, shardings, jitted
steps; the pure pieces live in `step.py`); this module wires them to the data, the
checkpoints and the user's terminal.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time

import jax
import numpy as np

from objectax.launch import builder, checkpoints, config, distributed, input_pipeline, sharding
from objectax.launch import metrics as metrics_lib
from objectax.launch import mfu as mfu_lib
from objectax.models.registry import ConfigError


def resolve_workdir(exp: config.Experiment, tc: config.TrainConfig, workdir: str | None) -> str:
  """The workdir, created and probed for writing before anything expensive happens."""
  path = workdir or tc.workdir or os.path.join("workdir", exp.name)
  if "://" in path:
    raise ConfigError(
        f"workdir {path} is a URL; metrics and iterator files are written with plain file "
        "I/O, so give a path every host can write: a shared filesystem or a bucket mounted "
        "with gcsfuse (e.g. /gcs/BUCKET/run)")
  path = os.path.abspath(path)
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe_{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir {path} is not writable ({e.strerror}); pass --workdir=DIR") from None
  return path


class WaitClock:
  """How much of the step time the loop spends blocked on the next batch.

  The fraction is (time inside `waiting`) / (loop wall time minus time inside
  `not_a_step`: checkpoint saves, evaluation), both counted from the end of the run's
  first step: that step compiles, and would swamp both figures.

  It bounds the time the devices idle for data from above: between log steps the loop does
  not wait for the devices and may run ahead of them, and a wait then costs them nothing.
  """

  def __init__(self):
    self._t0 = None          # start of the timed window (end of the first step)
    self._first_open = False
    self._steps = 0          # timed steps closed so far
    self._wait = self._excluded = 0.0
    self._t_end = None
    self._last = (0.0, 0.0)  # (wait, elapsed) at the previous interval_fraction call

  def step_begins(self, first: bool) -> None:
    """Marks the start of a step (or, with first=False after the loop, the end of the last)."""
    now = time.perf_counter()
    if first:
      self._first_open = True
      return
    if self._first_open:
      self._first_open, self._t0 = False, now
    elif self._t0 is not None:
      self._steps += 1
    self._t_end = now

  def _timed(self) -> bool:
    return self._t0 is not None

  @contextlib.contextmanager
  def waiting(self):
    t = time.perf_counter()
    yield
    if self._timed():
      self._wait += time.perf_counter() - t

  @contextlib.contextmanager
  def not_a_step(self):
    t = time.perf_counter()
    yield
    if self._timed():
      self._excluded += time.perf_counter() - t

  def _elapsed(self, now: float) -> float:
    return now - self._t0 - self._excluded

  def interval_fraction(self) -> float | None:
    """The fraction since the previous call; None before any timed time has passed."""
    if not self._timed():
      return None
    elapsed = self._elapsed(time.perf_counter())
    wait, elapsed_since = self._wait - self._last[0], elapsed - self._last[1]
    if elapsed_since <= 0:
      return None
    self._last = (self._wait, elapsed)
    return min(1.0, wait / elapsed_since)

  def run_fraction(self) -> float | None:
    if not self._steps:
      return None
    return min(1.0, self._wait / self._elapsed(self._t_end))

  def seconds_per_step(self) -> float | None:
    return self._elapsed(self._t_end) / self._steps if self._steps else None


def train(workdir: str | None = None, *, quiet: bool = False) -> dict:
  """Runs (or resumes) the configured experiment; returns the end-of-run summary."""
  t_start = time.perf_counter()
  joined = distributed.initialize()  # before anything asks JAX for devices
  cfg = builder.resolve()
  exp, tc = cfg.exp, cfg.train
  workdir = resolve_workdir(exp, tc, workdir)
  if tc.init_from:  # a bad source fails now, before data and compilation
    from objectax.launch import adapt  # pylint: disable=g-import-not-at-top
    adapt.resolve_source(tc.init_from, tc.init_from_step)
  mesh = sharding.make_mesh(cfg.mesh)
  sharding.check_batch_size(tc.batch_size, mesh, cfg.mesh)
  chief = jax.process_index() == 0  # one host prints and writes the shared files
  say = (lambda *a: None) if quiet or not chief else (
      lambda msg: print(f"objectax: {msg}", flush=True))
  say(f"experiment {exp.name} -> {workdir}")
  if jax.process_count() > 1:
    say(f"{jax.process_count()} processes ({joined}), {jax.local_device_count()} devices each")
  input_shards = input_pipeline.resolve_input_shards(tc.input_shards, tc.batch_size)

  # Data first: it validates lengths and corpus, and fixes the vocabulary size.
  ti = input_pipeline.build_task_input(cfg)
  lengths = dict(ti.task_feature_lengths)
  say(f"task {ti.task.name}: lengths {lengths}, vocabulary {ti.vocabulary.vocab_size}, "
      f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s)")

  if chief:
    from objectax.launch import configure  # pylint: disable=g-import-not-at-top
    say(f"operative config: {configure.write_operative_config(workdir)}")

  # Model, loss, optimizer and state, laid out on the mesh from the start.
  parts = builder.build(cfg, vocab_size=ti.vocabulary.vocab_size,
                        extra_ids=ti.vocabulary.extra_ids, feature_lengths=lengths,
                        concat=ti.lengths.concat)
  run = parts.on_mesh(mesh)
  abstract = run.abstract
  ckpt = checkpoints.Checkpointer(workdir, keep=tc.keep_checkpoints,
                                  async_save=tc.async_checkpoints)
  writer = metrics_lib.MetricsWriter(workdir, enabled=chief)
  # What the data position means: a checkpoint only resumes the same stream.
  stream_id = {"task": ti.task.name, "seed": tc.seed, "batch_size": tc.batch_size,
               "input_shards": input_shards, "lengths": lengths}
  if ckpt.latest_step() is not None:
    state, data_position = ckpt.restore(abstract)
    start_step = int(state.step)
    for key, value in stream_id.items():
      if key in data_position and data_position[key] != value:
        raise ConfigError(
            f"checkpoint step {start_step} in {ckpt.directory} was written with data {key}="
            f"{data_position[key]!r} but this run has {value!r}; restore that setting or use "
            f"another workdir")
    say(f"resuming from checkpoint step {start_step} (data position "
        f"{data_position['batches_consumed']} batches)")
    # Each process saved the iterator of its own block of input shards; with another process
    # count those blocks differ, so the stream is rebuilt by skipping batches instead.
    same_processes = data_position.get("process_count", jax.process_count()) == jax.process_count()
  else:
    same_processes = True
    state = run.init()
    start_step = 0
    if tc.init_from:
      from objectax.launch import adapt  # pylint: disable=g-import-not-at-top
      params, source_step, left_behind = adapt.restore_params(tc.init_from, tc.init_from_step,
                                                              abstract.params)
      state = state.replace(params=params)
      say(f"parameters from {tc.init_from} step {source_step}; optimizer and step start afresh"
          + (f" ({len(left_behind)} checkpoint parameters not used)" if left_behind else ""))
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
  say(f"model {exp.arch}/{exp.size}: {n_params / 1e6:.2f}M parameters")
  flops_per_token = parts.flops_per_token()
  peak_flops, peak_source = mfu_lib.run_peak_flops()
  say(f"MFU = tokens/s x {flops_per_token:.4g} training FLOPs per token / "
      f"{peak_flops / 1e12:.3g} TFLOP/s peak ({peak_source})")

  batch_sharding = run.batch_sharding
  train_step, eval_step = run.train_step, run.eval_step

  eval_set = [input_pipeline.to_global(b, batch_sharding)
              for b in input_pipeline.eval_batches(ti, tc.batch_size, tc.eval_batches,
                                                           input_shards=input_shards)]

  def evaluate(params) -> float:
    with run.activate():
      sums = [eval_step(params, b) for b in eval_set]
    loss_sum, weight_sum = (float(sum(np.asarray(s[i]) for s in sums)) for i in (0, 1))
    return loss_sum / max(weight_sum, 1.0)

  history = writer.truncate(after_step=start_step if start_step else -1)
  if start_step == 0:
    loss0 = evaluate(state.params)
    writer.write(0, {"eval_loss": loss0})
    say(f"step 0 validation loss {loss0:.4f}")
  else:
    loss0 = next((r["eval_loss"] for r in history if r["step"] == 0 and "eval_loss" in r),
                 float("nan"))

  iterator_state = ckpt.saved_iterator(start_step) if same_processes else None
  try:
    train_iter = input_pipeline.TrainStream(ti, tc.batch_size, tc.seed, start_position=start_step,
                                            state_path=iterator_state, input_shards=input_shards)
  except Exception as e:  # TF reports a bad iterator file in many ways; all mean the same
    raise ConfigError(f"the data iterator state {ckpt.saved_iterator(start_step)} could not be "
                      f"restored ({type(e).__name__}); delete that file to resume by skipping "
                      f"{start_step} batches instead") from e
  if start_step and train_iter.restored_from is None:
    say(f"no saved data iterator for step {start_step}: skipping {start_step} batches instead")
  # Every stream the model reads (encoder and decoder for ED), padding included.
  tokens_per_batch = tc.batch_size * parts.tokens_per_example
  rng = jax.random.key(tc.seed + 1)
  progress = metrics_lib.Progress(tc.steps, start_step, enabled=not quiet)
  itstime = lambda step, every: step % every == 0 or step == tc.steps
  # Batches for the steps ahead, built while the current one runs; drained at each
  # checkpoint step so the saved data position is exact.
  batches = input_pipeline.DevicePrefetcher(
      train_iter, batch_sharding, depth=tc.prefetch_batches, start=start_step, stop=tc.steps,
      hold_after=lambda step: itstime(step, tc.checkpoint_every))
  pending = None  # (step, metrics) of the previous step, read after the next is dispatched
  t_log, step_log = time.perf_counter(), start_step
  final_eval = None
  clock = WaitClock()

  def fetch(step: int, m: dict) -> dict:
    """Host copy of a step's metrics; a NaN/Inf stops the run before that state is saved."""
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    if not all(math.isfinite(v) for v in m.values()):
      raise FloatingPointError(
          f"non-finite metrics at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in m.items())});"
          + (f" the last checkpoint, step {ckpt.latest_step()}, in {ckpt.directory} is kept"
             if ckpt.latest_step() is not None else " no checkpoint had been saved yet"))
    return m

  def log(step: int, m: dict) -> None:
    nonlocal t_log, step_log
    now = time.perf_counter()
    tps = (step - step_log) * tokens_per_batch / max(now - t_log, 1e-9)
    t_log, step_log = now, step
    utilisation = mfu_lib.mfu(tps, flops_per_token, peak_flops)
    wait = clock.interval_fraction()
    writer.write(step, {**m, "tokens_per_second": tps, "mfu": utilisation,
                        **({} if wait is None else {"data_wait_fraction": wait})})
    progress.update(step, m["loss"], tps, extra=f"  MFU {utilisation:.1%}")

  try:
    with run.activate():
      for step in range(start_step + 1, tc.steps + 1):
        clock.step_begins(first=step == start_step + 1)
        with clock.waiting():
          batch = next(batches)
        state, step_metrics = train_step(state, batch, rng)
        # Step N-1's metrics are read only now, after step N is dispatched: no stall.
        if pending is not None and itstime(pending[0], tc.log_every):
          log(pending[0], fetch(*pending))
        pending = (step, step_metrics)
        if itstime(step, tc.checkpoint_every) or itstime(step, tc.eval_every):
          # Before a state is saved or evaluated, its own metrics must be finite.
          m = fetch(*pending)
          if itstime(step, tc.log_every):
            log(step, m)
          pending = None
          if itstime(step, tc.checkpoint_every):
            with clock.not_a_step():
              ckpt.save(step, state, {"batches_consumed": step, **stream_id,
                                       "process_count": jax.process_count()}, stream=batches)
          if itstime(step, tc.eval_every):
            with clock.not_a_step():
              final_eval = evaluate(state.params)
            writer.write(step, {"eval_loss": final_eval})
            progress.message(f"step {step} validation loss {final_eval:.4f}")
      if pending is not None:
        log(pending[0], fetch(*pending))
      clock.step_begins(first=False)  # closes the last step
  finally:  # also on errors: finish in-flight checkpoint writes, flush the logs
    batches.close()
    progress.close()
    ckpt.close()
    writer.close()
  if final_eval is None:  # resumed at the final step: nothing trained, evaluate anyway
    final_eval = evaluate(state.params)
  summary = {
      "experiment": exp.name, "workdir": workdir, "start_step": start_step,
      "final_step": int(state.step), "step0_eval_loss": loss0, "final_eval_loss": final_eval,
      "wall_seconds": time.perf_counter() - t_start, "parameters": n_params,
      "data_resume": ("none" if not start_step else
                      "iterator_state" if train_iter.restored_from else "skip_batches"),
      # Over this run's steps after its first (compilation); None when there were none.
      "data_wait_fraction": clock.run_fraction(), "seconds_per_step": clock.seconds_per_step(),
  }
  drop = (1 - final_eval / loss0) * 100 if loss0 == loss0 else float("nan")
  wait = summary["data_wait_fraction"]
  say(f"done: {exp.name} step {summary['final_step']} in {summary['wall_seconds']:.0f} s; "
      f"validation loss {loss0:.4f} -> {final_eval:.4f} ({drop:.1f}% below step 0); "
      f"data wait {'n/a' if wait is None else f'{wait:.2%}'} of step time; workdir {workdir}")
  if chief:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
  return summary
