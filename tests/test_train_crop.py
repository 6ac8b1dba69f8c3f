"""The training crop (SPEC A3) and its object-keeping variant (config input.crop_keeps_object)."""

from __future__ import annotations

import numpy as np

from overfeat_jax.data import transforms


def test_plain_crops_cover_every_position():
  rng = np.random.default_rng(0)
  crops = [transforms.train_crop(72, 128, 64, 58, rng) for _ in range(400)]
  assert {(c.resized_h, c.resized_w, c.out_h, c.out_w) for c in crops} == {(64, 114, 58, 58)}
  assert {c.top for c in crops} == set(range(7)) and {c.left for c in crops} == set(range(57))


def test_crops_keep_the_object_whole_and_still_vary():
  rng = np.random.default_rng(1)
  box = np.array([20.0, 10.0, 50.0, 60.0])  # original pixels of a 72 x 128 image; scale 64 / 72
  s = 64 / 72
  lefts = set()
  for _ in range(300):
    c = transforms.train_crop(72, 128, 64, 58, rng, keep_box=box)
    x1, y1, x2, y2 = box * s
    assert c.left <= x1 and x2 <= c.left + 58 and c.top <= y1 and y2 <= c.top + 58
    lefts.add(c.left)
  # Every left edge that keeps the box: ceil(50 s) - 58 < 0 -> 0 .. floor(20 s) = 17.
  assert lefts == set(range(0, 18))


def test_an_object_larger_than_the_crop_is_centred():
  rng = np.random.default_rng(2)
  c = transforms.train_crop(100, 100, 64, 58, rng, keep_box=np.array([0.0, 40.0, 100.0, 60.0]))
  assert c.left == 3  # the 64-px-wide box cannot fit: centred, (0 + 64 - 58) / 2
  assert c.top <= 40 * 0.64 and 60 * 0.64 <= c.top + 58
