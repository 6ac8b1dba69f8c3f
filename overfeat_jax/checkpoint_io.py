"""The checkpoint layout that training writes and evaluation reads (neither imports the other).

A run's checkpoints live in `workdir/checkpoints` (orbax, one directory per step). Each step holds
the items named below; `signature` is JSON describing the model (the task's description plus every
parameter's shape), so that a restore into a different model is refused with a `CheckpointError`
naming the differences. `restore_params` is the read-only restore of the parameters alone
(evaluation, prediction, a detector starting from a classifier).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import traverse_util

from overfeat_jax import mesh as mesh_lib
from overfeat_jax.errors import CheckpointError

PARAMS = "params"
OPTIMIZER = "optimizer"
DATA = "data"
SIGNATURE = "signature"
CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
  """The absolute checkpoint directory of a work directory."""
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


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
                          only_current_keys: bool = False) -> list[str]:
  """Human-readable differences between two signatures, e.g. "task.model.width: 0.125 (checkpoint) vs
  0.25 (now)"; at most `limit` lines (then "... and N more"); [] when they match.

  With `only_current_keys`, keys that only `saved` has are not compared (`current` is a subset).
  """
  saved_flat = traverse_util.flatten_dict(saved, sep=".")
  current_flat = traverse_util.flatten_dict(current, sep=".")
  keys = set(current_flat) if only_current_keys else set(saved_flat) | set(current_flat)
  lines = []
  # The task's description (e.g. model.width) says more than the parameter shapes it implies.
  for key in sorted(keys, key=lambda k: (not k.startswith("task."), k)):
    old, new = saved_flat.get(key, "<absent>"), current_flat.get(key, "<absent>")
    if old != new:
      lines.append(f"{key}: {old} (checkpoint) vs {new} (now)")
  if len(lines) > limit:
    lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
  return lines


def check_signature(saved: dict[str, Any], current: dict[str, Any], directory: str, *,
                    only_current_keys: bool = False) -> None:
  """Raises CheckpointError naming `directory` and the differences when the signatures differ."""
  differences = signature_differences(saved, current, only_current_keys=only_current_keys)
  if differences:
    raise CheckpointError(f"checkpoint in {directory} was written for a different model: "
                          + "; ".join(differences)
                          + " (use a new --workdir, or the config that wrote it)")


def restore_params(workdir: str, params_template: Any, *, task_signature: dict[str, Any] | None = None,
                   step: int | None = None) -> tuple[Any, int]:
  """The parameters of the latest (or given) checkpoint of a training run, for evaluation.

  Args:
    workdir: the training run's work directory (holding `checkpoints/`).
    params_template: a pytree of arrays or `jax.ShapeDtypeStruct`s with the model's parameter
      structure (e.g. `jax.eval_shape` of the model's init)['params']; leaves without a sharding
      are restored replicated over all devices.
    task_signature: if given, these fields must equal the stored task signature's (a subset is
      fine: evaluation checks what shapes the parameters, not e.g. the training dropout rate).
  Returns:
    (params, step): jax arrays with the template's structure, and the checkpoint's step.
  Raises:
    CheckpointError: no checkpoint in the directory, or one written for a different model.
  """
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f"no checkpoint in {directory} (is --workdir the directory train.py wrote?)")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {directory} (is --workdir the directory train.py wrote?)")
    saved = manager.restore(step, args=ocp.args.Composite(**{SIGNATURE: ocp.args.JsonRestore()}))[SIGNATURE]
    current = {"param_shapes": param_shapes(params_template)}
    if task_signature is not None:
      current["task"] = as_json(task_signature)
    check_signature(saved, current, directory, only_current_keys=True)
    replicated = mesh_lib.replicated(mesh_lib.make_mesh())
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or replicated),
        params_template)
    restored = manager.restore(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(target)}))
    return restored[PARAMS], step
  finally:
    manager.close()
