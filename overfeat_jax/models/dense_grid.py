"""The dense grid of an OverFeat network over padded images at one scale (SPEC A4, A6).

Shared by classification evaluation and the detectors: for a batch of padded canvases, each holding
a whole image in its top-left corner, it gives the class map, which positions count, and each
position's input window in the original image's pixels.

Fine stride (SPEC A4), per scale:
  images --features (once; flips in the same batch)--> pre-pool map [B, h, w, C]
         --offset_max_pool--> [P*P, B, n_h, n_w, C]
         --classify, vmapped over the P*P offsets--> [P*P, B, h', w', K]
         --interleave_offsets--> [B, h' * P, w' * P, K]
Output cell u of the interleaved map sees the input window [u * s, u * s + fov) on each axis, s =
arch.prepool_stride (the coarse map: s = arch.coarse_stride), fov = arch.train_size.

Any other head on the pooled map (the box regressor of SPEC A5, `models.heads`) runs in the same
pass: `offset_heads` applies one function of the pooled map, returning the class logits and the
regressor's outputs together, at every offset, and interleaves each of its outputs, so every
fine-grid window has its logits and its box (`regressed_boxes`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from overfeat_jax.errors import InputSizeError
from overfeat_jax.models.heads import class_edges
from overfeat_jax.models.overfeat import OverFeat
from overfeat_jax.ops import pooling, resize
from overfeat_jax.ops.edges import decode_edges

# A head on the pooled map: [B, n_h, n_w, C] -> a pytree of maps [B, h', w', R] (h' = n_h - fc_kernel + 1).
Head = Callable[[jax.Array], Any]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DenseGrid:
  """The grid of one scale: per position the logits, whether it counts, and its window.

  Attributes:
    logits: float32 [B, H', W', K].
    valid: bool [B, H', W']: the position's window lies mostly (> 50% of its area) on the image
      rather than the padding (at least one position per image: see `window_geometry`).
    boxes: float32 [B, H', W', 4] (x1, y1, x2, y2), the window in original-image pixels
      (continuous; a window reaching into the padding reaches past the image's edge).
    regression: float32 [B, H', W', 4 or 4K], the box regressor's outputs at each position (box
      edges relative to the window, `ops.edges`), or None when no regressor ran.
  """

  logits: jax.Array
  valid: jax.Array
  boxes: jax.Array
  regression: jax.Array | None = None


def check_grid_size(model: OverFeat, hw: tuple[int, int]) -> None:
  """InputSizeError if an (h, w) input would leave some pooling offset no full classifier window."""
  h, w = hw
  need = model.arch.fine_min_size
  if h < need or w < need:
    raise InputSizeError(
        f"a {h}x{w} image is too small for the fine-stride grid of the {model.arch.name} network: "
        f"every one of the {model.arch.last_pool}x{model.arch.last_pool} pooling offsets needs a "
        f"full field of view, i.e. at least {need}x{need} (field of view {model.arch.train_size}, "
        f"+ {model.arch.last_pool - 1} x stride {model.arch.prepool_stride})")


def offset_heads(prepool: jax.Array, pool: int, head: Head) -> Any:
  """Offset max-pooling, `head` at every offset (one vmap), each output interleaved (SPEC A4).

  Args:
    prepool: [B, h, w, C] the map before the last max-pool.
    pool: that pool's size (arch.last_pool).
    head: pooled map -> pytree of maps [B, h', w', R] (the classifier, a regressor, or both).
  Returns:
    head's pytree with each map [B, h' * P, w' * P, R]: cell u sees the window of `window_geometry`
    with stride arch.prepool_stride.
  """
  pooled = pooling.offset_max_pool(prepool, pool)  # [P*P, B, n_h, n_w, C]
  per_offset = jax.vmap(head)(pooled)  # leaves [P*P, B, h', w', R]
  return jax.tree.map(lambda maps: pooling.interleave_offsets(maps, pool), per_offset)


def fine_map_from_features(model: OverFeat, variables, prepool: jax.Array) -> jax.Array:
  """Offset pooling + classifier per offset + interleave: [B, h, w, C] -> [B, h'P, w'P, K]."""
  return offset_heads(prepool, model.arch.last_pool,
                      lambda p: model.apply(variables, p, method="classify"))


def coarse_map_from_features(model: OverFeat, variables, prepool: jax.Array) -> jax.Array:
  """The last pool at offset 0 only + classifier: [B, h, w, C] -> [B, h', w', K] (= class_map)."""
  pooled = pooling.max_pool(prepool, model.arch.last_pool)
  return model.apply(variables, pooled, method="classify")


def dense_class_map(model: OverFeat, variables, images: jax.Array, *, fine: bool) -> jax.Array:
  """Class logits at every position of a (large) image.

  Args:
    model: the OverFeat module; variables: its variables ({'params': ...}).
    images: [B, H, W, 3], H and W at least the field of view (fine: at least arch.fine_min_size).
    fine: True = offset max-pooling, output stride arch.prepool_stride (SPEC A4); False = the
      network's coarse stride (arch.coarse_stride).
  Returns:
    float32 [B, H', W', K] logits. Fine: cell u sees the input window [u * prepool_stride,
    u * prepool_stride + field of view) on each axis.
  """
  if not fine:
    return model.apply(variables, images, method="class_map")
  check_grid_size(model, images.shape[1:3])
  prepool = model.apply(variables, images, method="features")  # once, never per offset
  return fine_map_from_features(model, variables, prepool)


def window_geometry(map_hw: tuple[int, int], *, stride: int, fov: int, image_hw: jax.Array,
                    original_hw: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Which positions of a dense map count, and their windows in original-image pixels.

  Position (u, v) sees the window rows [u * stride, u * stride + fov), columns likewise, of a canvas
  whose image fills [0, h) x [0, w). It counts when more than half of the window's fov^2 pixels are
  image pixels. An image with no such position (only possible when it is smaller than the field of
  view in some direction, e.g. a 1:8 strip shrunk to fit its bucket) keeps position (0, 0): the
  window holding the largest part of it (the overlap never grows with u or v).

  Args:
    map_hw: (H', W') of the map, static.
    stride, fov: input pixels between positions, and the window side.
    image_hw: int [B, 2] (h, w) of each image in its canvas.
    original_hw: [B, 2] (h, w) of each image before resizing.
  Returns:
    valid: bool [B, H', W']; boxes: float32 [B, H', W', 4] (x1, y1, x2, y2) original pixels, the
    canvas window scaled by original / image size per axis (not clipped to the image).
  """
  image_hw = jnp.asarray(image_hw, jnp.float32)
  starts = [jnp.arange(n, dtype=jnp.float32) * stride for n in map_hw]  # [H'], [W']
  inside_y = jnp.clip(image_hw[:, 0:1] - starts[0][None], 0, fov)  # [B, H'] window rows on the image
  inside_x = jnp.clip(image_hw[:, 1:2] - starts[1][None], 0, fov)  # [B, W']
  valid = 2 * inside_y[:, :, None] * inside_x[:, None, :] > fov * fov  # [B, H', W']
  valid = valid.at[:, 0, 0].set(valid[:, 0, 0] | ~valid.any(axis=(1, 2)))
  ratio = jnp.asarray(original_hw, jnp.float32) / image_hw  # [B, 2] original pixels per canvas pixel
  y = starts[0][None, :, None] * ratio[:, 0, None, None]  # [B, H', 1]
  x = starts[1][None, None, :] * ratio[:, 1, None, None]  # [B, 1, W']
  shape = valid.shape
  boxes = jnp.stack([jnp.broadcast_to(x, shape), jnp.broadcast_to(y, shape),
                     jnp.broadcast_to(x + fov * ratio[:, 1, None, None], shape),
                     jnp.broadcast_to(y + fov * ratio[:, 0, None, None], shape)], axis=-1)
  return valid, boxes


def grid_from_features(model: OverFeat, variables, prepool: jax.Array, *, image_hw: jax.Array,
                       original_hw: jax.Array, fine: bool = True,
                       regressor: Head | None = None) -> DenseGrid:
  """`dense_grid` from an already computed pre-pool map [B, h, w, C] (to share one feature pass
  between the fine and the coarse grid)."""
  arch = model.arch

  def heads(pooled: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    logits = model.apply(variables, pooled, method="classify")
    return logits, None if regressor is None else regressor(pooled)

  if fine:
    (logits, regression), stride = offset_heads(prepool, arch.last_pool, heads), arch.prepool_stride
  else:
    pooled = pooling.max_pool(prepool, arch.last_pool)
    (logits, regression), stride = heads(pooled), arch.coarse_stride
  valid, boxes = window_geometry(logits.shape[1:3], stride=stride, fov=arch.train_size,
                                 image_hw=image_hw, original_hw=original_hw)
  return DenseGrid(logits=logits, valid=valid, boxes=boxes, regression=regression)


def regressed_boxes(grid: DenseGrid, classes: jax.Array | None = None) -> jax.Array:
  """Each position's predicted box(es) in original-image pixels: its regressor outputs decoded
  against its window (`ops.edges.decode_edges`, `models.heads.class_edges`).

  Args:
    grid: a DenseGrid with a regression ([B, H', W', 4] SCR or [B, H', W', 4K] PCR).
    classes: None, or int [B, H', W'] one class per position.
  Returns:
    classes None: float32 [B, H', W', 1, 4] (SCR) or [B, H', W', K, 4] (PCR, one box per class);
    classes given: [B, H', W', 4], that class's box.
  """
  if grid.regression is None:
    raise ValueError("regressed_boxes: this grid was computed without a regressor")
  edges = class_edges(grid.regression, classes)
  windows = grid.boxes if classes is not None else grid.boxes[..., None, :]
  return decode_edges(edges, windows)


def dense_grid(model: OverFeat, variables, images: jax.Array, *, image_hw: jax.Array,
               original_hw: jax.Array, fine: bool = True,
               regressor: Head | None = None) -> DenseGrid:
  """The dense grid of padded images at one scale (SPEC A4): the reusable core of evaluation.

  Args:
    model, variables: the OverFeat module and its variables.
    images: [B, H, W, 3] normalised canvases, image b in [0, h_b) x [0, w_b) (anything in the
      padding is replaced by zeros here), H and W at least arch.fine_min_size.
    image_hw: int [B, 2] (h_b, w_b).
    original_hw: [B, 2] the images' sizes before resizing (for the boxes).
    fine: offset max-pooling (stride arch.prepool_stride) or the coarse stride (arch.coarse_stride;
      then H and W need only be the field of view).
    regressor: optional head on the pooled map, [B, n_h, n_w, C] -> [B, h', w', R] (e.g. a
      `models.heads.BoxRegressor` applied with its parameters), run beside the classifier at every
      offset.
  Returns:
    DenseGrid: logits [B, H', W', K], valid [B, H', W'], boxes [B, H', W', 4] and, with a regressor,
    regression [B, H', W', R]. The feature extractor runs once; the pooling offsets are a vmap.
  """
  if fine:
    check_grid_size(model, images.shape[1:3])
  images = jnp.where(resize.pixel_mask(image_hw, images.shape[1:3])[..., None], images, 0)
  prepool = model.apply(variables, images, method="features")  # once, never per offset
  return grid_from_features(model, variables, prepool, image_hw=image_hw, original_hw=original_hw,
                            fine=fine, regressor=regressor)
