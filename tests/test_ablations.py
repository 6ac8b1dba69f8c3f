"""The ablation study (SPEC B6) and its command: every row of the table from one command at test size,
the test-time rows on one trained model, a rerun that keeps what is done, the one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest

from model_helpers import random_variables
from overfeat_jax import ablation_study, ablations
from overfeat_jax.tasks import classification
from test_config import load_config
from test_pretrained import save_classifier

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
  """The work directory of a checkpoint of the quickstart classifier at 1/32 width (random weights):
  what both detectors start from."""
  config = load_config("quickstart")
  config.model.width = 1 / 32
  params = random_variables(classification.model_from_config(config), seed=6)["params"]
  workdir = str(tmp_path_factory.mktemp("classifier"))
  save_classifier(workdir, params, classification.model_signature(config), 5)
  return workdir


def command(data_dir: str, classifier: str, workdir: str) -> list[str]:
  """The command at test size: the quickstarts at 1/32 width on 64-128 px images, one training step
  each, 8 test images, few proposals (20 at test)."""
  frcnn = {"dataset.data_dir": data_dir, "input.min_size": 64, "input.max_size": 96,
           "input.batch_size": 4, "input.eval_batch_size": 8, "model.width": 1 / 32,
           "faster_rcnn.backbone_weights": classifier, "faster_rcnn.rpn_batch": 32,
           "faster_rcnn.train_pre_nms": 200, "faster_rcnn.train_post_nms": 40,
           "faster_rcnn.test.pre_nms": 200, "faster_rcnn.test.post_nms": 20,
           "faster_rcnn.test.recall_proposals": "(5,20)", "faster_rcnn.head_hidden": 16,
           "faster_rcnn.num_rois": 16, "train.log_every": 1, "train.checkpoint_every": 1}
  overfeat = {"dataset.data_dir": data_dir, "model.width": 1 / 32,
              "detection.classifier_workdir": classifier, "input.min_size": 64, "input.max_size": 128,
              "input.aspect_buckets": "(2.0,)", "input.batch_size": 4, "input.eval_batch_size": 4,
              "detection.train_scales": "(62,64)", "detection.test_scales": "(62,64)",
              "detection.hard_negatives": 3, "detection.random_negatives": 2,
              "detection.max_boxes_per_class": 32, "detection.max_detections": 20,
              "train.max_steps": 1, "train.checkpoint_every": 1, "train.log_every": 1}
  return (["--config", os.path.join(CONFIGS, "faster_rcnn_quickstart.py"), "--workdir", workdir,
           "--steps", "1", "--examples", "8",
           "--detection_config", os.path.join(CONFIGS, "detection_quickstart.py")]
          + [f"--config.{k}={v}" for k, v in frcnn.items()]
          + [f"--detection_config.{k}={v}" for k, v in overfeat.items()])


def run_command(argv: list[str]) -> tuple[int, str]:
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    status = ablations.main(argv)
  return status, out.getvalue()


@pytest.fixture(scope="module")
def study(digits_detection_data_dir, classifier, tmp_path_factory):
  """(workdir, argv, printed output) of the whole command at test size."""
  workdir = str(tmp_path_factory.mktemp("ablations"))
  argv = command(digits_detection_data_dir, classifier, workdir)
  status, output = run_command(argv)
  assert status == 0, output
  return workdir, argv, output


@pytest.mark.slow  # minutes on 2 cores: out of the default run (README, "The tests")
def test_the_table_has_every_row_and_the_test_time_rows_share_one_model(study):
  workdir, _, output = study
  table = json.load(open(os.path.join(workdir, "ablations.json")))
  rows = {r["row"]: r for r in table["rows"]}
  assert [r["row"] for r in table["rows"]] == list(ablation_study.ROW_NAMES)
  markdown = open(os.path.join(workdir, "ablations.md")).read()
  assert markdown.strip() in output  # printed as written
  lines = markdown.strip().splitlines()
  assert lines[0] == table["header"] and "first 8 images" in lines[0] and "training 1 step of" in lines[0]
  assert lines[2] == ("| method | proposals | AP@0.5 | AP@[.5:.95] | training time | paper (ZF, VOC07 "
                      "mAP) |")
  assert len(lines) == 4 + len(ablation_study.ROWS) + 2 and lines[-1] == ablation_study.PAPER_NOTE
  for line, row in zip(lines[4:-2], ablation_study.ROWS, strict=True):
    assert line.startswith(f"| {row.method} | {rows[row.name]['proposals']} | ")
  # One model per training: the test-time rows have none of their own.
  assert sorted(os.listdir(os.path.join(workdir, "train"))) == [
      "alternating", "approximate_joint", "joint", "overfeat", "unshared"]
  shared = rows["shared"]
  for name in ("no_nms", "top_100", "random_1000", "random_100", "no_reg"):
    assert rows[name]["train_workdir"] == shared["train_workdir"], name
    assert rows[name]["checkpoint_step"] == shared["checkpoint_step"] == 1
    assert rows[name]["training_time"] == f"(the shared model: {shared['training_time']})"
  assert {r["proposals"] for r in table["rows"] if r["row"] != "overfeat"} == {
      "20", "6,000, no NMS", "100", "1,000 random, no NMS", "100 random, no NMS", "20 anchors"}
  assert rows["overfeat"]["proposals"] == "dense windows at 2 scales (62, 64)"
  # Every model trained one step (4-step alternating: one per step), was timed and evaluated.
  assert rows["alternating"]["training_time"].startswith("4 x 1 step: ")
  for r in table["rows"]:
    assert r["num_images"] == 8 and -1 <= r["AP50"] <= 1 and -1 <= r["AP"] <= 1
    record = r["train_record"]
    assert record["done"] and record["step"] == 1 and record["cpu_s"] > 0 and record["wall_s"] > 0
  assert rows["shared"]["paper"] == "59.9" and rows["no_reg"]["paper"] == "52.1"


@pytest.mark.slow  # minutes on 2 cores: out of the default run (README, "The tests")
def test_a_rerun_keeps_the_finished_trainings_and_rows(study):
  workdir, argv, _ = study
  row_files = sorted(os.listdir(os.path.join(workdir, "rows")))
  stamps = {f: os.path.getmtime(os.path.join(workdir, "rows", f)) for f in row_files}
  status, output = run_command(argv)
  assert status == 0
  assert output.count("evaluated before, kept") == len(ablation_study.ROWS)
  assert not [line for line in output.splitlines() if line.startswith("training ")]  # none trained
  assert stamps == {f: os.path.getmtime(os.path.join(workdir, "rows", f)) for f in row_files}
  # Fewer test images: the rows evaluate again, on the same models; restoring a finished training
  # does not add to its training time. (Two rows of one compiled evaluation: each other test setting
  # would compile its own, and the first run has covered them.)
  before = {r["row"]: r for r in json.load(open(os.path.join(workdir, "ablations.json")))["rows"]}
  i = argv.index("--examples")
  status, output = run_command(argv[:i + 1] + ["4"] + argv[i + 2:] + ["--rows", "shared,exact_joint"])
  assert status == 0 and "evaluated before" not in output
  assert output.count(": evaluating (") == 2
  after = json.load(open(os.path.join(workdir, "ablations.json")))["rows"]
  assert [r["row"] for r in after] == ["shared", "exact_joint"]
  assert all(r["num_images"] == 4 for r in after)
  assert [r["training_time"] for r in after] == [before[r["row"]]["training_time"] for r in after]
  sessions = json.load(open(os.path.join(workdir, "train", "joint", "study_time.json")))["sessions"]
  assert len(sessions) == 2 and sessions[1]["to_step"] == sessions[0]["to_step"] == 1


def test_a_session_that_trained_nothing_does_not_count():
  session = lambda step, stopped=False: {"to_step": step, "stopped": stopped}
  counted = ablation_study.counted
  assert counted([session(500), session(500), session(800), session(800)]) == [session(500), session(800)]
  # After a stop, the next session goes on training (to the same last step, or further).
  assert counted([session(300, True), session(500)]) == [session(300, True), session(500)]
  assert counted([session(500, True), session(500)]) == [session(500, True), session(500)]


def test_the_row_configs():
  # Hand-computed from the quickstart: 300 test proposals of 2,000 in batches of 16.
  config = load_config("faster_rcnn_quickstart")
  rows = {r.name: r for r in ablation_study.ROWS}
  no_nms = ablation_study.row_config(config, rows["no_nms"], steps=500, examples=300)
  assert (no_nms.faster_rcnn.test.pre_nms, no_nms.faster_rcnn.test.post_nms) == (6000, 6000)
  assert no_nms.faster_rcnn.test.proposal_nms_iou == 1.0 and no_nms.input.eval_batch_size == 1
  assert no_nms.train.max_steps == 500 and no_nms.eval.num_examples == 300
  # One test size (the quickstart's own evaluation merges several).
  assert len(config.faster_rcnn.test.extra_size_factors) >= 1
  assert no_nms.faster_rcnn.test.extra_size_factors == () and no_nms.faster_rcnn.test.box_voting_iou == 0
  random = ablation_study.row_config(config, rows["random_1000"], steps=0, examples=0)
  assert random.faster_rcnn.test.proposal_ranking == "random" and random.input.eval_batch_size == 4
  assert random.faster_rcnn.test.pre_nms == 2000 and random.train.max_steps == config.train.max_steps
  top = ablation_study.row_config(config, rows["top_100"], steps=0, examples=0)
  assert top.faster_rcnn.test.post_nms == 100 and top.input.eval_batch_size == 16
  unshared = ablation_study.row_config(config, rows["unshared"], steps=0, examples=0)
  assert not unshared.faster_rcnn.shared_features and unshared.faster_rcnn.training == "approximate_joint"
  # Rows that differ in training only share a compiled evaluation; a test setting makes another.
  key = ablation_study.evaluation_key
  shared, joint, alternating = (ablation_study.row_config(config, rows[n], steps=0, examples=0)
                                for n in ("shared", "exact_joint", "alternating"))
  assert key(shared) == key(joint) == key(alternating) != key(top)
  assert key(shared) != key(unshared)
  assert config.faster_rcnn.test.post_nms == 300  # the caller's config is left as it was


def test_errors_are_one_line(tmp_path, capsys):
  argv = command(str(tmp_path / "data"), str(tmp_path / "no_classifier"), str(tmp_path / "study"))
  with pytest.raises(SystemExit) as info:
    run_command(argv + ["--rows", "shared,no_nms"])
  assert info.value.code == 2
  error = capsys.readouterr().err
  assert error.count("\n") == 1 and error.startswith(
      f"error: the ablations start from the classifier in {tmp_path / 'no_classifier'} "
      "(faster_rcnn.backbone_weights), which has no checkpoint: train it first")
  with pytest.raises(SystemExit):
    run_command(argv + ["--rows", "shared,best"])
  error = capsys.readouterr().err
  assert error == ("error: unknown ablation row(s) best; the rows are "
                   + ", ".join(ablation_study.ROW_NAMES) + "\n")
  assert not os.path.exists(tmp_path / "study" / "train")  # nothing started
