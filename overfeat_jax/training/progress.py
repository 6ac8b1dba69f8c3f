"""Training progress: every `train.log_every` steps, a line on stdout and one record of the means since
the last one (the loss, every term the task's loss_fn returns, the learning rate, img/s) through the
run's `MetricsWriter` (metrics.jsonl and TensorBoard).

Step metrics stay on the device until a log (or a checkpoint) fetches them, so the loop does not
synchronise every step; the fetch also checks every pending loss for NaN/Inf and names the first
bad step (STYLE "Take" 3).
"""

from __future__ import annotations

import datetime
import math
import time
from typing import Any, TextIO

import jax
import numpy as np

from overfeat_jax.errors import LossNotFiniteError
from overfeat_jax.metrics_writer import MetricsWriter


def format_duration(seconds: float) -> str:
  """3725.2 -> '1:02:05'."""
  return str(datetime.timedelta(seconds=round(max(0.0, seconds))))


class ProgressLog:
  """Collects per-step metrics and reports them.

  Args:
    writer: where the records go (its `active` is False on processes other than 0).
    total_steps: the step count the run ends at (for "step k/total" and the ETA).
    images_per_step: the global batch size (for img/s).
    start_step: the step the run starts (or resumes) from (the writer has dropped later records).
    stream: where progress lines go (None: nowhere, e.g. on processes other than 0).
  """

  def __init__(self, writer: MetricsWriter, *, total_steps: int, images_per_step: int, start_step: int,
               stream: TextIO | None):
    self.writer = writer
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self.stream = stream
    self._pending: list[tuple[int, dict[str, Any]]] = []  # (step, metrics): device or host scalars
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._start_time = self._last_time

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (e.g. an evaluation between two steps) out of the next img/s and ETA."""
    self._last_time += seconds

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
      WorkdirError: metrics.jsonl or the event file cannot be written (e.g. the disk is full).
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
    self.writer.write(step, {name: value for name, value in record.items() if name != "step"})
    if self.stream is not None:
      extras = "".join(f"  {name} {record[name]:.4f}" for name in names
                       if name not in ("loss", "learning_rate"))
      print(f"step {step}/{self.total_steps}  loss {record['loss']:.4f}{extras}  "
            f"lr {record['learning_rate']:.3g}  {record['images_per_sec']:.1f} img/s  "
            f"ETA {format_duration(eta)}", file=self.stream, flush=True)
    return record
