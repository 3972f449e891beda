"""From a seqio task to global `jax.Array` batches on the mesh.

Each host reads its own shard (`seqio.ShardInfo`), batches it host-locally, and the pieces
become one global array with `jax.make_array_from_process_local_data`. The position of
the training stream is simply the number of batches consumed: the stream is deterministic
for a seed, so a resumed run skips that many batches and sees exactly what it would have
seen without the interruption.

`DevicePrefetcher` keeps the next few batches already on the devices, built by a background
thread while the current step runs, and never reads past a checkpoint step, so a
checkpoint's data position stays exact.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Callable, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf

from objectax.data import pydocs, sources, tasks
from objectax.data import vocab as vocab_lib
from objectax.models.registry import ConfigError
from objectax.objectives import registry as objective_registry

Batch = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TaskInput:
  """What the trainer needs to know about its data."""
  task: seqio.Task | seqio.Mixture
  task_feature_lengths: Mapping[str, int]
  feature_converter: seqio.FeatureConverter
  vocabulary: seqio.Vocabulary
  lengths: objective_registry.TaskLengths


def build_task_input(cfg) -> TaskInput:
  """Prepares the corpus and vocabulary of a resolved run (`builder.RunConfig`) and
  registers its task, at the objective's exact lengths for the token budget.

  Everything here that can fail on bad config (unknown corpus, missing TFDS data, lengths
  too short) fails before any model is built or compiled.
  """
  pydocs.keep_tensorflow_off_accelerators()
  exp = cfg.exp
  lengths = cfg.task_lengths()
  corpus = sources.get_corpus(exp.corpus)
  corpus.prepare(cfg.data)
  vocabulary = vocab_lib.get_vocabulary(cfg.vocab, cfg.data_dir)
  task = tasks.get_task(exp.corpus, exp.objective, cfg.objective_cfg, vocabulary,
                        exp.sequence_length, cfg.data)
  return TaskInput(
      task=task,
      task_feature_lengths=lengths.feature_lengths(),
      feature_converter=cfg.arch.feature_converter(exp.pack, lengths.concat),
      vocabulary=vocabulary,
      lengths=lengths,
  )


def resolve_input_shards(input_shards: int, global_batch_size: int) -> int:
  """The number of input shards (0: one per process), checked against processes and batch."""
  shards = input_shards or jax.process_count()
  if shards % jax.process_count() or global_batch_size % shards:
    raise ConfigError(
        f"TrainConfig.input_shards={shards} must be a multiple of the process count "
        f"{jax.process_count()} and divide TrainConfig.batch_size={global_batch_size}")
  return shards


def _host_dataset(ti: TaskInput, split: str, global_batch_size: int, *, shuffle: bool,
                  seed: int, input_shards: int = 0) -> tf.data.Dataset:
  """This process's rows of every global batch.

  The source is split into `input_shards` shards (seqio.ShardInfo); each global batch is
  shard 0's batch_size / input_shards examples, then shard 1's, and so on. Process p reads
  its own consecutive block of shards, so the processes read disjoint data, and the
  global batch depends on `input_shards` alone, not on how many processes share them:
  one process reading 2 shards gives exactly the batches of two processes reading one
  each.
  """
  shards = resolve_input_shards(input_shards, global_batch_size)
  per_process = shards // jax.process_count()
  first = jax.process_index() * per_process
  datasets = [seqio.get_dataset(
      ti.task.name,
      task_feature_lengths=ti.task_feature_lengths,
      feature_converter=ti.feature_converter,
      dataset_split=split,
      shuffle=shuffle,
      num_epochs=None,  # repeat forever; the trainer decides how many batches to take
      shard_info=seqio.ShardInfo(index=index, num_shards=shards),
      seed=seed,
      batch_size=global_batch_size // shards,
      verbose=False,
  ) for index in range(first, first + per_process)]
  if len(datasets) == 1:
    return datasets[0]
  return tf.data.Dataset.zip(tuple(datasets)).map(
      lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]})


class TrainStream:
  """The endless, deterministic training stream of host-local numpy batches.

  Resuming restores the saved tf.data iterator state when there is one (a checkpoint
  writes it beside the model state: about 0.1 s and a few MB per host for the quickstart),
  and otherwise skips `start_position` batches, which replays the pipeline and so costs
  time proportional to the position.
  """

  def __init__(self, ti: TaskInput, global_batch_size: int, seed: int, *,
               start_position: int = 0, state_path: str | None = None, input_shards: int = 0):
    ds = _host_dataset(ti, "train", global_batch_size, shuffle=True, seed=seed,
                       input_shards=input_shards)
    self.restored_from = None
    if state_path is None and start_position:
      ds = ds.skip(start_position)
    self._iterator = iter(ds.prefetch(tf.data.AUTOTUNE))
    if state_path is not None:
      tf.train.Checkpoint(iterator=self._iterator).read(state_path).assert_consumed()
      self.restored_from = state_path

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    return {k: v.numpy() for k, v in next(self._iterator).items()}

  def save(self, path: str) -> None:
    tf.train.Checkpoint(iterator=self._iterator).write(path)


def eval_batches(ti: TaskInput, global_batch_size: int, num_batches: int, *,
                 input_shards: int = 0) -> list[Batch]:
  """A fixed list of validation batches (same every call), so losses compare across steps."""
  ds = _host_dataset(ti, "validation", global_batch_size, shuffle=False, seed=0,
                     input_shards=input_shards)
  return list(ds.take(num_batches).as_numpy_iterator())


def to_global(batch: Batch, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Host-local numpy batch -> one global array per feature, split over the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


class DevicePrefetcher:
  """Global batches for steps `start + 1 .. stop`, up to `depth` of them built ahead.

  A background thread pulls host batches from `stream` and turns them into global arrays
  (`to_global`: numpy conversion and host->device copy) while the step that consumes the
  previous batch runs (jit dispatch returns at once). `depth=0` does the same work in the
  caller's thread when a batch is asked for, with no thread at all.

  Exact checkpoints: the stream's state saved at step S must be its state after exactly S
  batches. The thread never pulls batch q while some step b with `hold_after(b)`, b < q,
  has been asked for and neither the batch after it has been asked for nor `save` called:
  it drains at each checkpoint step, and `save` checks that nothing was read ahead before
  writing the stream's state, then lets it read ahead again. The cost is at most one
  batch not prefetched per checkpoint.
  """

  def __init__(self, stream, sharding: jax.sharding.Sharding, *, depth: int, start: int,
               stop: int, hold_after: Callable[[int], bool] = lambda step: False):
    self._stream = stream
    self._sharding = sharding
    self._depth = depth
    self._stop = stop
    self._hold_after = hold_after
    self._start = start
    self._requested = start  # batches the caller has asked for (absolute position)
    self._claimed = start    # batches the thread has started pulling from the stream
    self._released = start   # steps up to here hold nothing back (their state is saved)
    self._ready: collections.deque = collections.deque()
    self._error: BaseException | None = None
    self._closed = False
    self._cond = threading.Condition()
    self._thread = None
    if depth > 0:
      self._thread = threading.Thread(target=self._work, name="objectax-prefetch", daemon=True)
      self._thread.start()

  def _may_pull(self, q: int) -> bool:
    """Batch q may be pulled now: within depth of the caller, past no held checkpoint step."""
    if q > self._stop or q > self._requested + self._depth:
      return False
    first = max(self._requested, self._released + 1)
    return not any(self._hold_after(b) for b in range(first, q))

  def _work(self) -> None:
    while True:
      with self._cond:
        while not self._closed and not self._may_pull(self._claimed + 1):
          self._cond.wait()
        if self._closed:
          return
        self._claimed += 1
      try:
        batch = to_global(next(self._stream), self._sharding)
      except BaseException as e:  # pylint: disable=broad-except  (re-raised in the caller)
        with self._cond:
          self._error = e
          self._cond.notify_all()
        return
      with self._cond:
        self._ready.append(batch)
        self._cond.notify_all()

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, jax.Array]:
    with self._cond:
      if self._requested >= self._stop:
        raise StopIteration
      self._requested += 1
      if self._thread is None:
        self._claimed += 1
      else:
        self._cond.notify_all()  # a held checkpoint step is passed: the thread may go on
        while not self._ready and self._error is None:
          self._cond.wait()
        if self._ready:
          return self._ready.popleft()
        raise self._error
    return to_global(next(self._stream), self._sharding)

  def save(self, path: str) -> None:
    """Writes the stream's state; valid only at a held step, where nothing was read ahead."""
    with self._cond:
      if self._claimed != self._requested:
        raise RuntimeError(
            f"data stream read {self._claimed - self._requested} batches past step "
            f"{self._requested}; its state there is not exact (is the step in hold_after?)")
      self._stream.save(path)
      self._released = self._requested  # saved: reading ahead may resume at once
      self._cond.notify_all()

  def close(self) -> None:
    """Stops the thread (it finishes a pull in progress, if any, and exits)."""
    with self._cond:
      self._closed = True
      self._ready.clear()
      self._cond.notify_all()
    if self._thread is not None:
      self._thread.join(timeout=60)
