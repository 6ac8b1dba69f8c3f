"""Shape buckets and test-scale geometry of whole-image evaluation (SPEC A4).

Evaluation never crops an image to a fixed canvas: each image is resized, aspect kept, as a WHOLE and
padded at the bottom and right into the canvas of its *shape bucket*. A batch holds one bucket only,
so a jitted evaluation step compiles one program per bucket. The size functions take `xp=np` (the
grain pipeline) or `xp=jnp` (inside jit), so host and device share one definition (STYLE 15).

Test scales. A scale (H, W) of config.eval.scales names the box S x L, S = min(H, W), L = max(H, W),
laid along the image's own long side (the paper's scales are landscape, H <= W; a portrait image gets
the same box standing up). The image is resized by the smallest factor that makes it cover that box,

    f = max(S / short, L / long)        (short, long: the image's sides),

so an image at least as elongated as L / S gets its short side = S (the paper's landscape reading)
and a squarer one its long side = L; both sides are at least S. Nothing is cut off.

Buckets. config.eval.aspect_buckets = (b_0, ..., b_{n-1}), increasing bounds on long / short:
  bucket 0          "square":    long / short <= b_0, either orientation;
  bucket 2i - 1     "landscape": b_{i-1} < w / h <= b_i;
  bucket 2i         "portrait":  b_{i-1} < h / w <= b_i        (i = 1 .. n-1),
2n - 1 buckets in all. Images more elongated than b_{n-1} go to the last landscape / portrait bucket
(with n = 1: the square one) and are shrunk to fit its canvas, so their short side falls below S (the evaluator keeps at least one
position of each image; see models.dense_grid.window_geometry).

A bucket's canvas at a scale is the largest size its images reach there (ceil of the bounds below),
as (height, width): square, both sides max(L, S * b_0); landscape, height max(S, L / b_{i-1}) and
width max(L, S * b_i); portrait, the transpose.

Detection batches (`overfeat_jax.data.detection`) use the same buckets with the detectors' own resize
(SPEC B5, `min_max_size`): short side min_size unless the long side would then pass max_size, so no
image is ever shrunk to fit a canvas; see `detection_canvases`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

SQUARE, LANDSCAPE, PORTRAIT = "square", "landscape", "portrait"

Scale = tuple[int, int]  # (H, W) of config.eval.scales


def box_sides(scale: Sequence[int]) -> tuple[int, int]:
  """(S, L) = (min, max) of a test scale (H, W)."""
  h, w = (int(v) for v in scale)
  return min(h, w), max(h, w)


@dataclasses.dataclass(frozen=True)
class Bucket:
  """One padded shape bucket (see the module docstring).

  Attributes:
    index: position in `make_buckets(...)` (0 = square).
    orientation: SQUARE (either orientation), LANDSCAPE (w > h) or PORTRAIT (h > w).
    min_aspect: images have long / short > min_aspect (SQUARE: >= 1).
    max_aspect: ... and <= max_aspect; the last landscape / portrait pair also takes more elongated
      images, shrunk to fit.
  """

  index: int
  orientation: str
  min_aspect: float
  max_aspect: float

  @property
  def name(self) -> str:
    """E.g. 'square (<= 1.25)', 'portrait (1.25-2)'."""
    if self.orientation == SQUARE:
      return f"{SQUARE} (<= {self.max_aspect:g})"
    return f"{self.orientation} ({self.min_aspect:g}-{self.max_aspect:g})"

  def canvas(self, scale: Sequence[int]) -> tuple[int, int]:
    """(height, width) of this bucket's padded canvas at `scale` (H, W)."""
    s, l = box_sides(scale)
    long_side = math.ceil(max(l, s * self.max_aspect))
    if self.orientation == SQUARE:
      return long_side, long_side
    short_side = max(s, math.ceil(l / self.min_aspect))
    return (short_side, long_side) if self.orientation == LANDSCAPE else (long_side, short_side)


def make_buckets(bounds: Sequence[float]) -> tuple[Bucket, ...]:
  """The 2n - 1 buckets of n increasing long/short bounds (config.eval.aspect_buckets)."""
  bounds = tuple(float(b) for b in bounds)
  out = [Bucket(0, SQUARE, 1.0, bounds[0])]
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    for orientation in (LANDSCAPE, PORTRAIT):
      out.append(Bucket(len(out), orientation, lo, hi))
  return tuple(out)


def bucket_index(height: int, width: int, bounds: Sequence[float]) -> int:
  """The bucket of an image of (height, width) pixels among `make_buckets(bounds)`."""
  short, long = min(height, width), max(height, width)
  if long <= bounds[0] * short or len(bounds) == 1:
    return 0
  i = next((i for i in range(1, len(bounds)) if long <= bounds[i] * short), len(bounds) - 1)
  return 2 * i - 1 if width > height else 2 * i


def scaled_size(hw: Any, scale: Sequence[int], canvas: Sequence[int], xp: Any = np) -> Any:
  """Size of whole images at a test scale (module docstring), never beyond the bucket's canvas.

  Args:
    hw: [..., 2] (height, width) of the images (any size: the original, or already resized).
    scale: (H, W) of config.eval.scales.
    canvas: (height, width) of the images' bucket at `scale` (`Bucket.canvas`).
    xp: numpy or jax.numpy.
  Returns:
    int32 [..., 2] (height, width): round(hw * f), f = min(max(S / short, L / long),
    canvas / hw per axis), at least 1. Within its bucket's aspect range the canvas term never binds.
  """
  s, l = box_sides(scale)
  hw = xp.asarray(hw) * 1.0  # [..., 2] float
  h, w = hw[..., 0], hw[..., 1]
  factor = xp.maximum(s / xp.minimum(h, w), l / xp.maximum(h, w))
  factor = xp.minimum(factor, xp.minimum(canvas[0] / h, canvas[1] / w))
  size = xp.round(hw * factor[..., None])
  return xp.clip(size, 1, xp.asarray(canvas)).astype(xp.int32)


def short_side_size(hw: Any, short: int, minimum: int, xp: Any = np) -> Any:
  """[..., 2] (h, w) -> int32 [..., 2]: aspect kept, short side `short`, each side >= `minimum`.

  The resize before SPEC A3's crops (training's random crop, evaluation's centre / 10 views).
  """
  hw = xp.asarray(hw) * 1.0
  factor = short / xp.minimum(hw[..., 0], hw[..., 1])
  return xp.maximum(minimum, xp.round(hw * factor[..., None])).astype(xp.int32)


def used_scales(eval_cfg: ml_collections.ConfigDict) -> list[Scale]:
  """The scales the Table 2 rows use: single_scale and multi_scales, in config order."""
  used = {int(eval_cfg.single_scale)} | {int(i) for i in eval_cfg.multi_scales}
  return [tuple(int(v) for v in eval_cfg.scales[i]) for i in sorted(used)]


def canvas_scale(eval_cfg: ml_collections.ConfigDict) -> Scale:
  """The scale the pipeline delivers images at: (S_c, L_c) with S_c the largest S of the used
  scales (and at least eval.resize_short), L_c the largest L (and >= S_c). Its factor is the largest
  any row needs, so the evaluator only ever shrinks the delivered images."""
  sides = [box_sides(s) for s in used_scales(eval_cfg)]
  s = max([int(eval_cfg.resize_short)] + [short for short, _ in sides])
  return s, max([s] + [long for _, long in sides])


def min_max_size(hw: Any, min_size: int, max_size: int, xp: Any = np) -> Any:
  """The detectors' resize (SPEC B5: short side 600, long side <= 1000; torchvision's and
  py-faster-rcnn's `min_size` / `max_size`), aspect kept.

  Args:
    hw: [..., 2] (height, width) of the original images.
    min_size, max_size: the short side's target and the long side's bound (min_size <= max_size).
    xp: numpy or jax.numpy.
  Returns:
    int32 [..., 2] (height, width): round(hw * f), f = min(min_size / short, max_size / long), at
    least 1: the short side is min_size unless that would make the long side exceed max_size, in
    which case the long side is max_size. Neither side ever exceeds max_size.
  """
  hw = xp.asarray(hw) * 1.0  # [..., 2] float
  factor = xp.minimum(min_size / xp.minimum(hw[..., 0], hw[..., 1]),
                      max_size / xp.maximum(hw[..., 0], hw[..., 1]))
  return xp.maximum(1, xp.round(hw * factor[..., None])).astype(xp.int32)


def fit_in_canvas(hw: Sequence[int], size: np.ndarray, canvas: Sequence[int]) -> np.ndarray:
  """int32 [2]: `size` (an image of original (height, width) `hw` resized, aspect kept) shrunk,
  aspect kept, until it fits `canvas` (height, width): the largest such size, rounded; `size` itself
  when it already fits (multi-scale training, `data.detection`)."""
  if size[0] <= canvas[0] and size[1] <= canvas[1]:
    return size
  factor = min(canvas[0] / hw[0], canvas[1] / hw[1])
  fitted = np.maximum(1, np.round(np.asarray(hw, np.float64) * factor))
  return np.minimum(fitted, canvas).astype(np.int32)


def detection_canvases(bounds: Sequence[float], min_size: int, max_size: int
                       ) -> tuple[tuple[int, int], ...]:
  """(height, width) of each bucket's canvas for images resized by `min_max_size`.

  The largest size the bucket's images reach: a bucket of long / short in (lo, hi] has short side
  min(min_size, max_size / lo) and long side min(min_size * hi, max_size) (the square bucket: that
  long side both ways); the last landscape / portrait pair (with one bound: the square bucket), which
  also takes the more elongated images, has long side max_size. Rounded up, so `min_max_size` of
  every image of the bucket fits.

  Args:
    bounds: increasing long / short bounds (config.input.aspect_buckets), as `make_buckets`.
    min_size, max_size: as `min_max_size`.
  Returns:
    One (height, width) per bucket of `make_buckets(bounds)`, in its order.
  """
  last = float(bounds[-1])
  canvases = []
  for bucket in make_buckets(bounds):
    long_side = max_size if bucket.max_aspect == last else min(
        max_size, math.ceil(min_size * bucket.max_aspect))
    if bucket.orientation == SQUARE:
      canvases.append((long_side, long_side))
      continue
    short_side = min(min_size, math.ceil(max_size / bucket.min_aspect))
    canvases.append((short_side, long_side) if bucket.orientation == LANDSCAPE
                    else (long_side, short_side))
  return tuple(canvases)
