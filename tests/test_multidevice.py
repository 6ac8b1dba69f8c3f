"""4 simulated CPU devices vs 1: the same global batch gives the same losses and parameters.

Each side runs in its own subprocess, because XLA_FLAGS=--xla_force_host_platform_device_count must
be set before jax is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(__file__)
STEPS = 4

CHILD = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {tests_dir!r})
import tiny_training
from overfeat_jax.errors import ConfigError
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.training import loop

workdir, out = sys.argv[1], sys.argv[2]
errors = []
if jax.device_count() > 1:  # a global batch that does not split over the devices is refused up front
  bad = tiny_training.tiny_config(max_steps=1)
  bad.input.batch_size = 6
  for call in (lambda: mesh_lib.check_batch_divisible(6, mesh_lib.make_mesh()),
               lambda: loop.train(bad, workdir + "_bad", tiny_training.tiny_task(bad))):
    try:
      call()
    except ConfigError as e:
      errors.append(str(e))

config = tiny_training.tiny_config(max_steps={steps}, log_every=1, checkpoint_every=100)
result = loop.train(config, workdir, tiny_training.tiny_task(config))
losses = [json.loads(line)["loss"] for line in open(workdir + "/metrics.jsonl")]
param_devices = sorted({{len(x.sharding.device_set) for x in jax.tree.leaves(result.state.params)}})
np.savez(out, **tiny_training.flat_params(result.state.params))
print(json.dumps({{"devices": jax.device_count(), "losses": losses, "errors": errors,
                  "param_devices": param_devices}}))
"""


def run_child(tmp_path, num_devices: int) -> tuple[dict, dict]:
  code = CHILD.format(tests_dir=TESTS_DIR, steps=STEPS)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  out = tmp_path / f"params_{num_devices}.npz"
  proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"work_{num_devices}"), str(out)],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  params = np.load(out)
  return report, {name: params[name] for name in params.files}


def test_four_devices_match_one_device(tmp_path):
  one, params_one = run_child(tmp_path, 1)
  four, params_four = run_child(tmp_path, 4)
  assert one["devices"] == 1 and four["devices"] == 4
  assert four["param_devices"] == [4]  # parameters replicated on every device

  # Batch 6 on 4 devices: refused by the check and by the loop, naming both numbers.
  assert len(four["errors"]) == 2
  for message in four["errors"]:
    assert "input.batch_size=6 is not divisible by the number of devices (4)" in message

  # Same global batch of 8 (2 per device): same losses and parameters up to summation order.
  assert len(one["losses"]) == len(four["losses"]) == STEPS
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
  assert params_one.keys() == params_four.keys()
  for name in params_one:
    np.testing.assert_allclose(params_four[name], params_one[name], rtol=1e-5, atol=1e-6, err_msg=name)
  # The runs did move the parameters (the comparison is not of two initialisations).
  assert one["losses"][0] != one["losses"][-1]


# ---------------------------------------------------------------------------------------------
# Two processes (jax.distributed on CPU with gloo collectives), two devices each.

MULTIPROCESS_CHILD = """
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, process_id, workdir, max_steps, out = sys.argv[1:6]
jax.distributed.initialize(coordinator_address="localhost:" + port, num_processes=2,
                           process_id=int(process_id))
sys.path.insert(0, {tests_dir!r})
import numpy as np
import pytest
import tiny_training
from overfeat_jax.training import loop
config = tiny_training.tiny_config(max_steps=int(max_steps), log_every=2, checkpoint_every=4)
result = loop.train(config, workdir, tiny_training.tiny_task(config))
assert jax.process_count() == 2 and jax.device_count() == 4
if out:
  np.savez(out, **tiny_training.flat_params(result.state.params))
"""


def run_two_processes(tmp_path, workdir, max_steps: int, out: str = "") -> list[str]:
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  code = MULTIPROCESS_CHILD.format(tests_dir=TESTS_DIR)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen([sys.executable, "-c", code, port, str(i), str(workdir), str(max_steps),
                             out if i == 0 else ""],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (_, stderr) in zip(procs, outputs):
    assert p.returncode == 0, stderr[-3000:]
  return [stdout for stdout, _ in outputs]


@pytest.mark.slow
def test_two_processes_resume_exactly(tmp_path):
  straight = tmp_path / "straight.npz"
  run_two_processes(tmp_path, tmp_path / "a", 8, str(straight))
  first = run_two_processes(tmp_path, tmp_path / "b", 4)
  assert "starting at step 0/4" in first[0] and "step 4/4  loss" in first[0]
  assert not [line for line in first[1].splitlines() if not line.startswith("[Gloo]")]  # only process 0 prints
  # Each process saved its own position in its own shard of the data.
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints" / "4" / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  resumed = tmp_path / "resumed.npz"
  second = run_two_processes(tmp_path, tmp_path / "b", 8, str(resumed))
  assert "resuming from step 4/8" in second[0]
  a, b = np.load(straight), np.load(resumed)
  for name in a.files:
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
