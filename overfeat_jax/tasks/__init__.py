"""Tasks: one module per task, chosen by `config.task` through the plain dict `TASKS`.

Each module provides `training_task(config) -> base.Task` (model, loss, data for the training loop)
and `restore_params(config, workdir) -> (params, step)` (for evaluation). Tasks import models, ops
and data; training and evaluation import tasks, never each other.
"""

from __future__ import annotations

from types import ModuleType

import ml_collections

from overfeat_jax.errors import ConfigError
from overfeat_jax.tasks import classification, faster_rcnn

TASKS: dict[str, ModuleType] = {
    "classification": classification,
    "faster_rcnn": faster_rcnn,
}


def get_task(config: ml_collections.ConfigDict) -> ModuleType:
  """The module of `config.task`; ConfigError naming the known tasks otherwise."""
  try:
    return TASKS[config.task]
  except KeyError:
    raise ConfigError(f"unknown config.task {config.task!r}; known tasks: {', '.join(TASKS)}") from None
