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
during a save, or a save that fails (a full disk), therefore leaves a tmp directory that restore never
sees (and that is deleted when the next run opens the manager); the last complete step is what a
restart resumes from, and older steps are deleted (beyond `keep`) only once a newer one is complete.

Damage: a step that cannot be read back (a truncated array file, a missing item) is moved to
`<workdir>/damaged_checkpoints/<step>` with a warning, and the run resumes from the newest intact step
(`checkpoint_io.restore_newest_intact`); if none is intact, nothing is moved and the restore fails.

Cloud storage: the directory may be a URI (gs://...), handed to orbax as an `epath.Path`; the arrays
are then written by tensorstore's own driver for that store. On an object store orbax's final rename
and the move of a damaged step are copies then deletes (`files.move`), not atomic renames.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from overfeat_jax import files
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.checkpoint_io import (DATA, OPTIMIZER, PARAMS, SIGNATURE, as_json, check_signature,
                                        checkpoint_dir, drop_orbax_echoes, read_step,
                                        restore_newest_intact)
from overfeat_jax.errors import CheckpointError, WorkdirError, reason
from overfeat_jax.training.state import TrainState

DAMAGED_SUBDIR = "damaged_checkpoints"


def _with_sharding(abstract_tree: Any, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_tree)


# grain's checkpoint handler keeps one data position per process: <step>/data/process_<i>-of-<n>.json.
_DATA_POSITION_FILE = re.compile(r"process_\d+-of-(\d+)\.json")


def _check_process_count(data_dir: str, step: int) -> None:
  """CheckpointError unless `step`'s data positions were saved by as many processes as run now (each
  process resumes from its own; without them grain's restore fails with a bare "file not found")."""
  try:
    names = os.listdir(data_dir)
  except OSError:
    return  # no data item: the restore itself reports the damaged step
  counts = {int(m.group(1)) for m in map(_DATA_POSITION_FILE.fullmatch, names) if m}
  if counts and jax.process_count() not in counts:
    saved = max(counts)
    raise CheckpointError(
        f"checkpoint step {step} in {os.path.dirname(os.path.dirname(data_dir))} holds the data "
        f"positions of {saved} process{'es' if saved > 1 else ''}, but this run has "
        f"{jax.process_count()}: resume it with {saved} (distributed.num_processes), or start a new "
        "--workdir")


class TrainCheckpoints:
  """The checkpoints of one training run (an orbax CheckpointManager with our four items).

  Saves are asynchronous (the arrays are copied synchronously, then written in the background);
  a failed background write is reported by the next `save` or by `close()`, which waits for the last
  one (leaving a `with` block closes it too). Keep `keep` most recent steps.
  """

  def __init__(self, workdir: str, *, keep: int, signature: dict[str, Any]):
    self.directory = checkpoint_dir(workdir)
    self.damaged_directory = os.path.join(os.path.dirname(self.directory), DAMAGED_SUBDIR)
    self.signature = as_json(signature)
    options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                           cleanup_tmp_directories=True)
    try:
      self._manager = ocp.CheckpointManager(files.as_path(self.directory), options=options)
    except OSError as e:
      raise WorkdirError(f"cannot use {self.directory}: {reason(e)}") from e
    drop_orbax_echoes()
    self._pending: int | None = None  # the step whose background write may still be running
    self._broken = False  # a save failed (and was reported): orbax would report it again on close
    self._closed = False

  def latest_step(self) -> int | None:
    """The last complete step saved here, or None."""
    return self._manager.latest_step()

  def _set_aside(self, step: int) -> str:
    """Moves the damaged `step` to damaged_checkpoints/ (process 0); returns where it went."""
    target = os.path.join(self.damaged_directory, str(step))
    if jax.process_index() == 0:
      suffix = 1
      try:
        while files.exists(target):
          suffix += 1
          target = os.path.join(self.damaged_directory, f"{step}-{suffix}")
        files.move(os.path.join(self.directory, str(step)), target)
      except OSError as e:
        raise WorkdirError(f"cannot move the damaged checkpoint step {step} out of {self.directory} "
                           f"to {target}: {reason(e)}") from e
    return f"moved to {target}"

  def restore(self, abstract_state: TrainState, data_iterator: Any, mesh: jax.sharding.Mesh, *,
              config_checked: bool = False) -> tuple[TrainState, Any]:
    """Restores the newest intact step into replicated arrays and sets the data iterator's state.

    Args:
      abstract_state: the state's shapes (from `jax.eval_shape`).
      data_iterator: a fresh grain iterator of the same pipeline; its position is set in place.
      config_checked: the run's config.json was checked against the config (run_config.check_resume),
        so settings newer than the checkpoint's signature are at their defaults and are not compared
        (`checkpoint_io.signature_differences`'s newer_task_keys): a run resumes across a version
        that adds a setting.
    Raises:
      CheckpointError: no checkpoint, none intact (names each step and why), or one written for a
        different model or by a different number of processes.
      WorkdirError: a damaged step cannot be moved aside.
    """
    replicated = mesh_lib.replicated(mesh)
    target_params = _with_sharding(abstract_state.params, replicated)
    target_opt = _with_sharding({"step": abstract_state.step, "opt_state": abstract_state.opt_state},
                                replicated)

    def restore(step: int) -> dict[str, Any]:
      saved = read_step(self._manager, step, **{SIGNATURE: ocp.args.JsonRestore()})[SIGNATURE]
      check_signature(saved, self.signature, self.directory, newer_task_keys=config_checked)
      _check_process_count(os.path.join(self.directory, str(step), DATA), step)
      return read_step(self._manager, step, **{
          PARAMS: ocp.args.StandardRestore(target_params),
          OPTIMIZER: ocp.args.StandardRestore(target_opt),
          DATA: grain.checkpoint.CheckpointRestore(data_iterator),
      })

    restored, _ = restore_newest_intact(self.directory, self._manager.all_steps(), restore,
                                        set_aside=self._set_aside)
    self._manager.reload()  # forget the steps set aside
    state = TrainState(step=restored[OPTIMIZER]["step"], params=restored[PARAMS],
                       opt_state=restored[OPTIMIZER]["opt_state"])
    return state, restored[DATA]

  def _failed(self, step: int, error: Exception) -> CheckpointError:
    """The one-line error for a save of `step` that failed, naming the newest complete step."""
    self._pending, self._broken = None, True
    self._manager.reload()
    kept = self._manager.latest_step()
    intact = f"step {kept} is the newest complete checkpoint" if kept is not None else "no checkpoint is complete"
    return CheckpointError(f"cannot save checkpoint step {step} in {self.directory}: {reason(error)}; "
                           f"{intact}, untouched (rerun the same command to resume from it)")

  def _wait(self) -> None:
    """Waits for the background write of the pending step; CheckpointError if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # the background write's error (tensorstore's ValueError, an OSError, ...)
      raise self._failed(self._pending, e) from e
    self._pending = None

  def save(self, step: int, state: TrainState, data_iterator: Any) -> bool:
    """Saves `state` and the iterator position as `step`; False if `step` is already saved.

    Raises:
      CheckpointError: this save, or the previous one's background write, failed (e.g. disk full);
        the newest complete step is left as it was.
    """
    if step in self._manager.all_steps():
      return False
    self._wait()
    try:
      saved = self._manager.save(step, force=True, args=ocp.args.Composite(**{
          PARAMS: ocp.args.StandardSave(state.params),
          OPTIMIZER: ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
          DATA: grain.checkpoint.CheckpointSave(data_iterator),
          SIGNATURE: ocp.args.JsonSave(self.signature),
      }))
    except Exception as e:  # e.g. OSError from a synchronous part of the write
      raise self._failed(step, e) from e
    self._pending = step
    return saved

  def close(self) -> None:
    """Waits for pending saves and releases the manager (again: nothing).

    Raises:
      CheckpointError: the last save's background write failed.
    """
    if self._closed:
      return
    self._closed = True
    if not self._broken:
      self._wait()
      self._manager.close()

  def __enter__(self) -> TrainCheckpoints:
    return self

  def __exit__(self, kind: type[BaseException] | None, *exc_info: Any) -> None:
    if kind is None:
      self.close()
    else:
      with contextlib.suppress(Exception):  # the error in flight is the one to report
        self.close()
