"""Tasks: one module per task, chosen by `config.task` through the plain dict `TASKS`.

Each module provides `training_task(config) -> base.Task` (model, loss, data for the training loop)
and `restore_params(config, workdir) -> (params, step)` (for evaluation). Tasks import models, ops
and data; training and evaluation import tasks, never each other.

A task trained in several stages one after the other (Faster R-CNN's 4-step alternating training)
also provides `training_stages(config, workdir) -> list[Stage]`; `training_stages` below gives every
other task's single stage.
"""

from __future__ import annotations

from types import ModuleType

import ml_collections

from overfeat_jax.errors import ConfigError
from overfeat_jax.tasks import classification, detection, faster_rcnn, localization
from overfeat_jax.tasks.base import Stage

TASKS: dict[str, ModuleType] = {
    "classification": classification,
    "faster_rcnn": faster_rcnn,
    "localization": localization,
    "detection": detection,
}


def get_task(config: ml_collections.ConfigDict) -> ModuleType:
  """The module of `config.task`; ConfigError naming the known tasks otherwise."""
  try:
    return TASKS[config.task]
  except KeyError:
    raise ConfigError(f"unknown config.task {config.task!r}; known tasks: {', '.join(TASKS)}") from None


def training_stages(config: ml_collections.ConfigDict, workdir: str) -> list[Stage]:
  """The stages of config.task's training, in order: the task's own `training_stages` if it has
  them, else one stage, `training_task(config)` in `workdir`."""
  module = get_task(config)
  stages = getattr(module, "training_stages", None)
  if stages is not None:
    return stages(config, workdir)
  return [Stage("", workdir, lambda: module.training_task(config))]
