"""One training run per work directory: the lock refuses a second holder, and dies with its holder."""

from __future__ import annotations

import os
import signal

import pytest

from cli_helpers import hold_in_another_process
from overfeat_jax.errors import WorkdirError
from overfeat_jax.training.workdir import LOCK_FILE, WorkdirLock


def test_a_second_holder_is_refused_until_the_first_is_killed_with_sigkill(tmp_path):
  workdir = tmp_path / "run"
  proc = hold_in_another_process(workdir)
  try:
    with pytest.raises(WorkdirError, match=rf"--workdir {workdir} is in use by another training run "
                                           rf"\(pid {proc.pid}\); wait for it"):
      WorkdirLock(str(workdir)).__enter__()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  assert (workdir / LOCK_FILE).exists()  # left behind, and not in the way: the OS released the lock
  with WorkdirLock(str(workdir)):
    assert (workdir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(WorkdirError, match=rf"\(pid {os.getpid()}\)"):  # even within one process
      WorkdirLock(str(workdir)).__enter__()
  with WorkdirLock(str(workdir)):  # released on exit
    pass
