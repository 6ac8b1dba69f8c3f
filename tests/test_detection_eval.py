"""Detection evaluation (SPEC B6): VOC AP by hand-worked cases, COCO metrics through pycocotools, and the
host-side evaluator end to end with "predict functions" that return perturbed ground truth."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

from overfeat_jax.errors import DataError, OverfeatError
from overfeat_jax.evaluation import coco_evaluate, voc_ap
from overfeat_jax.evaluation.coco import STAT_NAMES, UNDEFINED
from overfeat_jax.evaluation.detection import DetectionEvaluator, format_report
from overfeat_jax.evaluation.voc import box_iou, match_class, precision_recall, voc_evaluate


def coco_gt(images, annotations, num_categories=2):
  """COCO ground truth from {image_id: (h, w)} and [(image_id, category_id, [x, y, w, h], extra)]."""
  return {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in images.items()],
          "annotations": [{"image_id": i, "category_id": c, "bbox": b, **extra}
                          for i, c, b, extra in annotations],
          "categories": [{"id": c} for c in range(num_categories)]}


def det(image_id, category_id, x1, y1, x2, y2, score):
  return {"image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
          "score": score}


# ----------------------------------------------------------------------------------------------
# voc_ap on given rankings.

def test_voc_ap_by_hand():
  # Ranking TP, TP, FP, TP, FP, TP with 4 positives:
  #   recall    .25  .50  .50  .75  .75  1.0
  #   precision 1    1    2/3  3/4  3/5  4/6
  # Envelope (max precision at recall >= r): 1 up to r = .5, 3/4 up to .75, 2/3 up to 1.
  # Area: .25 * 1 + .25 * 1 + .25 * 3/4 + .25 * 2/3 = 41/48.
  # 11 points: t = 0 .. .5 (6 points) -> 1; t = .6, .7 -> 3/4; t = .8, .9, 1 -> 2/3:
  #   (6 + 1.5 + 2) / 11 = 19/22.
  recall, precision = precision_recall(np.array([1, 1, 0, 1, 0, 1], bool), 4)
  np.testing.assert_allclose(precision, [1, 1, 2 / 3, 3 / 4, 3 / 5, 4 / 6])
  assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(41 / 48)
  assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(19 / 22)


def test_voc_ap_edges():
  assert voc_ap([], [], use_07_metric=True) == 0.0
  assert voc_ap([], [], use_07_metric=False) == 0.0
  # The 11 thresholds are exactly i / 10: a recall of exactly 3/10 counts at t = 0.3 (4 of the 11
  # thresholds reached at precision 1); np.arange(0, 1.1, 0.1) would hold 0.30000000000000004.
  assert voc_ap([3 / 10], [1.0], use_07_metric=True) == pytest.approx(4 / 11)
  assert voc_ap([3 / 10], [1.0], use_07_metric=False) == pytest.approx(0.3)
  with pytest.raises(ValueError, match="non-decreasing"):
    voc_ap([0.5, 0.2], [1.0, 1.0], use_07_metric=False)


# ----------------------------------------------------------------------------------------------
# VOC matching: a hand-worked example.

# Image 1: G1 [0,0,10,10], G2 [20,20,30,30]. Image 2: G3 [0,0,10,10] and a difficult D [50,50,60,60].
# Positives: G1, G2, G3 (D is not counted) -> 3.
# Detections (given out of order; ranked by score):
#   d1 .9 image 1 [0,0,10,10]       IoU(G1) = 1                 -> TP (G1 taken)
#   d2 .8 image 1 [1,0,11,10]       IoU(G1) = 90/110 = .82      -> FP, duplicate of G1
#   d3 .7 image 2 [50,50,60,60]     IoU(D) = 1, D difficult     -> ignored (neither TP nor FP)
#   d4 .6 image 2 [0,0,10,10]       IoU(G3) = 1                 -> TP
#   d5 .5 image 1 [100,100,110,110] no overlap                  -> FP
# Ranking without d3: TP FP TP FP; recall 1/3 1/3 2/3 2/3; precision 1 1/2 2/3 1/2.
# Area: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], nothing beyond: 1/3 + 2/9 = 5/9.
# 11 points: t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 2/3; t = .7 .. 1 -> 0: (4 + 2) / 11 = 6/11.
HAND_GT = coco_gt({1: (200, 200), 2: (200, 200)}, [
    (1, 0, [0, 0, 10, 10], {}), (1, 0, [20, 20, 10, 10], {}),
    (2, 0, [0, 0, 10, 10], {}), (2, 0, [50, 50, 10, 10], {"difficult": 1})])
HAND_DETS = [det(1, 0, 100, 100, 110, 110, .5), det(2, 0, 0, 0, 10, 10, .6),
             det(1, 0, 1, 0, 11, 10, .8), det(1, 0, 0, 0, 10, 10, .9), det(2, 0, 50, 50, 60, 60, .7)]


def test_voc_hand_worked_example():
  result = voc_evaluate(HAND_GT, HAND_DETS)
  cat = result["per_category"][0]
  assert cat["num_positives"] == 3
  assert cat["AP07"] == pytest.approx(6 / 11)
  assert cat["AP"] == pytest.approx(5 / 9)
  assert result["per_category"][1] == {"num_positives": 0, "AP07": UNDEFINED, "AP": UNDEFINED}
  assert result["mAP"] == pytest.approx(5 / 9)  # category 1 has no positives: not in the mean
  is_tp, positives = match_class(
      det_images=np.array([1, 2, 1, 1, 2]), det_scores=np.array([.5, .6, .8, .9, .7]),
      det_boxes=np.array([[100, 100, 110, 110], [0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10],
                          [50, 50, 60, 60]]),
      gt_images=np.array([1, 1, 2, 2]), gt_ignore=np.array([False, False, False, True]),
      gt_boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]]))
  assert is_tp.tolist() == [True, False, True, False] and positives == 3


def test_voc_matches_the_most_overlapping_box_even_when_taken():
  # G1 [0,0,10,10], G2 [2,0,12,10]. d1 [0,0,10,10] takes G1 (IoU 1 vs .67). d2 [0.5,0,10.5,10]
  # overlaps G1 most (.90; G2 .74): G1 is taken, so d2 is a duplicate although G2 is free (the
  # devkit's rule). COCO instead matches d2 to the best FREE box, G2.
  gt = coco_gt({0: (50, 50)}, [(0, 0, [0, 0, 10, 10], {}), (0, 0, [2, 0, 10, 10], {})], 1)
  dets = [det(0, 0, 0, 0, 10, 10, .9), det(0, 0, .5, 0, 10.5, 10, .8)]
  assert voc_evaluate(gt, dets)["per_category"][0]["AP"] == pytest.approx(0.5)
  assert coco_evaluate(gt, dets)["AP50"] == pytest.approx(1.0)


def test_voc_matching_against_a_python_loop():
  # The vectorised match_class against the devkit's procedure written as a plain loop.
  rng = np.random.default_rng(0)

  def boxes(n):
    xy = rng.uniform(0, 50, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2))], axis=1)

  gt_images, gt_boxes, gt_ignore = rng.integers(0, 20, 60), boxes(60), rng.uniform(size=60) < 0.2
  det_images, det_boxes, det_scores = rng.integers(0, 25, 400), boxes(400), rng.uniform(size=400)
  is_tp, positives = match_class(det_images=det_images, det_boxes=det_boxes, det_scores=det_scores,
                                 gt_images=gt_images, gt_boxes=gt_boxes, gt_ignore=gt_ignore)
  taken, expected = set(), []
  for k in np.argsort(-det_scores):
    best, best_iou = None, 0.0
    for g in range(60):
      if gt_images[g] == det_images[k]:
        iou = box_iou(det_boxes[k:k + 1], gt_boxes[g:g + 1])[0, 0]
        if best is None or iou > best_iou:
          best, best_iou = g, iou
    if best is not None and best_iou >= 0.5 and gt_ignore[best]:
      continue
    hit = best is not None and best_iou >= 0.5 and best not in taken
    expected.append(hit)
    if hit:
      taken.add(best)
  assert is_tp.tolist() == expected and positives == int((~gt_ignore).sum())
  assert 0 < is_tp.sum() < len(is_tp)


def test_voc_iou_of_exactly_one_half_matches():
  # GT [0,0,2,1] (area 2), detection [0,0,1,1] (area 1): IoU = 1 / 2 exactly -> a match (>= 0.5).
  gt = coco_gt({0: (10, 10)}, [(0, 0, [0, 0, 2, 1], {})], 1)
  assert voc_evaluate(gt, [det(0, 0, 0, 0, 1, 1, .9)])["per_category"][0]["AP"] == 1.0


# ----------------------------------------------------------------------------------------------
# coco_evaluate.

def test_coco_perfect_empty_and_undefined():
  gt = coco_gt({0: (100, 100), 1: (100, 100)},
               [(0, 0, [10, 10, 20, 20], {}), (1, 0, [10, 10, 50, 50], {})], num_categories=2)
  perfect = coco_evaluate(gt, [det(0, 0, 10, 10, 30, 30, .9), det(1, 0, 10, 10, 60, 60, .8)])
  assert len(perfect["stats"]) == 12 and [perfect[k] for k in STAT_NAMES] == perfect["stats"]
  # One small (400 px²) and one medium (2500 px²) object, no large one: APl / ARl undefined (-1).
  assert perfect["stats"] == pytest.approx([1, 1, 1, 1, 1, -1, 1, 1, 1, 1, 1, -1])
  assert perfect["per_category"] == {0: pytest.approx({"AP": 1, "AP50": 1}),
                                     1: {"AP": UNDEFINED, "AP50": UNDEFINED}}  # no ground truth
  assert len(perfect["summary"]) == 12 and "maxDets=100" in perfect["summary"][0]
  # No detections at all (pycocotools' loadRes cannot take []): AP 0 where defined.
  empty = coco_evaluate(gt, [])
  assert empty["stats"] == pytest.approx([0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, -1])
  # No boxes at all: every number undefined, no exception.
  no_boxes = coco_evaluate(coco_gt({0: (100, 100)}, []), [det(0, 0, 1, 1, 5, 5, .5)])
  assert no_boxes["stats"] == [UNDEFINED] * 12


def test_coco_crowd_regions_and_inputs_untouched():
  # A detection inside a crowd region (scored highest) is ignored, not a false positive.
  anns = [(0, 0, [0, 0, 10, 10], {}), (0, 0, [50, 50, 50, 50], {"iscrowd": 1})]
  dets = [det(0, 0, 60, 60, 80, 80, .95), det(0, 0, 0, 0, 10, 10, .9)]
  gt = coco_gt({0: (200, 200)}, anns, 1)
  before = (copy.deepcopy(gt), copy.deepcopy(dets))
  assert coco_evaluate(gt, dets)["AP50"] == pytest.approx(1.0)
  assert (gt, dets) == before  # loadRes writes into its input: we hand it copies
  not_crowd = coco_gt({0: (200, 200)}, [a[:3] + ({},) for a in anns], 1)
  assert coco_evaluate(not_crowd, dets)["AP50"] < 0.9


@pytest.mark.parametrize("evaluate", [coco_evaluate, voc_evaluate])
def test_unknown_ids_are_data_errors(evaluate):
  gt = coco_gt({0: (10, 10)}, [(0, 0, [0, 0, 5, 5], {})], 1)
  with pytest.raises(DataError, match="image id 99"):
    evaluate(gt, [det(99, 0, 0, 0, 5, 5, .5)])
  with pytest.raises(DataError, match="category id 7"):
    evaluate(gt, [det(0, 7, 0, 0, 5, 5, .5)])
  with pytest.raises(DataError, match="bbox"):
    evaluate(gt, [{"image_id": 0, "category_id": 0, "bbox": [0, 0, 5], "score": .5}])


# ----------------------------------------------------------------------------------------------
# The evaluator end to end.

CLASSES = ("cat", "dog", "bird")  # no bird anywhere: its APs are undefined
# image id -> (original (h, w), network-input scale (sy, sx), [(class, x1, y1, x2, y2, difficult)])
# in original pixels. Positives: cat 4; dog 2 (+ 1 difficult); image 12 has no objects.
IMAGES = {
    10: ((100, 200), (2.0, 2.0), [(0, 10, 20, 50, 60, 0), (1, 100, 10, 180, 90, 0)]),
    11: ((80, 80), (1.5, 1.5), [(0, 0, 0, 30, 40, 0)]),
    12: ((64, 64), (2.0, 2.0), []),
    13: ((120, 160), (1.5, 1.25), [(0, 20, 20, 60, 70, 0), (0, 70, 20, 110, 70, 0),
                                   (1, 5, 5, 25, 25, 1)]),
    14: ((100, 100), (0.5, 0.5), [(1, 30, 30, 90, 80, 0)]),
}
MAX_BOXES, MAX_DETS, BATCH = 4, 6, 2


def to_network(box, scale):
  sy, sx = scale
  return np.array(box, np.float64) * [sx, sy, sx, sy]


def make_batches(images=IMAGES, per_axis_scale=True):
  """Padded batches of BATCH examples (the last one padded with an invalid example)."""
  ids = list(images)
  ids += [None] * (-len(ids) % BATCH)
  batches = []
  for start in range(0, len(ids), BATCH):
    b = {"boxes": np.zeros((BATCH, MAX_BOXES, 4), np.float32),
         "box_labels": np.full((BATCH, MAX_BOXES), -1, np.int32),
         "box_valid": np.zeros((BATCH, MAX_BOXES), bool),
         "difficult": np.zeros((BATCH, MAX_BOXES), bool),
         "image_id": np.zeros(BATCH, np.int32), "original_size": np.zeros((BATCH, 2), np.int32),
         "scale": np.ones((BATCH, 2), np.float32), "valid": np.zeros(BATCH, bool)}
    for i, image_id in enumerate(ids[start:start + BATCH]):
      if image_id is None:
        continue
      size, scale, objects = images[image_id]
      b["image_id"][i], b["original_size"][i], b["scale"][i], b["valid"][i] = image_id, size, scale, True
      for j, (label, *box, difficult) in enumerate(objects):
        b["boxes"][i, j] = to_network(box, scale)
        b["box_labels"][i, j], b["box_valid"][i, j], b["difficult"][i, j] = label, True, difficult
    if not per_axis_scale:
      assert np.all(b["scale"][:, 0] == b["scale"][:, 1])
      b["scale"] = b["scale"][:, 0]
    batches.append(b)
  return batches


def predictions_from(batch, per_image):
  """Padded predictions from {image_id: [(class, x1, y1, x2, y2 in original pixels, score)]}."""
  out = {"boxes": np.zeros((BATCH, MAX_DETS, 4), np.float32),
         "scores": np.zeros((BATCH, MAX_DETS), np.float32),
         "classes": np.zeros((BATCH, MAX_DETS), np.int32),
         "valid": np.zeros((BATCH, MAX_DETS), bool)}
  for i, image_id in enumerate(batch["image_id"]):
    if not batch["valid"][i]:
      continue
    for j, (label, *box, score) in enumerate(per_image.get(int(image_id), [])):
      out["boxes"][i, j] = to_network(box, IMAGES[int(image_id)][1])
      out["classes"][i, j], out["scores"][i, j], out["valid"][i, j] = label, score, True
  return out


def test_exact_ground_truth_from_a_jitted_predict_function(tmp_path, capsys):
  import jax
  import jax.numpy as jnp

  @jax.jit
  def predict(batch):  # the ground truth itself, every box with score 0.9
    return {"boxes": batch["boxes"], "classes": batch["box_labels"], "valid": batch["box_valid"],
            "scores": jnp.where(batch["box_valid"], 0.9, 0.0)}

  # A [B] scale (one factor per image, both axes): image 13 gets 1.5 on both axes here.
  images = {i: (size, (scale[0], scale[0]), objs) for i, (size, scale, objs) in IMAGES.items()}
  result = DetectionEvaluator(CLASSES).run(predict, make_batches(images, per_axis_scale=False),
                                           workdir=str(tmp_path), extra={"checkpoint_step": 7})
  assert result["num_images"] == 5 and result["num_ground_truth"] == 7
  for name in ("cat", "dog"):
    row = result["per_class"][name]
    assert row["AP50_voc07"] == row["AP50_voc"] == 1.0
    assert row["AP_coco"] == pytest.approx(1.0) and row["AP50_coco"] == pytest.approx(1.0)
  assert result["per_class"]["bird"] == {"category_id": 2, "num_positives": 0,
                                         "AP50_voc07": -1, "AP50_voc": -1, "AP_coco": -1,
                                         "AP50_coco": -1}
  assert result["voc"] == {"mAP07": 1.0, "mAP": 1.0}
  assert result["coco"]["AP"] == pytest.approx(1.0) and result["coco"]["AP75"] == pytest.approx(1.0)
  printed = capsys.readouterr().out
  assert "bird" in printed and "n/a" in printed and "Average Precision" in printed
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["checkpoint_step"] == 7 and metrics["per_class"]["cat"]["num_positives"] == 4
  assert metrics["coco"]["stats"] == pytest.approx(result["coco"]["stats"])
  detections = json.loads((tmp_path / "eval" / "detections.json").read_text())
  assert len(detections) == 7 and not list((tmp_path / "eval").glob("*.tmp"))
  first = detections[0]  # image 10's cat, back in original pixels as [x, y, w, h]
  assert first == {"image_id": 10, "category_id": 0, "bbox": [10, 20, 40, 40],
                   "score": pytest.approx(0.9)}


def test_shifted_ground_truth_gives_ap50_one_and_ap75_zero(tmp_path):
  # Every prediction is its box shifted right by 0.2 of its width: IoU = 0.8 / 1.2 = 2/3, a match at
  # IoU 0.50 .. 0.65 (4 of COCO's 10 thresholds), none at 0.70 .. 0.95.
  def shifted(batch):
    per_image = {}
    for image_id in batch["image_id"][batch["valid"]]:
      per_image[int(image_id)] = [(label, x1 + 0.2 * (x2 - x1), y1, x2 + 0.2 * (x2 - x1), y2, 0.8)
                                  for label, x1, y1, x2, y2, _ in IMAGES[int(image_id)][2]]
    return predictions_from(batch, per_image)

  result = DetectionEvaluator(CLASSES).run(shifted, make_batches(), workdir=None, verbose=False)
  assert result["voc"] == {"mAP07": 1.0, "mAP": 1.0}
  assert result["coco"]["AP50"] == pytest.approx(1.0)
  assert result["coco"]["AP75"] == 0.0
  assert result["coco"]["AP"] == pytest.approx(0.4)
  assert not (tmp_path / "eval").exists()


def test_false_positives_at_known_ranks():
  # Cat predictions, by score: .9 TP (image 10), .8 TP (11), .7 FP on image 12 (no objects),
  # .6 TP (13), .5 FP (a duplicate of image 10's cat, IoU .82), .4 TP (13) -- the ranking of
  # test_voc_ap_by_hand: AP07 19/22, area AP 41/48. Dogs exact: AP 1.
  # COCO's AP50 for cat is pycocotools' 101-point interpolation of the same envelope: recall
  # 0 .. .50 (51 points) at 1, .51 .. .75 (25) at 3/4, .76 .. 1 (25) at 2/3 -> 86.41667 / 101.
  per_image = {10: [(0, 10, 20, 50, 60, .9), (0, 14, 20, 54, 60, .5), (1, 100, 10, 180, 90, .9)],
               11: [(0, 0, 0, 30, 40, .8)],
               12: [(0, 0, 0, 10, 10, .7)],
               13: [(0, 20, 20, 60, 70, .6), (0, 70, 20, 110, 70, .4)],
               14: [(1, 30, 30, 90, 80, .9)]}
  result = DetectionEvaluator(CLASSES).run(lambda b: predictions_from(b, per_image),
                                           make_batches(), workdir=None, verbose=False)
  cat, dog = result["per_class"]["cat"], result["per_class"]["dog"]
  assert cat["AP50_voc07"] == pytest.approx(19 / 22) and cat["AP50_voc"] == pytest.approx(41 / 48)
  assert cat["AP50_coco"] == pytest.approx((51 + 25 * 3 / 4 + 25 * 2 / 3) / 101)
  assert dog["AP50_voc07"] == dog["AP50_voc"] == 1.0
  assert dog["num_positives"] == 2  # image 13's difficult dog is not a positive
  assert result["voc"]["mAP07"] == pytest.approx((19 / 22 + 1) / 2)
  assert "cat" in format_report(result)


def test_no_boxes_at_all_gives_undefined_metrics(tmp_path):
  images = {i: (size, scale, []) for i, (size, scale, _) in IMAGES.items()}
  fp = {12: [(0, 0, 0, 10, 10, .7)]}
  result = DetectionEvaluator(CLASSES).run(lambda b: predictions_from(b, fp), make_batches(images),
                                           workdir=str(tmp_path), verbose=False)
  assert result["coco"]["stats"] == [UNDEFINED] * 12
  assert result["voc"] == {"mAP07": UNDEFINED, "mAP": UNDEFINED}
  assert all(v == UNDEFINED for row in result["per_class"].values()
             for k, v in row.items() if k.startswith("AP"))
  assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_detections"] == 1


def test_zero_width_ground_truth_is_dropped_with_a_warning():
  images = dict(IMAGES)
  size, scale, objects = images[11]
  images[11] = (size, scale, objects + [(0, 40, 10, 40, 30, 0)])  # x2 == x1
  exact = {i: [(label, *box, .9) for label, *box, _ in objs] for i, (_, _, objs) in IMAGES.items()}
  evaluator = DetectionEvaluator(CLASSES)
  for batch in make_batches(images):
    evaluator.add(predictions_from(batch, exact), batch)
  with pytest.warns(UserWarning, match="dropped 1 ground-truth boxes with zero width or height"):
    result = evaluator.compute()
  assert result["num_dropped_gt_boxes"] == 1 and result["per_class"]["cat"]["num_positives"] == 4
  assert result["per_class"]["cat"]["AP50_voc"] == 1.0


def test_evaluator_bad_input():
  batch = make_batches()[0]
  evaluator = DetectionEvaluator(CLASSES)
  with pytest.raises(DataError, match="image id 10: predicted class 3 is outside"):
    evaluator.add(predictions_from(batch, {10: [(3, 0, 0, 5, 5, .5)]}), batch)
  evaluator.reset()
  evaluator.add(predictions_from(batch, {}), batch)
  with pytest.raises(DataError, match="image id 10 was added .* twice"):
    evaluator.add(predictions_from(batch, {}), batch)
  evaluator.reset()
  bad = predictions_from(batch, {})
  bad["scores"] = bad["scores"][:, :2]
  with pytest.raises(DataError, match=r"predictions\['scores'\] has shape"):
    evaluator.add(bad, batch)
  crowd = dict(batch, iscrowd=batch["box_valid"].copy())
  evaluator.reset()
  evaluator.add(predictions_from(batch, {}), crowd)
  assert {a["iscrowd"] for a in evaluator.ground_truth()["annotations"]} == {1}


def test_failed_write_raises_after_printing_and_keeps_old_files(tmp_path, capsys, monkeypatch):
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("")
  evaluator = DetectionEvaluator(CLASSES)
  with pytest.raises(OverfeatError, match="could not write"):
    evaluator.run(lambda b: predictions_from(b, {}), make_batches(), workdir=str(not_a_dir))
  out, err = capsys.readouterr()
  assert "AP50 VOC07" in out and json.loads(err)["num_ground_truth"] == 7
  # A rename that fails leaves the previous metrics.json whole and no temporary file.
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "metrics.json").write_text('{"old": 1}')

  def failing_replace(src, dst):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(OverfeatError, match="No space left on device"):
    evaluator.run(lambda b: predictions_from(b, {}), make_batches(), workdir=str(tmp_path),
                  verbose=False)
  assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == {"old": 1}
  assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["metrics.json"]
