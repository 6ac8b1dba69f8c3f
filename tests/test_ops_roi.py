"""RoI pooling and RoIAlign (SPEC B4) vs per-bin Python loops of torchvision's algorithms, plus
gradients (custom VJP vs JAX's own transpose; box gradients vs finite differences).

Against torchvision's own outputs: tests/test_ops_torchvision.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import batched_roi_align, default_max_sampling_ratio, roi_align, roi_pool
from overfeat_jax.ops import roi as roi_module

F32 = np.float32
# Jitted once per shape: much faster to compile than op-by-op eager calls.
pool = jax.jit(roi_pool, static_argnums=2)
align = jax.jit(roi_align, static_argnums=(2, 4, 5), static_argnames="max_sampling_ratio")


def c_round(v: float) -> int:
  """C's round(): halves away from zero."""
  return int(math.copysign(math.floor(abs(v) + 0.5), v))


def loop_roi_pool(features: np.ndarray, boxes: np.ndarray, output_size: tuple[int, int],
                  scale: float) -> tuple[np.ndarray, np.ndarray]:
  """torchvision's RoIPool in Python, float32 geometry. Returns the output and, per output value,
  the flat (h * W + w) index of its first maximal cell (-1 for empty bins)."""
  height, width, channels = features.shape
  ph, pw = output_size
  out = np.zeros((len(boxes), ph, pw, channels), np.float32)
  argmax = np.full(out.shape, -1)
  for r, box in enumerate(boxes):
    x1, y1, x2, y2 = (c_round(F32(v) * F32(scale)) for v in box)
    bin_h = F32(max(y2 - y1 + 1, 1)) / F32(ph)
    bin_w = F32(max(x2 - x1 + 1, 1)) / F32(pw)
    for i in range(ph):
      h0 = min(max(math.floor(F32(i) * bin_h) + y1, 0), height)
      h1 = min(max(math.ceil(F32(i + 1) * bin_h) + y1, 0), height)
      for j in range(pw):
        w0 = min(max(math.floor(F32(j) * bin_w) + x1, 0), width)
        w1 = min(max(math.ceil(F32(j + 1) * bin_w) + x1, 0), width)
        if h1 <= h0 or w1 <= w0:
          continue
        for c in range(channels):
          region = features[h0:h1, w0:w1, c]
          out[r, i, j, c] = region.max()
          dh, dw = np.unravel_index(np.argmax(region), region.shape)
          argmax[r, i, j, c] = (h0 + dh) * width + w0 + dw
  return out, argmax


def bilinear(features: np.ndarray, y: float, x: float) -> np.ndarray:
  """torchvision's bilinear_interpolate: 0 outside [-1, H] x [-1, W], clamped at the borders."""
  height, width, _ = features.shape
  if y < -1 or y > height or x < -1 or x > width:
    return np.zeros(features.shape[-1])
  y, x = max(y, 0), max(x, 0)
  y0, x0 = int(y), int(x)
  if y0 >= height - 1:
    y0 = y1 = height - 1
    y = y0
  else:
    y1 = y0 + 1
  if x0 >= width - 1:
    x0 = x1 = width - 1
    x = x0
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  f = features.astype(np.float64)
  return ((1 - ly) * (1 - lx) * f[y0, x0] + (1 - ly) * lx * f[y0, x1] + ly * (1 - lx) * f[y1, x0]
          + ly * lx * f[y1, x1])


def loop_roi_align(features: np.ndarray, boxes: np.ndarray, output_size: tuple[int, int],
                   scale: float, sampling_ratio: int, aligned: bool) -> np.ndarray:
  """torchvision's RoIAlign in Python: float32 geometry, float64 sums."""
  ph, pw = output_size
  out = np.zeros((len(boxes), ph, pw, features.shape[-1]))
  shift = F32(0.5 if aligned else 0.0)
  for r, box in enumerate(boxes):
    x1, y1, x2, y2 = (F32(v) * F32(scale) - shift for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
      roi_w, roi_h = max(roi_w, F32(1)), max(roi_h, F32(1))
    bin_h, bin_w = roi_h / F32(ph), roi_w / F32(pw)
    gy = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / F32(ph))
    gx = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / F32(pw))
    for i in range(ph):
      for j in range(pw):
        total = np.zeros(features.shape[-1])
        for iy in range(gy):
          y = y1 + F32(i) * bin_h + F32(iy + 0.5) * bin_h / F32(gy)
          for ix in range(gx):
            total += bilinear(features, y, x1 + F32(j) * bin_w + F32(ix + 0.5) * bin_w / F32(gx))
        out[r, i, j] = total / max(gy * gx, 1)
  return out


def edge_boxes(width: float, height: float) -> np.ndarray:
  """Boxes (image pixels) across the border, outside, zero-area, tiny, and the whole image."""
  return np.array([[0, 0, width, height], [-30, -20, 25, 18], [width - 10, height - 6, width + 40,
                   height + 30], [width + 20, 5, width + 60, 30], [-80, -80, -40, -50],
                   [20, 16, 20, 16], [33.3, 17.7, 34.1, 18.2], [12, 40, 3, 30]], np.float32)


def random_rois(rng: np.random.Generator, n: int, width: float, height: float) -> np.ndarray:
  xy = rng.uniform([-10, -10], [width, height], (n, 2))
  return np.concatenate([xy, xy + rng.uniform(2, 0.7 * width, (n, 2))], 1).astype(np.float32)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
  return np.random.default_rng(0).normal(size=(9, 11, 3)).astype(np.float32)


def rois_for(features: np.ndarray, scale: float, seed: int = 1) -> np.ndarray:
  height, width = features.shape[0] / scale, features.shape[1] / scale
  return np.concatenate([edge_boxes(width, height),
                         random_rois(np.random.default_rng(seed), 8, width, height)])


# ------------------------------------------------------------------------------------------------
# roi_pool


@pytest.mark.parametrize("scale,output_size", [(0.125, (3, 4)), (0.5, (2, 2)), (1.0, (4, 3))])
def test_roi_pool_matches_loop(features, scale, output_size):
  boxes = rois_for(features, scale)
  expected, _ = loop_roi_pool(features, boxes, output_size, scale)
  got = pool(jnp.asarray(features), jnp.asarray(boxes), output_size, scale)
  assert got.shape == (len(boxes),) + output_size + (3,)
  np.testing.assert_array_equal(got, expected)


def test_roi_pool_rounds_box_corners_half_away_from_zero():
  """x1 * scale = 2.5 starts at cell 3 (C's round; round-half-even would start at 2)."""
  features = np.arange(6, dtype=np.float32)[None, :, None] * np.ones((2, 1, 1), np.float32)
  got = pool(jnp.asarray(features), jnp.array([[5.0, 0, 5.0, 0]]), (1, 1), 0.5)
  assert float(got[0, 0, 0, 0]) == 3.0
  got = pool(jnp.asarray(features), jnp.array([[3.0, 0, 3.0, 0]]), (1, 1), 0.5)
  assert float(got[0, 0, 0, 0]) == 2.0  # 1.5 -> 2, the bin [2, 3)


def test_roi_pool_bins_with_exact_float_edges():
  """roi height 7 in 3 bins: 3 * float32(7 / 3) rounds to 7.0, so the last bin ends at row 7, not
  8. (XLA would compute 7 * (1 / 3) = 7.0000005 — roi.py divides exactly.)"""
  features = np.random.default_rng(2).normal(size=(12, 4, 2)).astype(np.float32)
  boxes = np.array([[0, 0, 3, 6]] * 3, np.float32)  # rows 0..6: 7 rows
  expected, _ = loop_roi_pool(features, boxes, (3, 2), 1.0)
  np.testing.assert_array_equal(pool(jnp.asarray(features), jnp.asarray(boxes), (3, 2), 1.0),
                                expected)


def test_roi_pool_no_rois_jit_and_vmap(features):
  assert pool(jnp.asarray(features), jnp.zeros((0, 4)), (2, 2), 0.5).shape == (0, 2, 2, 3)
  batch = np.stack([features, -features])
  boxes = np.stack([rois_for(features, 0.5, seed) for seed in (3, 4)])
  run = jax.jit(jax.vmap(lambda f, b: roi_pool(f, b, (2, 3), 0.5)))
  got = run(batch, boxes)
  for k in range(2):
    np.testing.assert_array_equal(got[k], loop_roi_pool(batch[k], boxes[k], (2, 3), 0.5)[0])


def test_roi_pool_large_bins_use_every_table_level():
  """Bins of 1 to 70 cells: every level of the base-4 block table, with 1 to 4 blocks per axis."""
  features = np.random.default_rng(13).normal(size=(37, 70, 2)).astype(np.float32)
  ends = np.arange(1, 71, dtype=np.float32)
  boxes = np.stack([70 - ends, (37 - ends / 2).clip(0), ends + 1, ends / 2], 1)
  for output_size in [(1, 1), (2, 3)]:
    expected, _ = loop_roi_pool(features, boxes, output_size, 1.0)
    np.testing.assert_array_equal(
        pool(jnp.asarray(features), jnp.asarray(boxes), output_size, 1.0), expected)


def test_roi_pool_gradients(features):
  """Features: each bin's gradient lands on its first maximal cell in row-major order, as
  torchvision's (integer features: many ties); boxes: zero (rounded coordinates)."""
  features = np.round(features * 2)
  boxes = rois_for(features, 0.5)
  cotangent = np.random.default_rng(5).normal(size=(len(boxes), 3, 2, 3)).astype(np.float32)
  _, argmax = loop_roi_pool(features, boxes, (3, 2), 0.5)
  expected = np.zeros((features.shape[0] * features.shape[1], 3), np.float32)
  for index, g in zip(argmax.reshape(-1, 3), cotangent.reshape(-1, 3)):
    for c in range(3):
      if index[c] >= 0:
        expected[index[c], c] += g[c]
  loss = lambda f, b: jnp.sum(pool(f, b, (3, 2), 0.5) * cotangent)
  d_features, d_boxes = jax.grad(loss, argnums=(0, 1))(jnp.asarray(features), jnp.asarray(boxes))
  np.testing.assert_allclose(d_features.reshape(-1, 3), expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(d_boxes, np.zeros_like(boxes))


# ------------------------------------------------------------------------------------------------
# roi_align


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio,scale", [(2, 0.5), (1, 0.125), (-1, 0.5), (0, 0.125)])
def test_roi_align_matches_loop(features, aligned, sampling_ratio, scale):
  boxes = rois_for(features, scale)
  expected = loop_roi_align(features, boxes, (3, 2), scale, sampling_ratio, aligned)
  # At scale 0.5 some edge boxes are ~3x the map: above the default adaptive bound.
  got = align(jnp.asarray(features), jnp.asarray(boxes), (3, 2), scale, sampling_ratio,
                  aligned, max_sampling_ratio=None if scale < 0.5 else 16)
  assert got.shape == (len(boxes), 3, 2, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_adaptive_grid_bound():
  """The default bound covers RoIs one cell larger than the map; past an explicit bound the grid is
  capped (documented), and a large enough bound gives torchvision's grid again."""
  assert default_max_sampling_ratio((38, 63), (7, 7)) == (6, 10)
  features = np.random.default_rng(6).normal(size=(6, 8, 2)).astype(np.float32)
  boxes = np.array([[-8, -8, 16, 12], [0, 0, 8, 6]], np.float32)  # grids (10, 12) and (3, 4)
  expected = loop_roi_align(features, boxes, (2, 2), 1.0, -1, False)
  got = align(jnp.asarray(features), jnp.asarray(boxes), (2, 2), 1.0, -1,
                  max_sampling_ratio=(10, 12))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  capped = align(jnp.asarray(features), jnp.asarray(boxes), (2, 2), 1.0, -1,
                     max_sampling_ratio=(3, 4))
  np.testing.assert_allclose(capped[1], expected[1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(capped[0], expected[0], atol=1e-3)


def test_roi_align_no_rois_jit_and_vmap(features):
  assert align(jnp.asarray(features), jnp.zeros((0, 4)), (2, 2), 0.5, 2).shape == (0, 2, 2, 3)
  batch = np.stack([features, 2 * features])
  boxes = np.stack([rois_for(features, 0.5, seed) for seed in (7, 8)])
  run = jax.jit(jax.vmap(lambda f, b: roi_align(f, b, (2, 2), 0.5, -1, True,
                                                max_sampling_ratio=16)))
  got = run(batch, boxes)
  for k in range(2):
    np.testing.assert_allclose(got[k], loop_roi_align(batch[k], boxes[k], (2, 2), 0.5, -1, True),
                               rtol=1e-5, atol=1e-5)


def test_weighted_gather_vjp_matches_jax_transpose():
  """The hand-written VJP of the batched sample sum (one scatter chain per image) equals JAX's own
  transpose of the plain per-image version, for the tables and the weights."""
  rng = np.random.default_rng(9)
  tables = jnp.asarray(rng.normal(size=(2, 30, 5)).astype(np.float32))
  cells = jnp.asarray(rng.integers(0, 30, (2, 4, 3, 2, 16)).astype(np.int32))
  weights = jnp.asarray(rng.uniform(size=(2, 4, 3, 2, 16)).astype(np.float32))
  cotangent = jnp.asarray(rng.normal(size=(2, 4, 3, 2, 5)).astype(np.float32))
  plain = jax.vmap(roi_module._corner_sum)
  grads = [jax.grad(lambda t, w: jnp.sum(fn(t, cells, w) * cotangent), argnums=(0, 1))(tables,
                                                                                       weights)
           for fn in (roi_module._weighted_gather, plain)]
  for ours, reference in zip(*grads):
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(grads[0][0][1]).sum()) > 0  # the second image's table gets its own gradient


def test_batched_roi_align_is_roi_align_per_image(features):
  """Outputs and both gradients bit for bit those of vmapping the one-image roi_align."""
  batch = jnp.asarray(np.stack([features, 3 * features - 1]))
  boxes = jnp.asarray(np.stack([rois_for(features, 0.5, seed) for seed in (13, 14)]))
  cotangent = jnp.asarray(np.random.default_rng(15).normal(size=(2, len(boxes[0]), 3, 2, 3)),
                          jnp.float32)

  def run(fn):
    out, pullback = jax.vjp(fn, batch, boxes)
    return (out,) + pullback(cotangent)

  batched = jax.jit(lambda f, b: batched_roi_align(f, b, (3, 2), 0.5, 2))
  vmapped = jax.jit(jax.vmap(lambda f, b: roi_align(f, b, (3, 2), 0.5, 2)))
  for ours, reference in zip(run(batched), run(vmapped)):
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, True)])
def test_roi_align_box_gradient_matches_finite_differences(sampling_ratio, aligned):
  """Float64; boxes inside the map, so no sample crosses a clamp and no adaptive grid changes."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(10)
    features = jnp.asarray(rng.normal(size=(10, 12, 2)))
    boxes = jnp.array([[3.3, 2.1, 15.7, 13.4], [8.2, 6.6, 20.9, 17.3], [1.7, 4.4, 9.1, 7.9]])
    cotangent = jnp.asarray(rng.normal(size=(3, 2, 3, 2)))

    def loss(b):
      return jnp.sum(align(features, b, (2, 3), 0.5, sampling_ratio, aligned) * cotangent)

    loss = jax.jit(loss)
    grad = np.asarray(jax.grad(loss)(boxes))
    eps = 1e-5
    numeric = np.zeros((3, 4))
    for index in np.ndindex(3, 4):
      step = jnp.zeros((3, 4)).at[index].set(eps)
      numeric[index] = (loss(boxes + step) - loss(boxes - step)) / (2 * eps)
  assert np.all(np.isfinite(grad)) and np.abs(grad).min() > 1e-4  # every coordinate matters
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_roi_align_feature_gradient_is_the_transpose(features):
  """roi_align is linear in the features: <A f, g> = <f, A^T g> with A^T g from jax.grad."""
  boxes = jnp.asarray(rois_for(features, 0.5))
  cotangent = jnp.asarray(np.random.default_rng(11).normal(size=(len(boxes), 2, 2, 3)),
                          jnp.float32)
  forward = lambda f: jnp.sum(align(f, boxes, (2, 2), 0.5, 2, True) * cotangent)
  grad = jax.jit(jax.grad(forward))(jnp.asarray(features))
  other = np.random.default_rng(12).normal(size=features.shape).astype(np.float32)
  np.testing.assert_allclose(forward(jnp.asarray(other)), jnp.sum(grad * other), rtol=1e-4)
  assert float(jnp.abs(grad).sum()) > 0
