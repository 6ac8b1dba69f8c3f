"""Exact, reproducible runs on CPU: the same config and seed give bitwise-identical parameters and
optimizer state in two separate processes; another seed gives other ones.

Each run is a process of its own (tests/determinism_run.py) with no compilation cache, so nothing
compiled, traced or cached in one run can make the other agree. "Bitwise": every leaf has the same
dtype, shape and bytes (stricter than ==, which takes -0.0 for 0.0). What is and is not deterministic
on GPU and TPU: README "Determinism".
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "determinism_run.py")


def train_in_a_process(tmp_path, name: str, task: str, seed: int, data_dir: str = "") -> dict:
  out = tmp_path / f"{name}.npz"
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, SCRIPT, "--task", task, "--workdir", str(tmp_path / name),
                         "--seed", str(seed), "--out", str(out), "--data_dir", data_dir],
                        capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out) as state:
    return {key: state[key] for key in state.files}


def differing_leaves(a: dict, b: dict) -> list[str]:
  """The leaves of two dumped states that are not bitwise equal (all of them if the names differ)."""
  assert a.keys() == b.keys()
  return [key for key in sorted(a) if a[key].dtype != b[key].dtype or a[key].shape != b[key].shape
          or a[key].tobytes() != b[key].tobytes()]


def test_classification_same_seed_same_bits_other_seed_other_numbers(tmp_path):
  first = train_in_a_process(tmp_path, "first", "tiny", seed=0)
  second = train_in_a_process(tmp_path, "second", "tiny", seed=0)
  other = train_in_a_process(tmp_path, "other", "tiny", seed=1)
  assert int(first["step"]) == 36
  # The dump holds every parameter and the SGD momentum ("trace") of each, as float32.
  floats = [k for k in first if first[k].dtype == np.float32]
  assert len([k for k in floats if k.startswith("params")]) == 4
  assert len([k for k in floats if k.startswith("opt_state") and ".trace" in k]) == 4
  assert differing_leaves(first, second) == []
  # Another init, dropout and data order: every parameter and momentum differs.
  assert set(differing_leaves(first, other)) >= set(floats)


@pytest.mark.slow  # minutes on 2 cores: out of the default run (README, "The tests")
def test_faster_rcnn_same_seed_same_bits(tmp_path, digits_detection_data_dir):
  first = train_in_a_process(tmp_path, "first", "faster_rcnn", 0, digits_detection_data_dir)
  second = train_in_a_process(tmp_path, "second", "faster_rcnn", 0, digits_detection_data_dir)
  assert int(first["step"]) == 2
  assert any(k.startswith("opt_state") and first[k].any() for k in first)  # the momenta moved
  assert differing_leaves(first, second) == []
