"""Training targets of Faster R-CNN: anchor labelling, fixed-size sampling, and RoI targets for the
Fast R-CNN head (SPEC B2, B4), with py-faster-rcnn's semantics (anchor_target_layer.py,
proposal_target_layer.py) written for static shapes.

Everything here is pure jnp on one image (vmap over a batch): ground truth padded to G boxes with a
`gt_valid` mask, anchors / proposals with their own masks, fixed-size samples picked by random
priorities + top_k, and PAD_INDEX / validity masks wherever fewer real entries exist. No output
shape depends on the data.

Sentinels (STYLE "Take" 8):
  anchor / candidate labels: POSITIVE (1), NEGATIVE (0), IGNORE (-1).
  RoI class labels: BACKGROUND (0); an object of ground-truth class c in [0, K) (the datasets'
  0-based `box_labels`) is head class c + 1 — the column of the K + 1 scores of the Fast R-CNN head
  (`object_class_to_head` / ops.proposals.detect undoes it).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from overfeat_jax.ops.boxes import DETECTOR_WEIGHTS, box_iou, encode_boxes
from overfeat_jax.ops.nms import PAD_INDEX

POSITIVE = 1
NEGATIVE = 0
IGNORE = -1

# Class 0 of the Fast R-CNN head; object classes follow it.
BACKGROUND = 0

# The IoU of a pair that cannot match (an invalid anchor or a padding ground-truth box): below every
# threshold, and below the 0 of a real non-overlapping pair.
_NO_MATCH = -1.0


def object_class_to_head(classes: Any) -> Any:
  """Ground-truth class c in [0, K) -> the head's class index c + 1 (BACKGROUND is 0)."""
  return classes + (BACKGROUND + 1)


def inside_image(boxes: jax.Array, image_hw: Any, border: float = 0.0) -> jax.Array:
  """Which boxes lie inside the image, up to `border` pixels (py-faster-rcnn's `_allowed_border`,
  0): the anchors that take part in RPN training; boundary-crossing ones are ignored (SPEC B2).

  Args:
    boxes: [..., 4] (x1, y1, x2, y2).
    image_hw: (height, width), numbers or (traced) scalars, or a [2] array.
    border: pixels a box may stick out on each side.
  Returns:
    bool [...]: x1 >= -border, y1 >= -border, x2 <= width + border, y2 <= height + border.
  """
  boxes = jnp.asarray(boxes)
  height, width = image_hw[0], image_hw[1]
  return ((boxes[..., 0] >= -border) & (boxes[..., 1] >= -border)
          & (boxes[..., 2] <= width + border) & (boxes[..., 3] <= height + border))


def _check_boxes(name: str, boxes: Any, rows: int | None = None) -> None:
  if boxes.ndim != 2 or boxes.shape[1] != 4 or (rows is not None and boxes.shape[0] != rows):
    want = f"[{rows if rows is not None else 'N'}, 4]"
    raise ValueError(f"{name} must be {want} boxes, got shape {tuple(boxes.shape)}")


def _check_vector(name: str, values: Any, rows: int) -> None:
  if values.shape != (rows,):
    raise ValueError(f"{name} must have shape ({rows},), got {tuple(values.shape)}")


def _masked_iou(boxes: jax.Array, valid: jax.Array, gt_boxes: jax.Array,
                gt_valid: jax.Array) -> jax.Array:
  """box_iou [N, G] with _NO_MATCH wherever the box or the ground-truth box is invalid."""
  iou = box_iou(boxes, gt_boxes)
  return jnp.where(valid[:, None] & gt_valid[None, :], iou, _NO_MATCH)


def match_anchors(anchors: jax.Array, anchor_valid: jax.Array, gt_boxes: jax.Array,
                  gt_valid: jax.Array, *, pos_iou: float = 0.7,
                  neg_iou: float = 0.3) -> tuple[jax.Array, jax.Array]:
  """Labels every anchor of one image positive / negative / ignored for the RPN (SPEC B2).

  Algorithm (py-faster-rcnn's anchor_target_layer, on the valid anchors only):
    1. IoU of every valid anchor with every valid ground-truth box.
    2. NEGATIVE where the anchor's best IoU is < neg_iou (so every valid anchor of an image without
       ground truth is negative).
    3. POSITIVE for each ground-truth box's best anchor(s) — every anchor whose IoU with that box
       equals the box's maximum, ties included — overriding step 2. A box that overlaps no valid
       anchor at all (maximum 0) forces nothing: py-faster-rcnn would make every anchor with IoU 0
       positive there, a known quirk not kept.
    4. POSITIVE where the anchor's best IoU is > pos_iou. The paper and SPEC B2 say "higher than
       0.7"; py-faster-rcnn and torchvision use >=, which differs only at exactly 0.7.
    5. Everything else, and every invalid anchor, IGNORE.

  Args:
    anchors: [A, 4] anchor boxes (x1, y1, x2, y2).
    anchor_valid: bool [A]; False for anchors crossing the image boundary (see `inside_image`)
      and for padding — they are IGNORE and never anyone's best anchor.
    gt_boxes: [G, 4] ground-truth boxes, padded.
    gt_valid: bool [G]; False for padding.
    pos_iou: positive IoU threshold (strictly above).
    neg_iou: negative IoU threshold (strictly below).
  Returns:
    labels: int32 [A] in {POSITIVE, NEGATIVE, IGNORE}.
    matched_gt: int32 [A], the index of the anchor's highest-IoU valid ground-truth box (the first
      of ties) — the box its regression target is encoded from; meaningful where labels ==
      POSITIVE (0 where the image has no valid ground truth).
  """
  anchors, gt_boxes = jnp.asarray(anchors), jnp.asarray(gt_boxes)
  _check_boxes("match_anchors: anchors", anchors)
  _check_boxes("match_anchors: gt_boxes", gt_boxes)
  anchor_valid = jnp.asarray(anchor_valid, bool)
  gt_valid = jnp.asarray(gt_valid, bool)
  _check_vector("match_anchors: anchor_valid", anchor_valid, anchors.shape[0])
  _check_vector("match_anchors: gt_valid", gt_valid, gt_boxes.shape[0])
  num_anchors = anchors.shape[0]
  if gt_boxes.shape[0] == 0:  # no slots at all: the image has no ground truth
    labels = jnp.where(anchor_valid, NEGATIVE, IGNORE).astype(jnp.int32)
    return labels, jnp.zeros((num_anchors,), jnp.int32)

  iou = _masked_iou(anchors, anchor_valid, gt_boxes, gt_valid)  # [A, G]
  matched_gt = jnp.argmax(iou, axis=1).astype(jnp.int32)
  best_iou = jnp.max(iou, axis=1)  # [A]; _NO_MATCH where nothing is valid
  gt_best = jnp.max(iou, axis=0)  # [G]
  is_best = jnp.any((iou == gt_best[None, :]) & (gt_best > 0)[None, :], axis=1)  # [A]

  labels = jnp.full((num_anchors,), IGNORE, jnp.int32)
  labels = jnp.where(best_iou < neg_iou, NEGATIVE, labels)
  labels = jnp.where(is_best | (best_iou > pos_iou), POSITIVE, labels)
  labels = jnp.where(anchor_valid, labels, IGNORE)
  return labels, matched_gt


def sample_fixed_indices(labels: jax.Array, rng: jax.Array, *, num_samples: int = 256,
                         positive_fraction: float = 0.5) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A fixed-size random sample of positives and negatives (SPEC B2, B4), as index lists.

  Up to floor(num_samples * positive_fraction) positives (128 of 256 for the RPN, 32 of 128 RoIs),
  chosen uniformly at random among the POSITIVE entries; negatives, chosen uniformly at random
  among the NEGATIVE entries, fill the rest, so the sample holds num_samples entries whenever there
  are enough candidates, and every candidate otherwise. IGNORE entries are never sampled. Random
  choice: each entry gets a uniform priority from `rng` and each class keeps its top_k — the sample
  depends only on `rng` and `labels` (priorities that tie at float32 resolution go to the lower
  index).

  Args:
    labels: int [N] in {POSITIVE, NEGATIVE, IGNORE} (other values count as IGNORE).
    rng: a jax.random key.
    num_samples: static sample size S.
    positive_fraction: the most positives as a fraction of S, in [0, 1].
  Returns:
    indices: int32 [S] into `labels`: the sampled positives (random order), then the sampled
      negatives, then PAD_INDEX; never repeated.
    sample_labels: int32 [S], POSITIVE / NEGATIVE of each sampled entry, IGNORE at padding.
    sample_valid: bool [S], False at padding.
  """
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"sample_fixed: labels must be [N], got shape {tuple(labels.shape)}")
  if not 0.0 <= positive_fraction <= 1.0:
    raise ValueError(f"sample_fixed: positive_fraction must be in [0, 1], got {positive_fraction}")
  if num_samples < 0:
    raise ValueError(f"sample_fixed: num_samples must be >= 0, got {num_samples}")
  n = labels.shape[0]
  max_pos = int(num_samples * positive_fraction)
  is_pos, is_neg = labels == POSITIVE, labels == NEGATIVE
  num_pos = jnp.minimum(jnp.sum(is_pos, dtype=jnp.int32), max_pos)
  num_neg = jnp.minimum(jnp.sum(is_neg, dtype=jnp.int32), num_samples - num_pos)
  priority = jax.random.uniform(rng, (n,))  # in [0, 1): above the -1 of non-candidates

  def pick(is_class: jax.Array, k: int, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The `count` highest-priority entries of a class, in k static slots (rest PAD_INDEX)."""
    _, idx = jax.lax.top_k(jnp.where(is_class, priority, -1.0), min(k, n))
    idx = jnp.pad(idx.astype(jnp.int32), (0, k - min(k, n)))  # N < k: pad (masked just below)
    taken = jnp.arange(k) < count
    return jnp.where(taken, idx, PAD_INDEX), taken

  pos_idx, pos_taken = pick(is_pos, max_pos, num_pos)
  neg_idx, neg_taken = pick(is_neg, num_samples, num_neg)
  # Positives, then negatives, packed into S slots: a stable sort puts the taken ones first; at most
  # S are taken, so the dropped tail is padding.
  idx = jnp.concatenate([pos_idx, neg_idx])
  taken = jnp.concatenate([pos_taken, neg_taken])
  kind = jnp.concatenate([jnp.full((max_pos,), POSITIVE, jnp.int32),
                          jnp.full((num_samples,), NEGATIVE, jnp.int32)])
  order = jnp.argsort(~taken, stable=True)[:num_samples]
  sample_valid = taken[order]
  return idx[order], jnp.where(sample_valid, kind[order], IGNORE), sample_valid


def sample_fixed(labels: jax.Array, rng: jax.Array, *, num_samples: int = 256,
                 positive_fraction: float = 0.5) -> jax.Array:
  """`sample_fixed_indices` as a label array: the sampled entries keep their label, every other
  entry becomes IGNORE (the per-anchor form of the RPN loss, SPEC B2).

  Args:
    labels: int [N] in {POSITIVE, NEGATIVE, IGNORE}.
    rng, num_samples, positive_fraction: as for sample_fixed_indices.
  Returns:
    int32 [N]: POSITIVE / NEGATIVE at the sampled entries (at most num_samples of them), IGNORE
    elsewhere.
  """
  labels = jnp.asarray(labels)
  indices, sample_labels, sample_valid = sample_fixed_indices(
      labels, rng, num_samples=num_samples, positive_fraction=positive_fraction)
  n = labels.shape[0]
  out = jnp.full((n,), IGNORE, jnp.int32)
  # Padding slots scatter out of bounds and are dropped.
  return out.at[jnp.where(sample_valid, indices, n)].set(sample_labels, mode="drop")


class RoiTargets(NamedTuple):
  """The RoIs sampled for one image's Fast R-CNN head and their targets (SPEC B4); R = num_rois.

  rois: [R, 4] boxes (x1, y1, x2, y2): foreground first, then background, then zero boxes at
    padding. Rows from the proposals carry the proposals' gradients (exact joint training, SPEC B5);
    rows from the ground truth are constants.
  labels: int32 [R]: object_class_to_head(ground-truth class) for foreground, BACKGROUND for
    background and padding.
  targets: [R, 4] the matched ground-truth box encoded against the RoI with the detector weights
    (targets / stds (0.1, 0.1, 0.2, 0.2)); 0 for background and padding. Constants (no gradient).
  valid: bool [R], False at padding.
  matched_gt: int32 [R], the ground-truth box each RoI was labelled from (foreground rows; 0 else).
  indices: int32 [R], where each RoI came from: i < P is proposal i, P + j is ground-truth box j;
    PAD_INDEX at padding.
  """

  rois: jax.Array
  labels: jax.Array
  targets: jax.Array
  valid: jax.Array
  matched_gt: jax.Array
  indices: jax.Array


def sample_rois(proposals: jax.Array, proposal_valid: jax.Array, gt_boxes: jax.Array,
                gt_labels: jax.Array, gt_valid: jax.Array, rng: jax.Array, *,
                num_rois: int = 128, fg_fraction: float = 0.25, fg_iou: float = 0.5,
                bg_iou: tuple[float, float] = (0.1, 0.5),
                weights: Sequence[float] = DETECTOR_WEIGHTS) -> RoiTargets:
  """Samples one image's training RoIs for the Fast R-CNN head and their targets (SPEC B4).

  Algorithm (py-faster-rcnn's proposal_target_layer):
    1. Candidates: the proposals followed by the ground-truth boxes (so that every valid ground-truth
       box is a foreground candidate, IoU 1 with itself).
    2. Each candidate is matched to its highest-IoU valid ground-truth box: foreground when that IoU
       is >= fg_iou, background when it is in [bg_iou[0], bg_iou[1]), otherwise unused. In an image
       without ground truth every valid proposal is a background candidate (there is nothing for
       the IoU range to be measured against; py-faster-rcnn skipped such images).
    3. sample_fixed_indices: up to floor(num_rois * fg_fraction) foreground at random, background at
       random for the rest.
  With too few candidates the sample is short: the remaining rows are padding (valid False, zero
  boxes, BACKGROUND, zero targets), as py-faster-rcnn's smaller batch.

  Args:
    proposals: [P, 4] proposal boxes (e.g. ops.proposals.propose's output).
    proposal_valid: bool [P].
    gt_boxes: [G, 4] ground-truth boxes, padded.
    gt_labels: int [G] ground-truth classes in [0, K).
    gt_valid: bool [G].
    rng: a jax.random key.
    num_rois: static number R of RoIs (128 in the paper).
    fg_fraction: the most foreground RoIs as a fraction of R (0.25).
    fg_iou: foreground IoU threshold (>=).
    bg_iou: background IoU range [low, high) ((0.1, 0.5); (0.0, 0.5) for COCO / end-to-end).
    weights: box-coder weights of the regression targets (DETECTOR_WEIGHTS = 1 / stds).
  Returns:
    RoiTargets (see its fields).
  """
  proposals, gt_boxes = jnp.asarray(proposals), jnp.asarray(gt_boxes)
  _check_boxes("sample_rois: proposals", proposals)
  _check_boxes("sample_rois: gt_boxes", gt_boxes)
  proposal_valid = jnp.asarray(proposal_valid, bool)
  gt_valid = jnp.asarray(gt_valid, bool)
  gt_labels = jnp.asarray(gt_labels)
  num_gt = gt_boxes.shape[0]
  _check_vector("sample_rois: proposal_valid", proposal_valid, proposals.shape[0])
  _check_vector("sample_rois: gt_valid", gt_valid, num_gt)
  _check_vector("sample_rois: gt_labels", gt_labels, num_gt)
  if not bg_iou[0] <= bg_iou[1]:
    raise ValueError(f"sample_rois: bg_iou must be a range (low, high), got {bg_iou}")

  dtype = jnp.result_type(proposals.dtype, gt_boxes.dtype)
  boxes = jnp.concatenate([proposals.astype(dtype), gt_boxes.astype(dtype)])  # [P + G, 4]
  valid = jnp.concatenate([proposal_valid, gt_valid])
  if num_gt:
    iou = _masked_iou(jax.lax.stop_gradient(boxes), valid, gt_boxes, gt_valid)  # [P + G, G]
    matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
    best_iou = jnp.max(iou, axis=1)
  else:
    matched = jnp.zeros((boxes.shape[0],), jnp.int32)
    best_iou = jnp.full((boxes.shape[0],), _NO_MATCH, dtype)
  no_gt = ~jnp.any(gt_valid)
  is_fg = valid & (best_iou >= fg_iou)
  is_bg = valid & ~is_fg & (((best_iou >= bg_iou[0]) & (best_iou < bg_iou[1])) | no_gt)
  candidates = jnp.where(is_fg, POSITIVE, jnp.where(is_bg, NEGATIVE, IGNORE))

  indices, kinds, roi_valid = sample_fixed_indices(
      candidates, rng, num_samples=num_rois, positive_fraction=fg_fraction)
  safe = jnp.where(roi_valid, indices, 0)
  fg = kinds == POSITIVE
  rois = jnp.where(roi_valid[:, None], boxes[safe], 0)
  roi_gt = jnp.where(fg, matched[safe], 0)
  if not num_gt:  # no foreground possible
    labels = jnp.full((num_rois,), BACKGROUND, jnp.int32)
    return RoiTargets(rois=rois, labels=labels, targets=jnp.zeros((num_rois, 4), dtype),
                      valid=roi_valid, matched_gt=roi_gt, indices=indices)
  labels = jnp.where(fg, object_class_to_head(gt_labels[roi_gt]), BACKGROUND).astype(jnp.int32)
  # Encode only foreground pairs; the others get a unit box, so that no inf / NaN enters even the
  # unused branch of the where.
  unit = jnp.asarray([0, 0, 1, 1], dtype)
  reference = jnp.where(fg[:, None], jax.lax.stop_gradient(rois), unit)
  matched_boxes = jnp.where(fg[:, None], gt_boxes[roi_gt].astype(dtype), unit)
  targets = jnp.where(fg[:, None], encode_boxes(matched_boxes, reference, weights), 0)
  return RoiTargets(rois=rois, labels=labels, targets=jax.lax.stop_gradient(targets),
                    valid=roi_valid, matched_gt=roi_gt, indices=indices)
