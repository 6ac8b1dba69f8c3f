"""OverFeat detection training (SPEC A6): the window-labelling rule on hand cases, the on-the-fly
negative mining against a plain numpy reference, the background class grown onto a classifier, and a
few training steps from a classification checkpoint (extractor bit for bit unchanged) with its bad
inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.config import validate_config
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.models.overfeat import fc_names
from overfeat_jax.tasks import detection as task
from overfeat_jax.training import loop

from detection_helpers import random_params, tiny_detection_config
from localization_helpers import bits, save_classifier

BG = 10


def labels_of(windows, boxes, classes, **rule):
  windows = jnp.asarray(windows, jnp.float32)[None, None]  # [1, 1, W, 4]
  boxes = jnp.asarray(boxes, jnp.float32)[None]
  rule = {"min_coverage": 0.5, "min_box_fraction": 0.3, "max_background_coverage": 0.2, **rule}
  labels, targets = task.window_labels(windows, jnp.ones(windows.shape[:3], bool), boxes,
                                       jnp.asarray(classes, jnp.int32)[None],
                                       jnp.ones(boxes.shape[:2], bool), background=BG, **rule)
  return np.asarray(labels[0, 0]), np.asarray(targets[0, 0])


def test_window_labels_hand_cases():
  # Box A (class 3): 20 x 30 at (10, 10); box B (class 7): 8 x 8 at (100, 100): too small for a
  # 58-px window (8 < 0.3 * 58 = 17.4), right for a 20-px one.
  boxes = [[10, 10, 30, 40], [100, 100, 108, 108]]
  windows = [[0, 0, 58, 58],        # holds all of A: class 3
             [20, 0, 78, 58],       # holds half of A (10 x 30 of 20 x 30): class 3 (>= 0.5)
             [21, 0, 79, 58],       # holds 9/20 of A: neither positive nor background: ignore
             [25, 0, 83, 58],       # holds 1/4 of A: >= 0.2, ignore
             [27, 0, 85, 58],       # holds 3/20 = 0.15 of A: background
             [60, 60, 118, 118],    # holds all of B, too small: ignore (not background either)
             [95, 95, 115, 115],    # a 20-px window: B is big enough (8 >= 6): class 7
             [200, 200, 258, 258]]  # nothing: background
  labels, targets = labels_of(windows, boxes, [3, 7])
  np.testing.assert_array_equal(labels, [3, 3, task.IGNORE, task.IGNORE, BG, task.IGNORE, 7, BG])
  np.testing.assert_allclose(targets[0], [10 / 58, 10 / 58, -28 / 58, -18 / 58], rtol=1e-6)
  np.testing.assert_allclose(targets[6], [5 / 20, 5 / 20, -7 / 20, -7 / 20], rtol=1e-6)
  assert not targets[[2, 3, 4, 5, 7]].any()  # only positives have targets
  # A window holding a too-small box whole and half of a big one: the big one's class.
  labels, _ = labels_of([[0, 0, 58, 58]], [[5, 5, 10, 10], [29, 0, 87, 40]], [1, 2])
  np.testing.assert_array_equal(labels, [2])
  # Two eligible boxes: the one covered most wins; padding boxes take no part.
  windows = jnp.asarray([[[[0, 0, 58, 58]]]], jnp.float32)
  boxes = jnp.asarray([[[0, 0, 40, 40], [30, 0, 60, 40], [0, 0, 58, 58]]], jnp.float32)
  labels, _ = task.window_labels(windows, jnp.ones((1, 1, 1), bool), boxes,
                                 jnp.asarray([[4, 5, 6]]), jnp.asarray([[False, True, False]]),
                                 background=BG, min_coverage=0.5, min_box_fraction=0.3,
                                 max_background_coverage=0.2)
  np.testing.assert_array_equal(labels, [[[5]]])  # box 1 holds 28/30 inside; 0 and 2 are padding
  # A window mostly on the padding is never labelled.
  labels, _ = task.window_labels(windows, jnp.zeros((1, 1, 1), bool), boxes, jnp.asarray([[4, 5, 6]]),
                                 jnp.ones((1, 3), bool), background=BG, min_coverage=0.5,
                                 min_box_fraction=0.3, max_background_coverage=0.2)
  np.testing.assert_array_equal(labels, [[[task.IGNORE]]])


def reference_hard(offending, negative, k):
  """The k background windows of highest score per image (ties: lower index), in plain numpy."""
  out = np.zeros_like(negative)
  for b in range(len(negative)):
    order = sorted(np.flatnonzero(negative[b]), key=lambda i: (-offending[b, i], i))
    out[b, order[:k]] = True
  return out


@pytest.mark.parametrize("seed", range(3))
def test_mine_negatives_against_reference(seed):
  rng = np.random.default_rng(seed)
  b, n = 4, 50
  offending = np.round(rng.uniform(size=(b, n)), 1).astype(np.float32)  # many ties
  negative = rng.uniform(size=(b, n)) < 0.6
  negative[3] = False
  negative[3, [5, 9, 11]] = True  # fewer background windows than asked for
  hard, random = map(np.asarray, task.mine_negatives(jnp.asarray(offending), jnp.asarray(negative),
                                                     jax.random.key(seed), num_hard=5, num_random=4))
  np.testing.assert_array_equal(hard, reference_hard(offending, negative, 5))
  assert not (hard & random).any() and not (random & ~negative).any()
  np.testing.assert_array_equal(random[:3].sum(1), [4, 4, 4])  # a fixed count where there are enough
  np.testing.assert_array_equal(hard[3], negative[3])
  assert not random[3].any()
  # The random ones are spread over the remaining windows (not e.g. always the first ones).
  picks = np.zeros(n)
  for s in range(200):
    _, r = task.mine_negatives(jnp.asarray(offending[:1]), jnp.asarray(negative[:1]), jax.random.key(s),
                               num_hard=5, num_random=4)
    picks += np.asarray(r[0])
  remaining = negative[0] & ~hard[0]
  assert picks[~remaining].sum() == 0
  assert picks[remaining].min() > 0.3 * picks[remaining].mean()  # ~uniform: 200 * 4 / count each


def test_with_background_adds_a_zero_class():
  config = tiny_detection_config("/unused", "/unused")
  model = task.model_from_config(config)
  from overfeat_jax.tasks import classification
  classifier = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                            classification.params_template(classification.model_from_config(config)))
  grown = task.with_background(classifier, fc_names(model.overfeat.arch))
  template = task.params_template(model)[task.OVERFEAT]
  assert jax.tree.map(lambda x: x.shape, grown) == jax.tree.map(lambda x: x.shape, template)
  last = fc_names(model.overfeat.arch)[-1]
  assert float(jnp.abs(grown["classifier"][last]["kernel"][..., -1]).sum()) == 0
  assert float(jnp.abs(grown["classifier"][last]["kernel"][..., :-1] - 1).sum()) == 0


def test_pcr_loss_trains_only_the_positives_classes():
  # Image 0 holds one "2" and image 1 one "5" (40 px, inside every 58-px window of a 64-px image):
  # the per-class regressor's output layer gets gradient in those classes' 4 columns only.
  config = tiny_detection_config("/unused", "/unused")
  config.detection.regressor = "pcr"
  model = task.model_from_config(config)
  k = config.dataset.num_classes
  params = random_params(task.params_template(model))
  assert params["regressor"]["edges"]["kernel"].shape[-1] == 4 * k  # no box for the background
  batch = {"image": jax.random.normal(jax.random.key(1), (2, 64, 64, 3)),
           "size": jnp.full((2, 2), 64, jnp.int32),
           "boxes": jnp.asarray([[[12.0, 12.0, 52.0, 52.0]], [[12.0, 12.0, 52.0, 52.0]]]),
           "box_labels": jnp.asarray([[2], [5]], jnp.int32), "box_valid": jnp.ones((2, 1), bool)}
  loss_fn = task.detection_loss_fn(model, train_scales=(64,), min_size=64, det_cfg=config.detection)
  grads, aux = jax.jit(jax.grad(loss_fn, has_aux=True))(params, batch, jax.random.key(2))  # op by op: slower
  assert float(aux["positives"]) > 0 and float(aux["box_loss"]) > 0
  columns = np.abs(np.asarray(grads["regressor"]["edges"]["kernel"])).reshape(-1, k, 4).sum(axis=(0, 2))
  assert columns[2] > 0 and columns[5] > 0
  assert not np.delete(columns, [2, 5]).any()


def test_training_freezes_the_extractor(tmp_path, digits_detection_data_dir):
  classifier_dir = str(tmp_path / "classifier")
  config = tiny_detection_config(digits_detection_data_dir, classifier_dir)
  saved = save_classifier(
      tiny_detection_config(digits_detection_data_dir, classifier_dir, classification=True), classifier_dir)
  validate_config(config)
  workdir = str(tmp_path / "det")
  loop.run(config, workdir)
  params, step = task.restore_params(config, workdir)
  assert step == config.train.max_steps
  after, before = bits(params["overfeat"]["extractor"]), bits(saved["extractor"])
  assert after.keys() == before.keys()
  for key in before:  # frozen: bit for bit (a -0.0 would show a +0.0 update)
    np.testing.assert_array_equal(after[key], before[key])
  last = fc_names(task.model_from_config(config).overfeat.arch)[-1]
  start = task.with_background(saved, fc_names(task.model_from_config(config).overfeat.arch))
  assert not np.array_equal(params["overfeat"]["classifier"][last]["kernel"],
                            start["classifier"][last]["kernel"])  # the class layer trained
  # detection.train_extractor: every leaf trains.
  assert all(jax.tree.leaves(task.trainable(params, train_extractor=True)))
  marks = task.trainable(params)
  assert not any(jax.tree.leaves(marks["overfeat"]["extractor"])) and all(jax.tree.leaves(marks["regressor"]))


def test_bad_classifier_workdir(tmp_path, digits_detection_data_dir):
  config = tiny_detection_config(digits_detection_data_dir, str(tmp_path / "missing"))
  with pytest.raises(CheckpointError, match="config.detection.classifier_workdir=.*missing"):
    task.training_task(config)
  other = tiny_detection_config(digits_detection_data_dir, str(tmp_path / "other"), classification=True)
  other.model.variant = "accurate"  # a classifier of another architecture
  other.model.stem_kernel = 0
  other.model.stem_stride = 0
  save_classifier(other, str(tmp_path / "other"))
  with pytest.raises(CheckpointError, match="classifier_workdir") as e:
    task.training_task(tiny_detection_config(digits_detection_data_dir, str(tmp_path / "other")))
  assert "\n" not in str(e.value)
  config.detection.classifier_workdir = ""
  with pytest.raises(ConfigError, match="detection.classifier_workdir"):
    validate_config(config)
