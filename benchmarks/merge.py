"""OverFeat's greedy box merge (ops.greedy_merge, SPEC A5 (d)) beside the network, on one CPU core.

  python benchmarks/merge.py                    # N = 500, 2,000, 5,000; ~2 min on a shared 2-core machine
  python benchmarks/merge.py --runs 5 --cpus 2
  python benchmarks/merge.py --sizes 500 --no-network   # quick

Inputs: what a dense grid's box regressor gives on a 461 x 569 image (scale 6 of SPEC A4): N boxes,
85% of them scattered around 6 objects (object sizes 60-300 px, each edge jittered by N(0, 8% of
the object's size), scores 0.3-1) and 15% anywhere (16-200 px a side, scores 0-0.3). Two
thresholds: 'inf' merges everything (N - 1 merges, the worst case) and 'paper-ish' t = 500 (px +
px^2: pairs must be close and hardly overlap, see ops/merge.py), which stops early.

Rows: the library's jnp `lax.while_loop` (ops/merge.py, jitted; its inputs go from numpy to the
device in each call) and, as the alternative it was chosen over, the same lazy nearest-partner
algorithm as a numpy loop on the host (`merge_numpy` below, a prototype; its output is checked to be
bit-identical to the library's). Beside them: the paper fast model (random He-scaled weights, full
width, 1000 classes) on one 461 x 569 image, `model.apply(..., method='class_map')` (the coarse map,
one pooling offset) and dense_grid.dense_class_map(fine=True) (the 2 x 2 offsets the boxes of a
fine grid come from), and how many boxes that grid gives per scale for the top-1 / top-5 classes.
Medians over --runs calls after one compiling call, the two merge versions timed in turns.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

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


def merge_numpy(boxes: np.ndarray, scores: np.ndarray, valid: np.ndarray,
                threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """greedy_merge's result (same tie rules, same float32 operations) by a host loop."""
  n = len(boxes)
  boxes, conf, alive = boxes.astype(np.float32), scores.astype(np.float32), valid.astype(bool)
  inf = np.float32(np.inf)
  index = np.arange(n)

  def row_of(k: int) -> np.ndarray:
    row = _scores_np(boxes[k], boxes)
    row[~alive] = inf
    row[k] = inf
    return row

  row_min = np.full(n, inf)
  row_arg = np.zeros(n, np.int64)
  for k in np.flatnonzero(alive):
    row = row_of(k)
    row_arg[k] = np.argmin(row)
    row_min[k] = row[row_arg[k]]
  stale = np.zeros(n, bool)
  while True:
    k = int(np.argmin(row_min))
    low = row_min[k]
    if not (float(low) <= threshold and low < inf):
      break
    if stale[k]:
      row = row_of(k)
      row_arg[k] = np.argmin(row)
      row_min[k], stale[k] = row[row_arg[k]], False
      continue
    lo, hi = min(k, row_arg[k]), max(k, row_arg[k])
    boxes[lo] = (boxes[lo] + boxes[hi]) * np.float32(0.5)
    conf[lo] = conf[lo] + conf[hi]
    alive[hi], row_min[hi] = False, inf
    row = row_of(lo)
    lost = (row_arg == lo) | (row_arg == hi)
    update = (row < row_min) | ((row == row_min) & (lo < row_arg) & ~(stale | lost))
    row_min[update], row_arg[update] = row[update], lo
    stale = (stale | lost) & ~update
    row_arg[lo] = np.argmin(row)
    row_min[lo], stale[lo] = row[row_arg[lo]], False
  order = np.lexsort((index, -np.where(alive, conf, -inf), ~alive))
  alive = alive[order]
  return (np.where(alive[:, None], boxes[order], 0), np.where(alive, conf[order], 0), alive)


# ------------------------------------------------------------------------------------------------


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
  seconds = _timing.time_interleaved({"coarse": lambda: coarse(variables, image),
                                      "fine": lambda: fine(variables, image)}, runs=runs)
  coarse_hw = coarse(variables, image).shape[1:3]
  fine_hw = fine(variables, image).shape[1:3]
  rows = [[f"fast model class_map (coarse {coarse_hw[0]}x{coarse_hw[1]})",
           f"{1e3 * _timing.median(seconds['coarse']):,.1f}"],
          [f"fast model dense_class_map fine=True ({fine_hw[0]}x{fine_hw[1]})",
           f"{1e3 * _timing.median(seconds['fine']):,.1f}"]]
  positions = fine_hw[0] * fine_hw[1]
  notes = [f"the fine grid has {positions:,} positions: {positions:,} boxes per scale for the top-1 "
           f"class, {5 * positions:,} for the top 5 (SPEC A5 (a)-(c)); 6 scales give about 6x that"]
  return rows, notes


def main() -> None:
  args = parse_args()
  pinned = pin_cpus(args.cpus)
  import _timing  # after pinning: imports jax
  from overfeat_jax.ops import greedy_merge

  print(f"=== {_timing.machine_header()} | {pinned}", flush=True)
  rows = []
  for n in args.sizes:
    boxes, scores = dense_grid_boxes(np.random.default_rng(n), n)
    valid = np.ones(n, bool)
    for label, t in (("inf", math.inf), ("paper-ish", PAPERISH_THRESHOLD)):
      ours = [np.asarray(a) for a in greedy_merge(boxes, scores, valid, t)]
      host = merge_numpy(boxes, scores, valid, t)
      same = all(np.array_equal(a, b) for a, b in zip(ours, host))
      seconds = _timing.time_interleaved(
          {"jnp": lambda: greedy_merge(boxes, scores, valid, t),
           "numpy": lambda: merge_numpy(boxes, scores, valid, t)}, runs=args.runs)
      kept = int(ours[2].sum())
      rows.append([f"{n:,}", f"{label} ({t:g})", f"{n - kept:,}", f"{kept:,}",
                   f"{1e3 * _timing.median(seconds['jnp']):,.1f}",
                   f"{1e3 * _timing.median(seconds['numpy']):,.1f}", "yes" if same else "NO"])
      print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
  print(f"\ngreedy_merge on boxes of a {IMAGE_HW[0]}x{IMAGE_HW[1]} image ({OBJECTS} objects + 15% "
        f"clutter), float32, median of {args.runs} runs taken in turns:")
  print(_timing.format_table(["N", "threshold", "merges", "boxes left", "jnp while_loop ms",
                              "numpy host loop ms", "identical"], rows))
  if not args.no_network:
    net_rows, notes = network_seconds(args.runs)
    print(f"\nthe network on one {IMAGE_HW[0]}x{IMAGE_HW[1]} image (paper fast model, 1000 classes, "
          f"random weights, batch 1, float32), median of {args.runs} runs:")
    print(_timing.format_table(["network", "ms"], net_rows))
    for note in notes:
      print(note)


if __name__ == "__main__":
  main()
