"""The region proposal layer (SPEC B3), the Fast R-CNN head's test-time detections (SPEC B4) and the
merge of several runs' detections (testing at several sizes), with static shapes: fewer real boxes
than slots are padded (zero boxes, score 0) and masked by `valid`.

All work on one image; vmap them over a batch (image sizes may then differ per image: `image_hw`
may be traced). Counts (pre / post NMS, max detections) are static Python ints.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from overfeat_jax.ops.boxes import (BBOX_XFORM_CLIP, DETECTOR_WEIGHTS, RPN_WEIGHTS, box_iou,
                                    clip_boxes, decode_boxes)
from overfeat_jax.ops.nms import PAD_INDEX, batched_nms, nms


class Proposals(NamedTuple):
  """One image's proposals, N = post_nms_top_n slots.

  boxes: [N, 4] (x1, y1, x2, y2) in ranking order (descending objectness, or the random order of
    `propose(..., ranking_key=...)`), then zero boxes at padding.
    Differentiable in the RPN's deltas (exact joint training, SPEC B5); stop_gradient them for
    approximate joint training.
  scores: [N] the objectness of each box as given (logit or probability), 0 at padding.
  valid: bool [N], False at padding.
  """

  boxes: jax.Array
  scores: jax.Array
  valid: jax.Array


class Detections(NamedTuple):
  """One image's detections, D = max_detections slots.

  boxes: [D, 4] (x1, y1, x2, y2) in image pixels, descending score order, zero boxes at padding.
  scores: [D] class probabilities, 0 at padding.
  classes: int32 [D] object classes in [0, K) (the head's class index minus 1: the datasets' and
    DetectionEvaluator's 0-based classes), 0 at padding.
  valid: bool [D], False at padding.
  """

  boxes: jax.Array
  scores: jax.Array
  classes: jax.Array
  valid: jax.Array


def _non_empty(boxes: jax.Array, min_size: float | jax.Array) -> jax.Array:
  """bool [...]: width and height >= min_size and > 0."""
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return (w >= min_size) & (h >= min_size) & (w > 0) & (h > 0)


def _gather_padded(keep: jax.Array, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Each array's rows at `keep` ([K] indices with PAD_INDEX), zero rows at padding."""
  valid = keep != PAD_INDEX
  safe = jnp.where(valid, keep, 0)
  out = []
  for a in arrays:
    mask = valid.reshape(valid.shape + (1,) * (a.ndim - 1))
    out.append(jnp.where(mask, a[safe], jnp.zeros((), a.dtype)))
  return (*out, valid)


def _keep_all(valid: jax.Array, size: int) -> jax.Array:
  """int32 [size]: the indices of the True entries of `valid` [M] in order, then PAD_INDEX: what
  greedy NMS keeps of boxes already in ranking order when it suppresses nothing."""
  order = jnp.argsort(~valid, stable=True).astype(jnp.int32)[:size]  # valid first, in order
  keep = jnp.where(valid[order], order, PAD_INDEX)
  return jnp.pad(keep, (0, size - keep.shape[0]), constant_values=PAD_INDEX)


def propose(objectness: jax.Array, deltas: jax.Array, anchors: jax.Array, image_hw: Any, *,
            pre_nms_top_n: int, post_nms_top_n: int, nms_iou: float | jax.Array = 0.7,
            min_size: float | jax.Array = 0.0, anchor_valid: jax.Array | None = None,
            ranking_key: jax.Array | None = None) -> Proposals:
  """The RPN's proposals for one image (SPEC B3; py-faster-rcnn's proposal_layer).

  Algorithm:
    1. Decode every anchor's deltas (RPN_WEIGHTS; size deltas clamped at log(1000 / 16)).
    2. Clip the boxes to the image.
    3. Drop (mask) boxes narrower or shorter than min_size, and empty ones.
    4. Keep the pre_nms_top_n highest-ranked remaining boxes: by objectness, or, given a
       `ranking_key`, by a uniform random priority per box (the paper's "no cls" ablation, SPEC B6:
       a uniform sample without replacement of the remaining boxes, whatever their objectness).
    5. Greedy NMS at nms_iou in that order (ops.nms). nms_iou >= 1 as a Python number skips it
       (IoU is never above 1, so it would keep every box).
    6. Keep the first post_nms_top_n survivors (in ranking order).
  Paper settings: 12000 -> 2000 training, 6000 -> 300 testing.

  Args:
    objectness: [A] objectness score per anchor (logit or probability: only the order matters;
      finite).
    deltas: [A, 4] predicted (t_x, t_y, t_w, t_h).
    anchors: [A, 4] anchors (x1, y1, x2, y2).
    image_hw: (height, width) of the image in pixels (numbers, traced scalars, or a [2] array).
    pre_nms_top_n: static number of boxes entering NMS (fewer when A is smaller).
    post_nms_top_n: static number N of output slots.
    nms_iou: NMS IoU threshold.
    min_size: minimum box width and height in pixels (py-faster-rcnn: 16 at the original image's
      scale, so 16 * the resize factor).
    anchor_valid: optional bool [A]; False anchors (padding) never become proposals.
    ranking_key: optional PRNG key: rank by random priorities instead of objectness (step 4).
  Returns:
    Proposals (boxes [N, 4], scores [N] (the objectness, also when ranked at random), valid [N]).
  """
  objectness, deltas, anchors = jnp.asarray(objectness), jnp.asarray(deltas), jnp.asarray(anchors)
  num = anchors.shape[0]
  if anchors.ndim != 2 or anchors.shape[1] != 4:
    raise ValueError(f"propose: anchors must be [A, 4], got shape {tuple(anchors.shape)}")
  if deltas.shape != (num, 4) or objectness.shape != (num,):
    raise ValueError(f"propose: objectness {tuple(objectness.shape)} and deltas "
                     f"{tuple(deltas.shape)} must be [{num}] and [{num}, 4] for {num} anchors")
  if pre_nms_top_n < 0 or post_nms_top_n < 0:
    raise ValueError(f"propose: pre_nms_top_n ({pre_nms_top_n}) and post_nms_top_n "
                     f"({post_nms_top_n}) must be >= 0")
  boxes = decode_boxes(deltas, anchors, RPN_WEIGHTS, BBOX_XFORM_CLIP)  # [A, 4]
  boxes = clip_boxes(boxes, (image_hw[0], image_hw[1]))
  valid = _non_empty(boxes, min_size)
  if anchor_valid is not None:
    valid &= jnp.asarray(anchor_valid, bool)
  rank = objectness if ranking_key is None else jax.random.uniform(ranking_key, (num,))
  # Top pre_nms_top_n among the valid boxes: invalid ones rank last and stay flagged.
  _, top = jax.lax.top_k(jnp.where(valid, rank, -jnp.inf), min(pre_nms_top_n, num))
  boxes, scores, rank, valid = boxes[top], objectness[top], rank[top], valid[top]
  if isinstance(nms_iou, (int, float)) and nms_iou >= 1:  # no NMS: the valid boxes lead, in order
    keep = _keep_all(valid, post_nms_top_n)
  else:
    keep = nms(jax.lax.stop_gradient(boxes), rank, nms_iou, post_nms_top_n, valid=valid)
  boxes, scores, valid = _gather_padded(keep, boxes, scores)
  return Proposals(boxes=boxes, scores=scores, valid=valid)


def detect(class_scores: jax.Array, class_deltas: jax.Array, rois: jax.Array, roi_valid: jax.Array,
           image_hw: Any, *, score_threshold: float | jax.Array = 0.05,
           nms_iou: float | jax.Array = 0.3, max_detections: int = 100) -> Detections:
  """The Fast R-CNN head's detections for one image (SPEC B4; py-faster-rcnn's test.py and
  torchvision's postprocess_detections).

  Algorithm:
    1. Decode each RoI's class-specific deltas (DETECTOR_WEIGHTS, i.e. stds (0.1, 0.1, 0.2, 0.2)),
       clip to the image.
    2. Every (RoI, object class) pair is a candidate — the background column is dropped — when the
       RoI is valid, the class probability is > score_threshold and the box is not empty.
    3. Per-class greedy NMS at nms_iou (ops.batched_nms over all candidates).
    4. The max_detections highest-scoring survivors over all classes.

  Args:
    class_scores: [R, K + 1] class probabilities (softmax of the head's logits), column 0 background.
    class_deltas: [R, K + 1, 4] or [R, 4 (K + 1)] class-specific deltas (column 0 unused).
    rois: [R, 4] the RoIs (proposals) the head ran on.
    roi_valid: bool [R].
    image_hw: (height, width) of the image (numbers, traced scalars, or a [2] array).
    score_threshold: minimum class probability (strictly above).
    nms_iou: per-class NMS IoU threshold.
    max_detections: static number D of output slots.
  Returns:
    Detections (boxes [D, 4], scores [D], classes [D] in [0, K), valid [D]).
  """
  class_scores, class_deltas, rois = (jnp.asarray(class_scores), jnp.asarray(class_deltas),
                                      jnp.asarray(rois))
  if class_scores.ndim != 2 or class_scores.shape[1] < 2:
    raise ValueError(f"detect: class_scores must be [R, K + 1] with K >= 1, got shape "
                     f"{tuple(class_scores.shape)}")
  num_rois, num_columns = class_scores.shape
  if class_deltas.shape == (num_rois, 4 * num_columns):
    class_deltas = class_deltas.reshape(num_rois, num_columns, 4)
  if class_deltas.shape != (num_rois, num_columns, 4):
    raise ValueError(f"detect: class_deltas must be [{num_rois}, {num_columns}, 4] or "
                     f"[{num_rois}, {4 * num_columns}], got {tuple(class_deltas.shape)}")
  if rois.shape != (num_rois, 4) or jnp.shape(roi_valid) != (num_rois,):
    raise ValueError(f"detect: rois {tuple(rois.shape)} and roi_valid {jnp.shape(roi_valid)} must "
                     f"be [{num_rois}, 4] and [{num_rois}]")
  num_classes = num_columns - 1
  boxes = decode_boxes(class_deltas[:, 1:], rois[:, None, :], DETECTOR_WEIGHTS, BBOX_XFORM_CLIP)
  boxes = clip_boxes(boxes, (image_hw[0], image_hw[1])).reshape(-1, 4)  # [R * K, 4], RoI-major
  scores = class_scores[:, 1:].reshape(-1)
  classes = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), num_rois)
  valid = (jnp.repeat(jnp.asarray(roi_valid, bool), num_classes) & (scores > score_threshold)
           & _non_empty(boxes, 0.0))
  keep = batched_nms(boxes, scores, classes, nms_iou, max_detections, valid=valid)
  boxes, scores, classes, valid = _gather_padded(keep, boxes, scores, classes)
  return Detections(boxes=boxes, scores=scores, classes=classes, valid=valid)


def merge_detections(detections: Detections, *, nms_iou: float | jax.Array = 0.3,
                     max_detections: int = 100, voting_iou: float = 0.0) -> Detections:
  """One image's detections from several runs (e.g. test sizes) merged into one set.

  Algorithm:
    1. Per-class greedy NMS at nms_iou over the valid detections of all runs (ops.batched_nms);
       the max_detections highest-scoring survivors over all classes, each keeping its score.
    2. With voting_iou > 0, box voting (Gidaris & Komodakis, ICCV 2015): each survivor's box becomes
       the score-weighted mean of the valid same-class boxes of all runs that overlap it at
       IoU >= voting_iou (itself included). The scores and classes are unchanged.

  Args:
    detections: `Detections` of N candidates (e.g. S runs' D slots concatenated): boxes [N, 4],
      scores [N], classes int32 [N], valid bool [N], all in one image's pixels.
    nms_iou: per-class NMS IoU threshold.
    max_detections: static number D of output slots.
    voting_iou: the IoU of box voting, static; 0 = no voting.
  Returns:
    Detections (boxes [D, 4], scores [D], classes [D], valid [D]), descending score, zero padding.
  """
  boxes, scores, classes, valid = (jnp.asarray(a) for a in detections)
  keep = batched_nms(boxes, scores, classes, nms_iou, max_detections, valid=valid)
  kept_boxes, kept_scores, kept_classes, kept_valid = _gather_padded(keep, boxes, scores, classes)
  if voting_iou > 0:
    voters = ((box_iou(kept_boxes, boxes) >= voting_iou) & valid[None, :]
              & (kept_classes[:, None] == classes[None, :]))  # [D, N]
    weights = jnp.where(voters, scores[None, :], 0.0)
    total = jnp.sum(weights, axis=1, keepdims=True)
    voted = weights @ boxes / jnp.where(total > 0, total, 1.0)
    kept_boxes = jnp.where((kept_valid & (total[:, 0] > 0))[:, None], voted, kept_boxes)
  return Detections(boxes=kept_boxes, scores=kept_scores, classes=kept_classes, valid=kept_valid)
