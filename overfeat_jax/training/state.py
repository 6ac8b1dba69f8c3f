"""The training state: one typed pytree holding everything that changes from step to step."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Step count, parameters and optimizer state (all leaves are arrays; the optimizer is not here).

  The optimizer (an `optax.GradientTransformation`) is bound into the step function with
  `functools.partial`, so the state is pure data: it can be checkpointed, `jax.eval_shape`d and
  donated as a whole.

  Attributes:
    step: [] int32, number of updates applied so far (the learning-rate schedule reads it).
    params: the model parameters (float32 leaves).
    opt_state: the optimizer state for `params`.
  """
  step: jax.Array
  params: Any
  opt_state: optax.OptState

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A state at step 0 with the optimizer initialised for `params`."""
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> TrainState:
    """One optimizer update: `grads` has the structure of `params`."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)
