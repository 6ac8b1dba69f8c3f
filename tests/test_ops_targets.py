"""Anchor labelling, fixed-size sampling and RoI targets (SPEC B2, B4) vs hand-computed cases and slow
Python-loop references of py-faster-rcnn's anchor_target_layer / proposal_target_layer semantics.

Boxes in the random cases have integer coordinates, so that every area is exact in float32 and an
IoU is the correctly rounded quotient in both the op and the reference: thresholds and best-anchor
ties then compare alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax import ops
from overfeat_jax.ops import (BACKGROUND, DETECTOR_WEIGHTS, IGNORE, NEGATIVE, PAD_INDEX, POSITIVE,
                              anchors, inside_image)

# Jitted once per shape: op-by-op dispatch of these many small ops is slower than compiling them.
match_anchors = jax.jit(ops.match_anchors, static_argnames=("pos_iou", "neg_iou"))
sample_fixed = jax.jit(ops.sample_fixed, static_argnames=("num_samples", "positive_fraction"))
sample_fixed_indices = jax.jit(ops.sample_fixed_indices,
                               static_argnames=("num_samples", "positive_fraction"))
sample_rois = jax.jit(ops.sample_rois, static_argnames=("num_rois", "fg_fraction", "fg_iou",
                                                        "bg_iou", "weights"))


def pair_iou(p: np.ndarray, q: np.ndarray) -> np.float32:
  """IoU of two boxes, exact quotient rounded once to float32 (0 for an empty union)."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
  h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
  union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
  return np.float32(w * h / union if union > 0 else 0.0)


def loop_match(anchor_boxes, anchor_valid, gt_boxes, gt_valid, pos=0.7, neg=0.3):
  """py-faster-rcnn's anchor labelling, one anchor / box at a time (SPEC B2; "> pos" as the paper)."""
  inside = [a for a in range(len(anchor_boxes)) if anchor_valid[a]]
  gts = [g for g in range(len(gt_boxes)) if gt_valid[g]]
  iou = {(a, g): pair_iou(anchor_boxes[a], gt_boxes[g]) for a in inside for g in gts}
  labels = [IGNORE] * len(anchor_boxes)
  matched = [0] * len(anchor_boxes)
  for a in inside:
    if not gts:
      labels[a] = NEGATIVE
      continue
    best = gts[0]
    for g in gts:
      if iou[a, g] > iou[a, best]:
        best = g
    matched[a] = best
    if iou[a, best] < np.float32(neg):
      labels[a] = NEGATIVE
  for g in gts:  # each box's best anchor(s), ties included
    top = max((iou[a, g] for a in inside), default=0)
    if top > 0:
      for a in inside:
        if iou[a, g] == top:
          labels[a] = POSITIVE
  for a in inside:
    if gts and iou[a, matched[a]] > np.float32(pos):
      labels[a] = POSITIVE
  return np.array(labels), np.array(matched)


# -- match_anchors ------------------------------------------------------------------------------

GT = np.array([[10, 10, 50, 50],  # area 1600
               [60, 60, 90, 90],  # area 900
               [0, 0, 5, 5]], np.float32)  # padding slot (gt_valid False): must match nothing
GT_VALID = np.array([True, True, False])
HAND_ANCHORS = np.array([
    [10, 10, 50, 50],  # 0: IoU 1 with box 0 -> positive
    [10, 10, 50, 30],  # 1: IoU 800 / 1600 = 0.5 with box 0, not its best -> ignored
    [60, 60, 90, 80],  # 2: IoU 600 / 900 = 0.667 with box 1: below 0.7 but box 1's best -> positive
    [60, 70, 90, 90],  # 3: the same IoU, a tie for box 1's best -> positive too
    [0, 0, 5, 5],  # 4: IoU 0 with both real boxes (1 with the padding slot) -> negative
    [60, 60, 90, 101],  # 5: IoU 900 / 1230 = 0.73 with box 1 but crosses the bottom -> ignored
    [10, 10, 50, 38],  # 6: IoU exactly 0.7 with box 0: not "higher than 0.7" -> ignored
    [10, 10, 22, 50],  # 7: IoU exactly 0.3 with box 0: not below 0.3 -> ignored
], np.float32)
HAND_LABELS = [POSITIVE, IGNORE, POSITIVE, POSITIVE, NEGATIVE, IGNORE, IGNORE, IGNORE]


def test_inside_image_drops_boundary_crossing_anchors():
  np.testing.assert_array_equal(inside_image(HAND_ANCHORS, (100, 100)), [True] * 5 + [False, True, True])
  np.testing.assert_array_equal(inside_image(HAND_ANCHORS, (100, 100), border=1), [True] * 8)
  np.testing.assert_array_equal(inside_image(HAND_ANCHORS, (101, 100)), [True] * 8)
  np.testing.assert_array_equal(inside_image(np.array([[-1, 0, 4, 4]], np.float32), (9, 9)), [False])


def test_match_anchors_hand_computed_case():
  valid = inside_image(HAND_ANCHORS, (100, 100))
  labels, matched = match_anchors(HAND_ANCHORS, valid, GT, GT_VALID)
  np.testing.assert_array_equal(labels, HAND_LABELS)
  assert labels.dtype == jnp.int32 and matched.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(matched)[[0, 2, 3]], [0, 1, 1])
  expected_labels, expected_matched = loop_match(HAND_ANCHORS, np.asarray(valid), GT, GT_VALID)
  np.testing.assert_array_equal(labels, expected_labels)
  # With the boundary anchor allowed it is the best for box 1 (0.73 > 0.667) and above 0.7: anchors
  # 2 and 3 lose the best-anchor rule and fall back to ignored.
  labels, matched = match_anchors(HAND_ANCHORS, np.ones(8, bool), GT, GT_VALID)
  np.testing.assert_array_equal(labels, [POSITIVE, IGNORE, IGNORE, IGNORE, NEGATIVE, POSITIVE, IGNORE,
                                         IGNORE])
  assert int(matched[5]) == 1


def test_match_anchors_thresholds_are_parameters():
  valid = inside_image(HAND_ANCHORS, (100, 100))
  labels, _ = match_anchors(HAND_ANCHORS, valid, GT, GT_VALID, pos_iou=0.45, neg_iou=0.6)
  # 0.5, 0.667, 0.7 now all above 0.45; 0.3 and 0 below 0.6.
  np.testing.assert_array_equal(labels, [POSITIVE, POSITIVE, POSITIVE, POSITIVE, NEGATIVE, IGNORE,
                                         POSITIVE, NEGATIVE])


def test_match_anchors_box_without_overlap_forces_no_positive():
  """A ground-truth box that overlaps no valid anchor (best IoU 0) makes nothing positive."""
  boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
  gt = np.array([[50, 50, 60, 60]], np.float32)
  labels, _ = match_anchors(boxes, np.ones(2, bool), gt, np.ones(1, bool))
  np.testing.assert_array_equal(labels, [NEGATIVE, NEGATIVE])


def test_match_anchors_without_ground_truth_all_valid_anchors_negative():
  valid = inside_image(HAND_ANCHORS, (100, 100))
  expected = np.where(np.asarray(valid), NEGATIVE, IGNORE)
  labels, matched = match_anchors(HAND_ANCHORS, valid, GT, np.zeros(3, bool))
  np.testing.assert_array_equal(labels, expected)
  np.testing.assert_array_equal(matched, np.zeros(8))
  labels, _ = match_anchors(HAND_ANCHORS, valid, np.zeros((0, 4), np.float32), np.zeros(0, bool))
  np.testing.assert_array_equal(labels, expected)


def random_gt(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
  x1 = rng.integers(0, width - 8, count)
  y1 = rng.integers(0, height - 8, count)
  w = rng.integers(8, 70, count)
  h = rng.integers(8, 70, count)
  return np.stack([x1, y1, np.minimum(x1 + w, width), np.minimum(y1 + h, height)], 1).astype(np.float32)


GRID = anchors((6, 8), 16, (16, 32, 64), (0.5, 1.0, 2.0), offset=8.0)  # 432 integer anchors
IMAGE_HW = (96, 128)


@pytest.mark.parametrize("seed", range(4))
def test_match_anchors_matches_loop_on_random_boxes(seed):
  rng = np.random.default_rng(seed)
  gt = random_gt(rng, 6, *IMAGE_HW)
  gt_valid = np.array([True] * (2 + seed) + [False] * (4 - seed))
  if seed == 3:
    gt[1] = gt[0]  # a duplicated box: both share their best anchors
  valid = np.asarray(inside_image(GRID, IMAGE_HW))
  labels, matched = match_anchors(GRID, valid, gt, gt_valid)
  expected_labels, expected_matched = loop_match(GRID, valid, gt, gt_valid)
  np.testing.assert_array_equal(labels, expected_labels)
  positive = expected_labels == POSITIVE
  np.testing.assert_array_equal(np.asarray(matched)[positive], expected_matched[positive])
  assert positive.sum() > 0  # a case with all three kinds
  assert (expected_labels == NEGATIVE).sum() > 100 and (expected_labels == IGNORE).sum() > 0


def test_match_anchors_jit_and_vmap_over_images():
  rng = np.random.default_rng(11)
  gts = np.stack([random_gt(rng, 4, *IMAGE_HW) for _ in range(3)])
  gt_valid = np.array([[True, True, False, False], [True] * 4, [False] * 4])
  hws = np.array([[96, 128], [80, 128], [96, 100]])
  valid = jax.vmap(inside_image, in_axes=(None, 0))(GRID, hws)
  batched = jax.jit(jax.vmap(ops.match_anchors, in_axes=(None, 0, 0, 0)))
  labels, matched = batched(GRID, valid, gts, gt_valid)
  for i in range(3):
    expected_labels, expected_matched = loop_match(GRID, np.asarray(valid[i]), gts[i], gt_valid[i])
    np.testing.assert_array_equal(labels[i], expected_labels)
    positive = expected_labels == POSITIVE
    np.testing.assert_array_equal(np.asarray(matched[i])[positive], expected_matched[positive])
  assert not np.any(np.asarray(labels[2]) == POSITIVE)


def test_match_anchors_bad_shapes_raise():
  with pytest.raises(ValueError, match="anchors must be"):
    match_anchors(np.zeros((4, 3)), np.ones(4, bool), GT, GT_VALID)
  with pytest.raises(ValueError, match="gt_valid must have shape"):
    match_anchors(HAND_ANCHORS, np.ones(8, bool), GT, np.ones(2, bool))


# -- sample_fixed ------------------------------------------------------------------------------


def make_labels(rng: np.random.Generator, n: int, num_pos: int, num_neg: int) -> np.ndarray:
  labels = np.full(n, IGNORE, np.int32)
  labels[rng.permutation(n)[:num_pos + num_neg]] = [POSITIVE] * num_pos + [NEGATIVE] * num_neg
  labels[np.flatnonzero(labels == IGNORE)[:3]] = 7  # stray values count as ignored
  return labels


@pytest.mark.parametrize("num_pos,num_neg", [(0, 1000), (5, 1000), (300, 1000), (300, 50), (3, 7),
                                             (0, 0)])
def test_sample_fixed_counts(num_pos, num_neg):
  labels = make_labels(np.random.default_rng(num_pos + num_neg), 2000, num_pos, num_neg)
  indices, sample_labels, sample_valid = sample_fixed_indices(labels, jax.random.key(0))
  indices, sample_labels, sample_valid = map(np.asarray, (indices, sample_labels, sample_valid))
  assert indices.shape == sample_labels.shape == sample_valid.shape == (256,)
  want_pos = min(num_pos, 128)
  want_neg = min(num_neg, 256 - want_pos)
  real = indices[sample_valid]
  assert len(real) == want_pos + want_neg and len(set(real.tolist())) == len(real)
  # Positives first, then negatives, then padding.
  np.testing.assert_array_equal(sample_labels, [POSITIVE] * want_pos + [NEGATIVE] * want_neg
                                + [IGNORE] * (256 - want_pos - want_neg))
  np.testing.assert_array_equal(labels[real], sample_labels[sample_valid])
  assert np.all(indices[~sample_valid] == PAD_INDEX)
  dense = np.asarray(sample_fixed(labels, jax.random.key(0)))
  expected = np.full(2000, IGNORE)
  expected[real] = labels[real]
  np.testing.assert_array_equal(dense, expected)


def test_sample_fixed_takes_every_candidate_when_there_are_few():
  labels = np.array([IGNORE, POSITIVE, NEGATIVE, 5, NEGATIVE, IGNORE, POSITIVE], np.int32)
  dense = sample_fixed(labels, jax.random.key(3))
  np.testing.assert_array_equal(dense, np.where(labels == 5, IGNORE, labels))
  indices, _, valid = sample_fixed_indices(labels, jax.random.key(3), num_samples=3,
                                           positive_fraction=0.5)
  # One positive (floor(1.5)), then two negatives.
  assert labels[indices[0]] == POSITIVE and sorted(np.asarray(indices[1:]).tolist()) == [2, 4]
  assert np.all(valid)


def test_sample_fixed_randomness_depends_only_on_the_key():
  labels = make_labels(np.random.default_rng(1), 3000, 400, 2000)
  first = sample_fixed(labels, jax.random.key(42))
  np.testing.assert_array_equal(first, sample_fixed(labels, jax.random.key(42)))
  np.testing.assert_array_equal(first, ops.sample_fixed(labels, jax.random.key(42)))  # eager
  assert not np.array_equal(first, sample_fixed(labels, jax.random.key(43)))


def test_sample_fixed_is_uniform_among_candidates():
  """10 positives, 20 negatives, 8 samples at 1:1: each positive is taken with probability 4/10,
  each negative with 4/20 (over 400 keys: within 4 standard deviations)."""
  labels = np.full(40, IGNORE, np.int32)
  labels[:10], labels[10:30] = POSITIVE, NEGATIVE
  keys = jax.random.split(jax.random.key(0), 400)
  dense = jax.jit(jax.vmap(lambda k: ops.sample_fixed(labels, k, num_samples=8)))(keys)
  frequency = np.mean(np.asarray(dense) != IGNORE, axis=0)
  assert np.all(np.abs(frequency[:10] - 0.4) < 4 * np.sqrt(0.4 * 0.6 / 400))
  assert np.all(np.abs(frequency[10:30] - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 400))
  assert np.all(frequency[30:] == 0)
  assert np.all(np.sum(np.asarray(dense) == POSITIVE, axis=1) == 4)


def test_sample_fixed_bad_arguments_raise():
  with pytest.raises(ValueError, match="positive_fraction"):
    sample_fixed(np.zeros(4, np.int32), jax.random.key(0), positive_fraction=1.5)
  with pytest.raises(ValueError, match="labels must be"):
    sample_fixed(np.zeros((4, 2), np.int32), jax.random.key(0))


# -- sample_rois -------------------------------------------------------------------------------


def loop_encode(box: np.ndarray, ref: np.ndarray, weights=DETECTOR_WEIGHTS) -> np.ndarray:
  box, ref = np.asarray(box, np.float64), np.asarray(ref, np.float64)
  w, h = box[2] - box[0], box[3] - box[1]
  rw, rh = ref[2] - ref[0], ref[3] - ref[1]
  dx = (box[0] + w / 2 - ref[0] - rw / 2) / rw
  dy = (box[1] + h / 2 - ref[1] - rh / 2) / rh
  return np.array([weights[0] * dx, weights[1] * dy, weights[2] * np.log(w / rw),
                   weights[3] * np.log(h / rh)])


def loop_roi_candidates(proposals, proposal_valid, gt, gt_labels, gt_valid, fg=0.5, bg=(0.1, 0.5)):
  """py-faster-rcnn's proposal_target_layer before sampling: for each of proposals + ground truth,
  its kind (POSITIVE fg / NEGATIVE bg / IGNORE), head label and regression target."""
  boxes = np.concatenate([proposals, gt])
  valid = np.concatenate([proposal_valid, gt_valid])
  gts = [g for g in range(len(gt)) if gt_valid[g]]
  kinds, labels, targets = [], [], []
  for i, box in enumerate(boxes):
    kind, label, target = IGNORE, BACKGROUND, np.zeros(4)
    if valid[i] and not gts:
      kind = NEGATIVE
    elif valid[i]:
      best = gts[0]
      for g in gts:
        if pair_iou(box, gt[g]) > pair_iou(box, gt[best]):
          best = g
      iou = pair_iou(box, gt[best])
      if iou >= np.float32(fg):
        kind, label, target = POSITIVE, gt_labels[best] + 1, loop_encode(gt[best], box)
      elif np.float32(bg[0]) <= iou < np.float32(bg[1]):
        kind = NEGATIVE
    kinds.append(kind)
    labels.append(label)
    targets.append(target)
  return boxes, np.array(kinds), np.array(labels), np.array(targets)


def jittered_proposals(rng, gt, count, spread):
  """Integer boxes around random ground-truth boxes: a mix of foreground, background and far ones."""
  base = gt[rng.integers(0, len(gt), count)]
  return np.clip(base + rng.integers(-spread, spread + 1, (count, 4)), 0, 200).astype(np.float32)


def check_roi_sample(out, proposals, proposal_valid, gt, gt_labels, gt_valid, num_rois=128,
                     fg_fraction=0.25, fg=0.5, bg=(0.1, 0.5)):
  """Asserts the sample against the reference candidates; returns (#fg, #bg)."""
  boxes, kinds, labels, targets = loop_roi_candidates(proposals, proposal_valid, gt, gt_labels,
                                                      gt_valid, fg, bg)
  idx, valid = np.asarray(out.indices), np.asarray(out.valid)
  assert idx.shape == valid.shape == (num_rois,) and out.rois.shape == out.targets.shape == (num_rois, 4)
  real = idx[valid]
  assert len(set(real.tolist())) == len(real) and np.all(idx[~valid] == PAD_INDEX)
  want_fg = min(int(np.sum(kinds == POSITIVE)), int(num_rois * fg_fraction))
  want_bg = min(int(np.sum(kinds == NEGATIVE)), num_rois - want_fg)
  np.testing.assert_array_equal(kinds[real], [POSITIVE] * want_fg + [NEGATIVE] * want_bg)
  np.testing.assert_array_equal(np.asarray(out.rois)[valid], boxes[real])
  np.testing.assert_array_equal(np.asarray(out.labels)[valid], labels[real])
  np.testing.assert_allclose(np.asarray(out.targets)[valid], targets[real], rtol=1e-4, atol=1e-4)
  # Padding: zero boxes, background, zero targets.
  assert np.all(np.asarray(out.rois)[~valid] == 0) and np.all(np.asarray(out.targets)[~valid] == 0)
  assert np.all(np.asarray(out.labels)[~valid] == BACKGROUND)
  assert np.all(np.isfinite(out.targets))
  return want_fg, want_bg


@pytest.mark.parametrize("seed", range(3))
def test_sample_rois_matches_reference_candidates(seed):
  rng = np.random.default_rng(seed)
  gt = random_gt(rng, 5, 160, 200)
  gt_labels = rng.integers(0, 10, 5).astype(np.int32)
  gt_valid = np.array([True, True, True, seed != 2, False])
  proposals = np.concatenate([jittered_proposals(rng, gt[:4], 150, 6),
                              jittered_proposals(rng, gt[:4], 250, 25)])
  proposal_valid = rng.uniform(size=400) < 0.9
  out = sample_rois(proposals, proposal_valid, gt, gt_labels, gt_valid, jax.random.key(seed))
  num_fg, num_bg = check_roi_sample(out, proposals, proposal_valid, gt, gt_labels, gt_valid)
  assert (num_fg, num_bg) == (32, 96)  # plenty of both: exactly 25% foreground of 128


def test_sample_rois_ground_truth_boxes_are_always_candidates():
  """Proposals far from every object: the only foreground RoIs are the ground-truth boxes, with
  their own class + 1 and zero regression targets."""
  gt = np.array([[10, 10, 40, 50], [60, 20, 90, 80], [0, 0, 9, 9]], np.float32)
  gt_labels = np.array([3, 0, 7], np.int32)
  gt_valid = np.array([True, True, False])
  proposals = np.array([[150, 150, 190, 190]] * 20 + [[30, 30, 70, 70]] * 5, np.float32)
  out = sample_rois(proposals, np.ones(25, bool), gt, gt_labels, gt_valid, jax.random.key(0),
                    num_rois=16)
  fg = np.asarray(out.labels) != BACKGROUND
  assert sorted(np.asarray(out.indices)[fg].tolist()) == [25, 26]  # gt 0 and 1, not the padding
  assert sorted(np.asarray(out.labels)[fg].tolist()) == [1, 4]
  np.testing.assert_allclose(np.asarray(out.targets)[fg], 0, atol=1e-6)
  # [30, 30, 70, 70] has IoU 0.2 / 0.125 with the two boxes: background; the far ones IoU 0: unused.
  assert np.sum(out.valid) == 2 + 5
  check_roi_sample(out, proposals, np.ones(25, bool), gt, gt_labels, gt_valid, num_rois=16)


def test_sample_rois_too_few_candidates_pad_and_mask():
  gt = np.array([[10, 10, 50, 50]], np.float32)
  proposals = np.array([[12, 12, 50, 50], [0, 0, 30, 30], [100, 100, 120, 120], [0, 0, 0, 0]],
                       np.float32)
  valid = np.array([True, True, True, False])
  out = sample_rois(proposals, valid, gt, np.array([2], np.int32), np.ones(1, bool),
                    jax.random.key(1))
  assert check_roi_sample(out, proposals, valid, gt, [2], np.ones(1, bool)) == (2, 1)


def test_sample_rois_bg_range_and_fractions_are_parameters():
  rng = np.random.default_rng(9)
  gt = random_gt(rng, 3, 160, 200)
  proposals = np.concatenate([jittered_proposals(rng, gt, 100, 6), jittered_proposals(rng, gt, 100, 40)])
  args = (proposals, np.ones(200, bool), gt, np.array([0, 1, 2], np.int32), np.ones(3, bool))
  out = sample_rois(*args, jax.random.key(2), num_rois=64, fg_fraction=0.5, fg_iou=0.6,
                    bg_iou=(0.0, 0.4))
  counts = check_roi_sample(out, *args, num_rois=64, fg_fraction=0.5, fg=0.6, bg=(0.0, 0.4))
  assert counts == (32, 32)


def test_sample_rois_without_ground_truth_samples_background_only():
  rng = np.random.default_rng(4)
  proposals = jittered_proposals(rng, random_gt(rng, 3, 160, 200), 60, 20)
  proposal_valid = np.arange(60) < 50
  for gt, gt_valid in [(np.zeros((2, 4), np.float32), np.zeros(2, bool)),
                       (np.zeros((0, 4), np.float32), np.zeros(0, bool))]:
    gt_labels = np.zeros(len(gt), np.int32)
    out = sample_rois(proposals, proposal_valid, gt, gt_labels, gt_valid, jax.random.key(0))
    assert check_roi_sample(out, proposals, proposal_valid, gt, gt_labels, gt_valid) == (0, 50)
    assert np.all(np.asarray(out.indices)[np.asarray(out.valid)] < 50)


def test_sample_rois_jit_vmap_and_gradients():
  rng = np.random.default_rng(5)
  gts = np.stack([random_gt(rng, 4, 160, 200) for _ in range(2)])
  gt_labels = rng.integers(0, 5, (2, 4)).astype(np.int32)
  gt_valid = np.array([[True, True, True, False], [False] * 4])
  proposals = np.stack([jittered_proposals(rng, g, 80, 15) for g in gts])
  proposal_valid = np.ones((2, 80), bool)
  keys = jax.random.split(jax.random.key(7), 2)
  fn = jax.jit(jax.vmap(lambda *a: ops.sample_rois(*a, num_rois=32)))
  out = fn(proposals, proposal_valid, gts, gt_labels, gt_valid, keys)
  for i in range(2):
    one = jax.tree.map(lambda x: x[i], out)
    single = sample_rois(proposals[i], proposal_valid[i], gts[i], gt_labels[i], gt_valid[i], keys[i],
                         num_rois=32)
    for a, b in zip(one, single):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    check_roi_sample(one, proposals[i], proposal_valid[i], gts[i], gt_labels[i], gt_valid[i],
                     num_rois=32)

  # Gradients reach the sampled proposals through the RoI boxes (exact joint training), never
  # through the targets.
  def loss(p, target_weight):
    out = ops.sample_rois(p, proposal_valid[0], gts[0], gt_labels[0], gt_valid[0], keys[0],
                          num_rois=32)
    return jnp.sum(out.rois * out.valid[:, None]) + target_weight * jnp.sum(out.targets)

  grad = jax.jit(jax.grad(loss))(jnp.asarray(proposals[0]), 1.0)
  assert np.all(np.isfinite(grad))
  sampled = np.asarray(out.indices[0])[np.asarray(out.valid[0])]
  from_proposals = sampled[sampled < 80]
  expected = np.zeros((80, 4))
  expected[from_proposals] = 1
  np.testing.assert_array_equal(grad, expected)
