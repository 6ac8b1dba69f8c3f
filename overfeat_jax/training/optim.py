"""The paper's optimizer (SPEC A3): SGD with momentum, L2 weight decay, a step-halving learning rate.

Weight decay is the classic L2 penalty: `weight_decay * w` is ADDED TO THE GRADIENT of every weight
before momentum (the gradient of `weight_decay / 2 * ||w||^2`), not decoupled AdamW-style. It applies
to kernels only (leaves with ndim >= 2: conv and FC-as-conv weights); biases (1-D leaves) are not
decayed, as in cuda-convnet-era nets, since pulling biases to zero does not regularise the function.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from overfeat_jax.errors import ConfigError

# The factor applied to the learning rate at each boundary of the schedule (SPEC A3: "halved").
HALVING_FACTOR = 0.5


def halving_boundaries(opt_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, ...]:
  """Steps at which the learning rate is halved: `epoch * steps_per_epoch` for each configured epoch.

  Raises:
    ConfigError: `steps_per_epoch` < 1, or `optimizer.halve_at_epochs` holds a negative or
      non-integer epoch.
  """
  if steps_per_epoch < 1:
    raise ConfigError(f"steps per epoch must be >= 1, got {steps_per_epoch} (is input.batch_size larger "
                      "than the training split?)")
  epochs = tuple(opt_cfg.halve_at_epochs)
  for epoch in epochs:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
      raise ConfigError(f"optimizer.halve_at_epochs must hold non-negative integer epochs, got {epochs}")
  return tuple(sorted(epoch * steps_per_epoch for epoch in epochs))


def learning_rate_schedule(opt_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The step-halving schedule (SPEC A3).

  `lr(step) = learning_rate * 0.5 ** (number of boundaries b with step >= b)`, where the boundaries
  are `epoch * steps_per_epoch` for each epoch in `optimizer.halve_at_epochs`: "halved after epoch
  30" means the first step of epoch 31 (0-based step `30 * steps_per_epoch`) uses the halved rate.
  `step` is the number of updates already applied (`TrainState.step`); a scalar int array or int.
  """
  boundaries = jnp.asarray(halving_boundaries(opt_cfg, steps_per_epoch), jnp.int32)  # [N]
  base = float(opt_cfg.learning_rate)

  def schedule(step: jax.Array | int) -> jax.Array:
    num_halvings = jnp.sum(jnp.asarray(step) >= boundaries)
    return jnp.asarray(base, jnp.float32) * HALVING_FACTOR ** num_halvings.astype(jnp.float32)

  return schedule


def decay_mask(params: Any) -> Any:
  """The pytree of booleans saying which leaves get weight decay: kernels (ndim >= 2), not biases."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(opt_cfg: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum `optimizer.momentum`, L2 weight decay `optimizer.weight_decay` on kernels.

  One update: `g' = g + wd * w` (kernels only), `v = momentum * v + g'`, `w = w - lr(step) * v`.

  Raises:
    ConfigError: a negative learning rate, momentum or weight decay, or a bad schedule (see
      `halving_boundaries`).
  """
  for key in ("learning_rate", "momentum", "weight_decay"):
    if opt_cfg[key] < 0:
      raise ConfigError(f"optimizer.{key} must be >= 0, got {opt_cfg[key]}")
  return optax.chain(
      optax.add_decayed_weights(float(opt_cfg.weight_decay), mask=decay_mask),
      optax.sgd(learning_rate_schedule(opt_cfg, steps_per_epoch), momentum=float(opt_cfg.momentum)),
  )
