"""Ctrl-C and SIGTERM in the command lines: a prompt stop at any moment, with one line on stderr.

Python runs a signal handler only between bytecodes of the main thread, so a Ctrl-C during a long call
into C++ (importing jax, an XLA compile, reading a checkpoint) waits for that call to end, and a
KeyboardInterrupt raised while jax's threads run once ended in a segmentation fault. Instead, once
`exit_on_signals` has run (the first thing train.py and evaluate.py do), the C-level handler writes the
signal's number to a pipe (`signal.set_wakeup_fd`) that a daemon thread reads at once; the thread
prints `stopped by SIGINT: <message>` on stderr and ends the process with status 128 + the signal
number (130 / 143) through `os._exit`, unwinding nothing. That is a kill -9 with a message, which every
file of a run survives by design: checkpoints are committed by a rename, config.json and eval/ files
are replaced atomically (DESIGN "Conventions").

Work that can stop cleanly (the training loop, between two steps) takes the signals while it runs
(`deferred_to`): its handler returns True to carry on (it saves at the next step boundary) or False
to let the process exit at once after all (e.g. a second Ctrl-C).

SIGINT and SIGTERM are handled even where they started out ignored (a process started without a
terminal may inherit SIGINT ignored), so an explicit `kill -INT` always stops a run.
Standard library only: it is installed before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# signum -> True: taken (carry on); False: exit at once. Called from the watcher thread.
Handler = Callable[[int], bool]

_message: str | None = None  # what the exit line says; None until exit_on_signals
_handler: Handler | None = None


def _take(signum: int, frame: object) -> None:
  """The Python-level handler: nothing to do (the watcher thread acts), but while it is installed
  the C-level handler writes every signal to the wakeup pipe."""
  del signum, frame


def _watch(read_fd: int) -> None:
  """The watcher thread: each signal number read from the pipe is offered to the handler, or exits."""
  while True:
    for signum in os.read(read_fd, 64):
      if signum in SIGNALS and not (_handler is not None and _handler(signum)):
        os.write(2, f"stopped by {signal.Signals(signum).name}: {_message}\n".encode())
        os._exit(128 + signum)


def exit_on_signals(message: str) -> bool:
  """From now on SIGINT / SIGTERM end the process at once, printing `stopped by <SIG>: <message>`.

  Call it from the main thread before the heavy imports; a second call only changes the message.
  Returns False (and changes nothing) outside the main thread, where handlers cannot be installed.
  """
  global _message
  if threading.current_thread() is not threading.main_thread():
    return False
  installed, _message = _message is not None, message  # the message first: a signal may come at once
  if not installed:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    original = {sig: signal.signal(sig, _take) for sig in SIGNALS}
    threading.Thread(target=_watch, args=(read_fd,), name="stop_signals", daemon=True).start()
    os.register_at_fork(after_in_child=lambda: _forked_child(original))
  return True


def _forked_child(original: dict[int, object]) -> None:
  """A child forked without exec keeps the handlers and the wakeup pipe but not the watcher thread:
  it gets the original handlers back and stops writing into its parent's pipe."""
  global _message, _handler
  _message = _handler = None
  try:
    signal.set_wakeup_fd(-1)
    for sig, handler in original.items():
      signal.signal(sig, handler)
  except ValueError:  # forked from a thread other than the main one: nothing can be changed
    pass


def active() -> bool:
  """Whether exit_on_signals has run in this process."""
  return _message is not None


@contextlib.contextmanager
def deferred_to(handler: Handler) -> Iterator[None]:
  """While inside, each SIGINT / SIGTERM is first offered to `handler` (see `Handler`)."""
  global _handler
  previous, _handler = _handler, handler
  try:
    yield
  finally:
    _handler = previous
