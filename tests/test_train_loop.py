"""The generic training loop on a tiny task: outputs, learning, determinism, resume, stop, errors.

One uninterrupted run (module fixture) is the reference: a second run, a resumed run, a run resumed
past a damaged checkpoint and a run that is killed with SIGKILL, then stopped with SIGTERM, in real
subprocesses (`tests/tiny_training.py`), must all end with its parameters. Faults at the edges (a
locked, unwritable or full work directory, a damaged config.json, a resume that would change the run,
a NaN parameter) are one error each, with the newest intact checkpoint left as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import tiny_training
from checkpoint_damage import truncate_array_file
from overfeat_jax.errors import (CheckpointError, ConfigError, LossNotFiniteError, ParamsNotFiniteError,
                                 WorkdirError)
from overfeat_jax.training import loop
from overfeat_jax.training.workdir import WorkdirLock

SCRIPT = os.path.join(os.path.dirname(__file__), "tiny_training.py")
STEPS = 36  # 3 epochs of the tiny task; the learning rate is halved from step 12 on
CHECKPOINT_EVERY = 4
STEP_DELAY = 0.3  # seconds per step in the subprocesses that get killed: the window between saves


def reference_config(max_steps: int = STEPS):
  return tiny_training.tiny_config(max_steps=max_steps, checkpoint_every=CHECKPOINT_EVERY, log_every=2)


def run(config, workdir) -> loop.TrainResult:
  return loop.train(config, str(workdir), tiny_training.tiny_task(config))


def read_metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_params(actual: dict, expected: dict, exact: bool) -> None:
  assert actual.keys() == expected.keys()
  for name in actual:
    if exact:
      np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    else:  # another process: same program, same CPU; allow for nothing but float noise
      np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(workdir, flat final params) of an uninterrupted STEPS-step run."""
  workdir = tmp_path_factory.mktemp("reference")
  result = run(reference_config(), workdir)
  assert result.step == STEPS and int(result.state.step) == STEPS and result.stopped_by is None
  return workdir, tiny_training.flat_params(result.state.params)


def test_a_run_writes_metrics_config_and_checkpoints(reference):
  workdir, _ = reference
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(2, STEPS + 1, 2))
  for r in records:
    assert set(r) >= {"step", "loss", "accuracy", "learning_rate", "images_per_sec", "elapsed_sec"}
    assert np.isfinite(r["loss"]) and 0.0 <= r["accuracy"] <= 1.0
    assert r["learning_rate"] == pytest.approx(0.02 if r["step"] <= 12 else 0.01)
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["max_steps"] == STEPS and saved["model"]["width"] == 0.125
  assert sorted(os.listdir(workdir / "checkpoints")) == ["32", "36"]  # keep_checkpoints=2


def test_training_lowers_the_loss(reference):
  records = read_metrics(reference[0])
  first_epoch = np.mean([r["loss"] for r in records if r["step"] <= 12])
  last_epoch = np.mean([r["loss"] for r in records if r["step"] > 24])
  assert last_epoch < 0.75 * first_epoch


def test_same_config_same_numbers(tmp_path, reference):
  result = run(reference_config(), tmp_path)
  assert_same_params(tiny_training.flat_params(result.state.params), reference[1], exact=True)


def test_resume_continues_exactly(tmp_path, reference):
  # Stop at step 6 (a checkpoint at 4 and at the end, 6), then resume to STEPS across the lr boundary.
  assert run(reference_config(max_steps=6), tmp_path).step == 6
  result = run(reference_config(), tmp_path)
  assert result.step == STEPS
  assert_same_params(tiny_training.flat_params(result.state.params), reference[1], exact=True)
  assert [r["step"] for r in read_metrics(tmp_path)] == list(range(2, STEPS + 1, 2))
  # Already finished: a rerun does nothing and keeps the result.
  again = run(reference_config(), tmp_path)
  assert again.step == STEPS
  assert_same_params(tiny_training.flat_params(again.state.params), reference[1], exact=True)


class SignalLoader:
  """Wraps a loader; its iterator sends `signum` to this very process when batch `at` is read."""

  def __init__(self, loader, at: int, signum: int):
    self.loader, self.at, self.signum = loader, at, signum

  def __iter__(self):
    return SignalIterator(iter(self.loader), self.at, self.signum)


class SignalIterator(tiny_training.SlowIterator):

  def __init__(self, inner, at: int, signum: int):
    super().__init__(inner, 0.0)
    self.at, self.signum, self.count = at, signum, 0

  def __next__(self):
    self.count += 1
    if self.count == self.at:
      os.kill(os.getpid(), self.signum)
    return next(self.inner)


def test_ctrl_c_saves_and_stops_at_the_step_boundary(tmp_path, capsys):
  config = reference_config(max_steps=10)
  task = tiny_training.tiny_task(config)
  make_loader = task.make_loader
  task = dataclasses.replace(
      task, make_loader=lambda i, n: SignalLoader(make_loader(i, n), at=3, signum=signal.SIGINT))
  # What was installed before (CI runs without a terminal, where SIGINT may start out ignored).
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  result = loop.train(config, str(tmp_path), task)
  assert result.stopped_by == signal.SIGINT and result.step == 3
  assert os.listdir(tmp_path / "checkpoints") == ["3"]
  assert "stopped by SIGINT at step 3/10" in capsys.readouterr().out
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored


def test_resuming_with_a_different_model_is_refused(tmp_path):
  run(reference_config(max_steps=2), tmp_path)
  config = reference_config(max_steps=4)
  config.model.width = 0.25
  with pytest.raises(CheckpointError,
                     match=r"was written for a different model .*model.width: 0.125 \(config.json\) vs 0.25"):
    run(config, tmp_path)
  # Without config.json, the checkpoint's own signature refuses it too.
  os.remove(tmp_path / "config.json")
  with pytest.raises(CheckpointError, match=r"param_shapes.Dense_0/kernel: \[192, 16\] \(checkpoint\)"):
    run(config, tmp_path)


def _forget_setting(workdir, key: str) -> None:
  """Makes the run in `workdir` look written before config.model.<key> existed: gone from
  config.json and from every checkpoint's signature."""
  config_file = workdir / "config.json"
  saved = json.loads(config_file.read_text())
  saved["model"].pop(key, None)
  config_file.write_text(json.dumps(saved))
  for step in os.listdir(workdir / "checkpoints"):
    path = workdir / "checkpoints" / step / "signature" / "metadata"
    signature = json.loads(path.read_text())
    signature["task"]["model"].pop(key, None)
    path.write_text(json.dumps(signature))


def test_a_run_resumes_across_a_version_that_adds_a_setting(tmp_path):
  run(reference_config(max_steps=2), tmp_path)
  _forget_setting(tmp_path, "compute_dtype")
  # The new setting at its default is what the older code did: the run resumes.
  assert run(reference_config(max_steps=4), tmp_path).step == 4
  # Set to something else, it is another run: config.json's check names it.
  _forget_setting(tmp_path, "compute_dtype")
  config = reference_config(max_steps=6)
  config.model.compute_dtype = "bfloat16"
  with pytest.raises(CheckpointError, match=r"model.compute_dtype: float32 \(config.json\) vs bfloat16"):
    run(config, tmp_path)
  # Without config.json nothing says what the older run used: the signature refuses it.
  os.remove(tmp_path / "config.json")
  with pytest.raises(CheckpointError,
                     match=r"task.model.compute_dtype: <absent> \(checkpoint\) vs float32"):
    run(reference_config(max_steps=6), tmp_path)


def test_a_diverging_loss_names_the_step_and_is_not_checkpointed(tmp_path):
  config = reference_config(max_steps=8)
  config.train.checkpoint_every = 1
  config.optimizer.learning_rate = 1e30
  with pytest.raises(LossNotFiniteError, match=r"training loss is (nan|inf|-inf) at step [2-8] "):
    run(config, tmp_path)
  # Step 1's loss is finite (the huge update comes after it); no later, non-finite state is saved.
  assert sorted(os.listdir(tmp_path / "checkpoints")) in ([], ["1"])


def test_a_nan_parameter_with_a_finite_loss_is_not_saved(tmp_path):
  run(reference_config(max_steps=2), tmp_path)
  config = reference_config(max_steps=4)
  config.train.checkpoint_every = 1
  task = tiny_training.tiny_task(config)

  def loss_fn(params, batch, rng):  # d/db of 0 * sqrt(0 * sum(b)) is 0 * inf = NaN; the value is 0
    loss, aux = task.loss_fn(params, batch, rng)
    return loss + 0.0 * jnp.sqrt(0.0 * jnp.sum(params["Dense_1"]["bias"])), aux

  with pytest.raises(ParamsNotFiniteError, match=r"parameter\(s\) Dense_1/bias became NaN or Inf by step 3 "
                                                 r"although the loss is finite; not saved .*step 2, is untouched"):
    loop.train(config, str(tmp_path), dataclasses.replace(task, loss_fn=loss_fn))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_resume_past_a_damaged_checkpoint_matches_an_uninterrupted_run(tmp_path, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  truncate_array_file(workdir / "checkpoints" / str(STEPS))  # the final step: the run is not done
  result = run(reference_config(), workdir)
  assert result.step == STEPS
  assert_same_params(tiny_training.flat_params(result.state.params), reference[1], exact=True)
  assert sorted(os.listdir(workdir / "checkpoints")) == [str(STEPS - CHECKPOINT_EVERY), str(STEPS)]
  assert os.listdir(workdir / "damaged_checkpoints") == [str(STEPS)]  # kept, not deleted


@pytest.mark.parametrize("content", ["", '{"model": {"width": 0.1', "[]"])
def test_an_unreadable_config_json_is_refused_and_nothing_is_touched(tmp_path, content):
  run(reference_config(max_steps=2), tmp_path)
  (tmp_path / "config.json").write_text(content)
  with pytest.raises(CheckpointError, match=rf"cannot resume from {tmp_path}: .*config.json is unreadable "
                                            r"\(.+\); it records the config .*: restore it, or delete it"):
    run(reference_config(max_steps=4), tmp_path)
  assert (tmp_path / "config.json").read_text() == content
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  assert [r["step"] for r in read_metrics(tmp_path)] == [2]


def test_a_resume_may_change_the_runs_length_but_not_its_schedule(tmp_path):
  run(reference_config(max_steps=4), tmp_path)
  original = (tmp_path / "config.json").read_text()
  changed_batch = reference_config(max_steps=8)
  changed_batch.input.batch_size = 16  # 6 steps per epoch instead of 12: step 4 would be another epoch
  changed_schedule = reference_config(max_steps=8)
  changed_schedule.optimizer.halve_at_epochs = (2,)
  for config, difference in ((changed_batch, r"input.batch_size: 8 \(config.json\) vs 16 \(now\)"),
                             (changed_schedule, r"optimizer.halve_at_epochs: \[1\] \(config.json\) vs \[2\] \(now\)")):
    with pytest.raises(CheckpointError, match=r"was trained with other settings \(.*config.json\): "
                                              + difference + r"; a resume may change only the run's length"):
      run(config, tmp_path)
    assert (tmp_path / "config.json").read_text() == original  # never overwritten
  assert os.listdir(tmp_path / "checkpoints") == ["4"]

  longer = reference_config(max_steps=8)
  longer.train.log_every = 4
  assert run(longer, tmp_path).step == 8
  assert json.loads((tmp_path / "config.json").read_text())["train"]["max_steps"] == 8
  recorded = [json.loads(line) for line in (tmp_path / "config_changes.jsonl").read_text().splitlines()]
  assert recorded == [{"step": 4, "changes": {"train.log_every": [2, 4], "train.max_steps": [4, 8]}}]


def test_a_workdir_held_by_another_run_is_refused_before_anything_is_written(tmp_path):
  with WorkdirLock(str(tmp_path)):
    with pytest.raises(WorkdirError, match=rf"--workdir {tmp_path} is in use by another training run "
                                           rf"\(pid {os.getpid()}\)"):
      run(reference_config(max_steps=2), tmp_path)
  assert os.listdir(tmp_path) == ["train.lock"]
  assert run(reference_config(max_steps=2), tmp_path).step == 2  # released with its holder


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(WorkdirError, match=rf"--workdir {tmp_path / 'file'} is a file, not a directory"):
    run(reference_config(max_steps=2), tmp_path / "file")


@contextlib.contextmanager
def read_only(path):
  """`path` made read-only: by its mode, or as root (who ignores modes) by a read-only bind mount."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    try:
      yield
    finally:
      os.chmod(path, 0o755)
    return
  for args in (["mount", "--bind", path, path], ["mount", "-o", "remount,bind,ro", path]):
    if subprocess.run(args, capture_output=True).returncode != 0:
      subprocess.run(["umount", path], capture_output=True)
      pytest.skip("running as root without the right to mount: cannot make a directory read-only")
  try:
    yield
  finally:
    subprocess.run(["umount", path], check=True)


def test_a_read_only_workdir_is_refused_and_nothing_is_touched(tmp_path):
  workdir = tmp_path / "run"
  run(reference_config(max_steps=2), workdir)
  before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  with read_only(str(workdir)):
    with pytest.raises(WorkdirError, match=rf"cannot write in --workdir {workdir}: "):
      run(reference_config(max_steps=4), workdir)
    with pytest.raises(WorkdirError, match=rf"cannot write in --workdir {workdir / 'new'}: "):
      run(reference_config(max_steps=4), workdir / "new")
  assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  # The signature item of step 8 hits ENOSPC in orbax's background write, as a full disk would.
  from orbax.checkpoint._src.handlers import json_checkpoint_handler
  save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def disk_full_at_step_8(self, x, directory):
    if os.path.basename(os.path.dirname(str(directory))).split(".")[0] == "8":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    await save_fn(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full_at_step_8)
  config = reference_config(max_steps=12)
  config.train.keep_checkpoints = 1  # step 4 may go only once a newer step is complete
  with pytest.raises(CheckpointError, match=rf"cannot save checkpoint step 8 in {tmp_path / 'checkpoints'}: "
                                            r"No space left on device; step 4 is the newest complete "
                                            r"checkpoint, untouched"):
    run(config, tmp_path)
  assert [p for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()] == ["4"]

  monkeypatch.undo()  # space freed: the same command resumes from step 4
  assert run(config, tmp_path).step == 12
  assert os.listdir(tmp_path / "checkpoints") == ["12"]


def test_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="nothing to train"):
    run(tiny_training.tiny_config(max_steps=0, num_epochs=0), tmp_path)


# ---------------------------------------------------------------------------------------------
# Real processes: kill -9 between two checkpoints, restart, SIGTERM, restart.

def start(workdir, *, step_delay: float = 0.0, out: str = "") -> subprocess.Popen:
  cmd = [sys.executable, SCRIPT, "--workdir", str(workdir), "--max_steps", str(STEPS),
         "--checkpoint_every", str(CHECKPOINT_EVERY), "--log_every", "2", "--step_delay", str(step_delay)]
  if out:
    cmd += ["--out", out]
  # The three processes compile the same programs: share jax's persistent cache (saves ~2 s each).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=os.path.join(os.path.dirname(str(workdir)), "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"the training process ended early:\n{proc.stdout.read()}\n{proc.stderr.read()}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError("timed out waiting for the training process")
    time.sleep(0.02)


def metric_lines(workdir) -> int:
  path = workdir / "metrics.jsonl"
  return len(path.read_text().splitlines()) if path.exists() else 0


def test_kill_9_and_sigterm_then_resume_match_an_uninterrupted_run(tmp_path, reference):
  workdir = tmp_path / "run"
  ckpt = workdir / "checkpoints"

  # 1. SIGKILL right after the step-4 checkpoint is committed, before step 8's.
  proc = start(workdir, step_delay=STEP_DELAY)
  wait_for(lambda: (ckpt / "4").is_dir(), proc)
  proc.kill()
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert [p for p in os.listdir(ckpt) if p.isdigit()] == ["4"]

  # 2. Restart; SIGTERM once it has logged a step: it saves where it is and exits with 128 + 15.
  lines_before = metric_lines(workdir)
  proc = start(workdir, step_delay=STEP_DELAY)
  wait_for(lambda: metric_lines(workdir) > lines_before, proc)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, stderr
  assert "Traceback" not in stderr
  assert f"resuming from step 4/{STEPS}" in stdout
  assert f"step 6/{STEPS}  loss " in stdout and " img/s  ETA " in stdout
  stopped = [line for line in stdout.splitlines() if line.startswith("stopped by SIGTERM at step ")]
  assert len(stopped) == 1, stdout
  stop_step = int(stopped[0].split("at step ")[1].split("/")[0])
  assert 6 <= stop_step < STEPS
  assert str(stop_step) in os.listdir(ckpt)

  # 3. Restart to the end: the same parameters as the uninterrupted run.
  proc = start(workdir, out=str(tmp_path / "final.npz"))
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr
  assert f"resuming from step {stop_step}/{STEPS}" in stdout
  final = np.load(tmp_path / "final.npz")
  assert int(final["step"]) == STEPS
  # Steps a killed run logged after its last checkpoint were dropped when the next run resumed; the
  # SIGTERM run logged the step it stopped at.
  assert [r["step"] for r in read_metrics(workdir)] == sorted(set(range(2, STEPS + 1, 2)) | {stop_step})
  assert_same_params({name: final[name] for name in final.files if name != "step"}, reference[1],
                     exact=False)


def test_resumed_metrics_drop_steps_past_the_checkpoint(tmp_path):
  from overfeat_jax import metrics_writer
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "loss": 0.9}\n{"step": 6, "loss": 0.8}\n{"step": 8, "lo')
  metrics_writer.drop_records_after(str(path), 4)  # resuming from the step-4 checkpoint
  assert path.read_text() == '{"step": 2, "loss": 1.0}\n{"step": 4, "loss": 0.9}\n'
