"""What a user sees: a progress line, JSONL metrics, TensorBoard summaries.

The JSONL file is the source of truth (one object per logged step, appended, so a resumed
run continues the same file); TensorBoard gets the same scalars through tensorboardX
(no TensorFlow needed, so the GPU benchmark hosts write them too).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping


def _format_seconds(s: float) -> str:
  if not math.isfinite(s):
    return "?"
  s = int(s)
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class MetricsWriter:
  """Appends {"step": n, **scalars} lines to <workdir>/metrics.jsonl and to TensorBoard."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self._tb = None
    if enabled:
      try:
        # tensorboardX writes TensorBoard event files without TensorFlow or TensorBoard
        # installed (TF 2.21 no longer brings tensorboard, and GPU hosts have no TF).
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        print("objectax: tensorboardX not importable; metrics go to metrics.jsonl only",
              file=sys.stderr)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a", encoding="utf-8") as f:  # one write per row: a crash tears one line at most
      f.write(json.dumps(row) + "\n")
      f.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def read(self) -> tuple[list[dict], list[int]]:
    """The rows of metrics.jsonl, and the line numbers of any that could not be read (a
    torn last line after a crash or a full disk; such lines are left out)."""
    if not os.path.exists(self.path):
      return [], []
    rows, bad = [], []
    with open(self.path, encoding="utf-8", errors="replace") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except ValueError:
          row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
          rows.append(row)
        else:
          bad.append(number)
    return rows, bad

  def truncate(self, after_step: int, warn=None) -> list[dict]:
    """Drops rows logged after `after_step` (steps a resumed run will log again) and any
    unreadable line (`warn` gets one line about them); returns the rest.

    The file is rewritten (atomically) only when something was dropped. TensorBoard keeps
    both copies of such steps; metrics.jsonl is the clean record.
    """
    rows, bad = self.read()
    if bad and warn is not None:
      warn(f"{self.path}: dropped {len(bad)} unreadable line(s) (line "
           f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}), e.g. torn by a crash")
    kept = [r for r in rows if r["step"] <= after_step]
    if self.enabled and (len(kept) != len(rows) or bad):
      tmp = self.path + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
    return kept

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """One status line: step, loss, tokens/s, ETA.

  On a terminal it redraws in place; otherwise (CI, logs, pipes) it prints a line each
  time it is updated, which the trainer does every `log_every` steps.
  """

  def __init__(self, total_steps: int, start_step: int, *, stream=None, enabled: bool = True):
    stream = sys.stderr if stream is None else stream  # the stderr of now, not of import time
    self.total = total_steps
    self.start = start_step
    self.stream = stream
    self.enabled = enabled
    self.tty = hasattr(stream, "isatty") and stream.isatty()
    self.t0 = time.perf_counter()

  def update(self, step: int, loss: float, tokens_per_second: float, extra: str = "") -> None:
    self._draw(step, f"step {step}/{self.total}  loss {loss:.4f}  "
                     f"{tokens_per_second:,.0f} tok/s", extra)

  def count(self, done: int, unit: str) -> None:
    """The bar for `done` of `total` items (examples, prompts) and their rate."""
    rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
    self._draw(done, f"{done}/{self.total} {unit}  {rate:,.1f} {unit}/s")

  def _draw(self, position: int, body: str, extra: str = "") -> None:
    if not self.enabled:
      return
    done = position - self.start
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / done * (self.total - position) if done > 0 else float("nan")
    width = 24
    filled = int(width * position / max(self.total, 1))
    bar = "#" * filled + "." * (width - filled)
    line = f"[{bar}] {body}  ETA {_format_seconds(eta)}{extra}"
    if self.tty:
      self.stream.write("\r\033[K" + line)
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def message(self, text: str) -> None:
    """A line that must not be overwritten by the bar (none when the bar is off)."""
    if not self.enabled:
      return
    if self.tty:
      self.stream.write("\r\033[K")
    self.stream.write(text + "\n")
    self.stream.flush()

  def close(self) -> None:
    if self.enabled and self.tty:
      self.stream.write("\n")
      self.stream.flush()
