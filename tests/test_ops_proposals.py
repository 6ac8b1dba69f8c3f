"""The proposal layer (SPEC B3) and the Fast R-CNN head's detections (SPEC B4) vs naive numpy
pipelines (decode -> clip -> minimum size -> sort -> greedy NMS loop -> top N, and py-faster-rcnn's
per-class loop) and hand-computed cases.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax import ops
from overfeat_jax.ops import anchors

# Jitted once per shape: faster than op-by-op dispatch of the many small ops.
propose = jax.jit(ops.propose, static_argnames=("pre_nms_top_n", "post_nms_top_n"))
detect = jax.jit(ops.detect, static_argnames=("max_detections",))
CLAMP = math.log(1000.0 / 16)


def loop_decode(delta: np.ndarray, ref: np.ndarray, weights) -> np.ndarray:
  """One box from (t_x, t_y, t_w, t_h) and its reference, in float64 (SPEC B1)."""
  delta, ref = np.asarray(delta, np.float64), np.asarray(ref, np.float64)
  w, h = ref[2] - ref[0], ref[3] - ref[1]
  x, y = ref[0] + w / 2 + delta[0] / weights[0] * w, ref[1] + h / 2 + delta[1] / weights[1] * h
  bw = math.exp(min(delta[2] / weights[2], CLAMP)) * w
  bh = math.exp(min(delta[3] / weights[3], CLAMP)) * h
  return np.array([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2])


def loop_clip(box: np.ndarray, height: float, width: float) -> np.ndarray:
  return np.array([min(max(box[0], 0), width), min(max(box[1], 0), height),
                   min(max(box[2], 0), width), min(max(box[3], 0), height)])


def loop_iou(p: np.ndarray, q: np.ndarray) -> float:
  w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
  h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
  union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
  return w * h / union if union > 0 else 0.0


# The reference computes in float64, the ops in float32: an IoU this close to the NMS threshold is
# decided by rounding (seen: two clipped boxes at IoU 0.5 - 3e-8), so such inputs are refused.
AMBIGUOUS = 1e-5


def greedy_nms(boxes: list[np.ndarray], threshold: float) -> list[int]:
  """Positions (in the given order, already sorted by score) kept by greedy NMS: a box is dropped
  when its IoU with a kept box is > threshold."""
  keep: list[int] = []
  for i, box in enumerate(boxes):
    ious = [loop_iou(boxes[k], box) for k in keep]
    assert threshold >= 1 or all(abs(v - threshold) > AMBIGUOUS for v in ious), "ambiguous input"
    if all(v <= threshold for v in ious):
      keep.append(i)
  return keep


def loop_propose(objectness, deltas, anchor_boxes, image_hw, pre, post, nms_iou, min_size):
  """py-faster-rcnn's proposal_layer on lists: returns (boxes [n, 4], scores [n]), n <= post."""
  height, width = image_hw
  candidates = []
  for i in range(len(anchor_boxes)):
    box = loop_clip(loop_decode(deltas[i], anchor_boxes[i], (1, 1, 1, 1)), height, width)
    w, h = box[2] - box[0], box[3] - box[1]
    if w >= min_size and h >= min_size and w > 0 and h > 0:
      candidates.append((float(objectness[i]), i, box))
  candidates.sort(key=lambda c: (-c[0], c[1]))  # descending score, then index
  candidates = candidates[:pre]
  keep = greedy_nms([c[2] for c in candidates], nms_iou)[:post]
  return (np.array([candidates[k][2] for k in keep]).reshape(-1, 4),
          np.array([candidates[k][0] for k in keep]))


def check_padded(out, boxes: np.ndarray, scores: np.ndarray, size: int) -> None:
  n = len(scores)
  assert out.boxes.shape == (size, 4) and out.scores.shape == out.valid.shape == (size,)
  np.testing.assert_array_equal(out.valid, np.arange(size) < n)
  np.testing.assert_allclose(np.asarray(out.boxes)[:n], boxes, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(np.asarray(out.scores)[:n], scores, rtol=1e-6)
  assert np.all(np.asarray(out.boxes)[n:] == 0) and np.all(np.asarray(out.scores)[n:] == 0)


GRID = anchors((8, 10), 16, (32, 64, 128), (0.5, 1.0, 2.0), offset=8.0)  # 720 anchors
IMAGE_HW = (128, 160)


def random_rpn_outputs(seed: int, n: int = len(GRID)) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  deltas = rng.normal(0, 0.3, (n, 4)).astype(np.float32)
  deltas[:5, 2:] = 8.0  # beyond the clamp log(1000 / 16)
  return rng.normal(0, 2, n).astype(np.float32), deltas


@pytest.mark.parametrize("seed,pre,post,nms_iou,min_size", [
    (0, 300, 50, 0.7, 8.0), (1, 1000, 400, 0.7, 0.0), (2, 200, 30, 0.5, 24.0),
    (3, 100, 150, 1.0, 4.0)])
def test_propose_matches_naive_pipeline(seed, pre, post, nms_iou, min_size):
  objectness, deltas = random_rpn_outputs(seed)
  out = propose(objectness, deltas, GRID, IMAGE_HW, pre_nms_top_n=pre, post_nms_top_n=post,
                nms_iou=nms_iou, min_size=min_size)
  boxes, scores = loop_propose(objectness, deltas, GRID, IMAGE_HW, pre, post, nms_iou, min_size)
  check_padded(out, boxes, scores, post)
  assert 0 < len(scores)
  if nms_iou >= 1:  # NMS off: the top `pre` valid boxes, all of them (pre < post here)
    assert len(scores) == pre


def test_propose_hand_computed_case():
  anchor_boxes = np.array([[0, 0, 10, 10],  # IoU 0.9 with the next, lower score: suppressed
                           [0, 0, 10, 9],
                           [-20, -20, 2, 30],  # clipped to [0, 0, 2, 30]: 2 px wide < 4: dropped
                           [50, 50, 60, 60],
                           [0, 0, 10, 8]], np.float32)  # IoU 80 / 90 = 0.89 with #1: suppressed
  objectness = np.array([0.9, 0.95, 0.99, 0.1, 0.5], np.float32)
  out = propose(objectness, np.zeros((5, 4), np.float32), anchor_boxes, (100, 100), pre_nms_top_n=5,
                post_nms_top_n=4, min_size=4.0)
  check_padded(out, np.array([[0, 0, 10, 9], [50, 50, 60, 60]]), np.array([0.95, 0.1]), 4)
  # Only the 2 best valid boxes enter NMS: [50, 50, 60, 60] (score 0.1) is not among them.
  out = propose(objectness, np.zeros((5, 4), np.float32), anchor_boxes, (100, 100), pre_nms_top_n=2,
                post_nms_top_n=4, min_size=4.0)
  check_padded(out, np.array([[0, 0, 10, 9]]), np.array([0.95]), 4)


def test_propose_all_boxes_dropped_gives_padding_without_nan():
  objectness, deltas = random_rpn_outputs(3)
  for kwargs in [dict(min_size=1000.0), dict(anchor_valid=np.zeros(len(GRID), bool))]:
    out = propose(objectness, deltas, GRID, IMAGE_HW, pre_nms_top_n=100, post_nms_top_n=20,
                  **kwargs)
    assert not np.any(out.valid) and np.all(np.asarray(out.boxes) == 0)
    assert np.all(np.asarray(out.scores) == 0)
  # Huge size deltas are clamped: finite boxes.
  huge = np.concatenate([np.zeros_like(deltas[:, :2]), np.full_like(deltas[:, 2:], 50.0)], 1)
  out = propose(objectness, huge, GRID, IMAGE_HW, pre_nms_top_n=100, post_nms_top_n=20)
  assert np.all(np.isfinite(out.boxes)) and int(np.sum(out.valid)) >= 1


def test_propose_anchor_valid_masks_anchors():
  objectness, deltas = random_rpn_outputs(4)
  keep = np.random.default_rng(4).uniform(size=len(GRID)) < 0.5
  out = propose(objectness, deltas, GRID, IMAGE_HW, pre_nms_top_n=200, post_nms_top_n=40,
                anchor_valid=keep)
  boxes, scores = loop_propose(objectness[keep], deltas[keep], GRID[keep], IMAGE_HW, 200, 40, 0.7, 0)
  check_padded(out, boxes, scores, 40)


def test_propose_vmap_over_images_of_different_sizes():
  sizes = np.array([[128, 160], [96, 112], [64, 160]])
  outputs = [random_rpn_outputs(10 + i) for i in range(3)]
  objectness = np.stack([o for o, _ in outputs])
  deltas = np.stack([d for _, d in outputs])
  batched = jax.jit(jax.vmap(lambda o, d, hw: ops.propose(o, d, GRID, hw, pre_nms_top_n=300,
                                                          post_nms_top_n=60, min_size=4.0)))
  out = batched(objectness, deltas, sizes)
  for i in range(3):
    boxes, scores = loop_propose(objectness[i], deltas[i], GRID, tuple(sizes[i]), 300, 60, 0.7, 4.0)
    check_padded(jax.tree.map(lambda x: x[i], out), boxes, scores, 60)
    assert np.all(np.asarray(out.boxes[i])[:, 2] <= sizes[i, 1])
    assert np.all(np.asarray(out.boxes[i])[:, 3] <= sizes[i, 0])


def test_propose_boxes_are_differentiable_in_the_deltas():
  """Exact joint training needs gradients through the proposal coordinates (SPEC B5)."""
  objectness, deltas = random_rpn_outputs(5)

  def total(d):
    out = ops.propose(objectness, d, GRID, IMAGE_HW, pre_nms_top_n=100, post_nms_top_n=20)
    return jnp.sum(out.boxes * out.valid[:, None])

  grad = np.asarray(jax.jit(jax.grad(total))(jnp.asarray(deltas)))
  assert np.all(np.isfinite(grad))
  rows = np.flatnonzero(np.any(grad != 0, axis=1))
  assert 0 < len(rows) <= 20  # only the kept anchors; clipped coordinates have zero gradient


@pytest.mark.parametrize("nms_iou", [0.7, 1.0])
def test_propose_random_ranking_is_the_naive_pipeline_on_the_random_priorities(nms_iou):
  # SPEC B6's "no cls": the boxes are ranked by a uniform priority per anchor instead of the
  # objectness; the reference pipeline sorted by those priorities keeps the same boxes, and the
  # scores given back are the boxes' objectness.
  objectness, deltas = random_rpn_outputs(20)
  key = jax.random.key(7)
  priority = np.asarray(jax.random.uniform(key, (len(GRID),)))
  out = propose(objectness, deltas, GRID, IMAGE_HW, pre_nms_top_n=400, post_nms_top_n=60,
                nms_iou=nms_iou, min_size=4.0, ranking_key=key)
  boxes, priorities = loop_propose(priority, deltas, GRID, IMAGE_HW, 400, 60, nms_iou, 4.0)
  chosen = [int(np.flatnonzero(priority == p)[0]) for p in priorities]
  check_padded(out, boxes, objectness[chosen], 60)
  # Not the objectness ranking: the objectness of the chosen boxes is not in descending order.
  assert np.any(np.diff(objectness[chosen]) > 0)


def test_propose_random_ranking_draws_every_valid_box_alike():
  # 12 anchors, 3 of them empty after clipping: over 3,000 keys, each of the 9 others is among
  # the 3 proposals 1/3 of the time whatever its objectness, the empty ones never.
  anchor_boxes = np.array([[4 * i, 0, 4 * i + 20, 20] for i in range(9)]
                          + [[200, 0, 220, 20]] * 3, np.float32)
  objectness = np.linspace(5.0, -5.0, 12).astype(np.float32)

  def chosen(key):
    out = ops.propose(objectness, np.zeros((12, 4), np.float32), anchor_boxes, (64, 64),
                      pre_nms_top_n=12, post_nms_top_n=3, nms_iou=1.0, ranking_key=key)
    return jnp.any(jnp.all(out.boxes[:, None, :] == jnp.asarray(anchor_boxes)[None], -1)
                   & out.valid[:, None], axis=0)  # [12] each anchor's box among the proposals

  keys = jax.random.split(jax.random.key(0), 3000)
  frequency = np.asarray(jax.jit(jax.vmap(chosen))(keys)).mean(axis=0)
  assert np.all(frequency[9:] == 0)
  np.testing.assert_allclose(frequency[:9], 1 / 3, atol=0.035)  # 4 standard deviations
  # The same key draws the same proposals; another key other ones.
  a, b, c = (np.asarray(jax.jit(chosen)(k)) for k in (keys[0], keys[0], keys[1]))
  assert np.array_equal(a, b) and a.sum() == 3 and not np.array_equal(a, c)


def test_propose_without_nms_keeps_what_nms_at_iou_one_keeps():
  # nms_iou >= 1 given as a number skips the NMS loop; as an array it runs it (IoU is never above 1,
  # so it suppresses nothing): the same proposals, padding included.
  objectness, deltas = random_rpn_outputs(21)
  for post in (50, 800):  # fewer and more slots than valid boxes
    kwargs = dict(pre_nms_top_n=700, post_nms_top_n=post, min_size=8.0)
    skipped = propose(objectness, deltas, GRID, IMAGE_HW, nms_iou=1.0, **kwargs)
    looped = propose(objectness, deltas, GRID, IMAGE_HW, nms_iou=jnp.float32(1.0), **kwargs)
    for got, expected in zip(skipped, looped):
      np.testing.assert_array_equal(got, expected)
    assert 0 < int(np.sum(skipped.valid)) <= post


def test_propose_bad_shapes_raise():
  with pytest.raises(ValueError, match="must be \\[720\\] and \\[720, 4\\]"):
    ops.propose(np.zeros(720), np.zeros((720, 3)), GRID, IMAGE_HW, pre_nms_top_n=5,
                post_nms_top_n=5)


# -- detect ------------------------------------------------------------------------------------


def loop_detect(class_scores, class_deltas, rois, roi_valid, image_hw, threshold, nms_iou, limit):
  """py-faster-rcnn's test_net per image: per class, threshold, NMS; then the best `limit` overall."""
  num_rois, columns = class_scores.shape
  found = []  # (score, flat index, box, class)
  for j in range(1, columns):
    cands = []
    for r in range(num_rois):
      if not roi_valid[r] or not class_scores[r, j] > np.float32(threshold):
        continue
      box = loop_clip(loop_decode(class_deltas[r, j], rois[r], (10, 10, 5, 5)), *image_hw)
      if box[2] > box[0] and box[3] > box[1]:
        cands.append((float(class_scores[r, j]), r * (columns - 1) + j - 1, box, j - 1))
    cands.sort(key=lambda c: (-c[0], c[1]))
    found += [cands[k] for k in greedy_nms([c[2] for c in cands], nms_iou)]
  found.sort(key=lambda c: (-c[0], c[1]))
  found = found[:limit]
  return (np.array([f[2] for f in found]).reshape(-1, 4), np.array([f[0] for f in found]),
          np.array([f[3] for f in found], np.int32))


def random_head_outputs(seed: int, num_rois: int = 60, num_classes: int = 4):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, 120, (8, 2))
  objects = np.concatenate([xy, xy + rng.uniform(15, 60, (8, 2))], 1)
  rois = objects[rng.integers(0, 8, num_rois)] + rng.normal(0, 4, (num_rois, 4))
  logits = rng.normal(0, 2, (num_rois, num_classes + 1))
  scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  deltas = rng.normal(0, 0.5, (num_rois, num_classes + 1, 4))
  return scores.astype(np.float32), deltas.astype(np.float32), rois.astype(np.float32)


def check_detections(out, boxes, scores, classes, size):
  check_padded(out, boxes, scores, size)
  n = len(scores)
  np.testing.assert_array_equal(np.asarray(out.classes)[:n], classes)
  assert out.classes.dtype == jnp.int32 and np.all(np.asarray(out.classes)[n:] == 0)


@pytest.mark.parametrize("threshold,nms_iou,limit", [(0.05, 0.3, 100), (0.2, 0.5, 10), (0.0, 0.3, 300)])
def test_detect_matches_per_class_loop(threshold, nms_iou, limit):
  scores, deltas, rois = random_head_outputs(limit)
  roi_valid = np.arange(60) < 55
  out = detect(scores, deltas, rois, roi_valid, (140, 170), score_threshold=threshold,
               nms_iou=nms_iou, max_detections=limit)
  expected = loop_detect(scores, deltas, rois, roi_valid, (140, 170), threshold, nms_iou, limit)
  check_detections(out, *expected, limit)
  assert 0 < len(expected[1]) and (len(expected[1]) == limit) == (limit == 10)
  # The flat [R, 4 (K + 1)] layout of bbox_pred gives the same.
  flat = detect(scores, deltas.reshape(60, -1), rois, roi_valid, (140, 170),
                score_threshold=threshold, nms_iou=nms_iou, max_detections=limit)
  for a, b in zip(flat, out):
    np.testing.assert_array_equal(a, b)


def test_detect_hand_computed_case():
  """Zero deltas. RoIs 0 and 1 overlap (IoU 380 / 420 = 0.9): in head column 1 (class 0) RoI 0
  (0.8) suppresses RoI 1 (0.7); in column 2 (class 1) they tie at 0.1 and the lower index wins.
  RoI 2 is kept for class 0 (0.06 > 0.05) but not class 1 (0.04); the background column (0.9) is
  never a detection."""
  rois = np.array([[0, 0, 20, 20], [1, 0, 21, 20], [50, 50, 60, 60]], np.float32)
  scores = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.9, 0.06, 0.04]], np.float32)
  out = detect(scores, np.zeros((3, 3, 4), np.float32), rois, np.ones(3, bool), (100, 100),
               max_detections=5)
  check_detections(out, np.array([[0, 0, 20, 20], [0, 0, 20, 20], [50, 50, 60, 60]]),
                   np.array([0.8, 0.1, 0.06]), np.array([0, 1, 0]), 5)


def test_detect_nothing_to_detect_gives_padding_without_nan():
  scores, deltas, rois = random_head_outputs(2)
  out = detect(scores, deltas, rois, np.zeros(60, bool), (140, 170), max_detections=20)
  assert not np.any(out.valid) and np.all(np.asarray(out.boxes) == 0)
  background = np.zeros_like(scores)
  background[:, 0] = 1  # every RoI certainly background
  out = detect(background, deltas, rois, np.ones(60, bool), (140, 170), max_detections=20)
  assert not np.any(out.valid) and np.all(np.isfinite(out.boxes)) and np.all(np.asarray(out.scores) == 0)


def test_detect_vmap_over_images():
  outputs = [random_head_outputs(20 + i) for i in range(2)]
  stacked = [np.stack(x) for x in zip(*outputs)]
  sizes = np.array([[140, 170], [90, 100]])
  valid = np.ones((2, 60), bool)
  out = jax.jit(jax.vmap(lambda s, d, r, v, hw: ops.detect(s, d, r, v, hw, max_detections=50)))(
      *stacked, valid, sizes)
  for i in range(2):
    expected = loop_detect(*outputs[i], valid[i], tuple(sizes[i]), 0.05, 0.3, 50)
    check_detections(jax.tree.map(lambda x: x[i], out), *expected, 50)


def test_detect_bad_shapes_raise():
  scores, deltas, rois = random_head_outputs(0)
  with pytest.raises(ValueError, match="class_deltas must be"):
    ops.detect(scores, deltas[:, :3], rois, np.ones(60, bool), (10, 10))
  with pytest.raises(ValueError, match="class_scores must be"):
    ops.detect(scores[:, :1], deltas, rois, np.ones(60, bool), (10, 10))


# -- merging several runs' detections (testing at several sizes) -----------------------------------

merge = jax.jit(ops.merge_detections, static_argnames=("max_detections", "voting_iou"))


def loop_merge(boxes, scores, classes, valid, nms_iou, limit, voting_iou):
  """Per class: greedy NMS in descending score (ties: lower index), then each kept box's voters (same
  class, valid, IoU >= voting_iou) averaged with their scores as weights; the `limit` best overall."""
  found = []
  for c in sorted(set(classes[valid].tolist())):
    idx = [i for i in np.flatnonzero(valid & (classes == c))]
    idx.sort(key=lambda i: (-scores[i], i))
    for k in greedy_nms([boxes[i] for i in idx], nms_iou):
      i = idx[k]
      box = boxes[i].astype(np.float64)
      if voting_iou > 0:
        voters = [j for j in np.flatnonzero(valid & (classes == c))
                  if loop_iou(boxes[i], boxes[j]) >= voting_iou]
        box = sum(scores[j] * boxes[j].astype(np.float64) for j in voters) / sum(scores[j] for j in voters)
      found.append((scores[i], i, box, c))
  found.sort(key=lambda f: (-f[0], f[1]))
  found = found[:limit]
  return (np.array([f[2] for f in found]).reshape(-1, 4), np.array([f[0] for f in found]),
          np.array([f[3] for f in found], np.int32))


@pytest.mark.parametrize("nms_iou,limit,voting_iou", [(0.3, 100, 0.0), (0.5, 100, 0.7), (0.3, 8, 0.5)])
def test_merge_detections_matches_per_class_loop(nms_iou, limit, voting_iou):
  # Three runs' padded detections of the same image, concatenated: 3 x 20 slots, 4 classes.
  rng = np.random.default_rng(limit)
  scores, deltas, rois = random_head_outputs(limit)
  runs = [detect(scores * np.float32(rng.uniform(0.7, 1.0)), deltas + rng.normal(0, 0.05, deltas.shape)
                 .astype(np.float32), rois, np.arange(60) < 50 + 5 * r, (140, 170),
                 max_detections=20) for r in range(3)]
  boxes, scores, classes, valid = (np.concatenate([np.asarray(x) for x in parts]) for parts in zip(*runs))
  out = merge(ops.Detections(boxes, scores, classes, valid), nms_iou=nms_iou, max_detections=limit,
              voting_iou=voting_iou)
  expected = loop_merge(boxes, scores, classes, valid, nms_iou, limit, voting_iou)
  check_detections(out, *expected, limit)
  assert 8 <= len(expected[1]) <= limit and valid.sum() > len(expected[1])  # some merged away


def test_merge_detections_hand_computed_case():
  """Two sizes found the same "0" (IoU 0.9: 0.9 suppresses 0.6; voting averages them 0.9 : 0.6) and
  a "1" at the same place (another class: kept); a padding slot (score 0.95) is ignored."""
  boxes = np.array([[0, 0, 20, 20], [50, 50, 60, 60], [99, 99, 99, 99],
                    [1, 0, 21, 20], [0, 0, 20, 20]], np.float32)
  scores = np.array([0.9, 0.5, 0.95, 0.6, 0.3], np.float32)
  classes = np.array([0, 0, 0, 0, 1], np.int32)
  valid = np.array([True, True, False, True, True])
  d = ops.Detections(boxes, scores, classes, valid)
  plain = merge(d, nms_iou=0.3, max_detections=4)
  check_detections(plain, np.array([[0, 0, 20, 20], [50, 50, 60, 60], [0, 0, 20, 20]]),
                   np.array([0.9, 0.5, 0.3]), np.array([0, 0, 1]), 4)
  voted = merge(d, nms_iou=0.3, max_detections=4, voting_iou=0.8)
  check_detections(voted, np.array([[0.4, 0, 20.4, 20], [50, 50, 60, 60], [0, 0, 20, 20]]),
                   np.array([0.9, 0.5, 0.3]), np.array([0, 0, 1]), 4)
  nothing = merge(d._replace(valid=np.zeros(5, bool)), nms_iou=0.3, max_detections=4, voting_iou=0.8)
  assert not np.any(nothing.valid) and np.all(np.asarray(nothing.boxes) == 0)
