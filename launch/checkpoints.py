"""Orbax checkpoints of the train state and the data position.

Periodic, asynchronous, keeping the last N. A checkpoint is written to a temporary
directory and renamed when complete, so a run killed mid-save (even with `kill -9`) leaves
the previous checkpoints intact; leftover temporaries are cleaned up on the next start.
A checkpoint that cannot be read is reported in one line and left where it is.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from objectax.data.registry import ConfigError


class Checkpointer:

  def __init__(self, directory: str, *, every: int, keep: int):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=every,
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=True,
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

  def save(self, step: int, state: Any, data: dict, *, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data),
    ), force=force)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
