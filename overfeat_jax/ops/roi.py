"""RoI pooling and RoIAlign on one NHWC feature map (SPEC B4), as torchvision.ops.roi_pool and
torchvision.ops.roi_align compute them.

Both take one image's features [H, W, C] and its boxes [R, 4] (x1, y1, x2, y2) in image pixels;
`spatial_scale` maps them onto the feature map (1/16 for a stride-16 backbone). For a batch, vmap
over images (torchvision's [K, 5] boxes with a batch index become per-image [R, 4] boxes, padded to
a static R with a mask applied to the outputs), or, for RoIAlign, call `batched_roi_align` on
[B, H, W, C] and [B, R, 4]: the same numbers, a faster backward pass on a CPU. R = 0 is allowed.

Static shapes:
- roi_pool: a bin's extent depends on its box, so each bin's max is read from a table of block
  maxima — T[k, l, h, w] = the max over rows [h, h + 4^k) and columns [w, w + 4^l) — as the max of
  4 x 4 overlapping blocks: 16 gathers per bin, whatever the bin's size. The table holds
  (log4 H + 1) x (log4 W + 1) copies of the map (9 for 38 x 63).
- roi_align: each bin averages a grid of gy x gx bilinear samples. With a fixed sampling_ratio the
  grid is static. The adaptive grid (sampling_ratio <= 0: ceil(roi_size / pooled_size) per axis)
  depends on the box, so samples are laid out on a static max_sampling_ratio grid and the ones past
  the box's own grid get weight 0. An RoI whose adaptive grid would exceed the maximum is sampled
  on the maximum grid instead (evenly spread over the bin), the only case that differs from
  torchvision; the default maximum covers every RoI up to one cell larger than the map.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _round_half_away(x: jax.Array) -> jax.Array:
  """C's round(): halves away from zero (jnp.round rounds them to even)."""
  t = jnp.trunc(x)
  return jnp.where(jnp.abs(x - t) == 0.5, t + jnp.sign(x), jnp.round(x))


def _divide(numerator: jax.Array, denominator: int | jax.Array) -> jax.Array:
  """numerator / denominator, correctly rounded as in torchvision's C++ (finite numerators).

  XLA rewrites x / c and x / broadcast(y) as x * (1 / c), which is not exact (7 / 3 * 3 gives
  7.0000005, whose ceil is 8): bin edges and adaptive grids are floors and ceils of such quotients.
  A divisor that depends on every element of the numerator is neither a constant nor a broadcast.
  """
  return numerator / (denominator + 0 * numerator)


# roi_pool's table holds maxima over blocks of BASE^k rows by BASE^l columns. A range of n cells,
# BASE^k <= n < BASE^(k+1), is covered by BASE (overlapping) blocks of BASE^k: base 4 keeps the
# table at (log4 H + 1) x (log4 W + 1) copies of the map (9 for 38 x 63; base 2 would need 36) for
# 16 gathers per bin — building the table, not gathering, is what costs.
TABLE_BASE = 4


def _table_levels(size: int) -> int:
  """Levels of the table along an axis of `size` cells: floor(log_BASE(size)) + 1."""
  levels = 1
  while TABLE_BASE ** levels <= size:
    levels += 1
  return levels


def _block_level(n: jax.Array) -> jax.Array:
  """floor(log_BASE(n)) of int32 n >= 1, exactly (no float logarithm)."""
  level, bound = jnp.zeros_like(n), TABLE_BASE
  while bound < 2 ** 31:
    level, bound = level + (n >= bound), bound * TABLE_BASE
  return level


def _first_max(first: tuple[jax.Array, jax.Array],
               second: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Of two (value, cell index) pairs, the larger value; on a tie the smaller (row-major) index."""
  take = (second[0] > first[0]) | ((second[0] == first[0]) & (second[1] < first[1]))
  return jnp.where(take, second[0], first[0]), jnp.where(take, second[1], first[1])


def _range_max_table(features: jax.Array,
                     with_index: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """Table of block maxima, with B = TABLE_BASE.

  Args:
    features: [H, W, C].
    with_index: also return where each maximum lies.
  Returns:
    values [LH * LW * H * W, C], the flattened T[k, l, h, w, c] = max f[h:h + B^k, w:w + B^l, c]
    (LH = _table_levels(H), LW likewise; entries whose block would cross the border hold
    arbitrary values, roi_pool never reads them), and, with_index, int32 of the same shape: the
    flat cell (h * W + w) of the first maximum in row-major order (torchvision's argmax), else None.
  """
  height, width, channels = features.shape
  cell = jnp.arange(height * width, dtype=jnp.int32).reshape(height, width, 1)
  level0 = (features, jnp.broadcast_to(cell, features.shape) if with_index else None)

  def combine(first, second):
    return _first_max(first, second) if with_index else (jnp.maximum(first[0], second[0]), None)

  def levels(pair, axis: int) -> list:
    out, size = [pair], features.shape[axis]
    for k in range(1, _table_levels(size)):
      step = TABLE_BASE ** (k - 1)
      # Level k is the max of level k - 1 at offsets 0, step, 2 step, ... (the border repeated
      # past the end).
      pad = [(0, 0)] * 3
      pad[axis] = (0, (TABLE_BASE - 1) * step)
      padded = [None if x is None else jnp.pad(x, pad, mode="edge") for x in out[-1]]
      level = out[-1]
      for j in range(1, TABLE_BASE):
        level = combine(level, tuple(
            None if x is None else jax.lax.slice_in_dim(x, j * step, j * step + size, axis=axis)
            for x in padded))
      out.append(level)
    return out

  table = [pair for rows in levels(level0, 0) for pair in levels(rows, 1)]
  values = jnp.stack([v for v, _ in table]).reshape(-1, channels)
  if not with_index:
    return values, None
  return values, jnp.stack([i for _, i in table]).reshape(-1, channels)


def _gather_blocks(table: jax.Array, blocks: jax.Array) -> list[jax.Array]:
  """table [P, C], blocks int32 [K, R, h, w] rows of it -> K arrays [R, h, w, C]."""
  return [table[rows] for rows in blocks]


_NO_CELL = np.iinfo(np.int32).max  # larger than every cell index


@jax.custom_vjp
def _bin_max(features: jax.Array, blocks: jax.Array, empty: jax.Array) -> jax.Array:
  """Each bin's max as that of its table blocks: [H, W, C], int32 [K, R, h, w], bool [R, h, w]
  -> [R, h, w, C] (0 for empty bins).

  The VJP routes each bin's gradient to its first maximal cell in row-major order, as
  torchvision's roi_pool backward does; JAX's own transpose of the table would split it between
  equal values and is several times slower.
  """
  values, _ = _range_max_table(features)
  best = functools.reduce(jnp.maximum, _gather_blocks(values, blocks))
  return jnp.where(empty[..., None], 0, best)


def _bin_max_fwd(features, blocks, empty):
  # Under differentiation the table carries the argmax too; the backward pass is then one scatter.
  values, indices = _range_max_table(features, with_index=True)
  best = functools.reduce(jnp.maximum, _gather_blocks(values, blocks))

  def first_cell(k, cell):
    """The smallest cell index among the blocks that hold the bin's max (the blocks overlap)."""
    rows = blocks[k]
    return jnp.minimum(cell, jnp.where(values[rows] == best, indices[rows], _NO_CELL))

  # A loop (unrolled by 4), not a chain of (value, index) comparisons: XLA:CPU fuses that chain
  # into one loop that gathers each block several times (5x slower).
  argmax = jax.lax.fori_loop(0, blocks.shape[0], first_cell,
                             jnp.full(best.shape, _NO_CELL, jnp.int32), unroll=4)
  out = jnp.where(empty[..., None], 0, best)
  return out, (argmax, empty, jnp.zeros((0,) + features.shape, features.dtype))


def _bin_max_bwd(residuals, grad):
  argmax, empty, like = residuals  # like: an empty array with the features' shape and dtype
  height, width, channels = like.shape[1:]
  # Scatter into the flat [H * W * C] map: element (cell, c) is cell * C + c.
  flat = argmax * channels + jnp.arange(channels, dtype=jnp.int32)
  grad = jnp.where(empty[..., None], 0, grad)
  d_features = jnp.zeros(height * width * channels, like.dtype).at[flat.reshape(-1)].add(
      grad.reshape(-1), mode="promise_in_bounds")
  return d_features.reshape(like.shape[1:]), None, None


_bin_max.defvjp(_bin_max_fwd, _bin_max_bwd)


def roi_pool(features: jax.Array, boxes: jax.Array, output_size: tuple[int, int],
             spatial_scale: float = 1.0) -> jax.Array:
  """Max pooling of each box's region to a fixed grid, as torchvision.ops.roi_pool (Fast R-CNN).

  As torchvision: box corners are scaled and rounded to cells (halves away from zero), the region
  is (end - start + 1) cells wide, at least 1; bin (i, j) spans rows
  [floor(i * roi_h / h), ceil((i + 1) * roi_h / h)) of it (likewise columns), clipped to the map;
  an empty bin gives 0.

  Args:
    features: [H, W, C] one image's feature map.
    boxes: [R, 4] boxes (x1, y1, x2, y2) in image pixels.
    output_size: (h, w) bins per box, static.
    spatial_scale: feature-map cells per image pixel (1/16 for stride 16).
  Returns:
    [R, h, w, C]. Differentiable in `features`: each bin's gradient goes to its first maximal cell
    (row-major), as in torchvision; the gradient in `boxes` is 0 (rounded coordinates).
  """
  height, width, _ = features.shape
  pooled_h, pooled_w = output_size
  corners = _round_half_away(boxes * spatial_scale).astype(jnp.int32)  # [R, 4] cells

  def bins(start: jax.Array, end: jax.Array, pooled: int,
           size: int) -> tuple[jax.Array, jax.Array]:
    """Clipped [first, last) cells of each bin along one axis: [R] -> ([R, pooled], [R, pooled])."""
    length = jnp.maximum(end - start + 1, 1).astype(features.dtype)
    bin_size = _divide(length, pooled)
    index = jnp.arange(pooled, dtype=features.dtype)
    first = jnp.floor(index * bin_size[:, None]).astype(jnp.int32)
    last = jnp.ceil((index + 1) * bin_size[:, None]).astype(jnp.int32)
    return (jnp.clip(first + start[:, None], 0, size), jnp.clip(last + start[:, None], 0, size))

  h0, h1 = bins(corners[:, 1], corners[:, 3], pooled_h, height)  # [R, h]
  w0, w1 = bins(corners[:, 0], corners[:, 2], pooled_w, width)  # [R, w]
  empty = (h1 <= h0)[:, :, None] | (w1 <= w0)[:, None, :]  # [R, h, w]
  # With B^k <= n = h1 - h0 < B^(k+1), the blocks of B^k rows starting at h0, h0 + B^k, ...,
  # each moved back to end by h1 at the latest, cover [h0, h1) (likewise columns).
  def starts(first: jax.Array, last: jax.Array, size: int) -> tuple[jax.Array, list[jax.Array]]:
    level = _block_level(jnp.maximum(last - first, 1))
    block = TABLE_BASE ** level
    return level, [jnp.clip(jnp.minimum(first + j * block, last - block), 0, size - 1)
                   for j in range(TABLE_BASE)]

  level_h, tops = starts(h0, h1, height)  # [R, h], B x [R, h]
  level_w, lefts = starts(w0, w1, width)
  level = (level_h[:, :, None] * _table_levels(width) + level_w[:, None, :]) * (height * width)
  blocks = jnp.stack([level + top[:, :, None] * width + left[:, None, :]
                      for top in tops for left in lefts])  # [B * B, R, h, w] rows of the table
  return _bin_max(features, blocks, empty)


def _sample_axis(start: jax.Array, end: jax.Array, pooled: int, size: int, grid: int | None,
                 max_grid: int, aligned: bool) -> tuple[jax.Array, jax.Array]:
  """RoIAlign's bilinear samples along one axis, in torchvision's arithmetic.

  Args:
    start, end: [R] the box's extent in (shifted) feature-map coordinates.
    pooled: bins along this axis. size: the map's size along it.
    grid: the fixed samples per bin, or None for the adaptive ceil(length / pooled).
    max_grid: the static number of sample slots per bin (= grid when fixed).
  Returns:
    cells [R, pooled, 2 * max_grid] int32 and weights [R, pooled, 2 * max_grid]: sample s of bin i
    reads cells[..., s] (low neighbour) and cells[..., max_grid + s] (high neighbour); the weights
    hold the linear interpolation factors divided by the bin's sample count, 0 for unused slots and
    for samples off the map (outside [-1, size]).
  """
  length = end - start
  if not aligned:
    length = jnp.maximum(length, 1.0)  # torchvision forces malformed RoIs to 1 x 1
  bin_size = _divide(length, pooled)
  if grid is None:
    count = jnp.clip(jnp.ceil(bin_size).astype(jnp.int32), 0, max_grid)  # [R]
  else:
    count = jnp.full(start.shape, grid, jnp.int32)
  count_f = jnp.maximum(count, 1).astype(start.dtype)
  slot = jnp.arange(max_grid)
  index = jnp.arange(pooled, dtype=start.dtype)
  # torchvision: start + i * bin + (s + .5) * bin / count, in that order.
  y = (start[:, None, None] + index[None, :, None] * bin_size[:, None, None]
       + _divide((slot + 0.5).astype(start.dtype) * bin_size[:, None, None],
                 count_f[:, None, None]))
  used = (slot < count[:, None, None]) & (y >= -1.0) & (y <= size)  # [R, pooled, max_grid]
  y = jnp.maximum(y, 0)
  low = jnp.floor(y).astype(jnp.int32)
  at_edge = low >= size - 1  # torchvision: the last row / column reads itself twice
  low = jnp.where(at_edge, size - 1, low)
  high = jnp.where(at_edge, size - 1, low + 1)
  frac = jnp.where(at_edge, 0, y - low)  # also no gradient on the clamped part, as for y < 0
  scale = jnp.where(used, 1 / count_f[:, None, None], 0)
  cells = jnp.concatenate([low, high], axis=-1)
  weights = jnp.concatenate([(1 - frac) * scale, frac * scale], axis=-1)
  return cells, weights


def _corner_sum(table: jax.Array, cells: jax.Array, weights: jax.Array) -> jax.Array:
  """out[..., c] = sum_k weights[..., k] * table[cells[..., k], c].

  table [P, C], cells int32 [..., K], weights [..., K] -> [..., C]. A loop over k, each step one
  gather of [...] rows fused with its multiply-add, which compiles fast for the large K of adaptive
  grids. The sum starts from corner 0's term rather than from zeros (an 8 x 300 x 7 x 7 x 128 zero
  array is written on one thread), and the loop is unrolled by a divisor of its K - 1 steps where a
  small one exists: XLA:CPU fuses the remainder of an unrolled loop into the output's consumer and
  runs that on one thread. K = 16 (2 x 2 samples) gives 3 x 5 steps; the tiny benchmark detector's
  inference went from 119 to 100 ms per batch of 8 (benchmarks/README.md).
  """

  def add_corner(k, out):
    return out + _take_last(weights, k)[..., None] * table[_take_last(cells, k)]

  steps = cells.shape[-1] - 1
  unroll = next((u for u in (5, 4, 3, 2) if steps % u == 0), 4)
  first = add_corner(0, jnp.zeros((), table.dtype))
  return jax.lax.fori_loop(1, cells.shape[-1], add_corner, first, unroll=unroll)


def _take_last(x: jax.Array, k: jax.Array) -> jax.Array:
  """x[..., k] for a traced k."""
  return jax.lax.dynamic_index_in_dim(x, k, axis=x.ndim - 1, keepdims=False)


@jax.custom_vjp
def _weighted_gather(tables: jax.Array, cells: jax.Array, weights: jax.Array) -> jax.Array:
  """_corner_sum of each image, with a hand-written VJP: tables [B, P, C], cells int32 [B, ..., K],
  weights [B, ..., K] -> [B, ..., C].

  The backward pass scatter-adds each image's samples into its own table, one chain of scatters
  per image and not one batched scatter: XLA:CPU runs a scatter on one thread, and independent ones
  side by side (8 images x 128 RoIs of 7 x 7 x 2 x 2 samples on a 47 x 47 x 128 map: 43 ms instead
  of 76, benchmarks/README.md). The chains are unrolled in the program, one per image: meant for a
  training batch, not for hundreds of images. Its own transpose of the gathers is ~4x slower still.
  """
  return jax.vmap(_corner_sum)(tables, cells, weights)


def _weighted_gather_fwd(tables, cells, weights):
  return _weighted_gather(tables, cells, weights), (tables, cells, weights)


def _scatter_samples(shape: tuple[int, ...], dtype: jnp.dtype, cells: jax.Array, weights: jax.Array,
                     grad: jax.Array) -> jax.Array:
  """One image's table gradient: the sum of weights[..., k] * grad at rows cells[..., k], [P, C]."""
  flat_grad = grad.reshape(-1, grad.shape[-1])

  # A fori_loop, not an unrolled Python loop: XLA:CPU then runs one small fused scatter per corner
  # instead of materialising all of them.
  def scatter(k, acc):
    rows = _take_last(cells, k).reshape(-1)
    update = _take_last(weights, k).reshape(-1, 1) * flat_grad
    return acc.at[rows].add(update, mode="promise_in_bounds")

  return jax.lax.fori_loop(0, cells.shape[-1], scatter, jnp.zeros(shape, dtype))


def _weighted_gather_bwd(residuals, grad):
  tables, cells, weights = residuals
  d_tables = jnp.stack([_scatter_samples(tables.shape[1:], tables.dtype, cells[b], weights[b],
                                         grad[b]) for b in range(tables.shape[0])])

  def dot(k, acc):
    value = jnp.sum(jax.vmap(lambda t, c: t[c])(tables, _take_last(cells, k)) * grad, axis=-1)
    return jax.lax.dynamic_update_index_in_dim(acc, value, k, 0)

  n_corners = cells.shape[-1]
  d_weights = jax.lax.fori_loop(0, n_corners, dot,
                                jnp.zeros((n_corners,) + cells.shape[:-1], weights.dtype))
  return d_tables, None, jnp.moveaxis(d_weights, 0, -1)


_weighted_gather.defvjp(_weighted_gather_fwd, _weighted_gather_bwd)


def default_max_sampling_ratio(feature_hw: tuple[int, int],
                               output_size: tuple[int, int]) -> tuple[int, int]:
  """The adaptive RoIAlign grid of an RoI one cell larger than the map: (ceil((H + 1) / h),
  ceil((W + 1) / w)); every RoI inside the map samples exactly as torchvision with these."""
  return tuple(math.ceil((size + 1) / pooled) for size, pooled in zip(feature_hw, output_size))


def roi_align(features: jax.Array, boxes: jax.Array, output_size: tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False, *,
              max_sampling_ratio: int | tuple[int, int] | None = None) -> jax.Array:
  """Bilinear RoI pooling (Mask R-CNN's RoIAlign), as torchvision.ops.roi_align.

  Each box (minus 0.5 cell when `aligned`) is cut into h x w bins; each bin averages a grid of
  bilinear samples at the centres of a gy x gx subdivision. gy = sampling_ratio when > 0, else
  ceil(roi_height / h) (likewise gx). As torchvision: without `aligned` an RoI is at least 1 x 1
  cell; a sample outside [-1, H] x [-1, W] counts as 0; a coordinate in [-1, 0) reads row 0 and one
  past H - 1 reads row H - 1.

  Args:
    features: [H, W, C] one image's feature map.
    boxes: [R, 4] boxes (x1, y1, x2, y2) in image pixels.
    output_size: (h, w) bins per box, static.
    spatial_scale: feature-map cells per image pixel.
    sampling_ratio: samples per bin along each axis; <= 0 for the adaptive grid.
    aligned: shift the box by -0.5 cell so that pixel centres line up (Detectron2's fix).
    max_sampling_ratio: static bound of the adaptive grid, an int or (gy, gx); default
      default_max_sampling_ratio(). Ignored when sampling_ratio > 0. The cost grows with its square.
  Returns:
    [R, h, w, C]. Differentiable in `features` and in `boxes` (through the sample positions; the
    sample counts are piecewise constant, and clamped samples do not move).
  """
  return batched_roi_align(features[None], boxes[None], output_size, spatial_scale, sampling_ratio,
                           aligned, max_sampling_ratio=max_sampling_ratio)[0]


def batched_roi_align(features: jax.Array, boxes: jax.Array, output_size: tuple[int, int],
                      spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False, *,
                      max_sampling_ratio: int | tuple[int, int] | None = None) -> jax.Array:
  """`roi_align` of each image of a batch: features [B, H, W, C], boxes [B, R, 4] -> [B, R, h, w, C].

  The same numbers as vmapping `roi_align`; its backward pass runs faster on a CPU (one scatter
  chain per image, `_weighted_gather`). Other arguments as `roi_align`'s.
  """
  _, height, width, channels = features.shape
  pooled_h, pooled_w = output_size
  if sampling_ratio > 0:
    grid, (max_gy, max_gx) = sampling_ratio, (sampling_ratio, sampling_ratio)
  else:
    grid = None
    if max_sampling_ratio is None:
      max_sampling_ratio = default_max_sampling_ratio((height, width), output_size)
    max_gy, max_gx = ((max_sampling_ratio,) * 2 if isinstance(max_sampling_ratio, int)
                      else max_sampling_ratio)
  dtype = jnp.result_type(float, features.dtype)

  def samples(image_boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[R, 4] -> every (row, column) pair of a bin's samples: [R, h, w, 2 gy * 2 gx] cells, weights."""
    rois = image_boxes.astype(dtype) * spatial_scale - (0.5 if aligned else 0.0)  # [R, 4]
    rows, row_w = _sample_axis(rois[:, 1], rois[:, 3], pooled_h, height, grid, max_gy, aligned)
    cols, col_w = _sample_axis(rois[:, 0], rois[:, 2], pooled_w, width, grid, max_gx, aligned)
    n_roi = image_boxes.shape[0]
    n_samples = rows.shape[-1] * cols.shape[-1]
    cells = (rows[:, :, None, :, None] * width + cols[:, None, :, None, :]).reshape(
        n_roi, pooled_h, pooled_w, n_samples)
    weights = (row_w[:, :, None, :, None] * col_w[:, None, :, None, :]).reshape(
        n_roi, pooled_h, pooled_w, n_samples)
    return cells, weights

  cells, weights = jax.vmap(samples)(boxes)
  tables = features.reshape(features.shape[0], height * width, channels)
  return _weighted_gather(tables, cells, weights.astype(features.dtype))
