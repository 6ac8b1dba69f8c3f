"""The checkpoint layout that training writes and evaluation reads (neither imports the other).

A run's checkpoints live in `workdir/checkpoints` (orbax, one directory per step). Each step holds
the items named below; `signature` is JSON describing the model (the task's description plus every
parameter's shape), so that a restore into a different model is refused with a `CheckpointError`
naming the differences. `restore_params` is the read-only restore of the parameters alone
(evaluation, prediction, a detector starting from a classifier); `read_signature` reads only what a
checkpoint describes itself as; `save_params` writes a checkpoint of those two items alone (weights
converted from elsewhere), which both read as they read a training run's.

Damage (a truncated array file, a missing item) is told apart from a different model: `read_step`
raises `DamagedStepError` for anything orbax cannot read, and `restore_newest_intact` then falls back
to the newest step that reads back, with a warning on stderr naming each damaged step. A damaged step
is never deleted (training moves it aside, evaluation leaves it where it is).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Iterable, TypeVar

import jax
import orbax.checkpoint as ocp
from flax import traverse_util

from overfeat_jax import files
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.errors import CheckpointError, WorkdirError, reason

PARAMS = "params"
OPTIMIZER = "optimizer"
DATA = "data"
SIGNATURE = "signature"
CHECKPOINT_SUBDIR = "checkpoints"

T = TypeVar("T")


class DamagedStepError(Exception):
  """A checkpoint step whose files cannot be read back; the message says why (internal: caught by
  `restore_newest_intact`, which turns "none intact" into a CheckpointError)."""


def checkpoint_dir(workdir: str) -> str:
  """The absolute checkpoint directory of a work directory (local, or a URI such as gs://...)."""
  return os.path.join(files.absolute(workdir), CHECKPOINT_SUBDIR)


def as_json(value: Any) -> Any:
  """`value` as it reads back from JSON (tuples become lists), so saved and live values compare equal."""
  return json.loads(json.dumps(value))


def param_shapes(params: Any) -> dict[str, list[int]]:
  """{'Conv_0/kernel': [3, 3, 3, 12], ...} for a nested dict of arrays or ShapeDtypeStructs."""
  return {name: list(leaf.shape)
          for name, leaf in traverse_util.flatten_dict(params, sep="/").items()}


def make_signature(task_signature: dict[str, Any], params: Any) -> dict[str, Any]:
  """What identifies a model: the task's description (JSON) plus every parameter's shape."""
  return {"task": as_json(task_signature), "param_shapes": param_shapes(params)}


def signature_differences(saved: dict[str, Any], current: dict[str, Any], *, limit: int = 5,
                          only_current_keys: bool = False, saved_label: str = "checkpoint",
                          newer_task_keys: bool = False) -> list[str]:
  """Human-readable differences between two signatures, e.g. "task.model.width: 0.125 (checkpoint) vs
  0.25 (now)"; at most `limit` lines (then "... and N more"); [] when they match.

  With `only_current_keys`, keys that only `saved` has are not compared (`current` is a subset).
  With `newer_task_keys`, neither are keys under "task." that only `current` has: settings added to
  the task's description after the checkpoint was written, which the caller has checked otherwise
  (a resume: config.json holds every setting of the run, and a key newer than the run must be at
  its default, the behaviour of the code that wrote it). Parameter shapes are always compared.
  `saved_label` names where `saved` comes from (e.g. "config.json").
  """
  saved_flat = traverse_util.flatten_dict(saved, sep=".")
  current_flat = traverse_util.flatten_dict(current, sep=".")
  keys = set(current_flat) if only_current_keys else set(saved_flat) | set(current_flat)
  if newer_task_keys:
    keys -= {key for key in current_flat if key.startswith("task.") and key not in saved_flat}
  lines = []
  # The task's description (e.g. model.width) says more than the parameter shapes it implies.
  for key in sorted(keys, key=lambda k: (not k.startswith("task."), k)):
    old, new = saved_flat.get(key, "<absent>"), current_flat.get(key, "<absent>")
    if old != new:
      lines.append(f"{key}: {old} ({saved_label}) vs {new} (now)")
  if len(lines) > limit:
    lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
  return lines


def check_signature(saved: dict[str, Any], current: dict[str, Any], directory: str, *,
                    only_current_keys: bool = False, newer_task_keys: bool = False) -> None:
  """Raises CheckpointError naming `directory` and the differences when the signatures differ
  (`only_current_keys`, `newer_task_keys`: as `signature_differences`)."""
  differences = signature_differences(saved, current, only_current_keys=only_current_keys,
                                      newer_task_keys=newer_task_keys)
  if differences:
    raise CheckpointError(f"checkpoint in {directory} was written for a different model: "
                          + "; ".join(differences)
                          + " (use a new --workdir, or the config that wrote it)")


def _no_checkpoint(directory: str) -> CheckpointError:
  return CheckpointError(f"no checkpoint in {directory} (is --workdir the directory train.py wrote?)")


def _is_orbax_echo(unraisable: Any) -> bool:
  """Whether an error Python could not raise anywhere repeats one that orbax has raised already."""
  if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
    return True
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def drop_orbax_echoes() -> None:
  """Keeps the echoes of a failed read or write off stderr (process-wide, from the first call on).

  When one array of a restore cannot be read, orbax abandons the other reads, and each raises again
  as it is garbage-collected ("Exception ignored in: <coroutine ...>", 60 lines); when a background
  save fails (a full disk), tensorstore's other writes call back into orbax's closed event loop and
  each prints "RuntimeError: Event loop is closed". Both go through `sys.unraisablehook`; the failure
  itself is raised once (and reported on one line), so these are dropped. Other unraisable errors
  still reach the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_orbax_echoes", False):
    return

  def hook(unraisable: Any) -> None:
    if not _is_orbax_echo(unraisable):
      previous(unraisable)

  hook.drops_orbax_echoes = True
  sys.unraisablehook = hook


def read_step(manager: ocp.CheckpointManager, step: int, **items: Any) -> dict[str, Any]:
  """`manager.restore(step)` of the named items (`ocp.args` restore arguments).

  Raises:
    DamagedStepError: orbax could not read them (a missing or truncated file, invalid JSON, ...).
  """
  try:
    return manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # orbax re-raises tensorstore's read errors as a bare Exception
    raise DamagedStepError(reason(e)) from e


def restore_newest_intact(directory: str, steps: Iterable[int], restore: Callable[[int], T], *,
                          set_aside: Callable[[int], str] | None = None) -> tuple[T, int]:
  """`(restore(step), step)` for the newest of `steps` that `restore` reads without DamagedStepError.

  Each newer, damaged step gets a warning on stderr (process 0) naming it and why, after
  `set_aside(step)` (which returns where it went) if given; otherwise it is left in place.
  Raises:
    CheckpointError: no steps at all, or none intact (one line naming each step and why; nothing
      is set aside then). Errors of `restore` other than DamagedStepError propagate.
  """
  damaged: list[tuple[int, str]] = []
  for step in sorted(steps, reverse=True):
    try:
      restored = restore(step)
    except DamagedStepError as e:
      damaged.append((step, str(e)))
      continue
    for bad, why in damaged:
      where = set_aside(bad) if set_aside else f"left in {directory}"
      if jax.process_index() == 0:
        print(f"warning: checkpoint step {bad} cannot be read ({why}); {where}; using step {step}, "
              "the newest intact one", file=sys.stderr, flush=True)
    return restored, step
  if not damaged:
    raise _no_checkpoint(directory)
  raise CheckpointError(f"no intact checkpoint in {directory}: "
                        + "; ".join(f"step {step} cannot be read ({why})" for step, why in damaged))


def restore_params(workdir: str, params_template: Any, *, task_signature: dict[str, Any] | None = None,
                   step: int | None = None) -> tuple[Any, int]:
  """The parameters of the newest intact (or the given) checkpoint of a training run, for evaluation.

  A damaged newer step is skipped with a warning on stderr and left where it is.
  Args:
    workdir: the training run's work directory (holding `checkpoints/`).
    params_template: a pytree of arrays or `jax.ShapeDtypeStruct`s with the model's parameter
      structure (e.g. `jax.eval_shape` of the model's init)['params']; leaves without a sharding
      are restored replicated over all devices.
    task_signature: if given, these fields must equal the stored task signature's (a subset is
      fine: evaluation checks what shapes the parameters, not e.g. the training dropout rate).
    step: restore this step only (no fall-back).
  Returns:
    (params, step): jax arrays with the template's structure, and the checkpoint's step.
  Raises:
    CheckpointError: no checkpoint in the directory, none intact, or one written for a different model.
  """
  directory = checkpoint_dir(workdir)
  if not files.is_dir(directory):
    raise _no_checkpoint(directory)
  current = {"param_shapes": param_shapes(params_template)}
  if task_signature is not None:
    current["task"] = as_json(task_signature)
  replicated = mesh_lib.replicated(mesh_lib.make_mesh())
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or replicated),
      params_template)
  drop_orbax_echoes()
  manager = ocp.CheckpointManager(files.as_path(directory),
                                  options=ocp.CheckpointManagerOptions(read_only=True))

  def restore(step: int) -> Any:
    saved = read_step(manager, step, **{SIGNATURE: ocp.args.JsonRestore()})[SIGNATURE]
    check_signature(saved, current, directory, only_current_keys=True)
    return read_step(manager, step, **{PARAMS: ocp.args.StandardRestore(target)})[PARAMS]

  try:
    return restore_newest_intact(directory, manager.all_steps() if step is None else [step], restore)
  finally:
    manager.close()


def read_signature(workdir: str, *, step: int | None = None) -> tuple[dict[str, Any], int]:
  """The model signature ({'task': ..., 'param_shapes': {'extractor/conv1/kernel': [...], ...}}) of
  the newest intact (or the given) checkpoint of a training run, and its step; no array is read.

  For a caller that must see what a checkpoint holds before it can build the template that
  `restore_params` needs (e.g. a backbone taken from a classifier whose class count it does not know).
  Raises:
    CheckpointError: no checkpoint in the directory, or none whose signature reads back.
  """
  directory = checkpoint_dir(workdir)
  if not files.is_dir(directory):
    raise _no_checkpoint(directory)
  drop_orbax_echoes()
  manager = ocp.CheckpointManager(files.as_path(directory),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    return restore_newest_intact(
        directory, manager.all_steps() if step is None else [step],
        lambda s: read_step(manager, s, **{SIGNATURE: ocp.args.JsonRestore()})[SIGNATURE])
  finally:
    manager.close()


def save_params(workdir: str, params: Any, signature: dict[str, Any], *, step: int = 0) -> str:
  """Writes `params` and `signature` as checkpoint `step` of a work directory that has none.

  Only those two items: `restore_params` and `read_signature` read it like a training run's
  checkpoint (evaluation, prediction, a backbone start); training cannot resume from it (it has no
  optimizer state or data position), so give the signature's task a key that training's does not
  have (e.g. where the weights came from) and a resume is refused as "written for a different model".
  Args:
    params: the parameter pytree (numpy or jax arrays).
    signature: `make_signature(task_signature, params)`.
  Returns:
    The checkpoint directory.
  Raises:
    CheckpointError: the work directory already holds checkpoints (nothing is written).
    WorkdirError: the directory cannot be created or written (names it and why).
  """
  directory = checkpoint_dir(workdir)
  if files.listdir(directory):
    raise CheckpointError(f"{directory} already holds checkpoints: use a new --workdir")
  drop_orbax_echoes()
  try:
    manager = ocp.CheckpointManager(files.as_path(directory),
                                    options=ocp.CheckpointManagerOptions(create=True))
    try:
      manager.save(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardSave(params),
                                                    SIGNATURE: ocp.args.JsonSave(as_json(signature))}))
      manager.wait_until_finished()
    finally:
      manager.close()
  except Exception as e:  # OSError, or tensorstore's error wrapped by orbax in a bare Exception
    raise WorkdirError(f"cannot write a checkpoint in {directory}: {reason(e)}") from e
  return directory
