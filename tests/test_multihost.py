"""Several processes as one run, through the command lines (README "Multi-host").

train.py as two processes on localhost (jax.distributed with "explicit" keys, CPU collectives by
gloo, 2 simulated devices each) ends with the parameters of one process with 4 devices; only
process 0 prints; evaluate.py under two processes prints its table once. Plus the config keys and
when `multihost.initialize` calls jax.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from overfeat_jax import multihost
from overfeat_jax.config import base_config, validate_config
from overfeat_jax.errors import ConfigError, DistributedError
from overfeat_jax.tasks import classification

from cli_helpers import QUICKSTART, ROOT, assert_one_line_error

STEPS = 3
# The quickstart model on the small digits split: global batch 8 (2 per device), a log line every
# step, one checkpoint at the end; then an evaluation of 8 images at one scale in batches of 4.
TRAIN = (f"--config.train.max_steps={STEPS}", "--config.input.batch_size=8", "--config.train.log_every=1",
         "--config.train.tensorboard=False", "--config.dataset.name=digits_in_scenes/classification")
EVAL = ("--config.eval.scales=((64,64),)", "--config.eval.multi_scales=(0,)",
        "--config.eval.aspect_buckets=(2.0,)", "--config.eval.num_examples=8",
        "--config.input.eval_batch_size=4", "--config.dataset.name=digits_in_scenes/classification")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(script: str, workdir, data_dir: str, args: tuple[str, ...], *, processes: int,
          devices_each: int) -> list[subprocess.Popen]:
  """`python <script>` as `processes` processes of one run (or one plain process), each with
  `devices_each` CPU devices, their stdout and stderr piped."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices_each}").strip())
  cmd = [sys.executable, os.path.join(ROOT, script), "--config", QUICKSTART, "--workdir", str(workdir),
         f"--config.dataset.data_dir={data_dir}", *args]
  if processes > 1:
    cmd += ["--config.distributed.initialize=explicit",
            f"--config.distributed.coordinator_address=localhost:{free_port()}",
            f"--config.distributed.num_processes={processes}"]
  return [subprocess.Popen(cmd + ([f"--config.distributed.process_id={i}"] if processes > 1 else []),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
          for i in range(processes)]


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
  """Each process's (exit status, stdout, stderr), once all have ended."""
  try:
    outputs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:  # one that failed can leave the others waiting for it
      if p.poll() is None:
        p.kill()
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def launch(*args, **kwargs) -> list[tuple[int, str, str]]:
  return finish(start(*args, **kwargs))


# gloo's connection notice, and its count where it follows ("... peer ranks is : 3").
GLOO_NOTICE = re.compile(r"\[Gloo\]\s*Rank\s*\d*\s+is\s+connected\s+to\s+\d+\s+peer\s+ranks\.\s*Expected"
                         r"\s+number\s+of\s+connected\s+peer\s+ranks\s+is\s*:(\s*\d+)?")


def ours(stdout: str) -> list[str]:
  """The lines our code printed. gloo announces each connection on stdout itself ("[Gloo] Rank 1 is
  connected to 3 peer ranks. Expected number of connected peer ranks is : 3"), written in pieces that
  other output, or the notice of another rank, can split (seen: "... is : [Gloo] Rank 3 ... is : 3",
  then the first "3" on a line of its own). So the notices are removed with the counts that follow
  them, and then the lines left holding only a count (our code never prints a bare number). A notice
can also land inside another's text ("[Gloo] Rank 0 is connected to [Gloo] Rank 1 ... is : 3 1 peer
ranks. ..."): removing the inner one completes the outer, so the removal repeats until none is left;
landing just before the outer one's rank, its count takes that rank along, so the rank is optional."""
  while True:
    stdout, found = GLOO_NOTICE.subn("", stdout)
    if not found:
      break
  lines = (line.strip() for line in stdout.splitlines())
  return [line for line in lines if line and not line.isdigit()]


def test_ours_drops_gloo_notices_split_or_nested_and_keeps_our_lines():
  notice = "[Gloo] Rank {} is connected to 1 peer ranks. Expected number of connected peer ranks is : 1"
  nested = notice.format(0).replace("1 peer", notice.format(1) + " 1 peer", 1)
  split = notice.format(1)[:-1] + notice.format(0) + "\n1\n"
  assert ours(nested + "\n" + split + "step 1/3  loss 2.3\n") == ["step 1/3  loss 2.3"]
  # One landing between "Rank " and the rank: its count and the rank read as one number ("is : 31"),
  # so removing it takes the rank too (seen in fresh-ci: "[Gloo] Rank  is connected to 3 ...").
  inside_rank = notice.format(0).replace("Rank 0", "Rank " + notice.format(3) + "0", 1)
  assert ours(inside_rank + "\nstep 2/3\n") == ["step 2/3"]
  assert ours("[Gloo] Rank 0 is connected to\n") == ["[Gloo] Rank 0 is connected to"]  # not a notice


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_data_dir):
  """The same training as two processes x 2 devices ("two") and one process x 4 devices ("one")."""
  base = tmp_path_factory.mktemp("multihost")
  started = time.time()
  two = launch("train.py", base / "two", digits_data_dir, TRAIN, processes=2, devices_each=2)
  one = launch("train.py", base / "one", digits_data_dir, TRAIN, processes=1, devices_each=4)
  print(f"trainings: {time.time() - started:.0f} s")
  for status, _, stderr in two + one:
    assert status == 0, stderr[-3000:]
  return {"two": (base / "two", two), "one": (base / "one", one)}


def restored_params(workdir) -> dict[str, np.ndarray]:
  config = ConfigDict(json.loads((workdir / "config.json").read_text()))
  params, step = classification.restore_params(config, str(workdir))
  assert step == STEPS
  flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(params))
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def test_two_processes_train_as_one_process_with_as_many_devices(runs):
  (two_dir, two), (one_dir, one) = runs["two"], runs["one"]
  # Process 0 reports the run over all 4 devices; process 1 prints nothing of ours.
  chief = ours(two[0][1])
  assert any("starting at step 0/3" in line and "global batch 8 on 4 device(s)" in line for line in chief)
  assert [line.split("  loss")[0] for line in chief if line.startswith("step ")] == ["step 1/3", "step 2/3",
                                                                                      "step 3/3"]
  assert chief[-1].startswith("done: step 3/3")
  assert ours(two[1][1]) == []
  assert "global batch 8 on 4 device(s)" in one[0][1]
  # Each process saved its own data position; process 0 alone wrote the run's files.
  assert sorted(os.listdir(two_dir / "checkpoints" / str(STEPS) / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  assert json.loads((two_dir / "config.json").read_text())["distributed"]["process_id"] == 0

  # The same batches, dropout and updates: equal up to float32 summation order. The gradient
  # all-reduce adds the 4 devices' partial sums in another order across processes (gloo) than
  # within one (XLA), which moves the last bits: measured, at most 1.5e-8 apart after 3 steps, while
  # steps 1 -> 3 moved the parameters by up to 2.9e-3; the losses differ from the 7th digit on (at
  # step 1 not at all, which another batch or dropout mask would not give).
  losses = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (two_dir, one_dir)]
  assert len(losses[0]) == STEPS and losses[0][0] != losses[0][-1]
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  a, b = restored_params(two_dir), restored_params(one_dir)
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_resuming_with_another_process_count_is_a_one_line_error(runs, digits_data_dir):
  two_dir, _ = runs["two"]
  [(status, stdout, stderr)] = launch("train.py", two_dir, digits_data_dir,
                                      TRAIN[1:] + (f"--config.train.max_steps={STEPS + 1}",),
                                      processes=1, devices_each=4)
  assert_one_line_error(subprocess.CompletedProcess([], status, stdout, stderr),
                        f"checkpoint step {STEPS} in {two_dir / 'checkpoints'} holds the data positions "
                        "of 2 processes, but this run has 1: resume it with 2 (distributed.num_processes)")
  assert sorted(os.listdir(two_dir / "checkpoints")) == [str(STEPS)]  # nothing moved or added


def test_two_processes_evaluate_and_print_the_table_once(runs, digits_data_dir):
  (two_dir, _), (one_dir, _) = runs["two"], runs["one"]
  two = launch("evaluate.py", two_dir, digits_data_dir, EVAL, processes=2, devices_each=2)
  one = launch("evaluate.py", one_dir, digits_data_dir, EVAL, processes=1, devices_each=4)
  for status, _, stderr in two + one:
    assert status == 0, stderr[-3000:]
  chief = two[0][1]
  assert chief.count(f"checkpoint step {STEPS} of {two_dir / 'checkpoints'}, 8 examples of") == 1
  assert chief.count("1 scale (64x64), fine stride") == 1 and "done: checkpoint step 3" in chief
  assert ours(two[1][1]) == []
  # All 8 images counted once over the two processes: the same table as one process's.
  rows = [json.loads((d / "eval" / "metrics.json").read_text())["rows"] for d in (two_dir, one_dir)]
  assert rows[0] == rows[1]


@pytest.mark.slow
def test_a_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, digits_data_dir):
  # A long run, logging every 2 steps; SIGTERM reaches process 1 only, once training runs.
  args = ("--config.train.max_steps=1000", "--config.input.batch_size=8", "--config.train.log_every=2",
          "--config.train.checkpoint_every=1000", "--config.train.tensorboard=False",
          "--config.dataset.name=digits_in_scenes/classification")
  procs = start("train.py", tmp_path / "run", digits_data_dir, args, processes=2, devices_each=2)
  seen = ""
  for line in procs[0].stdout:
    seen += line
    if line.startswith("step 2/1000"):
      break
  else:
    pytest.fail(f"no step 2 line:\n{seen}\n{finish(procs)}")
  procs[1].send_signal(signal.SIGTERM)
  (status_0, out_0, err_0), (status_1, out_1, err_1) = finish(procs)
  # Both stop at the next log step (SIGTERM's status), having saved it together.
  assert (status_0, status_1) == (143, 143), err_0[-2000:] + err_1[-2000:]
  stopped = [line for line in (seen + out_0).splitlines() if line.startswith("stopped by SIGTERM at step ")]
  assert len(stopped) == 1, seen + out_0
  step = int(stopped[0].split("at step ")[1].split("/")[0])
  assert step % 2 == 0 and 2 < step < 1000
  assert os.listdir(tmp_path / "run" / "checkpoints") == [str(step)]
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints" / str(step) / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  assert ours(out_1) == []


# ---------------------------------------------------------------------------------------------
# The keys, and when jax.distributed.initialize is called (in this process: no peers needed).

def distributed_config(mode: str, address: str = "", count: int = 0, pid: int = -1) -> ConfigDict:
  config = base_config()
  config.distributed.initialize = mode
  config.distributed.coordinator_address = address
  config.distributed.num_processes = count
  config.distributed.process_id = pid
  return config


@pytest.mark.parametrize("mode, address, count, pid, fragment", [
    ("sometimes", "", 0, -1, "config.distributed.initialize='sometimes' is invalid: expected one of never, "
                             "auto, explicit"),
    ("explicit", "", 2, 0, "config.distributed.coordinator_address='' is invalid: distributed.initialize="
                           "'explicit' needs"),
    ("explicit", "10.0.0.1:1234", 0, 0, "config.distributed.num_processes=0 is invalid"),
    ("explicit", "10.0.0.1:1234", 2, -1, "config.distributed.process_id=-1 is invalid"),
    ("explicit", "10.0.0.1:1234", 2, 2, "config.distributed.process_id=2 is invalid: expected < "
                                        "distributed.num_processes=2"),
    ("explicit", "10.0.0.1", 2, 0, "config.distributed.coordinator_address='10.0.0.1' is invalid: "
                                   'expected "host:port"'),
    ("explicit", "node0:99999", 2, 0, "coordinator_address='node0:99999' is invalid"),
    ("never", "10.0.0.1:1234", 0, -1, "config.distributed.coordinator_address='10.0.0.1:1234' is invalid: "
                                      "distributed.initialize='never', which does not use it"),
    ("auto", "", 4, -1, "config.distributed.num_processes=4 is invalid: distributed.initialize='auto', "
                        "which does not use it ('auto' takes it from the cluster"),
    ("never", "", 0, 1, "config.distributed.process_id=1 is invalid"),
])
def test_bad_distributed_keys_name_the_key(mode, address, count, pid, fragment):
  with pytest.raises(ConfigError) as error:
    validate_config(distributed_config(mode, address, count, pid))
  assert fragment in str(error.value)


@pytest.fixture
def calls(monkeypatch):
  """jax.distributed.initialize replaced by a recorder of its keyword arguments; jax's preemption
  service flag put back afterwards."""
  made: list[dict] = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: made.append(kwargs))
  before = jax.config.jax_enable_preemption_service
  yield made
  jax.config.update("jax_enable_preemption_service", before)


def test_never_does_not_call_jax(calls):
  assert multihost.initialize(base_config()) is False
  assert calls == [] and jax.config.jax_enable_preemption_service


def test_explicit_passes_the_three_keys_and_auto_none(calls):
  assert multihost.initialize(distributed_config("explicit", "node0:1234", 2, 1)) is True
  assert calls == [{"coordinator_address": "node0:1234", "num_processes": 2, "process_id": 1}]
  # jax's preemption service would take SIGTERM from stop_signals: off before the call.
  assert not jax.config.jax_enable_preemption_service
  assert multihost.initialize(distributed_config("auto")) is True
  assert calls[1] == {}


def test_a_config_error_comes_before_any_call(calls):
  with pytest.raises(ConfigError, match="distributed.coordinator_address"):
    multihost.initialize(distributed_config("explicit", "", 2, 0))
  assert calls == []


def test_jax_refusing_to_start_is_a_one_line_error():
  # jax's own refusal, unmocked: its backend already runs in this process.
  jax.devices()
  before = jax.config.jax_enable_preemption_service
  try:
    with pytest.raises(DistributedError) as error:
      multihost.initialize(distributed_config("explicit", "localhost:1234", 2, 0))
  finally:
    jax.config.update("jax_enable_preemption_service", before)
  message = str(error.value)
  assert message.startswith("cannot start the distributed run (distributed.initialize='explicit', "
                            "coordinator_address='localhost:1234', num_processes=2, process_id=0): ")
  assert "must be called before any JAX calls" in message and "\n" not in message


def test_detection_metrics_are_gathered_from_every_process():
  """Two processes each add half of six images; after `gather` both compute the metrics of all six,
  as one process that added them all (DetectionEvaluator and the proposals' RecallAccumulator)."""
  import json
  import gather_run
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "gather_run.py"), str(port), str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
           for i in range(2)]
  results = []
  for status, out, err in finish(procs):
    assert status == 0, err[-2000:]
    results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
  whole = gather_run.metrics(list(range(6)), gather=False)
  half = gather_run.metrics([0, 2, 4], gather=False)
  assert results[0] == results[1] == whole
  assert whole["num_images"] == 6 and half["num_images"] == 3 and half != whole
