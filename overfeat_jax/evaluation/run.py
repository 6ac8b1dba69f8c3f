"""The evaluation entry points: validate the config, then run the evaluator of `config.task`.

Evaluators are chosen through plain dicts keyed by task name: `EVALUATORS` (evaluate(config, workdir)
-> result, what evaluate.py runs), `SCALARS` (result -> the metrics logged, the headline first) and
`PERIODIC` (config -> the evaluation `training.loop` runs every train.eval_every steps; train.py
passes it in, as training never imports evaluation).

evaluate.py's results are logged as training's are (`metrics_writer`), in the log directory
`<workdir>/eval`: one record per evaluated checkpoint step in eval/metrics.jsonl and TensorBoard
events, so `tensorboard --logdir <workdir>` shows the full evaluation as the run "eval" beside the
training run's periodic (subset) one under the same tags; eval/run_info.json records the
environment. Re-evaluating a step replaces its record.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import ml_collections

from overfeat_jax import files, metrics_writer, run_info, tasks
from overfeat_jax.config import validate_config
from overfeat_jax.errors import ConfigError
from overfeat_jax.evaluation import classification, detection_overfeat, faster_rcnn, localization, outputs

EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "classification": classification.evaluate,
    "faster_rcnn": faster_rcnn.evaluate,
    "localization": localization.evaluate,
    "detection": detection_overfeat.evaluate,
}
SCALARS: dict[str, Callable[[dict[str, Any]], dict[str, float]]] = {
    "classification": classification.scalars,
    "faster_rcnn": faster_rcnn.scalars,
    "localization": localization.scalars,
    "detection": detection_overfeat.scalars,
}
SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "classification": classification.summary,
    "faster_rcnn": faster_rcnn.summary,
    "localization": localization.summary,
    "detection": detection_overfeat.summary,
}
PERIODIC: dict[str, Callable[[ml_collections.ConfigDict], Callable[[Any, int], dict[str, float]]]] = {
    "classification": classification.periodic_evaluation,
    "faster_rcnn": faster_rcnn.periodic_evaluation,
}


def log_dir(workdir: str) -> str:
  """Where evaluate.py logs: `<workdir>/eval`."""
  return os.path.join(workdir, outputs.EVAL_SUBDIR)


def run(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = True,
        **kwargs: Any) -> dict[str, Any]:
  """Validates `config` and evaluates the latest checkpoint in `workdir`: what evaluate.py runs.

  Returns the evaluator's results (also written to `workdir/eval/metrics.json`), then logs its
  scalars and the environment in `workdir/eval` (process 0) and, with `verbose`, prints a summary
  line. In a run of several processes only process 0 prints (tables, progress, summary).
  Raises:
    ConfigError, DataError, CheckpointError, InputSizeError, WorkdirError: one-line user errors.
  """
  validate_config(config)
  tasks.get_task(config)  # the task must exist even where its evaluator is missing
  verbose = verbose and jax.process_index() == 0  # every process evaluates; process 0 prints
  result = EVALUATORS[config.task](config, workdir, verbose=verbose, **kwargs)
  step = result["checkpoint_step"]
  directory = log_dir(workdir)
  # resume_step = step - 1: a record of this step (an earlier evaluation of it) is replaced.
  with metrics_writer.MetricsWriter(directory, resume_step=step - 1,
                                    tensorboard=config.train.tensorboard) as metrics:
    metrics.write(step, SCALARS[config.task](result))
  run_info.record(directory, command="evaluate", step=step)
  if verbose and metrics.active:
    places = [files.absolute(outputs.metrics_path(workdir)), files.absolute(metrics.path)]
    if metrics.events_path:
      places.append(f"TensorBoard (tensorboard --logdir {files.absolute(workdir)})")
    print(f"done: checkpoint step {step}, {SUMMARIES[config.task](result)}; metrics in "
          f"{', '.join(places[:-1])} and {places[-1]}", flush=True)
  return result


def periodic_evaluation(config: ml_collections.ConfigDict) -> Callable[[Any, int], dict[str, float]] | None:
  """The evaluation to run every config.train.eval_every steps (None when 0), for
  `training.loop.run(config, workdir, evaluate=...)`: config.task's evaluator on the first
  config.train.eval_num_examples examples of the eval split, built now.

  Raises:
    ConfigError, DataError, InputSizeError: the config cannot be evaluated.
  """
  validate_config(config)
  if not config.train.eval_every:
    return None
  tasks.get_task(config)
  if config.task not in PERIODIC:
    raise ConfigError(f"config.train.eval_every={config.train.eval_every}, but periodic evaluation is not "
                      f"available for task {config.task!r} (only {', '.join(PERIODIC)}): set it to 0 and "
                      f"run evaluate.py after training")
  return PERIODIC[config.task](config)
