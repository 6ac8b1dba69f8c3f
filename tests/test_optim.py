"""The optimizer of SPEC A3: step-halving schedule, SGD momentum, L2 weight decay on kernels only."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from overfeat_jax.config import base_config
from overfeat_jax.training import optim
from overfeat_jax.training.state import TrainState


def opt_config(**overrides) -> ml_collections.ConfigDict:
  cfg = base_config().optimizer
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def test_schedule_halves_after_each_configured_epoch():
  # lr 0.1, halved after epochs 2 and 3, 5 steps per epoch: boundaries at steps 10 and 15.
  schedule = optim.learning_rate_schedule(opt_config(learning_rate=0.1, halve_at_epochs=(2, 3)), 5)
  expected = {0: 0.1, 9: 0.1, 10: 0.05, 14: 0.05, 15: 0.025, 1000: 0.025}
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step


def test_schedule_with_the_papers_epochs():
  # SPEC A3: 5e-2 halved after epochs 30, 50, 60, 70, 80; with 100 steps per epoch the last epoch
  # (index 80, steps 8000..) runs at 5e-2 / 32.
  schedule = optim.learning_rate_schedule(
      opt_config(learning_rate=5e-2, halve_at_epochs=(30, 50, 60, 70, 80)), 100)
  assert float(schedule(2999)) == pytest.approx(5e-2)
  assert float(schedule(3000)) == pytest.approx(2.5e-2)
  assert float(schedule(7999)) == pytest.approx(5e-2 / 16)
  assert float(schedule(8000)) == pytest.approx(5e-2 / 32)


def test_fractional_epochs_fall_on_the_nearest_step():
  # A schedule shorter than one epoch (the detector's 300 steps of a 500-step epoch): halved after
  # 0.4 and 0.5 epochs = steps 200 and 250; 0.3 and 0.301 of a 10-step epoch both fall on step 3.
  schedule = optim.learning_rate_schedule(
      opt_config(learning_rate=0.02, halve_at_epochs=(0.4, 0.5)), 500)
  expected = {0: 0.02, 199: 0.02, 200: 0.01, 249: 0.01, 250: 0.005, 299: 0.005}
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step
  same_step = optim.learning_rate_schedule(opt_config(learning_rate=0.8, halve_at_epochs=(0.3, 0.301)), 10)
  assert [float(same_step(s)) for s in (2, 3)] == pytest.approx([0.8, 0.2])


def test_warmup_ramps_linearly_then_the_halving_schedule_applies():
  # 4 steps per epoch, warm-up 1.5 epochs = 6 steps, halved after epoch 2 (step 8).
  schedule = optim.learning_rate_schedule(
      opt_config(learning_rate=0.6, warmup_epochs=1.5, halve_at_epochs=(2,)), 4)
  expected = {0: 0.1, 1: 0.2, 4: 0.5, 5: 0.6, 7: 0.6, 8: 0.3, 100: 0.3}
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step


def test_damped_momentum_as_torch7_by_hand():
  # v <- m v + (1 - d) g (Torch7's optim.sgd with dampening d), w <- w - lr v; no decay.
  lr, m, d = 0.5, 0.6, 0.6
  tx = optim.make_optimizer(opt_config(learning_rate=lr, momentum=m, dampening=d, weight_decay=0.0,
                                       halve_at_epochs=()), 10)
  state = TrainState.create({"bias": jnp.zeros((2,))}, tx)
  v, w = np.zeros(2), np.zeros(2)
  for g in ([1.0, -2.0], [0.5, 0.5], [-1.0, 3.0]):
    v = m * v + (1 - d) * np.asarray(g)
    w = w - lr * v
    state = state.apply_gradients({"bias": jnp.asarray(g, jnp.float32)}, tx)
    np.testing.assert_allclose(state.params["bias"], w, rtol=1e-6)
  # Heavy-ball (d = 0) takes a 1 / (1 - d) = 2.5x larger step on a constant gradient.
  heavy = optim.make_optimizer(opt_config(learning_rate=lr, momentum=m, weight_decay=0.0,
                                          halve_at_epochs=()), 10)
  s_damped = TrainState.create({"b": jnp.zeros(())}, tx)
  s_heavy = TrainState.create({"b": jnp.zeros(())}, heavy)
  for _ in range(200):
    s_damped = s_damped.apply_gradients({"b": jnp.ones(())}, tx)
    s_heavy = s_heavy.apply_gradients({"b": jnp.ones(())}, heavy)
  assert float(s_heavy.params["b"]) / float(s_damped.params["b"]) == pytest.approx(2.5, rel=0.02)


def test_sgd_momentum_and_weight_decay_by_hand():
  lr, momentum, wd = 0.1, 0.5, 0.01
  tx = optim.make_optimizer(opt_config(learning_rate=lr, momentum=momentum, weight_decay=wd,
                                       halve_at_epochs=()), 10)
  w = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)
  b = np.array([4.0, -1.0], np.float32)
  state = TrainState.create({"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}, tx)
  g1 = {"kernel": np.full((2, 2), 0.2, np.float32), "bias": np.array([1.0, 2.0], np.float32)}
  g2 = {"kernel": np.full((2, 2), -0.4, np.float32), "bias": np.array([0.5, 0.5], np.float32)}

  # Step 1: v = g + wd * w (kernel only); w -= lr * v.
  v_w = g1["kernel"] + wd * w
  v_b = g1["bias"]  # biases are not decayed
  w1, b1 = w - lr * v_w, b - lr * v_b
  state = state.apply_gradients(g1, tx)
  np.testing.assert_allclose(state.params["kernel"], w1, rtol=1e-6)
  np.testing.assert_allclose(state.params["bias"], b1, rtol=1e-6)

  # Step 2: v = momentum * v + g + wd * w1.
  v_w = momentum * v_w + g2["kernel"] + wd * w1
  v_b = momentum * v_b + g2["bias"]
  state = state.apply_gradients(g2, tx)
  np.testing.assert_allclose(state.params["kernel"], w1 - lr * v_w, rtol=1e-6)
  np.testing.assert_allclose(state.params["bias"], b1 - lr * v_b, rtol=1e-6)
  assert int(state.step) == 2


def test_the_optimizer_follows_the_schedule_across_a_boundary():
  # No momentum, no decay, gradient 1: each update is -lr(step); boundary after epoch 1 = step 3.
  tx = optim.make_optimizer(opt_config(learning_rate=0.4, momentum=0.0, weight_decay=0.0,
                                       halve_at_epochs=(1,)), 3)
  state = TrainState.create({"bias": jnp.zeros((1,))}, tx)
  deltas = []
  for _ in range(5):
    before = float(state.params["bias"][0])
    state = state.apply_gradients({"bias": jnp.ones((1,))}, tx)
    deltas.append(before - float(state.params["bias"][0]))
  np.testing.assert_allclose(deltas, [0.4, 0.4, 0.4, 0.2, 0.2], rtol=1e-6)


def test_decay_mask_selects_kernels():
  params = {"conv": {"kernel": jnp.zeros((3, 3, 3, 8)), "bias": jnp.zeros((8,))},
            "fc": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros((2,))}}
  assert optim.decay_mask(params) == {"conv": {"kernel": True, "bias": False},
                                      "fc": {"kernel": True, "bias": False}}


def test_schedule_with_another_decay_factor():
  # Faster R-CNN's schedule (SPEC B5): 1e-3, divided by 10 after epoch 12 (of 16 steps each).
  schedule = optim.learning_rate_schedule(
      opt_config(learning_rate=1e-3, halve_at_epochs=(12,), decay_factor=0.1), 16)
  for step, lr in {0: 1e-3, 191: 1e-3, 192: 1e-4, 10_000: 1e-4}.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step
