"""Two ways a checkpoint step gets damaged on disk (a disk error, a copy cut short, a careless rm)."""

from __future__ import annotations

import os
import pathlib


def truncate_array_file(step_dir: pathlib.Path) -> pathlib.Path:
  """Cuts the largest parameter array file of `step_dir` to half its size; returns it."""
  arrays = [p for p in (step_dir / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
  largest = max(arrays, key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)
  return largest


def remove_signature(step_dir: pathlib.Path) -> pathlib.Path:
  """Deletes the signature item's file of `step_dir`; returns its path."""
  path = step_dir / "signature" / "metadata"
  path.unlink()
  return path


DAMAGE = {"truncated array file": truncate_array_file, "missing signature": remove_signature}
