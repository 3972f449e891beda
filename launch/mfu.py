"""Model FLOPs utilisation: achieved training FLOPs over the devices' peak.

  MFU = tokens/s x training FLOPs per token / (peak FLOP/s of all devices in the run)

FLOPs per token are the architecture's (6N plus attention, PaLM App. B; encoder and decoder
counted separately) plus what a model-side objective adds (`model_objectives.
flops_per_token`). Tokens count every stream the model reads, padding included, in the
unit that figure divides by.

Peak per chip: dense bf16 matmul figures from the vendors' data sheets (`PEAK_FLOPS`,
matched against `jax.Device.device_kind`). A CPU has no such figure: it is measured once
per process with a float32 matmul probe over all cores, and that measured peak is the
peak of the whole host, however many devices XLA simulates on it.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per chip (no sparsity), by a lower-case substring of device_kind.
PEAK_FLOPS = (
  ("h200", 989e12),       # NVIDIA H200 SXM
  ("h100", 989e12),       # NVIDIA H100 SXM (the PCIe card is 756e12)
  ("a100", 312e12),       # NVIDIA A100
  ("tpu v6", 918e12),     # TPU v6e (Trillium)
  ("tpu v5p", 459e12),
  ("tpu v5 lite", 197e12),  # TPU v5e reports "TPU v5 lite"
  ("tpu v5e", 197e12),
  ("tpu v4", 275e12),
)


def chip_peak_flops(device_kind: str) -> float | None:
  """The data-sheet peak of one chip, or None when the kind is not in the table."""
  kind = device_kind.lower()
  return next((peak for key, peak in PEAK_FLOPS if key in kind), None)


@functools.lru_cache(maxsize=None)
def measured_cpu_peak_flops(size: int = 1024, repeats: int = 8, seconds: float = 1.0) -> float:
  """FLOP/s of a float32 size x size matmul on this host's CPU (the best timed run).

  Warmed up first, then timed for at least `repeats` runs and `seconds`: the first
  matmuls of a process run at about half speed (thread pool and memory still cold), which
  would understate the peak and overstate every MFU measured against it.
  """
  x = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  for _ in range(3):
    matmul(x).block_until_ready()  # compile, then warm up
  best, runs, t_end = float("inf"), 0, time.perf_counter() + seconds
  while runs < repeats or time.perf_counter() < t_end:
    start = time.perf_counter()
    matmul(x).block_until_ready()
    best = min(best, time.perf_counter() - start)
    runs += 1
  return 2.0 * size**3 / best


def run_peak_flops(devices=None) -> tuple[float, str]:
  """(peak FLOP/s of all the run's devices, where the figure comes from)."""
  devices = jax.devices() if devices is None else devices
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":  # every process measures its own host
    return (measured_cpu_peak_flops() * jax.process_count(),
            f"float32 matmul measured on this CPU{' x processes' if jax.process_count() > 1 else ''}")
  peak = chip_peak_flops(kind)
  if peak is None:
    return float("nan"), f"no peak known for {kind!r}"
  return peak * len(devices), f"{len(devices)} x {kind} at {peak / 1e12:.0f} TFLOP/s"


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
  return tokens_per_second * flops_per_token / peak_flops
