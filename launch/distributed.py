"""Multi-host start-up: `jax.distributed.initialize`, from the config or the environment.

Every host runs the same command (launch/tpu_pod.py, launch/slurm.py print it). Before any
device is touched, `initialize` decides how this process joins the run:

1. `DistributedConfig.coordinator_address` set: explicit (host:port of process 0, with
   `num_processes` and `process_id`, e.g. two CPU processes on loopback);
2. otherwise a cluster that JAX detects itself: a Cloud TPU pod slice (TPU_WORKER_ID /
   CLOUD_TPU_TASK_ID / MEGASCALE_* in the environment), SLURM with more than one task, Open
   MPI with more than one rank: `jax.distributed.initialize()` with no arguments;
3. otherwise one process: nothing to do.

On CPU, cross-process collectives need gloo (`jax_cpu_collectives_implementation`), set
here before initialisation. Only process 0 prints and writes logs and summaries (train.py);
every process takes part in the Orbax checkpoint writes.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import gin
import jax

from objectax.models.registry import ConfigError

# Environment variables whose presence means JAX's own cluster detection applies.
_TPU_POD_ENV = ("TPU_WORKER_ID", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins a multi-process run.

  Attributes:
    coordinator_address: "host:port" of process 0; "" = detect the cluster, or run alone.
    num_processes: processes in the run (with coordinator_address).
    process_id: this process's index in [0, num_processes) (with coordinator_address).
    initialization_timeout: seconds to wait for every process to join.
  """
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1
  initialization_timeout: int = 300

  def __post_init__(self):
    if not self.coordinator_address:
      return
    host, _, port = self.coordinator_address.rpartition(":")
    if not host or not port.isdigit():
      raise ConfigError(f"DistributedConfig.coordinator_address={self.coordinator_address!r} "
                        "must be host:port (process 0's address and a free port)")
    if not isinstance(self.num_processes, int) or self.num_processes < 1:
      raise ConfigError(f"DistributedConfig.num_processes={self.num_processes!r} must be >= 1 "
                        "with a coordinator_address")
    if not isinstance(self.process_id, int) or not 0 <= self.process_id < self.num_processes:
      raise ConfigError(f"DistributedConfig.process_id={self.process_id!r} must be in "
                        f"[0, {self.num_processes}) with a coordinator_address")


def detected_cluster(env: Mapping[str, str] | None = None) -> str | None:
  """"tpu_pod", "slurm" or "mpi" when JAX can initialise from the environment, else None."""
  env = os.environ if env is None else env
  if any(k in env for k in _TPU_POD_ENV):
    return "tpu_pod"
  if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "mpi"
  return None


def initialize(cfg: DistributedConfig | None = None) -> str:
  """Joins the run as the config or environment says; returns how ("explicit", a cluster
  name, "single" or "already"). Call before anything asks JAX for devices."""
  if jax.distributed.is_initialized():
    return "already"
  cfg = DistributedConfig() if cfg is None else cfg
  cluster = None if cfg.coordinator_address else detected_cluster()
  if not cfg.coordinator_address and cluster is None:
    return "single"
  if jax.config.jax_platforms in (None, "", "cpu") and cluster != "tpu_pod":
    # CPU processes exchange collectives over gloo; harmless where a GPU/TPU backend is used.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if cfg.coordinator_address:
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes, process_id=cfg.process_id,
                               initialization_timeout=cfg.initialization_timeout)
    return "explicit"
  jax.distributed.initialize(initialization_timeout=cfg.initialization_timeout)
  return cluster
