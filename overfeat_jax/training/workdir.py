"""One training run per work directory: the directory is created if need be and locked.

The lock is `fcntl.flock` on `<workdir>/train.lock` (which also holds the holder's pid, for the
message). The OS releases it when the holding process ends, however it ends (a kill -9 included), so
a stale lock file never needs removing by hand. A second `train.py` on the same work directory is
refused at start, before it reads or writes anything there; evaluation does not lock (it only reads
checkpoints, and writes eval/ atomically). On local storage without flock support the lock fails
loudly.

A work directory on cloud storage (a URI such as gs://bucket/run, see `overfeat_jax.files`) has no
such lock: object stores offer no lock that dies with its holder. There the lock is skipped with a
one-line warning on stderr, and keeping a second run off the directory is up to the user; nothing is
created or checked there before the run writes its files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from typing import Any

from overfeat_jax import files
from overfeat_jax.errors import WorkdirError, reason

LOCK_FILE = "train.lock"


class WorkdirLock:
  """A context manager that holds `workdir` for this process (creating the directory if missing).

  Raises (on entry):
    WorkdirError: `workdir` is a file; it cannot be created or written (read-only, no permission,
      full); or another process holds it (names that process's pid).
  """

  def __init__(self, workdir: str):
    self.workdir = files.absolute(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._fd: int | None = None

  def __enter__(self) -> WorkdirLock:
    if not files.is_local(self.workdir):
      print(f"warning: --workdir {self.workdir} is not on a local file system: it is not locked, so make "
            "sure no other training run uses it", file=sys.stderr, flush=True)
      return self
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise WorkdirError(f"--workdir {self.workdir} is a file, not a directory")
    cannot_write = f"cannot write in --workdir {self.workdir}"
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(f"{cannot_write}: {reason(e)}") from e
    if not os.access(self.workdir, os.W_OK | os.X_OK):  # the lock file alone may still be writable
      os.close(fd)
      raise WorkdirError(f"{cannot_write}: no write permission, or a read-only file system")
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise WorkdirError(f"cannot lock --workdir {self.workdir}: {reason(e)} ({self.path})") from e
      raise WorkdirError(
          f"--workdir {self.workdir} is in use by another training run (pid {holder}); wait for it "
          "to end or stop it (Ctrl-C saves a checkpoint), or use another --workdir") from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:
      os.close(fd)
      raise WorkdirError(f"{cannot_write}: {reason(e)} ({self.path})") from e
    self._fd = fd
    return self

  def __exit__(self, *exc_info: Any) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the lock
      self._fd = None
