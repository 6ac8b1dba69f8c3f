"""OverFeat's box regression targets: a box's edges relative to the window that predicts it (SPEC A5).

The regressor of a dense-grid window (x1w, y1w, x2w, y2w), of width ww = x2w - x1w and height
wh = y2w - y1w, predicts four numbers t; the box they stand for is

    x1 = x1w + t1 * ww,   y1 = y1w + t2 * wh,   x2 = x2w + t3 * ww,   y2 = y2w + t4 * wh,

each edge's offset from the window's same edge in units of the window's size (a window that is the
field of view of the network: t is in "fields of view"). t = 0 is the window itself; a box inside the
window has t1, t2 >= 0 and t3, t4 <= 0. The map is linear in the window, so it holds in any frame
the window and the box share: the network input's pixels, or the original image's (where the window
is the field of view scaled per axis, as `models.dense_grid` gives it). `encode_edges` and
`decode_edges` are each other's inverse for windows of positive size.

`box_coverage` is the training-window rule of SPEC A5: a window learns a box when it holds at least
half of the box's area.

Functions take numpy or jax arrays (numpy in, numpy out) and broadcast over leading axes.
"""

from __future__ import annotations

from typing import Any

from overfeat_jax.ops.boxes import array_module, box_area


def _sizes(windows: Any) -> Any:
  """(ww, wh, ww, wh) of [..., 4] windows: [..., 4]."""
  xp = array_module(windows)
  w = windows[..., 2] - windows[..., 0]
  h = windows[..., 3] - windows[..., 1]
  return xp.stack([w, h, w, h], axis=-1)


def encode_edges(boxes: Any, windows: Any) -> Any:
  """Regression targets of `boxes` relative to `windows` (module docstring).

  Args:
    boxes: [..., 4] (x1, y1, x2, y2) boxes.
    windows: [..., 4] windows of positive width and height, broadcastable with `boxes`.
  Returns:
    [..., 4] float (t1, t2, t3, t4) = (box - window) / (ww, wh, ww, wh), the broadcast shape.
  """
  return (boxes - windows) / _sizes(windows)


def decode_edges(offsets: Any, windows: Any) -> Any:
  """Boxes from regressor outputs relative to `windows`: the inverse of `encode_edges`.

  Args:
    offsets: [..., 4] (t1, t2, t3, t4). Per-class outputs [..., K, 4] decode against
      windows[..., None, :].
    windows: [..., 4] windows, broadcastable with `offsets`.
  Returns:
    [..., 4] boxes (x1, y1, x2, y2) in the windows' frame; not clipped, and x2 < x1 is possible
    when the regressor says so.
  """
  return windows + offsets * _sizes(windows)


def box_coverage(windows: Any, boxes: Any) -> Any:
  """The fraction of each box's area that lies inside the window: intersection / area(box).

  Args:
    windows: [..., 4] windows; boxes: [..., 4] boxes, broadcastable with them (e.g. windows
      [B, H, W, 1, 4] against boxes [B, 1, 1, M, 4] for every window-box pair).
  Returns:
    [...] float in [0, 1]; 0 for a box of zero area.
  """
  xp = array_module(windows, boxes)
  low = xp.maximum(windows[..., :2], boxes[..., :2])  # [..., 2] (x, y) of the intersection
  high = xp.minimum(windows[..., 2:], boxes[..., 2:])
  w = xp.maximum(high[..., 0] - low[..., 0], 0)
  h = xp.maximum(high[..., 1] - low[..., 1], 0)
  area = box_area(boxes)
  positive = area > 0
  return xp.where(positive, w * h / xp.where(positive, area, 1), 0)
