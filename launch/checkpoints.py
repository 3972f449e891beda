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

import glob
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from objectax.data.registry import ConfigError


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
      first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
      raise ConfigError(
          f"checkpoint step {step} in {self.directory} could not be restored ({first}); it is "
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
