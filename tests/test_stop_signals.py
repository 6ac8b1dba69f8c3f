"""Ctrl-C / SIGTERM at any moment: a prompt exit with status 128 + signal and one line, no traceback.

Every process here starts with SIGINT ignored, as it may be where a process is started without a
terminal: the command lines handle SIGINT all the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import QUICKSTART, ROOT

TINY_TRAINING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_training.py")

# Deferring SIGTERM, in a C call that outlasts the signals (time.sleep goes on sleeping after
# Python's handler has run, as an XLA compile would go on compiling).
WAIT_IN_C = ("import time\n"
             "from overfeat_jax import stop_signals\n"
             "stop_signals.exit_on_signals('bye')\n"
             "with stop_signals.deferred_to(lambda signum: signum == 15):\n"
             "  print('ready', flush=True)\n"
             "  time.sleep(30)\n")


def start(cmd: list[str]) -> subprocess.Popen:
  """`cmd` with SIGINT ignored from the start (`trap "" INT` is inherited through exec)."""
  return subprocess.Popen(["sh", "-c", 'trap "" INT; exec "$0" "$@"', *cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def wait_for_line(proc: subprocess.Popen, fragment: str, timeout: float = 120.0) -> str:
  """Reads stdout up to the first line holding `fragment`; returns what was read."""
  seen, deadline = "", time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      break
    seen += line
    if fragment in line:
      return seen
  proc.kill()
  raise AssertionError(f"no line with {fragment!r}:\n{seen}\n{proc.stderr.read()}")


def wait_until_catching(proc: subprocess.Popen, signum: int, timeout: float = 60.0) -> None:
  """Waits until `proc` has a handler for `signum` (Linux: its SigCgt mask; elsewhere half a second)."""
  status = f"/proc/{proc.pid}/status"
  if not os.path.exists(status):
    time.sleep(0.5)
    return
  deadline = time.time() + timeout
  while time.time() < deadline:
    with open(status) as f:
      caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    if caught & (1 << (signum - 1)):
      return
    time.sleep(0.005)
  raise AssertionError(f"the process never handled signal {signum}")


def interrupt(proc: subprocess.Popen, *signums: int, within: float) -> tuple[str, str]:
  """Sends the signals; the process must end within `within` seconds. Returns (stdout, stderr)."""
  sent = time.time()
  for signum in signums:
    proc.send_signal(signum)
    time.sleep(0.01)
  stdout, stderr = proc.communicate(timeout=60)
  assert time.time() - sent < within, f"took {time.time() - sent:.1f} s to stop"
  return stdout, stderr


def assert_stopped_at_once(proc: subprocess.Popen, stderr: str, signum: int, message: str) -> None:
  assert proc.returncode == 128 + signum, stderr  # not -11 / 139: no crash, no core dump
  assert stderr.splitlines() == [f"stopped by {signal.Signals(signum).name}: {message}"], stderr


def test_a_signal_during_a_long_c_call_exits_at_once_unless_deferred():
  proc = start([sys.executable, "-c", WAIT_IN_C])
  wait_for_line(proc, "ready")
  proc.send_signal(signal.SIGTERM)  # deferred: taken by the handler, the process carries on
  time.sleep(0.3)
  assert proc.poll() is None
  _, stderr = interrupt(proc, signal.SIGINT, within=5)
  assert_stopped_at_once(proc, stderr, signal.SIGINT, "bye")


TRAIN_ARGS = ["--config.train.max_steps=50", "--config.input.batch_size=4"]
EXITED = "exited at once; rerun the same command to resume from the newest complete checkpoint, if any"


@pytest.mark.parametrize("script, moment, message", [
    ("train.py", "imports", EXITED),
    ("train.py", "first compile", EXITED),
    ("evaluate.py", "imports", "evaluation abandoned"),
])
def test_ctrl_c_before_the_first_step_exits_at_once(tmp_path, digits_data_dir, script, moment, message):
  workdir = tmp_path / "run"
  proc = start([sys.executable, os.path.join(ROOT, script), "--config", QUICKSTART, "--workdir",
                str(workdir), f"--config.dataset.data_dir={digits_data_dir}",
                "--config.dataset.name=digits_in_scenes/classification", *TRAIN_ARGS])
  if moment == "imports":
    wait_until_catching(proc, signal.SIGINT)  # the scripts' first act; importing jax takes ~2 s more
  else:
    wait_for_line(proc, "starting at step 0/50")  # printed just before the train step is compiled
  _, stderr = interrupt(proc, signal.SIGINT, within=5)
  assert_stopped_at_once(proc, stderr, signal.SIGINT, message)
  assert not (workdir / "checkpoints").exists() or not os.listdir(workdir / "checkpoints")


@pytest.mark.parametrize("signums", [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT)])
def test_ctrl_c_during_training_saves_and_a_second_one_does_not_wait(tmp_path, signums):
  workdir = tmp_path / "run"
  proc = start([sys.executable, TINY_TRAINING, "--workdir", str(workdir), "--max_steps", "100",
                "--checkpoint_every", "50", "--log_every", "1", "--step_delay", "0.3"])
  wait_for_line(proc, "step 1/100 ")
  stdout, stderr = interrupt(proc, *signums, within=10)
  if len(signums) == 1:  # saved at the step boundary
    assert proc.returncode == 130 and stderr == "", stderr
    assert "stopped by SIGINT at step " in stdout
    assert len(os.listdir(workdir / "checkpoints")) == 1
  else:  # the second Ctrl-C: at once, without waiting for the save
    assert_stopped_at_once(proc, stderr, signal.SIGINT, "exited at once")


def test_a_forked_child_gets_the_original_handlers_back():
  code = ("import os, signal\n"
          "from overfeat_jax import stop_signals\n"
          "before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)\n"
          "stop_signals.exit_on_signals('bye')\n"
          "pid = os.fork()\n"
          "if pid == 0:\n"
          "  now = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)\n"
          "  os._exit(0 if now == before and not stop_signals.active() else 1)\n"
          "print('child', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), stop_signals.active())\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert proc.stdout == "child 0 True\n", proc.stderr
