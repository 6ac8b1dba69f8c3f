"""The paper's ablations (SPEC B6) on one dataset: which models to train, how each row evaluates one,
and the table. `python -m overfeat_jax.ablations` is the command.

Each row of the table is a model and a test setting (`ROWS`):
  - the training rows train a Faster R-CNN config variant (`TRAININGS`: approximate joint training
    with shared features, the baseline; unshared features; exact joint; 4-step alternating) with the
    shared training loop, each in its own work directory `<workdir>/train/<training>`;
  - the test-time rows evaluate the baseline's model with other faster_rcnn.test settings, as the
    paper's table evaluates one trained net with other test proposals: 6,000 without NMS, the top
    100, random proposals (no `cls`), anchors as proposals (no `reg`);
  - the OverFeat row trains and evaluates the OverFeat detector (SPEC A6) of a detection config on
    the same data, or evaluates a run given by its work directory.
Every Faster R-CNN row goes through `evaluation.faster_rcnn.Evaluator` (COCO AP by pycocotools, the
first eval.num_examples test images), the OverFeat row through evaluate.py's `evaluation.run.run`.

Resumable: a training resumes from its newest checkpoint (the loop's own resume), and is skipped
once finished with the same config; a row's result is kept in `<workdir>/rows/<row>.json` with the
config it was evaluated with, and skipped when that config has not changed. Training time is this
process's CPU time (all threads, compilation included) and wall time around the training loop,
summed over the sessions that trained it (`<training workdir>/study_time.json`; a kill -9 loses
its session's time, a Ctrl-C does not, a session that only restored a finished training is not
counted). The table goes to `<workdir>/ablations.md` and
`<workdir>/ablations.json`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from overfeat_jax import checkpoint_io, files
from overfeat_jax.config import validate_config
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.evaluation import faster_rcnn as frcnn_eval
from overfeat_jax.evaluation import run as evaluation_run
from overfeat_jax.tasks import faster_rcnn as frcnn_task
from overfeat_jax.training import loop

OVERFEAT = "overfeat"  # the OverFeat detector's training (its own config)
BASELINE = "approximate_joint"  # the training whose model the test-time rows evaluate
# Faster R-CNN trainings: name -> faster_rcnn overrides of the study's config.
TRAININGS: dict[str, dict[str, Any]] = {
    "approximate_joint": {"training": "approximate_joint", "shared_features": True},
    "unshared": {"training": "approximate_joint", "shared_features": False},
    "joint": {"training": "joint", "shared_features": True},
    "alternating": {"training": "alternating", "shared_features": True},
}
# Under the table when a test-time row is in it: the paper's figures for those rows are of another
# detector than its "shared" row's (Faster R-CNN's Table 2).
PAPER_NOTE = ("The paper's test-time ablations (no NMS, top 100, no cls, no reg) evaluate a Fast R-CNN "
              "detector trained on Selective Search proposals, at 56.8% with the top 300 RPN proposals; "
              "its shared and unshared rows are trained with RPN proposals.")
TIME_FILE = "study_time.json"
ROWS_DIR = "rows"
TABLE_MD, TABLE_JSON = "ablations.md", "ablations.json"


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the table.

  Attributes:
    name: its --rows name (and `<workdir>/rows/<name>.json`).
    method: the table's method cell.
    training: the model it evaluates: a key of TRAININGS, or OVERFEAT.
    test: faster_rcnn.test overrides (the test-time rows); "post_nms" also sets pre_nms up to it.
    paper: SPEC B6's figure for it (ZF on VOC 2007, mAP %), "" where the paper gives none.
  """
  name: str
  method: str
  training: str
  test: tuple[tuple[str, Any], ...] = ()
  paper: str = ""


ROWS: tuple[Row, ...] = (
    Row("shared", "Faster R-CNN, shared features (approximate joint training)", BASELINE, paper="59.9"),
    Row("unshared", "unshared features: the RPN has its own backbone", "unshared", paper="58.7"),
    Row("no_nms", "shared model, test proposals without NMS", BASELINE,
        (("post_nms", 6000), ("proposal_nms_iou", 1.0)), paper="55.2"),
    Row("top_100", "shared model, top-100 test proposals", BASELINE, (("post_nms", 100),), paper="55.1"),
    Row("random_1000", "shared model, no cls: random test proposals", BASELINE,
        (("post_nms", 1000), ("proposal_ranking", "random"), ("proposal_nms_iou", 1.0)), paper="55.8"),
    Row("random_100", "shared model, no cls: random test proposals", BASELINE,
        (("post_nms", 100), ("proposal_ranking", "random"), ("proposal_nms_iou", 1.0)), paper="44.6"),
    Row("no_reg", "shared model, no reg: anchors as test proposals", BASELINE,
        (("rpn_box_regression", False),), paper="52.1"),
    Row("exact_joint", "exact joint training (gradients through the proposals)", "joint"),
    Row("alternating", "4-step alternating training", "alternating"),
    Row(OVERFEAT, "OverFeat detector (SPEC A6), same data", OVERFEAT),
)
ROW_NAMES = tuple(r.name for r in ROWS)


def select_rows(names: Sequence[str] | None) -> list[Row]:
  """The rows named (all for None or empty), in the table's order.

  Raises:
    ConfigError: an unknown name (one line listing the known ones).
  """
  if not names:
    return list(ROWS)
  unknown = [n for n in names if n not in ROW_NAMES]
  if unknown:
    raise ConfigError(f"unknown ablation row(s) {', '.join(unknown)}; the rows are {', '.join(ROW_NAMES)}")
  return [r for r in ROWS if r.name in names]


# ----------------------------------------------------------------------------------------------
# Configs.

def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def training_config(config: ml_collections.ConfigDict, training: str, *, steps: int,
                    examples: int) -> ml_collections.ConfigDict:
  """The Faster R-CNN `config` as TRAININGS[training] trains it: `steps` > 0 sets train.max_steps,
  `examples` > 0 eval.num_examples; no evaluation during training (its time is not training's)."""
  out = _copy(config)
  for key, value in TRAININGS[training].items():
    out.faster_rcnn[key] = value
  if steps:
    out.train.max_steps = steps
  if examples:
    out.eval.num_examples = examples
  out.train.eval_every = 0
  return out


def row_config(config: ml_collections.ConfigDict, row: Row, *, steps: int,
               examples: int) -> ml_collections.ConfigDict:
  """The config `row` evaluates with: its training's, then its test overrides, at one test size
  (test.size_factor; no test.extra_size_factors). A row with more test proposals than the config
  evaluates a smaller batch (the RoIs per batch stay about as many)."""
  out = training_config(config, row.training, steps=steps, examples=examples)
  test = out.faster_rcnn.test
  # The rows compare proposals at one test size, as the paper's table: test.size_factor's alone.
  test.extra_size_factors, test.box_voting_iou = (), 0.0
  base_post, base_batch = test.post_nms, out.input.eval_batch_size
  for key, value in row.test:
    test[key] = value
  test.pre_nms = max(test.pre_nms, test.post_nms)
  if test.post_nms > base_post:
    out.input.eval_batch_size = max(1, min(base_batch, base_batch * base_post // test.post_nms))
  return out


def overfeat_config(detection_config: ml_collections.ConfigDict, *, examples: int
                    ) -> ml_collections.ConfigDict:
  """The OverFeat detection config as the study runs it (eval.num_examples from `examples` > 0)."""
  out = _copy(detection_config)
  if examples:
    out.eval.num_examples = examples
  out.train.eval_every = 0
  return out


def proposals_cell(row: Row, config: ml_collections.ConfigDict) -> str:
  """The table's proposals cell, e.g. "300", "6,000, no NMS", "1,000 random, no NMS", "300 anchors"."""
  if row.training == OVERFEAT:
    scales = ", ".join(str(s) for s in config.detection.test_scales)
    return f"dense windows at {len(config.detection.test_scales)} scales ({scales})"
  test = config.faster_rcnn.test
  cell = f"{test.post_nms:,}"
  if test.proposal_ranking == "random":
    cell += " random"
  if not test.rpn_box_regression:
    cell += " anchors"
  if test.proposal_nms_iou >= 1.0:
    cell += ", no NMS"
  return cell


def _as_json(config: ml_collections.ConfigDict) -> Any:
  return json.loads(json.dumps(config.to_dict()))


def evaluation_key(config: ml_collections.ConfigDict) -> str:
  """What a Faster R-CNN evaluation depends on: the config but how it trains (the training scheme,
  the optimizer, the training length); rows with the same key share one compiled evaluation."""
  tree = _as_json(config)
  tree["faster_rcnn"].pop("training")
  for key in ("optimizer", "train"):
    tree.pop(key)
  return json.dumps(tree, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Training, timed and resumable.

def _read_json(path: str) -> Any | None:
  """The JSON in `path`, or None where there is none (missing, or cut short by a kill)."""
  try:
    return json.loads(files.read_text(path))
  except (OSError, ValueError):
    return None


def check_classifier(workdir: str, key: str) -> None:
  """CheckpointError (one line) unless the classification run in `workdir` has a checkpoint."""
  try:
    checkpoint_io.read_signature(workdir)
  except CheckpointError:
    raise CheckpointError(
        f"the ablations start from the classifier in {workdir} ({key}), which has no checkpoint: train it "
        f"first (python train.py --config configs/quickstart.py --workdir {workdir})") from None


def counted(sessions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The training sessions whose time counts: not one that ended at the step where a complete
  session before it ended (a rerun that only restored a finished training, e.g. after a config
  change that needed new evaluations only)."""
  out = []
  for i, session in enumerate(sessions):
    before = sessions[i - 1] if i else None
    if before is None or before["stopped"] or before["to_step"] != session["to_step"]:
      out.append(session)
  return out


def training_record(workdir: str) -> dict[str, Any] | None:
  """`<workdir>/study_time.json` with its totals ("cpu_s", "wall_s") over the `counted` sessions;
  None where there is none (a training run elsewhere)."""
  record = _read_json(os.path.join(workdir, TIME_FILE))
  if record is None:
    return None
  sessions = counted(record["sessions"])
  return {**record, "cpu_s": round(sum(s["cpu_s"] for s in sessions), 1),
          "wall_s": round(sum(s["wall_s"] for s in sessions), 1)}


def train_timed(config: ml_collections.ConfigDict, workdir: str, *,
                log: Callable[[str], None]) -> int | None:
  """Trains `config` in `workdir` (resuming; skipped when a finished session of the same config is
  recorded) and adds this session's time to `<workdir>/study_time.json` ({"config", "done", "step",
  "sessions": [{"cpu_s", "wall_s", "to_step", "stopped", "ended"}, ...]}; `training_record`).

  Returns:
    The signal that stopped the training, or None.
  """
  path = os.path.join(workdir, TIME_FILE)
  record = _read_json(path)
  current = _as_json(config)
  if record is not None and record.get("done") and record.get("config") == current:
    log(f"  {workdir}: trained before ({record['step']} steps), skipped")
    return None
  if record is None or record.get("config") != current:
    # Another config (e.g. more steps): its sessions still count if the loop resumes them.
    record = {"sessions": [] if record is None else record.get("sessions", [])}
  cpu, wall = time.process_time(), time.perf_counter()
  result = loop.run(config, workdir)
  session = {"cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1),
             "to_step": int(result.step), "stopped": result.stopped_by is not None,
             "ended": datetime.datetime.now().isoformat(timespec="seconds")}
  record = {"config": current, "done": result.stopped_by is None, "step": int(result.step),
            "sessions": record["sessions"] + [session]}
  files.replace_file(path, json.dumps(record, indent=2) + "\n")
  return result.stopped_by


def _steps(count: int) -> str:
  return f"{count:,} step{'' if count == 1 else 's'}"


def time_cell(record: dict[str, Any] | None, training: str, *, own: bool) -> str:
  """The table's training-time cell of a row (`own`: the row trained the model itself)."""
  if record is None:
    return "trained before (time not measured here)"
  steps = _steps(record["step"])
  if training == "alternating":
    steps = f"4 x {steps}"
  cell = f"{steps}: {record['cpu_s']:,.0f} s CPU, {record['wall_s']:,.0f} s wall"
  return cell if own else f"(the shared model: {cell})"


# ----------------------------------------------------------------------------------------------
# The study.

def _summary(result: dict[str, Any]) -> dict[str, Any]:
  """What a row keeps of an evaluator's result: AP@0.5, AP@[.5:.95], VOC07 mAP (fractions), etc."""
  out = {"AP50": result["coco"]["AP50"], "AP": result["coco"]["AP"], "mAP07": result["voc"]["mAP07"],
         "num_images": result["num_images"], "checkpoint_step": result["checkpoint_step"],
         "eval_seconds": result.get("seconds")}
  if "proposals" in result:
    out["proposal_recall"] = result["proposals"]["recall"]
  return out


def _percent(value: float) -> str:
  return "n/a" if value < 0 else f"{100 * value:.2f}%"


def format_table(entries: Sequence[dict[str, Any]], header: str) -> str:
  """The markdown table (SPEC B6's layout: method / proposals / AP@0.5 / AP@[.5:.95] / training time,
  and the paper's figure) under `header`, and PAPER_NOTE under it when a test-time row is there."""
  lines = [header, "",
           "| method | proposals | AP@0.5 | AP@[.5:.95] | training time | paper (ZF, VOC07 mAP) |",
           "|---|---|---|---|---|---|"]
  for e in entries:
    paper = f"{e['paper']}%" if e["paper"] else "-"
    lines.append(f"| {e['method']} | {e['proposals']} | {_percent(e['AP50'])} | {_percent(e['AP'])} | "
                 f"{e['training_time']} | {paper} |")
  if any(e["training"] == BASELINE and e["row"] != "shared" for e in entries):
    lines += ["", PAPER_NOTE]
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class StudyResult:
  """entries: one dict per row evaluated (table order); table: the markdown; stopped_by: the signal
  that stopped a training (the table is then not written), else None."""
  entries: list[dict[str, Any]]
  table: str
  stopped_by: int | None


def run_study(config: ml_collections.ConfigDict, workdir: str, *, rows: Sequence[str] | None = None,
              steps: int = 0, examples: int = 0,
              detection_config: ml_collections.ConfigDict | None = None,
              detection_workdir: str = "", log: Callable[[str], None] = print) -> StudyResult:
  """Trains what the selected rows need, evaluates each row, writes and returns the table.

  Args:
    config: the Faster R-CNN config (e.g. configs/faster_rcnn_quickstart.py).
    workdir: the study's directory (train/<training>/, rows/, ablations.md, ablations.json).
    rows: ROW_NAMES to run (None: all).
    steps: training steps of each Faster R-CNN training (0: the config's length; 4-step alternating
      trains each of its steps this long).
    examples: the first N test images (0: config.eval.num_examples').
    detection_config: the OverFeat detection config (needed for the "overfeat" row).
    detection_workdir: an OverFeat detection run to evaluate instead of training one in
      <workdir>/train/overfeat (its eval/ files are rewritten, as evaluate.py does).
  Raises:
    ConfigError: an unknown row, a config that does not validate, or no detection_config for the
      OverFeat row. CheckpointError: a classifier the trainings start from (or detection_workdir) has
      no checkpoint. And the training loop's and evaluators' one-line errors.
  """
  selected = select_rows(rows)
  trainings = list(dict.fromkeys(r.training for r in selected))
  if config.task != "faster_rcnn":
    raise ConfigError(f"the ablations need a Faster R-CNN config (config.task 'faster_rcnn'), not "
                      f"{config.task!r}")
  configs = {r.name: row_config(config, r, steps=steps, examples=examples)
             for r in selected if r.training != OVERFEAT}
  if OVERFEAT in trainings:
    if detection_config is None:
      raise ConfigError("the overfeat row needs a detection config (--detection_config)")
    configs[OVERFEAT] = overfeat_config(detection_config, examples=examples)
  for c in configs.values():
    validate_config(c)
  # The prerequisite of every training, before any of them starts.
  if any(t != OVERFEAT for t in trainings) and config.faster_rcnn.backbone_init == "classifier":
    check_classifier(config.faster_rcnn.backbone_weights, "faster_rcnn.backbone_weights")
  if OVERFEAT in trainings:
    if detection_workdir:
      checkpoint_io.read_signature(detection_workdir)  # one line when it has no checkpoint
    else:
      check_classifier(configs[OVERFEAT].detection.classifier_workdir, "detection.classifier_workdir")

  def row_path(row: Row) -> str:
    return os.path.join(workdir, ROWS_DIR, f"{row.name}.json")

  def finished(row: Row) -> dict[str, Any] | None:
    saved = _read_json(row_path(row))
    return saved if saved is not None and saved.get("config") == _as_json(configs[row.name]) else None

  entries: dict[str, dict[str, Any]] = {}
  evaluators: dict[str, frcnn_eval.Evaluator] = {}  # one compiled evaluation per test setting
  for training in trainings:
    mine = [r for r in selected if r.training == training]
    pending = [r for r in mine if finished(r) is None]
    for r in mine:
      if r not in pending:
        log(f"row {r.name}: evaluated before, kept")
        entries[r.name] = finished(r)
    if not pending:
      continue
    log(f"training {training} for row(s) {', '.join(r.name for r in pending)}")
    if training == OVERFEAT and detection_workdir:
      stopped, train_dir = None, detection_workdir
    else:
      train_dir = os.path.join(workdir, "train", training)
      train_config = (configs[OVERFEAT] if training == OVERFEAT else
                      training_config(config, training, steps=steps, examples=examples))
      stopped = train_timed(train_config, train_dir, log=log)
    if stopped is not None:
      return StudyResult(entries=[entries[r.name] for r in selected if r.name in entries], table="",
                         stopped_by=stopped)
    if training != OVERFEAT:
      params, step = frcnn_task.restore_params(configs[pending[0].name], train_dir)
    for r in pending:
      row_cfg = configs[r.name]
      log(f"row {r.name}: evaluating ({proposals_cell(r, row_cfg)} proposals)")
      if training == OVERFEAT:
        result = evaluation_run.run(row_cfg, train_dir, verbose=False)
      else:
        key = evaluation_key(row_cfg)
        if key not in evaluators:
          evaluators[key] = frcnn_eval.Evaluator(row_cfg)
        evaluator = evaluators[key]
        result, _ = evaluator.run(evaluator.params(params), step=step, verbose=False)
      entry = {"row": r.name, "method": r.method, "proposals": proposals_cell(r, row_cfg),
               "training": training, "train_workdir": files.absolute(train_dir), "paper": r.paper,
               **_summary(result), "config": _as_json(row_cfg)}
      files.replace_file(row_path(r), json.dumps(entry, indent=2) + "\n")
      log(f"row {r.name}: AP@0.5 {_percent(entry['AP50'])}, AP@[.5:.95] {_percent(entry['AP'])} on "
          f"{entry['num_images']} images")
      entries[r.name] = entry
  ordered = []
  for r in selected:  # the training times as recorded now (a rerun may have trained more)
    record = training_record(entries[r.name]["train_workdir"])
    ordered.append({**entries[r.name], "train_record": record, "training_time": time_cell(
        record, r.training, own=r.test == () or r.training == OVERFEAT)})
  title = header(config, selected, configs, steps=steps)
  table = format_table(ordered, title)
  files.replace_file(os.path.join(workdir, TABLE_MD), table + "\n")
  files.replace_file(os.path.join(workdir, TABLE_JSON), json.dumps(
      {"header": title, "rows": [{k: v for k, v in e.items() if k != "config"} for e in ordered]},
      indent=2) + "\n")
  return StudyResult(entries=ordered, table=table, stopped_by=None)


def header(config: ml_collections.ConfigDict, rows: Sequence[Row],
           configs: dict[str, ml_collections.ConfigDict], *, steps: int) -> str:
  """The table's title: the data, the training length, the test images, the date."""
  some = configs[rows[0].name]
  images = (f"the first {some.eval.num_examples:,} images" if some.eval.num_examples
            else "all images")
  length = (_steps(steps) if steps else _steps(config.train.max_steps) if config.train.max_steps
            else f"{config.train.num_epochs} epochs")
  return (f"Ablations (SPEC B6) on {config.dataset.name}: each Faster R-CNN training {length} of "
          f"batch {config.input.batch_size} (4-step alternating: as many in each of its 4 steps); "
          f"test: {images} of {config.dataset.eval_split}; AP@0.5 and AP@[.5:.95] are COCO's "
          "(pycocotools); training time: CPU seconds of the process (all threads; compilation and "
          f"data loading included) and wall seconds; measured {datetime.date.today().isoformat()}.")
