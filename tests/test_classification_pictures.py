"""Classification pictures (evaluation/classification_pictures.py): the heat map of the predicted
class lands where its class map peaks, panels and titles, window centres as dense_grid places them,
and class names from the TFDS ClassLabel. (evaluate.py --pictures: test_evaluate_cli.py.)"""

from __future__ import annotations

import types

import matplotlib
import numpy as np
import tensorflow_datasets as tfds

from overfeat_jax.data.class_names import class_names
from overfeat_jax.data.registry import DatasetSpec
from overfeat_jax.evaluation import visualize
from overfeat_jax.evaluation.classification_pictures import (ScaleMap, classification_panels,
                                                             place_map)
from overfeat_jax.models.dense_grid import window_geometry

GRAY = 100
ZOOM = 4
ALPHA = 0.5  # draw_score_map's default opacity


def recovered_scores(pixels: np.ndarray) -> np.ndarray:
  """[..., 3] panel pixels over the GRAY image -> [...] the probability whose turbo colour, blended
  at ALPHA over GRAY on draw_score_map's 0..1 scale, is nearest."""
  values = np.linspace(0, 1, 1001)
  lut = ALPHA * 255 * matplotlib.colormaps["turbo"](values)[:, :3] + (1 - ALPHA) * GRAY  # [V, 3]
  distance = np.linalg.norm(pixels[..., None, :].astype(float) - lut, axis=-1)  # [..., V]
  return values[distance.argmin(axis=-1)]


def test_the_hottest_cell_of_the_score_map_is_where_the_class_map_peaks():
  rng = np.random.default_rng(0)
  image = np.full((30, 36, 3), GRAY, np.uint8)
  probs = rng.uniform(0.0, 0.5, (5, 6, 3))  # [h, w, K]
  probs[2, 4, 1] = 0.9  # the peak of class 1
  probs[4, 5, 1] = 0.99  # higher, but its window lies on the padding: not drawn
  valid = np.ones((5, 6), bool)
  valid[4, 5] = False
  maps = [ScaleMap(scale=(64, 64), probs=probs, valid=valid, stride=(6.0, 6.0), offset=(3.0, 3.0)),
          ScaleMap(scale=(72, 80), probs=probs, valid=valid, stride=(6.0, 6.0), offset=(3.0, 3.0))]
  panels = classification_panels(image, maps, [0.2, 0.7, 0.1], label=2, names=["a", "b", "c"],
                                 zoom=ZOOM)

  assert len(panels.figures) == len(panels.titles) == len(maps) + 1
  assert panels.titles == ["true c, predicted b (0.70)", "scale 64x64", "scale 72x80"]
  picture = visualize.figure_to_rgb(panels.picture())
  cell_w = 36 * ZOOM + visualize.COLORBAR_PX
  assert picture.shape == (2 * visualize.TITLE_PX + 30 * ZOOM,
                           3 * cell_w + 2 * visualize.PANEL_GAP_PX, 3)

  rgb = visualize.figure_to_rgb(panels.figures[1])  # the first scale's map of class b
  heat = recovered_scores(rgb[visualize.TITLE_PX:, :36 * ZOOM])  # [30 * ZOOM, 36 * ZOOM]
  row, col = np.unravel_index(heat.argmax(), heat.shape)
  assert (row // (6 * ZOOM), col // (6 * ZOOM)) == (2, 4)  # tile of cell (i, j): [6i, 6i + 6) ...
  assert abs(heat.max() - 0.9) < 0.02
  # Every valid cell shows its probability of class b; the masked cell shows the image.
  centres = heat[3 * ZOOM::6 * ZOOM, 3 * ZOOM::6 * ZOOM]  # [5, 6]
  np.testing.assert_allclose(centres[valid], probs[..., 1][valid], atol=0.02)
  masked = rgb[visualize.TITLE_PX + 27 * ZOOM, 33 * ZOOM]
  np.testing.assert_array_equal(masked, [GRAY] * 3)


def test_window_centres_are_those_of_dense_grid_boxes():
  size, original = np.array([64, 80]), np.array([96, 150])  # the image at a scale, and originally
  valid, boxes = window_geometry((7, 9), stride=4, fov=58, image_hw=size[None],
                                 original_hw=original[None])
  placed = place_map((64, 64), np.zeros((7, 9, 10)), valid[0], size=size, original_size=original,
                     stride=4, fov=58)
  centre_y = (boxes[0, :, 0, 1] + boxes[0, :, 0, 3]) / 2  # [7]
  centre_x = (boxes[0, 0, :, 0] + boxes[0, 0, :, 2]) / 2  # [9]
  (oy, ox), (sy, sx) = placed.offset, placed.stride
  np.testing.assert_allclose(centre_y, oy + np.arange(7) * sy, rtol=1e-6)
  np.testing.assert_allclose(centre_x, ox + np.arange(9) * sx, rtol=1e-6)


def test_class_names_come_from_the_class_label_else_are_numbers():
  def source(features):
    return types.SimpleNamespace(dataset_info=types.SimpleNamespace(features=features))

  label = tfds.features.ClassLabel(names=["cat", "dog"])
  spec = DatasetSpec(name="pets", num_classes=2)
  assert class_names(source({"label": label}), spec) == ("cat", "dog")
  boxes_spec = DatasetSpec(name="pets/detection", num_classes=2, label_key=None,
                           boxes_key="objects/bbox", box_labels_key="objects/label")
  objects = {"objects": {"label": tfds.features.Sequence(label)}}
  assert class_names(source(objects), boxes_spec) == ("cat", "dog")
  assert class_names([], spec) == ("0", "1")  # no dataset_info
  three = DatasetSpec(name="x", num_classes=3)  # the ClassLabel has 2 names
  assert class_names(source({"label": label}), three) == ("0", "1", "2")
  assert class_names(source({}), spec) == ("0", "1")
