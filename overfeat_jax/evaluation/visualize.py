"""PNG pictures: detections, class score maps over the image, and grids of such panels.

Pure functions of arrays (nothing reads a config or a model). Rendering uses matplotlib's Agg canvas
on `matplotlib.figure.Figure` objects, never `pyplot`: no global figure state, no backend switch, so
it is safe in notebooks and threads. The `draw_*` functions and `panel_grid` return a `Figure`;
`figure_to_rgb` turns one into an RGB array and `save_png` writes either one to a file. The same
inputs give the same bytes (fixed font, sizes and DPI; RGB PNGs without metadata).

Layout of an image panel (`draw_detections`, `draw_score_map`): the image is scaled by an integer
`zoom` (each image pixel a zoom x zoom block, no resampling) and fills its axes exactly, with no
margin. Image coordinates are continuous pixels (pixel (i, j) covers x in [j, j + 1), y in [i, i + 1),
the boxes' convention), and image point (x, y) lands at figure pixel
    column x * zoom, row top + y * zoom,    top = TITLE_PX with a title, else 0,
counted from the figure's top-left corner. The figure is W * zoom (+ COLORBAR_PX for a score map's
colour bar, at the right) by top + H * zoom pixels. The default zoom makes the long side at least
MIN_LONG_SIDE_PX, so that captions stay legible on small images.

Images: [H, W, 3] uint8 RGB; [H, W] or [H, W, 1] uint8 grayscale is converted to RGB. Float images
are refused (DataError): they may be in [0, 1] or normalised, and only the caller knows which.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from overfeat_jax import files
from overfeat_jax.errors import DataError

DPI = 100  # figure pixels per inch: sizes below are in figure pixels
TITLE_PX = 28  # the title strip above a panel (image panels and panel_grid cells)
COLORBAR_PX = 80  # the strip right of a score map: a gap, the bar, its tick labels
PANEL_GAP_PX = 8  # white space between the cells of panel_grid
MIN_LONG_SIDE_PX = 480  # the default zoom scales the image's long side to at least this
FONT = "DejaVu Sans"  # ships with matplotlib: the same glyphs everywhere
TITLE_PT, CAPTION_PT, TICK_PT = 12, 9, 8  # font sizes (points)
LINE_PX = 2.0  # box outline width
MARK_PX = 12  # the "x" that stands for a zero-size box
CAPTION_PX = 16  # height of a box caption, to decide whether it fits above the box
_PT_PER_PX = 72 / DPI

Picture = Figure | np.ndarray


def class_color(label: int) -> tuple[float, float, float]:
  """The colour of class `label` (RGB in [0, 1]): tab20's ten dark shades, then its ten light ones,
  then the same again (class 20 looks like class 0)."""
  palette = matplotlib.colormaps["tab20"].colors  # 20 colours: (dark, light) pairs
  return tuple(palette[0::2] + palette[1::2])[label % 20]


def _rgb_image(image: Any, name: str) -> np.ndarray:
  """[H, W, 3] uint8 from [H, W, 3], [H, W, 1] or [H, W] uint8; DataError for anything else."""
  array = np.asarray(image)
  if array.dtype != np.uint8:
    raise DataError(f"{name} has dtype {array.dtype}, expected uint8 RGB (a float image in [0, 1]: "
                    f"(np.clip(x, 0, 1) * 255).round().astype(np.uint8))")
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3) or 0 in array.shape:
    raise DataError(f"{name} has shape {array.shape}, expected [H, W, 3] (or grayscale [H, W])")
  return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def _zoom(zoom: int | None, height: int, width: int) -> int:
  if zoom is None:
    return max(1, math.ceil(MIN_LONG_SIDE_PX / max(height, width)))
  if int(zoom) != zoom or zoom < 1:
    raise ValueError(f"zoom must be a positive integer, got {zoom!r}")
  return int(zoom)


def _new_figure(width_px: int, height_px: int) -> Figure:
  figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
  FigureCanvasAgg(figure)  # attaches itself as figure.canvas
  return figure


def _image_panel(image: np.ndarray, *, zoom: int, title: str | None,
                 right_px: int = 0) -> tuple[Figure, Any]:
  """A figure showing `image` [H, W, 3] in axes that fill it exactly (module docstring: layout);
  `right_px` more columns at the right. Returns (figure, axes in image pixel coordinates)."""
  h, w = image.shape[:2]
  top = TITLE_PX if title else 0
  fig_w, fig_h = w * zoom + right_px, h * zoom + top
  figure = _new_figure(fig_w, fig_h)
  axes = figure.add_axes((0, 0, w * zoom / fig_w, h * zoom / fig_h))
  axes.set_axis_off()
  axes.set_autoscale_on(False)  # later artists never move the limits
  axes.set_xlim(0, w)
  axes.set_ylim(h, 0)  # y grows downwards, as in the image
  axes.imshow(image, extent=(0, w, h, 0), origin="upper", interpolation="nearest")
  if title:
    figure.text(w * zoom / 2 / fig_w, 1 - top / 2 / fig_h, title, ha="center", va="center",
                fontsize=TITLE_PT, family=FONT)
  return figure, axes


def _vector(array: Any, n: int, name: str, dtype: Any) -> np.ndarray:
  array = np.asarray(array)
  if array.shape != (n,):
    raise DataError(f"{name} has shape {array.shape}, expected [{n}] (one per box)")
  return array.astype(dtype)


def draw_detections(image: Any, boxes: Any, labels: Any, scores: Any | None,
                    class_names: Sequence[str], *, valid: Any | None = None,
                    title: str | None = None, score_threshold: float = 0.0, max_boxes: int = 100,
                    colors: Sequence[Any] | None = None, zoom: int | None = None,
                    captions: bool = True) -> Figure:
  """Boxes with "name score" captions over an image.

  Args:
    image: [H, W, 3] uint8 (or grayscale [H, W]; module docstring).
    boxes: [N, 4] float (x1, y1, x2, y2) in pixels of `image`; N = 0 is fine. Parts outside the
      image are clipped from view; an inverted box (x2 < x1 or y2 < y1) is drawn with zero size there
      (as the detection evaluator scores it); a box under one figure pixel wide and high is drawn as
      an "x" mark.
    labels: [N] int in [0, len(class_names)) where valid.
    scores: [N] float, or None (captions show the class name only; no threshold, no ordering).
    class_names: the K class names.
    valid: [N] bool, False for padding boxes (not drawn); default all True.
    title: a line above the image, or None.
    score_threshold: with scores, boxes scoring below it are not drawn.
    max_boxes: at most this many boxes: the highest-scoring ones (the first ones without scores).
      Higher scores are drawn on top.
    colors: one matplotlib colour per class; default `class_color(k)`.
    zoom: integer upscaling of the image (module docstring); default from MIN_LONG_SIDE_PX.
    captions: False draws the outlines alone (many boxes of one class, e.g. every window's
      regressed box in a localization picture).
  Returns:
    The figure (layout in the module docstring).
  Raises:
    DataError: an image or array of the wrong shape or dtype, or, among the valid boxes, a
      non-finite box or score or a label outside [0, K).
  """
  rgb = _rgb_image(image, "the image")
  h, w = rgb.shape[:2]
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise DataError(f"boxes have shape {boxes.shape}, expected [N, 4]")
  n = boxes.shape[0]
  labels = _vector(labels, n, "labels", np.int64)
  valid = np.ones(n, bool) if valid is None else _vector(valid, n, "valid", bool)
  keep = valid.copy()
  if scores is not None:
    scores = _vector(scores, n, "scores", np.float64)
    if not np.all(np.isfinite(scores[valid])):
      raise DataError("scores hold non-finite values")
    keep &= scores >= score_threshold
  if not np.all(np.isfinite(boxes[valid])):
    raise DataError("boxes hold non-finite coordinates")
  bad = valid & ((labels < 0) | (labels >= len(class_names)))
  if bad.any():
    raise DataError(f"box {np.flatnonzero(bad)[0]} has label {labels[bad][0]}, outside "
                    f"[0, {len(class_names)}) for {len(class_names)} class names")
  if colors is not None and len(colors) < len(class_names):
    raise ValueError(f"{len(colors)} colors for {len(class_names)} classes")
  order = np.flatnonzero(keep)
  if scores is not None:
    order = order[np.argsort(-scores[order], kind="stable")]
  order = order[:max(0, max_boxes)]

  zoom = _zoom(zoom, h, w)
  figure, axes = _image_panel(rgb, zoom=zoom, title=title)
  for i in order[::-1]:  # the best box last, on top
    label = int(labels[i])
    color = to_rgb(class_color(label) if colors is None else colors[label])
    x1, y1, x2, y2 = boxes[i]
    x2, y2 = max(x2, x1), max(y2, y1)
    axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                             linewidth=LINE_PX * _PT_PER_PX))
    if (x2 - x1) * zoom < 1 and (y2 - y1) * zoom < 1:
      axes.plot([x1], [y1], marker="x", markersize=MARK_PX * _PT_PER_PX, color=color,
                markeredgewidth=LINE_PX * _PT_PER_PX, zorder=4)  # above the captions (3)
    if captions:
      caption = class_names[label] if scores is None else f"{class_names[label]} {scores[i]:.2f}"
      _caption(axes, caption, (x1, y1, x2, y2), color, image_size=(h, w), zoom=zoom)
  return figure


def _caption(axes: Any, text: str, box: tuple[float, ...], color: tuple[float, float, float], *,
             image_size: tuple[int, int], zoom: int) -> None:
  """`text` on a `color` label at the visible top-left corner of `box`: above the box where there
  is room, else just inside it; right-aligned at the box's right edge in the image's right half."""
  h, w = image_size
  x1, y1, x2, _ = box
  left, top, right = min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w)
  above = top * zoom >= CAPTION_PX
  in_right_half = left > w / 2
  luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
  axes.text(right if in_right_half else left, top, text, ha="right" if in_right_half else "left",
            va="bottom" if above else "top", fontsize=CAPTION_PT, family=FONT,
            color="black" if luminance > 0.6 else "white", clip_on=True,
            bbox={"boxstyle": "square,pad=0.15", "facecolor": color, "edgecolor": "none"})


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
  """A number or a (y, x) pair -> (y, x) floats."""
  pair = np.broadcast_to(np.asarray(value, np.float64), (2,))
  if not np.all(np.isfinite(pair)):
    raise ValueError(f"{name} must be finite, got {value!r}")
  return float(pair[0]), float(pair[1])


def draw_score_map(image: Any, score_map: Any, *, stride: float | Sequence[float],
                   offset: float | Sequence[float], valid: Any | None = None,
                   title: str | None = None, cmap: str | Colormap = "turbo", alpha: float = 0.5,
                   vmin: float | None = None, vmax: float | None = None,
                   zoom: int | None = None) -> Figure:
  """A class score map as a semi-transparent heat map over the image, with a colour bar.

  The map is a regular grid (OverFeat's dense grid, SPEC A4; an RPN's feature map): the window of
  cell (i, j) is centred at image point (x, y) = (offset_x + j * stride_x, offset_y + i * stride_y),
  and the cell is painted over the stride_y x stride_x tile centred there (the tiles of neighbouring
  cells touch without overlapping; what falls outside the image is not shown). For the fine grid of
  evaluation/dense.py, cell u sees the input window [u * s, u * s + fov) with s = prepool_stride,
  fov = the field of view: stride = s, offset = fov / 2; for a map computed on the image resized by a
  factor r and drawn over the original image, divide both by r.

  Args:
    image: [H, W, 3] uint8 (or grayscale [H, W]; module docstring).
    score_map: [h, w] float: one class's scores (or probabilities).
    stride: image pixels between neighbouring cell centres: a number or (stride_y, stride_x).
    offset: the image position of cell (0, 0)'s centre: a number or (offset_y, offset_x).
    valid: [h, w] bool; False cells are left unpainted. Default all True.
    title: a line above the image, or None.
    cmap: a matplotlib colormap (name).
    alpha: the heat map's opacity in [0, 1].
    vmin, vmax: the scores at the ends of the colour scale; default the valid scores' min and max.
    zoom: integer upscaling of the image (module docstring).
  Returns:
    The figure: the image panel (module docstring), the colour bar in COLORBAR_PX columns at the
    right.
  Raises:
    DataError: an image or map of the wrong shape or dtype, or a non-finite valid score.
  """
  rgb = _rgb_image(image, "the image")
  h, w = rgb.shape[:2]
  scores = np.asarray(score_map, np.float64)
  if scores.ndim != 2 or 0 in scores.shape:
    raise DataError(f"the score map has shape {scores.shape}, expected [h, w]")
  valid = np.ones(scores.shape, bool) if valid is None else np.asarray(valid, bool)
  if valid.shape != scores.shape:
    raise DataError(f"valid has shape {valid.shape}, expected the score map's {scores.shape}")
  if not np.all(np.isfinite(scores[valid])):
    raise DataError("the score map holds non-finite values in valid cells")
  if not 0 <= alpha <= 1:
    raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
  (sy, sx), (oy, ox) = _pair(stride, "stride"), _pair(offset, "offset")
  if sy <= 0 or sx <= 0:
    raise ValueError(f"stride must be positive, got {stride!r}")
  lowest, highest = (scores[valid].min(), scores[valid].max()) if valid.any() else (0.0, 1.0)
  norm = Normalize(lowest if vmin is None else vmin, highest if vmax is None else vmax)
  colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
  colormap = colormap.with_extremes(bad=(0, 0, 0, 0))  # a copy: masked cells stay transparent

  zoom = _zoom(zoom, h, w)
  figure, axes = _image_panel(rgb, zoom=zoom, title=title, right_px=COLORBAR_PX)
  mh, mw = scores.shape
  heat = axes.imshow(np.ma.masked_array(scores, ~valid), cmap=colormap, norm=norm, alpha=alpha,
                     origin="upper", interpolation="nearest",
                     extent=(ox - sx / 2, ox + (mw - 0.5) * sx, oy + (mh - 0.5) * sy, oy - sy / 2))
  fig_w, fig_h = figure.bbox.width, figure.bbox.height
  bar = figure.add_axes((((w * zoom) + 10) / fig_w, 0, 14 / fig_w, h * zoom / fig_h))
  # The bar shows the colours at full opacity (easier to read than the blended ones).
  colorbar = figure.colorbar(ScalarMappable(norm=heat.norm, cmap=colormap), cax=bar)
  colorbar.ax.tick_params(labelsize=TICK_PT)
  return figure


def figure_to_rgb(figure: Figure) -> np.ndarray:
  """Renders `figure` with Agg: [height, width, 3] uint8 (figure pixels; module docstring)."""
  canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _picture_rgb(picture: Picture, name: str) -> np.ndarray:
  return figure_to_rgb(picture) if isinstance(picture, Figure) else _rgb_image(picture, name)


def panel_grid(panels: Sequence[Picture], *, ncols: int,
               titles: Sequence[str] | None = None) -> Figure:
  """Several pictures in one, row by row: e.g. per-scale score maps side by side, or per-scale
  boxes and the merged result (the OverFeat paper's localization figures).

  Each panel keeps its pixels (no resampling). Every cell is as large as the largest panel (plus a
  TITLE_PX strip for its title when `titles` is given), cells are PANEL_GAP_PX apart on white, and
  panel k (h_k x w_k pixels) is centred across its cell under the title strip: its top-left corner
  is at figure pixel (column c * (cell_w + gap) + (cell_w - w_k) // 2, row r * (cell_h + gap) +
  title strip), with r, c = divmod(k, ncols) and rows counted from the top.

  Args:
    panels: figures (e.g. from draw_detections / draw_score_map) or [h, w, 3] uint8 arrays.
    ncols: panels per row (at most len(panels) columns are made).
    titles: one line per panel, or None.
  Returns:
    The figure.
  Raises:
    DataError: a panel array of the wrong shape or dtype.
  """
  if not panels:
    raise ValueError("panel_grid needs at least one panel")
  if ncols < 1:
    raise ValueError(f"ncols must be positive, got {ncols!r}")
  if titles is not None and len(titles) != len(panels):
    raise ValueError(f"{len(titles)} titles for {len(panels)} panels")
  images = [_picture_rgb(p, f"panel {k}") for k, p in enumerate(panels)]
  ncols = min(ncols, len(images))
  nrows = math.ceil(len(images) / ncols)
  top = TITLE_PX if titles is not None else 0
  cell_w = max(i.shape[1] for i in images)
  cell_h = max(i.shape[0] for i in images) + top
  fig_w = ncols * cell_w + (ncols - 1) * PANEL_GAP_PX
  fig_h = nrows * cell_h + (nrows - 1) * PANEL_GAP_PX
  figure = _new_figure(fig_w, fig_h)
  for k, image in enumerate(images):
    row, col = divmod(k, ncols)
    cell_left, cell_top = col * (cell_w + PANEL_GAP_PX), row * (cell_h + PANEL_GAP_PX)
    left = cell_left + (cell_w - image.shape[1]) // 2
    # figimage places pixels unresampled, its offsets counted from the bottom-left corner.
    figure.figimage(image, xo=left, yo=fig_h - (cell_top + top + image.shape[0]), origin="upper")
    if titles is not None:
      figure.text((cell_left + cell_w / 2) / fig_w, 1 - (cell_top + top / 2) / fig_h, titles[k],
                  ha="center", va="center", fontsize=TITLE_PT, family=FONT)
  return figure


def save_png(picture: Picture, path: str) -> None:
  """Writes a figure or an [H, W, 3] uint8 array to `path` as an RGB PNG, atomically (a temporary
  file renamed over `path`), creating the parent directories.

  Raises:
    DataError: an array of the wrong shape or dtype.
    WorkdirError: the file cannot be written (names the path and the OS's reason); an old file at
      `path` is left as it was.
  """
  buffer = io.BytesIO()
  Image.fromarray(_picture_rgb(picture, "the picture")).save(buffer, format="PNG", optimize=True)
  files.replace_file(path, buffer.getvalue())
