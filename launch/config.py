"""The run's typed, frozen configuration: which grid cell (Experiment) and how to train it.

Defaults live once, here; gin files under gin/ override a few of them. Nothing in here
imports TensorFlow or seqio.
"""
from __future__ import annotations

import dataclasses
import math

import gin

from objectax.models.registry import ConfigError

# Experiment.packer's choices (data/packing.py).
PACKERS = ("first_fit", "in_order")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Experiment:
  """A point on the grid: (architecture, objective, size, corpus).

  `sequence_length` is the per-example token budget, len(inputs) + len(targets): the
  objective splits it exactly (full LM: all targets; span corruption with r=0.15, mu=3:
  626 -> inputs 512 + targets 114, as Wang et al. 2022 use for every objective).
  """
  arch: str = "causal_decoder"
  objective: str = "full_lm"
  size: str = "tiny"
  corpus: str = "pydocs"
  sequence_length: int = 128
  pack: bool = True
  # How examples of varying length share rows when packed: "first_fit" places each in the
  # first row, of all those opened for a window of examples, where it fits;
  # "in_order" is seqio's packer, which closes a row at the first example that does not
  # fit (data/packing.py).
  packer: str = "first_fit"
  # Appended to the name when set: a run at the same grid point that differs otherwise,
  # e.g. "lm_adapted" for a run started from another run's parameters (gin/adapt/).
  variant: str = ""
  # Train on this registered seqio Task or Mixture instead of `{corpus}_{objective}`
  # (data/any_task.py): a user's own, or one of ours by name, or a mixture of both.
  task: str = ""
  # Its feature lengths, e.g. {"inputs": 64, "targets": 16}; empty: from the task.
  task_lengths: dict = dataclasses.field(default_factory=dict)
  # A task example longer than its lengths: "refuse" (stop, one line) or "trim" it.
  long_examples: str = "refuse"

  def __post_init__(self):
    if not isinstance(self.task, str):
      raise ConfigError(f"Experiment.task={self.task!r} must be a task or mixture name")
    if self.packer not in PACKERS:
      raise ConfigError(f"Experiment.packer={self.packer!r}; valid choices: {', '.join(PACKERS)}")
    if self.long_examples not in ("refuse", "trim"):
      raise ConfigError(f"Experiment.long_examples={self.long_examples!r}; valid choices: "
                        "refuse, trim")
    if self.task_lengths and not self.task:
      raise ConfigError("Experiment.task_lengths is set but Experiment.task is not: the "
                        "lengths of an objective's task come from Experiment.sequence_length")
    if self.sequence_length < 2:
      raise ConfigError(f"Experiment.sequence_length={self.sequence_length} must be >= 2")
    if not isinstance(self.variant, str) or not all(c.isalnum() or c in "_-" for c in self.variant):
      raise ConfigError(f"Experiment.variant={self.variant!r} must be letters, digits, '_' or '-'")

  @property
  def trains_on(self) -> str:
    """What the model learns from: the task's name, or the objective's."""
    return self.task or self.objective

  @property
  def name(self) -> str:
    """Grid coordinates; the same string names the gin experiment file and the workdir leaf."""
    if self.task:
      base = f"{self.arch}_{self.task}_{self.size}"
    else:
      base = f"{self.arch}_{self.objective}_{self.size}_{self.corpus}"
    return f"{base}_{self.variant}" if self.variant else base


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, evaluation, checkpointing and logging settings."""
  steps: int = 300
  batch_size: int = 16                 # global, in examples
  learning_rate: float = 3e-3          # peak, after linear warmup; cosine decay to end_lr_fraction
  warmup_steps: int = 30
  end_lr_fraction: float = 0.1
  weight_decay: float = 0.01           # AdamW, applied to matrices only (not norms)
  adam_b1: float = 0.9
  adam_b2: float = 0.95
  clip_grad_norm: float = 1.0
  z_loss: float = 1e-4                 # T5X / Wang et al. (docs/objectives.md#loss-normalisation)
  seed: int = 0
  eval_every: int = 100
  eval_batches: int = 8
  checkpoint_every: int = 100
  keep_checkpoints: int = 3
  log_every: int = 10
  workdir: str = ""                    # "" = ./workdir/<experiment name>
  # Input shards the source is split into (0 = one per process). The global batches depend
  # on this number alone, so fixing it keeps the data stream when the process count changes.
  input_shards: int = 0
  # Global batches built ahead of the step that consumes them, by a background thread, so
  # reading, numpy conversion and the host->device copy overlap the running step (0 = off).
  prefetch_batches: int = 2
  # Orbax writes checkpoints in the background (False: each save blocks the loop until done).
  async_checkpoints: bool = True
  # A fresh run starts from the parameters of this run (its workdir, or one checkpoints/<step>
  # folder) instead of a random init: step 0, new optimizer, its own data (launch/adapt.py).
  init_from: str = ""
  init_from_step: int = -1             # -1 = the latest checkpoint of init_from
  # Text-to-text seqio tasks (with metric_fns) scored by generation every eval_every steps
  # through seqio's Evaluator, as `objectax eval --task` does; metrics task/<task>/<name>.
  eval_tasks: tuple = ()
  eval_task_examples: int = 0          # the first N validation examples of each (0 = all)

  def __post_init__(self):
    for field in ("steps", "batch_size", "eval_every", "checkpoint_every", "keep_checkpoints",
                  "log_every", "eval_batches"):
      if getattr(self, field) <= 0:
        raise ConfigError(f"TrainConfig.{field}={getattr(self, field)} must be positive")
    if not isinstance(self.input_shards, int) or self.input_shards < 0:
      raise ConfigError(f"TrainConfig.input_shards={self.input_shards!r} must be >= 0 "
                        "(0 = one per process)")
    if not isinstance(self.prefetch_batches, int) or self.prefetch_batches < 0:
      raise ConfigError(f"TrainConfig.prefetch_batches={self.prefetch_batches!r} must be >= 0 "
                        "(0 = no prefetch)")
    if self.warmup_steps < 0:
      raise ConfigError(f"TrainConfig.warmup_steps={self.warmup_steps} must be >= 0")
    if self.warmup_steps > self.steps:
      # The schedule warms up over min(warmup_steps, steps - 1) steps (launch/step.py), so
      # any value from steps - 1 to steps gives the same run.
      raise ConfigError(f"TrainConfig.warmup_steps={self.warmup_steps} > TrainConfig.steps="
                        f"{self.steps} (warmup beyond the run); valid: 0 to {self.steps}, and "
                        f"{self.steps - 1} already warms up over the whole run")
    # clip_grad_norm: optax.clip_by_global_norm(0) scales every gradient to zero (NaN where
    # the norm is zero), so 0 would train nothing rather than turn clipping off.
    for field, ok, valid in (
        ("learning_rate", lambda v: v > 0, "a finite number > 0 (the peak)"),
        ("end_lr_fraction", lambda v: 0 <= v <= 1,
         "in [0, 1] (the final learning rate as a fraction of the peak)"),
        ("adam_b1", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("adam_b2", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("weight_decay", lambda v: v >= 0, "a finite number >= 0 (0 = no weight decay)"),
        ("clip_grad_norm", lambda v: v > 0,
         "a finite number > 0 (0 would zero every update, not turn clipping off; a huge "
         "value such as 1e30 never clips)"),
        ("z_loss", lambda v: v >= 0, "a finite number >= 0 (0 = no z-loss)")):
      value = getattr(self, field)
      number = isinstance(value, (int, float)) and not isinstance(value, bool)
      if not (number and math.isfinite(value) and ok(value)):
        raise ConfigError(f"TrainConfig.{field}={value!r} must be {valid}")
    tasks = self.eval_tasks
    if isinstance(tasks, str) or not all(isinstance(t, str) and t for t in tasks):
      raise ConfigError(f"TrainConfig.eval_tasks={tasks!r} must be a list of task names, "
                        "e.g. ['pydocs_summary']")
    if not isinstance(self.eval_task_examples, int) or self.eval_task_examples < 0:
      raise ConfigError(f"TrainConfig.eval_task_examples={self.eval_task_examples!r} must be "
                        ">= 0 (0 = every validation example)")
    if not isinstance(self.init_from_step, int) or self.init_from_step < -1:
      raise ConfigError(f"TrainConfig.init_from_step={self.init_from_step!r} must be >= -1 "
                        "(-1 = the latest checkpoint of init_from)")
