"""An object store in memory, for the tests of work directories on cloud storage: offline gs:// paths.

`memory_bucket()` routes every `gs://` path that goes through `etils.epath` to fsspec's in-memory
file system (`fsspec.implementations.memory.MemoryFileSystem`), through epath's own test hook
(`epath.testing.mock_epath`, which swaps the backend of every epath path); local paths keep epath's
ordinary backend. epath's gs:// handling (URI parsing, joining) is the real one; only the backend
underneath is swapped, and it behaves as an object store here: appending is refused (GCS, S3 and
Azure blobs cannot append), a file appears only when it is closed, a rename is a copy then a delete.

Code that bypasses epath (os.makedirs, open, os.replace on "gs://bucket/run/x") writes to the local
disk instead, under the relative directory "gs:/bucket/run": tests run with a fresh current directory
and assert that it stays empty.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import uuid
from collections.abc import Iterator

import fsspec
import pytest
from etils import epath

SCHEME = "gs://"


def _remote(path) -> bool:
  return os.fspath(path).startswith(SCHEME)


def _memory(path) -> str:
  return "memory://" + os.fspath(path)[len(SCHEME):]


@contextlib.contextmanager
def memory_bucket() -> Iterator[str]:
  """Within it, gs:// paths live in memory; yields a fresh bucket's URI ("gs://test-<hex>"), deleted
  at the end."""
  if importlib.util.find_spec("tensorflow") is not None:  # epath would send gs:// to TF's gfile
    pytest.skip("TensorFlow is installed: epath hands gs:// paths to its gfile, past this mock")
  fs = fsspec.filesystem("memory")
  bucket = f"test-{uuid.uuid4().hex}"

  def on(method):
    """A mock for one backend method: gs:// paths to the memory store, the others to the original."""
    def mocked(original, path, *args, **kwargs):
      return method(path, *args, **kwargs) if _remote(path) else original(path, *args, **kwargs)
    return mocked

  def open_(path, mode):
    if "a" in mode or "+" in mode:
      raise OSError(errno.EOPNOTSUPP, f"an object store cannot append to or update {path} (mode {mode!r})")
    return fs.open(_memory(path), mode) if "b" in mode else fs.open(_memory(path), mode, encoding="utf-8")

  def listdir(path):
    return [os.path.basename(p.rstrip("/")) for p in fs.ls(_memory(path), detail=False)]

  def makedirs(path, *, exist_ok=False, mode=None):
    fs.makedirs(_memory(path), exist_ok=exist_ok)

  def mkdir(path, *, exist_ok=False, mode=None):
    if fs.exists(_memory(path)):
      if exist_ok and fs.isdir(_memory(path)):
        return
      raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
    fs.mkdir(_memory(path), create_parents=False)

  def move(path, target):
    fs.mv(_memory(path), _memory(target), recursive=True)  # fsspec's generic move: copy, then delete

  with epath.testing.mock_epath(
      open=on(open_), exists=on(lambda p: fs.exists(_memory(p))), isdir=on(lambda p: fs.isdir(_memory(p))),
      listdir=on(listdir), makedirs=on(makedirs), mkdir=on(mkdir),
      remove=on(lambda p: fs.rm(_memory(p))), rmtree=on(lambda p: fs.rm(_memory(p), recursive=True)),
      rename=on(move), replace=on(move)):
    try:
      yield SCHEME + bucket
    finally:
      if fs.exists(f"/{bucket}"):
        fs.rm(f"/{bucket}", recursive=True)


def tree(uri: str) -> dict[str, int]:
  """{path relative to `uri`: size in bytes} of every file under `uri` (inside `memory_bucket`)."""
  root = "/" + uri[len(SCHEME):].rstrip("/")  # where MemoryFileSystem keeps memory://<bucket>/...
  found = fsspec.filesystem("memory").find(root, detail=True)
  return {path[len(root) + 1:]: info["size"] for path, info in found.items()}


def local_files(directory) -> list[str]:
  """Every file and directory under `directory`, relative, sorted (what bypassed epath lands here)."""
  return sorted(os.path.relpath(os.path.join(root, name), directory)
                for root, dirs, names in os.walk(directory) for name in dirs + names)
