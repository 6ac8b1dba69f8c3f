"""The checkpoints of a training run: parameters, optimizer, data position, model signature.

One checkpoint step directory holds four items (names in `overfeat_jax.checkpoint_io`), committed
together:
  params     the model parameters (restorable alone: `checkpoint_io.restore_params`, used by
             evaluation);
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

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from overfeat_jax import mesh as mesh_lib
from overfeat_jax.checkpoint_io import (DATA, OPTIMIZER, PARAMS, SIGNATURE, as_json, check_signature,
                                        checkpoint_dir)
from overfeat_jax.errors import CheckpointError
from overfeat_jax.training.state import TrainState


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
