"""Orbax checkpoints of the train state and the data position.

Layout under the workdir: ``checkpoints/<step>/`` (Orbax: state and a small JSON with the
data position) and ``data_iterators/<step>/process_<i>.*`` (each host's tf.data iterator
state, written right after the Orbax save is started; a step whose iterator file is
missing resumes by skipping batches instead).

On resume, `restore_newest` takes the newest checkpoint that restores: one whose files are
missing, torn or unreadable (a disk that filled up, an interrupted copy, a stray empty
folder) is passed over for the previous one, and the trainer then moves it aside to
`<workdir>/corrupt/` (never deleting it). A checkpoint written by a different model or
data stream is not passed over: the run is refused before anything is written.

Periodic, asynchronous by default (`async_save=False`, from TrainConfig.async_checkpoints,
makes each save block until written), keeping the last N. A checkpoint is written to a temporary
directory and renamed when complete, so a run killed mid-save (even with `kill -9`) leaves
the previous checkpoints intact; leftover temporaries are cleaned up on the next start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import shutil
from typing import Any, Callable, Iterator

import jax
import orbax.checkpoint as ocp

from objectax.models.registry import ConfigError


def first_line(error: Exception) -> str:
  """An exception's first line (at most 300 characters), or its type's name."""
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def complete_steps(directory: str) -> list[int]:
  """The checkpoint steps under `directory` (a workdir's checkpoints/), oldest first."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
  """Orbax's own logging (absl) and its event loop's (asyncio) down to errors that matter:
  a failed read is reported by the caller in one line, not by pages of async tracebacks."""
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


@contextlib.contextmanager
def read_only(directory: str, what: str, **manager_kwargs) -> Iterator[ocp.CheckpointManager]:
  """A read-only CheckpointManager over `directory` (another run's checkpoints: nothing is
  created, pruned or cleaned up). Any Orbax failure inside becomes one ConfigError line,
  "<what> could not be read (<first line>)"."""
  manager = None
  try:
    with quiet_orbax():
      manager = ocp.CheckpointManager(
          os.path.abspath(directory),
          options=ocp.CheckpointManagerOptions(create=False, read_only=True, save_interval_steps=0),
          **manager_kwargs)
      yield manager
  except ConfigError:
    raise
  except Exception as e:  # orbax raises many types; all mean "cannot use this checkpoint"
    raise ConfigError(f"{what} could not be read ({first_line(e)})") from e
  finally:
    if manager is not None:
      manager.close()


def read_data(directory: str, step: int) -> dict | None:
  """The data-position record of checkpoint `step` (a small JSON file), or None when it is
  missing or unreadable: then the checkpoint is incomplete."""
  path = os.path.join(directory, str(step), "data", "metadata")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


@dataclasses.dataclass
class Restored:
  step: int
  state: Any
  data: dict
  passed_over: list[tuple[int, str]]  # newer checkpoints that could not be read, and why


def restore_newest(directory: str, abstract_state: Any,
                   check: Callable[[int, dict], None]) -> Restored | None:
  """The newest checkpoint under `directory` that restores onto `abstract_state`'s
  shardings; None when there is none at all.

  `check(step, data)` sees each candidate's data record before its state is read and
  raises ConfigError to refuse the run (another model, another stream): refusals are not
  passed over. Nothing is moved or written here; a ConfigError names every checkpoint
  tried when none restores.
  """
  passed_over = []
  for step in reversed(complete_steps(directory)):
    data = read_data(directory, step)
    if data is None:
      passed_over.append((step, "its data record is missing or unreadable"))
      continue
    check(step, data)
    try:
      with read_only(directory, f"checkpoint step {step} in {directory}",
                     item_names=("state", "data")) as manager:
        with quiet_orbax():
          state = manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state))).state
    except ConfigError as e:
      if "model" not in data:  # an older record: a failure may be another model, so refuse
        raise ConfigError(f"{e}; it is left untouched: use another workdir") from e
      passed_over.append((step, str(e).split(" could not be read ", 1)[-1]))
      continue
    return Restored(step, state, data, passed_over)
  if passed_over:
    raise ConfigError(
        f"no checkpoint in {directory} could be restored ("
        + "; ".join(f"step {step}: {why}" for step, why in passed_over)
        + "); all are left untouched: use another workdir, or move them aside to start afresh")
  return None


def move_aside(workdir: str, step: int) -> str:
  """Moves checkpoint `step` and its data-iterator files to <workdir>/corrupt/ (kept for a
  post-mortem, never deleted); returns where the checkpoint went."""
  target = os.path.join(workdir, "corrupt")
  moved = None
  for folder in ("checkpoints", "data_iterators"):
    source = os.path.join(workdir, folder, str(step))
    if not os.path.exists(source):
      continue
    dest = os.path.join(target, folder, str(step))
    suffix = 1
    while os.path.exists(dest):  # an earlier bad copy of the same step stays too
      dest, suffix = os.path.join(target, folder, f"{step}.{suffix}"), suffix + 1
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(source, dest)
    moved = moved or dest
  return moved or target


def move_iterator_aside(workdir: str, step: int, process_index: int) -> str:
  """Moves one process's data-iterator files of `step` to <workdir>/corrupt/ (see
  `move_aside`); returns the folder they went to."""
  dest = os.path.join(workdir, "corrupt", "data_iterators", str(step))
  os.makedirs(dest, exist_ok=True)
  for path in glob.glob(os.path.join(workdir, "data_iterators", str(step),
                                     f"process_{process_index}.*")):
    shutil.move(path, os.path.join(dest, os.path.basename(path)))
  return dest


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.iterator_directory = os.path.abspath(os.path.join(workdir, "data_iterators"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=1,  # the trainer's `itstime` is the one schedule
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        ),
        item_names=("state", "data"),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def iterator_path(self, step: int) -> str:
    return os.path.join(self.iterator_directory, str(step), f"process_{jax.process_index()}")

  def saved_iterator(self, step: int) -> str | None:
    """This host's iterator state for `step`, if it was written completely."""
    path = self.iterator_path(step)
    return path if os.path.exists(path + ".index") else None

  def save(self, step: int, state: Any, data: dict, *, stream=None, final: bool = False) -> bool:
    """Saves `state` and `data` (in the background if async), and the data iterator's state
    (`final`: the run stops after this save; the stream may have read ahead)."""
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data),
    ), force=True)
    if saved and stream is not None:
      stream.save(self.iterator_path(step), final=final)
      self._prune_iterators(keep=set(self.manager.all_steps()) | {step})
    return saved

  def _prune_iterators(self, keep: set[int]) -> None:
    """Removes this host's iterator files of steps whose Orbax checkpoint is gone."""
    for path in glob.glob(os.path.join(self.iterator_directory, "*", f"process_{jax.process_index()}.*")):
      step = os.path.basename(os.path.dirname(path))
      if step.isdigit() and int(step) not in keep and int(step) < max(keep):
        os.remove(path)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
