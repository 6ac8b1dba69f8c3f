"""Graceful stop on SIGTERM / Ctrl-C (DESIGN: "Long work ... is interruptible").

The training loop looks at the flag at each step boundary (several processes agree on it at each log
or checkpoint step: `loop._stop_agreed`), saves a checkpoint and returns. Two ways:
- in train.py, `overfeat_jax.stop_signals` is active: the signals are deferred to this request while it
  is armed (the loop arms it once its first step is compiled, i.e. once there is something to save);
  before that, or at a second Ctrl-C, the process exits at once with one line (status 130 / 143);
- in a library caller (tests, a notebook's main thread), Python handlers set the flag, and a second
  Ctrl-C raises KeyboardInterrupt (the escape hatch when a save hangs).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import types
from typing import Any

from overfeat_jax import stop_signals

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """A context manager that turns SIGTERM / SIGINT into a flag: `signum` is None until one arrives.

  Handlers can only be installed from the main thread; elsewhere (e.g. a notebook worker thread)
  the context does nothing and signals keep their usual behaviour.
  """

  def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
    self.signals = signals
    self.signum: int | None = None
    self.armed = False
    self._previous: dict[int, Any] = {}
    self._deferral = contextlib.ExitStack()

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def arm(self) -> None:
    """From now on a signal asks for a save-and-stop (under stop_signals; before, it exits at once)."""
    self.armed = True

  def _take(self, signum: int) -> bool:
    """stop_signals' handler (watcher thread): True = flag set, carry on; False = exit at once."""
    if signum not in self.signals or not self.armed or (self.requested and signum == signal.SIGINT):
      return False
    self.signum = signum
    return True

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __enter__(self) -> StopRequest:
    if stop_signals.active():
      self._deferral.enter_context(stop_signals.deferred_to(self._take))
    elif threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self._deferral.close()
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()
