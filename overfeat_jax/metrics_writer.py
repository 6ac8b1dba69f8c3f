"""Scalars by step, as a researcher reads them: `metrics.jsonl` and TensorBoard event files side by side.

One `MetricsWriter` per log directory (the workdir for training, `<workdir>/eval` for evaluate.py)
writes each `write(step, {key: value})` twice, with the same keys:
  - one JSON object `{"step": step, key: value, ...}` as the last line of `<directory>/metrics.jsonl`;
  - one TensorBoard event holding a scalar per key (tag = key, the same step) in an event file of
    `<directory>`, written without TensorFlow (the protos and the record checksum of tensorboardX).
TensorBoard stores scalars as float32: the events hold the JSON values rounded to float32.
The directory may be local or on cloud storage (`files`): metrics.jsonl is rewritten whole and
atomically on each write (object stores cannot append; the writer keeps its lines, so a write costs
the file's size), and the event file is a `files.GrowingFile`.

Each writer starts a new event file (events.out.tfevents.<nanoseconds>.<host>: TensorBoard reads a
directory's files in name order, so in the order they were started) that opens with a SessionLog START
at step `resume_step + 1`: TensorBoard then drops what earlier files logged from that step on, as
metrics.jsonl drops its records after `resume_step` here, so a resumed run shows every step once.
Only process 0 writes (the others' writers are inactive, so every process can call the same code).
"""

from __future__ import annotations

import json
import numbers
import os
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

import jax
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import masked_crc32c

from overfeat_jax import files
from overfeat_jax.errors import WorkdirError, reason

METRICS_FILE = "metrics.jsonl"
EVENTS_PREFIX = "events.out.tfevents."  # TensorBoard loads files whose name holds "tfevents"

# Keys TensorBoard keeps as they are (any other character it would rewrite to "_").
_TAG = re.compile(r"[A-Za-z0-9_.\-][A-Za-z0-9_.\-/]*")


def _kept_lines(path: str, step: int) -> tuple[list[str], list[dict[str, Any]], bool]:
  """(lines, their records, whether any line was dropped) of `path` up to `step` (module doc)."""
  if not files.exists(path):
    return [], [], False
  try:
    lines = files.read_text(path).splitlines()
  except (OSError, ValueError) as e:
    raise WorkdirError(f"cannot read {path}: {reason(e)}") from e
  kept, records = [], []
  for line in lines:
    try:
      record = json.loads(line)
      if record["step"] <= step:
        kept.append(line)
        records.append(record)
    except (ValueError, KeyError, TypeError):
      continue
  return kept, records, len(kept) != len(lines)


def drop_records_after(path: str, step: int) -> list[dict[str, Any]]:
  """Keeps the records of `path` up to `step` (a resumed run logs the later steps again); returns them.

  After a kill, metrics.jsonl may hold steps past the checkpoint the run resumes from, and a last
  line cut short (written by a version that appended); both are dropped so that the file reads as
  one uninterrupted run.
  Raises:
    WorkdirError: the file cannot be read or rewritten (it is left as it was).
  """
  kept, records, dropped = _kept_lines(path, step)
  if dropped:
    files.replace_file(path, "".join(line + "\n" for line in kept))
  return records


def _records(events: list[Event]) -> bytes:
  return b"".join(tfrecord(event.SerializeToString()) for event in events)


def tfrecord(data: bytes) -> bytes:
  """One record of a TFRecord file (the event file format): length, its checksum, data, its checksum."""
  header = len(data).to_bytes(8, "little")
  return (header + masked_crc32c(header).to_bytes(4, "little") + data
          + masked_crc32c(data).to_bytes(4, "little"))


class MetricsWriter:
  """Writes scalars by step to `<directory>/metrics.jsonl` and to TensorBoard (see the module doc).

  Args:
    directory: the log directory (created when missing).
    resume_step: records after this step are dropped from metrics.jsonl, and TensorBoard is told to
      drop them from earlier event files (the run goes on from here and logs them again).
    tensorboard: also write TensorBoard events (config.train.tensorboard).
    active: whether this process writes; default: process 0 only.
  Raises:
    WorkdirError: metrics.jsonl cannot be rewritten, or the event file cannot be created.
  """

  def __init__(self, directory: str, *, resume_step: int = 0, tensorboard: bool = True,
               active: bool | None = None):
    self.directory = directory
    self.path = os.path.join(directory, METRICS_FILE)
    self.active = jax.process_index() == 0 if active is None else active
    self.events_path: str | None = None
    self._events: files.GrowingFile | None = None
    self._lines: list[str] = []  # metrics.jsonl's lines: each write rewrites the whole file
    self._newest: dict[str, tuple[int, float]] = {}
    if not self.active:
      return
    self._lines, records, dropped = _kept_lines(self.path, resume_step)
    if dropped:
      self._rewrite()
    for record in records:
      self._remember(record["step"], record)
    if tensorboard:
      self._open_events(resume_step + 1)

  def _remember(self, step: int, scalars: Mapping[str, Any]) -> None:
    for key, value in scalars.items():
      if key != "step" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        self._newest[key] = (step, float(value))

  def _rewrite(self) -> None:
    files.replace_file(self.path, "".join(line + "\n" for line in self._lines))

  def _open_events(self, first_step: int) -> None:
    """A new event file: the file version, then a SessionLog START at `first_step`."""
    stamp = time.time_ns()
    while True:  # a unique name, never an earlier file's
      path = os.path.join(self.directory, f"{EVENTS_PREFIX}{stamp:020d}.{socket.gethostname()}")
      try:
        taken = files.exists(path)
      except OSError as e:
        raise WorkdirError(f"cannot write a TensorBoard event file in {self.directory}: {reason(e)}") from e
      if not taken:
        break
      stamp += 1
    now, start = time.time(), SessionLog(status=SessionLog.START)
    header = [Event(wall_time=now, file_version="brain.Event:2"),
              Event(wall_time=now, step=first_step, session_log=start)]
    self._events = files.GrowingFile(path, _records(header))
    self.events_path = path

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs `scalars` at `step`: one line in metrics.jsonl, one event in the TensorBoard file.

    Raises:
      ValueError: a key TensorBoard would rename (e.g. with a space), or a value that is not a number.
      WorkdirError: a file cannot be written (e.g. the disk is full).
    """
    for key, value in scalars.items():
      if key == "step" or not _TAG.fullmatch(key):
        raise ValueError(f"metric name {key!r}: expected letters, digits and _ . - / (not 'step')")
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"metric {key!r} is {value!r}: expected a number")
    values = {key: float(value) for key, value in scalars.items()}
    if not self.active:
      return
    self._lines.append(json.dumps({"step": step, **values}))
    try:
      self._rewrite()
    except WorkdirError:
      self._lines.pop()  # not written: the next write must not carry it
      raise
    self._remember(step, values)
    if self._events is not None:
      summary = Summary(value=[Summary.Value(tag=key, simple_value=value) for key, value in values.items()])
      self._events.extend(_records([Event(wall_time=time.time(), step=step, summary=summary)]))

  def newest(self, key: str) -> tuple[int, float] | None:
    """(step, value) of the newest record of `key`, this run's or an earlier one's kept in
    metrics.jsonl; None when there is none (or on processes that do not write)."""
    return self._newest.get(key)

  def close(self) -> None:
    self._events = None  # every write is complete when `write` returns: nothing to flush

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()
