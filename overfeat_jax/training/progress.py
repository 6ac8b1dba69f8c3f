"""Training progress: a line on stdout and a JSON object in `metrics.jsonl` every `train.log_every` steps.

Step metrics stay on the device until a log (or a checkpoint) fetches them, so the loop does not
synchronise every step; the fetch also checks every pending loss for NaN/Inf and names the first
bad step (STYLE "Take" 3).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Any, TextIO

import jax
import numpy as np

from overfeat_jax import files
from overfeat_jax.errors import LossNotFiniteError

METRICS_FILE = "metrics.jsonl"


def format_duration(seconds: float) -> str:
  """3725.2 -> '1:02:05'."""
  return str(datetime.timedelta(seconds=round(max(0.0, seconds))))


def drop_records_after(path: str, step: int) -> None:
  """Keeps the records of `path` up to `step` (a resumed run logs the later steps again).

  After a kill, metrics.jsonl may hold steps past the checkpoint the run resumes from, and a last
  line cut short; both are dropped so that the file reads as one uninterrupted run.
  Raises:
    WorkdirError: the file cannot be rewritten (it is left as it was).
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.read().splitlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      continue
  if len(kept) != len(lines):
    files.replace_file(path, "".join(line + "\n" for line in kept))


class ProgressLog:
  """Collects per-step metrics and reports them.

  Args:
    workdir: where `metrics.jsonl` is appended (None: print only).
    total_steps: the step count the run ends at (for "step k/total" and the ETA).
    images_per_step: the global batch size (for img/s).
    start_step: the step the run starts (or resumes) from.
    stream: where progress lines go (None: nowhere, e.g. on processes other than 0).
  """

  def __init__(self, workdir: str | None, *, total_steps: int, images_per_step: int, start_step: int,
               stream: TextIO | None):
    self.path = None if workdir is None else os.path.join(workdir, METRICS_FILE)
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self.stream = stream
    self._pending: list[tuple[int, dict[str, Any]]] = []  # (step, metrics): device or host scalars
    if self.path is not None:
      drop_records_after(self.path, start_step)
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._start_time = self._last_time

  def record(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Keeps the metrics of the update that brought the state to `step` (no device sync)."""
    self._pending.append((step, metrics))

  def check_finite(self) -> None:
    """Fetches pending metrics to the host and raises LossNotFiniteError at the first bad loss."""
    fetched = jax.device_get([metrics for _, metrics in self._pending])
    self._pending = [(step, {k: float(v) for k, v in m.items()})
                     for (step, _), m in zip(self._pending, fetched)]
    for step, metrics in self._pending:
      if not math.isfinite(metrics["loss"]):
        raise LossNotFiniteError(
            f"training loss is {metrics['loss']} at step {step} (last logged step {self._last_step}); "
            f"lower optimizer.learning_rate (now {metrics.get('learning_rate')}) or check the data")

  def flush(self, step: int) -> dict[str, float] | None:
    """Reports the mean metrics since the last flush (learning_rate: the latest); returns the record.

    Raises:
      LossNotFiniteError: a pending loss is NaN or Inf.
      WorkdirError: metrics.jsonl cannot be appended to (e.g. the disk is full).
    """
    if not self._pending:
      return None
    self.check_finite()
    now = time.perf_counter()
    last = self._pending[-1][1]
    names = ["loss"] + sorted(set(last) - {"loss", "learning_rate"}) + ["learning_rate"]
    record = {"step": step}
    for name in names:
      values = [m[name] for _, m in self._pending]
      record[name] = values[-1] if name == "learning_rate" else float(np.mean(values))
    steps_done = step - self._last_step
    elapsed = max(now - self._last_time, 1e-9)
    record["images_per_sec"] = steps_done * self.images_per_step / elapsed
    record["elapsed_sec"] = now - self._start_time
    eta = (self.total_steps - step) * elapsed / max(steps_done, 1)
    self._pending.clear()
    self._last_step, self._last_time = step, now
    if self.path is not None:
      files.append_line(self.path, json.dumps(record))
    if self.stream is not None:
      extras = "".join(f"  {name} {record[name]:.4f}" for name in names
                       if name not in ("loss", "learning_rate"))
      print(f"step {step}/{self.total_steps}  loss {record['loss']:.4f}{extras}  "
            f"lr {record['learning_rate']:.3g}  {record['images_per_sec']:.1f} img/s  "
            f"ETA {format_duration(eta)}", file=self.stream, flush=True)
    return record
