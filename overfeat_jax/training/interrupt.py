"""Graceful stop on SIGTERM / Ctrl-C (DESIGN: "Long work ... is interruptible").

The handlers only set a flag; the training loop looks at it at each step boundary, saves a checkpoint
and returns. A second Ctrl-C while the flag is set raises KeyboardInterrupt at once (the escape hatch
when a save hangs).
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """A context manager that turns SIGTERM / SIGINT into a flag: `signum` is None until one arrives.

  Handlers can only be installed from the main thread; elsewhere (e.g. a notebook worker thread)
  the context does nothing and signals keep their usual behaviour.
  """

  def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
    self.signals = signals
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()
