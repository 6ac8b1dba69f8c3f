"""What every task gives the generic training loop (`overfeat_jax.training.loop`).

A task module (`overfeat_jax/tasks/<name>.py`) builds, from the config, its model, the parameters'
template and signature, the restore for evaluation, the loss and the data; `training_task(config)`
packs the training part into a `Task`. The loop knows nothing else of a task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Batch = dict[str, jax.Array]
# (params, global batch, dropout rng) -> (scalar loss, {name: scalar}) — differentiated w.r.t. params.
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage: a Task trained to the end in its own work directory (own checkpoints, so a
  killed run resumes at the stage it was in). `make_task` is called when the stage starts, after the
  stages before it are complete (it may read their checkpoints). `name` is '' for a single stage."""
  name: str
  workdir: str
  make_task: Callable[[], Task]


@dataclasses.dataclass(frozen=True)
class Task:
  """What the loop needs from a task.

  Attributes:
    init_params: rng key -> parameter pytree (pure; the loop calls it under `jax.eval_shape` and jit).
    loss_fn: (params, global batch, dropout rng) -> (scalar loss, {name: scalar}).
    make_loader: (process_index, process_count) -> a grain DataLoader / Dataset whose `iter()` yields
      this process's batches (dicts of numpy arrays, leading axis batch_size / process_count) forever,
      with a checkpointable iterator (get_state / set_state).
    steps_per_epoch: optimizer steps in one epoch of the training split.
    signature: JSON-able description of the model (stored with each checkpoint and compared on
      resume), e.g. {'model': config.model, 'num_classes': K}.
    trainable: None (every parameter trains), or params -> a pytree of bools like params: the
      optimizer updates the True leaves only and leaves the others bit for bit as they are, with no
      optimizer state (a frozen feature extractor; the loss should stop their gradients).
  """
  init_params: Callable[[jax.Array], Any]
  loss_fn: LossFn
  make_loader: Callable[[int, int], Any]
  steps_per_epoch: int
  signature: dict[str, Any]
  trainable: Callable[[Any], Any] | None = None
