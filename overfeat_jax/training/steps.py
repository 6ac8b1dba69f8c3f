"""One pure training step (STYLE "Take" 2-3), generic over tasks.

A task supplies `loss_fn(params, batch, rng) -> (loss, aux)`; `train_step` differentiates it, applies
the optimizer and returns the new state with scalar metrics. `compile_train_step` binds the static
parts with `functools.partial` and jits over the mesh (state replicated and donated, batch sharded).
`nonfinite_params` is the check before a save: a NaN parameter can come with a finite loss.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from jax.sharding import Mesh

from overfeat_jax import mesh as mesh_lib
from overfeat_jax.tasks.base import Batch, LossFn
from overfeat_jax.training.state import TrainState


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, loss_fn: LossFn,
               tx: optax.GradientTransformation,
               lr_schedule: optax.Schedule) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on one global batch.

  Args:
    state: the state before the step.
    batch: global arrays, leading axis the batch (sharded over devices).
    rng: the run's base key; the step's dropout key is `fold_in(rng, state.step)`, so a resumed run
      draws the same dropout masks as an uninterrupted one.
    loss_fn, tx, lr_schedule: bound with `functools.partial` before jit.
  Returns:
    (new state, metrics): metrics {'loss', 'learning_rate', plus the loss_fn's aux} as [] float32;
    `learning_rate` is the rate this step used.
  """
  step_rng = jax.random.fold_in(rng, state.step)

  def loss_of_params(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    return loss_fn(params, batch, step_rng)

  (loss, aux), grads = jax.value_and_grad(loss_of_params, has_aux=True)(state.params)
  metrics = {"loss": loss, "learning_rate": lr_schedule(state.step), **aux}
  return state.apply_gradients(grads, tx), metrics


def compile_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
                       mesh: Mesh) -> Callable[[TrainState, Batch, jax.Array],
                                               tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step` jitted over `mesh`: state and rng replicated, batch sharded, state donated."""
  replicated = mesh_lib.replicated(mesh)
  step = functools.partial(train_step, loss_fn=loss_fn, tx=tx, lr_schedule=lr_schedule)
  return jax.jit(step,
                 in_shardings=(replicated, mesh_lib.batch_sharded(mesh), replicated),
                 out_shardings=(replicated, replicated),
                 donate_argnums=0)


@jax.jit
def _finite_leaves(params: Any) -> Any:
  return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), params)  # one [] bool per parameter


def nonfinite_params(params: Any) -> list[str]:
  """Names ('Dense_0/kernel', ...) of the parameters holding a NaN or Inf; [] when all are finite."""
  finite = jax.device_get(_finite_leaves(params))
  return [name for name, ok in traverse_util.flatten_dict(finite, sep="/").items() if not ok]
