"""Resampling of padded image batches in which every image has its own size (SPEC A4 whole-image
evaluation; shared with the detectors).

A padded batch [B, H, W, C] holds image b in its top-left [0, h_b) x [0, w_b); the rest is padding,
whose values are never read. `resample` maps output pixel i (per axis) to the source coordinate

    (i + offset + 0.5) / scale - 0.5,

i.e. "resize the image by `scale`, then take the window starting at `offset`", with a bilinear
(triangle) kernel widened by 1 / scale when shrinking (antialiasing). It equals
`jax.image.scale_and_translate(image, ..., scale, -offset, method="linear", antialias=True)` applied
to each image cut to its own (h_b, w_b): the kernel is renormalised over the image's own pixels, so
padding never bleeds into the border. Scales and offsets are traced per example (one compiled
program for any mix of image sizes); only shapes are static.

This module knows nothing of models or configs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1000.0 * float(np.finfo(np.float32).eps)  # jax.image's threshold for "no weight at all"


def _axis_weights(in_size: int, out_size: int, valid_in: jax.Array, scale: jax.Array,
                  offset: jax.Array, valid_out: jax.Array) -> jax.Array:
  """Interpolation weights along one axis of one image: float32 [in_size, out_size].

  Column j is zero when output j >= valid_out or its source point lies outside [0, valid_in).
  """
  sample = (jnp.arange(out_size, dtype=jnp.float32) + offset + 0.5) / scale - 0.5  # [out]
  kernel_scale = jnp.maximum(1.0 / scale, 1.0)  # antialiasing when shrinking
  source = jnp.arange(in_size, dtype=jnp.float32)  # [in]
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(sample[None, :] - source[:, None]) / kernel_scale)
  weights = jnp.where((source < valid_in)[:, None], weights, 0.0)  # [in, out]
  total = weights.sum(axis=0, keepdims=True)
  weights = jnp.where(total > _EPS, weights / jnp.where(total > _EPS, total, 1.0), 0.0)
  inside = ((sample >= -0.5) & (sample <= valid_in - 0.5)
            & (jnp.arange(out_size) < valid_out))  # [out]
  return jnp.where(inside[None, :], weights, 0.0)


def resample(images: jax.Array, *, image_hw: jax.Array, scale_hw: jax.Array, offset_hw: jax.Array,
             out_shape: tuple[int, int], out_hw: jax.Array | None = None) -> jax.Array:
  """Per-image resize-and-window of a padded batch (module docstring).

  Args:
    images: [B, H, W, C] padded batch.
    image_hw: int [B, 2] (h, w) of each image inside its canvas.
    scale_hw: float [B, 2] resize factor per axis (output pixels per source pixel).
    offset_hw: float [B, 2] top-left of the output window in resized-image pixels.
    out_shape: (h_out, w_out), static.
    out_hw: int [B, 2] or None: output pixels at and beyond out_hw are zero (padding); None = none.
  Returns:
    float [B, h_out, w_out, C].
  """
  b, h, w, _ = images.shape
  h_out, w_out = out_shape
  if out_hw is None:
    out_hw = jnp.broadcast_to(jnp.asarray([h_out, w_out]), (b, 2))
  image_hw, scale_hw, offset_hw, out_hw = (
      jnp.asarray(a, jnp.float32) for a in (image_hw, scale_hw, offset_hw, out_hw))

  def one(image, size, scale, offset, out_size):  # image [H, W, C]
    wy = _axis_weights(h, h_out, size[0], scale[0], offset[0], out_size[0])  # [H, h_out]
    wx = _axis_weights(w, w_out, size[1], scale[1], offset[1], out_size[1])  # [W, w_out]
    return jnp.einsum("hwc,hy,wx->yxc", image, wy.astype(image.dtype), wx.astype(image.dtype),
                      precision=jax.lax.Precision.HIGHEST)

  return jax.vmap(one)(images, image_hw, scale_hw, offset_hw, out_hw)


def resize_into(images: jax.Array, image_hw: jax.Array, new_hw: jax.Array,
                out_shape: tuple[int, int]) -> jax.Array:
  """Each whole image resized to its new size, padded with zeros to `out_shape`.

  Args:
    images: [B, H, W, C] padded batch; image_hw: int [B, 2] sizes inside it.
    new_hw: int [B, 2] target sizes (<= out_shape).
    out_shape: (h_out, w_out), static.
  Returns:
    [B, h_out, w_out, C]: image b in [0, new_hw[b]), exact zeros elsewhere.
  """
  scale = jnp.asarray(new_hw, jnp.float32) / jnp.asarray(image_hw, jnp.float32)
  return resample(images, image_hw=image_hw, scale_hw=scale, offset_hw=jnp.zeros_like(scale),
                  out_shape=out_shape, out_hw=new_hw)


def flip_valid(images: jax.Array, image_hw: jax.Array) -> jax.Array:
  """Horizontal flip of each image within its own width; the padding stays on the right.

  images [B, H, W, C], image_hw int [B, 2] -> [B, H, W, C].
  """
  cols = jnp.arange(images.shape[2])[None, :]  # [1, W]
  width = jnp.asarray(image_hw)[:, 1:2]  # [B, 1]
  source = jnp.where(cols < width, width - 1 - cols, cols)  # [B, W]
  return jnp.take_along_axis(images, source[:, None, :, None], axis=2)


def pixel_mask(image_hw: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """bool [B, h, w]: True on each image's own pixels, False on the padding.

  image_hw: int [B, 2]; shape: the canvas (h, w).
  """
  image_hw = jnp.asarray(image_hw)
  rows = jnp.arange(shape[0])[None, :, None] < image_hw[:, 0, None, None]  # [B, h, 1]
  cols = jnp.arange(shape[1])[None, None, :] < image_hw[:, 1, None, None]  # [B, 1, w]
  return rows & cols
