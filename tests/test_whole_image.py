"""Whole-image evaluation (SPEC A4): the dense grid's validity mask and window boxes against slow
references, a pattern at an image's edge that the old cover + centre crop cut away, extreme aspect
ratios, and grey / RGBA images through the eval pipeline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.config import base_config
from overfeat_jax.data import buckets, pipeline, transforms
from overfeat_jax.evaluation import dense
from overfeat_jax.models import dense_grid

from model_helpers import random_variables, tiny


# ---------------------------------------------------------------------------------------------
# Validity of positions and window boxes.

def slow_window_geometry(map_hw, stride, fov, image_hw, original_hw):
  """Per position: count the image pixels under the window, one window at a time."""
  b = len(image_hw)
  valid = np.zeros((b,) + tuple(map_hw), bool)
  boxes = np.zeros((b,) + tuple(map_hw) + (4,), np.float32)
  for i, ((h, w), (oh, ow)) in enumerate(zip(image_hw, original_hw)):
    canvas = np.zeros((map_hw[0] * stride + fov, map_hw[1] * stride + fov), bool)
    canvas[:h, :w] = True
    for u in range(map_hw[0]):
      for v in range(map_hw[1]):
        y, x = u * stride, v * stride
        valid[i, u, v] = canvas[y:y + fov, x:x + fov].sum() > fov * fov / 2
        boxes[i, u, v] = [x * ow / w, y * oh / h, (x + fov) * ow / w, (y + fov) * oh / h]
    if not valid[i].any():  # the documented fallback: the window with the most image pixels
      valid[i, 0, 0] = True
  return valid, boxes


# One compile per map size instead of dozens of small eager ops.
window_geometry = jax.jit(dense_grid.window_geometry, static_argnums=0,
                          static_argnames=("stride", "fov"))


def test_window_geometry_hand_computed():
  # Image 40 x 100 px (original 20 x 50), stride 8, fov 58: window rows on the image are
  # 40, 32, 24 (areas 40*58 = 2320 and 32*58 = 1856 > 1682 = 58^2 / 2, 24*58 = 1392 not);
  # columns 58 up to start 42, then 100 - 48 = 52 (52*40 > 1682, 52*32 = 1664 not).
  valid, boxes = window_geometry((3, 7), stride=8, fov=58, image_hw=np.array([[40, 100]]),
                                 original_hw=np.array([[20, 50]]))
  np.testing.assert_array_equal(valid[0], [[1, 1, 1, 1, 1, 1, 1],
                                           [1, 1, 1, 1, 1, 1, 0],
                                           [0, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_allclose(boxes[0, 1, 2], [8, 4, 37, 33])  # (16, 8, 74, 66) canvas px / 2
  # A 20 x 30 image has no window more than half on it: only the top-left one counts.
  valid, _ = window_geometry((2, 2), stride=8, fov=58, image_hw=np.array([[20, 30]]),
                             original_hw=np.array([[20, 30]]))
  np.testing.assert_array_equal(valid[0], [[1, 0], [0, 0]])


def test_window_geometry_against_slow_reference():
  rng = np.random.default_rng(0)
  image_hw = np.concatenate([rng.integers(10, 120, (30, 1)), rng.integers(10, 160, (30, 1))], 1)
  original_hw = rng.integers(5, 500, (30, 2))
  for stride, fov in ((4, 58), (12, 221), (8, 30)):
    map_hw = (9, 13)
    valid, boxes = window_geometry(map_hw, stride=stride, fov=fov, image_hw=image_hw,
                                   original_hw=original_hw)
    ref_valid, ref_boxes = slow_window_geometry(map_hw, stride, fov, image_hw, original_hw)
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=1e-5)


def test_dense_grid_equals_the_network_on_each_window_crop():
  """Without zero padding in the network, each position's logits are the network on its window
  cropped from the padded canvas; its box is that crop in original pixels."""
  model = tiny("fast", padding=False)  # field of view 82, stride 4, fine grid from 86 px
  variables = random_variables(model, seed=1)
  image_hw = np.array([[100, 70], [86, 120]])
  canvas = np.zeros((2, 100, 120, 3), np.float32)
  rng = np.random.default_rng(2)
  for b, (h, w) in enumerate(image_hw):
    canvas[b, :h, :w] = rng.normal(size=(h, w, 3))
  canvas[0, :, 70:] = 7.0  # whatever the padding holds, dense_grid sees zeros there
  original_hw = jnp.asarray([[50, 45], [43, 60]])
  grid = jax.jit(lambda v, x: dense_grid.dense_grid(model, v, x, image_hw=image_hw,
                                                    original_hw=original_hw))(variables, canvas)
  fov, s = model.arch.train_size, model.arch.prepool_stride
  _, gh, gw, _ = grid.logits.shape
  ref_valid, ref_boxes = slow_window_geometry((gh, gw), s, fov, image_hw, np.asarray(original_hw))
  np.testing.assert_array_equal(grid.valid, ref_valid)
  np.testing.assert_allclose(grid.boxes, ref_boxes, rtol=1e-5)
  assert ref_valid.any() and not ref_valid.all()
  zeroed = canvas.copy()
  zeroed[0, :, 70:] = 0.0
  crops = np.stack([zeroed[:, u * s:u * s + fov, v * s:v * s + fov]
                    for u in range(gh) for v in range(gw)], 1).reshape(-1, fov, fov, 3)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, crops)
  np.testing.assert_allclose(grid.logits, np.asarray(logits).reshape(2, gh, gw, -1), rtol=1e-4,
                             atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Through the eval pipeline, with a hand-built network.

PATTERN = 1  # The class the network below reports where a window sees a white patch.


def bright_patch_network():
  """A tiny 2-class OverFeat whose class-1 logit is (a multiple of) the brightness of a window.

  Every kernel averages (all weights 1 / fan-in), biases are 0, so on normalised images (black is
  about -2, white about +2.4, the padding 0) the ReLU features are zero except near bright pixels.
  Class 1's logit is 200 x the averaged features; class 0's is its bias, 2. Away from a white patch
  class 0 wins (softmax 0.88 : 0.12); a window that holds the patch says class 1 with ~1.0.
  """
  model = tiny("fast", num_classes=2)

  def fill(path, leaf):
    if path[-1].key == "bias":
      return jnp.zeros(leaf.shape).at[0].set(2.0) if path[-2].key == "fc8" else jnp.zeros(leaf.shape)
    kernel = jnp.full(leaf.shape, 1.0 / np.prod(leaf.shape[:-1]))
    return kernel.at[..., 0].set(0.0) * 200.0 if path[-2].key == "fc8" else kernel

  return model, jax.tree_util.tree_map_with_path(fill, random_variables(model))


class ListSource:
  """A fake TFDS source over a list of records."""

  def __init__(self, records):
    self.records = records

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def quickstart_eval_config(monkeypatch, records):
  monkeypatch.setattr(pipeline, "load_source", lambda dataset_cfg, split: ListSource(records))
  config = base_config()
  config.dataset.name = "imagenet2012"  # any dataset with image + label; the source is faked
  config.dataset.num_classes = 1000
  config.input.eval_batch_size = 2
  config.eval.scales = ((64, 64), (72, 80))
  config.eval.single_scale, config.eval.multi_scales = 0, (0, 1)
  return config


def old_cover_centre_crop(image: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
  """What the evaluator saw before (commit d464bf8): the image resized by max(Hc / H, Wc / W) to
  cover the canvas of the largest scale, then centre-cropped to it."""
  h, w = image.shape[:2]
  scale = max(canvas[0] / h, canvas[1] / w)
  rh, rw = max(canvas[0], round(h * scale)), max(canvas[1], round(w * scale))
  crop = transforms.Crop(rh, rw, (rh - canvas[0]) // 2, (rw - canvas[1]) // 2, *canvas)
  return transforms.apply_crop(image, crop)


def rows_of(model, variables, config, batch, bucket):
  fn = jax.jit(lambda v, x, hw, ohw: dense.evaluate_views(
      model, v, x, config.eval, image_hw=hw, original_hw=ohw, bucket=bucket, crop_size=58,
      resize_short=64))
  return fn(variables, batch["image"], batch["size"], batch["original_size"])


def test_a_pattern_at_the_top_edge_of_a_portrait_image_is_seen(monkeypatch):
  image = np.zeros((120, 72, 3), np.uint8)  # portrait, black
  image[2:14, 30:42] = 255  # a white patch at the top edge
  config = quickstart_eval_config(monkeypatch, [{"image": image, "label": np.int64(PATTERN)}])
  model, variables = bright_patch_network()

  # Before: every view came from the 72x80 cover crop, which kept rows 27..92 of the 120: no patch.
  old = old_cover_centre_crop(image, (72, 80))
  assert old.shape == (72, 80, 3) and old.max() == 0

  # Now: the whole image, portrait bucket; every dense row finds the patch.
  loader = pipeline.eval_loader(config)
  (batch,) = list(loader)
  bucket = loader.shape_buckets[int(batch["bucket"][0])]
  assert bucket.orientation == buckets.PORTRAIT
  # It covers the 72x80 box standing up (80 x 72): f = max(72 / 72, 80 / 120) = 1: 120 x 72.
  np.testing.assert_array_equal(batch["size"][0], [120, 72])
  rows = rows_of(model, variables, config, batch, bucket)
  for row in (dense.ROW_COARSE, dense.ROW_FINE, dense.ROW_MULTI, dense.ROW_MULTI_FLIP):
    assert int(np.argmax(rows[row][0])) == PATTERN, row
  # 4 of the 10 views (the top corners and their mirror images) hold it: 0.12 without, ~0.47 now.
  assert rows[dense.ROW_TEN_VIEWS][0, PATTERN] > 0.3
  # The centre crop is still only a crop (rows 24..82 of the 107 x 64 resize): no patch in it.
  assert int(np.argmax(rows[dense.ROW_CENTRE][0])) != PATTERN


def test_extreme_aspect_ratio_evaluates(monkeypatch):
  """A 1:8 strip goes to the last landscape bucket, shrunk to fit its canvas; it keeps one position
  (the fallback) where no window is mostly on it, and its scores are finite."""
  rng = np.random.default_rng(3)
  strip = rng.integers(0, 256, (16, 128, 3), dtype=np.uint8)
  normal = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
  config = quickstart_eval_config(monkeypatch, [{"image": strip, "label": np.int64(3)},
                                                {"image": normal, "label": np.int64(4)}])
  loader = pipeline.eval_loader(config)
  (batch,) = list(loader)
  bucket = loader.shape_buckets[int(batch["bucket"][0])]
  assert bucket.orientation == buckets.LANDSCAPE and bucket.max_aspect == 2.0
  assert batch["image"].shape == (2, 72, 144, 3)  # (max(72, 80 / 1.25), max(80, 2 * 72))
  np.testing.assert_array_equal(batch["size"], [[18, 144], [72, 103]])  # strip shrunk to fit
  model = tiny("fast", num_classes=10)
  variables = random_variables(model, seed=5)
  # At 64x64 (the 64x128 canvas) the strip is 16 x 128: no window is mostly on it, so only the
  # top-left one counts; the other image keeps many.
  shape = bucket.canvas((64, 64))
  hw = buckets.scaled_size(batch["original_size"], (64, 64), shape)
  np.testing.assert_array_equal(hw, [[16, 128], [64, 91]])
  grid = jax.eval_shape(lambda v: dense_grid.dense_grid(
      model, v, jnp.zeros((2,) + shape + (3,)), image_hw=hw, original_hw=hw), variables)
  valid, _ = window_geometry(grid.valid.shape[1:], stride=model.arch.prepool_stride,
                             fov=model.arch.train_size, image_hw=hw, original_hw=hw)
  assert np.asarray(valid[0]).sum() == 1 and valid[0, 0, 0] and np.asarray(valid[1]).sum() > 1
  rows = rows_of(model, variables, config, batch, bucket)
  for row in dense.ROWS:
    assert np.isfinite(rows[row]).all(), row


@pytest.mark.parametrize("form", ["grey 2-D", "grey [H, W, 1]", "RGBA"])
def test_grey_and_rgba_images_go_through_the_eval_pipeline(monkeypatch, form):
  rng = np.random.default_rng(4)
  rgb = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
  if form == "RGBA":
    image, expected = np.concatenate([rgb, np.full((50, 70, 1), 7, np.uint8)], -1), rgb
  else:
    grey = rgb[..., 0]
    image = grey if form == "grey 2-D" else grey[..., None]
    expected = np.repeat(grey[..., None], 3, axis=-1)
  config = quickstart_eval_config(monkeypatch, [{"image": image, "label": np.int64(1)},
                                                {"image": expected, "label": np.int64(1)}])
  (batch,) = list(pipeline.eval_loader(config))
  assert batch["image"].shape[-1] == 3 and batch["valid"].all()
  np.testing.assert_array_equal(batch["original_size"], [[50, 70], [50, 70]])
  np.testing.assert_array_equal(batch["image"][0], batch["image"][1])  # = its RGB form
