"""Box area / IoU / clipping and the box coder (SPEC B1) vs slow loops and hand-computed values.

Against torchvision's own outputs: tests/test_ops_torchvision.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import (BBOX_XFORM_CLIP, DETECTOR_WEIGHTS, RPN_WEIGHTS, box_area, box_iou,
                              clip_boxes, decode_boxes, encode_boxes, flip_boxes)


def random_boxes(rng: np.random.Generator, n: int, extent: float = 100.0) -> np.ndarray:
  xy = rng.uniform(-10, extent, (n, 2))
  return np.concatenate([xy, xy + rng.uniform(1, extent / 2, (n, 2))], 1).astype(np.float32)


def loop_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  out = np.zeros((len(a), len(b)), np.float64)
  for i, p in enumerate(a.astype(np.float64)):
    for j, q in enumerate(b.astype(np.float64)):
      w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
      h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
      union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
      out[i, j] = w * h / union if union > 0 else 0.0
  return out


def test_box_area_numpy_in_numpy_out_and_jnp_in_jnp_out():
  boxes = np.array([[0, 0, 2, 3], [1, 1, 1, 5], [-1, -2, 3, 2]], np.float32)
  area = box_area(boxes)
  assert isinstance(area, np.ndarray) and area.dtype == np.float32
  np.testing.assert_array_equal(area, [6, 0, 16])
  assert isinstance(box_area(jnp.asarray(boxes)), jax.Array)
  np.testing.assert_array_equal(jax.jit(box_area)(jnp.asarray(boxes)), [6, 0, 16])


def test_box_iou_matches_loop_on_random_and_edge_boxes():
  rng = np.random.default_rng(0)
  a, b = random_boxes(rng, 13), random_boxes(rng, 7)
  a[0] = [10, 10, 10, 30]  # zero area
  a[1] = b[2]  # identical: IoU 1
  a[2] = [200, 200, 210, 210]  # far from everything: IoU 0
  b[0] = [a[3, 0] + 1, a[3, 1] + 1, a[3, 2] - 1, a[3, 3] - 1]  # inside a[3]
  expected = loop_iou(a, b)
  for got in (box_iou(a, b), np.asarray(box_iou(jnp.asarray(a), jnp.asarray(b)))):
    assert got.shape == (13, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  assert box_iou(a, b)[1, 2] == 1 and box_iou(a, b)[2].max() == 0


def test_box_iou_of_empty_boxes_is_zero_not_nan():
  padding = np.zeros((3, 4), np.float32)
  for xp in (np, jnp):
    iou = box_iou(xp.asarray(padding), xp.asarray(padding))
    np.testing.assert_array_equal(np.asarray(iou), np.zeros((3, 3)))


def test_box_iou_empty_inputs_and_jit():
  assert box_iou(np.zeros((0, 4), np.float32), np.zeros((5, 4), np.float32)).shape == (0, 5)
  a = random_boxes(np.random.default_rng(1), 4)
  np.testing.assert_allclose(jax.jit(box_iou)(a, jnp.asarray(a[::-1])), loop_iou(a, a[::-1]),
                             rtol=1e-6)


def test_clip_boxes_clamps_x_to_width_and_y_to_height():
  boxes = np.array([[-5, -3, 50, 40], [10, 20, 30, 35], [120, 90, 130, 95]], np.float32)
  expected = [[0, 0, 50, 30], [10, 20, 30, 30], [64, 30, 64, 30]]
  got = clip_boxes(boxes, (30, 64))
  assert isinstance(got, np.ndarray) and got.dtype == np.float32
  np.testing.assert_array_equal(got, expected)
  # Inside jit the image size may be traced (per-image sizes of a padded batch).
  clip = jax.jit(jax.vmap(clip_boxes))
  got = clip(jnp.stack([boxes, boxes]), (jnp.array([30, 1000]), jnp.array([64, 1000])))
  np.testing.assert_array_equal(got[0], expected)
  np.testing.assert_array_equal(got[1], np.maximum(boxes, 0))


def test_flip_boxes_mirrors_x_within_the_width():
  boxes = np.array([[10, 20, 30, 35], [0, 0, 64, 5]], np.float32)
  got = flip_boxes(boxes, 64)
  assert isinstance(got, np.ndarray) and got.dtype == np.float32
  np.testing.assert_array_equal(got, [[34, 20, 54, 35], [0, 0, 64, 5]])
  np.testing.assert_array_equal(flip_boxes(got, 64), boxes)
  # Per-image widths inside jit (a padded batch).
  got = jax.jit(flip_boxes)(jnp.stack([boxes, boxes]), jnp.array([[64.0], [100.0]]))
  np.testing.assert_array_equal(got[1], [[70, 20, 90, 35], [36, 0, 100, 5]])


def test_encode_one_box_by_hand():
  # Anchor centre (20, 40), size 20 x 40; box centre (25, 30), size 40 x 10.
  anchor = np.array([[10, 20, 30, 60]], np.float32)
  box = np.array([[5, 25, 45, 35]], np.float32)
  expected = [5 / 20, -10 / 40, math.log(2), math.log(0.25)]
  np.testing.assert_allclose(encode_boxes(box, anchor)[0], expected, rtol=1e-6)
  np.testing.assert_allclose(encode_boxes(box, anchor, DETECTOR_WEIGHTS)[0],
                             np.multiply(expected, [10, 10, 5, 5]), rtol=1e-6)


@pytest.mark.parametrize("weights", [RPN_WEIGHTS, DETECTOR_WEIGHTS, (2.0, 3.0, 0.5, 4.0)])
def test_decode_inverts_encode(weights):
  rng = np.random.default_rng(2)
  boxes, reference = random_boxes(rng, 50), random_boxes(rng, 50)
  deltas = encode_boxes(jnp.asarray(boxes), jnp.asarray(reference), weights)
  np.testing.assert_allclose(decode_boxes(deltas, jnp.asarray(reference), weights), boxes,
                             rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(decode_boxes(encode_boxes(boxes, reference, weights), reference,
                                          weights), boxes, rtol=1e-5, atol=1e-3)


def test_decode_clamps_size_deltas_at_log_1000_over_16():
  reference = np.array([[0, 0, 10, 20]], np.float32)
  for weights in (RPN_WEIGHTS, DETECTOR_WEIGHTS):
    deltas = np.array([[0, 0, 100.0, 100.0]], np.float32)
    box = decode_boxes(deltas, reference, weights)[0]
    np.testing.assert_allclose(box[2] - box[0], 10 * 1000 / 16, rtol=1e-5)
    np.testing.assert_allclose(box[3] - box[1], 20 * 1000 / 16, rtol=1e-5)
    assert np.allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [5, 10])
  assert BBOX_XFORM_CLIP == pytest.approx(math.log(62.5))
  # Shrinking is not clamped.
  box = decode_boxes(np.array([[0, 0, -3.0, 0]], np.float32), reference)[0]
  np.testing.assert_allclose(box[2] - box[0], 10 * math.exp(-3), rtol=1e-5)


def test_decode_class_specific_deltas_broadcast_over_reference():
  rng = np.random.default_rng(3)
  reference = random_boxes(rng, 6)
  deltas = rng.normal(size=(6, 5, 4)).astype(np.float32)  # [N, K, 4] from [N, K * 4]
  got = decode_boxes(jnp.asarray(deltas), jnp.asarray(reference)[:, None], DETECTOR_WEIGHTS)
  assert got.shape == (6, 5, 4)
  for k in range(5):
    np.testing.assert_allclose(got[:, k], decode_boxes(deltas[:, k], reference, DETECTOR_WEIGHTS),
                               rtol=1e-6, atol=1e-4)


def test_coder_jits_and_vmaps_over_a_batch():
  rng = np.random.default_rng(4)
  boxes, reference = random_boxes(rng, 24).reshape(3, 8, 4), random_boxes(rng, 24).reshape(3, 8, 4)
  encode = jax.jit(jax.vmap(lambda b, r: encode_boxes(b, r, DETECTOR_WEIGHTS)))
  got = encode(jnp.asarray(boxes), jnp.asarray(reference))
  for i in range(3):
    np.testing.assert_allclose(got[i], encode_boxes(boxes[i], reference[i], DETECTOR_WEIGHTS),
                               rtol=1e-5, atol=1e-5)
