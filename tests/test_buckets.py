"""Shape buckets and test-scale geometry of whole-image evaluation (overfeat_jax/data/buckets.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.config import base_config
from overfeat_jax.data import buckets, transforms

BOUNDS = (1.25, 2.0)


def test_buckets_and_their_canvases_hand_computed():
  square, landscape, portrait = buckets.make_buckets(BOUNDS)
  assert [b.orientation for b in (square, landscape, portrait)] == ["square", "landscape", "portrait"]
  assert landscape.name == "landscape (1.25-2)" and square.name == "square (<= 1.25)"
  # Scale 64x64 (S = L = 64): square side max(64, 1.25 * 64) = 80; landscape height
  # max(64, 64 / 1.25) = 64, width max(64, 2 * 64) = 128; portrait the transpose.
  assert square.canvas((64, 64)) == (80, 80)
  assert landscape.canvas((64, 64)) == (64, 128)
  assert portrait.canvas((64, 64)) == (128, 64)
  # 72x80: square max(80, 90) = 90; landscape height max(72, 80 / 1.25 = 64) = 72, width 144.
  assert square.canvas((72, 80)) == (90, 90)
  assert landscape.canvas((72, 80)) == (72, 144)
  assert landscape.canvas((80, 72)) == (72, 144)  # (H, W) order does not matter: S x L
  # The paper's scale 6 with the ImageNet bounds: (1.2, 1.4] landscape is 475 x 646
  # (569 / 1.2 = 474.2 -> 475; 461 * 1.4 = 645.4 -> 646).
  paper = buckets.make_buckets((1.2, 1.4, 2.0))
  assert len(paper) == 5 and paper[0].canvas((461, 569)) == (569, 569)
  assert paper[1].canvas((461, 569)) == (475, 646) and paper[2].canvas((461, 569)) == (646, 475)
  assert paper[3].canvas((461, 569)) == (461, 922)


@pytest.mark.parametrize("hw, bounds, expected", [
    ((100, 100), BOUNDS, 0), ((100, 125), BOUNDS, 0), ((125, 100), BOUNDS, 0),  # bounds inclusive
    ((100, 126), BOUNDS, 1), ((126, 100), BOUNDS, 2), ((100, 200), BOUNDS, 1),
    ((100, 800), BOUNDS, 1), ((800, 100), BOUNDS, 2),  # beyond the last bound: the last pair
    ((100, 130), (1.2, 1.4, 2.0), 1), ((150, 100), (1.2, 1.4, 2.0), 4), ((100, 150), (1.2, 1.4, 2.0), 3),
    ((100, 130), (1.5,), 0), ((100, 300), (1.5,), 0),  # one bound: one bucket for everything
])
def test_bucket_index(hw, bounds, expected):
  assert buckets.bucket_index(*hw, bounds) == expected


def test_scaled_size_hand_computed():
  # Landscape 50x70 at 64x64: f = max(64/50, 64/70) = 1.28 -> 64 x 89.6 -> 64 x 90.
  np.testing.assert_array_equal(buckets.scaled_size((50, 70), (64, 64), (64, 128)), [64, 90])
  # Portrait 70x50 at 72x80: the box stands up (80 x 72): f = max(72/50, 80/70) = 1.44 -> 101 x 72.
  np.testing.assert_array_equal(buckets.scaled_size((70, 50), (72, 80), (144, 72)), [101, 72])
  # A square image covers 72x80 with its long side: 80 x 80, more than the box, nothing cut.
  np.testing.assert_array_equal(buckets.scaled_size((60, 60), (72, 80), (90, 90)), [80, 80])
  # 1:8 (beyond the last bound): covering 64x64 would take 64 x 512; shrunk to the 64x128 canvas.
  np.testing.assert_array_equal(buckets.scaled_size((10, 80), (64, 64), (64, 128)), [16, 128])


def test_scaled_size_covers_the_box_fits_the_canvas_and_agrees_on_device():
  rng = np.random.default_rng(0)
  hw = rng.integers(20, 400, size=(2000, 2))
  hw = hw[np.maximum(hw[:, 0], hw[:, 1]) <= 2.0 * np.minimum(hw[:, 0], hw[:, 1])]  # in range
  ids = np.array([buckets.bucket_index(h, w, BOUNDS) for h, w in hw])
  assert set(ids) == {0, 1, 2}
  for bucket in buckets.make_buckets(BOUNDS):
    mine = hw[ids == bucket.index]
    for scale in ((64, 64), (72, 80), (461, 569)):
      canvas = bucket.canvas(scale)
      size = buckets.scaled_size(mine, scale, canvas)  # [N, 2]
      s, l = buckets.box_sides(scale)
      assert (size <= canvas).all()  # fits its bucket's canvas...
      assert (size.min(axis=1) >= s).all() and (size.max(axis=1) >= l).all()  # ...covers S x L
      ratio = size / mine  # aspect kept, up to rounding
      np.testing.assert_allclose(ratio[:, 0], ratio[:, 1], rtol=2.0 / s)
      device = np.asarray(buckets.scaled_size(jnp.asarray(mine), scale, canvas, xp=jnp))
      assert np.abs(device - size).max() <= 1  # float32 on device: a .5 may round the other way
      assert (device <= canvas).all()


def test_min_max_size_hand_computed():
  # 100 x 200 to 64 / 96: f = min(64 / 100, 96 / 200) = 0.48 -> 48 x 96 (the long side binds);
  # 150 x 120: f = min(64 / 120, 96 / 150) = 0.5333 -> 80 x 64 (the short side binds).
  np.testing.assert_array_equal(buckets.min_max_size([[100, 200], [150, 120]], 64, 96),
                                [[48, 96], [80, 64]])
  # SPEC B5: a 375 x 500 VOC image at 600 / 1000 -> 600 x 800; a 1:3 strip keeps its long side 1000.
  np.testing.assert_array_equal(buckets.min_max_size([[375, 500], [100, 300]], 600, 1000),
                                [[600, 800], [333, 1000]])


def test_detection_canvases_hand_computed_and_every_image_fits():
  # 64 / 96 with (1.25, 2.0): square side min(96, 1.25 * 64) = 80; landscape, the last bucket:
  # height min(64, 96 / 1.25) = 64, width max_size 96 (it takes strips beyond 2:1 too).
  assert buckets.detection_canvases(BOUNDS, 64, 96) == ((80, 80), (64, 96), (96, 64))
  # One bound: every image in the square bucket, its canvas max_size both ways.
  assert buckets.detection_canvases((1.5,), 600, 1000) == ((1000, 1000),)
  # Three bounds at the paper's sizes: (1.2, 1.4] landscape is 600 x 840 (600 * 1.4).
  assert buckets.detection_canvases((1.2, 1.4, 2.0), 600, 1000)[1] == (600, 840)
  rng = np.random.default_rng(0)
  hw = rng.integers(10, 600, size=(3000, 2))  # any aspect, strips beyond 2:1 included
  for bounds, min_size, max_size in [(BOUNDS, 64, 96), ((1.2, 1.4, 2.0), 600, 1000), ((1.5,), 30, 31)]:
    canvases = buckets.detection_canvases(bounds, min_size, max_size)
    ids = np.array([buckets.bucket_index(h, w, bounds) for h, w in hw])
    size = buckets.min_max_size(hw, min_size, max_size)  # [N, 2]
    assert (size.max(axis=1) <= max_size).all()
    assert ((size.min(axis=1) == min_size) | (size.max(axis=1) == max_size)).all()
    for index, canvas in enumerate(canvases):
      mine = size[ids == index]
      assert (mine <= canvas).all()  # fits its bucket's canvas...
      assert (mine.max(axis=0) >= np.array(canvas) - 1).all()  # ...which is no larger than needed
    device = np.asarray(buckets.min_max_size(jnp.asarray(hw), min_size, max_size, xp=jnp))
    assert np.abs(device - size).max() <= 1


def test_short_side_size_is_the_training_resize():
  np.testing.assert_array_equal(buckets.short_side_size((100, 200), 64, 58), [64, 128])
  np.testing.assert_array_equal(buckets.short_side_size((300, 20), 64, 58), [960, 64])
  np.testing.assert_array_equal(buckets.short_side_size((100, 101), 64, 66), [66, 66])  # >= minimum
  crop = transforms.train_crop(100, 200, 64, 58, np.random.default_rng(0))
  assert (crop.resized_h, crop.resized_w) == (64, 128)


def test_canvas_scale_is_the_largest_used():
  eval_cfg = base_config().eval
  assert buckets.canvas_scale(eval_cfg) == (112, 136)  # all six scales used
  eval_cfg.single_scale, eval_cfg.multi_scales = 0, (0, 1, 2)
  assert buckets.used_scales(eval_cfg) == [(64, 64), (72, 80), (80, 96)]
  assert buckets.canvas_scale(eval_cfg) == (80, 96)
  eval_cfg.resize_short = 90  # the views' resize needs more than the scales
  assert buckets.canvas_scale(eval_cfg) == (90, 96)
