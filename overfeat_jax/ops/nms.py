"""Greedy non-maximum suppression with a static output size (SPEC B3, B4).

The kept indices are those of `torchvision.ops.nms` / `batched_nms` (the first `max_output_size`
of them), in the same order: boxes visited in descending score order, ties by ascending index (a
stable sort, as torchvision's CPU kernel), a box dropped when its IoU with an already kept box is
> iou_threshold. The output is padded with PAD_INDEX to `max_output_size` entries, so shapes stay
static inside jit; `num_kept(keep)` counts the real ones.

Algorithm: sort once, then a `lax.while_loop` over output slots. Each step keeps the first still-
alive box in score order and clears the alive flag of every box that overlaps it by more than the
threshold (one IoU row, O(N)). The loop ends after `max_output_size` keeps or when nothing is
alive, so the cost is O(N log N + kept * N) — torchvision's kernel visits every box instead, and
so keeps far more than the 300 or 2000 that the proposal layer needs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Fills the output slots past the last kept box.
PAD_INDEX = -1


def num_kept(keep: jax.Array) -> jax.Array:
  """How many entries of an nms / batched_nms result are real indices: [..., K] -> int32 [...]."""
  return jnp.sum(keep != PAD_INDEX, axis=-1, dtype=jnp.int32)


def _threshold_below(threshold: float | jax.Array, dtype: jnp.dtype) -> jax.Array:
  """The threshold in `dtype` such that iou > it exactly when iou > `threshold` as a Python float.

  torchvision compares the float IoU with a double threshold; float32(0.3) is above 0.3, so an IoU
  of exactly float32(0.3) would not be suppressed by a float32 comparison. Round down instead.
  """
  if isinstance(threshold, (int, float)):
    rounded = np.asarray(threshold, dtype)
    if float(rounded) > threshold:
      rounded = np.nextafter(rounded, np.asarray(-np.inf, dtype))
    return jnp.asarray(rounded)
  return jnp.asarray(threshold, dtype)


def _greedy_nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float | jax.Array,
                max_output_size: int, valid: jax.Array | None,
                groups: jax.Array | None) -> jax.Array:
  """nms / batched_nms: boxes only suppress boxes of their own group when `groups` is given."""
  n = boxes.shape[0]
  if n == 0 or max_output_size == 0:
    return jnp.full((max_output_size,), PAD_INDEX, jnp.int32)
  boxes = boxes.astype(jnp.result_type(float, boxes.dtype))
  # Stable descending order (ties: lower index first), as torchvision sorts.
  order = jnp.argsort(scores, descending=True, stable=True).astype(jnp.int32)
  x1, y1, x2, y2 = (boxes[order, k] for k in range(4))  # each [N], in score order
  areas = (x2 - x1) * (y2 - y1)
  alive = jnp.ones((n,), bool) if valid is None else valid[order].astype(bool)
  sorted_groups = None if groups is None else groups[order]
  threshold = _threshold_below(iou_threshold, boxes.dtype)

  def body(state):
    slot, pick, alive, keep = state
    keep = keep.at[slot].set(order[pick])
    # IoU of the kept box with every box, in torchvision's order of operations (so that values
    # on the threshold compare alike); a zero-area pair gives 0/0 = NaN, which suppresses nothing.
    w = jnp.maximum(jnp.minimum(x2[pick], x2) - jnp.maximum(x1[pick], x1), 0)
    h = jnp.maximum(jnp.minimum(y2[pick], y2) - jnp.maximum(y1[pick], y1), 0)
    inter = w * h
    suppress = inter / (areas[pick] + areas - inter) > threshold
    if sorted_groups is not None:
      suppress &= sorted_groups == sorted_groups[pick]
    alive = alive & ~suppress & (jnp.arange(n) != pick)
    return slot + 1, jnp.argmax(alive).astype(jnp.int32), alive, keep

  def cond(state):
    slot, pick, alive, _ = state
    return (slot < max_output_size) & alive[pick]

  # `pick` is the first alive box in score order (argmax of a bool finds the first True); carrying
  # it saves a second pass over the alive flags per step.
  init = (jnp.int32(0), jnp.argmax(alive).astype(jnp.int32), alive,
          jnp.full((max_output_size,), PAD_INDEX, jnp.int32))
  return jax.lax.while_loop(cond, body, init)[3]


def nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float | jax.Array,
        max_output_size: int, *, valid: jax.Array | None = None) -> jax.Array:
  """Greedy NMS, as torchvision.ops.nms(boxes, scores, iou_threshold)[:max_output_size].

  Args:
    boxes: [N, 4] boxes (x1, y1, x2, y2).
    scores: [N] scores; any float values (-inf included: a valid box with score -inf can still be
      kept, after all the others).
    iou_threshold: a box is discarded when its IoU with a kept box is > this (may be traced).
    max_output_size: static number of output slots K.
    valid: optional bool [N]; invalid boxes (padding) are never kept and suppress nothing.
  Returns:
    int32 [K]: indices into `boxes` of the kept boxes in descending score order, then PAD_INDEX.
  """
  return _greedy_nms(jnp.asarray(boxes), jnp.asarray(scores), iou_threshold, max_output_size,
                     None if valid is None else jnp.asarray(valid), None)


def batched_nms(boxes: jax.Array, scores: jax.Array, class_ids: jax.Array,
                iou_threshold: float | jax.Array, max_output_size: int, *,
                valid: jax.Array | None = None) -> jax.Array:
  """Class-aware NMS, as torchvision.ops.batched_nms(...)[:max_output_size]: boxes of different
  classes never suppress each other.

  Instead of torchvision's coordinate-offset trick (which shifts each class far away and so rounds
  the coordinates of large class ids), the IoU test is masked to same-class pairs: exact, and what
  torchvision's own per-class path computes for large inputs.

  Args:
    boxes: [N, 4] boxes.
    scores: [N] scores.
    class_ids: [N] integer class of each box.
    iou_threshold: IoU above which a box of the same class is discarded.
    max_output_size: static number of output slots K.
    valid: optional bool [N]; invalid boxes are never kept and suppress nothing.
  Returns:
    int32 [K]: kept indices in descending score order (over all classes), then PAD_INDEX.
  """
  return _greedy_nms(jnp.asarray(boxes), jnp.asarray(scores), iou_threshold, max_output_size,
                     None if valid is None else jnp.asarray(valid), jnp.asarray(class_ids))

