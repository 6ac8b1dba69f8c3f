"""The generic training loop: mesh, one jitted step, progress, checkpoints, resume, graceful stop.

It knows nothing of a particular model: a `tasks.base.Task` supplies the parameters' init, the loss and
the data (`run` picks the task module of `config.task` and asks it for one). Everything a run
makes goes into `workdir` (DESIGN "Conventions"): `config.json`, `metrics.jsonl`, `checkpoints/`.
Rerunning the same command resumes from the last checkpoint, data position included.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from typing import Any, Callable

import jax
import ml_collections

from overfeat_jax import checkpoint_io
from overfeat_jax import mesh as mesh_lib
from overfeat_jax import tasks
from overfeat_jax.config import validate_config
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.tasks.base import Task
from overfeat_jax.training import checkpoint as checkpoint_lib
from overfeat_jax.training import optim
from overfeat_jax.training import progress as progress_lib
from overfeat_jax.training import steps as steps_lib
from overfeat_jax.training.interrupt import StopRequest
from overfeat_jax.training.state import TrainState

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """How a run ended: `state` at `step`; `stopped_by` is the signal number if SIGTERM/SIGINT stopped it."""
  state: TrainState
  step: int
  stopped_by: int | None


def total_steps(train_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`train.max_steps` if > 0, else `train.num_epochs * steps_per_epoch`."""
  total = train_cfg.max_steps if train_cfg.max_steps > 0 else train_cfg.num_epochs * steps_per_epoch
  if total < 1:
    raise ConfigError(f"nothing to train: train.num_epochs={train_cfg.num_epochs} x {steps_per_epoch} "
                      f"steps per epoch and train.max_steps={train_cfg.max_steps}")
  return total


def check_config_json(workdir: str, config: ml_collections.ConfigDict) -> None:
  """On resume: the workdir's config.json must describe the same model, else CheckpointError."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  differences = checkpoint_io.signature_differences(
      {"model": saved.get("model")}, {"model": checkpoint_io.as_json(config.model.to_dict())})
  if differences:
    raise CheckpointError(f"checkpoint in {os.path.abspath(workdir)} was written for a different model "
                          f"({path}): " + "; ".join(differences).replace("(checkpoint)", "(config.json)")
                          + " (use a new --workdir, or the config that wrote it)")


def write_config_json(workdir: str, config: ml_collections.ConfigDict) -> None:
  """The resolved config (defaults + overrides) as JSON, for the record and for resume checks."""
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json(indent=2) + "\n")
  os.replace(path + ".tmp", path)


def _init_compiler_options() -> dict[str, Any]:
  """XLA options for the one-off parameter init: on CPU, no backend optimisation.

  XLA:CPU spends ~15 s optimising the random-number code of a 2M-parameter init that then runs once
  (in 0.4 s unoptimised); the values are the same up to float rounding of the normal sampler, and the
  same on every run, so determinism is unaffected. Accelerators compile it quickly as is.
  """
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


def _stop_requested(stop: StopRequest) -> bool:
  """The stop flag, agreed by all processes (one host's SIGTERM stops every host at the same step)."""
  if jax.process_count() == 1:
    return stop.requested
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.process_allgather(int(stop.requested)).max())


def _restore_or_init(config: ml_collections.ConfigDict, workdir: str,
                     checkpoints: checkpoint_lib.TrainCheckpoints, mesh: jax.sharding.Mesh,
                     create_state: Callable[[jax.Array], TrainState], init_rng: jax.Array,
                     data_iterator: Any) -> tuple[TrainState, Any]:
  """The state and data iterator to start from: the latest checkpoint's, or fresh ones."""
  if checkpoints.latest_step() is None:
    state = jax.jit(create_state, out_shardings=mesh_lib.replicated(mesh),
                    compiler_options=_init_compiler_options())(init_rng)
    return state, data_iterator
  check_config_json(workdir, config)
  return checkpoints.restore(jax.eval_shape(create_state, init_rng), data_iterator, mesh)


def train(config: ml_collections.ConfigDict, workdir: str, task: Task) -> TrainResult:
  """Trains `task` for `train.max_steps` or `train.num_epochs` epochs, resuming from `workdir`.

  Reads config.seed, config.input.batch_size, config.optimizer, config.train and (for the resume
  check) config.model. Prints progress on process 0.
  Raises:
    ConfigError: the global batch does not split over the devices, or a bad train/optimizer value.
    CheckpointError: the workdir holds a checkpoint of a different model.
    LossNotFiniteError: the loss became NaN/Inf (names the step).
  """
  is_chief = jax.process_index() == 0
  out = sys.stdout if is_chief else None
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(config.input.batch_size, mesh)
  num_steps = total_steps(config.train, task.steps_per_epoch)
  schedule = optim.learning_rate_schedule(config.optimizer, task.steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, task.steps_per_epoch)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))

  def create_state(rng: jax.Array) -> TrainState:
    return TrainState.create(task.init_params(rng), tx)

  abstract_params = jax.eval_shape(create_state, init_rng).params  # shapes before allocating
  os.makedirs(workdir, exist_ok=True)
  checkpoints = checkpoint_lib.TrainCheckpoints(
      workdir, keep=config.train.keep_checkpoints,
      signature=checkpoint_io.make_signature(task.signature, abstract_params))
  try:
    state, data_iterator = _restore_or_init(
        config, workdir, checkpoints, mesh, create_state, init_rng,
        iter(task.make_loader(jax.process_index(), jax.process_count())))
    if is_chief:
      write_config_json(workdir, config)
    step = int(state.step)
    if out:
      print(f"{'resuming from' if step else 'starting at'} step {step}/{num_steps} "
            f"({task.steps_per_epoch} steps per epoch, global batch {config.input.batch_size} on "
            f"{mesh.devices.size} device(s)); workdir {os.path.abspath(workdir)}", file=out, flush=True)
    train_step = steps_lib.compile_train_step(task.loss_fn, tx, schedule, mesh)
    log = progress_lib.ProgressLog(workdir if is_chief else None, total_steps=num_steps,
                                   images_per_step=config.input.batch_size, start_step=step, stream=out)
    stopped_by = None
    with StopRequest() as stop:
      while step < num_steps:
        batch = mesh_lib.to_global(next(data_iterator), mesh)
        state, metrics = train_step(state, batch, dropout_rng)
        step += 1
        log.record(step, metrics)
        stopping = _stop_requested(stop)
        if step % config.train.log_every == 0 or step == num_steps or stopping:
          log.flush(step)
        if step % config.train.checkpoint_every == 0 or step == num_steps or stopping:
          log.check_finite()  # never save NaN parameters
          checkpoints.save(step, state, data_iterator)
        if stopping:
          stopped_by = int(stop.signum or signal.SIGTERM)  # no local signal: another host's
          if out:
            print(f"stopped by {signal.Signals(stopped_by).name} at step {step}/{num_steps}; checkpoint "
                  f"saved in {checkpoints.directory}; rerun the same command to resume",
                  file=out, flush=True)
          break
  finally:
    checkpoints.close()
  return TrainResult(state=state, step=step, stopped_by=stopped_by)


def run(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
  """Validates `config` and trains its task (`config.task`) in `workdir`: what train.py runs.

  Raises:
    ConfigError, DataError, CheckpointError, LossNotFiniteError: one-line user errors.
  """
  validate_config(config)
  return train(config, workdir, tasks.get_task(config).training_task(config))
