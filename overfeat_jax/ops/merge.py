"""OverFeat's greedy merge of predicted boxes (SPEC A5 (d), A6), padded to a static size.

Algorithm (SPEC A5 (d)), on the set B of valid boxes, each with the classifier score of the window
that predicted it:
  1. (b1, b2) = the pair of distinct boxes of B with the lowest match_score;
  2. if match_score(b1, b2) > threshold: stop;
  3. else replace b1, b2 by box_merge(b1, b2), whose confidence is the sum of theirs; go to 1.
  match_score(b1, b2) = |centre(b1) - centre(b2)| (Euclidean, pixels) + intersection_area(b1, b2)
  box_merge(b1, b2) = (b1 + b2) / 2, coordinate by coordinate, unweighted.
A merged box's confidence is thus the sum of the scores of all windows whose boxes went into it.

This is the paper's literal definition (`score="paper"`), kept as it is: a distance (px) plus an
area (px^2), so the threshold is in mixed units, and the score is LOW only for boxes that are close
AND hardly overlap.
Two boxes far apart score high, and so do two boxes that overlap a lot: two identical 100 x 100
boxes score 10,000 and merge only when threshold >= 10,000, while two disjoint boxes side by side
with centres 100 px apart score 100. A merged box is an average of averages (a box that went in k
merges ago weighs 2^-k in it), also as the paper says.

The alternative `score="overlap"`: match_score(b1, b2) = 1 - IoU(b1, b2), in [0, 1] (1 for disjoint
boxes, and for boxes of zero area). It makes the boxes of one object merge first (the most
overlapping pair), so that a threshold t < 1 merges the pairs with IoU >= 1 - t and never merges
boxes that do not overlap: what detection needs, where two boxes left for one object are a false
positive (measured in the README, "Detection (OverFeat)"). Everything else (greedy, the lowest
pair first, averaging, summed confidences) is as above.

The alternative `average="weighted"`: box_merge(b1, b2) = (c1 b1 + c2 b2) / (c1 + c2), where c1, c2
are the two boxes' confidences (the plain average where both are 0). Since a merged box's confidence
is the sum of its windows' scores, a merged box is then the score-weighted mean of all the window
boxes that went into it, whatever the order of the merges, instead of an average of averages in
which the box merged last weighs 1/2 (measured in the README, "Detection (OverFeat)": with the
paper's average an outlying window that joins a cluster late drags the merged box halfway to it).

Ties: among pairs with the same (float32) score, the one with the lowest (first index, second
index) goes first. The merged box takes the lower of the two slots, so a merged box's slot is the
lowest input index among the boxes it contains. The output lists the surviving boxes sorted by
confidence, descending (ties: lower slot first), then the invalid rows as zeros.

Scores are float32. Compiled, XLA fuses dx * dx + dy * dy into one multiply-add, so a score can
differ in its last bit from the same formula evaluated op by op (numpy, or jax outside jit); the
merges then differ only where two pairs' scores are within one float32 step of each other.

Implementation: `lax.while_loop`s over per-box lists of best partners; O(m N) memory (never an N x N
matrix) and a few O(N) passes per merge. Pairs are ordered by (score, partner index), which is the
tie rule above. Each live box r keeps its m = `candidates` best (score, partner) pairs and a bound:
every live partner below the bound is in the list, with its current score (_Table). The row's best
listed pair is then its exact best pair; a row whose list has emptied is "stale" and its bound is
a lower bound of its best score. The outer loop takes the row with the lowest value (the lowest row
on ties); while that row is stale, an inner loop recomputes it (one [N] row of scores, its m + 1
best); once it is exact, its pair is the global best pair (every other row's value is no higher)
and the merge step runs: the two boxes' entries leave every list, the merged box's row is computed
from scratch, and its scores (the new column: the score is symmetric) are offered to every other
row, going into its list if below its bound (into an empty slot, or evicting the row's largest
entry, which becomes the new bound). At most N - 1 merges.

Why lists and a bound: a first version kept only each row's best partner and, when that partner was
merged, its old minimum as the lower bound. On predictions clustered around objects a few boxes are
the best partner of many (with this score: small boxes, whose overlaps are small), so every merge
sent many rows to be recomputed: 84,000 row recomputes for 2,000 boxes merged into one, against
8,900 with one listed partner and a bound (and 4,200 with 8); the bound keeps stale rows from
coming to the front early, and offers refill lists without a recompute. Larger lists cost more per
merge than they save: `candidates` = 2 measured fastest or within a few % of it for 500 to 5,000
boxes, clustered or scattered uniformly; 8 was ~40% slower, 1 up to 3x slower on scattered boxes.

Chosen over a host numpy loop of the same algorithm (benchmarks/merge.py keeps it as a prototype),
which pays numpy's per-call overhead on every step: 15-26x slower. Measured with
`python benchmarks/merge.py` on the shared 2-core development machine, one core, float32, boxes
clustered around 6 objects of a 461 x 569 image, merged into one box (threshold inf); CPU ms (the
time the process held the core; wall times were the same to 1.5x, other work running):
  N       merges   jnp while_loop (this)   numpy host loop   paper fast model on the image
  500     499      11 ms                   196 ms            class_map 342 ms,
  2,000   1,999    83 ms                   1,635 ms          dense_class_map fine 630 ms
  5,000   4,999    545 ms                  12,762 ms         (14 x 22 grid: 308 boxes per class)
Both gave identical results. The jnp version also runs inside jit with static shapes, e.g. per
class under vmap (a vmapped while_loop runs until every member is done).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


# Partner index of an empty candidate slot: above every real index, so it loses every tie.
_EMPTY = np.iinfo(np.int32).max
# The match scores `greedy_merge` can use (module docstring).
PAPER_SCORE, OVERLAP_SCORE = "paper", "overlap"
MATCH_SCORES = (PAPER_SCORE, OVERLAP_SCORE)
# How `greedy_merge` averages the two boxes it merges (module docstring): the paper's plain mean of
# the pair, or the mean weighted by their confidences.
PAIR_AVERAGE, WEIGHTED_AVERAGE = "pair", "weighted"
MERGE_AVERAGES = (PAIR_AVERAGE, WEIGHTED_AVERAGE)
# Candidate partners each box keeps (the default of greedy_merge's `candidates`; see the docstring).
DEFAULT_CANDIDATES = 2


def _match_scores(box: jax.Array, boxes: jax.Array, score: str = PAPER_SCORE) -> jax.Array:
  """match_score of one box with each of `boxes`: [4], [N, 4] -> [N]. "paper": the paper's literal
  sum of the centre distance and the intersection area; "overlap": 1 - IoU. Symmetric bit for bit
  (the partner lists rely on it)."""
  w = jnp.maximum(jnp.minimum(box[2], boxes[:, 2]) - jnp.maximum(box[0], boxes[:, 0]), 0)
  h = jnp.maximum(jnp.minimum(box[3], boxes[:, 3]) - jnp.maximum(box[1], boxes[:, 1]), 0)
  if score == OVERLAP_SCORE:
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return 1.0 - jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)
  dx = (box[0] + box[2]) * 0.5 - (boxes[:, 0] + boxes[:, 2]) * 0.5
  dy = (box[1] + box[3]) * 0.5 - (boxes[:, 1] + boxes[:, 3]) * 0.5
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


def _first(mask: jax.Array) -> jax.Array:
  """Index of the first True along the last axis (its size where none): [..., M] -> int32 [...].

  A plain min-reduction, which XLA:CPU vectorises; argmin / argmax reduce (value, index) pairs
  and were ~4x slower on [2000].
  """
  size = mask.shape[-1]
  return jnp.min(jnp.where(mask, jnp.arange(size, dtype=jnp.int32), size), axis=-1)


def _lex_less(value1: jax.Array, id1: jax.Array, value2: jax.Array, id2: jax.Array) -> jax.Array:
  """(value1, id1) < (value2, id2): pairs ordered by score, then by partner index (the tie rule)."""
  return (value1 < value2) | ((value1 == value2) & (id1 < id2))


class _Table(NamedTuple):
  """Each box's remembered best partners (the loop's state besides the boxes; N rows, m slots).

  For a live row r, the list val[:, r], ids[:, r] holds exactly the live partners j whose
  (score, j) is below (bound[r], bound_id[r]), each with its current score, in any slots; empty
  slots hold (inf, _EMPTY). row_min / row_arg / stale summarise it: the best listed (score,
  partner), or, when the list is empty (stale), the bound: a lower bound of the row's best score;
  row_min is inf for dead rows. Slot-major, so that reductions over the slots are elementwise over
  N, which XLA:CPU vectorises.
  """
  val: jax.Array  # float32 [m, N]
  ids: jax.Array  # int32 [m, N]
  bound: jax.Array  # float32 [N]
  bound_id: jax.Array  # int32 [N]
  row_min: jax.Array  # float32 [N]
  row_arg: jax.Array  # int32 [N]
  stale: jax.Array  # bool [N]


def _fresh_row(k: jax.Array, box: jax.Array, boxes: jax.Array, alive: jax.Array,
               m: int, score: str = PAPER_SCORE) -> tuple[jax.Array, ...]:
  """Row k (holding `box`) from scratch: (scores [N] with every box, inf where dead or k; the m
  best scores [m] and partners [m]; the next one, the bound: score [] and partner [])."""
  n = boxes.shape[0]
  row = jnp.where(alive & (jnp.arange(n) != k), _match_scores(box, boxes, score), jnp.inf)
  # The m + 1 lowest (score, partner): top_k puts the lower index first among equal values.
  low, arg = jax.lax.top_k(-row, min(m + 1, n))
  low = jnp.concatenate([-low, jnp.full((m + 1 - low.shape[0],), jnp.inf)])
  arg = jnp.concatenate([arg.astype(jnp.int32), jnp.full((m + 1 - arg.shape[0],), _EMPTY)])
  arg = jnp.where(low < jnp.inf, arg, _EMPTY)
  return row, low[:m], arg[:m], low[m], arg[m]


def _summary(alive: jax.Array, val: jax.Array, ids: jax.Array,
             bound: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(row_min, row_arg, stale) of rows [m, ...] (see _Table)."""
  best = jnp.min(val, axis=0)
  partner = jnp.min(jnp.where(val == best, ids, _EMPTY), axis=0)
  stale = best == jnp.inf  # no listed partner left: the best is somewhere at or above the bound
  return jnp.where(alive, jnp.where(stale, bound, best), jnp.inf), partner, stale


def _front(row_min: jax.Array) -> jax.Array:
  """The row with the lowest bound; the lowest row on ties."""
  return _first(row_min == jnp.min(row_min))


def _init_table(boxes: jax.Array, valid: jax.Array, m: int, score: str = PAPER_SCORE) -> _Table:
  """Every row from scratch, 64 rows at a time (O(64 N) memory, never N x N)."""
  n = boxes.shape[0]

  def row(k):
    return _fresh_row(k, boxes[k], boxes, valid, m, score)[1:]

  val, ids, bound, bound_id = jax.lax.map(row, jnp.arange(n, dtype=jnp.int32), batch_size=min(n, 64))
  val, ids = val.T, ids.T  # [m, N]
  return _Table(val, ids, bound, bound_id, *_summary(valid, val, ids, bound))


def _settle(boxes: jax.Array, alive: jax.Array, table: _Table, k: jax.Array,
            threshold: jax.Array, m: int, score: str = PAPER_SCORE) -> tuple[_Table, jax.Array]:
  """Recomputes the front row while it is stale and its bound is <= threshold. Returns (table,
  front row k): row k is then exact, or its bound, and so every score, is above the threshold."""

  def cond(carry):
    table, k = carry
    return table.stale[k] & (table.row_min[k] <= threshold) & (table.row_min[k] < jnp.inf)

  def body(carry):
    t, k = carry
    _, low, arg, b, b_id = _fresh_row(k, boxes[k], boxes, alive, m, score)
    k_min, k_arg, k_stale = _summary(alive[k], low, arg, b)
    row_min = t.row_min.at[k].set(k_min)
    t = _Table(t.val.at[:, k].set(low), t.ids.at[:, k].set(arg), t.bound.at[k].set(b),
               t.bound_id.at[k].set(b_id), row_min, t.row_arg.at[k].set(k_arg),
               t.stale.at[k].set(k_stale))
    return t, _front(row_min)

  return jax.lax.while_loop(cond, body, (table, k))


def _merged_box(box1: jax.Array, conf1: jax.Array, box2: jax.Array, conf2: jax.Array,
                average: str) -> jax.Array:
  """box_merge of two [4] boxes with confidences [] (module docstring): the pair's mean, or with
  WEIGHTED_AVERAGE their confidence-weighted mean (the plain mean when both confidences are 0)."""
  plain = (box1 + box2) * 0.5
  if average == PAIR_AVERAGE:
    return plain
  total = conf1 + conf2
  weighted = (box1 * conf1 + box2 * conf2) / jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, weighted, plain)


def _merge_step(boxes: jax.Array, conf: jax.Array, alive: jax.Array, table: _Table, k: jax.Array,
                m: int, score: str = PAPER_SCORE, average: str = PAIR_AVERAGE
                ) -> tuple[jax.Array, jax.Array, jax.Array, _Table, jax.Array]:
  """Merges exact row k with its best partner into the lower slot and updates every row's list.
  Returns (boxes, conf, alive, table, front row)."""
  index = jnp.arange(boxes.shape[0], dtype=jnp.int32)
  lo, hi = jnp.minimum(k, table.row_arg[k]), jnp.maximum(k, table.row_arg[k])
  new_box = _merged_box(boxes[lo], conf[lo], boxes[hi], conf[hi], average)
  boxes = boxes.at[lo].set(new_box)
  conf = conf.at[lo].set(conf[lo] + conf[hi])
  alive = alive.at[hi].set(False)
  # Entries for lo and hi are out of date: empty them.
  gone = (table.ids == lo) | (table.ids == hi)  # [m, N]
  val, ids = jnp.where(gone, jnp.inf, table.val), jnp.where(gone, _EMPTY, table.ids)
  # The merged box's row; its scores are also the new column (the score is symmetric, bit for bit).
  column, low, arg, b, b_id = _fresh_row(lo, new_box, boxes, alive, m, score)
  # Offer (column[r], lo) to every other row r whose list is complete below it: into an empty
  # slot, else in place of the row's largest entry unless the offer is larger still; either way
  # the evicted pair becomes the row's bound (its list stays complete below the bound).
  offer = alive & (index != lo) & _lex_less(column, lo, table.bound, table.bound_id)  # [N]
  empty = ids == _EMPTY
  has_empty = jnp.any(empty, axis=0)
  top = jnp.max(val, axis=0)
  top_id = jnp.max(jnp.where(val == top, ids, -1), axis=0)
  offer_is_top = _lex_less(top, top_id, column, lo)
  slot = jnp.where(has_empty, _first(empty.T), _first(((val == top) & (ids == top_id)).T))
  write = (offer & (has_empty | ~offer_is_top)) & (jnp.arange(m)[:, None] == slot)  # [m, N]
  val, ids = jnp.where(write, column, val), jnp.where(write, lo, ids)
  evict = offer & ~has_empty
  bound = jnp.where(evict, jnp.where(offer_is_top, column, top), table.bound)
  bound_id = jnp.where(evict, jnp.where(offer_is_top, lo, top_id), table.bound_id)
  val = val.at[:, lo].set(low).at[:, hi].set(jnp.inf)
  ids = ids.at[:, lo].set(arg).at[:, hi].set(_EMPTY)
  bound, bound_id = bound.at[lo].set(b), bound_id.at[lo].set(b_id)
  row_min, row_arg, stale = _summary(alive, val, ids, bound)
  return (boxes, conf, alive, _Table(val, ids, bound, bound_id, row_min, row_arg, stale),
          _front(row_min))


@functools.partial(jax.jit, static_argnames=("candidates", "score", "average"))
def _greedy_merge(boxes: jax.Array, scores: jax.Array, valid: jax.Array, threshold: jax.Array, *,
                  candidates: int, score: str, average: str
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """greedy_merge on float32 [N, 4], float32 [N], bool [N] and a float32 [] threshold."""
  m = candidates
  table = _init_table(boxes, valid, m, score)

  def cond(state):
    _, _, _, table, k = state
    # A bound above the threshold means every pair is: the paper's stop. inf: fewer than 2 boxes.
    return (table.row_min[k] <= threshold) & (table.row_min[k] < jnp.inf)

  def body(state):
    boxes, conf, alive, table, k = _merge_step(*state, m, score, average)
    return (boxes, conf, alive) + _settle(boxes, alive, table, k, threshold, m, score)

  state = (boxes, scores, valid) + _settle(boxes, valid, table, _front(table.row_min), threshold, m,
                                           score)
  boxes, conf, alive = jax.lax.while_loop(cond, body, state)[:3]
  # Survivors by confidence, descending; ties: lower slot first (stable sort); dead rows last.
  order = jnp.argsort(jnp.where(alive, conf, -jnp.inf), descending=True, stable=True)
  order = order[jnp.argsort(~alive[order], stable=True)]  # -inf confidences stay among the live
  alive = alive[order]
  return (jnp.where(alive[:, None], boxes[order], 0), jnp.where(alive, conf[order], 0), alive)


def greedy_merge(boxes: jax.Array, scores: jax.Array, valid: jax.Array,
                 threshold: float | jax.Array, *, candidates: int = DEFAULT_CANDIDATES,
                 score: str = PAPER_SCORE, average: str = PAIR_AVERAGE
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """OverFeat's greedy merge of boxes (SPEC A5 (d)); see the module docstring for the definitions.

  Args:
    boxes: [N, 4] float boxes (x1, y1, x2, y2) in pixels, finite (computed in float32).
    scores: [N] float classifier score of the window that predicted each box.
    valid: [N] bool; False rows (padding) take no part.
    threshold: pairs merge while their match_score (px + px^2 for the paper's; 1 - IoU for
      "overlap") is <= this: a Python
      number (checked: not NaN; the float32 scores are compared with it as a double; inf merges
      everything) or a float [] array, which may be traced.
    candidates: how many best partners each box remembers (speed only: any value >= 1 gives the
      same result).
    score: PAPER_SCORE ("paper", SPEC A5's literal match_score) or OVERLAP_SCORE ("overlap",
      1 - IoU), the module docstring's two.
    average: PAIR_AVERAGE ("pair", SPEC A5's mean of the two boxes) or WEIGHTED_AVERAGE
      ("weighted", their mean weighted by their confidences, which are then weights: scores >= 0,
      as classifier probabilities are), the module docstring's two.
  Returns:
    merged_boxes float32 [N, 4]: the merged boxes sorted by confidence, descending (ties: the box
      holding the lower input index first), then zero rows;
    confidence float32 [N]: each merged box's summed window scores, 0 on the padding rows;
    merged_valid bool [N]: True on the real rows (a prefix).
  Runs eagerly (one compiled loop per N) and inside jit / vmap.
  """
  if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
    raise ValueError(f"greedy_merge: candidates must be an int >= 1, got {candidates!r}")
  if score not in MATCH_SCORES:
    raise ValueError(f"greedy_merge: score must be one of {MATCH_SCORES}, got {score!r}")
  if average not in MERGE_AVERAGES:
    raise ValueError(f"greedy_merge: average must be one of {MERGE_AVERAGES}, got {average!r}")
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
                       _threshold_below(threshold), candidates=candidates, score=score,
                       average=average)


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
