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
import os
import threading
from typing import Callable, Mapping, Optional

import jax
import numpy as np
import seqio
import tensorflow as tf

from objectax.data import any_task, packing, pydocs, sources, tasks
from objectax.data import vocab as vocab_lib
from objectax.models import model_objectives
from objectax.models.registry import ConfigError
from objectax.objectives import registry as objective_registry

Batch = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TaskInput:
  """What the trainer needs to know about its data.

  `components`: the tasks read and their rates: one for a plain task, one per task of a
  mixture (UL2's denoisers, a user's Mixture), whose examples are then tagged so the
  loss, tokens and examples of each are logged apart (`COMPONENT_KEY`).
  `trim`: examples longer than the lengths are cut (else refused, one line).
  """
  task: seqio.Task | seqio.Mixture
  task_feature_lengths: Mapping[str, int]
  feature_converter: seqio.FeatureConverter
  vocabulary: seqio.Vocabulary
  lengths: objective_registry.TaskLengths
  corpus: str = ""  # Experiment.corpus (or the task's name), for messages
  components: tuple = ()  # any_task.Component
  trim: bool = True
  targets_key: str = "targets"

  def __post_init__(self):
    if not self.components and self.task is not None:  # default: the task's own tasks
      object.__setattr__(self, "components", tuple(
          any_task.Component(t.name, t, rate) for t, rate in any_task.leaves(self.task)))

  @property
  def component_names(self) -> tuple[str, ...]:
    """Names of the mixture components logged apart; () for a plain task."""
    if len(self.components) < 2 or len(self.components) > MAX_COMPONENTS:
      return ()
    return _short_names([c.name for c in self.components])


def _short_names(names: list[str]) -> tuple[str, ...]:
  """Component names without the prefix they all share (UL2's r1, x1, ..., s)."""
  prefix = os.path.commonprefix(names)
  prefix = prefix[:prefix.rfind("_") + 1] if "_" in prefix else ""
  short = [n[len(prefix):] or n for n in names]
  return tuple(short if len(set(short)) == len(short) else names)


def build_task_input(cfg) -> TaskInput:
  """Prepares the corpus and vocabulary of a resolved run (`builder.RunConfig`) and
  registers its task, at the objective's exact lengths for the token budget; or, for a
  run on a named seqio task (`Experiment.task`), finds it and its components.

  Everything here that can fail on bad config (unknown corpus, missing TFDS data, lengths
  too short, a task's vocabulary) fails before any model is built or compiled.
  """
  pydocs.keep_tensorflow_off_accelerators()
  exp = cfg.exp

  def converter(pack, concat):
    made = cfg.arch.feature_converter(pack, concat)
    return packing.use_first_fit(made) if exp.packer == "first_fit" else made
  if exp.task:
    found, vocabulary = any_task.components(exp.task, cfg)
    lengths = cfg.task_lengths()
    return TaskInput(
        task=any_task.lookup(exp.task), task_feature_lengths=lengths.feature_lengths(),
        feature_converter=converter(exp.pack, lengths.concat), vocabulary=vocabulary,
        lengths=lengths, corpus=exp.task, components=tuple(found),
        trim=exp.long_examples == "trim", targets_key=cfg.arch.targets_key)
  lengths = cfg.task_lengths()
  corpus = sources.get_corpus(exp.corpus)
  corpus.prepare(cfg.data)
  vocabulary = vocab_lib.get_vocabulary(cfg.vocab, cfg.data_dir)
  task = tasks.get_task(exp.corpus, exp.objective, cfg.objective_cfg, vocabulary,
                        exp.sequence_length, cfg.data)
  return TaskInput(
      task=task,
      task_feature_lengths=lengths.feature_lengths(),
      feature_converter=converter(exp.pack, lengths.concat),
      vocabulary=vocabulary,
      lengths=lengths,
      corpus=exp.corpus,
      targets_key=cfg.arch.targets_key,
  )


def run_vocabulary(cfg) -> seqio.Vocabulary:
  """The vocabulary a resolved run trains with, without building its data: the task's
  for a run on `Experiment.task`, else the `VocabConfig` one."""
  if cfg.exp.task:
    return any_task.components(cfg.exp.task, cfg)[1]
  return vocab_lib.get_vocabulary(cfg.vocab, cfg.data_dir)


# Mixture components are told apart by tagging their token ids before the feature
# converter: id + component * _TAG (component 1, 2, ...), plus _START on the first
# nonzero target of each example. The converters only move, pad, shift and compare ids
# with 0, so the tags come out where the ids go, and `_untag` restores the ids exactly.
_TAG = 1 << 24          # above any vocabulary's ids
_START = 1 << 30
MAX_COMPONENTS = 63     # (63 + 1) * _TAG <= _START
# (B, L) beside the targets feature: 0 padding, else 1 + the component's index; and 1 at
# each example's first target.
COMPONENT_KEY = model_objectives.COMPONENT_KEY
COMPONENT_START_KEY = model_objectives.COMPONENT_START_KEY


def _tag(ds: tf.data.Dataset, index: int) -> tf.data.Dataset:
  def tag(ex):
    out = {}
    for k, v in ex.items():
      if v.dtype.is_integer and k in ("inputs", "targets"):
        v = tf.where(v > 0, v + (index + 1) * _TAG, v)
      out[k] = v
    if "targets" in out:
      t = out["targets"]
      first = tf.one_hot(tf.argmax(tf.cast(t > 0, tf.int32)), tf.size(t), dtype=t.dtype)
      out["targets"] = t + first * tf.cast(tf.reduce_any(t > 0), t.dtype) * _START
    return out
  return ds.map(tag, num_parallel_calls=tf.data.AUTOTUNE)


def _untag(targets_key: str):
  def untag(ex):
    out = {}
    for k, v in ex.items():
      if v.dtype.is_integer:
        v = v % _START % _TAG if k != targets_key else v
      out[k] = v
    t = ex[targets_key]
    starts = tf.cast(t >= _START, t.dtype)
    t = t % _START
    out[COMPONENT_KEY] = t // _TAG
    out[COMPONENT_START_KEY] = starts
    out[targets_key] = t % _TAG
    return out
  return untag


def task_dataset(ti: TaskInput, split: str, *, shuffle: bool, seed: Optional[int],
                 shard_info: Optional[seqio.ShardInfo], num_epochs: Optional[int],
                 tag: bool = False) -> tf.data.Dataset:
  """The task's examples before the feature converter, as `seqio.get_dataset` makes them
  (a mixture sampled as seqio's Mixture samples it), each checked to fit the lengths
  unless `ti.trim`, and with `tag` the components' ids tagged (see _tag)."""
  lengths = dict(ti.task_feature_lengths)
  datasets = []
  for index, c in enumerate(ti.components):
    ds = c.task.get_dataset(lengths, split=split, shuffle=shuffle, seed=seed,
                            shard_info=shard_info, num_epochs=num_epochs,
                            trim_output_features=ti.trim)
    if not ti.trim:
      ds = any_task.check_lengths(ds, c.name, lengths)
    if len(ti.components) > 1:
      keys = set(c.task.output_features)
      ds = ds.map(lambda ex, keys=keys: {k: v for k, v in ex.items() if k in keys},
                  num_parallel_calls=tf.data.AUTOTUNE)
    if tag:
      ds = _tag(ds, index)
    datasets.append(ds)
  if len(datasets) == 1:
    return datasets[0]
  # seqio.Mixture.get_dataset's sampling: one seed for all, 42 when unshuffled and unseeded.
  sample_seed = seed if seed is not None else (None if shuffle else 42)
  return tf.data.Dataset.sample_from_datasets(
      datasets, [c.rate for c in ti.components], sample_seed, stop_on_empty_dataset=True)


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
  tag = bool(ti.component_names)
  datasets = []
  for index in range(first, first + per_process):
    ds = task_dataset(ti, split, shuffle=shuffle, seed=seed, num_epochs=None,
                      shard_info=seqio.ShardInfo(index=index, num_shards=shards), tag=tag)
    ds = ti.feature_converter(ds, task_feature_lengths=ti.task_feature_lengths)
    ds = ds.batch(global_batch_size // shards, drop_remainder=True)
    if tag:
      ds = ds.map(_untag(ti.targets_key), num_parallel_calls=tf.data.AUTOTUNE)
    datasets.append(ds)
  if len(datasets) == 1:
    return datasets[0]
  return tf.data.Dataset.zip(tuple(datasets)).map(
      lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]})


# Beside a stream state <path>.index: the batches it had read ahead ({i}/{feature} arrays).
PENDING_SUFFIX = ".pending.npz"


def _flatten_batches(batches: list[Batch]) -> dict[str, np.ndarray]:
  return {f"{i}/{k}": np.asarray(v) for i, b in enumerate(batches) for k, v in b.items()}


def _unflatten_batches(arrays) -> list[Batch]:
  batches: dict[int, dict] = {}
  for key in arrays.files:
    i, feature = key.split("/", 1)
    batches.setdefault(int(i), {})[feature] = arrays[key]
  return [batches[i] for i in sorted(batches)]


class TrainStream:
  """The endless, deterministic training stream of host-local numpy batches.

  Resuming restores the saved tf.data iterator state when there is one (a checkpoint
  writes it beside the model state: about 0.1 s and a few MB per host for the quickstart),
  and otherwise skips `start_position` batches, which replays the pipeline and so costs
  time proportional to the position. A state saved when the run stopped on a signal also
  holds the few batches the prefetcher had read past the saved step; they come first.
  """

  def __init__(self, ti: TaskInput, global_batch_size: int, seed: int, *,
               start_position: int = 0, state_path: str | None = None, input_shards: int = 0):
    ds = _host_dataset(ti, "train", global_batch_size, shuffle=True, seed=seed,
                       input_shards=input_shards)
    self.restored_from = None
    self._pending: collections.deque = collections.deque()  # read ahead, not yet consumed
    if state_path is None and start_position:
      ds = ds.skip(start_position)
    self._iterator = iter(ds.prefetch(tf.data.AUTOTUNE))
    if state_path is not None:
      with np.load(state_path + PENDING_SUFFIX) as pending:
        self._pending.extend(_unflatten_batches(pending))
      tf.train.Checkpoint(iterator=self._iterator).read(state_path).assert_consumed()
      self.restored_from = state_path

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    if self._pending:
      return self._pending.popleft()
    return read_records(lambda: {k: v.numpy() for k, v in next(self._iterator).items()})

  def save(self, path: str, read_ahead: list[Batch] = ()) -> None:
    """Writes the iterator's state to `path` (.index, .data-*) and, beside it, the batches
    read from it but not yet consumed (`read_ahead`, then any still pending from a restore),
    which a restored stream yields first. Every file is written under a temporary name and
    renamed, the .index last: a stream state whose .index exists is complete."""
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp_pending = os.path.join(folder, f".tmp_pending_{name}.npz")
    np.savez(tmp_pending, **_flatten_batches([*read_ahead, *self._pending]))
    os.replace(tmp_pending, path + PENDING_SUFFIX)
    written = tf.train.Checkpoint(iterator=self._iterator).write(os.path.join(folder, f".tmp_{name}"))
    for f in sorted(tf.io.gfile.glob(written + ".*"), key=lambda f: f.endswith(".index")):
      os.replace(f, path + f[len(written):])


def eval_batches(ti: TaskInput, global_batch_size: int, num_batches: int, *,
                 input_shards: int = 0) -> list[Batch]:
  """A fixed list of validation batches (same every call), so losses compare across steps."""
  ds = _host_dataset(ti, "validation", global_batch_size, shuffle=False, seed=0,
                     input_shards=input_shards)
  return read_records(lambda: list(ds.take(num_batches).as_numpy_iterator()))


def read_records(read: Callable):
  """`read()`, with an error about a bad record of the corpus (sources.BAD_RECORD_MARKER,
  raised inside tf.data) turned into a ConfigError of its one line; other errors pass."""
  try:
    return read()
  except tf.errors.OpError as e:
    line = sources.bad_record_line(e.message or str(e))
    if line is None:
      raise
    raise ConfigError(line) from None


# The fewest documents an input shard of a split may hold. Both streams repeat
# (num_epochs=None), so one document fills any number of batches; an empty shard ends its
# stream instead: training gets no batch, evaluation averages over no batches at all.
_MIN_SHARD_DOCUMENTS = 1
# The first examples of each split checked to fit the lengths (Experiment.long_examples).
_CHECKED_EXAMPLES = 256
# At most this many documents are counted to say how many a too-small split holds in all.
_COUNT_CAP = 1000




def _count_shard(source: seqio.DataSource, split: str, shard: seqio.ShardInfo | None,
                 limit: int) -> int:
  """The documents (at most `limit`) of one shard of `split` (None: all of it)."""
  ds = source.get_dataset(split=split, shuffle=False, shard_info=shard)
  return read_records(lambda: sources.count_documents(ds, limit))


def _count_shards(source: seqio.DataSource, split: str, indices: range, shards: int,
                  need: int) -> list[int]:
  """The documents (at most `need`) of each shard in `indices` of `split`, sharded the way
  seqio.Task.get_dataset shards a source: by the source itself when it can (or has at
  least as many files as shards), else every shards-th document of the whole split, where
  one count of the split's first documents gives every shard's."""
  if (shards == 1 or source.supports_arbitrary_sharding
      or len(source.list_shards(split=split)) >= shards):
    return [_count_shard(source, split, seqio.ShardInfo(i, shards), need) for i in indices]
  total = _count_shard(source, split, None, indices[-1] + 1 + (need - 1) * shards)
  return [min(need, max(0, -(-(total - i) // shards))) for i in indices]


def _too_few_documents(corpus: str, task: seqio.Task, split: str, index: int, shards: int,
                       found: int) -> ConfigError:
  source = task.source
  head = f"corpus {corpus or task.name!r}: "
  if shards == 1:
    head += (f"the {split} split has {found} documents, fewer than the "
             f"{_MIN_SHARD_DOCUMENTS} it needs")
  else:
    total = _count_shard(source, split, None, _COUNT_CAP)
    head += (f"input shard {index} (of {shards}, TrainConfig.input_shards) of the {split} "
             f"split has {found} documents, fewer than the "
             f"{_MIN_SHARD_DOCUMENTS} each needs; the split has "
             f"{total if total < _COUNT_CAP else f'{_COUNT_CAP}+'} in all")
  hint = getattr(source, "too_few_documents_hint", None)  # a source that can say more
  if hint is not None:
    fix = read_records(lambda: hint(split, _COUNT_CAP))
  else:
    fix = f"check the corpus's {split} data"
  if shards > 1:
    fix += ", or lower TrainConfig.input_shards"
  return ConfigError(f"{head}; {fix}")


def check_splits(ti: TaskInput, global_batch_size: int, input_shards: int) -> None:
  """ConfigError in one line, before any model is built, when an input shard this process
  reads of split "train" or "validation" holds fewer than _MIN_SHARD_DOCUMENTS documents,
  or when the first records read hold a bad one.

  It reads only the first documents of each shard (the first batch of lines, for a local
  corpus), so it costs about the same on any size of corpus.
  """
  shards = resolve_input_shards(input_shards, global_batch_size)
  per_process = shards // jax.process_count()
  first = jax.process_index() * per_process
  if not ti.trim:  # a too-long example among the first ones fails here, before compiling
    for split in sources.SPLITS:
      ds = task_dataset(ti, split, shuffle=False, seed=None, shard_info=None, num_epochs=1)
      read_records(lambda ds=ds: sum(1 for _ in ds.take(_CHECKED_EXAMPLES)))
  checked = set()
  for task in (c.task for c in ti.components):
    if repr(task.source) in checked:  # a mixture's components share the corpus
      continue
    checked.add(repr(task.source))
    for split in sources.SPLITS:
      indices = range(first, first + per_process)
      counts = _count_shards(task.source, split, indices, shards, _MIN_SHARD_DOCUMENTS)
      for index, found in zip(indices, counts):
        if found < _MIN_SHARD_DOCUMENTS:
          raise _too_few_documents(ti.corpus, task, split, index, shards, found)


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
        host = next(self._stream)
        batch = (host, to_global(host, self._sharding))
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
          return self._ready.popleft()[1]
        raise self._error
    return to_global(next(self._stream), self._sharding)

  def save(self, path: str, *, final: bool = False) -> None:
    """Writes the stream's state. Valid at a held step, where nothing was read ahead; with
    `final` (the run stops here, e.g. on a signal) at any step: reading stops, and the
    batches read ahead are saved beside the state, to be consumed first on resume."""
    if final:
      self.close()
      with self._cond:
        self._stream.save(path, read_ahead=[host for host, _ in self._ready])
      return
    with self._cond:
      if self._claimed != self._requested:
        raise RuntimeError(
            f"data stream read {self._claimed - self._requested} batches past step "
            f"{self._requested}; its state there is not exact (is the step in hold_after?)")
      self._stream.save(path)
      self._released = self._requested  # saved: reading ahead may resume at once
      self._cond.notify_all()

  def close(self) -> None:
    """Stops the thread (it finishes a pull in progress, if any, and exits). Batches already
    read stay in `_ready` (a final `save` writes them)."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    if self._thread is not None:
      self._thread.join(timeout=60)
      self._thread = None
