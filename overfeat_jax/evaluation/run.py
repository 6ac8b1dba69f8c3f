"""The evaluation entry point: validate the config, then run the evaluator of `config.task`.

Evaluators are chosen through the plain dict `EVALUATORS` (task name -> evaluate(config, workdir)).
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from overfeat_jax import tasks
from overfeat_jax.config import validate_config
from overfeat_jax.evaluation import classification, faster_rcnn

EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "classification": classification.evaluate,
    "faster_rcnn": faster_rcnn.evaluate,
}


def run(config: ml_collections.ConfigDict, workdir: str, **kwargs: Any) -> dict[str, Any]:
  """Validates `config` and evaluates the latest checkpoint in `workdir`: what evaluate.py runs.

  Returns the evaluator's results (also written to `workdir/eval/metrics.json`).
  Raises:
    ConfigError, DataError, CheckpointError, InputSizeError: one-line user errors.
  """
  validate_config(config)
  tasks.get_task(config)  # the task must exist even where its evaluator is missing
  return EVALUATORS[config.task](config, workdir, **kwargs)
