"""What a run leaves for a researcher: TensorBoard events equal to metrics.jsonl, evaluation during
training at the right steps, run_info.json, and the summary line; across a resume too.

The event files are read back by a reader written here from the TFRecord framing (length, data and a
masked CRC-32C of each, checked with a bitwise CRC-32C, not the writer's table) and TensorBoard's
restart rule (a SessionLog START at step s drops what earlier files logged from step s on); only the
Event protobuf classes come from tensorboardX.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib

import jax
import numpy as np
import pytest
from etils import epath
from tensorboardX.proto.event_pb2 import Event, SessionLog

import overfeat_jax
import tiny_training
from overfeat_jax import metrics_writer, run_info
from overfeat_jax.config import validate_config
from overfeat_jax.errors import ConfigError
from overfeat_jax.training import loop
from overfeat_jax.training import progress as progress_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# An independent reader of TensorBoard event files.

def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one bit at a time."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_the_crc_reference_is_crc32c():
  assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C (RFC 3720)


def read_events(path) -> list[Event]:
  """Every record of a TFRecord file as an Event; asserts the framing and both checksums."""
  data, events, at = epath.Path(path).read_bytes(), [], 0  # epath: also a cloud workdir's files
  while at < len(data):
    header = data[at:at + 8]
    length = int.from_bytes(header, "little")
    assert int.from_bytes(data[at + 8:at + 12], "little") == masked(crc32c(header)), (path, at)
    payload = data[at + 12:at + 12 + length]
    assert len(payload) == length, (path, at)
    assert int.from_bytes(data[at + 12 + length:at + 16 + length], "little") == masked(crc32c(payload))
    events.append(Event.FromString(payload))
    at += 16 + length
  return events


def event_files(directory) -> list[str]:
  return sorted(str(p) for p in directory.iterdir() if "tfevents" in p.name)  # TensorBoard's order


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} as TensorBoard shows the directory's event files."""
  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in event_files(directory):
    events = read_events(path)
    assert events[0].file_version == "brain.Event:2"
    for event in events:
      if event.HasField("session_log") and event.session_log.status == SessionLog.START:
        scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return {tag: points for tag, points in scalars.items() if points}


def jsonl_scalars(path) -> dict[str, list[tuple[int, float]]]:
  """The same view of metrics.jsonl, values rounded to float32 as TensorBoard stores them."""
  scalars: dict[str, list[tuple[int, float]]] = {}
  for line in epath.Path(path).read_text().splitlines():
    record = json.loads(line)
    for key, value in record.items():
      if key != "step":
        scalars.setdefault(key, []).append((record["step"], float(np.float32(value))))
  return scalars


def read_records(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Training runs of the tiny task with an evaluation of its own.

def tiny_accuracy(params) -> float:
  """The tiny net's accuracy on its 96 records, in numpy (dropout off): an evaluation of params."""
  records = tiny_training.tiny_records()
  x = np.stack([r["image"] for r in records]).reshape(len(records), -1)
  labels = np.array([r["label"] for r in records])
  p = jax.device_get(params)
  hidden = np.maximum(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0.0)
  logits = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  return float(np.mean(np.argmax(logits, axis=1) == labels))


class Evaluation:
  """An `evaluate` for the loop that remembers what it was asked and what it answered."""

  def __init__(self):
    self.calls: list[tuple[int, dict[str, float]]] = []

  def __call__(self, params, step: int) -> dict[str, float]:
    accuracy = tiny_accuracy(params)
    values = {"eval/error": 100.0 * (1.0 - accuracy), "eval/accuracy": accuracy}
    self.calls.append((step, values))
    return values


def tiny_run(workdir, *, max_steps: int, eval_every: int, evaluate=None) -> loop.TrainResult:
  config = tiny_training.tiny_config(max_steps=max_steps, eval_every=eval_every, checkpoint_every=4)
  return loop.train(config, str(workdir), tiny_training.tiny_task(config), evaluate=evaluate)


TRAIN_TAGS = {"loss", "accuracy", "learning_rate", "images_per_sec", "elapsed_sec"}


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
  """A 10-step run, logged every 2 steps and evaluated every 4 (at 4 and 8: not at the last step, 10)."""
  workdir = tmp_path_factory.mktemp("logging") / "run"
  evaluation = Evaluation()
  result = tiny_run(workdir, max_steps=10, eval_every=4, evaluate=evaluation)
  return workdir, result, evaluation


def test_tensorboard_holds_what_metrics_jsonl_holds(evaluated_run):
  workdir, _, _ = evaluated_run
  assert len(event_files(workdir)) == 1
  from_events, from_jsonl = tensorboard_scalars(workdir), jsonl_scalars(workdir / "metrics.jsonl")
  assert from_events == from_jsonl
  # The loss and every term of the loss_fn's aux, the learning rate, the throughput, the evaluation.
  assert set(from_events) == TRAIN_TAGS | {"eval/error", "eval/accuracy"}
  assert [step for step, _ in from_events["loss"]] == [2, 4, 6, 8, 10]
  assert all(value > 0 for _, value in from_events["images_per_sec"])
  assert [value for _, value in from_events["learning_rate"]] == [np.float32(0.02)] * 5


def test_evaluation_runs_every_eval_every_steps(evaluated_run):
  workdir, result, evaluation = evaluated_run
  assert [step for step, _ in evaluation.calls] == [4, 8]
  records = [r for r in read_records(workdir) if "eval/error" in r]
  assert [(r["step"], {k: v for k, v in r.items() if k != "step"}) for r in records] == evaluation.calls
  assert list(evaluation.calls[-1][1]) == ["eval/error", "eval/accuracy"]  # the headline first


def test_run_info_records_the_environment(evaluated_run):
  workdir, _, _ = evaluated_run
  runs = json.loads((workdir / "run_info.json").read_text())["runs"]
  assert len(runs) == 1
  info = runs[0]
  import jaxlib
  assert info["command"] == "train" and info["step"] == 0
  assert info["jax"] == jax.__version__ and info["jaxlib"] == jaxlib.__version__
  assert info["device_kind"] == jax.devices()[0].device_kind == "cpu"
  assert info["device_count"] == jax.device_count() and info["process_count"] == 1
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    assert info["overfeat_jax"] == overfeat_jax.__version__ == tomllib.load(f)["project"]["version"]
  assert re.fullmatch(r"[0-9a-f]{40}", info["git_commit"] or "0" * 40)
  assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", info["started"])


def test_the_run_ends_with_a_summary_line(tmp_path, capsys):
  evaluation = Evaluation()
  result = tiny_run(tmp_path, max_steps=4, eval_every=4, evaluate=evaluation)
  # It evaluated the state of its step: here the last one, the final parameters.
  assert [step for step, _ in evaluation.calls] == [4]
  assert evaluation.calls[0][1]["eval/accuracy"] == tiny_accuracy(result.state.params)
  last = capsys.readouterr().out.splitlines()[-1]
  loss = read_records(tmp_path)[-2]["loss"]
  error = read_records(tmp_path)[-1]["eval/error"]
  assert last == (f"done: step 4/4, loss {loss:.4g} (step 4), eval/error {error:.4g} (step 4); checkpoints "
                  f"in {tmp_path / 'checkpoints'}; metrics in {tmp_path / 'metrics.jsonl'} and TensorBoard "
                  f"(tensorboard --logdir {tmp_path})")


def test_a_resumed_run_logs_every_step_once(tmp_path, evaluated_run):
  reference, _, _ = evaluated_run
  # A run to step 6 (checkpoints 4 and 6, evaluated at 4), then "killed" before its step-6 checkpoint
  # (as if by kill -9): the resume from step 4 logs step 6 again, then 8 (and evaluates) and 10.
  tiny_run(tmp_path, max_steps=6, eval_every=4, evaluate=Evaluation())
  assert [r["step"] for r in read_records(tmp_path)] == [2, 4, 4, 6]
  shutil.rmtree(tmp_path / "checkpoints" / "6")
  assert tiny_run(tmp_path, max_steps=10, eval_every=4, evaluate=Evaluation()).step == 10

  records = read_records(tmp_path)
  assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8, 10]
  assert [r["step"] for r in records if "eval/error" in r] == [4, 8]
  # The same numbers as the uninterrupted run (img/s and time aside).
  timing = ("images_per_sec", "elapsed_sec")
  assert ([{k: v for k, v in r.items() if k not in timing} for r in records]
          == [{k: v for k, v in r.items() if k not in timing} for r in read_records(reference)])
  # Two event files; TensorBoard shows each step once, as metrics.jsonl does.
  assert len(event_files(tmp_path)) == 2
  assert tensorboard_scalars(tmp_path) == jsonl_scalars(tmp_path / "metrics.jsonl")
  starts = [(e.step, e.session_log.status) for e in read_events(event_files(tmp_path)[1])
            if e.HasField("session_log")]
  assert starts == [(5, SessionLog.START)]
  runs = json.loads((tmp_path / "run_info.json").read_text())["runs"]
  assert [(r["command"], r["step"]) for r in runs] == [("train", 0), ("train", 4)]


def test_eval_every_needs_an_evaluation(tmp_path):
  with pytest.raises(ConfigError, match=r"config.train.eval_every=4 but no evaluation was given"):
    tiny_run(tmp_path, max_steps=4, eval_every=4)
  assert not tmp_path.joinpath("metrics.jsonl").exists()
  config = tiny_training.tiny_config(eval_every=-1)
  with pytest.raises(ConfigError, match=r"config.train.eval_every=-1 is invalid: expected >= 0"):
    validate_config(config)


def test_tensorboard_can_be_turned_off(tmp_path):
  config = tiny_training.tiny_config(max_steps=2, tensorboard=False)
  loop.train(config, str(tmp_path), tiny_training.tiny_task(config))
  assert event_files(tmp_path) == [] and [r["step"] for r in read_records(tmp_path)] == [2]


# ---------------------------------------------------------------------------------------------
# The writer and the progress log on their own.

def test_the_writer_refuses_names_tensorboard_would_change(tmp_path):
  with metrics_writer.MetricsWriter(str(tmp_path), active=True) as writer:
    for bad in ("top-1 error", "/loss", "step", "é"):
      with pytest.raises(ValueError, match="metric name"):
        writer.write(1, {bad: 1.0})
    with pytest.raises(ValueError, match="expected a number"):
      writer.write(1, {"loss": "1.0"})
    writer.write(1, {"a/b_c.d-e": 0.1})
  assert read_records(tmp_path) == [{"step": 1, "a/b_c.d-e": 0.1}]
  assert tensorboard_scalars(tmp_path) == {"a/b_c.d-e": [(1, float(np.float32(0.1)))]}


def test_only_the_active_process_writes(tmp_path):
  with metrics_writer.MetricsWriter(str(tmp_path / "log"), active=False) as writer:
    writer.write(1, {"loss": 1.0})
  assert not (tmp_path / "log").exists() and writer.newest("loss") is None


def test_an_evaluation_is_left_out_of_the_throughput(monkeypatch, tmp_path):
  clock = iter([0.0, 30.0])  # the log starts at 0 s and flushes at 30 s ...
  monkeypatch.setattr(progress_lib.time, "perf_counter", lambda: next(clock))
  log = progress_lib.ProgressLog(metrics_writer.MetricsWriter(str(tmp_path), active=False), total_steps=4,
                                 images_per_step=8, start_step=0, stream=None)
  for step in (1, 2):
    log.record(step, {"loss": 1.0, "learning_rate": 0.1})
  log.exclude(25.0)  # ... after an evaluation of 25 s: 2 steps of 8 images in 5 s
  assert log.flush(2)["images_per_sec"] == pytest.approx(16 / 5.0)


def test_run_info_keeps_one_record_per_start(tmp_path):
  (tmp_path / run_info.RUN_INFO_FILE).write_text("{not json")  # damaged: started afresh
  first = run_info.record(str(tmp_path), command="train", step=0)
  second = run_info.record(str(tmp_path), command="train", step=8)
  assert run_info.read_runs(str(tmp_path)) == [first, second]
  assert {"jax", "jaxlib", "device_kind", "device_count", "process_count", "overfeat_jax"} <= set(first)


# ---------------------------------------------------------------------------------------------
# The classifier: train.py's periodic evaluation and evaluate.py log the same numbers the same way.

def test_the_classifiers_evaluation_during_training_matches_evaluate_py(tmp_path, digits_data_dir, capsys):
  from overfeat_jax.evaluation import run as evaluation
  from test_config import load_config

  config = load_config("quickstart")
  config.dataset.name = "digits_in_scenes/classification"
  config.dataset.data_dir = digits_data_dir
  config.input.batch_size = 4
  config.train.max_steps = 4
  config.train.log_every = 1
  config.train.eval_every = 2
  config.train.eval_num_examples = 4  # the first 4 test images, in one padded batch of 4
  # One scale and one shape bucket: one short compile.
  config.eval.scales = ((64, 64),)
  config.eval.multi_scales = (0,)
  config.eval.aspect_buckets = (2.0,)
  config.input.eval_batch_size = 4
  workdir = tmp_path / "run"
  assert evaluation.periodic_evaluation(tiny_training.tiny_config()) is None  # eval_every = 0: none
  loop.run(config, str(workdir), evaluate=evaluation.periodic_evaluation(config))
  out = capsys.readouterr().out
  assert re.search(r"^eval at step 2: top-1 error [\d.]+% \(1 scales \(64x64\), fine stride\) on 4 examples "
                   r"of test, [\d.]+ s$", out, re.M), out
  records = read_records(workdir)
  evaluated = {r["step"]: r for r in records if "eval/multi_scale/top1_error" in r}
  assert sorted(evaluated) == [2, 4]
  rows = ("centre_crop", "ten_views", "one_scale_coarse", "one_scale_fine", "multi_scale",
          "multi_scale_flips")
  assert set(evaluated[4]) == {"step"} | {f"eval/{row}/{metric}" for row in rows
                                          for metric in ("top1_error", "top5_error")}
  assert list(evaluated[4])[1] == "eval/multi_scale/top1_error"  # the headline, quoted by the summary
  for key, value in evaluated[4].items():
    assert key == "step" or (value * 4 / 100).is_integer()  # errors count whole examples of the 4
  assert tensorboard_scalars(workdir) == jsonl_scalars(workdir / "metrics.jsonl")
  assert out.splitlines()[-1].startswith(
      f"done: step 4/4, loss {records[-2]['loss']:.4g} (step 4), eval/multi_scale/top1_error "
      f"{evaluated[4]['eval/multi_scale/top1_error']:.4g} (step 4); checkpoints in {workdir / 'checkpoints'}")

  # evaluate.py on the same 4 examples of the final checkpoint: the same numbers, in workdir/eval.
  config.eval.num_examples = 4
  for _ in range(2):  # evaluating a step again replaces its record
    result = evaluation.run(config, str(workdir))
  eval_dir = workdir / "eval"
  assert read_records(eval_dir) == [evaluated[4]]
  assert tensorboard_scalars(eval_dir) == jsonl_scalars(eval_dir / "metrics.jsonl")
  assert len(event_files(eval_dir)) == 2
  assert result["checkpoint_step"] == 4
  assert json.loads((eval_dir / "metrics.json").read_text())["checkpoint_step"] == 4
  runs = json.loads((eval_dir / "run_info.json").read_text())["runs"]
  assert [(r["command"], r["step"]) for r in runs] == [("evaluate", 4)] * 2
  top1 = result["rows"]["N scales, fine stride"]["top1_error"]
  assert capsys.readouterr().out.splitlines()[-1] == (
      f"done: checkpoint step 4, top-1 error {top1:.2f}% (1 scales (64x64), fine stride) on 4 examples of "
      f"test; metrics in {eval_dir / 'metrics.json'}, {eval_dir / 'metrics.jsonl'} and TensorBoard "
      f"(tensorboard --logdir {workdir})")
