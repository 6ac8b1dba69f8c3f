"""Array operations of the detectors, pure jnp and free of our other layers (DESIGN "Layout").

Detection ops with torchvision's numbers (NHWC features; boxes (x1, y1, x2, y2) in float pixels):

  box_area(boxes [..., 4]) -> [...]
  box_iou(boxes1 [N, 4], boxes2 [M, 4]) -> [N, M]
  clip_boxes(boxes [..., 4], (height, width)) -> [..., 4]
  flip_boxes(boxes [..., 4], width) -> [..., 4]  (mirrored left to right)
  encode_boxes(boxes [..., 4], reference [..., 4], weights) -> deltas [..., 4]
  decode_boxes(deltas [..., 4], reference [..., 4], weights, clip) -> boxes [..., 4]
  nms(boxes [N, 4], scores [N], iou_threshold, max_output_size K, *, valid) -> int32 [K]
  batched_nms(boxes, scores, class_ids [N], iou_threshold, K, *, valid) -> int32 [K]
  roi_pool(features [H, W, C], boxes [R, 4], (h, w), spatial_scale) -> [R, h, w, C]
  roi_align(features, boxes, (h, w), spatial_scale, sampling_ratio, aligned, *,
            max_sampling_ratio) -> [R, h, w, C]
  batched_roi_align(features [B, H, W, C], boxes [B, R, 4], ...) -> [B, R, h, w, C]
  conv_relu_max_pool(x [B, H, W, C], kernel [k, k, C, F], bias [F], pool)
      -> [B, (H - k + 1) // pool, (W - k + 1) // pool, F]  (one space-to-depth convolution)
  anchors((H, W), stride, sizes, aspect_ratios, *, offset) -> float32 [H * W * A, 4]
  greedy_merge(boxes [N, 4], scores [N], valid [N], threshold) -> (merged_boxes float32 [N, 4],
               confidence float32 [N], merged_valid bool [N])  (OverFeat's merge, SPEC A5 (d))
  best_box(merged_boxes [N, 4], confidence [N], merged_valid [N]) -> (box [4], confidence [])

Faster R-CNN's targets and proposals (one image each; vmap over a batch):

  inside_image(boxes [..., 4], (height, width), border) -> bool [...]
  match_anchors(anchors [A, 4], anchor_valid [A], gt_boxes [G, 4], gt_valid [G], *, pos_iou,
                neg_iou) -> (labels int32 [A] in {POSITIVE, NEGATIVE, IGNORE}, matched_gt int32 [A])
  sample_fixed_indices(labels [N], rng, *, num_samples S, positive_fraction)
      -> (indices int32 [S] (PAD_INDEX padding), sample_labels [S], sample_valid [S])
  sample_fixed(labels [N], rng, *, num_samples, positive_fraction) -> labels [N] (unsampled IGNORE)
  sample_rois(proposals [P, 4], proposal_valid [P], gt_boxes [G, 4], gt_labels [G], gt_valid [G],
              rng, *, num_rois R, ...) -> RoiTargets(rois [R, 4], labels [R] (BACKGROUND = 0,
              class c -> c + 1), targets [R, 4], valid [R], matched_gt [R],
              indices [R])
  propose(objectness [A], deltas [A, 4], anchors [A, 4], (height, width), *, pre_nms_top_n,
          post_nms_top_n N, nms_iou, min_size) -> Proposals(boxes [N, 4], scores [N], valid [N])
  detect(class_scores [R, K + 1], class_deltas [R, K + 1, 4], rois [R, 4], roi_valid [R],
         (height, width), *, score_threshold, nms_iou, max_detections D)
      -> Detections(boxes [D, 4], scores [D], classes [D] in [0, K), valid [D])
  merge_detections(Detections of N candidates (boxes [N, 4], ...), *, nms_iou, max_detections D,
                   voting_iou) -> Detections of D slots (several test sizes' detections as one)

nms results are padded with PAD_INDEX (-1); num_kept counts the real entries. Box helpers take
numpy or jax arrays (numpy in, numpy out); anchors are numpy constants. The names `nms` and
`anchors` here are the functions, which shadow their modules: import the modules' other contents
from here, or as `from overfeat_jax.ops.nms import ...`.
"""

from overfeat_jax.ops.anchors import anchors, base_anchors
from overfeat_jax.ops.boxes import (BBOX_XFORM_CLIP, DETECTOR_WEIGHTS, RPN_WEIGHTS, box_area,
                                    box_iou, clip_boxes, decode_boxes, encode_boxes, flip_boxes)
from overfeat_jax.ops.conv_pool import conv_relu_max_pool
from overfeat_jax.ops.merge import best_box, greedy_merge
from overfeat_jax.ops.nms import PAD_INDEX, batched_nms, nms, num_kept
from overfeat_jax.ops.proposals import Detections, Proposals, detect, merge_detections, propose
from overfeat_jax.ops.roi import batched_roi_align, default_max_sampling_ratio, roi_align, roi_pool
from overfeat_jax.ops.targets import (BACKGROUND, IGNORE, NEGATIVE, POSITIVE, RoiTargets,
                                      inside_image, match_anchors, object_class_to_head,
                                      sample_fixed, sample_fixed_indices, sample_rois)

__all__ = [
    "BACKGROUND", "BBOX_XFORM_CLIP", "DETECTOR_WEIGHTS", "Detections", "IGNORE", "NEGATIVE",
    "PAD_INDEX", "POSITIVE", "Proposals", "RPN_WEIGHTS", "RoiTargets", "anchors", "base_anchors",
    "batched_nms", "batched_roi_align", "conv_relu_max_pool", "best_box", "box_area", "box_iou", "clip_boxes", "decode_boxes",
    "default_max_sampling_ratio", "detect", "encode_boxes", "flip_boxes", "greedy_merge",
    "inside_image", "match_anchors", "merge_detections", "nms", "num_kept", "object_class_to_head",
    "propose", "roi_align", "roi_pool", "sample_fixed", "sample_fixed_indices", "sample_rois",
]
