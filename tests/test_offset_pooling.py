"""Offset max-pooling and interleaving (SPEC A4) vs slow numpy loops and the paper's 1-D example."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import pooling


def naive_offset_pool(x: np.ndarray, pool: int) -> np.ndarray:
  """Loop version: out[dy * pool + dx, b, i, j, c] = max of the cell at (dy + i*p, dx + j*p)."""
  b, h, w, c = x.shape
  n_h, n_w = (h - pool + 1) // pool, (w - pool + 1) // pool
  out = np.zeros((pool * pool, b, n_h, n_w, c), x.dtype)
  for dy in range(pool):
    for dx in range(pool):
      for i in range(n_h):
        for j in range(n_w):
          top, left = dy + i * pool, dx + j * pool
          cell = x[:, top:top + pool, left:left + pool, :]
          out[dy * pool + dx, :, i, j, :] = cell.max(axis=(1, 2))
  return out


def naive_interleave(maps: np.ndarray, pool: int) -> np.ndarray:
  p2, b, h, w, k = maps.shape
  out = np.zeros((b, h * pool, w * pool, k), maps.dtype)
  for dy in range(pool):
    for dx in range(pool):
      for i in range(h):
        for j in range(w):
          out[:, i * pool + dy, j * pool + dx, :] = maps[dy * pool + dx, :, i, j, :]
  return out


@pytest.mark.parametrize("pool", [2, 3])
def test_spec_1d_example_20_inputs(pool):
  """SPEC A4, 1-D, 20 inputs (1-based) and pool 3: d=0 pools [1..3],...,[16..18]; d=1 [2..4],...,
  [17..19]; d=2 [3..5],...,[18..20]. With increasing values a cell's max is its last input, with
  decreasing values its first, so together they pin every cell's extent. Pool 2 likewise."""
  values = np.arange(1, 21, dtype=np.float32)
  n = (20 - pool + 1) // pool
  for sign in (1.0, -1.0):
    # Rows carry the 1-D signal, constant across columns; width 2 * pool - 1 is the narrowest map
    # with one full cell at every dx.
    x = np.broadcast_to((sign * values)[None, :, None, None], (1, 20, 2 * pool - 1, 1))
    out = np.asarray(pooling.offset_max_pool(jnp.asarray(x), pool))  # [P*P, 1, n, 1, 1]
    assert out.shape == (pool * pool, 1, n, 1, 1)
    for d in range(pool):
      got = sign * out[d * pool + 0, 0, :, 0, 0]
      first = [1 + d + i * pool for i in range(n)]  # 1-based first input of each cell
      expected = [f + pool - 1 for f in first] if sign > 0 else first
      np.testing.assert_array_equal(got, expected)
  if pool == 3:  # The paper's listing, literally.
    x = jnp.asarray(values)[None, :, None, None] * jnp.ones((1, 20, 5, 1))
    out = pooling.offset_max_pool(x, 3)[:, 0, :, 0, 0]
    np.testing.assert_array_equal(out[0], [3, 6, 9, 12, 15, 18])  # [1..3], ..., [16..18]
    np.testing.assert_array_equal(out[3], [4, 7, 10, 13, 16, 19])  # [2..4], ..., [17..19]
    np.testing.assert_array_equal(out[6], [5, 8, 11, 14, 17, 20])  # [3..5], ..., [18..20]


@pytest.mark.parametrize("pool,shape", [(2, (2, 9, 12, 3)), (3, (2, 17, 20, 4)), (3, (1, 5, 7, 2)),
                                        (2, (3, 3, 4, 1))])
def test_offset_max_pool_matches_naive_loop(pool, shape):
  x = np.random.default_rng(pool + shape[1]).normal(size=shape).astype(np.float32)
  got = np.asarray(pooling.offset_max_pool(jnp.asarray(x), pool))
  np.testing.assert_array_equal(got, naive_offset_pool(x, pool))


def test_offset_order_is_dy_major():
  np.testing.assert_array_equal(pooling.offset_grid(2), [[0, 0], [0, 1], [1, 0], [1, 1]])
  assert pooling.offset_grid(3)[5].tolist() == [1, 2]


def test_offset_max_pool_is_one_vmapped_body_not_a_python_loop():
  """A Python loop over the 9 offsets would trace 9 reductions; the vmap traces one."""
  x = jnp.zeros((1, 17, 17, 2))
  jaxpr = jax.make_jaxpr(lambda a: pooling.offset_max_pool(a, 3))(x).jaxpr
  assert primitive_count(jaxpr, "reduce_max") == 1


def primitive_count(jaxpr: jax.extend.core.Jaxpr, name: str) -> int:
  """How many equations of primitive `name` a jaxpr holds, those of inner jaxprs (a custom_vjp's
  body) included."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == name
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)  # a ClosedJaxpr wraps a Jaxpr
      if hasattr(inner, "eqns"):
        count += primitive_count(inner, name)
  return count


def test_offset_max_pool_jits():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 11, 8, 3)).astype(np.float32))
  got = jax.jit(pooling.offset_max_pool, static_argnums=1)(x, 3)
  np.testing.assert_array_equal(got, naive_offset_pool(np.asarray(x), 3))


def test_offset_max_pool_rejects_too_small_map():
  with pytest.raises(ValueError, match="at least 5"):
    pooling.offset_max_pool(jnp.zeros((1, 4, 9, 1)), 3)


@pytest.mark.parametrize("pool,hw", [(2, (3, 4)), (3, (2, 5)), (1, (3, 3))])
def test_interleave_matches_naive_loop(pool, hw):
  maps = np.random.default_rng(pool).normal(size=(pool * pool, 2) + hw + (5,)).astype(np.float32)
  got = np.asarray(pooling.interleave_offsets(jnp.asarray(maps), pool))
  np.testing.assert_array_equal(got, naive_interleave(maps, pool))


def test_interleave_rejects_wrong_offset_count():
  with pytest.raises(ValueError, match="pool \\* pool = 9"):
    pooling.interleave_offsets(jnp.zeros((4, 1, 2, 2, 3)), 3)


def test_pool_then_interleave_is_a_stride_one_sliding_max():
  """Offset pooling + interleave = a pool x pool max at every position (stride 1): cell (u, v) of
  the interleaved map is the max over input rows u..u+pool-1 and columns v..v+pool-1."""
  x = np.random.default_rng(3).normal(size=(2, 14, 11, 3)).astype(np.float32)
  pool = 3
  pooled = pooling.offset_max_pool(jnp.asarray(x), pool)
  fine = np.asarray(pooling.interleave_offsets(pooled, pool))
  assert fine.shape == (2, 12, 9, 3)  # n = 4 and 3 cells per offset, x 3
  for u in range(fine.shape[1]):
    for v in range(fine.shape[2]):
      np.testing.assert_array_equal(fine[:, u, v], x[:, u:u + pool, v:v + pool].max(axis=(1, 2)))


@pytest.mark.parametrize("pool,shape", [(2, (2, 9, 12, 3)), (3, (1, 17, 8, 2)), (1, (1, 3, 3, 1))])
def test_max_pool_floor_matches_naive(pool, shape):
  x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
  b, h, w, c = shape
  expected = np.zeros((b, h // pool, w // pool, c), np.float32)
  for i in range(h // pool):
    for j in range(w // pool):
      expected[:, i, j] = x[:, i * pool:(i + 1) * pool, j * pool:(j + 1) * pool].max(axis=(1, 2))
  np.testing.assert_array_equal(np.asarray(pooling.max_pool(jnp.asarray(x), pool)), expected)
  # Offset 0 of the offset pooling is the same pooling (on the cells it keeps).
  if pool > 1:
    off0 = np.asarray(pooling.offset_max_pool(jnp.asarray(x), pool)[0])
    np.testing.assert_array_equal(off0, expected[:, :off0.shape[1], :off0.shape[2]])


@pytest.mark.parametrize("pool,shape", [(2, (2, 9, 12, 3)), (3, (1, 17, 8, 2)), (1, (1, 3, 3, 1))])
def test_max_pool_gradient_splits_ties_like_a_naive_loop(pool, shape):
  """The hand-written backward pass: each cell's gradient shared equally by its tied maxima (JAX's
  rule for a max), nothing for the rows and columns the floor drops. Integer inputs tie often."""
  x = np.random.default_rng(8).integers(-2, 3, size=shape).astype(np.float32)
  b, h, w, c = shape
  cotangent = np.random.default_rng(9).normal(size=(b, h // pool, w // pool, c)).astype(np.float32)
  expected = np.zeros(shape, np.float32)
  for n, i, j, k in np.ndindex(*cotangent.shape):
    cell = x[n, i * pool:(i + 1) * pool, j * pool:(j + 1) * pool, k]
    ties = cell == cell.max()
    expected[n, i * pool:(i + 1) * pool, j * pool:(j + 1) * pool, k] += (
        ties * cotangent[n, i, j, k] / ties.sum())
  grad = jax.jit(jax.grad(lambda a: jnp.sum(pooling.max_pool(a, pool) * cotangent)))(x)
  np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
  if pool > 1:
    assert np.sum(grad != 0) > np.sum(cotangent != 0)  # ties did share
