"""Detection ops (overfeat_jax.ops) beside torchvision's C++ kernels, on one CPU core by default.

  python benchmarks/ops.py                   # ours; torchvision too where torch is importable
  python benchmarks/ops.py --runs 20 --cpus 2
  /path/to/torch-venv/bin/python benchmarks/ops.py   # a venv with torch, torchvision and jax

Cases (the issue's): `nms` of 6,000 proposal-like boxes down to 300 at IoU 0.7 (the test-time
proposal layer, SPEC B3) — also of 6,000 uniformly scattered boxes, and, for reference, with no
output cap —, and `roi_align` of 300 RoIs on a 38 x 63 x 512 map (VGG-16 conv5 of a 600 x 1000
image), 7 x 7 bins, sampling ratio 2, forward and forward + backward (`roi_pool` likewise, for
information). torchvision's nms always runs to the end (its result is then cut to 300); its
backward passes give the features' gradient only, ours the features' and the boxes' (zero for
roi_pool).

Both libraries run on the same inputs, in turns (`_timing.time_interleaved`), the process pinned
to --cpus cores (default 1; torch.set_num_threads likewise). Medians over --runs calls after one
compiling call. Targets: nms within 2x of torchvision's time, roi_align forward faster.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Callable

import numpy as np


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=10, help="timed calls per case (default 10)")
  parser.add_argument("--cpus", type=int, default=1,
                      help="pin the process to this many CPU cores, 0 = leave as is (default 1)")
  parser.add_argument("--no-torch", action="store_true", help="skip torchvision even if present")
  return parser.parse_args()


def pin_cpus(count: int) -> str:
  """Restricts this process (and the threads jax and torch start later) to `count` cores."""
  if count <= 0 or not hasattr(os, "sched_setaffinity"):
    return "all cores"
  cores = sorted(os.sched_getaffinity(0))[:count]
  os.sched_setaffinity(0, cores)
  return f"pinned to core(s) {cores}"


# ------------------------------------------------------------------------------------------------
# Inputs (numpy, shared by both libraries)


def proposal_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """RPN-like boxes of a 600 x 1000 image: the 9 anchors of a 38 x 63 stride-16 map decoded with
  small random deltas, clipped, the `n` best of random scores — clustered, as proposals are."""
  from overfeat_jax.ops import anchors, clip_boxes, decode_boxes
  grid = anchors((38, 63), 16, (128, 256, 512), (0.5, 1.0, 2.0))
  deltas = rng.normal(0, 0.2, grid.shape).astype(np.float32)
  boxes = clip_boxes(decode_boxes(deltas, grid), (600, 1000))
  scores = rng.uniform(size=len(boxes)).astype(np.float32)
  best = np.argsort(-scores)[:n]
  return boxes[best], scores[best]


def uniform_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Boxes 16-400 px a side (log-uniform) centred anywhere in a 600 x 1000 image."""
  centre = rng.uniform(0, [1000, 600], (n, 2))
  size = np.exp(rng.uniform(np.log(16), np.log(400), (n, 2)))
  boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).clip(0, [1000, 600] * 2)
  return boxes.astype(np.float32), rng.uniform(size=n).astype(np.float32)


def roi_inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  features = rng.normal(size=(38, 63, 512)).astype(np.float32)
  corner = rng.uniform(0, [1000, 600], (300, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(16, 400, (300, 2))], 1).astype(np.float32)
  return features, boxes


# ------------------------------------------------------------------------------------------------
# The two libraries' callables


def ours(cases: dict[str, Any]) -> dict[str, Callable[[], Any]]:
  import jax
  import jax.numpy as jnp
  from overfeat_jax.ops import nms, roi_align, roi_pool

  fns = {}
  for name, (boxes, scores, limit) in cases["nms"].items():
    run = jax.jit(functools.partial(nms, iou_threshold=0.7, max_output_size=limit))
    boxes_j, scores_j = jnp.asarray(boxes), jnp.asarray(scores)
    fns[name] = functools.partial(run, boxes_j, scores_j)
  features, boxes = (jnp.asarray(a) for a in cases["roi_align"])
  cotangent = jnp.ones((300, 7, 7, 512), jnp.float32)
  for name, op in (("roi_align", functools.partial(roi_align, sampling_ratio=2)),
                   ("roi_pool", roi_pool)):
    op = functools.partial(op, output_size=(7, 7), spatial_scale=1 / 16)
    forward = jax.jit(op)
    backward = jax.jit(jax.grad(lambda f, b, op=op: jnp.sum(op(f, b) * cotangent),
                                argnums=(0, 1)))
    fns[f"{name} forward"] = functools.partial(forward, features, boxes)
    fns[f"{name} forward+backward"] = functools.partial(backward, features, boxes)
  return fns


def torchvision_fns(cases: dict[str, Any], threads: int) -> dict[str, Callable[[], Any]] | None:
  try:
    import torch
    import torchvision
  except ImportError:
    return None
  torch.set_num_threads(max(threads, 1))
  fns = {}
  for name, (boxes, scores, limit) in cases["nms"].items():
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    fns[name] = functools.partial(lambda b, s, k: torchvision.ops.nms(b, s, 0.7)[:k], tb, ts, limit)
  features, boxes = cases["roi_align"]
  tf = torch.from_numpy(features).permute(2, 0, 1)[None].contiguous()  # NCHW
  tr = torch.cat([torch.zeros(300, 1), torch.from_numpy(boxes)], 1)  # [K, 5] with batch index
  for name, op in (("roi_align", functools.partial(torchvision.ops.roi_align, sampling_ratio=2)),
                   ("roi_pool", torchvision.ops.roi_pool)):
    op = functools.partial(op, output_size=(7, 7), spatial_scale=1 / 16)
    fns[f"{name} forward"] = functools.partial(_torch_forward, op, tf, tr)
    fns[f"{name} forward+backward"] = functools.partial(_torch_forward_backward, op, tf, tr)
  return fns


def _torch_forward(op: Callable[..., Any], features: Any, rois: Any) -> Any:
  import torch
  with torch.no_grad():
    return op(features, rois)


def _torch_forward_backward(op: Callable[..., Any], features: Any, rois: Any) -> Any:
  leaf = features.detach().requires_grad_(True)
  op(leaf, rois).sum().backward()
  return leaf.grad


def torch_versions() -> str:
  import torch
  import torchvision
  return f"torch {torch.__version__}, torchvision {torchvision.__version__}"


# ------------------------------------------------------------------------------------------------


TARGETS = {  # case -> (the largest ours / torchvision time ratio that passes, its wording)
    "nms 6,000 proposals -> 300": (2.0, "<= 2x torchvision"),
    "roi_align forward": (1.0, "faster than torchvision"),
}


def main() -> None:
  args = parse_args()
  pinning = pin_cpus(args.cpus)  # before jax or torch start their thread pools
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import _timing

  rng = np.random.default_rng(0)
  proposals, uniform = proposal_boxes(rng, 6000), uniform_boxes(rng, 6000)
  cases = {
      "nms": {
          "nms 6,000 proposals -> 300": proposals + (300,),
          "nms 6,000 uniform -> 300": uniform + (300,),
          "nms 6,000 proposals, no cap": proposals + (6000,),
      },
      "roi_align": roi_inputs(rng),
  }
  fns = {("ours", k): v for k, v in ours(cases).items()}
  theirs = None if args.no_torch else torchvision_fns(cases, args.cpus)
  if theirs:
    fns.update({("torchvision", k): v for k, v in theirs.items()})
  seconds = _timing.time_interleaved(fns, runs=args.runs)

  print(_timing.machine_header())
  print(f"process {pinning}; "
        + (torch_versions() if theirs else "torchvision: not importable or --no-torch"))
  print(f"median of {args.runs} calls, milliseconds\n")
  rows = []
  for case in dict.fromkeys(k for _, k in fns):
    mine = _timing.median(seconds[("ours", case)]) * 1e3
    other = _timing.median(seconds[("torchvision", case)]) * 1e3 if theirs else None
    ratio = mine / other if other else None
    target = TARGETS.get(case)
    verdict = "" if target is None or ratio is None else (
        f"{'PASS' if ratio <= target[0] else 'FAIL'} ({target[1]})")
    rows.append([case, _timing.fmt(mine, 2), _timing.fmt(other, 2),
                 "n/a" if ratio is None else f"{ratio:.2f}x", verdict])
  print(_timing.format_table(["case", "ours ms", "torchvision ms", "ours / torchvision",
                              "target"], rows))
  if theirs:
    import torch
    import torchvision
    kept = {name: len(torchvision.ops.nms(torch.from_numpy(b), torch.from_numpy(s), 0.7))
            for name, (b, s) in (("proposals", proposals), ("uniform", uniform))}
    print("\nboxes torchvision keeps of the 6,000 before the cut to 300: "
          + ", ".join(f"{name} {n:,}" for name, n in kept.items()))

if __name__ == "__main__":
  main()
