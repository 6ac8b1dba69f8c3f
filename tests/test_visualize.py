"""PNG pictures (evaluation/visualize.py): what is drawn lands where the layout says, files are valid
PNGs written atomically, and bad input is one line."""

from __future__ import annotations

import os
import pathlib

import matplotlib
import numpy as np
import pytest
from PIL import Image

from overfeat_jax.errors import DataError, WorkdirError
from overfeat_jax.evaluation import visualize
from overfeat_jax.evaluation.visualize import (TITLE_PX, COLORBAR_PX, PANEL_GAP_PX, draw_detections,
                                               draw_score_map, figure_to_rgb, panel_grid, save_png)

ZOOM = 4
BLACK = np.zeros((64, 64, 3), np.uint8)


def is_red(pixels: np.ndarray) -> np.ndarray:
  """[..., 3] uint8 -> [...] bool: clearly red."""
  p = pixels.astype(int)
  return (p[..., 0] > 180) & (p[..., 1] < 80) & (p[..., 2] < 80)


def red_box(image: np.ndarray, box, **kwargs) -> np.ndarray:
  """The picture of one red box (class "a", no score) as RGB figure pixels."""
  return figure_to_rgb(draw_detections(image, np.array([box], np.float32), [0], None, ["a"],
                                       colors=["red"], zoom=ZOOM, **kwargs))


def outline_mask(shape: tuple[int, int], box_px: tuple[int, int, int, int], width: int) -> np.ndarray:
  """[H, W] bool: figure pixels within `width` of the outline of box_px (x1, y1, x2, y2)."""
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  x1, y1, x2, y2 = box_px
  inside_outer = (cols >= x1 - width) & (cols < x2 + width) & (rows >= y1 - width) & (
      rows < y2 + width)
  inside_inner = (cols >= x1 + width) & (cols < x2 - width) & (rows >= y1 + width) & (
      rows < y2 - width)
  return inside_outer & ~inside_inner


@pytest.mark.parametrize("title", [None, "detections"])
def test_a_box_lands_on_its_edges_and_nowhere_else(title):
  top = TITLE_PX if title else 0
  rgb = red_box(BLACK, (10, 20, 40, 50), title=title)
  assert rgb.shape == (top + 64 * ZOOM, 64 * ZOOM, 3)  # the axes fill the figure, no margins
  panel = rgb[top:]
  x1, y1, x2, y2 = 40, 80, 160, 200  # the box in figure pixels: image pixels x ZOOM
  assert is_red(panel[y1 - 1:y1 + 1, x1 + 5:x2 - 5]).all()  # top edge (2 px line on row y1)
  assert is_red(panel[y2 - 1:y2 + 1, x1 + 5:x2 - 5]).all()  # bottom
  assert is_red(panel[y1 + 5:y2 - 5, x1 - 1:x1 + 1]).all()  # left
  assert is_red(panel[y1 + 5:y2 - 5, x2 - 1:x2 + 1]).all()  # right
  # The caption: a red label with light text, just above the top-left corner.
  label = panel[y1 - visualize.CAPTION_PX:y1, x1 - 2:x1 + 20]
  assert is_red(panel[y1 - 13:y1 - 10, x1:x1 + 8]).all() and (label.min(axis=-1) > 150).any()
  # Nothing anywhere else: not inside the box, not far from it.
  drawn = panel.max(axis=-1) > 0
  allowed = outline_mask(drawn.shape, (x1, y1, x2, y2), 3)
  allowed[y1 - visualize.CAPTION_PX - 4:y1, x1 - 3:x1 + 40] = True  # the caption
  assert drawn[allowed].any() and not drawn[~allowed].any()
  if title:
    assert (rgb[:top].min(axis=-1) < 128).any() and (rgb[:top] == 255).mean() > 0.8  # text on white


def test_boxes_partly_outside_are_clipped_and_zero_size_ones_are_marks():
  rgb = red_box(BLACK, (-10, -10, 20, 20))
  assert rgb.shape == (64 * ZOOM, 64 * ZOOM, 3)  # nothing grows the picture
  assert is_red(rgb[5:75, 79:81]).all() and is_red(rgb[79:81, 5:75]).all()  # right, bottom edges
  assert not (rgb[88:, :].max(axis=-1) > 0).any() and not (rgb[:, 88:].max(axis=-1) > 0).any()

  for box in [(30, 30, 30, 30), (30, 30, 25, 28)]:  # zero size; inverted -> zero size at (x1, y1)
    rgb = red_box(BLACK, box)
    near = np.zeros(rgb.shape[:2], bool)
    near[120 - 8:120 + 8, 120 - 8:120 + 8] = True  # (30, 30) x ZOOM
    assert is_red(rgb[near]).sum() >= 10  # an "x" mark
    near[120 - visualize.CAPTION_PX - 12:124, 116:180] = True  # its caption
    assert not (rgb[~near].max(axis=-1) > 0).any()


def test_no_boxes_gives_the_image_alone():
  image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
  rgb = figure_to_rgb(draw_detections(image, np.zeros((0, 4)), np.zeros(0, int), None, ["a"],
                                      zoom=3))
  np.testing.assert_array_equal(rgb, np.repeat(np.repeat(image, 3, axis=0), 3, axis=1))
  default = figure_to_rgb(draw_detections(image, np.zeros((0, 4)), [], [], ["a"]))
  assert default.shape[1] >= visualize.MIN_LONG_SIDE_PX  # the default zoom makes it legible


def test_padding_threshold_and_max_boxes_choose_what_is_drawn():
  boxes = np.array([[2, 2, 12, 12], [20, 2, 30, 12], [2, 40, 12, 50], [40, 40, 50, 50]], np.float32)
  scores = np.array([0.9, 0.2, 0.6, 0.99])
  valid = np.array([True, True, True, False])  # the best-scoring box is padding
  names = ["a", "b", "c", "d"]
  colors = ["red"] * 4

  def drawn(**kwargs) -> list[bool]:
    rgb = figure_to_rgb(draw_detections(BLACK, boxes, [0, 1, 2, 3], scores, names, valid=valid,
                                        colors=colors, zoom=ZOOM, **kwargs))
    # Each box's bottom edge, clear of every caption.
    return [bool(is_red(rgb[int(b[3]) * ZOOM, int(b[0] + 3) * ZOOM:int(b[2] - 3) * ZOOM]).all())
            for b in boxes]

  assert drawn() == [True, True, True, False]
  assert drawn(score_threshold=0.5) == [True, False, True, False]
  assert drawn(max_boxes=2) == [True, False, True, False]  # the two best valid ones
  assert drawn(max_boxes=1) == [True, False, False, False]


def test_captions_and_class_colours():
  image = np.full((40, 40, 3), 255, np.uint8)
  rgb = figure_to_rgb(draw_detections(image, [[5, 20, 35, 35]], [1], [0.5], ["a", "b"], zoom=4))
  edge = rgb[20 * 4, 15 * 4:30 * 4]  # the top edge, right of the caption
  np.testing.assert_allclose(edge / 255, np.tile(visualize.class_color(1), (len(edge), 1)),
                             atol=0.02)
  assert visualize.class_color(0) != visualize.class_color(1)
  assert visualize.class_color(20) == visualize.class_color(0)


def test_bad_detection_inputs_are_one_line_errors():
  def check(match: str, **kwargs):
    args = {"image": BLACK, "boxes": [[0, 0, 5, 5]], "labels": [0], "scores": [0.5],
            "class_names": ["a"], **kwargs}
    with pytest.raises(DataError, match=match) as error:
      draw_detections(**args)
    assert "\n" not in str(error.value)

  check("label 3, outside", labels=[3])
  check(r"boxes have shape \(4,\)", boxes=[0, 0, 5, 5])
  check(r"scores has shape \(2,\)", scores=[0.5, 0.6])
  check("non-finite", boxes=[[0, 0, np.nan, 5]])
  draw_detections(BLACK, [[0, 0, np.nan, 5]], [7], [np.nan], ["a"], valid=[False])  # padding: fine


def test_grayscale_is_converted_and_float_is_refused():
  gray = np.random.default_rng(1).integers(0, 256, (16, 24), np.uint8)
  args = ([[2, 2, 10, 10]], [0], [0.7], ["a"])
  as_rgb = figure_to_rgb(draw_detections(np.stack([gray] * 3, -1), *args, zoom=2))
  for image in [gray, gray[..., None]]:
    np.testing.assert_array_equal(figure_to_rgb(draw_detections(image, *args, zoom=2)), as_rgb)
  for image, match in [(gray / 255.0, "dtype float64, expected uint8"),
                       (np.zeros((8, 8, 4), np.uint8), r"shape \(8, 8, 4\)")]:
    with pytest.raises(DataError, match=match):
      draw_detections(image, *args)
    with pytest.raises(DataError, match=match):
      draw_score_map(image, np.zeros((2, 2)), stride=4, offset=2)


def test_score_map_paints_each_cell_over_its_tile_and_leaves_masked_cells_alone():
  gray = 100
  image = np.full((32, 32, 3), gray, np.uint8)
  scores = np.array([[0.0, 1.0], [0.25, 0.5]])
  valid = np.array([[True, True], [False, True]])
  zoom, alpha, cmap = 2, 0.5, "viridis"
  rgb = figure_to_rgb(draw_score_map(image, scores, stride=16, offset=8, valid=valid, alpha=alpha,
                                     cmap=cmap, zoom=zoom, title="class 3"))
  assert rgb.shape == (TITLE_PX + 32 * zoom, 32 * zoom + COLORBAR_PX, 3)
  panel = rgb[TITLE_PX:, :32 * zoom].astype(float)
  colormap = matplotlib.colormaps[cmap]
  for (i, j), score in np.ndenumerate(scores):  # cell (i, j): image pixels [16i, 16i + 16) x ...
    tile = panel[16 * i * zoom + 2:16 * (i + 1) * zoom - 2, 16 * j * zoom + 2:16 * (j + 1) * zoom - 2]
    expected = gray if not valid[i, j] else (
        alpha * 255 * np.array(colormap(score)[:3]) + (1 - alpha) * gray)  # vmin 0, vmax 1
    np.testing.assert_allclose(tile, np.broadcast_to(expected, tile.shape), atol=2)
  assert (rgb[TITLE_PX:, 32 * zoom + 10:32 * zoom + 24] != 255).all(axis=-1).mean() > 0.9  # the bar
  # Hotter where the score is higher (viridis: brighter).
  assert panel[4:28, 36:60].mean() > panel[36:60, 36:60].mean() > panel[4:28, 4:28].mean()


def test_score_map_takes_y_x_pairs_and_clips_tiles_to_the_image():
  image = np.zeros((32, 32, 3), np.uint8)
  # Two cells side by side, each 32 high and 16 wide: the first tile hangs out at the top (centre
  # y = 8, tile [-8, 24)), what lies outside the image is not drawn.
  rgb = figure_to_rgb(draw_score_map(image, [[0.0, 1.0]], stride=(32, 16), offset=(8, 8), alpha=1,
                                     cmap="gray", zoom=1))
  panel = rgb[:, :32]
  assert (panel[:24, 2:14] == 0).all() and (panel[:24, 18:30] == 255).all()
  assert (panel[25:, :] == 0).all()  # below the tiles: the (black) image


def test_panel_grid_places_panels_unresampled():
  red = np.zeros((10, 20, 3), np.uint8)
  red[..., 0] = 255
  noise = np.random.default_rng(2).integers(0, 256, (30, 12, 3), np.uint8)
  figure = draw_detections(np.zeros((8, 8), np.uint8), np.zeros((0, 4)), [], None, ["a"], zoom=2)
  rgb = figure_to_rgb(panel_grid([red, noise, figure], ncols=2, titles=["r", "n", "f"]))
  cell_w, cell_h = 20, 30 + TITLE_PX
  assert rgb.shape == (2 * cell_h + PANEL_GAP_PX, 2 * cell_w + PANEL_GAP_PX, 3)
  np.testing.assert_array_equal(rgb[TITLE_PX:TITLE_PX + 10, 0:20], red)
  left = cell_w + PANEL_GAP_PX + (cell_w - 12) // 2
  np.testing.assert_array_equal(rgb[TITLE_PX:TITLE_PX + 30, left:left + 12], noise)
  top = cell_h + PANEL_GAP_PX + TITLE_PX
  assert (rgb[top:top + 16, 2:18] == 0).all()  # the 16 x 16 figure, black, centred in its cell
  assert (rgb[top:top + 16, :2] == 255).all() and (rgb[top + 16:, :20] == 255).all()
  assert (rgb[:TITLE_PX] < 128).any()  # title text
  assert figure_to_rgb(panel_grid([red], ncols=3)).shape == (10, 20, 3)
  with pytest.raises(ValueError, match="2 titles for 1 panels"):
    panel_grid([red], ncols=1, titles=["a", "b"])


def test_save_png_writes_a_valid_deterministic_png_atomically(tmp_path):
  image = np.random.default_rng(3).integers(0, 256, (24, 32, 3), np.uint8)

  def picture():
    return draw_detections(image, [[4, 4, 20, 16]], [0], [0.8], ["digit"], title="t", zoom=2)

  path = tmp_path / "new" / "dir" / "picture.png"
  save_png(picture(), str(path))
  with Image.open(path) as png:
    assert png.format == "PNG" and png.mode == "RGB" and png.size == (64, 48 + TITLE_PX)
    np.testing.assert_array_equal(np.asarray(png), figure_to_rgb(picture()))
  again = tmp_path / "again.png"
  save_png(picture(), str(again))
  assert path.read_bytes() == again.read_bytes()  # same inputs, same bytes
  save_png(image, str(again))  # an array works too
  with Image.open(again) as png:
    np.testing.assert_array_equal(np.asarray(png), image)
  assert sorted(os.listdir(tmp_path / "new" / "dir")) == ["picture.png"]  # no temporary left


def test_save_png_failure_is_one_line_naming_the_path(tmp_path):
  (tmp_path / "a_file").write_text("x")
  for path in [tmp_path / "a_file" / "p.png", tmp_path]:  # under a file; a directory
    with pytest.raises(WorkdirError, match=f"cannot write {path}: ") as error:
      save_png(BLACK, str(path))
    assert "\n" not in str(error.value)
  assert (tmp_path / "a_file").read_text() == "x"
  assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_never_uses_pyplot():
  source = pathlib.Path(visualize.__file__).read_text()
  assert "pyplot" not in source.replace("never `pyplot`", "")
