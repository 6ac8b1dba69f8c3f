"""COCO detection metrics (SPEC B6): the 12 summary numbers by pycocotools, never re-implemented.

Inputs are COCO-format Python objects held in memory (no files):
  ground truth  {"images": [{"id", "height", "width", ...}],
                 "annotations": [{"image_id", "category_id", "bbox": [x, y, w, h], "area"?,
                                  "iscrowd"?, "difficult"?, ...}],
                 "categories": [{"id", "name"?, ...}]}
  detections    [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]  (the COCO results format)
Boxes are [x, y, w, h] in pixels of the original image (COCO's convention; ours elsewhere is
(x1, y1, x2, y2) with w = x2 - x1, no "+1").

`UNDEFINED` (-1, COCO's own convention) stands where a number has no ground truth to be measured
against: a category without (non-crowd) ground-truth boxes has per-category AP -1 and does not enter
the means; when no category has any, every summary number is -1. Detections of such a category are
not counted as false positives anywhere in COCO's metrics.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from overfeat_jax.errors import DataError

UNDEFINED = -1.0  # A metric with no ground truth to measure against (COCO's own -1).

# COCOeval.stats, in COCOeval's order: AP averaged over IoU 0.50:0.05:0.95, at IoU 0.50 and 0.75, for
# small / medium / large objects (area < 32², < 96², above); then AR with at most 1, 10, 100
# detections per image, and AR (100 detections) for small / medium / large objects.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _box(value: Any, what: str) -> list[float]:
  """A COCO [x, y, w, h] as 4 finite floats with w, h >= 0, or DataError naming `what`."""
  try:
    box = [float(v) for v in value]
  except (TypeError, ValueError):
    box = []
  if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
    raise DataError(f"{what} has bbox {value!r}; expected [x, y, w, h]: 4 finite numbers, w, h >= 0")
  return box


def _field(record: Mapping[str, Any], key: str, what: str) -> Any:
  if not isinstance(record, Mapping) or key not in record:
    raise DataError(f"{what} has no {key!r}: {record!r}"[:300])
  return record[key]


def _ids(record: Mapping[str, Any], what: str, image_ids: set[int], category_ids: set[int]
         ) -> tuple[int, int]:
  """(image_id, category_id) of an annotation or detection, both known, or DataError naming them."""
  image_id = int(_field(record, "image_id", what))
  category_id = int(_field(record, "category_id", what))
  if image_id not in image_ids:
    raise DataError(f"{what} is for image id {image_id}, which is not in the ground truth's images")
  if category_id not in category_ids:
    raise DataError(f"{what} has category id {category_id}, not one of the ground truth's categories")
  return image_id, category_id


def check_ground_truth(ground_truth: Mapping[str, Any]) -> dict[str, Any]:
  """Validates COCO-format ground truth; returns a normalised copy (the input is never modified).

  The copy's annotations have int image / category ids, float bbox, `area` (w * h where absent: COCO
  files carry the mask area, ours the box area), `iscrowd` and `difficult` as 0/1 (0 where absent) and
  ids renumbered 1..N (pycocotools reads an annotation id 0 as "unmatched").
  Raises:
    DataError: a missing field, a duplicate image or category id, an annotation of an unknown image
      or category, a malformed box (names it).
  """
  for key in ("images", "annotations", "categories"):
    _field(ground_truth, key, "ground truth")
  images = [dict(im, id=int(_field(im, "id", "ground-truth image"))) for im in ground_truth["images"]]
  categories = [dict(c, id=int(_field(c, "id", "ground-truth category")))
                for c in ground_truth["categories"]]
  image_ids = {im["id"] for im in images}
  category_ids = {c["id"] for c in categories}
  if len(image_ids) != len(images) or len(category_ids) != len(categories):
    raise DataError("ground truth lists an image id or a category id twice")
  annotations = []
  for i, ann in enumerate(ground_truth["annotations"]):
    what = f"ground-truth annotation {i}"
    image_id, category_id = _ids(ann, what, image_ids, category_ids)
    box = _box(_field(ann, "bbox", what), what)
    annotations.append(dict(
        ann, id=i + 1, image_id=image_id, category_id=category_id, bbox=box,
        area=float(ann.get("area", box[2] * box[3])), iscrowd=int(bool(ann.get("iscrowd", 0))),
        difficult=int(bool(ann.get("difficult", 0)))))
  return {"images": images, "annotations": annotations, "categories": categories}


def check_detections(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
  """Validates COCO results against (checked) ground truth; returns normalised copies.

  Raises:
    DataError: a detection for an image id or category id the ground truth does not have (names the
      id), a missing field, a malformed box or a non-finite score.
  """
  image_ids = {im["id"] for im in ground_truth["images"]}
  category_ids = {c["id"] for c in ground_truth["categories"]}
  out = []
  for i, det in enumerate(detections):
    what = f"detection {i}"
    image_id, category_id = _ids(det, what, image_ids, category_ids)
    score = float(_field(det, "score", what))
    if not math.isfinite(score):
      raise DataError(f"{what} (image id {image_id}) has a non-finite score {score}")
    out.append({"image_id": image_id, "category_id": category_id,
                "bbox": _box(_field(det, "bbox", what), what), "score": score})
  return out


def _category_ap(precision: np.ndarray) -> float:
  """Mean of COCOeval's accumulated precision entries that are defined (> -1), else UNDEFINED."""
  defined = precision[precision > -1]
  return float(defined.mean()) if defined.size else UNDEFINED


def coco_evaluate(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]
                  ) -> dict[str, Any]:
  """COCO box detection metrics of `detections` against `ground_truth`, by pycocotools' COCOeval.

  Args:
    ground_truth: a COCO-format dataset dict (module docstring). Crowd annotations (`iscrowd` 1) are
      COCO's ignore regions: a detection matched to one is neither a true nor a false positive.
      `difficult` is not a COCO notion and is not used here (see voc.py).
    detections: COCO results, possibly empty (all defined APs are then 0).
  Returns:
    {"stats": COCOeval's 12 numbers in its order (floats; UNDEFINED = -1 where no ground truth),
     "AP", "AP50", ..., "ARl": the same 12 by name (STAT_NAMES),
     "per_category": {category_id: {"AP": AP@[.50:.95], "AP50": AP@.50}} (all areas, 100 detections;
       UNDEFINED for a category without ground truth),
     "summary": the 12 lines COCOeval.summarize() prints (captured, not printed)}.
    At most 100 detections per image and category count (COCO's maxDets).
  Raises:
    DataError: see `check_ground_truth` and `check_detections` (e.g. an unknown image id).
  """
  gt_dict = check_ground_truth(ground_truth)
  dets = check_detections(gt_dict, detections)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    gt = COCO()
    gt.dataset = gt_dict
    gt.createIndex()
    if dets:
      dt = gt.loadRes(dets)  # Adds area / id / iscrowd to our copies.
    else:  # loadRes cannot take an empty list (it reads anns[0]): an empty result set by hand.
      dt = COCO()
      dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"],
                    "annotations": []}
      dt.createIndex()
    coco_eval = COCOeval(gt, dt, iouType="bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    start = printed.tell()
    coco_eval.summarize()
  summary = printed.getvalue()[start:].strip("\n").splitlines()
  stats = [float(s) for s in coco_eval.stats]
  result: dict[str, Any] = {"stats": stats, **dict(zip(STAT_NAMES, stats))}
  # eval["precision"]: [T IoUs, R recall points, K categories, A areas, M maxDets]; area 0 = "all",
  # maxDets -1 = 100; IoU index 0 = 0.50. K follows coco_eval.params.catIds (sorted ids).
  precision = coco_eval.eval["precision"]
  result["per_category"] = {
      int(category_id): {"AP": _category_ap(precision[:, :, k, 0, -1]),
                         "AP50": _category_ap(precision[0, :, k, 0, -1])}
      for k, category_id in enumerate(coco_eval.params.catIds)}
  result["summary"] = summary
  return result
