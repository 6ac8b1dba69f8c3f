"""Model variables for tests without model.init (threefry compiles cost seconds per shape on CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from overfeat_jax.models.overfeat import OverFeat, build_architecture


def abstract_variables(model: OverFeat, size: int | None = None):
  """Variable shapes from jax.eval_shape (no parameter is allocated)."""
  size = size or model.arch.train_size
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda k, a: model.init(k, a, train=False), jax.random.key(0), x)


def random_variables(model: OverFeat, seed: int = 0):
  """Variables filled from numpy: kernels N(0, 2 / fan_in), biases N(0, 0.1^2) (non-zero, so a
  dropped bias would show)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "bias":
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    fan_in = np.prod(leaf.shape[:-1])
    return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract_variables(model))


def tiny(variant: str, num_classes: int = 5, **kwargs) -> OverFeat:
  """The paper's layers at 1/32 width with a 3x3/1 stem: seconds to run on a CPU."""
  arch = build_architecture(variant, width=1 / 32, stem_kernel=3, stem_stride=1, **kwargs)
  return OverFeat(arch, num_classes=num_classes, weight_init="he")
