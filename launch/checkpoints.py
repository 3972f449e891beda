"""Orbax checkpoints of the train state and the data position.

Layout under the workdir: ``checkpoints/<step>/`` (Orbax: state and a small JSON with the
data position) and ``data_iterators/<step>/process_<i>.*`` (each host's tf.data iterator
state, written right after the Orbax save is started; a step whose iterator file is
missing resumes by skipping batches instead).

Periodic, asynchronous by default (`async_save=False`, from TrainConfig.async_checkpoints,
makes each save block until written), keeping the last N. A checkpoint is written to a temporary
directory and renamed when complete, so a run killed mid-save (even with `kill -9`) leaves
the previous checkpoints intact; leftover temporaries are cleaned up on the next start.
A checkpoint that cannot be read is reported in one line and left where it is.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
from typing import Any, Iterator

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
def read_only(directory: str, what: str, **manager_kwargs) -> Iterator[ocp.CheckpointManager]:
  """A read-only CheckpointManager over `directory` (another run's checkpoints: nothing is
  created, pruned or cleaned up). Any Orbax failure inside becomes one ConfigError line,
  "<what> could not be read (<first line>)"."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # orbax warns that a read-only directory is read-only
  manager = None
  try:
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
    absl_logger.setLevel(level)


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

  def restore(self, abstract_state: Any) -> tuple[Any, dict]:
    """Restores the latest checkpoint onto the shardings of `abstract_state`."""
    step = self.manager.latest_step()
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore(),
      ))
    except Exception as e:  # orbax raises many types; all mean "cannot use this checkpoint"
      raise ConfigError(
          f"checkpoint step {step} in {self.directory} could not be restored ({first_line(e)}); it is "
          f"left untouched: use another workdir, or move that step aside to resume from an "
          f"older one") from e
    return restored.state, dict(restored.data)

  def iterator_path(self, step: int) -> str:
    return os.path.join(self.iterator_directory, str(step), f"process_{jax.process_index()}")

  def saved_iterator(self, step: int) -> str | None:
    """This host's iterator state for `step`, if it was written completely."""
    path = self.iterator_path(step)
    return path if os.path.exists(path + ".index") else None

  def save(self, step: int, state: Any, data: dict, *, stream=None) -> bool:
    """Saves `state` and `data` (in the background if async), and the data iterator's state."""
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data),
    ), force=True)
    if saved and stream is not None:
      stream.save(self.iterator_path(step))
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
