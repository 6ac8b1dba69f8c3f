"""The generic training loop: mesh, one jitted step, progress, checkpoints, resume, graceful stop.

It knows nothing of a particular model: a `tasks.base.Task` supplies the parameters' init, the loss and
the data (`run` picks the task module of `config.task` and asks it for one), and the entry point may
pass an evaluation to run every `train.eval_every` steps (training never imports evaluation).
Everything a run makes goes into `workdir` (DESIGN "Conventions"): `config.json`, `run_info.json`,
`metrics.jsonl` and TensorBoard event files (`metrics_writer`), `checkpoints/`. Rerunning the same
command resumes from the newest intact checkpoint, data position included; one run at a time holds a
workdir (`workdir.WorkdirLock`), and a resume may change only what `run_config` allows. A run ends
with one summary line: the step, the last loss (and evaluation), where the checkpoints and metrics are.

Several processes (`overfeat_jax.multihost`) run the same loop, each feeding its slots of every global
batch; only process 0 prints, holds the lock and writes the workdir's small files, and all take part in
each checkpoint. A signal stops a single process after the current step; several processes agree on it
at the next log or checkpoint step (`_stop_agreed`), then all save that step and stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
from typing import Any, Callable, TextIO

import jax
import ml_collections

from overfeat_jax import checkpoint_io, files
from overfeat_jax import mesh as mesh_lib
from overfeat_jax import metrics_writer
from overfeat_jax import run_info
from overfeat_jax import tasks
from overfeat_jax.config import validate_config
from overfeat_jax.errors import ConfigError, ParamsNotFiniteError
from overfeat_jax.tasks.base import Task
from overfeat_jax.training import checkpoint as checkpoint_lib
from overfeat_jax.training import optim
from overfeat_jax.training import progress as progress_lib
from overfeat_jax.training import run_config
from overfeat_jax.training import steps as steps_lib
from overfeat_jax.training.interrupt import StopRequest
from overfeat_jax.training.state import TrainState
from overfeat_jax.training.workdir import WorkdirLock


# (replicated params, step) -> {"eval/...": value}, the headline metric first (the summary line quotes
# it); called on every process, which all take part in the evaluation.
EvalFn = Callable[[Any, int], dict[str, float]]


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


def _init_compiler_options() -> dict[str, Any]:
  """XLA options for the one-off parameter init: on CPU, no backend optimisation.

  XLA:CPU spends ~15 s optimising the random-number code of a 2M-parameter init that then runs once
  (in 0.4 s unoptimised); the values are the same up to float rounding of the normal sampler, and the
  same on every run, so determinism is unaffected. Accelerators compile it quickly as is.
  """
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


def _stop_agreed(stop: StopRequest, at_boundary: bool) -> bool:
  """Whether to stop after this step: this process's flag (one process, at every step), or the flags
  of all processes, gathered only `at_boundary` (a log or checkpoint step, where the loop waits for
  the devices anyway) so that there is no blocking collective at every step. Every process then
  stops at the same step, whichever host the signal reached (SIGTERM to one host stops them all)."""
  if jax.process_count() == 1:
    return stop.requested
  if not at_boundary:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.process_allgather(int(stop.requested)).max())


def _start(config: ml_collections.ConfigDict, workdir: str, task: Task,
           checkpoints: checkpoint_lib.TrainCheckpoints, mesh: jax.sharding.Mesh,
           create_state: Callable[[jax.Array], TrainState], init_rng: jax.Array,
           num_steps: int, out: TextIO | None) -> tuple[TrainState, Any]:
  """The state and data iterator to start from: the newest intact checkpoint's (once the resume is
  checked against config.json), or fresh ones; writes config.json (process 0) and says which."""
  resuming = checkpoints.latest_step() is not None
  changes = run_config.check_resume(workdir, config) if resuming else {}
  data_iterator = iter(task.make_loader(jax.process_index(), jax.process_count()))
  if resuming:
    state, data_iterator = checkpoints.restore(
        jax.eval_shape(create_state, init_rng), data_iterator, mesh,
        config_checked=run_config.read_saved(workdir) is not None)
  else:
    state = jax.jit(create_state, out_shardings=mesh_lib.replicated(mesh),
                    compiler_options=_init_compiler_options())(init_rng)
  step = int(state.step)
  if jax.process_index() == 0:
    run_config.save(workdir, config, step=step, changes=changes)
    run_info.record(workdir, command="train", step=step)
  if out:
    print(f"{'resuming from' if step else 'starting at'} step {step}/{num_steps} "
          f"({task.steps_per_epoch} steps per epoch, global batch {config.input.batch_size} on "
          f"{mesh.devices.size} device(s)); workdir {files.absolute(workdir)}", file=out, flush=True)
    if changes:
      print(f"config changed on resume (recorded in {run_config.CHANGES_FILE}): " + "; ".join(
          f"{key} {old} -> {new}" for key, (old, new) in changes.items()), file=out, flush=True)
  return state, data_iterator


def _check_params_finite(state: TrainState, step: int, checkpoints: checkpoint_lib.TrainCheckpoints) -> None:
  """Raises ParamsNotFiniteError naming `step` and the parameters if any holds a NaN or Inf."""
  bad = steps_lib.nonfinite_params(state.params)
  if bad:
    raise ParamsNotFiniteError(
        f"parameter(s) {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} became NaN or Inf by step "
        f"{step} although the loss is finite; not saved (the newest checkpoint, step "
        f"{checkpoints.latest_step()}, is untouched): lower optimizer.learning_rate or look for a NaN "
        "gradient in the loss")


def _summary(step: int, num_steps: int, stopped_by: int | None, workdir: str,
             metrics: metrics_writer.MetricsWriter, checkpoints: checkpoint_lib.TrainCheckpoints,
             headline: str | None) -> str:
  """The run's last line: where it ended, the newest loss (and headline evaluation), where things are."""
  stopped = f" (stopped by {signal.Signals(stopped_by).name})" if stopped_by else ""
  parts = [f"step {step}/{num_steps}{stopped}"]
  for key in ("loss", headline):
    newest = metrics.newest(key) if key else None
    if newest is not None:
      parts.append(f"{key} {newest[1]:.4g} (step {newest[0]})")
  where = f"checkpoints in {checkpoints.directory}; metrics in {files.absolute(metrics.path)}"
  if metrics.events_path:
    where += f" and TensorBoard (tensorboard --logdir {files.absolute(workdir)})"
  return "done: " + ", ".join(parts) + "; " + where


def train(config: ml_collections.ConfigDict, workdir: str, task: Task, *,
          evaluate: EvalFn | None = None) -> TrainResult:
  """Trains `task` for `train.max_steps` or `train.num_epochs` epochs, resuming from `workdir`.

  Reads config.seed, config.input.batch_size, config.optimizer, config.train and (for the resume
  check, `run_config`) the whole config. Prints progress on process 0, which holds the workdir's lock
  (`workdir.WorkdirLock`) for the whole run. With config.train.eval_every > 0, `evaluate` runs after
  every eval_every-th step (not at a stop by signal), before that step's checkpoint (a kill during it
  redoes it on resume); its values are logged at that step as the training metrics are, and its time
  is left out of img/s.
  Raises:
    ConfigError: the global batch does not split over the devices, a bad train/optimizer value, or
      train.eval_every > 0 without an `evaluate`.
    WorkdirError: the workdir is a file, cannot be written (read-only, full) or is in use by another run.
    CheckpointError: the workdir holds checkpoints of a different model or config, none of them is
      intact, or a save failed (the newest complete checkpoint is left as it was).
    LossNotFiniteError, ParamsNotFiniteError: the loss or a parameter became NaN/Inf (names the step;
      nothing non-finite is saved).
  """
  eval_every = config.train.eval_every
  if eval_every and evaluate is None:
    raise ConfigError(f"config.train.eval_every={eval_every} but no evaluation was given to the training "
                      "loop (train.py passes evaluation.run.periodic_evaluation(config))")
  is_chief = jax.process_index() == 0
  out = sys.stdout if is_chief else None
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(config.input.batch_size, mesh)
  num_steps = total_steps(config.train, task.steps_per_epoch)
  schedule = optim.learning_rate_schedule(config.optimizer, task.steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, task.steps_per_epoch)
  if task.trainable is not None:
    tx = optim.only_trainable(tx, task.trainable)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))

  def create_state(rng: jax.Array) -> TrainState:
    return TrainState.create(task.init_params(rng), tx)

  abstract_params = jax.eval_shape(create_state, init_rng).params  # shapes before allocating
  with contextlib.ExitStack() as held:
    if is_chief:  # before anything in the workdir is read or written
      held.enter_context(WorkdirLock(workdir))
    checkpoints = held.enter_context(checkpoint_lib.TrainCheckpoints(
        workdir, keep=config.train.keep_checkpoints,
        signature=checkpoint_io.make_signature(task.signature, abstract_params)))
    state, data_iterator = _start(config, workdir, task, checkpoints, mesh, create_state, init_rng,
                                  num_steps, out)
    step = int(state.step)
    train_step = steps_lib.compile_train_step(task.loss_fn, tx, schedule, mesh)
    metrics = held.enter_context(metrics_writer.MetricsWriter(
        workdir, resume_step=step, tensorboard=config.train.tensorboard))
    log = progress_lib.ProgressLog(metrics, total_steps=num_steps,
                                   images_per_step=config.input.batch_size, start_step=step, stream=out)
    stopped_by, headline = None, None
    with StopRequest() as stop:
      while step < num_steps:
        batch = mesh_lib.to_global(next(data_iterator), mesh)
        state, step_metrics = train_step(state, batch, dropout_rng)
        stop.arm()  # the first step is compiled: from now on a signal saves, then stops
        step += 1
        log.record(step, step_metrics)
        log_step = step % config.train.log_every == 0 or step == num_steps
        stopping = _stop_agreed(stop, log_step or step % config.train.checkpoint_every == 0)
        if log_step or stopping:
          log.flush(step)
        if eval_every and step % eval_every == 0 and not stopping:
          log.check_finite()  # never evaluate (and log) a diverged state
          jax.block_until_ready(state)  # the steps before it are not the evaluation's time
          started = time.perf_counter()
          values = evaluate(state.params, step)
          metrics.write(step, values)
          headline = next(iter(values), None)
          log.exclude(time.perf_counter() - started)
        if step % config.train.checkpoint_every == 0 or step == num_steps or stopping:
          log.check_finite()  # never save NaN parameters
          _check_params_finite(state, step, checkpoints)
          checkpoints.save(step, state, data_iterator)
        if stopping:
          stopped_by = int(stop.signum or signal.SIGTERM)  # no local signal: another host's
          if out:
            print(f"stopped by {signal.Signals(stopped_by).name} at step {step}/{num_steps}; checkpoint "
                  f"saved in {checkpoints.directory}; rerun the same command to resume",
                  file=out, flush=True)
          break
      checkpoints.close()  # waits for the last save, still under StopRequest: a Ctrl-C does not lose it
    if out:
      print(_summary(step, num_steps, stopped_by, workdir, metrics, checkpoints, headline), file=out,
            flush=True)
  return TrainResult(state=state, step=step, stopped_by=stopped_by)


def run(config: ml_collections.ConfigDict, workdir: str, *, evaluate: EvalFn | None = None) -> TrainResult:
  """Validates `config` and trains its task (`config.task`) in `workdir`: what train.py runs, with
  `evaluate` from `evaluation.run.periodic_evaluation(config)` (see `train`).

  A task of several stages (`tasks.training_stages`) trains them in order, each in its own
  directory under `workdir`; a rerun passes quickly over the finished ones and resumes the one it
  was in. Returns the last stage's result (the stopped one's, if a signal stopped it).

  Raises:
    ConfigError, DataError, WorkdirError, CheckpointError, LossNotFiniteError, ParamsNotFiniteError:
      one-line user errors.
  """
  validate_config(config)
  stages = tasks.training_stages(config, workdir)
  result = None
  for number, stage in enumerate(stages, 1):
    if len(stages) > 1 and jax.process_index() == 0:
      print(f"stage {number}/{len(stages)}: {stage.name} (in {stage.workdir})", flush=True)
    result = train(config, stage.workdir, stage.make_task(), evaluate=evaluate)
    if result.stopped_by is not None:  # stopped by a signal: the next stages wait for a rerun
      break
  return result
