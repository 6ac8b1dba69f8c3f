"""Box arithmetic: area, IoU, clipping, flipping, and the Faster R-CNN box parameterisation (SPEC B1).

Boxes are (x1, y1, x2, y2) float pixels, continuous: width = x2 - x1, no "+1". The numbers are
those of `torchvision.ops` (`box_area`, `box_iou`, `clip_boxes_to_image`) and of torchvision's
`BoxCoder` (`encode_boxes`, `decode_boxes`), operation for operation, so that the same float32
inputs give the same outputs (up to rounding in the last place); the one deliberate difference is
`box_iou` of two empty boxes (0 here, NaN in torchvision).

Every function takes numpy or jax arrays (STYLE "Take" 15): numpy in, numpy out — for the data
pipeline — and jnp for anything else, so they also run inside jit and vmap.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# decode_boxes clamps the size deltas dw, dh at log(1000 / 16) before exp (SPEC B1; torchvision's
# BoxCoder default `bbox_xform_clip`): a box at most 1000/16 ~ 62x its reference's size.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)

# Box-coder weights (wx, wy, ww, wh): the RPN's and the Fast R-CNN head's (SPEC B4: the targets
# divided by the stds 0.1, 0.1, 0.2, 0.2).
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
DETECTOR_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def array_module(*arrays: Any) -> Any:
  """numpy when every argument is a numpy array (or a Python number / list), else jax.numpy."""
  if any(isinstance(a, jax.Array) for a in arrays):  # tracers are jax.Arrays too
    return jnp
  return np


def box_area(boxes: Any) -> Any:
  """Areas (x2 - x1) * (y2 - y1). boxes: [..., 4] -> [...]; no clamping, as torchvision."""
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _pairwise_inter_union(boxes1: Any, boxes2: Any) -> tuple[Any, Any]:
  """Intersection and union areas of every pair: [N, 4], [M, 4] -> ([N, M], [N, M])."""
  xp = array_module(boxes1, boxes2)
  area1, area2 = box_area(boxes1), box_area(boxes2)
  top_left = xp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
  bottom_right = xp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  wh = xp.maximum(bottom_right - top_left, 0)
  inter = wh[..., 0] * wh[..., 1]
  return inter, area1[:, None] + area2[None, :] - inter


def box_iou(boxes1: Any, boxes2: Any) -> Any:
  """Intersection over union of every pair, as torchvision.ops.box_iou.

  Args:
    boxes1: [N, 4] boxes (x1, y1, x2, y2).
    boxes2: [M, 4] boxes.
  Returns:
    [N, M] IoU in [0, 1]. Where the union is empty (two zero-area boxes, e.g. padding) the IoU is 0
    (torchvision gives 0 / 0 = NaN, which would poison the max / argmax of anchor matching).
  """
  xp = array_module(boxes1, boxes2)
  inter, union = _pairwise_inter_union(boxes1, boxes2)
  empty = union <= 0
  return xp.where(empty, 0, inter / xp.where(empty, 1, union)).astype(inter.dtype)


def clip_boxes(boxes: Any, image_hw: tuple[Any, Any]) -> Any:
  """Clamps x to [0, width] and y to [0, height], as torchvision.ops.clip_boxes_to_image.

  Args:
    boxes: [..., 4] boxes (x1, y1, x2, y2).
    image_hw: (height, width) — Python numbers or scalars (traced values are fine).
  Returns:
    [..., 4], same dtype.
  """
  xp = array_module(boxes)
  height, width = image_hw
  x = xp.clip(boxes[..., 0::2], 0, width)
  y = xp.clip(boxes[..., 1::2], 0, height)
  return xp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1).astype(boxes.dtype)


def flip_boxes(boxes: Any, width: Any) -> Any:
  """The boxes of an image mirrored left to right: x1' = width - x2, x2' = width - x1, y unchanged.

  Args:
    boxes: [..., 4] boxes (x1, y1, x2, y2) in the image's pixels.
    width: the image's width (a number, or an array broadcastable with boxes[..., 0]).
  Returns:
    [..., 4], same dtype; flipping twice gives the boxes back.
  """
  xp = array_module(boxes, width)
  return xp.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]],
                  axis=-1).astype(boxes.dtype)


def _centres_sizes(boxes: Any) -> tuple[Any, Any, Any, Any]:
  """(ctr_x, ctr_y, w, h) of [..., 4] boxes; centre = x1 + 0.5 w as torchvision computes it."""
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(boxes: Any, reference: Any,
                 weights: Sequence[float] = RPN_WEIGHTS) -> Any:
  """Regression targets of `boxes` relative to `reference` boxes (SPEC B1), as torchvision's
  `BoxCoder(weights).encode_single(boxes, reference)`.

  t_x = wx (x - x_a) / w_a, t_y = wy (y - y_a) / h_a, t_w = ww log(w / w_a), t_h = wh log(h / h_a),
  with (x, y) centres and (w, h) sizes of the box and (x_a, y_a, w_a, h_a) of its reference (the
  anchor or proposal).

  Args:
    boxes: [..., 4] the boxes to encode (ground truth).
    reference: [..., 4] reference boxes, broadcastable with `boxes`.
    weights: (wx, wy, ww, wh), e.g. RPN_WEIGHTS (1, 1, 1, 1) or DETECTOR_WEIGHTS (10, 10, 5, 5).
  Returns:
    [..., 4] deltas (t_x, t_y, t_w, t_h). Zero-size boxes give inf / NaN, as in torchvision: encode
    only matched, non-empty boxes (or mask the result).
  """
  xp = array_module(boxes, reference)
  wx, wy, ww, wh = weights
  ref_x, ref_y, ref_w, ref_h = _centres_sizes(reference)
  x, y, w, h = _centres_sizes(boxes)
  deltas = [wx * (x - ref_x) / ref_w, wy * (y - ref_y) / ref_h,
            ww * xp.log(w / ref_w), wh * xp.log(h / ref_h)]
  return xp.stack(deltas, axis=-1).astype(xp.result_type(boxes, reference))


def decode_boxes(deltas: Any, reference: Any, weights: Sequence[float] = RPN_WEIGHTS,
                 clip: float = BBOX_XFORM_CLIP) -> Any:
  """Boxes from regression deltas relative to `reference` boxes: the inverse of encode_boxes, as
  torchvision's `BoxCoder(weights, clip).decode_single(deltas, reference)`.

  dw / ww and dh / wh are clamped at `clip` (default log(1000 / 16), SPEC B1) before exp.

  Args:
    deltas: [..., 4] (t_x, t_y, t_w, t_h). For class-specific deltas [N, K * 4], reshape to
      [N, K, 4] and pass reference[:, None, :].
    reference: [..., 4] reference boxes, broadcastable with `deltas`.
    weights: (wx, wy, ww, wh), as for encode_boxes.
    clip: upper bound of the (unweighted) size deltas.
  Returns:
    [..., 4] boxes (x1, y1, x2, y2), the broadcast shape of the two inputs.
  """
  xp = array_module(deltas, reference)
  wx, wy, ww, wh = weights
  ref_x, ref_y, ref_w, ref_h = _centres_sizes(reference)
  dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
  dw = xp.minimum(deltas[..., 2] / ww, clip)
  dh = xp.minimum(deltas[..., 3] / wh, clip)
  x = dx * ref_w + ref_x
  y = dy * ref_h + ref_y
  half_w = 0.5 * (xp.exp(dw) * ref_w)
  half_h = 0.5 * (xp.exp(dh) * ref_h)
  out = xp.stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=-1)
  return out.astype(xp.result_type(deltas, reference))
