"""A stride-1 convolution, bias, ReLU and non-overlapping max pool as one space-to-depth convolution.

  conv_relu_max_pool(x [B, H, W, C], kernel [k, k, C, F], bias [F], pool p)
      = max_pool(relu(conv_valid(x, kernel) + bias), p)        [B, (H - k + 1) // p, ..., F]

Why: a thin layer at full resolution (the quickstart's 3x3 stem, 3 -> 12 channels on 200 x 200
scenes) runs far below a CPU's matmul speed, its 3- and 12-channel arrays vectorise badly, and the
pool's backward pass reads and writes the full-resolution map again. Folding each p x p block of
pixels into channels (space to depth) makes the same layer a convolution of p^2 C -> p^2 F channels
on a map p times smaller, whose p^2 output groups are exactly the p x p cells the pool takes the max
of: the pool becomes a max over channel groups, and nothing at full resolution is left but the input.

  x'[i, j, (a, b, c)] = x[p i + a, p j + b, c]                    (space to depth)
  kernel'[I, J, (a, b, c), (u, v, f)] = kernel[p I + a - u, p J + b - v, c, f]  (0 outside [0, k))
  conv_valid(x', kernel')[i, j, (u, v, f)] = conv_valid(x, kernel)[p i + u, p j + v, f]

with K' = ceil((k + p - 1) / p) taps per axis. The max is taken before the bias and ReLU, which
commute with it (a per-channel constant and a monotone function). The numbers are the plain
composition's up to float rounding (another order of the same sums); the gradient of the max splits
between tied maxima as JAX's does for `ops.pooling.max_pool`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _folded_taps(kernel_size: int, pool: int) -> tuple[np.ndarray, np.ndarray]:
  """Where kernel' reads kernel: for each (I, a, u) the tap p I + a - u, and whether it is in range.

  Returns int [K', p, p] taps (clipped into [0, k)) and bool [K', p, p] validity, indexed (I, a, u).
  """
  taps = math.ceil((kernel_size + pool - 1) / pool)
  big, sub, out = np.meshgrid(np.arange(taps), np.arange(pool), np.arange(pool), indexing="ij")
  tap = pool * big + sub - out
  valid = (tap >= 0) & (tap < kernel_size)
  return np.clip(tap, 0, kernel_size - 1), valid


def fold_kernel(kernel: jax.Array, pool: int) -> jax.Array:
  """kernel [k, k, C, F] -> the space-to-depth kernel [K', K', p^2 C, p^2 F] (module docstring)."""
  k, _, channels, features = kernel.shape
  tap, valid = _folded_taps(k, pool)  # [K', p(a), p(u)]
  taps = tap.shape[0]
  # Axes (I, a, u) x (J, b, v): kernel[tap[I, a, u], tap[J, b, v]].
  rows = tap[:, :, :, None, None, None]
  cols = tap[None, None, None, :, :, :]
  inside = valid[:, :, :, None, None, None] & valid[None, None, None, :, :, :]
  folded = jnp.where(inside[..., None, None], kernel[rows, cols], 0)  # [I, a, u, J, b, v, C, F]
  # -> [I, J, (a, b, C), (u, v, F)]
  folded = folded.transpose(0, 3, 1, 4, 6, 2, 5, 7)
  return folded.reshape(taps, taps, pool * pool * channels, pool * pool * features)


def space_to_depth(x: jax.Array, pool: int) -> jax.Array:
  """[B, p h, p w, C] -> [B, h, w, p^2 C], channel (a, b, c) = x[p i + a, p j + b, c]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // pool, pool, w // pool, pool, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // pool, w // pool, pool * pool * c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _group_max(y: jax.Array, groups: int) -> jax.Array:
  """[..., groups * F] -> [..., F], the max over the groups (channel g * F + f holds group g)."""
  width = y.shape[-1] // groups
  return functools.reduce(jnp.maximum, [y[..., g * width:(g + 1) * width] for g in range(groups)])


def _group_max_fwd(y: jax.Array, groups: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  out = _group_max(y, groups)
  return out, (y, out)


def _group_max_bwd(groups: int, residuals: tuple[jax.Array, jax.Array],
                   grad: jax.Array) -> tuple[jax.Array]:
  """JAX's rule for a max (the gradient split equally between tied maxima), on 4-d slices: the
  transpose of a reshape to [..., groups, F] runs several times slower on XLA:CPU (short minor
  axes)."""
  y, out = residuals
  width = y.shape[-1] // groups
  hits = [y[..., g * width:(g + 1) * width] == out for g in range(groups)]
  share = grad / sum(hit.astype(grad.dtype) for hit in hits)
  return (jnp.concatenate([jnp.where(hit, share, 0) for hit in hits], axis=-1).astype(y.dtype),)


_group_max.defvjp(_group_max_fwd, _group_max_bwd)


def conv_relu_max_pool(x: jax.Array, kernel: jax.Array, bias: jax.Array, pool: int) -> jax.Array:
  """max_pool(relu(conv(x, kernel) + bias), pool) for a VALID stride-1 convolution (module docstring).

  Args:
    x: [B, H, W, C] (pad it first for a padded convolution).
    kernel: [k, k, C, F].
    bias: [F].
    pool: the pool's size = stride, >= 1.
  Returns:
    [B, (H - k + 1) // pool, (W - k + 1) // pool, F] in x's dtype (the floor drops the rows and
    columns that do not fill a cell, as `ops.pooling.max_pool`).
  Raises:
    ValueError: the map is smaller than one pooled cell.
  """
  _, height, width, _ = x.shape
  k = kernel.shape[0]
  out_h, out_w = (height - k + 1) // pool, (width - k + 1) // pool
  if out_h < 1 or out_w < 1:
    raise ValueError(f"conv_relu_max_pool: a {height}x{width} map gives no {pool}x{pool} cell after "
                     f"a {k}x{k} convolution")
  if pool == 1:
    y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + bias.astype(x.dtype))
  taps = math.ceil((k + pool - 1) / pool)
  # Input rows the kept cells read, rounded up to whole blocks: (out + K' - 1) blocks of p.
  need_h, need_w = (out_h + taps - 1) * pool, (out_w + taps - 1) * pool
  x = x[:, :need_h, :need_w]
  x = jnp.pad(x, ((0, 0), (0, need_h - x.shape[1]), (0, need_w - x.shape[2]), (0, 0)))
  y = jax.lax.conv_general_dilated(space_to_depth(x, pool), fold_kernel(kernel, pool).astype(x.dtype),
                                   (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pooled = _group_max(y[:, :out_h, :out_w], pool * pool)
  return jax.nn.relu(pooled + bias.astype(x.dtype))


# Folding pays for thin layers only: p^2 C input channels up to this many. Wider layers already run
# near a CPU's matmul speed, and folding multiplies their work by K'^2 p^2 / k^2 (1.44 for 5 x 5, 2).
# The quickstart stems fold layers 1 (3 channels) and 2 (12); layer 1 is where the time is saved,
# folding layer 2 as well measured the same within the noise (benchmarks/README.md).
FOLD_MAX_CHANNELS = 64


def folds_pool(in_channels: int, stride: int, pool: int) -> bool:
  """Whether a conv (`stride`) + ReLU + `pool` x `pool` max pool layer on `in_channels` inputs runs
  faster as `conv_relu_max_pool`: stride 1, a pool, and pool^2 * in_channels <= FOLD_MAX_CHANNELS."""
  return stride == 1 and pool > 1 and pool * pool * in_channels <= FOLD_MAX_CHANNELS
