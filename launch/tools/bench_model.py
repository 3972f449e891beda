"""`objectax bench model`: the exact training step on synthetic batches, timed.

Imports neither TensorFlow nor seqio (GPU benchmark hosts carry only jax, flax, optax,
orbax and, as a wheel, gin-config): the gin config is parsed with the model-side
configurables only (`configure.parse(model_only=True)`; objective and corpus bindings are
skipped), the batches come from the architecture's `synthetic_batch`, and the loss is the
data-only weighted cross-entropy every data-only objective trains with.

Prints, one per line: compile time, median step time, tokens/s, achieved TFLOP/s, MFU
against the device table (or, on a CPU, against a float32 matmul probe measured in the
same run, with the ratio), and peak device memory. `--json FILE` writes the same figures.

Row lengths: decoders read one stream of Experiment.sequence_length tokens; the
encoder-decoder reads `--inputs_length` (default half of it) in the encoder and the rest in
the decoder, so both architectures see the same tokens per example (Wang et al. 2022's
FLOP matching counts tokens of inputs + targets).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

from objectax.launch import builder, sharding
from objectax.launch import mfu as mfu_lib
from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError

# When ModelConfig.vocab_size is 0 and no --vocab_size is given: the default vocabulary's
# size as training would round it (VocabConfig: 8,000 pieces + 100 extra ids -> 8,192).
DEFAULT_VOCAB = 8_192
_DISTINCT_BATCHES = 4  # synthetic batches cycled through (made once, put on the devices)


def task_lengths(arch_name: str, sequence_length: int, inputs_length: int = 0) -> dict[str, int]:
  """Task feature lengths giving `sequence_length` tokens per example on `arch_name`
  (the architecture's `budget_lengths`)."""
  return arch_registry.get(arch_name).budget_lengths(sequence_length, inputs_length)


def _peak_memory(compiled: Any) -> tuple[float | None, str]:
  """Peak bytes on device 0 as the runtime reports it, else the compiled program's need."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"]), "device allocator peak"
  try:
    analysis = compiled.memory_analysis()
    total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    return float(total), "compiled program (arguments + outputs + temporaries)"
  except Exception:  # pylint: disable=broad-except
    return None, "not reported by this backend"


def synthetic_setup(batch_size: int = 0, vocab_size: int = 0, inputs_length: int = 0,
                    check: Callable[[Any], None] = lambda cfg: None):
  """The configured (already parsed) model built for synthetic batches: (run config, mesh,
  batch size, parts). No vocabulary: the data-only loss over ModelConfig.vocab_size ids (or
  `vocab_size`); the batch is TrainConfig's unless `batch_size` is given. `check(cfg)` may
  refuse the run before its mesh and model are made."""
  cfg = builder.resolve(model_only=True)
  check(cfg)
  batch_size = batch_size or cfg.train.batch_size
  lengths = task_lengths(cfg.exp.arch, cfg.exp.sequence_length, inputs_length)
  mesh = sharding.make_mesh(cfg.mesh)
  sharding.check_batch_size(batch_size, mesh, cfg.mesh)
  parts = builder.build(cfg, vocab_size=cfg.model.vocab_size or vocab_size or DEFAULT_VOCAB,
                        extra_ids=0, feature_lengths=lengths, batch_size=batch_size)
  return cfg, mesh, batch_size, parts


def run(steps: int = 20, warmup: int = 3, batch_size: int = 0, inputs_length: int = 0,
        vocab_size: int = 0, say=print) -> dict[str, float]:
  """Benchmarks the configured (already parsed) model; returns the figures printed."""
  if steps < 1 or warmup < 0:
    raise ConfigError(f"--steps={steps} must be >= 1 and --warmup={warmup} >= 0")
  cfg, mesh, batch_size, parts = synthetic_setup(batch_size, vocab_size, inputs_length)
  exp, tc = cfg.exp, cfg.train
  model_cfg, arch = parts.model_cfg, cfg.arch
  model_lengths = parts.model_lengths
  tokens_per_step = batch_size * parts.tokens_per_example
  flops_per_token = parts.flops_per_token()
  devices = jax.devices()
  say(f"model {exp.arch}/{exp.size}: d_model {model_cfg.d_model}, {model_cfg.num_layers} layers, "
      f"vocab {model_cfg.vocab_size}, {model_cfg.dtype} compute, remat {model_cfg.remat}, scan "
      f"{model_cfg.scan_layers}, attention {model_cfg.attention}, logits_chunk "
      f"{model_cfg.logits_chunk}")
  say(f"batch {batch_size} x {model_lengths} = {tokens_per_step} tokens/step on "
      f"{len(devices)} {devices[0].device_kind} device(s), mesh {dict(mesh.shape)}")

  run = parts.on_mesh(mesh)
  rng = np.random.default_rng(0)
  batches = [run.put(arch.synthetic_batch(parts.spec, model_cfg.vocab_size, rng))
             for _ in range(_DISTINCT_BATCHES)]
  with run.activate():
    state = run.init()
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
    key = jax.random.key(1)
    t0 = time.perf_counter()
    compiled = run.train_step.lower(state, batches[0], key).compile()
    compile_seconds = time.perf_counter() - t0
    say(f"{n_params / 1e6:.1f}M parameters; compiled in {compile_seconds:.1f} s")
    times, last_loss = [], float("nan")
    for i in range(warmup + steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batches[i % _DISTINCT_BATCHES], key)
      last_loss = float(metrics["loss"])  # blocks until the step is done
      if i >= warmup:
        times.append(time.perf_counter() - t0)
  if not math.isfinite(last_loss):
    raise FloatingPointError(f"non-finite loss {last_loss} in the benchmark")
  step_seconds = statistics.median(times)
  tokens_per_second = tokens_per_step / step_seconds
  achieved = tokens_per_second * flops_per_token
  peak, peak_source = mfu_lib.run_peak_flops()
  memory, memory_source = _peak_memory(compiled)
  figures = {
      "parameters": float(n_params), "compile_seconds": compile_seconds,
      "step_seconds_median": step_seconds, "step_seconds_min": min(times),
      "tokens_per_second": tokens_per_second, "flops_per_token": flops_per_token,
      "achieved_tflops": achieved / 1e12, "peak_tflops": peak / 1e12,
      "mfu": achieved / peak, "peak_memory_gib": (memory or float("nan")) / 2**30,
      "loss": last_loss,
  }
  say(f"step time: median {step_seconds * 1e3:.1f} ms (min {min(times) * 1e3:.1f} ms) over "
      f"{steps} steps after {warmup} warm-up")
  say(f"tokens/s: {tokens_per_second:,.0f}")
  say(f"achieved: {achieved / 1e12:.4g} TFLOP/s ({flops_per_token:.4g} training FLOPs per token)")
  if devices[0].platform == "cpu":
    say(f"CPU matmul peak measured in this run: {peak / 1e12:.4g} TFLOP/s ({peak_source})")
    say(f"ratio achieved / matmul peak: {achieved / peak:.1%}")
  else:
    say(f"peak: {peak / 1e12:.4g} TFLOP/s ({peak_source})")
  say(f"MFU: {achieved / peak:.1%}")
  say("peak memory: " + (f"{memory / 2**30:.2f} GiB ({memory_source})" if memory
                         else memory_source))
  return figures


def main(files: list[str], bindings: list[str], steps: int, warmup: int, batch_size: int,
         inputs_length: int, vocab_size: int, json_path: str | None) -> dict[str, float]:
  """Parses the gin config (model side only) and runs the benchmark."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  configure.parse(files or ["run/quickstart.gin"], bindings, model_only=True)
  figures = run(steps, warmup, batch_size, inputs_length, vocab_size)
  if json_path:
    with open(json_path, "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=1)
  return figures
