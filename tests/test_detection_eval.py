"""OverFeat detection evaluation (SPEC A6): one image's detections against a plain reference built on
the plain merge loop, an image without digits, and evaluate.py's path end to end (metrics, pictures,
bad inputs)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.errors import CheckpointError, InputSizeError
from overfeat_jax.evaluation import detection_overfeat as evaluator
from overfeat_jax.evaluation import run as evaluation
from overfeat_jax.models.overfeat import fc_names
from overfeat_jax.tasks import detection as task
from overfeat_jax.training import loop

from detection_helpers import random_params, tiny_detection_config
from localization_helpers import save_classifier
from test_ops_merge import loop_merge

F32 = np.float32


def random_windows(rng, n: int, k: int):
  logits = rng.normal(size=(n, k + 1)) * 2
  probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(F32)
  corner = rng.uniform(0, 100, (n, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(10, 50, (n, 2))], 1).astype(F32)
  return probs, rng.random(n) < 0.8, boxes


def plain_iou(a, b) -> float:
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
  return w * h / union


def reference_detections(probs, valid, boxes, *, min_score, per_class, threshold, score, d,
                         top_class_only=False, merged_nms_iou=1.0, average="pair"):
  """Module docstring, one class and one box at a time: [(class, box, confidence)], best first.
  boxes: [N, 4] (SCR) or [N, K, 4] (PCR: class c's merge takes boxes[:, c])."""
  found = []
  for c in range(probs.shape[1] - 1):
    class_boxes = boxes if boxes.ndim == 2 else boxes[:, c]
    enters = [i for i in range(len(valid)) if valid[i] and probs[i, c] >= min_score
              and (not top_class_only or int(np.argmax(probs[i, :-1])) == c)]
    order = sorted(enters, key=lambda i: (-probs[i, c], i))
    order = order[:per_class]
    for box, conf, _ in loop_merge(class_boxes[order], probs[order, c], np.ones(len(order), bool),
                                   threshold, score, average):
      found.append((c, box, conf))
  found.sort(key=lambda x: -float(x[2]))  # stable: classes in order on ties
  kept = []  # greedy, best first: a merged box goes when it overlaps a kept one of its class too much
  for c, box, conf in found:
    if all(k[0] != c or plain_iou(k[1], box) <= merged_nms_iou for k in kept):
      kept.append((c, box, conf))
  return kept[:d]


@pytest.mark.parametrize("score,threshold,top,nms,average,per_class_boxes", [
    ("overlap", 0.5, False, 1.0, "pair", False), ("paper", 30.0, False, 1.0, "pair", False),
    ("overlap", 0.5, True, 1.0, "pair", False), ("overlap", 0.2, False, 0.3, "pair", False),
    ("overlap", 0.5, False, 1.0, "weighted", False), ("overlap", 0.5, False, 1.0, "weighted", True)])
def test_image_detections_against_reference(score, threshold, top, nms, average, per_class_boxes):
  rng = np.random.default_rng(3)
  probs, valid, boxes = random_windows(rng, 60, 4)
  if per_class_boxes:  # PCR: each class its own box per window, here the shared one shifted by 7c px
    boxes = boxes[:, None, :] + 7.0 * np.arange(4, dtype=F32)[None, :, None]
  got = jax.tree.map(np.asarray, evaluator.image_detections(
      jnp.asarray(probs), jnp.asarray(valid), jnp.asarray(boxes), background=4, min_window_score=0.15,
      max_boxes_per_class=12, threshold=threshold, score=score, max_detections=10, top_class_only=top,
      merged_nms_iou=nms, average=average))
  want = reference_detections(probs, valid, boxes, min_score=0.15, per_class=12, threshold=threshold,
                              score=score, d=10, top_class_only=top, merged_nms_iou=nms,
                              average=average)
  if nms < 1.0:  # the suppression did drop merged boxes that the merge had left
    assert len(reference_detections(probs, valid, boxes, min_score=0.15, per_class=12,
                                    threshold=threshold, score=score, d=100)) > len(
        reference_detections(probs, valid, boxes, min_score=0.15, per_class=12, threshold=threshold,
                             score=score, d=100, merged_nms_iou=nms))
  assert got["valid"].sum() == len(want) and len(want) >= 6
  np.testing.assert_allclose(got["scores"][:len(want)], [w[2] for w in want], rtol=1e-6)
  np.testing.assert_array_equal(got["classes"][:len(want)], [w[0] for w in want])
  np.testing.assert_allclose(got["boxes"][:len(want)], np.stack([w[1] for w in want]), rtol=1e-5)
  # Fewer detections than D: padded rows are invalid zeros.
  few = jax.tree.map(np.asarray, evaluator.image_detections(
      jnp.asarray(probs[:5]), jnp.asarray(valid[:5]), jnp.asarray(boxes[:5]), background=4,
      min_window_score=0.15, max_boxes_per_class=12, threshold=threshold, score=score,
      max_detections=30))
  want = reference_detections(probs[:5], valid[:5], boxes[:5], min_score=0.15, per_class=12,
                              threshold=threshold, score=score, d=30)
  assert few["valid"].sum() == len(want) and not few["scores"][len(want):].any()


def test_background_windows_give_no_detections():
  # An image without digits, as a trained detector sees it: background everywhere.
  rng = np.random.default_rng(0)
  probs, valid, boxes = random_windows(rng, 40, 3)
  probs = np.full_like(probs, 0.02)
  probs[:, 3] = 0.94
  got = evaluator.image_detections(jnp.asarray(probs), jnp.asarray(valid), jnp.asarray(boxes),
                                   background=3, min_window_score=0.1, max_boxes_per_class=8,
                                   threshold=0.5, score="overlap", max_detections=5)
  assert not np.asarray(got["valid"]).any() and not np.asarray(got["scores"]).any()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_detection_data_dir):
  """A detection run of two steps from a random classifier: (config, workdir)."""
  root = tmp_path_factory.mktemp("detection")
  classifier_dir = str(root / "classifier")
  save_classifier(tiny_detection_config(digits_detection_data_dir, classifier_dir, classification=True),
                  classifier_dir)
  config = tiny_detection_config(digits_detection_data_dir, classifier_dir)
  workdir = str(root / "det")
  loop.run(config, workdir)
  return config, workdir


def test_evaluate_end_to_end(trained):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.eval.pictures = 2
  result = evaluation.run(config, workdir, verbose=False)
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    saved = json.load(f)
  assert saved["num_images"] == 8 and saved["checkpoint_step"] == 2 and saved["task"] == "detection"
  for value in (saved["coco"]["AP"], saved["coco"]["AP50"], saved["voc"]["mAP07"]):
    assert value == -1 or 0 <= value <= 1
  assert result["num_detections"] <= 8 * config.detection.max_detections
  assert sorted(os.listdir(os.path.join(workdir, "eval", "pictures"))) and len(
      os.listdir(os.path.join(workdir, "eval", "pictures"))) == 2
  assert set(evaluation.SCALARS["detection"](result)) == {"eval/AP50", "eval/AP", "eval/mAP07"}


def test_only_background_gives_zero_detections_and_valid_metrics(trained, tmp_path):
  # A detector whose background logit dominates every window (what it should do on an empty image)
  # gives no detection, and the metrics are still computed: AP 0 for the classes with ground truth.
  config, workdir = trained
  params, _ = task.restore_params(config, workdir)
  last = fc_names(task.model_from_config(config).overfeat.arch)[-1]
  layer = params["overfeat"]["classifier"][last]
  layer["bias"] = layer["bias"].at[-1].set(1e4)
  from overfeat_jax.training.checkpoint import TrainCheckpoints
  from overfeat_jax.training.state import TrainState
  from overfeat_jax import checkpoint_io
  import optax
  from localization_helpers import NoData
  empty_dir = str(tmp_path / "background")
  signature = checkpoint_io.make_signature(task.model_signature(config), params)
  with TrainCheckpoints(empty_dir, keep=1, signature=signature) as checkpoints:
    checkpoints.save(1, TrainState.create(params, optax.identity()), NoData())
  result = evaluation.run(config, empty_dir, verbose=False)
  assert result["num_detections"] == 0 and result["num_ground_truth"] > 0
  assert result["coco"]["AP"] == 0 and result["voc"]["mAP07"] == 0


def test_bad_inputs(trained, tmp_path):
  config, workdir = trained
  with pytest.raises(CheckpointError):
    evaluation.run(config, str(tmp_path / "nothing"), verbose=False)
  small = config.copy_and_resolve_references()
  small.detection.test_scales = (40,)
  with pytest.raises(InputSizeError, match="detection.test_scales"):
    evaluation.run(small, workdir, verbose=False)
  pcr = config.copy_and_resolve_references()
  pcr.detection.regressor = "pcr"  # the run was trained with SCR
  with pytest.raises(CheckpointError):
    evaluation.run(pcr, workdir, verbose=False)


def test_pcr_scale_outputs_give_each_class_its_box():
  # scale_outputs' [B, N, K, 4] boxes: class c's is the box dense_grid decodes for class c.
  config = tiny_detection_config("/unused", "/unused")
  config.detection.regressor = "pcr"
  model = task.model_from_config(config)
  params = random_params(task.params_template(model))
  images = jax.random.normal(jax.random.key(1), (2, 64, 80, 3))
  hw = jnp.asarray([[64, 80], [64, 70]], jnp.int32)
  outputs = jax.jit(lambda p, x, hw: evaluator.scale_outputs(model, p, x, hw, scale=72, min_size=64))
  probs, valid, boxes, grid = outputs(params, images, hw)
  k = config.dataset.num_classes
  n = grid.valid.shape[1] * grid.valid.shape[2]
  assert probs.shape == (2, n, k + 1) and valid.shape == (2, n) and boxes.shape == (2, n, k, 4)
  from overfeat_jax.models import dense_grid
  for c in (0, 3, k - 1):
    want = dense_grid.regressed_boxes(grid, jnp.full(grid.valid.shape, c, jnp.int32)).reshape(2, n, 4)
    np.testing.assert_allclose(np.asarray(boxes[:, :, c]), np.asarray(want), rtol=1e-6)
  assert not np.allclose(np.asarray(boxes[:, :, 0]), np.asarray(boxes[:, :, 3]))
