"""Non-overlapping max pooling and OverFeat's offset max-pooling (SPEC A4).

Offset max-pooling applies the last pooling layer (size = stride = `pool`) at every offset
(dy, dx) in {0, ..., pool-1}^2, so that the classifier that follows can be evaluated on a grid
`pool` times finer than the network's coarse output stride.

The offset axis is shared by `offset_grid`, `offset_max_pool` and `interleave_offsets`: offset
index o = dy * pool + dx (dy-major), i.e. for pool 3 the order is
(0,0), (0,1), (0,2), (1,0), ..., (2,2).

This module knows nothing of models; it works on any [B, H, W, C] map.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool_exact(x: jax.Array, pool: int) -> jax.Array:
  """Max over non-overlapping pool x pool cells of a map whose size is a multiple of `pool`.

  x: [B, n_h * pool, n_w * pool, C] -> [B, n_h, n_w, C]. The gradient is JAX's for this max (a
  cell's gradient split equally between its tied maxima), computed by `_pool_exact_bwd`.
  """
  b, h, w, c = x.shape
  cells = x.reshape(b, h // pool, pool, w // pool, pool, c)  # [B, n_h, pool, n_w, pool, C]
  return cells.max(axis=(2, 4))


def _pool_exact_fwd(x: jax.Array, pool: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  pooled = _pool_exact(x, pool)
  return pooled, (x, pooled)


def _pool_exact_bwd(pool: int, residuals: tuple[jax.Array, jax.Array],
                    grad: jax.Array) -> tuple[jax.Array]:
  """The same numbers as JAX's transpose of the reshape + max, computed on [B, H, W, C] arrays.

  JAX's own backward pass works on the 6-d cell view, whose two minor axes (pool, C) are short:
  XLA:CPU runs such loops several times slower than the same work on 4-d arrays (the quickstart
  detector's first two pools: 15.6 ms per step against 5.0 ms here).
  """
  x, pooled = residuals

  def upsample(a: jax.Array) -> jax.Array:  # [B, n_h, n_w, C] -> [B, H, W, C], each cell repeated
    return jnp.repeat(jnp.repeat(a, pool, axis=1), pool, axis=2)

  ties = sum((x[:, i::pool, j::pool] == pooled).astype(grad.dtype)
             for i in range(pool) for j in range(pool))
  return (jnp.where(x == upsample(pooled), upsample(grad / ties), 0).astype(x.dtype),)


_pool_exact.defvjp(_pool_exact_fwd, _pool_exact_bwd)


def max_pool(x: jax.Array, pool: int) -> jax.Array:
  """Non-overlapping max pooling, size = stride = `pool`, VALID (floor) as in SPEC A2.

  x: [B, H, W, C] -> [B, H // pool, W // pool, C]; trailing rows/columns that do not fill a cell are
  dropped. pool 1 is the identity.
  """
  _, h, w, _ = x.shape
  n_h, n_w = h // pool, w // pool
  if n_h < 1 or n_w < 1:
    raise ValueError(f"max_pool: a {h}x{w} map is smaller than the pool size {pool}")
  return _pool_exact(x[:, :n_h * pool, :n_w * pool, :], pool)


def offset_grid(pool: int) -> np.ndarray:
  """The pooling offsets in the shared order: int32 [pool * pool, 2] rows (dy, dx), dy-major."""
  dy, dx = np.meshgrid(np.arange(pool), np.arange(pool), indexing="ij")
  return np.stack([dy.ravel(), dx.ravel()], axis=1).astype(np.int32)


def offset_pooled_size(size: int, pool: int) -> int:
  """Cells per offset along one axis: (size - pool + 1) // pool, the same for every offset.

  The largest offset (pool - 1) leaves size - pool + 1 inputs, so this many full cells fit at
  every offset and all offsets share one static shape.
  """
  return (size - pool + 1) // pool


def offset_max_pool(x: jax.Array, pool: int) -> jax.Array:
  """Max pooling (size = stride = `pool`) at every offset (SPEC A4).

  Offset (dy, dx) pools the cells whose top-left inputs are (dy + i * pool, dx + j * pool).
  1-D example with 20 inputs (1-based) and pool 3: n = 6 cells per offset; d=0 pools
  [1..3], ..., [16..18]; d=1 pools [2..4], ..., [17..19]; d=2 pools [3..5], ..., [18..20].

  Args:
    x: [B, H, W, C] map (the "pre-pool" output of the last convolution).
    pool: the pooling size (= stride).
  Returns:
    [pool * pool, B, n_h, n_w, C] with n = (size - pool + 1) // pool; the leading axis is the offset
    index o = dy * pool + dx (see `offset_grid`).
  """
  b, h, w, c = x.shape
  n_h, n_w = offset_pooled_size(h, pool), offset_pooled_size(w, pool)
  if n_h < 1 or n_w < 1:
    raise ValueError(
        f"offset_max_pool: a {h}x{w} map needs at least {2 * pool - 1} rows and columns for pool "
        f"{pool} (one full cell at every offset)")

  def pool_at(offset: jax.Array) -> jax.Array:  # offset: int32 [2] = (dy, dx)
    window = jax.lax.dynamic_slice(
        x, (0, offset[0], offset[1], 0), (b, n_h * pool, n_w * pool, c))
    return _pool_exact(window, pool)  # [B, n_h, n_w, C]

  # One vmap over the offsets: a single traced body, static shapes, no Python loop (SPEC A4).
  return jax.vmap(pool_at)(jnp.asarray(offset_grid(pool)))


def interleave_offsets(maps: jax.Array, pool: int) -> jax.Array:
  """Interleaves per-offset maps into one map `pool` times finer (the paper's "reshape").

  Args:
    maps: [pool * pool, B, h, w, K], offset axis in `offset_grid` order (o = dy * pool + dx).
    pool: the pooling size used by `offset_max_pool`.
  Returns:
    [B, h * pool, w * pool, K] with
    out[:, i * pool + dy, j * pool + dx] = maps[dy * pool + dx][:, i, j].
  """
  p2, b, h, w, k = maps.shape
  if p2 != pool * pool:
    raise ValueError(f"interleave_offsets: {p2} offset maps, expected pool * pool = {pool * pool}")
  grid = maps.reshape(pool, pool, b, h, w, k)  # [dy, dx, B, i, j, K]
  grid = grid.transpose(2, 3, 0, 4, 1, 5)  # [B, i, dy, j, dx, K]
  return grid.reshape(b, h * pool, w * pool, k)
