"""A run's workdir: where it is, who writes it, and writing its files so a crash tears none.

One trainer writes a workdir at a time. `WorkdirLock` holds `<workdir>/objectax.lock` (the
holder's host, PID and start time, under an exclusive `flock`) from before the run writes
anything until it ends; a second trainer is refused in one line naming the holder. The
lock goes stale by itself when its holder is gone: the kernel drops the `flock` of a dead
process, and on a filesystem without working `flock` a lock whose PID no longer runs on
this host is taken over. `objectax eval` only reads a workdir and takes no lock.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import tempfile

from objectax.models.registry import ConfigError

LOCK_NAME = "objectax.lock"


def resolve(path: str, *, process_index: int = 0) -> str:
  """The workdir as an absolute path, created and probed for writing before anything
  expensive happens."""
  if "://" in path:
    raise ConfigError(
        f"workdir {path} is a URL; metrics and iterator files are written with plain file "
        "I/O, so give a path every host can write: a shared filesystem or a bucket mounted "
        "with gcsfuse (e.g. /gcs/BUCKET/run)")
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"workdir {path} is a file, not a directory; pass --workdir=DIR")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe_{process_index}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir {path} is not writable ({e.strerror}); pass --workdir=DIR") from None
  return path


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same folder and a rename, so
  a reader (or a crash) sees the old file or the new one, never half of one."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would create it; mkstemp makes it private
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's process
  return True


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
          f"since {holder.get('started', '?')}")


class WorkdirLock:
  """`<workdir>/objectax.lock`, held for the life of a training run (see the module doc).

  `acquire` raises ConfigError naming the holder when another trainer has it; `release`
  removes the file, so a refused or finished run leaves no trace.
  """

  def __init__(self, workdir: str, name: str = LOCK_NAME):
    self.path = os.path.join(workdir, name)
    self._fd = None

  def _read_holder(self) -> dict:
    try:
      with open(self.path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def _refuse(self, holder: dict) -> ConfigError:
    return ConfigError(
        f"workdir {os.path.dirname(self.path)} is in use by another objectax train "
        f"({_describe(holder)}); wait for it to end, stop it, or pass another --workdir "
        f"(if that process is gone, delete {self.path})")

  def acquire(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only; imported where used)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now().isoformat(timespec="seconds")}
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      flocked = True
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:  # its holder removed it between our open and our flock: start over
        os.close(fd)
        return self.acquire()
    except BlockingIOError:
      holder = self._read_holder()
      os.close(fd)
      raise self._refuse(holder) from None
    except OSError as e:  # a filesystem without flock (some network mounts)
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        os.close(fd)
        raise
      flocked = False
    if not flocked:  # trust the file's contents: a live PID on this host holds it
      holder = self._read_holder()
      if (holder and (holder.get("host"), holder.get("pid")) != (me["host"], me["pid"])
          and (holder.get("host") != me["host"] or _pid_alive(int(holder.get("pid", -1))))):
        os.close(fd)
        raise self._refuse(holder)
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    with contextlib.suppress(OSError):
      os.remove(self.path)
    os.close(self._fd)  # closing drops the flock
    self._fd = None

  close = release

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
