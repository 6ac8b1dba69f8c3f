"""Dense multi-scale classification with offset max-pooling (SPEC A4), as pure jit-able functions.

The input of an evaluation step is a fixed "canvas" batch [B, Hc, Wc, 3] (already normalised); every
view — crops, test scales, flips — is derived from it on device with static shapes, so the whole
evaluation of a batch is one function that a caller can jit over a device mesh.

Fine stride (SPEC A4), per scale:
  images --features (once; flips in the same batch)--> pre-pool map [B', h, w, C]
         --offset_max_pool--> [P*P, B', n_h, n_w, C]
         --classify, vmapped over the P*P offsets--> [P*P, B', h', w', K]
         --interleave_offsets--> [B', h' * P, w' * P, K]
Output cell u of the interleaved map sees the input window starting at u * arch.prepool_stride.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from overfeat_jax.errors import InputSizeError
from overfeat_jax.models.overfeat import OverFeat
from overfeat_jax.ops import pooling

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


def _resize(images: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear (antialiased when shrinking) resize of [B, H, W, C] to [B, height, width, C]."""
  b, h, w, c = images.shape
  if (h, w) == (height, width):
    return images
  return jax.image.resize(images, (b, height, width, c), method="linear").astype(images.dtype)


def _crop(images: jax.Array, top: int, left: int, height: int, width: int) -> jax.Array:
  """Static crop of [B, H, W, C] -> [B, height, width, C]."""
  return images[:, top:top + height, left:left + width, :]


def resize_to_cover(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Aspect-preserving resize so the images cover `size`, then a centre crop to exactly `size`.

  Args:
    images: [B, Hc, Wc, 3] canvases.
    size: (h, w) target.
  Returns:
    [B, h, w, 3].
  """
  _, hc, wc, _ = images.shape
  h, w = (int(s) for s in size)
  scale = max(h / hc, w / wc)
  new_h, new_w = max(h, round(hc * scale)), max(w, round(wc * scale))
  resized = _resize(images, new_h, new_w)
  return _crop(resized, (new_h - h) // 2, (new_w - w) // 2, h, w)


def _resize_short_side(canvas: jax.Array, resize_short: int, crop: int) -> jax.Array:
  """Aspect-preserving resize of [B, Hc, Wc, 3] so the short side is `resize_short`."""
  _, hc, wc, _ = canvas.shape
  scale = resize_short / min(hc, wc)
  new_h, new_w = max(resize_short, round(hc * scale)), max(resize_short, round(wc * scale))
  return _resize(canvas, new_h, new_w)


def _five_crops(resized: jax.Array, crop: int) -> jax.Array:
  """[B, H, W, 3] -> [5, B, crop, crop, 3] in VIEW_NAMES order."""
  _, h, w, _ = resized.shape
  corners = {
      "top-left": (0, 0), "top-right": (0, w - crop), "bottom-left": (h - crop, 0),
      "bottom-right": (h - crop, w - crop), "centre": ((h - crop) // 2, (w - crop) // 2)}
  return jnp.stack([_crop(resized, *corners[name], crop, crop) for name in VIEW_NAMES])


def centre_crop_view(canvas: jax.Array, resize_short: int, crop: int) -> jax.Array:
  """The training-protocol view: short side resized to `resize_short`, centre crop x crop.

  canvas: [B, Hc, Wc, 3] -> [B, crop, crop, 3] (equal to ten_views(...)[CENTRE_VIEW]).
  """
  resized = _resize_short_side(canvas, resize_short, crop)
  _, h, w, _ = resized.shape
  return _crop(resized, (h - crop) // 2, (w - crop) // 2, crop, crop)


def ten_views(canvas: jax.Array, resize_short: int, crop: int) -> jax.Array:
  """4 corner crops + the centre crop, and each of them flipped horizontally (Krizhevsky's views).

  canvas: [B, Hc, Wc, 3] -> [10, B, crop, crop, 3]; views 0-4 in VIEW_NAMES order, views 5-9 the
  same crops mirrored left-right.
  """
  crops = _five_crops(_resize_short_side(canvas, resize_short, crop), crop)  # [5, B, c, c, 3]
  return jnp.concatenate([crops, crops[:, :, :, ::-1, :]], axis=0)


def _check_fine_size(model: OverFeat, images: jax.Array) -> None:
  """InputSizeError if some pooling offset would leave no full classifier window."""
  _, h, w, _ = images.shape
  need = model.arch.fine_min_size
  if h < need or w < need:
    raise InputSizeError(
        f"a {h}x{w} image is too small for the fine-stride grid of the {model.arch.name} network: "
        f"every one of the {model.arch.last_pool}x{model.arch.last_pool} pooling offsets needs a "
        f"full field of view, i.e. at least {need}x{need} (field of view {model.arch.train_size}, "
        f"+ {model.arch.last_pool - 1} x stride {model.arch.prepool_stride})")


def _fine_map_from_features(model: OverFeat, variables, prepool: jax.Array) -> jax.Array:
  """Offset pooling + classifier per offset + interleave: [B, h, w, C] -> [B, h'P, w'P, K]."""
  pool = model.arch.last_pool
  pooled = pooling.offset_max_pool(prepool, pool)  # [P*P, B, n_h, n_w, C]
  per_offset = jax.vmap(lambda p: model.apply(variables, p, method="classify"))(pooled)
  return pooling.interleave_offsets(per_offset, pool)  # [B, (n_h - k + 1) * P, ..., K]


def _coarse_map_from_features(model: OverFeat, variables, prepool: jax.Array) -> jax.Array:
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
  _check_fine_size(model, images)
  prepool = model.apply(variables, images, method="features")  # once, never per offset
  return _fine_map_from_features(model, variables, prepool)


def class_scores(class_map: jax.Array, reduce: str = "max") -> jax.Array:
  """Softmax at each position, then one score per class over positions.

  class_map: [B, H', W', K] logits -> float32 [B, K]; reduce 'max' (the paper's spatial max) or
  'mean'.
  """
  probs = jax.nn.softmax(class_map.astype(jnp.float32), axis=-1)
  return probs.max(axis=(1, 2)) if reduce == "max" else probs.mean(axis=(1, 2))


Scales = list[tuple[int, int]]  # (H, W) per test scale


def evaluate_views(model: OverFeat, variables, canvas: jax.Array,
                   eval_cfg: ml_collections.ConfigDict, *, crop_size: int,
                   resize_short: int) -> dict[str, jax.Array]:
  """Scores of every row of the paper's Table 2 layout (SPEC A4) for one canvas batch.

  Args:
    model, variables: the OverFeat module and its variables.
    canvas: [B, Hc, Wc, 3] normalised images; all views are derived from it.
    eval_cfg: config.eval (scales, single_scale, multi_scales, spatial_reduce).
    crop_size: the crop of the centre-crop / 10-view rows (the training size).
    resize_short: short side before those crops.
  Returns:
    {row: float32 [B, K] scores} for every name in ROWS; probabilities averaged over views, scales
    and flips (per scale: softmax per position, then eval_cfg.spatial_reduce over positions).
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
  views = ten_views(canvas, resize_short, crop_size)  # [10, B, c, c, 3]
  view_maps = model.apply(variables, views.reshape((10 * b,) + views.shape[2:]),
                          method="class_map")
  view_probs = class_scores(view_maps, reduce).reshape(10, b, -1)  # [10, B, K]
  rows[ROW_CENTRE] = view_probs[CENTRE_VIEW]
  rows[ROW_TEN_VIEWS] = view_probs.mean(axis=0)

  # Rows 3-6: the dense grid, one feature pass per distinct scale (SPEC A4).
  fine_plain, fine_flipped = {}, {}
  for index in sorted(set(multi) | {single}):
    images = resize_to_cover(canvas, scales[index])  # [B, h, w, 3]
    _check_fine_size(model, images)
    flips = index in multi  # only the multi-scale rows use flips
    batch = jnp.concatenate([images, images[:, :, ::-1, :]]) if flips else images  # [B or 2B, ...]
    prepool = model.apply(variables, batch, method="features")
    scores = class_scores(_fine_map_from_features(model, variables, prepool), reduce)
    fine_plain[index] = scores[:b]
    if flips:
      fine_flipped[index] = scores[b:]
    if index == single:
      rows[ROW_COARSE] = class_scores(
          _coarse_map_from_features(model, variables, prepool[:b]), reduce)
  rows[ROW_FINE] = fine_plain[single]
  rows[ROW_MULTI] = jnp.mean(jnp.stack([fine_plain[i] for i in multi]), axis=0)
  rows[ROW_MULTI_FLIP] = jnp.mean(
      jnp.stack([fine_plain[i] for i in multi] + [fine_flipped[i] for i in multi]), axis=0)
  return {row: rows[row] for row in ROWS}
