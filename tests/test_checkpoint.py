"""Checkpoints: round trip with the data position, model signature, atomicity, restore_params, and the
fall-back past damaged steps."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

import tiny_training
from checkpoint_damage import DAMAGE, remove_signature, truncate_array_file
from overfeat_jax.errors import CheckpointError
from overfeat_jax import mesh as mesh_lib
from overfeat_jax import checkpoint_io
from overfeat_jax.training import checkpoint, optim
from overfeat_jax.training.state import TrainState


def make_state(config, seed: int = 0) -> tuple[TrainState, dict]:
  task = tiny_training.tiny_task(config)
  tx = optim.make_optimizer(config.optimizer, task.steps_per_epoch)
  state = TrainState.create(task.init_params(jax.random.key(seed)), tx)
  # Make the optimizer state non-trivial, so that a restore that dropped it would show.
  state = state.apply_gradients(jax.tree.map(lambda p: 0.1 * np.ones_like(p), state.params), tx)
  return state, task


def signature_for(task, state):
  return checkpoint_io.make_signature(task.signature, state.params)


def test_round_trip_restores_state_and_data_position(tmp_path):
  config = tiny_training.tiny_config()
  state, task = make_state(config)
  loader = task.make_loader(0, 1)
  it = iter(loader)
  for _ in range(3):
    next(it)
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  assert ckpts.latest_step() is None
  assert ckpts.save(3, state, it)
  expected_next = [next(it)["label"] for _ in range(2)]  # what an uninterrupted run reads next
  ckpts.close()

  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  assert ckpts.latest_step() == 3
  abstract = jax.eval_shape(lambda: state)
  restored, restored_it = ckpts.restore(abstract, iter(loader), mesh_lib.make_mesh())
  ckpts.close()
  assert int(restored.step) == int(state.step) == 1
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for expected in expected_next:
    np.testing.assert_array_equal(next(restored_it)["label"], expected)


def test_restore_into_a_different_model_is_refused(tmp_path):
  config = tiny_training.tiny_config()
  state, task = make_state(config)
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  ckpts.save(1, state, iter(task.make_loader(0, 1)))
  ckpts.close()

  other_config = tiny_training.tiny_config()
  other_config.model.width = 0.25  # hidden 32 instead of 16
  other_state, other_task = make_state(other_config)
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2,
                                      signature=signature_for(other_task, other_state))
  with pytest.raises(CheckpointError) as info:
    ckpts.restore(jax.eval_shape(lambda: other_state), iter(other_task.make_loader(0, 1)),
                  mesh_lib.make_mesh())
  ckpts.close()
  message = str(info.value)
  assert f"checkpoint in {os.path.join(tmp_path, 'checkpoints')} was written for a different model" in message
  assert "task.model.width: 0.125 (checkpoint) vs 0.25 (now)" in message
  assert "param_shapes.Dense_0/kernel: [192, 16] (checkpoint) vs [192, 32] (now)" in message


def test_keeps_the_newest_checkpoints_and_skips_existing_steps(tmp_path):
  config = tiny_training.tiny_config()
  state, task = make_state(config)
  it = iter(task.make_loader(0, 1))
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  for step in (2, 4, 6):
    assert ckpts.save(step, state, it)
  assert not ckpts.save(6, state, it)  # already saved: no error, no second copy
  ckpts.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "6"]


def test_an_interrupted_save_is_never_restored(tmp_path):
  # A process killed during a save leaves orbax's tmp directory (it is renamed to the step only once
  # complete). Simulate one for step 9 holding garbage: the manager must still see only step 2.
  config = tiny_training.tiny_config()
  state, task = make_state(config)
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  ckpts.save(2, state, iter(task.make_loader(0, 1)))
  ckpts.close()
  partial = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
  (partial / "params").mkdir(parents=True)
  (partial / "params" / "_METADATA").write_text("{truncated")

  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  assert ckpts.latest_step() == 2
  restored, it = ckpts.restore(jax.eval_shape(lambda: state), iter(task.make_loader(0, 1)),
                               mesh_lib.make_mesh())
  np.testing.assert_array_equal(restored.params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])
  ckpts.save(3, restored, it)  # the next save waits for the leftover's removal (begun on opening)
  ckpts.close()
  assert not partial.exists()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]

  params, step = checkpoint_io.restore_params(str(tmp_path), jax.eval_shape(lambda: state.params))
  assert step == 3


def test_restore_params_for_evaluation(tmp_path):
  config = tiny_training.tiny_config()
  state, task = make_state(config)
  with pytest.raises(CheckpointError, match=f"no checkpoint in {tmp_path}"):
    checkpoint_io.restore_params(str(tmp_path), state.params)

  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=2, signature=signature_for(task, state))
  ckpts.save(5, state, iter(task.make_loader(0, 1)))
  ckpts.close()
  template = jax.eval_shape(lambda: state.params)
  params, step = checkpoint_io.restore_params(str(tmp_path), template, task_signature=task.signature)
  assert step == 5
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  wrong = jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] + 1,) + x.shape[1:], x.dtype), template)
  with pytest.raises(CheckpointError, match="different model"):
    checkpoint_io.restore_params(str(tmp_path), wrong)
  other = dict(task.signature, num_classes=7)
  with pytest.raises(CheckpointError, match=r"task.num_classes: 4 \(checkpoint\) vs 7 \(now\)"):
    checkpoint_io.restore_params(str(tmp_path), template, task_signature=other)


def save_steps(tmp_path, steps, config=None):
  """Saves the same state as each of `steps`; returns (state, task)."""
  config = config or tiny_training.tiny_config()
  state, task = make_state(config)
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=3, signature=signature_for(task, state))
  for step in steps:
    ckpts.save(step, state, iter(task.make_loader(0, 1)))
  ckpts.close()
  return state, task


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_newest_step_falls_back_to_the_newest_intact_one(tmp_path, capsys, how):
  state, task = save_steps(tmp_path, (2, 4, 6))
  ckpt = tmp_path / "checkpoints"
  DAMAGE[how](ckpt / "6")
  DAMAGE[how](ckpt / "4")

  # Evaluation: read-only, so the damaged steps stay where they are.
  template = jax.eval_shape(lambda: state.params)
  params, step = checkpoint_io.restore_params(str(tmp_path), template, task_signature=task.signature)
  assert step == 2
  np.testing.assert_array_equal(params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])
  warnings = capsys.readouterr().err.splitlines()
  assert len(warnings) == 2 and all(w.startswith("warning: checkpoint step ") for w in warnings)
  assert "step 6 cannot be read" in warnings[0] and "step 4 cannot be read" in warnings[1]
  assert f"left in {ckpt}; using step 2, the newest intact one" in warnings[0]
  assert sorted(os.listdir(ckpt)) == ["2", "4", "6"]

  # Training: the damaged steps are moved aside (never deleted), so that the run can save them anew.
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=3, signature=signature_for(task, state))
  restored, _ = ckpts.restore(jax.eval_shape(lambda: state), iter(task.make_loader(0, 1)),
                              mesh_lib.make_mesh())
  assert int(restored.step) == int(state.step)
  assert ckpts.latest_step() == 2
  assert ckpts.save(4, restored, iter(task.make_loader(0, 1)))
  ckpts.close()
  warnings = capsys.readouterr().err.splitlines()
  assert [w.split(" cannot be read")[0] for w in warnings] == ["warning: checkpoint step 6",
                                                                "warning: checkpoint step 4"]
  assert f"moved to {tmp_path / 'damaged_checkpoints' / '6'}" in warnings[0]
  assert sorted(os.listdir(ckpt)) == ["2", "4"]
  assert sorted(os.listdir(tmp_path / "damaged_checkpoints")) == ["4", "6"]


def test_no_intact_step_is_one_error_naming_each_and_moves_nothing(tmp_path, capsys):
  state, task = save_steps(tmp_path, (2, 4))
  ckpt = tmp_path / "checkpoints"
  truncate_array_file(ckpt / "4")
  remove_signature(ckpt / "2")
  template = jax.eval_shape(lambda: state.params)
  with pytest.raises(CheckpointError, match=rf"no intact checkpoint in {ckpt}: step 4 cannot be read "
                                            r"\(.+\); step 2 cannot be read \(.*metadata not found"):
    checkpoint_io.restore_params(str(tmp_path), template)
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path), keep=3, signature=signature_for(task, state))
  with pytest.raises(CheckpointError, match="no intact checkpoint"):
    ckpts.restore(jax.eval_shape(lambda: state), iter(task.make_loader(0, 1)), mesh_lib.make_mesh())
  ckpts.close()
  assert capsys.readouterr().err == ""  # the one error says it all
  assert sorted(os.listdir(ckpt)) == ["2", "4"] and not (tmp_path / "damaged_checkpoints").exists()


def test_a_given_step_does_not_fall_back(tmp_path):
  state, _ = save_steps(tmp_path, (2, 4))
  remove_signature(tmp_path / "checkpoints" / "4")
  template = jax.eval_shape(lambda: state.params)
  with pytest.raises(CheckpointError, match="step 4 cannot be read"):
    checkpoint_io.restore_params(str(tmp_path), template, step=4)
  assert checkpoint_io.restore_params(str(tmp_path), template, step=2)[1] == 2
