"""Checkpoints in `workdir/checkpoints` (orbax): parameters, optimizer, data position, model signature.

One checkpoint step directory holds four items, committed together:
  params     the model parameters (restorable alone: `restore_params`, used by evaluate.py);
  optimizer  {'step', 'opt_state'};
  data       the grain iterator state, one file per process, so a resumed run sees exactly the
             batches an uninterrupted run would;
  signature  JSON: the task's model description (config.model, num_classes) and every parameter's
             shape; a restore into a different model is refused with a `CheckpointError`.

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp-<id>` and renames it to `<step>` only
once every item is written, and it lists only the renamed directories as steps. A process killed
during a save therefore leaves a tmp directory that restore never sees (and that is deleted when the
next run opens the manager); the last complete step is what a restart resumes from.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from overfeat_jax.errors import CheckpointError
from overfeat_jax.training import mesh as mesh_lib
from overfeat_jax.training.state import TrainState

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
  """{'Conv_0/kernel': [3, 3, 3, 12], ...} for a pytree of arrays or ShapeDtypeStructs."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return {"/".join(_key_name(k) for k in path): list(leaf.shape) for path, leaf in flat}


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def make_signature(task_signature: dict[str, Any], params: Any) -> dict[str, Any]:
  """What identifies a model: the task's description (JSON) plus every parameter's shape."""
  return {"task": as_json(task_signature), "param_shapes": param_shapes(params)}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def signature_differences(saved: dict[str, Any], current: dict[str, Any], *, limit: int = 5,
                          only_current_keys: bool = False) -> list[str]:
  """Human-readable differences between two signatures, e.g. "task.model.width: 0.125 (checkpoint) vs
  0.25 (now)"; at most `limit` lines (then "... and N more"); [] when they match.

  With `only_current_keys`, keys that only `saved` has are not compared (`current` is a subset).
  """
  saved_flat, current_flat = _flatten(saved), _flatten(current)
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


def _with_sharding(abstract_tree: Any, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_tree)


class TrainCheckpoints:
  """The checkpoints of one training run (an orbax CheckpointManager with our four items).

  Saves are asynchronous (the arrays are copied synchronously, then written in the background);
  `close()` waits for the last one. Keep `keep` most recent steps.
  """

  def __init__(self, workdir: str, *, keep: int, signature: dict[str, Any]):
    self.directory = checkpoint_dir(workdir)
    self.signature = as_json(signature)
    options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The last complete step saved here, or None."""
    return self._manager.latest_step()

  def saved_signature(self, step: int) -> dict[str, Any]:
    """The signature stored with `step`."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{SIGNATURE: ocp.args.JsonRestore()}))
    return restored[SIGNATURE]

  def restore(self, abstract_state: TrainState, data_iterator: Any, mesh: jax.sharding.Mesh,
              step: int | None = None) -> tuple[TrainState, Any]:
    """Restores `step` (default: the latest) into replicated arrays and sets the data iterator's state.

    Args:
      abstract_state: the state's shapes (from `jax.eval_shape`).
      data_iterator: a fresh grain iterator of the same pipeline; its position is set in place.
    Raises:
      CheckpointError: no checkpoint, or one written for a different model.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    check_signature(self.saved_signature(step), self.signature, self.directory)
    replicated = mesh_lib.replicated(mesh)
    target_opt = _with_sharding({"step": abstract_state.step, "opt_state": abstract_state.opt_state},
                                replicated)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**{
          PARAMS: ocp.args.StandardRestore(_with_sharding(abstract_state.params, replicated)),
          OPTIMIZER: ocp.args.StandardRestore(target_opt),
          DATA: grain.checkpoint.CheckpointRestore(data_iterator),
      }))
    except (ValueError, FileNotFoundError) as e:  # e.g. written by another number of processes
      raise CheckpointError(f"cannot restore step {step} from {self.directory}: {e}") from e
    state = TrainState(step=restored[OPTIMIZER]["step"], params=restored[PARAMS],
                       opt_state=restored[OPTIMIZER]["opt_state"])
    return state, restored[DATA]

  def save(self, step: int, state: TrainState, data_iterator: Any) -> bool:
    """Saves `state` and the iterator position as `step`; False if `step` is already saved."""
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, force=True, args=ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(state.params),
        OPTIMIZER: ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
        DATA: grain.checkpoint.CheckpointSave(data_iterator),
        SIGNATURE: ocp.args.JsonSave(self.signature),
    }))

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


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
