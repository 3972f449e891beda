"""`objectax bench peer`: our training step against MaxText's on the same decoder shape.

A user choosing a codebase wants to know whether Objectax is slower than the one they would
otherwise pick. MaxText (the `maxtext` package, a pure-JAX reference for decoder LMs) is
that codebase, so this command runs both on the same machine, in the same run, with the
same shape, numerics, batch, remat and scan settings, and prints the ratio of their step
times.

Our side is `objectax bench model`'s: the gin config parsed model-side only, the model
built by launch/builder.py, the jitted train step of training, synthetic batches. MaxText
runs its own pre-training entry point (`maxtext.trainers.pre_train.train`) with its
synthetic dataset, in a Python 3.12 virtualenv (MaxText requires Python >= 3.12, ours may
be older; its pins would also clash with ours), made once and cached. The two sides
alternate, A B A B ..., so that a slow phase of the machine (other jobs, thermal limits)
hits both rather than one.

Only the causal decoder is compared: MaxText's `llama2` decoder block is our causal decoder
(pre-norm RMSNorm, RoPE, SwiGLU, no biases), while it has no encoder-decoder, prefix-LM or
encoder-only twin. The parameter counts of both sides are printed and must be equal, which
proves the shapes match.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

from objectax.models.config import ModelConfig
from objectax.models.registry import ConfigError

MAXTEXT_VERSION = "0.2.5"
MAXTEXT_PYTHON = (3, 12)  # its wheel's Requires-Python
DEFAULT_VENV = os.path.join("~", ".cache", "objectax", "maxtext_venv")
# Timed steps per side per round. A small/512/8 float32 step takes ~10-13 s on a quiet 2-core
# CPU (20-25 s while other jobs share it), so 2 rounds of 5 steps a side, with the warm-up,
# MaxText's start-up (~40 s a run) and both compilations, take about 7 minutes (11 shared);
# on an accelerator, pass more.
DEFAULT_STEPS = 5
DEFAULT_ROUNDS = 2
# MaxText logs as step k's seconds the time between the dispatches of steps k-1 and k; as
# dispatch is asynchronous and it reads step k-2's metrics in between, that is the execution
# time of step k-2 (it prints step k's line when step k is done). So its first two figures
# are dispatch only and the third is its first execution, the warm-up step we leave out on
# our side too.
_MAXTEXT_LAG = 2
MAXTEXT_WARMUP_STEPS = _MAXTEXT_LAG + 1
OBJECTAX_WARMUP_STEPS = 1  # per round: caches are cold after the other side ran

# ModelConfig.remat -> MaxText remat_policy. MaxText's "minimal" keeps the q/k/v/out and MLP
# projections' outputs, exactly the matmuls without batch dimensions that our "save_dots"
# (jax.checkpoint_policies.dots_with_no_batch_dims_saveable) keeps; neither keeps the
# attention scores. Its "none" skips jax.checkpoint for unscanned layers only.
REMAT_POLICIES = {"none": "none", "full": "full", "save_dots": "minimal"}
# ModelConfig.attention -> MaxText attention: both ours call jax.nn.dot_product_attention,
# whose XLA path is MaxText's "dot_product" and whose cuDNN path its "cudnn_flash_jax".
ATTENTION = {"xla": "dot_product", "cudnn": "cudnn_flash_jax"}
# Wheels of the requirements file that only a GPU needs (CUDA bindings, CUTLASS, TVM FFI for
# its kernels); on a CPU they are megabytes of downloads that are never imported.
_ACCELERATOR_WHEELS = ("cuda-", "nvidia-", "apache-tvm-ffi")
_MARKER = "objectax_maxtext.json"
_PARAMS_TAG = "OBJECTAX_MAXTEXT_PARAMS"

# Run inside MaxText's venv: its own pre-training entry point, with the parameter count it
# logs (in billions, three decimals) also printed exactly, so the shapes can be compared.
_DRIVER = r'''
import os, sys
os.environ.setdefault("DECOUPLE_GCLOUD", "TRUE")
from maxtext.utils import max_utils
_count = max_utils.calculate_num_params_from_pytree
def _counted(params):
  n = _count(params)
  print("''' + _PARAMS_TAG + r''' %d" % int(n), flush=True)
  return n
max_utils.calculate_num_params_from_pytree = _counted
import maxtext.configs
from maxtext.trainers.pre_train import train
from absl import app
base = os.path.join(os.path.dirname(maxtext.configs.__file__), "base.yml")
sys.argv = [sys.argv[0], base, *sys.argv[1:]]
app.run(train.main)
'''

_STEP_LINE = re.compile(r"completed step: (\d+), seconds: ([0-9.]+)")
_LOSS = re.compile(r"\bloss: ([-+0-9.naif]+)")
_BACKEND = re.compile(r"Jax Backend: (\w+)")
_JAX_VERSION = re.compile(r"Jax Version: (\S+)")


class PeerError(ConfigError):
  """A one-line reason the comparison cannot run or is not valid (main prints it)."""


# ---- the configuration MaxText gets ------------------------------------------------------

def _value(v) -> str:
  """A value in the syntax of MaxText's command line (OmegaConf, YAML 1.1 scalars)."""
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, float):
    return f"{v:.6e}"  # YAML 1.1 reads "1e-06" as a string; this form as a float
  if isinstance(v, (list, tuple)):
    return "[" + ",".join(map(str, v)) + "]"
  return str(v)


def maxtext_config(model: ModelConfig, *, sequence_length: int, batch_size: int,
                   num_devices: int = 1, train=None, packing: bool = True,
                   platform: str = "cpu",
                   steps: int = MAXTEXT_WARMUP_STEPS + DEFAULT_STEPS) -> dict[str, str]:
  """MaxText's config keys (over its base.yml) for `model` at this length and batch.

  model: the ModelConfig with its vocabulary size filled in. train: a TrainConfig (its
  AdamW settings, gradient clipping and z-loss are given to MaxText too; None = ours'
  defaults). packing: whether our batches are packed (MaxText's synthetic rows then hold
  several segments too). steps: the steps MaxText runs, its warm-up included. Raises
  PeerError for what MaxText's llama2 block cannot express.
  """
  if model.vocab_size <= 0:
    raise PeerError("ModelConfig.vocab_size must be filled in before translating it")
  if model.position_embedding != "rope":
    raise PeerError(f"ModelConfig.position_embedding={model.position_embedding!r}: MaxText's "
                    "llama2 decoder block has rotary positions only (use 'rope')")
  if model.remat == "none" and model.scan_layers:
    raise PeerError("ModelConfig.remat='none' with scan_layers=True: MaxText always wraps its "
                    "scanned layers in jax.checkpoint (its 'none' means 'full' there); "
                    "unscan both or pick a remat policy")
  if batch_size % num_devices:
    raise PeerError(f"batch {batch_size} is not a multiple of the {num_devices} devices "
                    "(MaxText sets a per-device batch)")
  if train is None:
    from objectax.launch import config  # pylint: disable=g-import-not-at-top
    train = config.TrainConfig()
  mlp = [model.mlp_activation, "linear"] if model.mlp_gated else [model.mlp_activation]
  keys = {
      # the shape
      "decoder_block": "llama2",
      "base_emb_dim": model.d_model,
      "base_num_query_heads": model.num_heads,
      "base_num_kv_heads": model.num_heads,  # no grouped-query attention in Objectax
      "head_dim": model.head_dim,
      "base_mlp_dim": model.mlp_dim,
      "mlp_activations": mlp,
      "base_num_decoder_layers": model.num_layers,
      "vocab_size": model.vocab_size,
      "logits_via_embedding": model.tie_embeddings,
      "normalize_embedding_logits": True,  # tied logits / sqrt(D), as ours (unread untied)
      "rope_max_timescale": int(model.rope_max_wavelength),
      "normalization_layer_epsilon": 1e-6,  # our RMSNorm's
      # numerics and execution
      "dtype": model.dtype,
      "weight_dtype": model.param_dtype,
      "remat_policy": REMAT_POLICIES[model.remat],
      "scan_layers": model.scan_layers,
      "attention": ATTENTION[model.attention],
      "dropout_rate": float(model.dropout_rate),
      "enable_dropout": model.dropout_rate > 0,
      # the data
      "max_target_length": sequence_length,
      "per_device_batch_size": batch_size // num_devices,
      "dataset_type": "synthetic",
      "packing": packing,
      # the optimizer: AdamW with global-norm clipping, as ours
      "opt_type": "adamw",
      "learning_rate": float(train.learning_rate),
      "adam_b1": float(train.adam_b1),
      "adam_b2": float(train.adam_b2),
      "adam_weight_decay": float(train.weight_decay),
      "gradient_clipping_threshold": float(train.clip_grad_norm),
      "z_loss_multiplier": float(train.z_loss),
      # the run: N steps, nothing written, nothing evaluated
      "steps": steps,
      "hardware": platform,
      "enable_checkpointing": False,
      "eval_interval": -1,
      "enable_tensorboard": False,
      "enable_goodput_recording": False,
      "monitor_goodput": False,
      "log_config": False,
      "skip_jax_distributed_system": True,  # one process, as ours
  }
  if model.logits_chunk:
    tokens = batch_size * sequence_length
    if tokens % model.logits_chunk:
      raise PeerError(f"ModelConfig.logits_chunk={model.logits_chunk} does not divide the "
                      f"{tokens} tokens of a batch (MaxText tiles the logits in equal parts)")
    keys["num_vocab_tiling"] = tokens // model.logits_chunk
  return {k: _value(v) for k, v in keys.items()}


def _int(keys: Mapping[str, str], name: str) -> int:
  return int(keys[name])


def maxtext_num_params(keys: Mapping[str, str]) -> int:
  """The parameters MaxText's llama2 decoder creates for `keys` (maxtext_config's).

  Per layer: two RMSNorm scales (pre_self_attention_layer_norm,
  post_self_attention_layer_norm), the query, key, value and output projections, the
  MLP (wi_0 and wi_1 when gated, wo). Plus the token embedder, the final decoder_norm and,
  when the logits do not go through the embedding, logits_dense.
  """
  d, v = _int(keys, "base_emb_dim"), _int(keys, "vocab_size")
  q, kv, k = (_int(keys, "base_num_query_heads"), _int(keys, "base_num_kv_heads"),
              _int(keys, "head_dim"))
  mlp_in = len(keys["mlp_activations"].strip("[]").split(","))
  attention = d * q * k + 2 * d * kv * k + q * k * d
  per_layer = 2 * d + attention + (mlp_in + 1) * d * _int(keys, "base_mlp_dim")
  head = 0 if keys["logits_via_embedding"] == "true" else d * v
  return _int(keys, "base_num_decoder_layers") * per_layer + v * d + d + head


def check_same_shape(ours: int, theirs: int, model: ModelConfig, source: str) -> None:
  """Refuses (PeerError) unless both sides have exactly as many parameters."""
  if ours == theirs:
    return
  why = ""
  if abs(ours - theirs) == model.d_model * model.vocab_size:
    why = ("; the difference is one D x V matrix: the output head is tied to the embedding "
           "on one side only")
  raise PeerError(f"the shapes differ: Objectax has {ours:,} parameters, MaxText {theirs:,} "
                  f"({source}){why}")


# ---- the arithmetic of the report --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Medians:
  """Median seconds per step of each side, per round and over all timed steps, and
  MaxText's over ours (>= 1: Objectax is faster)."""
  ours_rounds: tuple[float, ...]
  theirs_rounds: tuple[float, ...]
  ours: float
  theirs: float

  @property
  def ratio(self) -> float:
    return _ratio(self.theirs, self.ours)

  @property
  def round_ratios(self) -> tuple[float, ...]:
    return tuple(_ratio(t, o) for o, t in zip(self.ours_rounds, self.theirs_rounds))


def _ratio(theirs: float, ours: float) -> float:
  return theirs / ours if ours else math.inf  # CPU time below the clock's tick


def medians(ours: Sequence[Sequence[float]], theirs: Sequence[Sequence[float]]) -> Medians:
  """Per-round medians and the medians of all timed steps of each side."""
  if not ours or len(ours) != len(theirs) or not all(ours) or not all(theirs):
    raise ValueError("every round needs step times from both sides")
  return Medians(ours_rounds=tuple(statistics.median(r) for r in ours),
                 theirs_rounds=tuple(statistics.median(r) for r in theirs),
                 ours=statistics.median([t for r in ours for t in r]),
                 theirs=statistics.median([t for r in theirs for t in r]))


@dataclasses.dataclass(frozen=True)
class Summary:
  """Wall-clock step times (the comparison) and, on a CPU, the CPU seconds each step
  used over all cores: on a machine shared with other jobs, the wall clock of either side
  stretches with their load while its CPU time hardly does."""
  wall: Medians
  cpu: Optional[Medians] = None

  @property
  def ratio(self) -> float:
    return self.wall.ratio


def summarize(ours: Sequence[Sequence[float]], theirs: Sequence[Sequence[float]],
              ours_cpu: Optional[Sequence[Sequence[float]]] = None,
              theirs_cpu: Optional[Sequence[Sequence[float]]] = None) -> Summary:
  cpu = medians(ours_cpu, theirs_cpu) if ours_cpu and theirs_cpu else None
  return Summary(wall=medians(ours, theirs), cpu=cpu)


def render(summary: Summary) -> list[str]:
  """The table: per-round medians and the medians of all timed steps ("all", the ratio the
  verdict uses), with CPU seconds per step beside them when measured; then the verdict."""
  wall, cpu = summary.wall, summary.cpu
  head = f"{'round':>5}  {'objectax s/step':>15}  {'maxtext s/step':>14}  {'maxtext/objectax':>16}"
  if cpu:
    head += f"  {'objectax cpu-s':>14}  {'maxtext cpu-s':>13}  {'cpu ratio':>9}"
  lines = [head]
  rows = [(str(i), wall.ours_rounds[i - 1], wall.theirs_rounds[i - 1], wall.round_ratios[i - 1],
           i - 1) for i in range(1, len(wall.ours_rounds) + 1)]
  rows.append(("all", wall.ours, wall.theirs, wall.ratio, None))
  for name, o, t, r, i in rows:
    line = f"{name:>5}  {o:>15.3f}  {t:>14.3f}  {r:>16.3f}"
    if cpu:
      co, ct, cr = ((cpu.ours, cpu.theirs, cpu.ratio) if i is None else
                    (cpu.ours_rounds[i], cpu.theirs_rounds[i], cpu.round_ratios[i]))
      line += f"  {co:>14.3f}  {ct:>13.3f}  {cr:>9.3f}"
    lines.append(line)
  verdict = "Objectax is faster" if wall.ratio >= 1 else "MaxText is faster"
  lines.append(f"ratio MaxText/Objectax = {wall.ratio:.3f} (>= 1.0: Objectax faster): "
               f"{verdict}, a MaxText step takes {wall.ratio:.2f}x an Objectax step")
  if cpu:
    lines.append(f"CPU seconds per step, MaxText/Objectax = {cpu.ratio:.3f} (all cores; "
                 "much less moved than the wall clock by other jobs on the machine)")
  return lines


def parse_maxtext_log(lines: Iterable[str]) -> dict:
  """Step seconds (by step), losses, the exact parameter count and the backend MaxText logs."""
  out = {"steps": {}, "losses": [], "params": None, "backend": None, "jax": None}
  for line in lines:
    m = _STEP_LINE.search(line)
    if m:
      out["steps"][int(m.group(1))] = float(m.group(2))
      loss = _LOSS.search(line)
      if loss:
        out["losses"].append(float(loss.group(1)))
    if line.startswith(_PARAMS_TAG):
      out["params"] = int(line.split()[1])
    for key, pattern in (("backend", _BACKEND), ("jax", _JAX_VERSION)):
      m = pattern.search(line)
      if m and out[key] is None:
        out[key] = m.group(1)
  return out


# ---- MaxText's virtualenv ----------------------------------------------------------------

def _python_version(python: str) -> Optional[tuple[int, int]]:
  try:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=60, check=True)
    major, minor = out.stdout.split()
    return int(major), int(minor)
  except (OSError, subprocess.SubprocessError, ValueError):
    return None


def find_python(flag: str = "", which: Callable[[str], Optional[str]] = shutil.which,
                pyenv_root: Optional[str] = None) -> str:
  """A Python >= 3.12 for MaxText's venv: --maxtext_python, python3.12 on PATH, or pyenv's."""
  if flag:
    version = _python_version(flag)
    if version is None or version < MAXTEXT_PYTHON:
      raise PeerError(f"--maxtext_python={flag} is not a Python >= 3.12 (MaxText needs it)")
    return flag
  # 3.12 first: MaxText's tested version, and some of its pins have no wheels for newer ones.
  # A pyenv shim on PATH fails unless that version is selected, hence pyenv's own folders.
  root = pyenv_root or os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
  installed = lambda pattern: sorted(glob.glob(os.path.join(root, "versions", pattern, "bin",
                                                            "python3")), reverse=True)
  candidates = [which("python3.12"), *installed("3.12.*"), which("python3.13"),
                *installed("3.1[3-9].*")]
  for python in filter(None, candidates):
    version = _python_version(python)
    if version is not None and version >= MAXTEXT_PYTHON:
      return python
  raise PeerError("no Python >= 3.12 found (MaxText needs it): install python3.12 or pass "
                  "--maxtext_python=PATH")


def _venv_python(venv: str) -> str:
  return os.path.join(venv, "bin", "python")


def _pip(venv: str, args: Sequence[str], say, what: str) -> None:
  """pip in the venv, one progress line per 25 packages collected; the tail on failure."""
  proc = subprocess.Popen([_venv_python(venv), "-m", "pip", "install",
                           "--disable-pip-version-check", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  tail, collected = [], 0
  for line in proc.stdout:
    tail = (tail + [line.rstrip()])[-20:]
    if line.startswith("Collecting"):
      collected += 1
      if collected % 25 == 0:
        say(f"  {what}: {collected} packages collected ...")
    elif line.startswith("Installing collected packages"):
      say(f"  {what}: installing {len(line.split(':', 1)[1].split(','))} packages ...")
  if proc.wait():
    for line in tail:
      say(f"  pip: {line}")
    raise PeerError(f"pip failed ({what}, exit {proc.returncode}) in {venv}: "
                    f"{next((l for l in reversed(tail) if l.strip()), '')}")


def requirements(text: str) -> list[str]:
  """MaxText's own decoupled requirements (the set it documents for running outside Google
  Cloud on any hardware), less the GPU-only wheels."""
  reqs = []
  for line in text.splitlines():
    line = line.split("#", 1)[0].strip()
    if line and not line.lower().startswith(_ACCELERATOR_WHEELS):
      reqs.append(line)
  return reqs


def ensure_venv(venv: str, python_flag: str = "", platform: str = "cpu", say=print) -> str:
  """MaxText's venv at `venv`, made on first use; returns its Python.

  maxtext==0.2.5 declares its dependencies only under extras that also pull TPU or CUDA
  runtimes; it ships a generated requirements file for its decoupled mode (no Google Cloud),
  which is installed instead (see `requirements`). Done once: a marker file records the
  finished install, so a broken or interrupted one is redone.
  """
  venv = os.path.abspath(os.path.expanduser(venv))
  marker = os.path.join(venv, _MARKER)
  done = {}
  if os.path.exists(marker):
    with open(marker, encoding="utf-8") as f:
      done = json.load(f)
  if done.get("maxtext") == MAXTEXT_VERSION and (platform != "gpu" or done.get("gpu")):
    return _venv_python(venv)
  t0 = time.perf_counter()
  if not os.path.exists(_venv_python(venv)):
    python = find_python(python_flag)
    say(f"making MaxText's venv (once) at {venv} with {python}")
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    made = subprocess.run([python, "-m", "venv", venv], capture_output=True, text=True)
    if made.returncode:
      raise PeerError(f"{python} -m venv {venv} failed: "
                      f"{(made.stderr.strip().splitlines() or ['?'])[-1]}")
  if done.get("maxtext") != MAXTEXT_VERSION:
    say(f"installing maxtext=={MAXTEXT_VERSION} (about 200 packages, 2 GB; a few minutes)")
    _pip(venv, [f"maxtext=={MAXTEXT_VERSION}"], say, "maxtext")
    site = subprocess.run([_venv_python(venv), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    path = os.path.join(site, "dependencies", "requirements", "generated_requirements",
                        "decoupled-requirements.txt")
    if not os.path.exists(path):
      raise PeerError(f"maxtext=={MAXTEXT_VERSION} installed without {path}")
    with open(path, encoding="utf-8") as f:
      reqs = requirements(f.read())
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
      f.write("\n".join(reqs) + "\n")
    try:
      _pip(venv, ["-r", f.name], say, "dependencies")
    finally:
      os.unlink(f.name)
  if platform == "gpu":  # the CUDA plugin of the jax MaxText's requirements chose
    jax_version = subprocess.run([_venv_python(venv), "-c", "import jax; print(jax.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    _pip(venv, [f"jax[cuda12]=={jax_version}"], say, "jax cuda12")
  say("checking that MaxText's trainer imports ...")
  check = subprocess.run([_venv_python(venv), "-c", "import maxtext.trainers.pre_train.train"],
                         capture_output=True, text=True, env=_maxtext_env(platform))
  if check.returncode:
    raise PeerError(f"MaxText does not import in {venv}: "
                    f"{(check.stderr.strip().splitlines() or ['?'])[-1]}")
  with open(marker, "w", encoding="utf-8") as f:
    json.dump({"maxtext": MAXTEXT_VERSION, "gpu": platform == "gpu" or done.get("gpu", False)}, f)
  say(f"MaxText's venv is ready ({time.perf_counter() - t0:.0f} s)")
  return _venv_python(venv)


def _maxtext_env(platform: str) -> dict[str, str]:
  """Our environment (XLA_FLAGS included: both sides get the same), less our venv's
  Python settings, with MaxText's decoupled mode (no Google Cloud services)."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
  env["DECOUPLE_GCLOUD"] = "TRUE"
  if platform == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  return env


def failure(lines: Sequence[str]) -> str:
  """The exception a failed MaxText run ended with (and the detail lines that follow it,
  e.g. which config key its validation refused), else its last line."""
  lines = [l.strip() for l in lines if l.strip()]
  for i in range(len(lines) - 1, -1, -1):
    if re.match(r"^[\w.]+(Error|Exception|Exit)\b", lines[i]):
      return "; ".join(lines[i:i + 3])[:400]
  return lines[-1][:400] if lines else "no output"


def cpu_seconds(pid: int) -> Optional[float]:
  """User + system CPU seconds of process `pid` so far, all its threads (Linux's /proc);
  None where there is no /proc."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
  except (OSError, ValueError, IndexError):
    return None


def run_maxtext(python: str, keys: Mapping[str, str], log_path: str, platform: str,
                say=print) -> dict:
  """One MaxText run of keys["steps"] steps (MAXTEXT_WARMUP_STEPS of them warm-up); its
  parsed log, with "timed": the step seconds after the warm-up, and "cpu": the CPU
  seconds of the same steps' executions (None off a CPU or without /proc), read from its
  process whenever it prints a step's line, i.e. when that step is done."""
  total = int(keys["steps"])
  steps = total - MAXTEXT_WARMUP_STEPS
  argv = [f"{k}={v}" for k, v in keys.items()]
  t0 = time.perf_counter()
  lines, cpu_at = [], {}
  with open(log_path, "w", encoding="utf-8", buffering=1) as log:  # tail -f it
    proc = subprocess.Popen([python, "-c", _DRIVER, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_maxtext_env(platform),
                            cwd=os.path.dirname(log_path))
    for line in proc.stdout:
      log.write(line)
      lines.append(line)
      m = _STEP_LINE.search(line)
      if m:
        step = int(m.group(1))
        cpu_at[step] = cpu_seconds(proc.pid)
        kind = "warm-up" if step < MAXTEXT_WARMUP_STEPS else "timed"
        say(f"  maxtext step {step + 1}/{total} ({kind}): "
            f"{float(m.group(2)):.3f} s  [{time.perf_counter() - t0:.0f} s]")
    rc = proc.wait()
  if rc:
    raise PeerError(f"MaxText exited with {rc}: {failure(lines)} (full log: {log_path})")
  parsed = parse_maxtext_log(lines)
  timed = [parsed["steps"][s] for s in sorted(parsed["steps"]) if s >= MAXTEXT_WARMUP_STEPS]
  if len(timed) < steps:
    raise PeerError(f"MaxText logged {len(timed)} of {steps} timed steps (full log: {log_path})")
  if parsed["losses"] and not math.isfinite(parsed["losses"][-1]):
    raise PeerError(f"MaxText's loss is {parsed['losses'][-1]} (full log: {log_path})")
  parsed["timed"] = timed
  executed = [s - _MAXTEXT_LAG for s in sorted(parsed["steps"]) if s >= MAXTEXT_WARMUP_STEPS]
  cpu = [None if cpu_at.get(s) is None or cpu_at.get(s - 1) is None
         else cpu_at[s] - cpu_at[s - 1] for s in executed]
  parsed["cpu"] = cpu if platform == "cpu" and None not in cpu else None
  parsed["wall"] = time.perf_counter() - t0
  return parsed


# ---- the comparison ----------------------------------------------------------------------

def _check_flags(steps: int, rounds: int, batch_size: int) -> None:
  if steps < 1 or rounds < 1 or batch_size < 0:
    raise PeerError(f"--steps={steps} and --rounds={rounds} must be >= 1 and --batch_size="
                    f"{batch_size} >= 0 (0 = TrainConfig.batch_size)")


def check_arch(arch: str) -> None:
  from objectax.models import decoder  # pylint: disable=g-import-not-at-top
  if not decoder.is_causal_decoder(arch):
    raise PeerError(f"objectax bench peer compares the causal decoder only (MaxText's decoder "
                    f"shape), not Experiment.arch={arch!r}")


def run(steps: int = DEFAULT_STEPS, rounds: int = DEFAULT_ROUNDS, batch_size: int = 0,
        vocab_size: int = 0, venv: str = DEFAULT_VENV, python_flag: str = "",
        say=print) -> Summary:
  """Compares the configured (already parsed) causal decoder with MaxText's; prints it all."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from objectax.launch.tools import bench_model
  _check_flags(steps, rounds, batch_size)
  cfg, mesh, batch_size, parts = bench_model.synthetic_setup(
      batch_size, vocab_size, check=lambda cfg: check_arch(cfg.exp.arch))
  exp = cfg.exp
  model_cfg = parts.model_cfg
  devices = jax.devices()
  platform = devices[0].platform
  keys = maxtext_config(model_cfg, sequence_length=exp.sequence_length, batch_size=batch_size,
                        num_devices=len(devices), train=cfg.train,
                        packing="decoder_segment_ids" in parts.spec, platform=platform,
                        steps=MAXTEXT_WARMUP_STEPS + steps)
  theirs_formula = maxtext_num_params(keys)
  say(f"shape: causal decoder {exp.size}: d_model {model_cfg.d_model}, {model_cfg.num_layers} "
      f"layers, {model_cfg.num_heads} heads of {model_cfg.head_dim}, mlp {model_cfg.mlp_dim} "
      f"({'SwiGLU' if model_cfg.mlp_gated else model_cfg.mlp_activation}), vocab "
      f"{model_cfg.vocab_size}, {'tied' if model_cfg.tie_embeddings else 'untied'} logits")
  say(f"run: batch {batch_size} x {exp.sequence_length} tokens, {model_cfg.dtype} compute, "
      f"{model_cfg.param_dtype} params, remat {model_cfg.remat}, scan {model_cfg.scan_layers}, "
      f"on {len(devices)} {devices[0].device_kind} device(s); Objectax on jax {jax.__version__}")
  say("MaxText config (over its base.yml): " + " ".join(f"{k}={v}" for k, v in keys.items()))

  python = ensure_venv(venv, python_flag, platform, say)
  workdir = tempfile.mkdtemp(prefix="objectax_bench_peer_")
  keys = {**keys, "base_output_directory": os.path.join(workdir, "maxtext"),
          "run_name": "objectax_bench_peer",
          "jax_cache_dir": os.path.join(os.path.dirname(os.path.abspath(
              os.path.expanduser(venv))), "maxtext_jax_cache")}

  on_mesh = parts.on_mesh(mesh)
  rng = np.random.default_rng(0)
  batches = [on_mesh.put(cfg.arch.synthetic_batch(parts.spec, model_cfg.vocab_size, rng))
             for _ in range(bench_model._DISTINCT_BATCHES)]  # pylint: disable=protected-access
  key = jax.random.key(1)
  t_start = time.perf_counter()
  with on_mesh.activate():
    state = on_mesh.init()
    ours_params = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
    say(f"parameters: Objectax {ours_params:,} (its params tree) | MaxText {theirs_formula:,} "
        "(its llama2 layer's formula; its own count is checked after its first run)")
    check_same_shape(ours_params, theirs_formula, model_cfg, "formula")
    t0 = time.perf_counter()
    compiled = on_mesh.train_step.lower(state, batches[0], key).compile()
    say(f"Objectax compiled in {time.perf_counter() - t0:.1f} s")

    calls = [0]

    def ours_round(r: int) -> tuple[list[float], list[float]]:
      """Wall and CPU seconds (process-wide: every XLA thread) of the timed steps."""
      nonlocal state
      times, cpu = [], []
      for i in range(OBJECTAX_WARMUP_STEPS + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        state, metrics = compiled(state, batches[calls[0] % len(batches)], key)
        loss = float(metrics["loss"])  # blocks until the step is done
        calls[0] += 1
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if not math.isfinite(loss):
          raise FloatingPointError(f"non-finite Objectax loss {loss} in the benchmark")
        timed = i >= OBJECTAX_WARMUP_STEPS
        if timed:
          times.append(dt)
          cpu.append(dc)
        say(f"  objectax step {i + 1}/{OBJECTAX_WARMUP_STEPS + steps} "
            f"({'timed' if timed else 'warm-up'}): {dt:.3f} s  (round {r})")
      return times, cpu

    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(1, rounds + 1):
      t_round = time.perf_counter()
      say(f"round {r}/{rounds}: Objectax, {steps} timed steps")
      times, cpu = ours_round(r)
      ours.append(times)
      ours_cpu.append(cpu)
      if r == 1:  # a guess until MaxText has run: as fast as ours, ~40 s to start
        guess = rounds * (2 * (steps + 2) * statistics.median(times) + 40)
        say(f"ETA ~{(guess - (time.perf_counter() - t_round)) / 60:.1f} min (a guess until "
            "MaxText's first run is done)")
      say(f"round {r}/{rounds}: MaxText, {steps} timed steps (a fresh process: start-up and "
          f"compilation first; log {workdir}/maxtext_round{r}.log)")
      parsed = run_maxtext(python, keys, os.path.join(workdir, f"maxtext_round{r}.log"),
                           platform, say)
      if parsed["backend"] and parsed["backend"] != platform:
        raise PeerError(f"MaxText ran on {parsed['backend']}, Objectax on {platform}: "
                        "not comparable")
      if r == 1:
        if parsed["params"] is None:
          raise PeerError(f"MaxText did not log its parameter count (full log: {workdir})")
        say(f"parameters: Objectax {ours_params:,} | MaxText {parsed['params']:,} (its params "
            f"tree, jax {parsed['jax']} on {parsed['backend']}): "
            + ("equal" if parsed["params"] == ours_params else "DIFFERENT"))
        check_same_shape(ours_params, parsed["params"], model_cfg, "its params tree")
      theirs.append(parsed["timed"])
      theirs_cpu.append(parsed["cpu"])
      took = time.perf_counter() - t_round
      say(f"round {r}/{rounds}: median Objectax {statistics.median(ours[-1]):.3f} s/step, "
          f"MaxText {statistics.median(theirs[-1]):.3f} s/step (MaxText process "
          f"{parsed['wall']:.0f} s); round {took:.0f} s"
          + (f", ETA {took * (rounds - r) / 60:.1f} min" if r < rounds else ""))
  measured_cpu = platform == "cpu" and all(theirs_cpu)
  summary = summarize(ours, theirs, ours_cpu if measured_cpu else None,
                      theirs_cpu if measured_cpu else None)
  say(f"=== Objectax vs MaxText {MAXTEXT_VERSION}: median step seconds, {steps} timed steps a "
      f"side per round ===")
  for line in render(summary):
    say(line)
  say(f"total {time.perf_counter() - t_start:.0f} s; MaxText logs in {workdir}")
  return summary


def main(files: list[str], bindings: list[str], steps: int, rounds: int, batch_size: int,
         vocab_size: int, venv: str, python_flag: str) -> Summary:
  """Parses the gin config (model side only, as `bench model`) and compares."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  _check_flags(steps, rounds, batch_size)  # before any gin or jax work
  configure.parse(files or ["run/quickstart.gin"], bindings, model_only=True)
  return run(steps, rounds, batch_size, vocab_size, venv or DEFAULT_VENV, python_flag)
