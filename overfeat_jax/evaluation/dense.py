"""Dense multi-scale classification of whole images with offset max-pooling (SPEC A4), as pure
jit-able functions.

The input of an evaluation step is a batch of one shape bucket (`overfeat_jax.data.buckets`): each
image resized as a whole (aspect kept) and padded at the bottom and right into the bucket's canvas
[B, Hc, Wc, 3] (normalised; zeros in the padding), with its size in the canvas and its original size.
Every view is derived from it on device, with static shapes per bucket (one compiled program each):
- a test scale: the whole image resized by that scale's factor (`buckets.scaled_size`) into the
  bucket's canvas at that scale; the dense grid's positions whose window lies mostly on the padding
  are left out of the spatial max (`models.dense_grid`);
- the centre crop and the 10 views: crops of the image resized so its short side is
  eval.resize_short, always inside the image.
No view of a test scale is a crop: the whole image is seen at every scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from overfeat_jax.data import buckets
from overfeat_jax.models import dense_grid
from overfeat_jax.models.overfeat import OverFeat
from overfeat_jax.ops import resize

# Rows of the paper's Table 2 layout, in print order (SPEC A4).
ROW_CENTRE = "centre crop"
ROW_TEN_VIEWS = "10 views"
ROW_COARSE = "1 scale, coarse stride"
ROW_FINE = "1 scale, fine stride"
ROW_MULTI = "N scales, fine stride"
ROW_MULTI_FLIP = "N scales, fine stride, flips"
ROWS = (ROW_CENTRE, ROW_TEN_VIEWS, ROW_COARSE, ROW_FINE, ROW_MULTI, ROW_MULTI_FLIP)

# Order of `ten_views`: the 5 crops, then the same 5 crops flipped horizontally.
VIEW_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")
CENTRE_VIEW = VIEW_NAMES.index("centre")


def _view_offsets(resized_hw: jax.Array, crop: int, names: tuple[str, ...]) -> jax.Array:
  """Top-left corners of the named crops in the resized images: [len(names), B, 2] float32."""
  rh, rw = resized_hw[:, 0], resized_hw[:, 1]
  zero = jnp.zeros_like(rh)
  corners = {
      "top-left": (zero, zero), "top-right": (zero, rw - crop), "bottom-left": (rh - crop, zero),
      "bottom-right": (rh - crop, rw - crop), "centre": ((rh - crop) // 2, (rw - crop) // 2)}
  return jnp.stack([jnp.stack(corners[name], axis=-1) for name in names]).astype(jnp.float32)


def crop_views(canvas: jax.Array, *, image_hw: jax.Array, original_hw: jax.Array,
               resize_short: int, crop: int, names: tuple[str, ...] = VIEW_NAMES) -> jax.Array:
  """Crops of each image resized (aspect kept) so that its short side is `resize_short` (SPEC A3).

  Args:
    canvas: [B, Hc, Wc, 3] padded batch; image_hw: int [B, 2] the images' sizes in it.
    original_hw: [B, 2] the images' original sizes (the resize is defined on them).
    resize_short, crop: the short side, and the square crop's side (<= resize_short).
    names: which crops, from VIEW_NAMES.
  Returns:
    [len(names), B, crop, crop, 3], every crop inside the image (never the padding).
  """
  resized = buckets.short_side_size(original_hw, resize_short, crop, xp=jnp)  # [B, 2]
  scale = resized / jnp.asarray(image_hw, jnp.float32)  # resized pixels per canvas pixel
  return jax.vmap(lambda offset: resize.resample(
      canvas, image_hw=image_hw, scale_hw=scale, offset_hw=offset, out_shape=(crop, crop)))(
          _view_offsets(resized, crop, names))


def crop_windows(*, original_hw: jax.Array, resize_short: int, crop: int,
                 names: tuple[str, ...] = VIEW_NAMES) -> jax.Array:
  """Where the crops of `crop_views` lie in the original images: float32 [len(names), B, 4] boxes
  (x1, y1, x2, y2) in original-image pixels (a crop's network-input window, for its predictions).

  original_hw: [B, 2] the images' original sizes; resize_short, crop, names: as `crop_views`.
  """
  resized = buckets.short_side_size(original_hw, resize_short, crop, xp=jnp)  # [B, 2]
  ratio = jnp.asarray(original_hw, jnp.float32) / resized  # original pixels per resized pixel
  top_left = _view_offsets(resized, crop, names) * ratio  # [V, B, 2] (y, x)
  bottom_right = (_view_offsets(resized, crop, names) + crop) * ratio
  return jnp.stack([top_left[..., 1], top_left[..., 0], bottom_right[..., 1], bottom_right[..., 0]],
                   axis=-1)


def centre_crop_view(canvas: jax.Array, *, image_hw: jax.Array, original_hw: jax.Array,
                     resize_short: int, crop: int) -> jax.Array:
  """The training-protocol view: short side resized to `resize_short`, centre crop x crop.

  [B, Hc, Wc, 3] -> [B, crop, crop, 3] (equal to ten_views(...)[CENTRE_VIEW]); see `crop_views`.
  """
  return crop_views(canvas, image_hw=image_hw, original_hw=original_hw, resize_short=resize_short,
                    crop=crop, names=("centre",))[0]


def ten_views(canvas: jax.Array, *, image_hw: jax.Array, original_hw: jax.Array,
              resize_short: int, crop: int) -> jax.Array:
  """4 corner crops + the centre crop, and each of them flipped horizontally (Krizhevsky's views).

  [B, Hc, Wc, 3] -> [10, B, crop, crop, 3]; views 0-4 in VIEW_NAMES order, views 5-9 the same
  crops mirrored left-right (see `crop_views`).
  """
  crops = crop_views(canvas, image_hw=image_hw, original_hw=original_hw,
                     resize_short=resize_short, crop=crop)  # [5, B, c, c, 3]
  return jnp.concatenate([crops, crops[:, :, :, ::-1, :]], axis=0)


def scale_images(canvas: jax.Array, *, image_hw: jax.Array, original_hw: jax.Array,
                 scale: tuple[int, int], bucket: buckets.Bucket) -> tuple[jax.Array, jax.Array]:
  """The whole images at a test scale, in their bucket's canvas at that scale.

  Args:
    canvas: [B, Hc, Wc, 3] padded batch of `bucket`; image_hw: int [B, 2] sizes in it.
    original_hw: [B, 2] original sizes; the scale's factor is defined on them.
    scale: (H, W) of config.eval.scales (its meaning: `overfeat_jax.data.buckets`).
  Returns:
    images [B, h, w, 3] with (h, w) = bucket.canvas(scale), zeros in the padding, and their sizes
    int32 [B, 2].
  """
  shape = bucket.canvas(scale)
  new_hw = buckets.scaled_size(original_hw, scale, shape, xp=jnp)  # [B, 2]
  return resize.resize_into(canvas, image_hw, new_hw, shape), new_hw


def class_scores(class_map: jax.Array, reduce: str = "max", valid: jax.Array | None = None
                 ) -> jax.Array:
  """Softmax at each position, then one score per class over the positions that count.

  Args:
    class_map: [B, H', W', K] logits.
    reduce: 'max' (the paper's spatial max) or 'mean'.
    valid: bool [B, H', W'] positions to use (at least one per image), or None for all.
  Returns:
    float32 [B, K].
  """
  probs = jax.nn.softmax(class_map.astype(jnp.float32), axis=-1)  # [B, H', W', K]
  if valid is None:
    valid = jnp.ones(probs.shape[:3], bool)
  probs = jnp.where(valid[..., None], probs, 0.0)  # probabilities are >= 0: zeros never win a max
  if reduce == "max":
    return probs.max(axis=(1, 2))
  return probs.sum(axis=(1, 2)) / valid.sum(axis=(1, 2))[:, None]


def evaluate_views(model: OverFeat, variables, canvas: jax.Array,
                   eval_cfg: ml_collections.ConfigDict, *, image_hw: jax.Array,
                   original_hw: jax.Array, bucket: buckets.Bucket, crop_size: int,
                   resize_short: int) -> dict[str, jax.Array]:
  """Scores of every row of the paper's Table 2 layout (SPEC A4) for one batch of one bucket.

  Args:
    model, variables: the OverFeat module and its variables.
    canvas: [B, Hc, Wc, 3] normalised images, each whole in the top-left corner of `bucket`'s
      canvas; all views are derived from it.
    eval_cfg: config.eval (scales, single_scale, multi_scales, spatial_reduce).
    image_hw: int [B, 2] the images' sizes in `canvas`; original_hw: [B, 2] their original sizes.
    bucket: the batch's shape bucket (static: the canvas shape of every scale follows from it).
    crop_size: the crop of the centre-crop / 10-view rows (the training size).
    resize_short: short side before those crops.
  Returns:
    {row: float32 [B, K] scores} for every name in ROWS; probabilities averaged over views, scales
    and flips (per scale: softmax per position, then eval_cfg.spatial_reduce over the positions
    whose window is mostly on the image).
  Work: the feature extractor runs once for the 10 views (the centre crop is view CENTRE_VIEW) and
  once per distinct test scale, with the flipped copy in the same batch; the single-scale fine row
  is shared with the multi-scale rows, and the coarse row reuses the same pre-pool map.
  """
  scales = [(int(h), int(w)) for h, w in eval_cfg.scales]
  single = int(eval_cfg.single_scale)
  multi = tuple(int(i) for i in eval_cfg.multi_scales)
  reduce = eval_cfg.spatial_reduce
  b = canvas.shape[0]
  rows: dict[str, jax.Array] = {}

  # Rows 1-2: one batched pass over the 10 crops. class_map + reduce equals softmax(logits) when
  # the crop is the training size (1x1 map) and still works for a slightly larger crop.
  views = ten_views(canvas, image_hw=image_hw, original_hw=original_hw,
                    resize_short=resize_short, crop=crop_size)  # [10, B, c, c, 3]
  view_maps = model.apply(variables, views.reshape((10 * b,) + views.shape[2:]),
                          method="class_map")
  view_probs = class_scores(view_maps, reduce).reshape(10, b, -1)  # [10, B, K]
  rows[ROW_CENTRE] = view_probs[CENTRE_VIEW]
  rows[ROW_TEN_VIEWS] = view_probs.mean(axis=0)

  # Rows 3-6: the dense grid of the whole image, one feature pass per distinct scale (SPEC A4).
  fine_plain, fine_flipped = {}, {}
  for index in sorted(set(multi) | {single}):
    # Every image covers the scale's S x L box (but over-elongated ones, shrunk to fit).
    dense_grid.check_grid_size(model, buckets.box_sides(scales[index]))
    images, hw = scale_images(canvas, image_hw=image_hw, original_hw=original_hw,
                              scale=scales[index], bucket=bucket)  # [B, h, w, 3], [B, 2]
    flips = index in multi  # only the multi-scale rows use flips
    if flips:  # [2B, h, w, 3]: the mirrored images in the same batch, padding still bottom-right
      images = jnp.concatenate([images, resize.flip_valid(images, hw)])
    prepool = model.apply(variables, images, method="features")
    grid = dense_grid.grid_from_features(
        model, variables, prepool, image_hw=jnp.tile(hw, (len(images) // b, 1)),
        original_hw=jnp.tile(original_hw, (len(images) // b, 1)))
    scores = class_scores(grid.logits, reduce, grid.valid)
    fine_plain[index] = scores[:b]
    if flips:
      fine_flipped[index] = scores[b:]
    if index == single:
      coarse = dense_grid.grid_from_features(model, variables, prepool[:b], image_hw=hw,
                                             original_hw=original_hw, fine=False)
      rows[ROW_COARSE] = class_scores(coarse.logits, reduce, coarse.valid)
  rows[ROW_FINE] = fine_plain[single]
  rows[ROW_MULTI] = jnp.mean(jnp.stack([fine_plain[i] for i in multi]), axis=0)
  rows[ROW_MULTI_FLIP] = jnp.mean(
      jnp.stack([fine_plain[i] for i in multi] + [fine_flipped[i] for i in multi]), axis=0)
  return {row: rows[row] for row in ROWS}
