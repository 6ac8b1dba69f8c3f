"""Running train.py / evaluate.py in a subprocess, as a user would, and reading their errors; a process
that holds a work directory as a running train.py does."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")


def run_cli(script: str, workdir, *overrides: str, data_dir: str = "",
            config: str = QUICKSTART) -> subprocess.CompletedProcess:
  """`python <script> --config <config> --workdir <workdir> [overrides]` on the CPU."""
  cmd = [sys.executable, os.path.join(ROOT, script), "--config", config, "--workdir", str(workdir)]
  if data_dir:
    cmd.append(f"--config.dataset.data_dir={data_dir}")
    if config == QUICKSTART:  # the tests' data dir holds the 4,000-image config, not the x8 one
      cmd.append("--config.dataset.name=digits_in_scenes/classification")
  return subprocess.run(cmd + list(overrides), capture_output=True, text=True, cwd=ROOT, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def train_cli(workdir, *overrides: str, data_dir: str = "") -> subprocess.CompletedProcess:
  return run_cli("train.py", workdir, *overrides, data_dir=data_dir)


def evaluate_cli(workdir, *overrides: str, data_dir: str = "") -> subprocess.CompletedProcess:
  return run_cli("evaluate.py", workdir, *overrides, data_dir=data_dir)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if not line.startswith(("W", "I"))]  # absl log lines
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


HOLD = ("import sys, time\n"
        "from overfeat_jax.training.workdir import WorkdirLock\n"
        "WorkdirLock(sys.argv[1]).__enter__()\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")


def hold_in_another_process(workdir) -> subprocess.Popen:
  """A process that holds `workdir`'s lock until it is killed (started, and holding, on return)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT)
  assert proc.stdout.readline() == "held\n"
  return proc
