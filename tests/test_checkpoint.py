"""Checkpoints: round trip with the data position, model signature, atomicity, restore_params."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

import tiny_training
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
