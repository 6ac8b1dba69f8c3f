"""Work-directory I/O, on a local disk or on cloud storage: every file a run reads or writes beside its
checkpoints (config.json, metrics.jsonl, run_info.json, TensorBoard events, eval/, pictures, features,
exports) goes through here, on `etils.epath`; orbax is handed the same paths for the checkpoints.

A path is a string (or os.PathLike): a local path, or a URI such as "gs://bucket/run" that works where
epath's backend for it is installed (gcsfs for gs://; TensorFlow's gfile if TensorFlow is installed).
`absolute` makes local paths absolute and leaves URIs as they are (os.path.abspath would turn
"gs://b/run" into "<cwd>/gs:/b/run"); joining with os.path.join is plain string work and keeps a URI.

Nothing is opened for appending, because object stores cannot append:
  - `replace_file` writes a whole file atomically: on a local disk a temporary file renamed over the
    old one, so a kill, a Ctrl-C or a full disk leaves the old file or the new one, never a part; on an
    object store the file is uploaded in one piece, which is atomic there already (an object appears
    or changes only when its upload completes), whereas a "rename" there is a copy then a delete.
  - `add_line` rewrites a small .jsonl file with one more line.
  - `GrowingFile` is for a log that only grows (TensorBoard event files): appended to in place on a
    local disk, rewritten whole on an object store (see the class).
Failures are one-line `WorkdirError`s naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import os

from etils import epath

from overfeat_jax.errors import WorkdirError, reason

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
  """Whether `path` is on a local file system (not a URI such as gs://bucket/run)."""
  return "://" not in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path` (what orbax takes): local, or on the URI's backend."""
  return epath.Path(path)


def absolute(path: PathLike) -> str:
  """A local path made absolute; a URI as it is."""
  return os.path.abspath(path) if is_local(path) else os.fspath(path)


def exists(path: PathLike) -> bool:
  return as_path(path).exists()


def is_dir(path: PathLike) -> bool:
  return as_path(path).is_dir()


def listdir(path: PathLike) -> list[str]:
  """The names in directory `path` ([] when it does not exist)."""
  directory = as_path(path)
  return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def read_text(path: PathLike) -> str:
  """The file's text (UTF-8). Raises OSError (FileNotFoundError when missing) or UnicodeDecodeError."""
  return as_path(path).read_text()


def read_bytes(path: PathLike) -> bytes:
  """The file's bytes. Raises OSError (FileNotFoundError when missing)."""
  return as_path(path).read_bytes()


def _make_parent(path: epath.Path) -> None:
  """Creates `path`'s directory if missing; OSError when a file is in the way (named as such)."""
  parent = path.parent
  if parent.exists() and not parent.is_dir():
    raise NotADirectoryError(0, f"{parent} is a file, not a directory")
  parent.mkdir(parents=True, exist_ok=True)


def replace_file(path: PathLike, content: str | bytes) -> None:
  """Writes `content` (text, or bytes such as a PNG) to `path` atomically (module docstring), creating
  its directory if missing.

  Raises:
    WorkdirError: the directory or file cannot be written (permissions, read-only, disk full, a file
      where the directory should be); the old file, if any, is left as it was.
  """
  target = as_path(path)
  data = content.encode() if isinstance(content, str) else content
  tmp = as_path(os.fspath(path) + ".tmp")
  try:
    _make_parent(target)
    if not is_local(path):
      target.write_bytes(data)  # one upload: the object changes only once it is complete
      return
    tmp.write_bytes(data)
    tmp.replace(target)
  except OSError as e:
    if is_local(path):
      with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
    raise WorkdirError(f"cannot write {path}: {reason(e)}") from e


def add_line(path: PathLike, line: str) -> None:
  """Rewrites the small text file `path` (created if missing) with `line` and a newline added at its
  end, atomically (`replace_file`): what appending is on storage that cannot append. A last line cut
  short (by a kill, in a file written by an older version that appended) is ended first.

  Raises:
    WorkdirError: the file cannot be read or written (the old one is left as it was).
  """
  try:
    text = read_text(path) if exists(path) else ""
  except (OSError, ValueError) as e:
    raise WorkdirError(f"cannot read {path}: {reason(e)}") from e
  if text and not text.endswith("\n"):
    text += "\n"
  replace_file(path, text + line + "\n")


def move(source: PathLike, target: PathLike) -> None:
  """Moves the file or directory `source` to `target` (whose directory is created if missing).

  A rename on a local disk; on an object store every object is copied, then deleted (not atomic: a
  kill in between leaves both copies, never neither).
  Raises:
    OSError: the move failed (the caller names what it was moving).
  """
  destination = as_path(target)
  _make_parent(destination)
  as_path(source).rename(destination)


class GrowingFile:
  """A file that only grows, such as a TensorBoard event file: `extend(data)` adds `data` at its end.

  On a local disk the bytes are appended in place. TensorBoard's readers keep each event file open
  and read on from where they stopped (its Rust data server opens a file once and never again), so a
  local file must grow in place to show new points while TensorBoard runs; a file replaced by a
  longer copy would not. Object stores cannot append: there the whole file is uploaded again on each
  `extend` (in one piece, so never half-written), which is what TensorFlow's and tensorboardX's own
  GCS and S3 writers do, and TensorBoard reads such an object by byte ranges on each poll, so it sees
  the growth. The cost is the file's size per `extend`: keep such files small (scalars).

  Raises (from the constructor and `extend`):
    WorkdirError: the file cannot be created or written (names it and why).
  """

  def __init__(self, path: PathLike, initial: bytes = b""):
    self.path = os.fspath(path)
    self._local = is_local(path)
    self._content = bytearray()  # everything written so far (object stores only)
    try:
      _make_parent(as_path(path))
      as_path(path).write_bytes(b"")  # it exists from now on, empty
    except OSError as e:
      raise WorkdirError(f"cannot write {self.path}: {reason(e)}") from e
    if initial:
      self.extend(initial)

  def extend(self, data: bytes) -> None:
    try:
      if self._local:
        with as_path(self.path).open("ab") as f:  # flushed when closed: readable at once
          f.write(data)
      else:
        self._content += data
        as_path(self.path).write_bytes(bytes(self._content))
    except OSError as e:
      raise WorkdirError(f"cannot write {self.path}: {reason(e)}") from e
