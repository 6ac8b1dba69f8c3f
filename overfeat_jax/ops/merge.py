"""OverFeat's greedy merge of predicted boxes (SPEC A5 (d), A6), padded to a static size.

Algorithm (SPEC A5 (d)), on the set B of valid boxes, each with the classifier score of the window
that predicted it:
  1. (b1, b2) = the pair of distinct boxes of B with the lowest match_score;
  2. if match_score(b1, b2) > threshold: stop;
  3. else replace b1, b2 by box_merge(b1, b2), whose confidence is the sum of theirs; go to 1.
  match_score(b1, b2) = |centre(b1) - centre(b2)| (Euclidean, pixels) + intersection_area(b1, b2)
  box_merge(b1, b2) = (b1 + b2) / 2, coordinate by coordinate, unweighted.
A merged box's confidence is thus the sum of the scores of all windows whose boxes went into it.

This is the paper's literal definition, kept as it is: a distance (px) plus an area (px^2), so the
threshold is in mixed units, and the score is LOW only for boxes that are close AND hardly overlap.
Two boxes far apart score high, and so do two boxes that overlap a lot: two identical 100 x 100
boxes score 10,000 and merge only when threshold >= 10,000, while two disjoint boxes side by side
with centres 100 px apart score 100. Merged boxes are averages of averages (a box merged k times
away from the start weighs 2^-k), also as the paper says.

Ties: among pairs with the same (float32) score, the one with the lowest (first index, second
index) goes first. The merged box takes the lower of the two slots, so a merged box's slot is the
lowest input index among the boxes it contains. The output lists the surviving boxes sorted by
confidence, descending (ties: lower slot first), then the invalid rows as zeros.

Implementation: one `lax.while_loop` over a lazy nearest-partner table, O(N) per step, never an
N x N matrix. Each live box k keeps `row_min[k]`, a lower bound of its best match score, and
`row_arg[k]`, the partner reaching it; the bound is exact unless `stale[k]`. A step takes the row
with the lowest bound (first index on ties): if stale, it recomputes that row exactly (one [N] row
of scores) and loops; else the row's pair is the global best pair (every other row's bound is no
lower), and the step merges it: the merged box's row is computed exactly and also offered to every
other row as a new candidate; rows whose partner was one of the two merged boxes become stale (the
partner is gone or moved; their old minimum stays a valid lower bound). At most N - 1 merges; a row
is recomputed only when it reaches the front, so clustered predictions cost a few O(N) passes per
merge instead of the O(N^2) rescan of each step of the plain algorithm (O(N^3) in all).

Chosen over a host numpy version of the same lazy algorithm by measurement (benchmarks/merge.py,
which keeps that version as a prototype; 2-core development machine, one core, float32, boxes
clustered around 6 objects of a 461 x 569 image, a threshold that merges everything):
  N       jnp while_loop (this)   numpy loop on the host
  500     ... ms                  ... ms
  2,000   ... ms                  ... ms
  5,000   ... ms                  ... ms
The jnp version also runs inside jit (static shapes), e.g. per class under vmap.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _match_scores(box: jax.Array, boxes: jax.Array) -> jax.Array:
  """match_score of one box with each of `boxes`: [4], [N, 4] -> [N] (the paper's literal sum of the
  centre distance and the intersection area)."""
  dx = (box[0] + box[2]) * 0.5 - (boxes[:, 0] + boxes[:, 2]) * 0.5
  dy = (box[1] + box[3]) * 0.5 - (boxes[:, 1] + boxes[:, 3]) * 0.5
  w = jnp.maximum(jnp.minimum(box[2], boxes[:, 2]) - jnp.maximum(box[0], boxes[:, 0]), 0)
  h = jnp.maximum(jnp.minimum(box[3], boxes[:, 3]) - jnp.maximum(box[1], boxes[:, 1]), 0)
  return jnp.sqrt(dx * dx + dy * dy) + w * h


def _threshold_below(threshold: float | jax.Array) -> jax.Array:
  """The threshold as float32 [], rounded down for a Python number: a float32 score s is <= the
  result exactly when s <= threshold as a double (float32(0.3) is above 0.3)."""
  if isinstance(threshold, (int, float)):
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
      rounded = np.nextafter(rounded, np.float32(-np.inf))
    return jnp.asarray(rounded)
  return jnp.asarray(threshold, jnp.float32)


@jax.jit
def _greedy_merge(boxes: jax.Array, scores: jax.Array, valid: jax.Array,
                  threshold: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """greedy_merge on float32 [N, 4], float32 [N], bool [N] and a float32 [] threshold."""
  n = boxes.shape[0]
  index = jnp.arange(n, dtype=jnp.int32)
  inf = jnp.float32(jnp.inf)

  def best_partner(k: jax.Array, box: jax.Array, boxes: jax.Array,
                   alive: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Scores of `box` (in slot k) with every live box: ([N] scores, inf where dead or k; min;
    first argmin)."""
    row = jnp.where(alive & (index != k), _match_scores(box, boxes), inf)
    arg = jnp.argmin(row).astype(jnp.int32)
    return row, row[arg], arg

  def init_row(k: jax.Array) -> tuple[jax.Array, jax.Array]:
    _, low, arg = best_partner(k, boxes[k], boxes, valid)
    return jnp.where(valid[k], low, inf), arg

  # One row at a time (lax.map), so that the start needs O(N) memory too, not an N x N matrix.
  row_min, row_arg = jax.lax.map(init_row, index, batch_size=min(n, 64))
  stale = jnp.zeros((n,), bool)

  def cond(state):
    _, _, _, row_min, _, _ = state
    low = jnp.min(row_min)
    # A bound above the threshold means every pair is: the paper's stop. inf: fewer than 2 boxes.
    return (low <= threshold) & (low < inf)

  def body(state):
    boxes, conf, alive, row_min, row_arg, stale = state
    k = jnp.argmin(row_min).astype(jnp.int32)
    merge = ~stale[k]  # else: recompute row k, merge nothing
    lo, hi = jnp.minimum(k, row_arg[k]), jnp.maximum(k, row_arg[k])
    target = jnp.where(merge, lo, k)
    new_box = jnp.where(merge, (boxes[lo] + boxes[hi]) * 0.5, boxes[k])
    boxes = boxes.at[target].set(new_box)
    conf = conf.at[target].set(jnp.where(merge, conf[lo] + conf[hi], conf[target]))
    alive = alive.at[hi].set(alive[hi] & ~merge)
    row, low, arg = best_partner(target, new_box, boxes, alive)
    # Offer the merged box to every other row. A row whose partner was lo or hi keeps its old
    # minimum as a lower bound (stale), unless the new box beats it strictly (then that is exact).
    lost = merge & ((row_arg == lo) | (row_arg == hi))
    tie_wins = (row == row_min) & (lo < row_arg) & ~(stale | lost)  # lowest index on ties
    update = merge & ((row < row_min) | tie_wins)
    row_min = jnp.where(update, row, row_min)
    row_arg = jnp.where(update, target, row_arg)
    stale = (stale | lost) & ~update
    row_min = row_min.at[target].set(low)
    row_min = row_min.at[hi].set(jnp.where(merge, inf, row_min[hi]))  # hi == target if not merge
    row_arg = row_arg.at[target].set(arg)
    stale = stale.at[target].set(False)
    return boxes, conf, alive, row_min, row_arg, stale

  state = (boxes, scores, valid, row_min, row_arg, stale)
  boxes, conf, alive, _, _, _ = jax.lax.while_loop(cond, body, state)
  # Survivors by confidence, descending; ties: lower slot first (stable sort); dead rows last.
  order = jnp.argsort(jnp.where(alive, conf, -inf), descending=True, stable=True)
  order = order[jnp.argsort(~alive[order], stable=True)]  # -inf confidences stay among the live
  alive = alive[order]
  return (jnp.where(alive[:, None], boxes[order], 0), jnp.where(alive, conf[order], 0), alive)


def greedy_merge(boxes: jax.Array, scores: jax.Array, valid: jax.Array,
                 threshold: float | jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """OverFeat's greedy merge of boxes (SPEC A5 (d)); see the module docstring for the definitions.

  Args:
    boxes: [N, 4] float boxes (x1, y1, x2, y2) in pixels, finite (computed in float32).
    scores: [N] float classifier score of the window that predicted each box.
    valid: [N] bool; False rows (padding) take no part.
    threshold: pairs merge while their match_score (px + px^2, the paper's) is <= this: a Python
      number (checked: not NaN; the float32 scores are compared with it as a double; inf merges
      everything) or a float [] array, which may be traced.
  Returns:
    merged_boxes float32 [N, 4]: the merged boxes sorted by confidence, descending (ties: the box
      holding the lower input index first), then zero rows;
    confidence float32 [N]: each merged box's summed window scores, 0 on the padding rows;
    merged_valid bool [N]: True on the real rows (a prefix).
  Runs eagerly (one compiled loop per N) and inside jit / vmap.
  """
  if isinstance(threshold, (int, float)) and math.isnan(threshold):
    raise ValueError("greedy_merge: threshold is NaN")
  boxes, scores, valid = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(valid)
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"greedy_merge: boxes must be [N, 4], got shape {boxes.shape}")
  if scores.shape != boxes.shape[:1] or valid.shape != boxes.shape[:1]:
    raise ValueError(f"greedy_merge: scores {scores.shape} and valid {valid.shape} must be "
                     f"[{boxes.shape[0]}] like the boxes")
  if boxes.shape[0] == 0:
    return jnp.zeros((0, 4), jnp.float32), jnp.zeros((0,), jnp.float32), jnp.zeros((0,), bool)
  return _greedy_merge(boxes.astype(jnp.float32), scores.astype(jnp.float32), valid.astype(bool),
                       _threshold_below(threshold))


def best_box(merged_boxes: jax.Array, confidence: jax.Array,
             merged_valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The localization answer (SPEC A5): the valid merged box with the highest confidence.

  Args:
    merged_boxes: [N, 4], confidence: [N], merged_valid: bool [N] (greedy_merge's outputs; any
      order).
  Returns:
    (box [4], confidence []): the first valid box of highest confidence; with no valid box, a zero
    box and confidence -inf.
  """
  ranked = jnp.where(merged_valid, confidence, -jnp.inf)
  k = jnp.argmax(ranked)
  found = jnp.any(merged_valid)
  return (jnp.where(found, merged_boxes[k], 0), jnp.where(found, ranked[k], -jnp.inf))
