"""OverFeat's greedy box merge (ops.greedy_merge, SPEC A5 (d)) beside the network, on one CPU core.

  python benchmarks/merge.py                  # N = 500, 2,000, 5,000: ~3 min of one core's time
  python benchmarks/merge.py --no-numpy       # without the slow prototype: under a minute
  python benchmarks/merge.py --sizes 500 --no-network --runs 1   # quick

Inputs: what a dense grid's box regressor gives on a 461 x 569 image (scale 6 of SPEC A4): N boxes,
85% of them scattered around 6 objects (object sizes 60-300 px, each edge jittered by N(0, 8% of
the object's size), scores 0.3-1) and 15% anywhere (16-200 px a side, scores 0-0.3). Two
thresholds: 'inf' merges everything (N - 1 merges, the worst case) and 'paper-ish' t = 500 (px +
px^2: pairs must be close and hardly overlap, see ops/merge.py), which stops early.

Rows: the library's jnp `lax.while_loop` (ops/merge.py, jitted; its inputs go from numpy to the
device in each call) and, as the alternative it was chosen over, the same algorithm (per-box lists
of best partners) as a numpy loop on the host (`merge_numpy` below, a prototype; its output is
compared with the library's: identical unless two pair scores lie within one float32 step, where
XLA's fused multiply-add can order them differently). Beside them: the paper fast model (random
He-scaled weights, full width, 1000 classes) on one 461 x 569 image,
`model.apply(..., method='class_map')` (the coarse map, one pooling offset) and
dense_grid.dense_class_map(fine=True) (the 2 x 2 offsets the boxes of a fine grid come from), and
how many boxes that grid gives per scale for the top-1 / top-5 classes.
Medians over --runs calls after one compiling call, the two merge versions timed in turns; wall
milliseconds, and in brackets this process's CPU milliseconds, steadier on a busy shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

IMAGE_HW = (461, 569)
OBJECTS = 6
PAPERISH_THRESHOLD = 500.0


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 5000],
                      help="numbers of boxes N (default 500 2000 5000)")
  parser.add_argument("--runs", type=int, default=3, help="timed calls per case (default 3)")
  parser.add_argument("--cpus", type=int, default=1,
                      help="pin the process to this many CPU cores, 0 = leave as is (default 1)")
  parser.add_argument("--no-network", action="store_true", help="skip timing the fast model")
  parser.add_argument("--no-numpy", action="store_true",
                      help="skip the numpy prototype (~14 s a call for N = 5,000)")
  return parser.parse_args()


def pin_cpus(count: int) -> str:
  """Restricts this process (and the threads jax starts later) to `count` cores."""
  if count <= 0 or not hasattr(os, "sched_setaffinity"):
    return "all cores"
  cores = sorted(os.sched_getaffinity(0))[:count]
  os.sched_setaffinity(0, cores)
  return f"pinned to core(s) {cores}"


def dense_grid_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """N regressor-like boxes (float32 [N, 4]) and window scores ([N]) on a 461 x 569 image."""
  h, w = IMAGE_HW
  size = rng.uniform(60, 300, (OBJECTS, 2))  # (w, h)
  corner = rng.uniform(0, 1, (OBJECTS, 2)) * ([w, h] - size)
  objects = np.concatenate([corner, corner + size], 1)  # [OBJECTS, 4]
  near = int(round(0.85 * n))
  which = rng.integers(0, OBJECTS, near)
  jitter = rng.normal(0, 0.08, (near, 4)) * np.tile(size[which], 2)
  centre = rng.uniform(0, [w, h], (n - near, 2))
  half = rng.uniform(8, 100, (n - near, 2))
  boxes = np.concatenate([objects[which] + jitter, np.concatenate([centre - half, centre + half], 1)])
  scores = np.concatenate([rng.uniform(0.3, 1, near), rng.uniform(0, 0.3, n - near)])
  order = rng.permutation(n)  # grid order mixes objects and clutter
  return boxes[order].astype(np.float32), scores[order].astype(np.float32)


# ------------------------------------------------------------------------------------------------
# The alternative: the same lazy algorithm as ops/merge.py, a numpy loop on the host


def _scores_np(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """ops/merge.py's _match_scores in numpy float32, operation for operation: [4], [N, 4] -> [N]."""
  half = np.float32(0.5)
  dx = (box[0] + box[2]) * half - (boxes[:, 0] + boxes[:, 2]) * half
  dy = (box[1] + box[3]) * half - (boxes[:, 1] + boxes[:, 3]) * half
  w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), np.float32(0))
  h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), np.float32(0))
  return np.sqrt(dx * dx + dy * dy) + w * h


def merge_numpy(boxes: np.ndarray, scores: np.ndarray, valid: np.ndarray, threshold: float,
                candidates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """greedy_merge's algorithm (per-box lists of the `candidates` best partners, same tie rules, the
  same float32 operations but for XLA's fused multiply-add) as a host loop over numpy arrays."""
  n, m = len(boxes), candidates
  boxes, conf, alive = boxes.astype(np.float32), scores.astype(np.float32), valid.astype(bool)
  inf, empty_id = np.float32(np.inf), np.iinfo(np.int32).max
  index = np.arange(n)
  val = np.full((n, m), inf, np.float32)
  ids = np.full((n, m), empty_id, np.int64)
  bound = np.full(n, inf, np.float32)
  bound_id = np.full(n, empty_id, np.int64)

  def lex_less(v1, i1, v2, i2):
    return (v1 < v2) | ((v1 == v2) & (i1 < i2))

  def fresh(k: int) -> np.ndarray:
    row = _scores_np(boxes[k], boxes)
    row[~alive] = inf
    row[k] = inf
    best = np.argsort(row, kind="stable")[:m + 1]  # ties: lower index first
    low = np.full(m + 1, inf, np.float32)
    low[:len(best)] = row[best]
    arg = np.full(m + 1, empty_id, np.int64)
    arg[:len(best)] = np.where(np.isfinite(row[best]), best, empty_id)
    val[k], ids[k], bound[k], bound_id[k] = low[:m], arg[:m], low[m], arg[m]
    return row

  def summary(rows):
    best = val[rows].min(-1)
    partner = np.where(val[rows] == best[..., None], ids[rows], empty_id).min(-1)
    stale = best == inf
    return np.where(alive[rows], np.where(stale, bound[rows], best), inf), partner, stale

  for k in np.flatnonzero(alive):
    fresh(k)
  row_min, row_arg, stale = summary(index)
  while True:
    k = int(np.argmin(row_min))
    if not (float(row_min[k]) <= threshold and row_min[k] < inf):
      break
    if stale[k]:
      fresh(k)
      row_min[k], row_arg[k], stale[k] = summary(k)
      continue
    lo, hi = min(k, row_arg[k]), max(k, row_arg[k])
    boxes[lo] = (boxes[lo] + boxes[hi]) * np.float32(0.5)
    conf[lo] = conf[lo] + conf[hi]
    alive[hi] = False
    gone = (ids == lo) | (ids == hi)
    val[gone], ids[gone] = inf, empty_id
    column = fresh(lo)
    val[hi], ids[hi] = inf, empty_id
    offer = alive & (index != lo) & lex_less(column, lo, bound, bound_id)
    empty = ids == empty_id
    has_empty = empty.any(1)
    top = val.max(1)
    top_id = np.where(val == top[:, None], ids, -1).max(1)
    offer_is_top = lex_less(top, top_id, column, lo)
    slot = np.where(has_empty, empty.argmax(1),
                    ((val == top[:, None]) & (ids == top_id[:, None])).argmax(1))
    rows = np.flatnonzero(offer & (has_empty | ~offer_is_top))
    val[rows, slot[rows]], ids[rows, slot[rows]] = column[rows], lo
    evict = offer & ~has_empty
    bound[evict] = np.where(offer_is_top, column, top)[evict]
    bound_id[evict] = np.where(offer_is_top, lo, top_id)[evict]
    row_min, row_arg, stale = summary(index)
  order = np.lexsort((index, -np.where(alive, conf, -inf), ~alive))
  alive = alive[order]
  return (np.where(alive[:, None], boxes[order], 0), np.where(alive, conf[order], 0), alive)


# ------------------------------------------------------------------------------------------------


def time_both(fns: dict[str, Callable[[], Any]], *, runs: int) -> dict[str, tuple[float, float]]:
  """{name: (median wall s, median CPU s of this process)} of `runs` calls of each fn, taken in
  turns after one untimed (compiling) call each. On a busy shared machine the CPU time, which
  leaves out the time other processes hold the core, is the steadier of the two."""
  import jax

  for fn in fns.values():
    jax.block_until_ready(fn())
  wall: dict[str, list[float]] = {name: [] for name in fns}
  cpu: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn())
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def ms(seconds: tuple[float, float]) -> str:
  """'wall (CPU)' in milliseconds."""
  return f"{1e3 * seconds[0]:,.1f} ({1e3 * seconds[1]:,.1f})"


def network_seconds(runs: int) -> tuple[list[list[str]], list[str]]:
  """Rows for the fast model on one 461 x 569 image, and notes on its grid's box counts."""
  import jax

  import _timing
  from overfeat_jax.models import dense_grid
  from overfeat_jax.models.overfeat import OverFeat, build_architecture

  model = OverFeat(arch=build_architecture("fast"), num_classes=1000)
  variables = {"params": _timing.random_params(model)}
  image = np.random.default_rng(0).standard_normal((1,) + IMAGE_HW + (3,)).astype(np.float32)
  coarse = jax.jit(lambda v, x: model.apply(v, x, method="class_map"))
  fine = jax.jit(lambda v, x: dense_grid.dense_class_map(model, v, x, fine=True))
  seconds = time_both({"coarse": lambda: coarse(variables, image),
                       "fine": lambda: fine(variables, image)}, runs=runs)
  coarse_hw = coarse(variables, image).shape[1:3]
  fine_hw = fine(variables, image).shape[1:3]
  rows = [[f"fast model class_map (coarse map {coarse_hw[0]}x{coarse_hw[1]})", ms(seconds["coarse"])],
          [f"fast model dense_class_map fine=True ({fine_hw[0]}x{fine_hw[1]})", ms(seconds["fine"])]]
  positions = fine_hw[0] * fine_hw[1]
  notes = [f"the fine grid has {positions:,} positions: {positions:,} boxes per scale for the top-1 "
           f"class, {5 * positions:,} for the top 5 (SPEC A5 (a)-(c)); 6 scales give up to 6x that"]
  return rows, notes


def main() -> None:
  args = parse_args()
  pinned = pin_cpus(args.cpus)
  import _timing  # after pinning: imports jax
  _timing.request_cpu_conv("cli")  # the CLIs' XLA:CPU convolutions, before jax starts a backend
  from overfeat_jax.ops import greedy_merge
  from overfeat_jax.ops.merge import DEFAULT_CANDIDATES

  print(f"=== {_timing.machine_header()} | {pinned}", flush=True)
  rows = []
  for n in args.sizes:
    boxes, scores = dense_grid_boxes(np.random.default_rng(n), n)
    valid = np.ones(n, bool)
    for label, t in (("inf", math.inf), ("paper-ish", PAPERISH_THRESHOLD)):
      fns = {"jnp": lambda: greedy_merge(boxes, scores, valid, t)}
      if not args.no_numpy:
        fns["numpy"] = lambda: merge_numpy(boxes, scores, valid, t, DEFAULT_CANDIDATES)
      ours = [np.asarray(a) for a in fns["jnp"]()]
      same = "-" if args.no_numpy else (
          "yes" if all(np.array_equal(a, b) for a, b in zip(ours, fns["numpy"]())) else "NO")
      seconds = time_both(fns, runs=args.runs)
      kept = int(ours[2].sum())
      rows.append([f"{n:,}", f"{label} ({t:g})", f"{n - kept:,}", f"{kept:,}", ms(seconds["jnp"]),
                   ms(seconds["numpy"]) if "numpy" in seconds else "-", same])
      print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
  print(f"\ngreedy_merge on boxes of a {IMAGE_HW[0]}x{IMAGE_HW[1]} image ({OBJECTS} objects + 15% "
        f"clutter), float32, {DEFAULT_CANDIDATES} candidates per box; median wall ms (CPU ms) of "
        f"{args.runs} runs taken in turns:")
  print(_timing.format_table(["N", "threshold", "merges", "boxes left", "jnp while_loop (library)",
                              "numpy host loop (prototype)", "identical"], rows))
  if not args.no_network:
    net_rows, notes = network_seconds(args.runs)
    print(f"\nthe network on one {IMAGE_HW[0]}x{IMAGE_HW[1]} image (paper fast model, 1000 classes, "
          f"random weights, batch 1, float32), median wall ms (CPU ms) of {args.runs} runs:")
    print(_timing.format_table(["network", "ms"], net_rows))
    for note in notes:
      print(note)


if __name__ == "__main__":
  main()
