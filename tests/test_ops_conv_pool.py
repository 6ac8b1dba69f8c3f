"""ops.conv_pool: the space-to-depth conv + bias + ReLU + max pool against the plain composition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.ops import pooling
from overfeat_jax.ops.conv_pool import conv_relu_max_pool, fold_kernel, space_to_depth


def plain(x, kernel, bias, pool):
  """The reference: lax.conv (VALID, stride 1), bias, ReLU, then ops.pooling.max_pool."""
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return pooling.max_pool(jax.nn.relu(y + bias), pool)


def random_layer(seed, shape, k, features):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  kernel = rng.normal(0, 0.3, (k, k, shape[-1], features)).astype(np.float32)
  bias = rng.normal(0, 0.1, features).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias)


# (input shape, kernel size, features, pool): the quickstart's stem and second layer, odd sizes (the
# floor drops rows), a 3 x 3 pool, a kernel smaller than the pool, and pool 1.
CASES = [((2, 20, 20, 3), 3, 12, 2), ((1, 19, 13, 12), 5, 8, 2), ((2, 17, 22, 2), 3, 4, 3),
         ((1, 9, 10, 3), 1, 5, 2), ((1, 7, 8, 2), 3, 3, 1)]


@pytest.mark.parametrize("shape,k,features,pool", CASES)
def test_matches_conv_relu_then_max_pool(shape, k, features, pool):
  x, kernel, bias = random_layer(0, shape, k, features)
  expected = plain(x, kernel, bias, pool)
  got = jax.jit(conv_relu_max_pool, static_argnums=3)(x, kernel, bias, pool)
  assert got.shape == expected.shape == (shape[0], (shape[1] - k + 1) // pool,
                                         (shape[2] - k + 1) // pool, features)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,k,features,pool", CASES)
def test_gradients_match_the_plain_composition(shape, k, features, pool):
  x, kernel, bias = random_layer(1, shape, k, features)
  out_shape = plain(x, kernel, bias, pool).shape
  cotangent = jnp.asarray(np.random.default_rng(2).normal(size=out_shape).astype(np.float32))

  def grads(fn):
    return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, pool) * cotangent), argnums=(0, 1, 2)))(
        x, kernel, bias)

  for got, expected in zip(grads(conv_relu_max_pool), grads(plain)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(expected).sum()) > 0


def test_tied_maxima_share_the_gradient_as_max_pool_does():
  """A constant image and a 1 x 1 kernel tie all four cells of every pool: each gets a quarter."""
  x = jnp.ones((1, 4, 4, 1))
  kernel, bias = jnp.ones((1, 1, 1, 2)), jnp.zeros((2,))
  grad = jax.grad(lambda a: jnp.sum(conv_relu_max_pool(a, kernel, bias, 2)))(x)
  np.testing.assert_allclose(grad, np.full((1, 4, 4, 1), 0.5))  # 2 features x 1/4 each


def test_space_to_depth_and_folded_kernel_layout():
  """Channel (a, b, c) of the folded map is pixel (p i + a, p j + b); the folded kernel computes the
  conv outputs (p i + u, p j + v) in channel group (u, v)."""
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  s2d = space_to_depth(x, 2)
  assert s2d.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(s2d[1, 1, 2].reshape(2, 2, 3), x[1, 2:4, 4:6])
  _, kernel, _ = random_layer(3, (1, 1, 1, 3), 3, 5)
  folded = fold_kernel(kernel, 2)
  assert folded.shape == (2, 2, 12, 20)  # ceil((3 + 1) / 2) = 2 taps per axis
  y = jax.lax.conv_general_dilated(space_to_depth(jnp.asarray(np.random.default_rng(4).normal(
      size=(1, 8, 8, 3)), jnp.float32), 2), folded, (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert y.shape == (1, 3, 3, 20)


def test_too_small_map_is_refused():
  x, kernel, bias = random_layer(5, (1, 3, 8, 2), 3, 4)
  with pytest.raises(ValueError, match="3x8 map gives no 2x2 cell after a 3x3 convolution"):
    conv_relu_max_pool(x, kernel, bias, 2)
