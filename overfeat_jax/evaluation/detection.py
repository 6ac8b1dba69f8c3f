"""Detection evaluation for every detector (SPEC A6, B6): one host-side evaluator of padded batches.

A detector only supplies a predict function (usually jitted) from an eval batch to fixed-shape,
padded predictions; `DetectionEvaluator` accumulates them on the host in numpy, turns them and the
batch's ground truth into COCO-format dicts in original-image pixels, and reports
  - COCO's 12 summary numbers (pycocotools, `coco.coco_evaluate`),
  - VOC 2007 11-point AP and VOC area AP at IoU 0.5 per class and their means (`voc.voc_evaluate`),
  - a per-class table, `<workdir>/eval/metrics.json` and `<workdir>/eval/detections.json` (COCO
    results format), both written atomically.

Rules at the edges:
  - A ground-truth box with zero (or negative) width or height is dropped, with a warning counting
    them: no detection can overlap it, so it would only stand as an unmatchable positive.
    (`coco_evaluate` / `voc_evaluate` called directly keep such boxes, as pycocotools does.)
  - A predicted box with x2 < x1 (or y2 < y1) is made zero-width (zero-height) at x1 (y1): it
    matches nothing and stays a false positive.
  - An image without objects is evaluated like any other: all its detections are false positives.
  - A class without positives (e.g. a dataset with no boxes at all) has AP UNDEFINED (-1) in every
    column and is left out of the means; a mean over no class is -1 too. Never an exception.
  - `difficult` objects: ignored by the VOC APs (neither TP nor FP, not counted); pycocotools has no
    such notion, so COCO counts them as ordinary objects. `iscrowd` objects: COCO's ignore regions,
    and ignored like difficult ones by the VOC APs.
  - COCO's APs/APm/APl use the box area in original pixels (official COCO files give the mask area).
  - Predictions on padding examples (batch "valid" False) are discarded; an image id seen twice is a
    DataError.
With several processes, each evaluator sees only its own process's images (it never gathers):
metrics are those of that shard, and only one process should pass a `workdir`.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from overfeat_jax import files, multihost
from overfeat_jax.errors import DataError, WorkdirError
from overfeat_jax.evaluation import outputs
from overfeat_jax.evaluation.coco import STAT_NAMES, UNDEFINED, coco_evaluate
from overfeat_jax.evaluation.voc import voc_evaluate

Batch = Mapping[str, Any]
PredictFn = Callable[[Batch], Mapping[str, Any]]


def _get(tree: Mapping[str, Any], key: str, what: str) -> np.ndarray:
  if key not in tree:
    raise DataError(f"{what} has no {key!r} (it has {sorted(tree)})")
  return np.asarray(tree[key])


def _boxes(tree: Mapping[str, Any], name: str) -> np.ndarray:
  boxes = _get(tree, "boxes", f"the {name}")
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise DataError(f"{name}['boxes'] has shape {boxes.shape}, expected [B, N, 4]")
  return boxes


def _check_shape(array: np.ndarray, shape: tuple[int, ...], name: str) -> None:
  if array.shape != shape:
    raise DataError(f"{name} has shape {array.shape}, expected {shape}")


def to_original_pixels(boxes: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """Network-input boxes -> original-image boxes.

  Args:
    boxes: [N, 4] (x1, y1, x2, y2) in pixels of the network input.
    scale: [2] (sy, sx): network-input pixels per original pixel (the network input is the original
      image resized by this factor and padded at the bottom / right, never cropped).
  Returns:
    [N, 4] float64 (x1 / sx, y1 / sy, x2 / sx, y2 / sy).
  """
  sy, sx = np.asarray(scale, np.float64)
  return np.asarray(boxes, np.float64).reshape(-1, 4) / np.array([sx, sy, sx, sy])


def _xywh(box: np.ndarray) -> list[float]:
  x1, y1, x2, y2 = (float(v) for v in box)
  return [x1, y1, x2 - x1, y2 - y1]


class DetectionEvaluator:
  """Accumulates padded per-batch detector outputs on the host; computes and writes the metrics.

  `add(predictions, batch)` takes, for a batch of B examples (numpy or jax arrays):
    predictions: "boxes" [B, D, 4] (x1, y1, x2, y2) network-input pixels, "scores" [B, D] float,
      "classes" [B, D] int in [0, K), "valid" [B, D] bool (False: padding detection).
    batch (ground truth): "boxes" [B, M, 4] network-input pixels, "box_labels" [B, M] int in
      [0, K) where valid, "box_valid" [B, M] bool, optional "difficult" / "iscrowd" [B, M] bool,
      "image_id" [B] int, "original_size" [B, 2] int (original height, width), optional "valid" [B]
      bool (False: a padding example of the last batch; default all True), optional "scale" [B]
      or [B, 2] (sy, sx) float: network-input pixels per original pixel (default 1), see
      `to_original_pixels`.
  Class k is COCO category `category_ids[k]` (default k) in the COCO dicts and detections.json.
  """

  def __init__(self, class_names: Sequence[str], *, category_ids: Sequence[int] | None = None):
    self.class_names = tuple(str(n) for n in class_names)
    self.category_ids = tuple(int(c) for c in (range(len(self.class_names)) if category_ids is None
                                               else category_ids))
    if not self.class_names or len(set(self.class_names)) != len(self.class_names):
      raise ValueError(f"DetectionEvaluator: class names must be non-empty and distinct: "
                       f"{self.class_names}")
    if len(self.category_ids) != len(self.class_names) or len(set(self.category_ids)) != len(
        self.category_ids):
      raise ValueError("DetectionEvaluator: category_ids must be distinct, one per class")
    self.reset()

  def reset(self) -> None:
    """Forgets everything added."""
    self._images: list[dict[str, int]] = []
    self._annotations: list[dict[str, Any]] = []
    self._detections: list[dict[str, Any]] = []
    self._image_ids: set[int] = set()
    self._dropped: list[int] = []  # image id of each dropped degenerate ground-truth box

  @property
  def num_images(self) -> int:
    return len(self._images)

  def add(self, predictions: Mapping[str, Any], batch: Batch) -> None:
    """Adds one batch (shapes in the class docstring).

    Raises:
      DataError: a missing key, a shape that disagrees, a class outside [0, K), non-finite predicted
        boxes or scores, or an image id added before (each names the image).
    """
    image_ids = _get(batch, "image_id", "the batch").astype(np.int64).reshape(-1)
    (b,) = image_ids.shape
    valid = np.asarray(batch.get("valid", np.ones(b, bool)), bool)
    sizes = _get(batch, "original_size", "the batch")
    gt_boxes = _boxes(batch, "batch")
    m = gt_boxes.shape[1]
    gt_labels = _get(batch, "box_labels", "the batch")
    gt_valid = _get(batch, "box_valid", "the batch").astype(bool)
    difficult = np.asarray(batch.get("difficult", np.zeros((b, m), bool)), bool)
    iscrowd = np.asarray(batch.get("iscrowd", np.zeros((b, m), bool)), bool)
    scale = np.asarray(batch.get("scale", np.ones(b)), np.float64)
    scale = np.repeat(scale[:, None], 2, axis=1) if scale.ndim == 1 else scale
    boxes = _boxes(predictions, "predictions")
    d = boxes.shape[1]
    scores = _get(predictions, "scores", "the predictions")
    classes = _get(predictions, "classes", "the predictions")
    pred_valid = _get(predictions, "valid", "the predictions").astype(bool)
    for array, shape, name in [
        (valid, (b,), "batch['valid']"), (sizes, (b, 2), "batch['original_size']"),
        (scale, (b, 2), "batch['scale']"), (gt_boxes, (b, m, 4), "batch['boxes']"),
        (gt_labels, (b, m), "batch['box_labels']"), (gt_valid, (b, m), "batch['box_valid']"),
        (difficult, (b, m), "batch['difficult']"), (iscrowd, (b, m), "batch['iscrowd']"),
        (boxes, (b, d, 4), "predictions['boxes']"), (scores, (b, d), "predictions['scores']"),
        (classes, (b, d), "predictions['classes']"), (pred_valid, (b, d), "predictions['valid']")]:
      _check_shape(array, shape, name)
    for i in np.flatnonzero(valid):
      self._add_image(int(image_ids[i]), sizes[i], scale[i],
                      gt=(gt_boxes[i][gt_valid[i]], gt_labels[i][gt_valid[i]],
                          difficult[i][gt_valid[i]], iscrowd[i][gt_valid[i]]),
                      pred=(boxes[i][pred_valid[i]], scores[i][pred_valid[i]],
                            classes[i][pred_valid[i]]))

  def _category(self, label: int, image_id: int, what: str) -> int:
    if not 0 <= label < len(self.class_names):
      raise DataError(f"image id {image_id}: {what} class {label} is outside [0, "
                      f"{len(self.class_names)}) for {len(self.class_names)} classes")
    return self.category_ids[label]

  def _add_image(self, image_id: int, size: np.ndarray, scale: np.ndarray, *,
                 gt: tuple[np.ndarray, ...], pred: tuple[np.ndarray, ...]) -> None:
    """One real example: gt = (boxes [G, 4], labels [G], difficult [G], iscrowd [G]),
    pred = (boxes [P, 4], scores [P], classes [P]), all already without padding."""
    if image_id in self._image_ids:
      raise DataError(f"image id {image_id} was added to the detection evaluator twice")
    self._image_ids.add(image_id)
    self._images.append({"id": image_id, "height": int(size[0]), "width": int(size[1])})
    gt_boxes, labels, difficult, iscrowd = gt
    for box, label, diff, crowd in zip(to_original_pixels(gt_boxes, scale), labels, difficult,
                                       iscrowd):
      category_id = self._category(int(label), image_id, "ground-truth")
      if not (box[2] > box[0] and box[3] > box[1]):
        self._dropped.append(image_id)
        continue
      bbox = _xywh(box)
      self._annotations.append({
          "id": len(self._annotations) + 1, "image_id": image_id, "category_id": category_id,
          "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": int(crowd), "difficult": int(diff)})
    boxes, scores, classes = pred
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
      raise DataError(f"image id {image_id}: the predictions hold non-finite boxes or scores")
    boxes = to_original_pixels(boxes, scale)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])  # inverted boxes -> zero size
    for box, score, label in zip(boxes, scores, classes):
      self._detections.append({"image_id": image_id,
                               "category_id": self._category(int(label), image_id, "predicted"),
                               "bbox": _xywh(box), "score": float(score)})

  def gather(self) -> None:
    """Makes this evaluator hold what every process added (a collective: all processes call it at
    the same point; nothing happens with one process). Each process adds only its share of the
    images (`detection_eval_loader` splits them), so without this a multi-process evaluation would
    score process 0's share alone."""
    if jax.process_count() == 1:
      return  # nothing to gather (and no need to serialise every detection)
    mine = json.dumps([self._images, self._annotations, self._detections, self._dropped]).encode()
    parts = [json.loads(part) for part in multihost.gather_bytes(mine)]
    self.reset()
    for images, anns, detections, dropped in parts:
      for image in images:
        if image["id"] in self._image_ids:
          raise DataError(f"image id {image['id']} was evaluated by two processes")
        self._image_ids.add(image["id"])
      self._images += images
      # Annotation ids are numbered per process: renumber them for the whole.
      self._annotations += [{**a, "id": len(self._annotations) + i + 1} for i, a in enumerate(anns)]
      self._detections += detections
      self._dropped += dropped

  def ground_truth(self) -> dict[str, Any]:
    """The accumulated ground truth as a COCO-format dataset dict (original pixels)."""
    return {"images": list(self._images), "annotations": list(self._annotations),
            "categories": [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]}

  def detections(self) -> list[dict[str, Any]]:
    """The accumulated detections in COCO results format (original pixels), in the order added."""
    return list(self._detections)

  def compute(self) -> dict[str, Any]:
    """The metrics of everything added (nothing printed or written; AP values are fractions).

    Returns:
      {"num_images", "num_ground_truth" (boxes kept), "num_detections", "num_dropped_gt_boxes",
       "coco": {"stats": the 12 numbers, "AP", ..., "ARl", "summary": pycocotools' 12 lines},
       "voc": {"mAP07", "mAP"},
       "per_class": {name: {"category_id", "num_positives" (not difficult, not crowd),
                            "AP50_voc07", "AP50_voc", "AP_coco", "AP50_coco"}}};
      UNDEFINED (-1) wherever a number has no ground truth (module docstring).
    """
    if self._dropped:
      shown = ", ".join(str(i) for i in sorted(set(self._dropped))[:5])
      warnings.warn(f"dropped {len(self._dropped)} ground-truth boxes with zero width or height "
                    f"(image ids {shown}{', ...' if len(set(self._dropped)) > 5 else ''})",
                    stacklevel=2)
    gt, dets = self.ground_truth(), self.detections()
    coco = coco_evaluate(gt, dets)
    voc = voc_evaluate(gt, dets)
    per_class = {}
    for name, cid in zip(self.class_names, self.category_ids):
      v, c = voc["per_category"][cid], coco["per_category"][cid]
      per_class[name] = {"category_id": cid, "num_positives": v["num_positives"],
                         "AP50_voc07": v["AP07"], "AP50_voc": v["AP"],
                         "AP_coco": c["AP"], "AP50_coco": c["AP50"]}
    return {"num_images": len(self._images), "num_ground_truth": len(self._annotations),
            "num_detections": len(self._detections), "num_dropped_gt_boxes": len(self._dropped),
            "coco": {"stats": coco["stats"], **{k: coco[k] for k in STAT_NAMES},
                     "summary": coco["summary"]},
            "voc": {"mAP07": voc["mAP07"], "mAP": voc["mAP"]},
            "per_class": per_class}

  def run(self, predict_fn: PredictFn, batches: Iterable[Batch], *, workdir: str | None,
          verbose: bool = True, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluates `predict_fn` on `batches` from scratch: what a detector's evaluation calls.

    Args:
      predict_fn: batch -> predictions (class docstring; jax arrays are fetched to the host).
      batches: the eval batches of this process (each also the ground truth).
      workdir: where to write eval/metrics.json and eval/detections.json; None: write nothing.
      verbose: print the per-class table and COCO's summary.
      extra: entries put first in metrics.json (e.g. the checkpoint step).
    Returns:
      {**extra, **compute()}.
    Raises:
      DataError: see `add`. WorkdirError: a file could not be written (after printing the metrics).
    """
    self.reset()
    for batch in batches:
      self.add(predict_fn(batch), batch)
    self.gather()
    result = {**(extra or {}), **self.compute()}
    if verbose:
      print(format_report(result), flush=True)
    if workdir is not None:
      write_eval_files(workdir, result, self.detections())
    return result


def _pct(value: float) -> str:
  return "n/a" if value == UNDEFINED else f"{100 * value:.2f}"


def format_report(result: Mapping[str, Any]) -> str:
  """The per-class AP table (percent; n/a = no ground truth), its means and COCO's summary lines."""
  rows = [(name, str(r["num_positives"]), _pct(r["AP50_voc07"]), _pct(r["AP50_voc"]),
           _pct(r["AP_coco"])) for name, r in result["per_class"].items()]
  rows.append(("mean", str(sum(r["num_positives"] for r in result["per_class"].values())),
               _pct(result["voc"]["mAP07"]), _pct(result["voc"]["mAP"]),
               _pct(result["coco"]["AP"])))
  head = ("class", "#GT", "AP50 VOC07", "AP50 area", "COCO AP")
  widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

  def line(cells: Sequence[str]) -> str:  # class name left-aligned, numbers right-aligned
    return " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                      for i, (c, w) in enumerate(zip(cells, widths)))

  out = [line(head), "-+-".join("-" * w for w in widths), *map(line, rows[:-1]),
         "-+-".join("-" * w for w in widths), line(rows[-1]),
         f"{result['num_images']} images, {result['num_ground_truth']} ground-truth boxes, "
         f"{result['num_detections']} detections; COCO (pycocotools):", *result["coco"]["summary"]]
  return "\n".join(out)


def write_eval_files(workdir: str, result: Mapping[str, Any],
                     detections: Sequence[Mapping[str, Any]]) -> None:
  """Writes `workdir/eval/detections.json` (COCO results) and `workdir/eval/metrics.json`, each
  atomically (`files.replace_file`; `workdir` may be on cloud storage).

  Raises:
    WorkdirError: a file could not be written; the metrics are printed (as JSON, on stderr) first,
      so a computed evaluation is never lost.
  """
  try:
    files.replace_file(os.path.join(workdir, outputs.EVAL_SUBDIR, "detections.json"),
                       json.dumps(list(detections)))
    files.replace_file(outputs.metrics_path(workdir), json.dumps(dict(result), indent=2) + "\n")
  except WorkdirError as e:
    print(json.dumps(result, indent=1), file=sys.stderr, flush=True)
    raise WorkdirError(f"{e}; the metrics computed are printed above") from e
