"""The detection ops against torchvision's own outputs on the same inputs.

tests/fixtures/torchvision_ops.npz was written by tests/fixtures/make_torchvision_fixtures.py
(torch 2.14.1, torchvision 0.29.1, CPU); these tests need neither.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import (DETECTOR_WEIGHTS, PAD_INDEX, RPN_WEIGHTS, anchors, batched_nms,
                              box_iou, decode_boxes, encode_boxes, nms, roi_align, roi_pool)

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "torchvision_ops.npz"
WEIGHTS = {"w1": RPN_WEIGHTS, "w10": DETECTOR_WEIGHTS}


@pytest.fixture(scope="module")
def tv() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as data:
    return dict(data)


def test_box_iou(tv):
  got = box_iou(jnp.asarray(tv["iou_boxes1"]), jnp.asarray(tv["iou_boxes2"]))
  np.testing.assert_allclose(got, tv["iou"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(box_iou(tv["iou_boxes1"], tv["iou_boxes2"]), tv["iou"], rtol=1e-6)


@pytest.mark.parametrize("name", ["w1", "w10"])
def test_box_coder(tv, name):
  encoded = encode_boxes(jnp.asarray(tv["coder_boxes"]), jnp.asarray(tv["coder_reference"]),
                         WEIGHTS[name])
  np.testing.assert_allclose(encoded, tv[f"encode_{name}"], rtol=1e-5, atol=1e-5)
  decoded = decode_boxes(jnp.asarray(tv["coder_deltas"]), jnp.asarray(tv["coder_reference"]),
                         WEIGHTS[name])
  np.testing.assert_allclose(decoded, tv[f"decode_{name}"], rtol=1e-6, atol=1e-3)
  # The first 8 deltas are clamped: far larger boxes would come out without the clamp.
  assert np.abs(tv[f"decode_{name}"][:8]).max() < 1e6


@pytest.mark.parametrize("threshold", [5, 7])
def test_nms_and_batched_nms(tv, threshold):
  boxes, scores = tv["nms_boxes"], tv["nms_scores"]
  assert len(np.unique(scores)) < 30  # many ties among 400 scores
  expected = tv[f"nms_keep_{threshold}"]
  got = jax.jit(nms, static_argnums=3)(boxes, scores, threshold / 10, 400)
  np.testing.assert_array_equal(got, expected)
  kept = int((expected != PAD_INDEX).sum())
  np.testing.assert_array_equal(nms(boxes, scores, threshold / 10, 50), expected[:50])
  assert 50 < kept < 400
  got = batched_nms(boxes, scores, tv["nms_classes"], threshold / 10, 400)
  np.testing.assert_array_equal(got, tv[f"batched_nms_keep_{threshold}"])


def roi_outputs_and_feature_grads(tv, op, **kwargs):
  def loss(features):
    out = op(features, jnp.asarray(tv["roi_boxes"]), (3, 4), 0.125, **kwargs)
    return jnp.sum(out * tv["roi_cotangent"]), out

  grad, out = jax.jit(jax.grad(loss, has_aux=True))(jnp.asarray(tv["roi_features"]))
  return np.asarray(out), np.asarray(grad)


def test_roi_pool(tv):
  out, grad = roi_outputs_and_feature_grads(tv, roi_pool)
  np.testing.assert_array_equal(out, tv["roi_pool"])
  np.testing.assert_allclose(grad, tv["roi_pool_grad"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_roi_align(tv, aligned, sampling_ratio):
  out, grad = roi_outputs_and_feature_grads(tv, roi_align, sampling_ratio=sampling_ratio,
                                            aligned=aligned)
  name = f"roi_align_{'aligned' if aligned else 'legacy'}_{'adaptive' if sampling_ratio < 0 else 2}"
  np.testing.assert_allclose(out, tv[name], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, tv[f"{name}_grad"], rtol=1e-5, atol=1e-5)


def test_anchor_generator(tv):
  expected = tv["anchors_5x7_s16"]
  np.testing.assert_array_equal(anchors((5, 7), 16, (32, 64), (0.5, 1.0, 2.0)), expected)
