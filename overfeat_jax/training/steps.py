"""One pure training step (STYLE "Take" 2-3) and the classification loss (SPEC A3).

A task supplies `loss_fn(params, batch, rng) -> (loss, aux)`; `train_step` differentiates it, applies
the optimizer and returns the new state with scalar metrics. `compile_train_step` binds the static
parts with `functools.partial` and jits over the mesh (state replicated and donated, batch sharded).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from overfeat_jax.training import mesh as mesh_lib
from overfeat_jax.training.state import TrainState

Batch = dict[str, jax.Array]
# (params, batch, dropout rng) -> (scalar loss, {name: scalar}) — differentiated w.r.t. params.
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# (params, images [B, S, S, 3], dropout rng) -> logits [B, K]
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy (SPEC A3).

  Args:
    logits: [B, K] float.
    labels: [B] int32 class indices in [0, K).
  Returns:
    [] float32, the mean over the batch of -log softmax(logits)[label].
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)  # [B]
  return jnp.mean(losses)


def top1_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose highest logit is the label: logits [B, K], labels [B] -> [] float32."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def classification_loss_fn(apply_fn: ApplyFn) -> LossFn:
  """The classification loss for a model: batch {'image': [B, S, S, 3], 'label': [B]} -> CE, accuracy."""

  def loss_fn(params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = apply_fn(params, batch["image"], rng)  # [B, K]
    return softmax_cross_entropy(logits, batch["label"]), {"accuracy": top1_accuracy(logits, batch["label"])}

  return loss_fn


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
