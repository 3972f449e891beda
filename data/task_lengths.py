"""Lengths a registered task brings with it (e.g. T5's per-task fine-tuning lengths).

A leaf module (no project imports), so that any module registering tasks can record
their lengths while the task registry itself is still being imported. `any_task.lengths`
reads them when `Experiment.task_lengths` is not bound.
"""
from __future__ import annotations

from typing import Mapping

# task name -> {"inputs": I, "targets": T}
DEFAULT_LENGTHS: dict[str, dict[str, int]] = {}


def set_default_lengths(task_name: str, lengths: Mapping[str, int]) -> None:
  """Registers the lengths `task_name` trains with unless Experiment.task_lengths says."""
  DEFAULT_LENGTHS[task_name] = {k: int(v) for k, v in lengths.items()}
