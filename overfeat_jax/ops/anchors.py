"""Anchor boxes of the region proposal network (SPEC B1), as torchvision's AnchorGenerator.

Every input is static (map size, stride, sizes, ratios), so the anchors are computed once in numpy
and enter a jitted function as a constant.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """The A = len(aspect_ratios) * len(sizes) anchors around (0, 0), as torchvision computes them.

  For ratio r = h / w and size s: w = s / sqrt(r), h = s * sqrt(r), the box (-w/2, -h/2, w/2, h/2)
  rounded to integers (halves to even, as torch.round), all in float32. Order: ratio-major, i.e.
  (r0, s0), (r0, s1), ..., (r1, s0), ...

  Returns:
    float32 [A, 4].
  """
  scales = np.asarray(sizes, np.float32)
  h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
  w_ratios = np.float32(1) / h_ratios
  ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
  return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float32)


def anchors(feature_hw: tuple[int, int], stride: int | tuple[int, int], sizes: Sequence[float],
            aspect_ratios: Sequence[float], *, offset: float = 0.0) -> np.ndarray:
  """All anchors of one feature map, in torchvision's AnchorGenerator order.

  The anchors of cell (i, j) are base_anchors(sizes, aspect_ratios) shifted to
  (j * stride_x + offset, i * stride_y + offset): as torchvision, offset 0 puts them on the cell's
  top-left image point; stride / 2 would centre them on the cell.

  Args:
    feature_hw: (H, W) of the feature map.
    stride: image pixels per cell, an int or (stride_y, stride_x); torchvision uses
      image_size // feature_size.
    sizes: anchor sizes in pixels (sqrt of the area), e.g. (128, 256, 512) (SPEC B1).
    aspect_ratios: height / width ratios, e.g. (0.5, 1.0, 2.0).
    offset: pixels added to every anchor centre (both axes).
  Returns:
    float32 [H * W * A, 4] boxes (x1, y1, x2, y2): row-major over cells (i, then j), the A anchors
    of a cell together, in base_anchors order.
  """
  height, width = feature_hw
  stride_y, stride_x = (stride, stride) if isinstance(stride, int) else stride
  shift_y, shift_x = np.meshgrid(np.arange(height) * stride_y, np.arange(width) * stride_x,
                                 indexing="ij")
  shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
  shifts = shifts.astype(np.float32) + np.float32(offset)
  return (shifts + base_anchors(sizes, aspect_ratios)[None]).reshape(-1, 4)
