"""Feature layer N of the OverFeat extractor (SPEC A6): its output against a hand-chained computation,
and its geometry (stride, receptive field, origin) against hand-computed values and an impulse test."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.errors import ConfigError
from overfeat_jax.models.overfeat import (ACCURATE, FAST, OverFeat, build_architecture, feature_layer,
                                          layer_map_sizes)

# Quickstart-shaped (3x3/1 stem) at 1/32 width: field of view 58, a few thousand parameters.
TINY = build_architecture("fast", width=1 / 32, stem_kernel=3, stem_stride=1)
# 70x66 leaves no row or column to a floor pooling, so every pixel is seen by some cell.
H, W = 70, 66


def tiny_model_and_variables():
  model = OverFeat(TINY, num_classes=3, weight_init="he")
  s = TINY.train_size
  return model, model.init(jax.random.key(0), jnp.zeros((1, s, s, 3)), train=False)


# (index, name, stride, receptive field, origin), by hand: a conv adds (kernel - 1) * stride to the
# field and -padding * stride to the origin, then multiplies the stride; a pool adds (pool - 1) * stride
# and multiplies the stride; the last layer's pool is not applied.
FAST_LAYERS = [(1, "pool1", 8, 15, 0), (2, "pool2", 16, 55, 0), (3, "conv3", 16, 87, -16),
               (4, "conv4", 16, 119, -32), (5, "conv5", 16, 151, -48)]
ACCURATE_LAYERS = [(1, "pool1", 6, 11, 0), (2, "pool2", 12, 53, 0), (3, "conv3", 12, 77, -12),
                   (4, "conv4", 12, 101, -24), (5, "conv5", 12, 125, -36), (6, "conv6", 12, 149, -48)]


@pytest.mark.parametrize("arch, expected", [(FAST, FAST_LAYERS), (ACCURATE, ACCURATE_LAYERS)])
def test_paper_feature_layer_geometry(arch, expected):
  got = [feature_layer(arch, n) for n in range(1, len(arch.convs) + 1)]
  assert [(g.index, g.name, g.stride, g.receptive_field, g.origin) for g in got] == expected
  assert got[-1].stride == arch.prepool_stride  # the fine stride of SPEC A4 (16 fast, 12 accurate)


@pytest.mark.parametrize("bad", [0, 6, -1, 99, 2.0, "3"])
def test_a_layer_that_does_not_exist_names_the_valid_range(bad):
  with pytest.raises(ConfigError, match=r"layers 1\.\.5 \(conv1\.\.conv5\)"):
    feature_layer(TINY, bad)
  model, variables = tiny_model_and_variables()
  with pytest.raises(ConfigError, match=r"layers 1\.\.5"):
    model.apply(variables, jnp.zeros((1, H, W, 3)), bad, method="features")


def hand_chained(kernels_biases, image: np.ndarray, arch, n: int) -> np.ndarray:
  """Layers 1..n written out: lax conv + bias, ReLU, floor max-pool by reshaping (not the model's code)."""
  x = image
  for i, (layer, (kernel, bias)) in enumerate(zip(arch.convs[:n], kernels_biases)):
    p = layer.padding
    x = jax.lax.conv_general_dilated(x, kernel, (layer.stride, layer.stride), ((p, p), (p, p)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    x = np.maximum(np.asarray(x) + np.asarray(bias), 0.0)
    if layer.pool and i < len(arch.convs) - 1:
      q = layer.pool
      b, h, w, c = x.shape
      x = x[:, :h // q * q, :w // q * q].reshape(b, h // q, q, w // q, q, c).max(axis=(2, 4))
  return x


def test_layer_outputs_are_the_hand_chained_layers_and_the_default_is_unchanged():
  model, variables = tiny_model_and_variables()
  image = jax.random.normal(jax.random.key(1), (1, H, W, 3))
  convs = variables["params"]["extractor"]
  kernels_biases = [(convs[f"conv{i}"]["kernel"], convs[f"conv{i}"]["bias"]) for i in range(1, 6)]
  sizes = layer_map_sizes(TINY, H, W)
  for n in range(1, 6):
    out = model.apply(variables, image, n, method="features")
    geometry = feature_layer(TINY, n)
    assert out.shape == (1,) + sizes[geometry.name] + (TINY.convs[n - 1].features,)
    np.testing.assert_allclose(np.asarray(out), hand_chained(kernels_biases, image, TINY, n),
                               rtol=1e-5, atol=1e-5)
  default = model.apply(variables, image, method="features")
  np.testing.assert_array_equal(np.asarray(default),
                                np.asarray(model.apply(variables, image, 5, method="features")))


def test_receptive_field_by_impulse():
  """All-ones kernels and zero biases make every activation a positive sum of the input pixels it
  depends on: with a single lit pixel, exactly the cells whose receptive field holds it are nonzero."""
  model, variables = tiny_model_and_variables()
  ones = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.ones_like(a) if path[-1].key == "kernel" else jnp.zeros_like(a), variables)
  for n in range(1, 6):
    g = feature_layer(TINY, n)
    for y, x in [(0, 0), (33, 20), (H - 1, 40), (5, W - 1)]:
      image = np.zeros((1, H, W, 3), np.float32)
      image[0, y, x, 0] = 1.0
      lit = (np.asarray(model.apply(ones, image, n, method="features"))[0] > 0).any(axis=-1)  # [h, w]

      def seen(coordinate: int, cells: int) -> np.ndarray:
        start = g.origin + np.arange(cells) * g.stride
        return (start <= coordinate) & (coordinate < start + g.receptive_field)

      expected = seen(y, lit.shape[0])[:, None] & seen(x, lit.shape[1])[None, :]
      assert expected.any()
      np.testing.assert_array_equal(lit, expected, err_msg=f"layer {n}, pixel {(y, x)}")
