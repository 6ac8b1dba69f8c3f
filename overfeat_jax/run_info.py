"""What a run ran on, kept beside its results: `<directory>/run_info.json`.

`record(directory, ...)` adds one record per run to the file's list "runs" (a fresh start, each
resume, each evaluate.py): when it started, at which step, the command line, and the environment
(`environment()`): the project's version and git commit, Python, jax and jaxlib, the backend, the
device kind and count, the process count and the host. The file is rewritten atomically
(`files.replace_file`) with the earlier records kept; one that cannot be read as such a list is
started afresh. Process 0 writes it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
from typing import Any

import jax
import jaxlib

import overfeat_jax
from overfeat_jax import files

RUN_INFO_FILE = "run_info.json"

_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(overfeat_jax.__file__)))


def git_commit() -> tuple[str | None, bool | None]:
  """(commit, whether tracked files differ from it) of the source checkout the package is imported
  from; (None, None) when it is not one (e.g. an installed wheel) or git is missing."""
  if not os.path.exists(os.path.join(_SOURCE_ROOT, ".git")):  # a file in a git worktree
    return None, None
  try:
    commit = subprocess.run(["git", "-C", _SOURCE_ROOT, "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10)
    status = subprocess.run(["git", "-C", _SOURCE_ROOT, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None, None
  if commit.returncode or status.returncode:
    return None, None
  return commit.stdout.strip(), bool(status.stdout.strip())


def environment() -> dict[str, Any]:
  """The software and the machines of this run (the same on every process but "hostname")."""
  commit, dirty = git_commit()
  return {
      "overfeat_jax": overfeat_jax.__version__,
      "git_commit": commit,
      "git_dirty": dirty,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(),
      "hostname": socket.gethostname(),
  }


def read_runs(directory: str) -> list[dict[str, Any]]:
  """The records of `directory/run_info.json`, oldest first ([] when missing or unreadable)."""
  path = os.path.join(directory, RUN_INFO_FILE)
  try:
    runs = json.loads(files.read_text(path))["runs"]
  except (OSError, ValueError, KeyError, TypeError):
    return []
  return runs if isinstance(runs, list) else []


def record(directory: str, *, command: str, step: int) -> dict[str, Any] | None:
  """Adds this run's record to `directory/run_info.json` (process 0; the others do nothing).

  Args:
    command: what runs, e.g. "train" or "evaluate".
    step: the step a training run starts (or resumes) at; the checkpoint step evaluated.
  Returns:
    The record added (None on other processes).
  Raises:
    WorkdirError: the file cannot be written (the old one is left as it was).
  """
  if jax.process_index() != 0:
    return None
  entry = {"command": command, "step": step,
           "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "argv": list(sys.argv), **environment()}
  runs = read_runs(directory) + [entry]
  files.replace_file(os.path.join(directory, RUN_INFO_FILE), json.dumps({"runs": runs}, indent=2) + "\n")
  return entry
