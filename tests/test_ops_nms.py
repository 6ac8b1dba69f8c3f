"""Padded greedy NMS (SPEC B3, B4) vs a plain Python loop, on random boxes and edge cases.

Against torchvision's own outputs: tests/test_ops_torchvision.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import PAD_INDEX, batched_nms, nms, num_kept


def loop_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
             groups: np.ndarray | None = None, valid: np.ndarray | None = None) -> list[int]:
  """torchvision's CPU kernel in Python: stable descending sort, then keep / suppress (IoU >
  threshold) in that order; float32 arithmetic in the kernel's order, compared with the threshold
  as a double."""
  x1, y1, x2, y2 = boxes.T
  areas = (x2 - x1) * (y2 - y1)
  suppressed = np.zeros(len(boxes), bool) if valid is None else ~valid
  keep = []
  for i in np.argsort(-scores, kind="stable"):
    if suppressed[i]:
      continue
    keep.append(int(i))
    for j in range(len(boxes)):
      w = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
      h = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
      with np.errstate(invalid="ignore"):
        overlap = w * h / (areas[i] + areas[j] - w * h)
      if float(overlap) > threshold and (groups is None or groups[i] == groups[j]):
        suppressed[j] = True
  return keep


def padded(keep: list[int], size: int) -> np.ndarray:
  return np.array((keep + [PAD_INDEX] * size)[:size], np.int32)


def clustered_boxes(rng: np.random.Generator, n: int, objects: int = 12) -> np.ndarray:
  """Jittered copies of a few boxes, so that NMS has plenty to suppress."""
  xy = rng.uniform(0, 200, (objects, 2))
  centres = np.concatenate([xy, xy + rng.uniform(10, 80, (objects, 2))], 1)
  boxes = centres[rng.integers(0, objects, n)]
  return (boxes + rng.normal(0, 4, (n, 4))).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("ties", [False, True])
def test_nms_matches_loop(threshold, ties):
  rng = np.random.default_rng(int(threshold * 10) + 100 * ties)
  boxes = clustered_boxes(rng, 120)
  scores = rng.uniform(size=120).astype(np.float32)
  if ties:
    scores = np.round(scores * 8) / 8  # 9 distinct values: ties broken by ascending index
  expected = loop_nms(boxes, scores, threshold)
  for size in (5, len(expected), 120):  # truncated, exact, padded
    np.testing.assert_array_equal(nms(boxes, scores, threshold, size), padded(expected, size))


def test_nms_ties_keep_the_lower_index():
  boxes = np.array([[0, 0, 10, 10]] * 3 + [[100, 100, 110, 110]], np.float32)
  scores = np.array([0.5, 0.9, 0.9, 0.9], np.float32)
  np.testing.assert_array_equal(nms(boxes, scores, 0.5, 4), [1, 3, PAD_INDEX, PAD_INDEX])


def test_nms_all_suppressed_by_the_best_and_threshold_is_strict():
  boxes = np.array([[0, 0, 10, 10]] * 4, np.float32)
  np.testing.assert_array_equal(nms(boxes, np.arange(4.0), 0.5, 3), [3, PAD_INDEX, PAD_INDEX])
  # IoU exactly 0.5 (areas 100 and 50, intersection 50) is not above a 0.5 threshold.
  pair = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
  np.testing.assert_array_equal(nms(pair, np.array([1.0, 0.5]), 0.5, 2), [0, 1])
  np.testing.assert_array_equal(nms(pair, np.array([1.0, 0.5]), 0.49, 2), [0, PAD_INDEX])


def test_nms_compares_the_iou_with_the_threshold_as_a_double():
  """IoU 3 / 10 is float32(0.3) = 0.30000001 > 0.3: torchvision (C++ float > double) suppresses."""
  pair = np.array([[0, 0, 10, 1], [0, 0, 3, 1]], np.float32)
  scores = np.array([1.0, 0.5], np.float32)
  assert loop_nms(pair, scores, 0.3) == [0]
  np.testing.assert_array_equal(nms(pair, scores, 0.3, 2), [0, PAD_INDEX])
  np.testing.assert_array_equal(nms(pair, scores, float(np.float32(0.3)), 2), [0, 1])


def test_nms_zero_area_boxes_suppress_nothing():
  """Two identical points: 0 / 0 = NaN IoU, not > threshold — both kept, as torchvision."""
  boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
  np.testing.assert_array_equal(nms(boxes, np.array([3.0, 2.0, 1.0]), 0.1, 3), [0, 1, 2])


def test_nms_valid_mask_and_minus_inf_scores():
  rng = np.random.default_rng(5)
  boxes = clustered_boxes(rng, 60)
  scores = rng.uniform(size=60).astype(np.float32)
  valid = rng.uniform(size=60) < 0.6
  scores[3] = -np.inf  # a valid box with score -inf can still be kept
  valid[3] = True
  boxes[3] = [1000, 1000, 1010, 1010]
  expected = loop_nms(boxes, scores, 0.5, valid=valid)
  got = nms(boxes, scores, 0.5, 60, valid=valid)
  np.testing.assert_array_equal(got, padded(expected, 60))
  assert expected[-1] == 3 and all(valid[expected])
  np.testing.assert_array_equal(nms(boxes, scores, 0.5, 4, valid=np.zeros(60, bool)),
                                [PAD_INDEX] * 4)


def test_nms_no_boxes_and_num_kept():
  none = nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, 3)
  np.testing.assert_array_equal(none, [PAD_INDEX] * 3)
  assert int(num_kept(none)) == 0
  assert int(num_kept(jnp.array([4, 0, PAD_INDEX]))) == 2


@pytest.mark.parametrize("threshold", [0.4, 0.7])
def test_batched_nms_matches_per_class_loop(threshold):
  rng = np.random.default_rng(7)
  boxes = clustered_boxes(rng, 150, objects=8)
  scores = np.round(rng.uniform(size=150) * 16).astype(np.float32) / 16
  classes = rng.integers(0, 5, 150).astype(np.int32)
  valid = rng.uniform(size=150) < 0.9
  for mask in (None, valid):
    expected = loop_nms(boxes, scores, threshold, groups=classes, valid=mask)
    got = batched_nms(boxes, scores, classes, threshold, 150, valid=mask)
    np.testing.assert_array_equal(got, padded(expected, 150))


def test_batched_nms_classes_do_not_suppress_each_other():
  boxes = np.array([[0, 0, 10, 10]] * 3, np.float32)
  got = batched_nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([1, 2, 1]), 0.5, 3)
  np.testing.assert_array_equal(got, [0, 1, PAD_INDEX])


def test_nms_jit_with_traced_threshold_and_vmap_over_a_batch():
  rng = np.random.default_rng(8)
  boxes = np.stack([clustered_boxes(rng, 80) for _ in range(3)])  # [B, N, 4]
  scores = rng.uniform(size=(3, 80)).astype(np.float32)
  valid = rng.uniform(size=(3, 80)) < 0.8
  classes = rng.integers(0, 3, (3, 80))
  thresholds = jnp.array([0.3, 0.5, 0.7])
  run = jax.jit(jax.vmap(lambda b, s, t, v: nms(b, s, t, 20, valid=v)))
  run_batched = jax.jit(jax.vmap(lambda b, s, c, t: batched_nms(b, s, c, t, 20)))
  got, got_batched = run(boxes, scores, thresholds, valid), run_batched(boxes, scores, classes,
                                                                        thresholds)
  for i, t in enumerate([0.3, 0.5, 0.7]):
    np.testing.assert_array_equal(got[i], padded(loop_nms(boxes[i], scores[i], t, valid=valid[i]),
                                                 20))
    np.testing.assert_array_equal(got_batched[i],
                                  padded(loop_nms(boxes[i], scores[i], t, groups=classes[i]), 20))
