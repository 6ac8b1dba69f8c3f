"""OverFeat's greedy box merge (SPEC A5 (d)): hand-computed cases, a plain Python loop over all
pairs as the reference, the partner lists' invariant checked by brute force, and edge cases."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import best_box, greedy_merge, merge

F32 = np.float32


def loop_match_score(a: np.ndarray, b: np.ndarray) -> np.float32:
  """The paper's match score of two float32 boxes, scalar by scalar in float32, in the op's order of
  operations. (Compiled, the op fuses dx * dx + dy * dy into one multiply-add, which can change the
  last bit; on the integer grid both are exact. The merges below agree bit for bit all the same.)"""
  dx = (a[0] + a[2]) * F32(0.5) - (b[0] + b[2]) * F32(0.5)
  dy = (a[1] + a[3]) * F32(0.5) - (b[1] + b[3]) * F32(0.5)
  w = max(min(a[2], b[2]) - max(a[0], b[0]), F32(0))
  h = max(min(a[3], b[3]) - max(a[1], b[1]), F32(0))
  return np.sqrt(dx * dx + dy * dy) + w * h


def loop_overlap_score(a: np.ndarray, b: np.ndarray) -> np.float32:
  """The "overlap" match score, 1 - IoU, scalar by scalar in float32 (0 overlap for an empty union)."""
  w = max(min(a[2], b[2]) - max(a[0], b[0]), F32(0))
  h = max(min(a[3], b[3]) - max(a[1], b[1]), F32(0))
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return F32(1) - (inter / union if union > 0 else F32(0))


LOOP_SCORES = {"paper": loop_match_score, "overlap": loop_overlap_score}


def loop_merge(boxes: np.ndarray, scores: np.ndarray, valid: np.ndarray,
               threshold: float, score: str = "paper", average: str = "pair"
               ) -> list[tuple[np.ndarray, np.float32, int]]:
  """SPEC A5 (d) as written: every step scans all pairs for the lowest score (strict <, so the
  lowest (i, j) wins ties), stops when it is > threshold, else merges into the lower slot: the
  pair's mean, or with average="weighted" their mean weighted by their confidences.
  Returns the survivors as (box, confidence, slot), by confidence descending, then slot."""
  score_name = score
  live = {i: (boxes[i].astype(F32), F32(scores[i])) for i in range(len(boxes)) if valid[i]}
  while len(live) > 1:
    best = None
    slots = sorted(live)
    for x, i in enumerate(slots):
      for j in slots[x + 1:]:
        score = LOOP_SCORES[score_name](live[i][0], live[j][0])
        if best is None or score < best[0]:
          best = (score, i, j)
    score, i, j = best
    if float(score) > threshold:
      break
    (box_i, conf_i), (box_j, conf_j) = live[i], live[j]
    if average == "weighted":
      box = (box_i * conf_i + box_j * conf_j) / (conf_i + conf_j)
    else:
      box = (box_i + box_j) * F32(0.5)
    live[i] = (box, conf_i + conf_j)
    del live[j]
  return sorted(((box, conf, slot) for slot, (box, conf) in live.items()),
                key=lambda item: (-float(item[1]), item[2]))


def assert_matches_loop(boxes, scores, valid, threshold, score: str = "paper") -> int:
  """greedy_merge equals loop_merge exactly (float32 bits); returns the number of survivors."""
  expected = loop_merge(boxes, scores, valid, threshold, score)
  merged, conf, merged_valid = map(np.asarray, greedy_merge(boxes, scores, valid, threshold,
                                                            score=score))
  n, k = len(boxes), len(expected)
  np.testing.assert_array_equal(merged_valid, np.arange(n) < k)
  want_boxes = np.zeros((n, 4), F32)
  want_conf = np.zeros(n, F32)
  for row, (box, c, _) in enumerate(expected):
    want_boxes[row], want_conf[row] = box, c
  np.testing.assert_array_equal(merged, want_boxes)
  np.testing.assert_array_equal(conf, want_conf)
  assert merged.dtype == np.float32 and conf.dtype == np.float32 and merged_valid.dtype == bool
  return k


# ------------------------------------------------------------------------------------------------
# Hand-computed


HAND_BOXES = np.array([[0, 0, 10, 10],      # 0: centre (5, 5)
                       [10, 0, 20, 10],     # 1: centre (15, 5), touches 0 (no overlap)
                       [2, 0, 12, 10],      # 2: centre (7, 5), overlaps 0 by 8 x 10
                       [100, 100, 110, 110]], F32)  # 3: far away
HAND_SCORES = np.array([0.5, 0.25, 0.125, 1.0], F32)


def test_hand_case_overlap_keeps_boxes_apart():
  # Scores: (0,1) = 10 + 0 = 10; (0,2) = 2 + 80 = 82; (1,2) = 8 + 20 = 28; with 3 all > 130.
  # t = 30: merge (0,1) -> slot 0 = [5, 0, 15, 10] (centre (10, 5)), confidence 0.5 + 0.25 = 0.75.
  # Then (0,2) = 3 + 7 * 10 = 73 > 30: stop, although box 2's centre is only 3 px away (the
  # paper's score adds the overlap area). Output by confidence: box 3 (1.0), slot 0, box 2.
  merged, conf, valid = greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 30.0)
  np.testing.assert_array_equal(valid, [True, True, True, False])
  np.testing.assert_array_equal(merged, [[100, 100, 110, 110], [5, 0, 15, 10], [2, 0, 12, 10],
                                         [0, 0, 0, 0]])
  np.testing.assert_array_equal(conf, [1.0, 0.75, 0.125, 0])


def test_hand_case_second_merge_and_threshold_is_inclusive():
  # t = 73: the second pair (score exactly 73) merges too: [(5+2)/2, 0, (15+12)/2, 10] =
  # [3.5, 0, 13.5, 10], confidence 0.75 + 0.125 = 0.875. Then with box 3: centres (8.5, 5) and
  # (105, 105), sqrt(96.5^2 + 100^2) = 138.97 > 73: stop.
  merged, conf, valid = greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 73.0)
  np.testing.assert_array_equal(valid, [True, True, False, False])
  np.testing.assert_array_equal(merged[:2], [[100, 100, 110, 110], [3.5, 0, 13.5, 10]])
  np.testing.assert_array_equal(conf, [1.0, 0.875, 0, 0])
  # Just below 73: only the first merge.
  assert int(np.sum(greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 72.99)[2])) == 3
  # Everything: the last merge averages [3.5, 0, 13.5, 10] with box 3 -> [51.75, 50, 61.75, 60],
  # confidence 0.875 + 1.0.
  merged, conf, valid = greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), math.inf)
  np.testing.assert_array_equal(valid, [True, False, False, False])
  np.testing.assert_array_equal(merged[0], [51.75, 50, 61.75, 60])
  np.testing.assert_array_equal(conf[0], 1.875)


def test_ties_merge_the_lowest_index_pair_first():
  # Three boxes side by side (and a padding row): (0,1) = (1,2) = 10, (0,2) = 20. (0,1) first ->
  # [5, 0, 15, 10], then (0,2) = 15 > 12 stops. The other order would have made [15, 0, 25, 10].
  boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [0, 0, 0, 0]], F32)
  scores = np.array([1.0, 2.0, 4.0, 0.0], F32)
  three = np.arange(4) < 3
  merged, conf, valid = greedy_merge(boxes, scores, three, 12.0)
  np.testing.assert_array_equal(merged[:2], [[20, 0, 30, 10], [5, 0, 15, 10]])
  np.testing.assert_array_equal(conf, [4.0, 3.0, 0, 0])
  np.testing.assert_array_equal(valid, [True, True, False, False])
  # Equal confidences: the box holding the lower input index comes first.
  merged, conf, _ = greedy_merge(boxes, np.ones(4, F32), three, 0.0)
  np.testing.assert_array_equal(merged, boxes)


def test_a_merged_box_tying_an_older_partner_wins_by_its_lower_index():
  # Box 0 (centre (5, 5)) is 20 from box 3 (centre (-15, 5)) and 20.6 from boxes 1 and 2. Boxes 1
  # and 2 touch (centres (25, 0), (25, 10)): score 10, merged first into slot 1 = [20, 0, 30, 10],
  # centre (25, 5), now exactly 20 from box 0, tying box 3. The lowest pair is (0, 1), not (0, 3):
  # slot 0 = [10, 0, 20, 10] with confidence 1 + (2 + 4) = 7; then 30 > 20 to box 3: stop.
  boxes = np.array([[0, 0, 10, 10], [20, -5, 30, 5], [20, 5, 30, 15], [-20, 0, -10, 10]], F32)
  merged, conf, valid = greedy_merge(boxes, np.array([1, 2, 4, 8], F32), np.ones(4, bool), 20.0)
  np.testing.assert_array_equal(valid, [True, True, False, False])
  np.testing.assert_array_equal(merged[:2], [[-20, 0, -10, 10], [10, 0, 20, 10]])
  np.testing.assert_array_equal(conf, [8, 7, 0, 0])


def test_padding_rows_take_no_part():
  # The hand case without box 3, whose row holds garbage (NaN) and a high score: at t = 30, (0,1)
  # merge as before (confidence 0.75), box 2 stays.
  boxes = np.concatenate([HAND_BOXES[:3], np.full((1, 4), np.nan, F32)])
  scores = np.concatenate([HAND_SCORES[:3], [100.0]]).astype(F32)
  merged, conf, merged_valid = greedy_merge(boxes, scores, np.arange(4) < 3, 30.0)
  np.testing.assert_array_equal(merged_valid, [True, True, False, False])
  np.testing.assert_array_equal(merged, [[5, 0, 15, 10], [2, 0, 12, 10], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(conf, [0.75, 0.125, 0, 0])


# ------------------------------------------------------------------------------------------------
# Against the loop


def clustered_boxes(rng: np.random.Generator, n: int, *, grid: bool,
                    objects: int = 4) -> np.ndarray:
  """Jittered copies of a few boxes of a 200 x 200 image; on the integer grid (then every score of
  the first merges is exact in float32, whatever the order of operations, and ties are common)."""
  xy = rng.uniform(0, 150, (objects, 2))
  base = np.concatenate([xy, xy + rng.uniform(8, 50, (objects, 2))], 1)
  boxes = base[rng.integers(0, objects, n)] + rng.normal(0, 6, (n, 4))
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
  return (np.round(boxes) if grid else boxes).astype(F32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid", [True, False])
def test_matches_loop_on_random_boxes(seed, grid):
  rng = np.random.default_rng(seed + 10 * grid)
  n = 40
  boxes = clustered_boxes(rng, n, grid=grid)
  scores = rng.uniform(size=n).astype(F32)
  if seed % 2:  # padding rows, not at the end
    valid = rng.uniform(size=n) < 0.7
    boxes[~valid] = rng.uniform(-1e3, 1e3, (int((~valid).sum()), 4))
  else:
    valid = np.ones(n, bool)
  thresholds = (-1.0, 20.0, 60.0, 200.0, math.inf)
  counts = [assert_matches_loop(boxes, scores, valid, t) for t in thresholds]
  assert counts[0] == valid.sum()  # nothing merges
  assert counts[-1] == 1  # everything merges
  assert counts == sorted(counts, reverse=True) and 1 < counts[2] < counts[0]  # 60 merges some


@pytest.mark.parametrize("seed", range(3))
def test_overlap_score_matches_loop_on_random_boxes(seed):
  # 1 - IoU: the most overlapping pair first; disjoint boxes (score 1) never merge below t = 1.
  rng = np.random.default_rng(100 + seed)
  n = 40
  boxes = clustered_boxes(rng, n, grid=False)
  scores = rng.uniform(size=n).astype(F32)
  valid = rng.uniform(size=n) < 0.8
  counts = [assert_matches_loop(boxes, scores, valid, t, "overlap") for t in (-1.0, 0.3, 0.6, 0.99, 1.0)]
  assert counts[0] == valid.sum() and counts[-1] == 1
  assert counts == sorted(counts, reverse=True) and 1 < counts[2] < counts[0]


def test_overlap_score_hand_case():
  # HAND_BOXES: IoU(0, 2) = 80 / 120, the only overlapping pair; (0, 1) merely touch, 3 is far.
  # The paper's score merges (0, 1) first (score 10); "overlap" merges (0, 2) first (1 - 2/3).
  merged, conf, valid = map(np.asarray, greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 0.5,
                                                     score="overlap"))
  np.testing.assert_array_equal(valid, [True, True, True, False])
  np.testing.assert_array_equal(merged[:3], [HAND_BOXES[3], [1, 0, 11, 10], HAND_BOXES[1]])
  np.testing.assert_array_equal(conf[:3], [1.0, 0.625, 0.25])
  # At t = 0.3 (IoU >= 0.7 only) nothing merges.
  assert np.asarray(greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 0.3, score="overlap")[2]).all()
  with pytest.raises(ValueError, match="score must be one of"):
    greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 0.5, score="iou")


def test_weighted_average_hand_case():
  # HAND_BOXES with "overlap" at t = 0.5: only (0, 2) merges (IoU 2/3). Their confidences 0.5 and
  # 0.125 weigh the x coordinates: (0.5 * 0 + 0.125 * 2) / 0.625 = 0.4 and 10.4 (pair: 1 and 11).
  merged, conf, valid = map(np.asarray, greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 0.5,
                                                     score="overlap", average="weighted"))
  np.testing.assert_array_equal(valid, [True, True, True, False])
  np.testing.assert_allclose(merged[1], [0.4, 0, 10.4, 10], rtol=1e-6)
  np.testing.assert_array_equal(conf[:3], [1.0, 0.625, 0.25])
  with pytest.raises(ValueError, match="average must be one of"):
    greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 0.5, average="mean")


def test_weighted_average_is_the_score_weighted_mean_of_all_merged_boxes():
  # Whatever the order of the merges, a box that merged everything is sum(s_i b_i) / sum(s_i);
  # the pair average instead weighs the box merged last 1/2.
  rng = np.random.default_rng(7)
  boxes = clustered_boxes(rng, 30, grid=False, objects=1)
  scores = rng.uniform(0.05, 1.0, 30).astype(F32)
  valid = np.ones(30, bool)
  merged, conf, merged_valid = map(np.asarray, greedy_merge(boxes, scores, valid, math.inf,
                                                            score="overlap", average="weighted"))
  assert merged_valid.sum() == 1
  want = (boxes.astype(np.float64) * scores[:, None]).sum(0) / scores.astype(np.float64).sum()
  np.testing.assert_allclose(merged[0], want, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(conf[0], scores.astype(np.float64).sum(), rtol=1e-5)
  pair = np.asarray(greedy_merge(boxes, scores, valid, math.inf, score="overlap")[0])[0]
  assert np.abs(pair - want).max() > 0.5  # the paper's average is another box


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("score", ["paper", "overlap"])
def test_weighted_average_matches_loop_on_random_boxes(seed, score):
  # Same greedy order as the loop; the weighted means agree to float32 rounding (compiled, XLA may
  # fuse the multiply-adds), so the boxes are compared to a tolerance, the merge counts exactly.
  rng = np.random.default_rng(300 + seed)
  n = 40
  boxes = clustered_boxes(rng, n, grid=False)
  scores = rng.uniform(0.05, 1.0, n).astype(F32)
  valid = rng.uniform(size=n) < 0.8
  for t in ((20.0, 60.0, math.inf) if score == "paper" else (0.3, 0.6, 1.0)):
    expected = loop_merge(boxes, scores, valid, t, score, "weighted")
    merged, conf, merged_valid = map(np.asarray, greedy_merge(boxes, scores, valid, t, score=score,
                                                              average="weighted"))
    k = len(expected)
    np.testing.assert_array_equal(merged_valid, np.arange(n) < k)
    np.testing.assert_allclose(merged[:k], np.stack([b for b, _, _ in expected]), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(conf[:k], [c for _, c, _ in expected], rtol=1e-5)


@pytest.mark.parametrize("candidates", [1, 4])
def test_any_number_of_candidates_gives_the_same_merges(candidates):
  # The per-box partner lists only change the speed: with 1 slot rows go stale (and are recomputed)
  # often; with 4 offers rarely evict.
  rng = np.random.default_rng(candidates)
  boxes = clustered_boxes(rng, 40, grid=False)
  scores = rng.uniform(size=40).astype(F32)
  valid = rng.uniform(size=40) < 0.9
  for t in (20.0, 60.0, math.inf):
    expected = greedy_merge(boxes, scores, valid, t)
    for got, want in zip(greedy_merge(boxes, scores, valid, t, candidates=candidates), expected):
      np.testing.assert_array_equal(got, want)
    assert_matches_loop(boxes, scores, valid, t)


# Compiled, as inside greedy_merge: XLA:CPU turns dx * dx + dy * dy into a fused multiply-add, so
# eager (op by op) scores can differ from the loop's in the last place.
jit_scores = jax.jit(merge._match_scores)


def check_partner_lists(boxes, alive, table) -> None:
  """The invariant of merge._Table, by brute force: every listed partner is live, with its current
  score, below the row's bound; every live partner below the bound is listed; the row summaries are
  right (pairs ordered by (score, partner index)).

  (Each pair sits in two rows, so a broken list often still gives the right merges: this checks
  the lists themselves.)"""
  boxes, alive = np.asarray(boxes), np.asarray(alive)
  val, ids = np.asarray(table.val), np.asarray(table.ids)
  bound, bound_id = np.asarray(table.bound), np.asarray(table.bound_id)
  for r in range(len(boxes)):
    if not alive[r]:
      assert table.row_min[r] == np.inf
      continue
    scores = np.asarray(jit_scores(boxes[r], boxes))
    listed = {int(p): v for p, v in zip(ids[:, r], val[:, r]) if p != merge._EMPTY}
    assert np.all(val[:, r][ids[:, r] == merge._EMPTY] == np.inf)
    for p, v in listed.items():
      assert alive[p] and p != r and v == scores[p], (r, p)
      assert (v, p) < (bound[r], bound_id[r]), (r, p)
    for p in np.flatnonzero(alive):
      if p != r and (scores[p], p) < (bound[r], bound_id[r]):
        assert p in listed, (r, p)
    if listed:
      best = min((v, p) for p, v in listed.items())
      assert (table.row_min[r], table.row_arg[r], table.stale[r]) == (best[0], best[1], False)
    else:
      assert (table.row_min[r], table.stale[r]) == (bound[r], True)


@pytest.mark.parametrize("candidates", [1, 2])
@pytest.mark.parametrize("lattice", [False, True])
def test_partner_lists_stay_complete(candidates, lattice):
  if lattice:  # 10 x 10 boxes on a 10 px lattice: many equal scores, the partner index decides
    xy = np.random.default_rng(2).integers(0, 5, (40, 2)) * 10
    boxes = np.concatenate([xy, xy + 10], 1).astype(F32)
  else:
    boxes = clustered_boxes(np.random.default_rng(candidates), 40, grid=False)
  n = len(boxes)
  boxes, conf, alive = jnp.asarray(boxes), jnp.ones(n, F32), jnp.asarray(np.arange(n) < n - 2)
  m, threshold = candidates, jnp.float32(np.inf)
  init = jax.jit(merge._init_table, static_argnums=2)
  step = jax.jit(merge._merge_step, static_argnums=5)
  settle = jax.jit(merge._settle, static_argnums=5)
  table = init(boxes, alive, m)
  check_partner_lists(boxes, alive, table)
  table, k = settle(boxes, alive, table, merge._front(table.row_min), threshold, m)
  for _ in range(n - 3):  # n - 2 live boxes: n - 3 merges
    assert not table.stale[k]
    boxes, conf, alive, table, k = step(boxes, conf, alive, table, k, m)
    check_partner_lists(boxes, alive, table)
    table, k = settle(boxes, alive, table, k, threshold, m)
    check_partner_lists(boxes, alive, table)
  assert int(alive.sum()) == 1 and table.row_min[k] == np.inf


def test_matches_loop_with_many_ties():
  # Boxes on a coarse lattice: many pairs share a score.
  rng = np.random.default_rng(7)
  xy = rng.integers(0, 6, (40, 2)) * 10
  boxes = np.concatenate([xy, xy + 10], 1).astype(F32)
  scores = np.ones(40, F32)
  for t in (10.0, 15.0, 100.0):
    assert_matches_loop(boxes, scores, np.ones(40, bool), t)


def test_under_jit_and_vmap_with_a_traced_threshold():
  rng = np.random.default_rng(3)
  boxes = np.stack([clustered_boxes(rng, 40, grid=True) for _ in range(3)])  # [3, 40, 4]
  scores = rng.uniform(size=(3, 40)).astype(F32)
  valid = rng.uniform(size=(3, 40)) < 0.8
  thresholds = np.array([5.0, 20.0, 1e9], F32)  # exact in float32: no rounding question
  batched = jax.jit(jax.vmap(greedy_merge))(boxes, scores, valid, thresholds)
  for c in range(3):
    one = greedy_merge(boxes[c], scores[c], valid[c], float(thresholds[c]))
    for got, want in zip(batched, one):
      np.testing.assert_array_equal(got[c], want)
    assert_matches_loop(boxes[c], scores[c], valid[c], float(thresholds[c]))


# ------------------------------------------------------------------------------------------------
# Edges and the localization answer


@pytest.mark.parametrize("n, n_valid", [(0, 0), (4, 0), (4, 1)])
def test_fewer_than_two_boxes(n, n_valid):
  boxes = np.arange(4 * n, dtype=F32).reshape(n, 4) * 2
  scores = np.arange(1, n + 1, dtype=F32)
  valid = np.arange(n) < n_valid
  merged, conf, merged_valid = greedy_merge(boxes, scores, valid, math.inf)
  assert merged.shape == (n, 4) and conf.shape == (n,) and merged_valid.shape == (n,)
  np.testing.assert_array_equal(merged_valid, valid)
  np.testing.assert_array_equal(merged, np.where(valid[:, None], boxes, 0))
  np.testing.assert_array_equal(conf, np.where(valid, scores, 0))


def test_best_box():
  merged, conf, valid = greedy_merge(HAND_BOXES, HAND_SCORES, np.ones(4, bool), 73.0)
  box, c = best_box(merged, conf, valid)
  np.testing.assert_array_equal(box, [100, 100, 110, 110])
  assert float(c) == 1.0
  # Any order, padding ignored even with a higher confidence.
  box, c = best_box(jnp.asarray([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], jnp.float32),
                    jnp.asarray([5.0, 2.0, 3.0]), jnp.asarray([False, True, True]))
  np.testing.assert_array_equal(box, [4, 4, 5, 5])
  assert float(c) == 3.0
  box, c = best_box(*greedy_merge(HAND_BOXES, HAND_SCORES, np.zeros(4, bool), 1.0))
  np.testing.assert_array_equal(box, [0, 0, 0, 0])
  assert float(c) == -math.inf


def test_threshold_compared_as_a_double():
  # Two 1 x 1 boxes 0.3 apart in x (overlap 0.7 x 1; two padding rows): a score that is no round
  # number in float32. At exactly that score they merge; at the double just below it they do not.
  boxes = np.array([[0, 0, 1, 1], [0.3, 0, 1.3, 1], [0, 0, 0, 0], [0, 0, 0, 0]], F32)
  score = float(loop_match_score(boxes[0], boxes[1]))
  ones, two = np.ones(4, F32), np.arange(4) < 2
  assert int(np.sum(greedy_merge(boxes, ones, two, score)[2])) == 1
  below = np.nextafter(score, -np.inf)  # a double between two float32 values
  assert int(np.sum(greedy_merge(boxes, ones, two, below)[2])) == 2


def test_bad_input():
  ones = np.ones(3, bool)
  with pytest.raises(ValueError, match="NaN"):
    greedy_merge(HAND_BOXES[:3], HAND_SCORES[:3], ones, math.nan)
  with pytest.raises(ValueError, match=r"\[N, 4\]"):
    greedy_merge(HAND_BOXES[:3, :2], HAND_SCORES[:3], ones, 1.0)
  with pytest.raises(ValueError, match="scores"):
    greedy_merge(HAND_BOXES[:3], HAND_SCORES, ones, 1.0)
  with pytest.raises(ValueError, match="candidates"):
    greedy_merge(HAND_BOXES[:3], HAND_SCORES[:3], ones, 1.0, candidates=0)
