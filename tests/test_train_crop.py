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


def _held_fraction(c: transforms.Crop, box: np.ndarray) -> float:
  """Fraction of `box` (resized pixels) inside crop c, counted pixel by pixel on a fine grid."""
  ys = np.linspace(box[1], box[3], 401)[:-1] + (box[3] - box[1]) / 800  # cell centres
  xs = np.linspace(box[0], box[2], 401)[:-1] + (box[2] - box[0]) / 800
  inside_y = (ys >= c.top) & (ys < c.top + c.out_h)
  inside_x = (xs >= c.left) & (xs < c.left + c.out_w)
  return inside_y.mean() * inside_x.mean()


def test_partial_crops_hold_at_least_the_fraction_and_reach_every_such_position():
  """input.crop_object_fraction: every crop holds >= the fraction of the box's area, and every
  position that does is drawn (checked against a brute-force count over all positions)."""
  rng = np.random.default_rng(3)
  box = np.array([70.0, 10.0, 110.0, 60.0]) * (64 / 72)  # resized pixels of a 72 x 128 image
  seen, cut = set(), 0
  for _ in range(3000):
    c = transforms.train_crop(72, 128, 64, 58, rng, keep_box=box / (64 / 72), keep_fraction=0.6)
    held = _held_fraction(c, box)
    assert held >= 0.6 - 0.01
    cut += held < 0.99
    seen.add((c.top, c.left))
  expected = {(t, l) for t in range(7) for l in range(57)
              if _held_fraction(transforms.Crop(64, 114, t, l, 58, 58), box) >= 0.6 + 0.01}
  assert expected <= seen
  assert all(_held_fraction(transforms.Crop(64, 114, t, l, 58, 58), box) >= 0.6 - 0.01 for t, l in seen)
  assert cut > 300  # crops that cut the object are a real share, not a rounding accident


def test_partial_crops_of_an_object_too_large_take_those_holding_the_most():
  rng = np.random.default_rng(4)
  box = np.array([0.0, 0.0, 100.0, 100.0])  # the whole 100 x 100 image: no 58-px crop holds 60%
  crops = {(c.top, c.left) for c in (transforms.train_crop(100, 100, 64, 58, rng, keep_box=box,
                                                           keep_fraction=0.6) for _ in range(200))}
  assert crops == {(t, l) for t in range(7) for l in range(7)}  # every crop holds 58^2 / 64^2


def test_off_object_crops_hold_less_than_the_fraction_and_reach_every_such_position():
  rng = np.random.default_rng(5)
  box = np.array([70.0, 10.0, 110.0, 60.0])  # original pixels of a 72 x 128 image
  resized = box * (64 / 72)
  seen = set()
  for _ in range(2000):
    c = transforms.off_object_crop(72, 128, 64, 58, rng, box, max_fraction=0.5)
    assert (c.resized_h, c.resized_w, c.out_h, c.out_w) == (64, 114, 58, 58)
    assert _held_fraction(c, resized) < 0.5 + 0.01
    seen.add((c.top, c.left))
  expected = {(t, l) for t in range(7) for l in range(57)
              if _held_fraction(transforms.Crop(64, 114, t, l, 58, 58), resized) < 0.5 - 0.01}
  assert expected <= seen and len(expected) > 50


def test_no_off_object_crop_when_every_crop_holds_the_object():
  rng = np.random.default_rng(6)
  # A 20 x 20 box in the middle of a 64 x 64 image: every 58-px crop holds all of it.
  assert transforms.off_object_crop(64, 64, 64, 58, rng, np.array([22.0, 22.0, 42.0, 42.0]), 0.5) is None
