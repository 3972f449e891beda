"""Stopping a run cleanly: SIGTERM (a preemption) or Ctrl-C saves a checkpoint, then exits.

`objectax train` exits with EXIT_PREEMPTED after such a save; running the same command
again resumes from it. The launchers requeue on this status.
"""
from __future__ import annotations

import signal
import threading

# sysexits.h's EX_TEMPFAIL, "temporary failure; the user is invited to retry": the run
# stopped on a signal after saving its state, and the same command resumes it.
EXIT_PREEMPTED = 75


class Interrupted(Exception):
  """A second Ctrl-C (or SIGTERM) while a stop was already under way: abort at once."""


class StopSignals:
  """While active, SIGTERM and SIGINT ask the training loop to stop after a checkpoint.

  The first signal sets a request; the loop sees it at the end of its current step
  (`should_stop(step)`), saves, and ends. A second SIGINT or SIGTERM raises `Interrupted`
  at once (the user insists; nothing more is saved).

  With several processes, every one must stop at the same step or the collectives of the
  next one would hang. JAX's preemption sync manager (started by
  `jax.distributed.initialize`) catches SIGTERM on any process, and `should_stop` asks it
  each step (`reached_preemption_sync_point`: a local check until a process is signalled,
  then every process gets True at one agreed step). SIGTERM is left to it; SIGINT is turned
  into a SIGTERM of this process so it takes the same path.
  """

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top  (the exit status needs no jax)
    self._multi = jax.process_count() > 1
    self.received: str | None = None  # the name of the first signal, once one came
    self._saved = {}

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.received is not None:
      raise Interrupted(f"second {name}: stopped without saving")
    self.received = name
    if self._multi:  # hand it to JAX's preemption notifier, which tells every process
      signal.raise_signal(signal.SIGTERM)

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread
    wanted = (signal.SIGINT,) if self._multi else (signal.SIGINT, signal.SIGTERM)
    for signum in wanted:
      self._saved[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._saved.items():
      signal.signal(signum, handler)
    self._saved.clear()

  def should_stop(self, step: int) -> bool:
    """True on the step at which this process (and, with several, every one) stops."""
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if multihost_utils.reached_preemption_sync_point(step):
        self.received = self.received or "SIGTERM"
        return True
      return False
    return self.received is not None
