"""OverFeat localization (SPEC A5): the box parametrisation, the window-selection rule, the regressor
(SCR / PCR) under the offset grid against a per-window reference, the loss, and training on a frozen
classifier (bit for bit unchanged) with its bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from overfeat_jax.config import validate_config
from overfeat_jax.errors import CheckpointError, ConfigError, InputSizeError
from overfeat_jax.models import dense_grid
from overfeat_jax.models.heads import BoxRegressor, build_regressor, class_edges
from overfeat_jax.models.overfeat import build_architecture, param_count
from overfeat_jax.ops import pooling
from overfeat_jax.ops.edges import box_coverage, decode_edges, encode_edges
from overfeat_jax.tasks import localization as task
from overfeat_jax.training import loop, optim

from localization_helpers import NEGATIVE_ZERO_LEAF, bits, save_classifier, tiny_localization_config
from model_helpers import random_variables, tiny


def filled(tree, seed: int):
  """Numpy-filled parameters for a tree of shapes: kernels N(0, 2 / fan_in), biases N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "bias":
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1])),
                       jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, tree)


# ---------------------------------------------------------------------------------------------
# The parametrisation and the selection rule.

def test_edges_hand_computed_and_round_trip():
  window = np.array([10.0, 20.0, 68.0, 78.0])  # a 58 x 58 window
  box = np.array([20.0, 30.0, 40.0, 60.0])
  t = encode_edges(box, window)
  np.testing.assert_allclose(t, [10 / 58, 10 / 58, -28 / 58, -18 / 58])
  np.testing.assert_allclose(decode_edges(t, window), box)
  # Windows in original pixels are not square (the fov scaled per axis): each axis its own size.
  rng = np.random.default_rng(0)
  corner = rng.uniform(-50, 200, (100, 2))
  windows = np.concatenate([corner, corner + rng.uniform(5, 150, (100, 2))], 1)
  corner = rng.uniform(-50, 200, (100, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(1, 150, (100, 2))], 1)
  t = encode_edges(boxes, windows)
  np.testing.assert_allclose(decode_edges(t, windows), boxes, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(decode_edges(jnp.asarray(t, jnp.float32), jnp.asarray(windows, jnp.float32)),
                             boxes, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(decode_edges(np.zeros(4), window), window)  # t = 0: the window itself


def test_window_selection_hand_computed():
  # A 20 x 20 box at (40, 40); windows 58 px wide. Coverage = the part of the box's 400 px^2 inside.
  box = np.array([[40.0, 40.0, 60.0, 60.0]])
  windows = np.array([[[[0, 0, 58, 58],     # box x in [40, 58), y in [40, 58): 18 * 18 = 324 -> 0.81
                        [-8, 0, 50, 58],    # x [40, 50): 10 * 18 = 180 -> 0.45: no
                        [-10, 0, 50, 60]],  # x [40, 50), y [40, 60): 10 * 20 = 200 -> exactly 0.5: yes
                       [[30, 30, 88, 88],   # holds it whole -> 1.0, but the window is invalid
                        [50, 50, 108, 108],  # 10 * 10 -> 0.25
                        [100, 0, 158, 58]]]], np.float32)  # disjoint -> 0
  np.testing.assert_allclose(box_coverage(windows[0], box[0]),
                             [[0.81, 0.45, 0.5], [1.0, 0.25, 0.0]], rtol=1e-6)
  valid = np.array([[[True, True, True], [False, True, True]]])
  # A second, padding box that every window would cover whole must be ignored.
  boxes = np.concatenate([box, [[0.0, 0.0, 5.0, 5.0]]])[None].astype(np.float32)
  targets, classes, selected = task.regression_targets(
      jnp.asarray(windows), jnp.asarray(valid), jnp.asarray(boxes), jnp.asarray([[7, 3]]),
      jnp.asarray([[True, False]]), 0.5)
  np.testing.assert_array_equal(selected[0], [[True, False, True], [False, False, False]])
  np.testing.assert_array_equal(classes[0], [[7, 0, 7], [0, 0, 0]])
  np.testing.assert_allclose(targets[0, 0, 0], [40 / 58, 40 / 58, 2 / 58, 2 / 58], rtol=1e-6)
  np.testing.assert_allclose(targets[0, 0, 2], [50 / 60, 40 / 60, 10 / 60, 0.0], atol=1e-7)
  np.testing.assert_array_equal(targets[0, 1], 0.0)


def test_window_selection_takes_the_box_it_covers_most():
  windows = jnp.asarray([[[[0.0, 0.0, 58.0, 58.0]]]])  # [1, 1, 1, 4]
  boxes = jnp.asarray([[[30.0, 30.0, 70.0, 70.0],     # 28 * 28 / 1600 = 0.49: not enough alone
                        [10.0, 10.0, 50.0, 40.0],     # whole: 1.0
                        [0.0, 0.0, 20.0, 20.0]]])     # whole too: ties go to the first of them
  targets, classes, selected = task.regression_targets(
      windows, jnp.ones((1, 1, 1), bool), boxes, jnp.asarray([[1, 2, 3]]), jnp.ones((1, 3), bool), 0.5)
  assert bool(selected[0, 0, 0]) and int(classes[0, 0, 0]) == 2
  np.testing.assert_allclose(decode_edges(targets[0, 0, 0], windows[0, 0, 0]), boxes[0, 1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The regressor.

@pytest.mark.parametrize("kind, outputs", [("scr", 4), ("pcr", 4 * 7)])
def test_regressor_shapes(kind, outputs):
  config = tiny_localization_config("", "w", regressor=kind)
  config.dataset.num_classes = 7
  model = task.model_from_config(config)
  template = task.params_template(model)["regressor"]
  c = model.overfeat.arch.convs[-1].features  # 32 at width 1/32
  assert template["hidden1"]["kernel"].shape == (6, 6, c, 128)  # 4096 / 32, the classifier's 6x6
  assert template["hidden2"]["kernel"].shape == (1, 1, 128, 32)  # 1024 / 32
  assert template["edges"]["kernel"].shape == (1, 1, 32, outputs)
  pooled = jnp.ones((2, 8, 9, c))
  out = jax.eval_shape(lambda p, x: model.regressor.apply({"params": p}, x), template, pooled)
  assert out.shape == (2, 3, 4, outputs) and out.dtype == jnp.float32


def test_regressor_at_the_papers_size():
  # SPEC A5: 6x6x1024 -> 4096 -> 1024 -> 4 on the fast model's pooled map (1000 x 4 with PCR).
  arch = build_architecture("fast")
  for kind, last in (("scr", 4), ("pcr", 4000)):
    model_cfg = tiny_localization_config("", "w").model
    model_cfg.width = 1.0
    regressor = build_regressor(model_cfg, arch, 1000, kind)
    shapes = jax.eval_shape(lambda k: regressor.init(k, jnp.zeros((1, 6, 6, 1024))),
                            jax.random.key(0))["params"]
    assert param_count(shapes) == (6 * 6 * 1024 + 1) * 4096 + (4096 + 1) * 1024 + (1024 + 1) * last


def test_class_edges():
  outputs = jnp.arange(2 * 3 * 12, dtype=jnp.float32).reshape(2, 3, 12)  # PCR, K = 3
  per_class = class_edges(outputs)
  assert per_class.shape == (2, 3, 3, 4)
  picked = class_edges(outputs, jnp.asarray([[0, 2, 1], [1, 1, 0]]))
  np.testing.assert_array_equal(picked[0, 1], outputs[0, 1, 8:12])
  np.testing.assert_array_equal(picked[1, 2], outputs[1, 2, 0:4])
  shared = class_edges(outputs[..., :4], jnp.zeros((2, 3), jnp.int32))  # SCR: the same 4
  np.testing.assert_array_equal(shared, outputs[..., :4])


def test_dense_regressor_equals_the_regressor_on_each_window_crop():
  """Every fine-grid position's regressor outputs are those of the regressor run on its window
  cropped from the image (a network without zero padding, so a crop sees what the grid sees)."""
  model = tiny("fast", padding=False)  # field of view 82, stride 4, pool 2
  variables = random_variables(model, seed=3)
  regressor = BoxRegressor(model.arch, features=(16, 8), num_outputs=4 * 5, weight_init="he")
  c = model.arch.convs[-1].features
  reg_params = filled(jax.eval_shape(lambda k: regressor.init(k, jnp.zeros((1, 6, 6, c))),
                                     jax.random.key(0))["params"], seed=4)

  def head(pooled):
    return regressor.apply({"params": reg_params}, pooled)

  image_hw = np.array([[98, 94]])
  canvas = np.random.default_rng(5).normal(size=(1, 98, 94, 3)).astype(np.float32)
  original_hw = np.array([[49, 47]])
  grid = jax.jit(lambda v, x: dense_grid.dense_grid(model, v, x, image_hw=image_hw, original_hw=original_hw,
                                                    regressor=head))(variables, canvas)
  _, gh, gw, _ = grid.regression.shape
  assert (gh, gw) == grid.logits.shape[1:3] == (4, 4)
  fov, s = model.arch.train_size, model.arch.prepool_stride
  positions = [(0, 0), (1, 2), (3, 3), (2, 1)]  # every pooling offset (u % 2, v % 2) among them
  crops = np.concatenate([canvas[:, u * s:u * s + fov, v * s:v * s + fov] for u, v in positions])

  def per_window(x):
    pooled = pooling.max_pool(model.apply(variables, x, method="features"), model.arch.last_pool)
    return head(pooled)[:, 0, 0]

  expected = jax.jit(per_window)(crops)
  for i, (u, v) in enumerate(positions):
    np.testing.assert_allclose(grid.regression[0, u, v], expected[i], rtol=1e-4, atol=1e-4)
  # The boxes: the outputs decoded against the window in original pixels (half the canvas here).
  boxes = dense_grid.regressed_boxes(grid)  # [1, gh, gw, 5, 4]
  u, v = 1, 2
  window = np.array([v * s, u * s, v * s + fov, u * s + fov]) / 2.0
  np.testing.assert_allclose(boxes[0, u, v], decode_edges(np.asarray(expected[1]).reshape(5, 4), window),
                             rtol=1e-4, atol=1e-3)
  one = dense_grid.regressed_boxes(grid, jnp.full((1, gh, gw), 3))
  np.testing.assert_allclose(one[0, u, v], boxes[0, u, v, 3])


# ---------------------------------------------------------------------------------------------
# The loss and freezing.

def fixed_batch():
  """Two 64 x 80 images on 64 x 80 canvases (the second 64 x 70, padded), one box each."""
  rng = np.random.default_rng(6)
  images = rng.normal(size=(2, 64, 80, 3)).astype(np.float32)
  images[1, :, 70:] = 0.0
  return {"image": jnp.asarray(images), "size": jnp.asarray([[64, 80], [64, 70]]),
          "boxes": jnp.asarray([[[10.0, 12.0, 40.0, 50.0], [0, 0, 0, 0]],
                                [[30.0, 5.0, 60.0, 35.0], [0, 0, 0, 0]]]),
          "box_labels": jnp.asarray([[1, -1], [3, -1]]),
          "box_valid": jnp.asarray([[True, False], [True, False]])}


@pytest.mark.parametrize("kind", ["scr", "pcr"])
def test_loss_decreases_on_a_fixed_batch_and_the_classifier_gets_no_gradient(kind):
  config = tiny_localization_config("", "w", regressor=kind)
  config.dataset.num_classes = 5
  model = task.model_from_config(config)
  template = task.params_template(model)
  regressor = jax.jit(lambda k: task.init_regressor(model, k))(jax.random.key(8))  # its own init
  params = {"overfeat": filled(template["overfeat"], 7), "regressor": regressor}
  loss_fn = task.localization_loss_fn(model, train_scales=(62, 64), min_size=64, min_coverage=0.5)
  batch = fixed_batch()
  grad_fn = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, batch, jax.random.key(0)), has_aux=True))
  (loss, aux), grads = grad_fn(params)
  assert all(not np.any(g) for g in jax.tree.leaves(grads["overfeat"]))  # stop_gradient
  assert float(aux["windows"]) > 0 and float(aux["window_loss"]) > 0
  tx = optax.sgd(1e-3)
  state = tx.init(params["regressor"])
  losses = [float(loss)]
  for _ in range(4):
    updates, state = tx.update(grads["regressor"], state)
    params = {**params, "regressor": optax.apply_updates(params["regressor"], updates)}
    (loss, _), grads = grad_fn(params)
    losses.append(float(loss))
  assert losses[-1] < 0.7 * losses[0], losses
  assert all(b <= a for a, b in zip(losses, losses[1:])), losses


def test_frozen_leaves_stay_bit_for_bit_under_momentum_and_decay():
  params = {"frozen": {"kernel": jnp.asarray([[-0.0, 1.5], [0.0, -2.0]]), "bias": jnp.asarray([-0.0, 3.0])},
            "trained": {"kernel": jnp.asarray([[1.0, 2.0]])}}
  config = tiny_localization_config("", "w")
  config.optimizer.weight_decay = 0.1
  tx = optim.only_trainable(optim.make_optimizer(config.optimizer, 10),
                            lambda p: {"frozen": jax.tree.map(lambda _: False, p["frozen"]),
                                       "trained": jax.tree.map(lambda _: True, p["trained"])})
  state = tx.init(params)
  assert not jax.tree.leaves(state.inner_states["frozen"])
  # No momentum buffer for the frozen leaves: the state holds the trained kernel's shape and counters.
  assert {leaf.shape for leaf in jax.tree.leaves(state)} == {(1, 2), ()}
  grads = jax.tree.map(jnp.ones_like, params)
  before = bits(params)
  def step(p, s):
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  # Eagerly (each add done as written: -0.0 + 0.0 would give +0.0) and under jit.
  for apply in (step, jax.jit(step), step):
    params, state = apply(params, state)
  after = bits(params)
  for name in ("frozen/kernel", "frozen/bias"):
    np.testing.assert_array_equal(after[name], before[name])
  assert not np.array_equal(after["trained/kernel"], before["trained/kernel"])


def test_training_keeps_the_classifier_bit_for_bit(tmp_path, digits_data_dir):
  classifier_dir, workdir = str(tmp_path / "classifier"), str(tmp_path / "localization")
  config = tiny_localization_config(digits_data_dir, classifier_dir)
  classifier = save_classifier(config, classifier_dir)
  result = loop.run(config, workdir)
  assert result.step == 3
  params, step = task.restore_params(config, workdir)  # self-contained: the localization workdir alone
  assert step == 3
  frozen, saved = bits(params["overfeat"]), bits(classifier)
  assert frozen.keys() == saved.keys()
  for name in saved:
    np.testing.assert_array_equal(frozen[name], saved[name], err_msg=name)
  planted = frozen["/".join(NEGATIVE_ZERO_LEAF)]
  assert planted[0] == np.float32(-0.0).view(np.uint32)  # the -0.0 is still -0.0
  # ... while the regressor trained: its parameters moved from their init (the loop's init key).
  model = task.model_from_config(config)
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  init = bits(jax.jit(lambda k: task.init_regressor(model, k))(init_rng))
  trained = bits(params["regressor"])
  assert all(not np.array_equal(trained[name], init[name]) for name in init)


# ---------------------------------------------------------------------------------------------
# The shipped configs.

def test_shipped_localization_configs():
  from test_config import load_config  # pylint: disable=g-import-not-at-top

  quick = load_config("localization_quickstart")
  validate_config(quick)
  classifier = load_config("quickstart")
  for key in ("variant", "width", "stem_kernel", "stem_stride"):  # it starts from the quickstart's
    assert quick.model[key] == classifier.model[key]
  assert quick.localization.classifier_workdir == "workdirs/quickstart"
  paper = load_config("overfeat_localization_imagenet")
  validate_config(paper)
  assert paper.localization.regressor == "scr" and paper.dataset.name == "imagenet2012"
  model = task.model_from_config(paper)
  task.check_train_scales(model, paper)
  shapes = task.params_template(model)["regressor"]
  assert shapes["hidden1"]["kernel"].shape == (6, 6, 1024, 4096)  # SPEC A5 at the paper's size
  assert shapes["edges"]["kernel"].shape == (1, 1, 1024, 4)


# ---------------------------------------------------------------------------------------------
# Bad input: one-line errors.

def test_a_localization_config_needs_a_classifier_workdir():
  config = tiny_localization_config("", "")
  with pytest.raises(ConfigError, match="localization.classifier_workdir"):
    validate_config(config)


def test_a_missing_classifier_checkpoint_is_named(tmp_path):
  config = tiny_localization_config("", str(tmp_path / "nothing"))
  with pytest.raises(CheckpointError) as error:
    task.training_task(config)
  message = str(error.value)
  assert "\n" not in message and "classifier_workdir" in message and "nothing" in message


def test_a_classifier_of_another_architecture_is_named(tmp_path):
  classifier_dir = str(tmp_path / "classifier")
  save_classifier(tiny_localization_config("", classifier_dir), classifier_dir)
  config = tiny_localization_config("", classifier_dir)
  config.model.width = 1 / 16
  with pytest.raises(CheckpointError) as error:
    task.training_task(config)
  message = str(error.value)
  assert "\n" not in message and "classifier_workdir" in message and "model.width" in message


def test_a_training_scale_smaller_than_the_fine_grid():
  config = tiny_localization_config("", "unused", train_scales=(61, 64))
  with pytest.raises(InputSizeError, match=r"\[61\].*62 px"):
    task.training_task(config)


def test_an_image_smaller_than_the_field_of_view():
  config = tiny_localization_config("", "unused")
  model = task.model_from_config(config)
  template = task.params_template(model)

  def head(pooled):
    return model.regressor.apply({"params": template["regressor"]}, pooled)

  small = jnp.zeros((1, 50, 70, 3))  # field of view 58: too small even for one window
  with pytest.raises(InputSizeError, match="50x70.*62x62"):
    jax.eval_shape(lambda v: dense_grid.dense_grid(model.overfeat, v, small, image_hw=jnp.asarray([[50, 70]]),
                                                   original_hw=jnp.asarray([[50, 70]]), regressor=head),
                   {"params": template["overfeat"]})
