"""The paper's optimizer (SPEC A3): SGD with momentum, L2 weight decay, a step-halving learning rate.

Weight decay is the classic L2 penalty: `weight_decay * w` is ADDED TO THE GRADIENT of every weight
before momentum (the gradient of `weight_decay / 2 * ||w||^2`), not decoupled AdamW-style. It applies
to kernels only (leaves with ndim >= 2: conv and FC-as-conv weights); biases (1-D leaves) are not
decayed, as in cuda-convnet-era nets, since pulling biases to zero does not regularise the function.

Momentum comes in two flavours (`optimizer.dampening`): heavy-ball, v <- m v + g (optax's SGD,
dampening 0), and Torch7's damped momentum, v <- m v + (1 - d) g, which the paper's trainer used with
d = m by default. (Torch7 starts its buffer at the first undamped gradient; here it starts at zero,
so only the first step differs, by the factor 1 - d.)

Config values are validated once, by `overfeat_jax.config.validate_config`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

def learning_rate_schedule(opt_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The step-halving schedule (SPEC A3), after an optional linear warm-up.

  `lr(step) = learning_rate * d ** (number of boundaries b with step >= b) * warmup(step)`, where
  d = `optimizer.decay_factor` (0.5: "halved"; Faster R-CNN's 0.1) and
  the boundaries are `round(epoch * steps_per_epoch)` for each epoch in `optimizer.halve_at_epochs`
  (fractional epochs allowed, for schedules shorter than an epoch): "halved
  after epoch 30" means the first step of epoch 31 (0-based step `30 * steps_per_epoch`) uses the
  halved rate. `warmup(step) = min(1, (step + 1) / warmup_steps)` with `warmup_steps =
  round(warmup_epochs * steps_per_epoch)` (1 without warm-up). `step` is the number of updates already
  applied (`TrainState.step`); a scalar int array or int.
  """
  # round(): a fractional epoch (a schedule shorter than one epoch) falls on the nearest step; two
  # epochs that fall on the same step both count there
  halvings: dict[int, float] = {}
  for epoch in opt_cfg.halve_at_epochs:
    boundary = round(float(epoch) * steps_per_epoch)
    halvings[boundary] = halvings.get(boundary, 1.0) * float(opt_cfg.decay_factor)
  halving = optax.piecewise_constant_schedule(float(opt_cfg.learning_rate), halvings)
  warmup_steps = round(float(opt_cfg.warmup_epochs) * steps_per_epoch)
  if warmup_steps <= 1:
    return halving

  def schedule(step: jax.Array | int) -> jax.Array:
    ramp = jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps)
    return halving(step) * ramp

  return schedule


def decay_mask(params: Any) -> Any:
  """The pytree of booleans saying which leaves get weight decay: kernels (ndim >= 2), not biases."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(opt_cfg: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum m, dampening d and L2 weight decay wd on kernels.

  One update: `g' = g + wd * w` (kernels only), `v = m * v + (1 - d) * g'`, `w = w - lr(step) * v`.
  """
  dampening = float(opt_cfg.dampening)
  return optax.chain(
      optax.add_decayed_weights(float(opt_cfg.weight_decay), mask=decay_mask),
      optax.scale(1.0 - dampening) if dampening else optax.identity(),
      optax.sgd(learning_rate_schedule(opt_cfg, steps_per_epoch), momentum=float(opt_cfg.momentum)),
  )


# The update of a frozen parameter: x + (-0.0) == x bit for bit for every float x (IEEE 754's
# additive identity; +0.0 is not one: -0.0 + 0.0 = +0.0), so `optax.apply_updates` leaves it as it is.
FROZEN_UPDATE = -0.0


def _frozen() -> optax.GradientTransformation:
  """Updates of FROZEN_UPDATE whatever the gradient, and no state."""

  def update(updates: Any, state: optax.OptState, params: Any = None) -> tuple[Any, optax.OptState]:
    del params
    return jax.tree.map(lambda g: jnp.full_like(g, FROZEN_UPDATE), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def only_trainable(tx: optax.GradientTransformation,
                   trainable: Callable[[Any], Any]) -> optax.GradientTransformation:
  """`tx` on the leaves that `trainable(params)` (a pytree of bools like params) marks True; the
  others are frozen: left bit for bit as they are, with no optimizer state (no momentum buffer)."""

  def labels(params: Any) -> Any:
    return jax.tree.map(lambda t: "trainable" if t else "frozen", trainable(params))

  return optax.multi_transform({"trainable": tx, "frozen": _frozen()}, labels)
