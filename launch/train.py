"""Training, top to bottom: config -> data -> model -> state (fresh or restored) -> loop.

The run is resolved and built by `builder.py` (model, loss, optimizer, shardings, jitted
steps; the pure pieces live in `step.py`); this module wires them to the data, the
checkpoints and the user's terminal.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from objectax.data import sources
from objectax.data import vocab as vocab_lib
from objectax.launch import builder, checkpoints, config, distributed, input_pipeline, plugins
from objectax.launch import preemption
from objectax.launch import sharding
from objectax.launch import step as step_lib
from objectax.launch import workdir as workdir_lib
from objectax.launch import metrics as metrics_lib
from objectax.launch import mfu as mfu_lib
from objectax.models.config import EXECUTION_SETTINGS
from objectax.models.registry import ConfigError


def default_workdir(exp: config.Experiment) -> str:
  """./workdir/<experiment name>, plus a suffix naming any model setting that differs from
  the size's defaults: two different models never share a default workdir."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  return os.path.join("workdir", exp.name + configure.workdir_suffix())


def _json(value):
  """`value` as it reads back from a checkpoint's JSON record (tuples become lists)."""
  return json.loads(json.dumps(value))


def run_identity(cfg, ti, parts, input_shards: int, lengths) -> tuple[dict, dict]:
  """What a checkpoint must match to be resumed: the model (every setting that changes what
  it computes) and the data stream (a data position only resumes the same stream).
  Recorded with every checkpoint; a workdir written elsewhere (an import) records the same."""
  exp, tc = cfg.exp, cfg.train
  model_id = {"arch": exp.arch, "objective": exp.trains_on,
              "vocabulary": vocab_lib.fingerprint(ti.vocabulary),
              **{k: v for k, v in dataclasses.asdict(parts.model_cfg).items()
                 if k not in EXECUTION_SETTINGS}}
  stream_id = {"task": ti.task.name, "seed": tc.seed, "batch_size": tc.batch_size,
               "input_shards": input_shards, "lengths": dict(lengths),
               "packing": exp.packer if exp.pack else "off"}
  return model_id, stream_id


def _refuse_other_run(directory: str, model_id: dict, stream_id: dict):
  """The check of a checkpoint's record against this run (see checkpoints.restore_newest)."""
  def check(ckpt_step: int, data: dict) -> None:
    where = f"checkpoint step {ckpt_step} in {directory}"
    recorded = data.get("model")
    if recorded is not None:
      diffs = [f"{k} {recorded.get(k, 'unset')!r} there, {v!r} here"
               for k, v in _json(model_id).items() if recorded.get(k) != v]
      if diffs:
        raise ConfigError(
            f"{where} was written by another model ({'; '.join(diffs)}); nothing was written: "
            "use another --workdir, or set Experiment.variant to name this model")
    for key, value in _json(stream_id).items():
      if key in data and data[key] != value:
        raise ConfigError(
            f"{where} was written with data {key}={data[key]!r} but this run has {value!r}; "
            "nothing was written: restore that setting, or use another --workdir")
  return check


def _acquire_lock(workdir: str, chief: bool) -> workdir_lib.WorkdirLock | None:
  """Process 0 takes the workdir's lock; every process learns whether it got it."""
  lock, refusal = None, None
  if chief:
    lock = workdir_lib.WorkdirLock(workdir)
    try:
      lock.acquire()
    except ConfigError as e:
      lock, refusal = None, e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    held = int(multihost_utils.broadcast_one_to_all(np.int32(lock is not None or not chief)))
    if not held and refusal is None:
      refusal = ConfigError(f"workdir {workdir} is in use by another objectax train "
                            "(process 0 found its lock); pass another --workdir")
  if refusal is not None:
    raise refusal
  return lock


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


@jax.jit
def _first_nonfinite(first: jax.Array, step: jax.Array, metrics: dict) -> jax.Array:
  """`step` if it is the first whose metrics are not all finite, else `first` (-1: none
  yet). On the devices, once per step: the host reads it only when it reads metrics."""
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
  return jnp.where((first < 0) & ~finite, step, first)


@jax.jit
def _count_seen(seen: dict, metrics: dict) -> tuple[dict, dict]:
  """Adds a step's examples of each mixture component to the running totals, and puts
  the totals and each component's share of them into the step's metrics."""
  seen = {k: v + metrics[f"examples/{k.split('/', 1)[1]}"] for k, v in seen.items()}
  total = jnp.maximum(sum(seen.values()), 1.0)
  shares = {f"share/{k.split('/', 1)[1]}": v / total for k, v in seen.items()}
  return seen, {**metrics, **seen, **shares}


def train(workdir: str | None = None, *, quiet: bool = False) -> dict:
  """Runs (or resumes) the configured experiment; returns the end-of-run summary.

  Before anything is written to the workdir, the run is accepted: the workdir's lock is
  taken, the data is checked, and any checkpoint there is checked against this run (model
  and data stream) and restored. Only then are config.gin, metrics and checkpoints written.
  SIGTERM or Ctrl-C stops it after the current step with a checkpoint (summary
  "stopped_by"); `objectax train` then exits with `preemption.EXIT_PREEMPTED`.
  """
  t_start = time.perf_counter()
  joined = distributed.initialize()  # before anything asks JAX for devices
  cfg = builder.resolve()
  exp, tc = cfg.exp, cfg.train
  workdir = workdir_lib.resolve(workdir or tc.workdir or default_workdir(exp),
                                process_index=jax.process_index())
  if tc.init_from:  # a bad source fails now, before data and compilation
    from objectax.launch import adapt  # pylint: disable=g-import-not-at-top
    adapt.resolve_source(tc.init_from, tc.init_from_step)
  mesh = sharding.make_mesh(cfg.mesh)
  sharding.check_batch_size(tc.batch_size, mesh, cfg.mesh)
  chief = jax.process_index() == 0  # one host prints and writes the shared files
  say = (lambda *a: None) if quiet or not chief else (
      lambda msg: print(f"objectax: {msg}", flush=True))
  lock = _acquire_lock(workdir, chief)
  try:
    with preemption.StopSignals() as signals:
      return _train(cfg, workdir, say, chief, signals, t_start, joined, mesh, quiet)
  finally:
    if lock is not None:
      lock.release()


class _TaskEval:
  """TrainConfig.eval_tasks: the tasks checked when the run starts (before compiling), then
  scored by generation with the live parameters, as `objectax eval --task` scores a
  checkpoint (launch/eval/downstream.py)."""

  def __init__(self, cfg, vocabulary, parts, run):
    from objectax.launch.eval import downstream  # pylint: disable=g-import-not-at-top
    from objectax.launch.tools import generate  # pylint: disable=g-import-not-at-top
    self._downstream, self._generate = downstream, generate
    self._opened = generate.Opened(cfg, 0, vocabulary, parts, parts.scoring_model())
    self._run = run
    self._examples = cfg.train.eval_task_examples or None
    self._tasks = downstream.check(self._opened, tuple(cfg.train.eval_tasks),
                                   flag="TrainConfig.eval_tasks")

  def __call__(self, params, step: int) -> dict[str, float]:
    decoder = self._generate.Decoder(self._opened, self._run, params)
    results = self._downstream.evaluate_tasks(decoder, self._tasks,
                                              max_examples=self._examples, step=step,
                                              show_progress=False)
    return self._downstream.flat_metrics(results)


def _warn(msg: str) -> None:
  """A line about something repaired or skipped (even with --quiet): on stderr."""
  print(f"objectax: warning: {msg}", file=sys.stderr, flush=True)


def _train(cfg, workdir, say, chief, signals, t_start, joined, mesh, quiet) -> dict:
  exp, tc = cfg.exp, cfg.train
  say(f"experiment {exp.name} -> {workdir}")
  if jax.process_count() > 1:
    say(f"{jax.process_count()} processes ({joined}), {jax.local_device_count()} devices each")
  input_shards = input_pipeline.resolve_input_shards(tc.input_shards, tc.batch_size)

  # Data first: it validates lengths and corpus, and fixes the vocabulary size.
  ti = input_pipeline.build_task_input(cfg)
  input_pipeline.check_splits(ti, tc.batch_size, input_shards)
  lengths = dict(ti.task_feature_lengths)
  say(f"task {ti.task.name}: lengths {lengths}, vocabulary {ti.vocabulary.vocab_size}, "
      f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s)")

  # Model, loss, optimizer and state, laid out on the mesh from the start.
  parts = builder.build_for(cfg, ti)
  if ti.component_names:
    total = sum(c.rate for c in ti.components)
    say("mixture components, logged apart: " + ", ".join(
        f"{n} ({c.rate / total:.1%})" for n, c in zip(ti.component_names, ti.components)))
  run = parts.on_mesh(mesh)
  abstract = run.abstract
  task_eval = _TaskEval(cfg, ti.vocabulary, parts, run) if tc.eval_tasks else None
  ckpt_dir = os.path.join(workdir, "checkpoints")
  model_id, stream_id = run_identity(cfg, ti, parts, input_shards, lengths)
  restored = checkpoints.restore_newest(ckpt_dir, abstract,
                                        _refuse_other_run(ckpt_dir, model_id, stream_id))
  params_from = None
  if restored is None and tc.init_from:
    from objectax.launch import adapt  # pylint: disable=g-import-not-at-top
    adapt.check_vocabulary(tc.init_from, tc.init_from_step, vocab_lib.fingerprint(ti.vocabulary))
    params_from = adapt.restore_params(tc.init_from, tc.init_from_step, abstract.params)

  # Accepted: from here on the run writes to its workdir.
  if chief:
    from objectax.launch import configure  # pylint: disable=g-import-not-at-top
    say(f"operative config: {configure.write_operative_config(workdir)}")
    plugins.record(workdir)  # `objectax eval` re-imports the run's own modules from it
    for step, why in (restored.passed_over if restored else []):
      _warn(f"checkpoint step {step} could not be restored ({why}); moved to "
            f"{checkpoints.move_aside(workdir, step)}, resuming from an older one")
  if restored is not None and restored.passed_over and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("objectax: bad checkpoints moved aside")
  ckpt = checkpoints.Checkpointer(workdir, keep=tc.keep_checkpoints,
                                  async_save=tc.async_checkpoints)
  writer = metrics_lib.MetricsWriter(workdir, enabled=chief)
  if restored is not None:
    state, data_position = restored.state, restored.data
    start_step = int(state.step)
    say(f"resuming from checkpoint step {start_step} (data position "
        f"{data_position['batches_consumed']} batches)")
    # Each process saved the iterator of its own block of input shards; with another process
    # count those blocks differ, so the stream is rebuilt by skipping batches instead.
    same_processes = data_position.get("process_count", jax.process_count()) == jax.process_count()
  else:
    same_processes = True
    state = run.init()
    start_step = 0
    if params_from is not None:
      params, source_step, left_behind = params_from
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

  component_eval: dict[str, float] = {}  # the last evaluation's loss of each component

  def evaluate(params) -> float:
    with run.activate():
      sums = [eval_step(params, b) for b in eval_set]
    loss, per_component = step_lib.eval_losses(sums, parts.components)
    component_eval.clear()
    component_eval.update({f"eval_loss/{n}": v for n, v in per_component.items()})
    return loss

  history = writer.truncate(after_step=start_step if start_step else -1,
                            warn=_warn if chief else None)
  if start_step == 0:
    loss0 = evaluate(state.params)
    writer.write(0, {"eval_loss": loss0, **component_eval})
    say(f"step 0 validation loss {loss0:.4f}")
  else:
    loss0 = next((r["eval_loss"] for r in history if r["step"] == 0 and "eval_loss" in r),
                 float("nan"))

  train_iter = None
  iterator_state = ckpt.saved_iterator(start_step) if same_processes else None
  if iterator_state is not None:
    try:
      train_iter = input_pipeline.TrainStream(
          ti, tc.batch_size, tc.seed, start_position=start_step, state_path=iterator_state,
          input_shards=input_shards)
    except Exception as e:  # pylint: disable=broad-except  (TF reports a bad file in many ways)
      _warn(f"the data iterator state {iterator_state} could not be restored "
            f"({checkpoints.first_line(e)}); moved to "
            f"{checkpoints.move_iterator_aside(workdir, start_step, jax.process_index())}; "
            f"skipping {start_step} batches instead")
  if train_iter is None:
    train_iter = input_pipeline.TrainStream(ti, tc.batch_size, tc.seed, start_position=start_step,
                                            input_shards=input_shards)
  if start_step and train_iter.restored_from is None:
    say(f"no saved data iterator for step {start_step}: skipping {start_step} batches instead")
  # Every stream the model reads (encoder and decoder for ED), padding included; the log's
  # useful_mfu takes the padding out (step_lib.padding_fraction).
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
  first_bad = np.int32(-1)  # the first step with non-finite metrics, tracked on the devices
  # Examples of each mixture component seen since step 0, counted on the devices.
  seen = {f"examples_seen/{n}": np.float32(next(
      (r[f"examples_seen/{n}"] for r in reversed(history) if f"examples_seen/{n}" in r), 0.0))
      for n in parts.components}
  last_step = start_step

  def fetch(step: int, m: dict, bad: jax.Array) -> dict:
    """Host copy of a step's metrics; a NaN/Inf in them, or in any step's up to it (`bad`,
    the tracker as of that step), stops the run before a state is saved."""
    m, bad = jax.device_get((m, bad))
    m = {k: float(v) for k, v in m.items()}
    if bad >= 0 or not all(math.isfinite(v) for v in m.values()):
      raise FloatingPointError(
          f"non-finite metrics from step {int(bad) if bad >= 0 else step} on (step {step}: "
          f"{', '.join(f'{k}={v:.4g}' for k, v in m.items())});"
          + (f" the last checkpoint, step {ckpt.latest_step()}, in {ckpt.directory} is kept"
             if ckpt.latest_step() is not None else " no checkpoint had been saved yet"))
    return m

  def log(step: int, m: dict) -> None:
    nonlocal t_log, step_log
    now = time.perf_counter()
    tps = (step - step_log) * tokens_per_batch / max(now - t_log, 1e-9)
    t_log, step_log = now, step
    utilisation = mfu_lib.mfu(tps, flops_per_token, peak_flops)
    # MFU on the non-padding tokens only. The padding fraction is that of the logged step's
    # batch (from the train step's metrics), applied to tokens/s averaged since the last
    # log line: the steps between them are not read back, to keep the loop from stalling.
    padding = m["padding_fraction"]
    useful = utilisation * (1.0 - padding)
    wait = clock.interval_fraction()
    writer.write(step, {**m, "tokens_per_second": tps, "mfu": utilisation, "useful_mfu": useful,
                        **({} if wait is None else {"data_wait_fraction": wait})})
    progress.update(step, m["loss"], tps, extra=f"  MFU {utilisation:.1%} (useful {useful:.1%}, "
                                                f"padding {padding:.1%})")

  def save(step: int, final: bool = False) -> None:
    with clock.not_a_step():
      ckpt.save(step, state, {"batches_consumed": step, **stream_id, "model": model_id,
                               "process_count": jax.process_count()}, stream=batches, final=final)

  try:
    with run.activate():
      for step in range(start_step + 1, tc.steps + 1):
        clock.step_begins(first=step == start_step + 1)
        with clock.waiting():
          batch = next(batches)
        state, step_metrics = train_step(state, batch, rng)
        if seen:
          seen, step_metrics = _count_seen(seen, step_metrics)
        first_bad = _first_nonfinite(first_bad, np.int32(step), step_metrics)
        last_step = step
        # Step N-1's metrics are read only now, after step N is dispatched: no stall.
        if pending is not None and itstime(pending[0], tc.log_every):
          log(pending[0], fetch(*pending))
        pending = (step, step_metrics, first_bad)
        checkpointed = itstime(step, tc.checkpoint_every)
        stopping = signals.should_stop(step) and step < tc.steps
        if checkpointed or itstime(step, tc.eval_every) or stopping:
          # Before a state is saved or evaluated, its own metrics must be finite.
          m = fetch(*pending)
          if itstime(step, tc.log_every):
            log(step, m)
          pending = None
          if checkpointed:
            save(step)
          if stopping:
            if not checkpointed:
              save(step, final=True)
            break
          if itstime(step, tc.eval_every):
            with clock.not_a_step():
              final_eval = evaluate(state.params)
            writer.write(step, {"eval_loss": final_eval, **component_eval})
            progress.message(f"step {step} validation loss {final_eval:.4f}")
            if task_eval is not None:
              with clock.not_a_step():
                scores = task_eval(state.params, step)
              writer.write(step, scores)
              progress.message(f"step {step} " + ", ".join(
                  f"{k[len('task/'):]} {v:.2f}" for k, v in scores.items()))
      if pending is not None:
        log(pending[0], fetch(*pending))
      clock.step_begins(first=False)  # closes the last step
  finally:  # also on errors: finish in-flight checkpoint writes, flush the logs
    batches.close()
    progress.close()
    ckpt.close()
    writer.close()
  stopped_by = signals.received if last_step < tc.steps else None
  if final_eval is None and not stopped_by:  # resumed at the final step: evaluate anyway
    final_eval = evaluate(state.params)
  summary = {
      "experiment": exp.name, "workdir": workdir, "start_step": start_step,
      "final_step": int(state.step), "step0_eval_loss": loss0, "final_eval_loss": final_eval,
      "wall_seconds": time.perf_counter() - t_start, "parameters": n_params,
      "data_resume": ("none" if not start_step else
                      "iterator_state" if train_iter.restored_from else "skip_batches"),
      # Over this run's steps after its first (compilation); None when there were none.
      "data_wait_fraction": clock.run_fraction(), "seconds_per_step": clock.seconds_per_step(),
      "stopped_by": stopped_by,
  }
  skipped = sum(sources.skipped_records().values())
  if skipped:
    summary["skipped_records"] = skipped
    say(f"skipped {skipped} bad record(s) of the corpus (LocalTextConfig.bad_records='skip')")
  if stopped_by:
    say(f"stopped by {stopped_by} after step {summary['final_step']}: checkpoint saved in "
        f"{ckpt.directory}; run the same command to resume (exit status "
        f"{preemption.EXIT_PREEMPTED})")
  else:
    drop = (1 - final_eval / loss0) * 100 if loss0 == loss0 else float("nan")
    wait = summary["data_wait_fraction"]
    say(f"done: {exp.name} step {summary['final_step']} in {summary['wall_seconds']:.0f} s; "
        f"validation loss {loss0:.4f} -> {final_eval:.4f} ({drop:.1f}% below step 0); "
        f"data wait {'n/a' if wait is None else f'{wait:.2%}'} of step time; workdir {workdir}")
  if chief:
    workdir_lib.atomic_write(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=1))
  return summary
