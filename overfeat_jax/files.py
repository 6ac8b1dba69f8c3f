"""The small text files of a work directory (config.json, metrics.jsonl, eval/metrics.json, ...).

`replace_file` writes atomically (a temporary file renamed over the old one), so a kill, a Ctrl-C or a
full disk leaves the old file or the new one, never a part; `append_line` adds one line (a line cut
short by a kill is what readers of .jsonl files skip). Both raise one-line `WorkdirError`s naming the
file and the OS's reason.
"""

from __future__ import annotations

import contextlib
import os

from overfeat_jax.errors import WorkdirError, reason


def replace_file(path: str, content: str | bytes) -> None:
  """Writes `content` (text, or bytes such as a PNG) to `path` atomically, creating its directory if
  missing.

  Raises:
    WorkdirError: the directory or file cannot be written (permissions, read-only, disk full, a file
      where the directory should be); the old file, if any, is left as it was.
  """
  tmp, directory = path + ".tmp", os.path.dirname(path) or "."
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise WorkdirError(f"cannot write {path}: {directory} is a file, not a directory")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(tmp, "wb" if isinstance(content, bytes) else "w") as f:
      f.write(content)
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise WorkdirError(f"cannot write {path}: {reason(e)}") from e


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline to `path` (created if missing).

  Raises:
    WorkdirError: the file cannot be written (permissions, read-only, disk full).
  """
  try:
    with open(path, "a") as f:
      f.write(line + "\n")
  except OSError as e:
    raise WorkdirError(f"cannot append to {path}: {reason(e)}") from e
