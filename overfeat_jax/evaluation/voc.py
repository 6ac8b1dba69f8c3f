"""PASCAL VOC average precision (SPEC B6), written here from the VOC definitions.

Per class, at IoU >= 0.5 (VOC's rule; `iou_threshold`):
  1. Rank the class's detections over all images by descending score (ties keep input order).
  2. Each detection is compared with the ground-truth box of its image and class that it overlaps
     most (matched or not, difficult or not, as VOC's devkit does):
       IoU < threshold                       -> false positive;
       that box is `difficult` (or crowd)    -> ignored: neither true nor false positive;
       that box is not yet taken             -> true positive, the box is now taken;
       that box is already taken             -> false positive (a duplicate), even when another
                                                free box also overlaps it enough.
  3. Positives = the class's ground-truth boxes that are neither difficult nor crowd. Recall and
     precision after each (not ignored) detection of the ranking give the AP (`voc_ap`).
The VOC devkit and py-faster-rcnn's voc_eval add 1 to widths (pixel-index boxes); our boxes are
continuous (x1, y1, x2, y2), width = x2 - x1, and IoU uses them as they are. py-faster-rcnn's voc_eval
tests IoU > 0.5 where the devkit (and COCO) use >= 0.5: it differs only at exactly 0.5.

A class without positives has AP `UNDEFINED` (-1, as in COCO) and does not enter the mean; a
zero-area ground-truth box overlaps nothing (IoU 0), so it stays an unmatched positive here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from overfeat_jax import ops
from overfeat_jax.evaluation.coco import UNDEFINED, check_detections, check_ground_truth

VOC_IOU_THRESHOLD = 0.5


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
  """Average precision of one ranked list.

  Args:
    recall: [N] float, non-decreasing (recall after each detection of the ranking).
    precision: [N] float, precision after each detection.
    use_07_metric: True: VOC 2007's 11-point AP, the mean over t in {0, 0.1, ..., 1} (exactly i / 10,
      so a recall of exactly 0.3 counts at t = 0.3) of the highest precision at recall >= t (0 when
      no point reaches t). False: VOC 2010+'s area under the monotone precision envelope,
      sum over recall steps of (r_i - r_{i-1}) * max_{j >= i} p_j.
  Returns:
    AP in [0, 1]; 0 for an empty ranking.
  """
  recall = np.asarray(recall, np.float64).reshape(-1)
  precision = np.asarray(precision, np.float64).reshape(-1)
  if recall.shape != precision.shape:
    raise ValueError(f"voc_ap: recall {recall.shape} and precision {precision.shape} differ in shape")
  if np.any(np.diff(recall) < 0):
    raise ValueError("voc_ap: recall must be non-decreasing (the recall of a ranked list)")
  if use_07_metric:
    total = 0.0
    for t in np.arange(11) / 10:
      reached = precision[recall >= t]
      total += reached.max() if reached.size else 0.0
    return float(total / 11)
  r = np.concatenate([[0.0], recall, [1.0]])
  p = np.concatenate([[0.0], precision, [0.0]])
  envelope = np.maximum.accumulate(p[::-1])[::-1]  # envelope[i] = max_{j >= i} p[j]
  steps = np.flatnonzero(r[1:] != r[:-1]) + 1  # the points where recall rises
  return float(np.sum((r[steps] - r[steps - 1]) * envelope[steps]))


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
  """IoU of continuous (x1, y1, x2, y2) boxes in float64 (`ops.box_iou` on the host).

  Args:
    boxes1: [N, 4] float. boxes2: [M, 4] float.
  Returns:
    [N, M] float64; 0 where the union is empty (two zero-area boxes).
  """
  return ops.box_iou(np.asarray(boxes1, np.float64).reshape(-1, 4),
                     np.asarray(boxes2, np.float64).reshape(-1, 4))


def _indices_by_value(values: np.ndarray) -> dict[int, np.ndarray]:
  """[N] int -> {value: the indices holding it, ascending}, in O(N log N)."""
  order = np.argsort(values, kind="stable")
  unique, starts = np.unique(values[order], return_index=True)
  return dict(zip(unique.tolist(), np.split(order, starts[1:])))


def match_class(*, det_images: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                gt_images: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                iou_threshold: float = VOC_IOU_THRESHOLD) -> tuple[np.ndarray, int]:
  """Labels one class's detections by VOC's greedy rule (module docstring, steps 1-2).

  Args:
    det_images: [D] int image id of each detection. det_boxes: [D, 4] (x1, y1, x2, y2).
    det_scores: [D] float.
    gt_images: [G] int image id of each ground-truth box. gt_boxes: [G, 4] (x1, y1, x2, y2).
    gt_ignore: [G] bool, difficult or crowd.
  Returns:
    (is_tp [D'] bool in ranking order, with ignored detections left out; number of positives).
  """
  det_images = np.asarray(det_images).reshape(-1)
  det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
  gt_images = np.asarray(gt_images).reshape(-1)
  gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  gt_ignore = np.asarray(gt_ignore, bool).reshape(-1)
  order = np.argsort(-np.asarray(det_scores, np.float64).reshape(-1), kind="stable")
  best_gt = np.full(len(det_images), -1)  # index into gt_* of the most-overlapping box; -1: none
  best_iou = np.zeros(len(det_images))
  gt_of = _indices_by_value(gt_images)
  for image, d in _indices_by_value(det_images).items():
    if image not in gt_of:
      continue
    g = gt_of[image]
    iou = box_iou(det_boxes[d], gt_boxes[g])  # [d, g]
    best_gt[d] = g[np.argmax(iou, axis=1)]  # ties: the first box, as np.argmax
    best_iou[d] = iou.max(axis=1)
  best_gt, best_iou = best_gt[order], best_iou[order]
  hit = (best_gt >= 0) & (best_iou >= iou_threshold)
  ignored = np.zeros(len(order), bool)
  ignored[hit] = gt_ignore[best_gt[hit]]
  # Taken boxes are taken whatever comes later, so the TP of a box is its first hit in the ranking.
  claims = np.flatnonzero(hit & ~ignored)
  _, first = np.unique(best_gt[claims], return_index=True)
  is_tp = np.zeros(len(order), bool)
  is_tp[claims[first]] = True
  return is_tp[~ignored], int(np.count_nonzero(~gt_ignore))


def precision_recall(is_tp: np.ndarray, num_positives: int) -> tuple[np.ndarray, np.ndarray]:
  """[D] bool ranking -> (recall [D], precision [D]) after each detection; num_positives > 0."""
  tp = np.cumsum(is_tp, dtype=np.float64)
  return tp / num_positives, tp / np.arange(1, len(is_tp) + 1)


def _xyxy(bbox: Sequence[float]) -> list[float]:
  x, y, w, h = bbox
  return [x, y, x + w, y + h]


def voc_evaluate(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], *,
                 iou_threshold: float = VOC_IOU_THRESHOLD) -> dict[str, Any]:
  """VOC 2007 11-point AP and VOC area AP per category, on COCO-format inputs (see coco.py).

  Annotations with `difficult` or `iscrowd` set are ignored (module docstring).
  Returns:
    {"per_category": {category_id: {"num_positives": int, "AP07": float, "AP": float}},
     "mAP07", "mAP": means over categories with positives}; UNDEFINED (-1) where there are none.
  Raises:
    DataError: as coco.check_ground_truth / check_detections (e.g. an unknown image id).
  """
  gt = check_ground_truth(ground_truth)
  dets = check_detections(gt, detections)
  anns_of: dict[int, list[dict[str, Any]]] = {c["id"]: [] for c in gt["categories"]}
  dets_of: dict[int, list[dict[str, Any]]] = {c["id"]: [] for c in gt["categories"]}
  for a in gt["annotations"]:
    anns_of[a["category_id"]].append(a)
  for d in dets:
    dets_of[d["category_id"]].append(d)
  per_category = {}
  for cid, anns in anns_of.items():
    mine = dets_of[cid]
    is_tp, num_positives = match_class(
        det_images=np.array([d["image_id"] for d in mine], np.int64),
        det_boxes=np.array([_xyxy(d["bbox"]) for d in mine], np.float64).reshape(-1, 4),
        det_scores=np.array([d["score"] for d in mine], np.float64),
        gt_images=np.array([a["image_id"] for a in anns], np.int64),
        gt_boxes=np.array([_xyxy(a["bbox"]) for a in anns], np.float64).reshape(-1, 4),
        gt_ignore=np.array([a["difficult"] or a["iscrowd"] for a in anns], bool),
        iou_threshold=iou_threshold)
    if num_positives == 0:
      per_category[cid] = {"num_positives": 0, "AP07": UNDEFINED, "AP": UNDEFINED}
      continue
    recall, precision = precision_recall(is_tp, num_positives)
    per_category[cid] = {"num_positives": num_positives,
                         "AP07": voc_ap(recall, precision, use_07_metric=True),
                         "AP": voc_ap(recall, precision, use_07_metric=False)}
  defined = [v for v in per_category.values() if v["num_positives"] > 0]
  return {"per_category": per_category,
          "mAP07": float(np.mean([v["AP07"] for v in defined])) if defined else UNDEFINED,
          "mAP": float(np.mean([v["AP"] for v in defined])) if defined else UNDEFINED}
