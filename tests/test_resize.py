"""Resampling of padded batches with per-image sizes (overfeat_jax/ops/resize.py) against jax.image on
each image cut to its own size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from overfeat_jax.ops import resize

SIZES = np.array([[13, 25], [20, 11], [7, 30]])


def padded_batch(seed: int = 0, loud: float = 100.0) -> tuple[np.ndarray, list[np.ndarray]]:
  """Three images of SIZES in a [3, 20, 30, 3] canvas whose padding holds a loud value."""
  rng = np.random.default_rng(seed)
  canvas = np.full((3, 20, 30, 3), loud, np.float32)
  images = []
  for b, (h, w) in enumerate(SIZES):
    images.append(rng.normal(size=(h, w, 3)).astype(np.float32))
    canvas[b, :h, :w] = images[-1]
  return canvas, images


def test_resize_into_equals_jax_resize_of_each_image():
  canvas, images = padded_batch()
  new = np.array([[7, 14], [31, 17], [16, 32]])  # shrink, enlarge, mixed
  out = np.asarray(jax.jit(resize.resize_into, static_argnums=3)(canvas, SIZES, new, (32, 33)))
  assert out.shape == (3, 32, 33, 3)
  for b, image in enumerate(images):
    h, w = new[b]
    ref = jax.image.resize(image, (h, w, 3), "linear")  # antialiased when shrinking
    np.testing.assert_allclose(out[b, :h, :w], ref, atol=2e-5)
    assert not out[b, h:].any() and not out[b, :, w:].any()  # exact zeros: the padding never leaks


def test_resample_window_equals_scale_and_translate():
  canvas, images = padded_batch(seed=1)
  scale = np.array([[0.7, 0.9], [1.3, 1.1], [2.0, 0.5]], np.float32)
  offset = np.array([[2, 3], [5, 1], [1.5, 0]], np.float32)
  out = np.asarray(jax.jit(lambda x: resize.resample(
      x, image_hw=SIZES, scale_hw=scale, offset_hw=offset, out_shape=(6, 7)))(canvas))
  window = jax.jit(jax.image.scale_and_translate, static_argnums=(1, 2, 5))
  for b, image in enumerate(images):
    ref = window(image, (6, 7, 3), (0, 1), scale[b], -offset[b], "linear")
    np.testing.assert_allclose(out[b], ref, atol=2e-5)


def test_identity_resample_is_exact():
  canvas, _ = padded_batch(seed=2)
  out = jax.jit(resize.resize_into, static_argnums=3)(canvas, SIZES, SIZES, (20, 30))
  np.testing.assert_allclose(out, canvas * np.asarray(resize.pixel_mask(SIZES, (20, 30)))[..., None],
                             atol=1e-6)


def test_flip_valid_and_pixel_mask():
  canvas, images = padded_batch(seed=3)
  flipped = np.asarray(resize.flip_valid(jnp.asarray(canvas), SIZES))
  mask = np.asarray(resize.pixel_mask(SIZES, (20, 30)))
  for b, (h, w) in enumerate(SIZES):
    np.testing.assert_array_equal(flipped[b, :h, :w], images[b][:, ::-1])
    np.testing.assert_array_equal(flipped[b, :, w:], canvas[b, :, w:])  # padding stays right
    assert mask[b].sum() == h * w and mask[b, :h, :w].all()
