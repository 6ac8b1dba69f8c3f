"""The Faster R-CNN task end to end on the embedded detection data: train, evaluate (COCO / VOC AP,
recall vs proposals, pictures), frozen layers, backbone weights, and the one-line errors."""

from __future__ import annotations

import copy
import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import random_vgg16
import test_ops_proposals
from model_helpers import random_variables
from overfeat_jax import checkpoint_io
from overfeat_jax.config import faster_rcnn_test_sizes, validate_config
from overfeat_jax.data import buckets, detection, pipeline, transforms
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.evaluation import faster_rcnn as frcnn_eval
from overfeat_jax.evaluation import run as evaluation
from overfeat_jax.evaluation.prediction import Predictor
from overfeat_jax.models.overfeat import fold_standardization
from overfeat_jax.tasks import classification
from overfeat_jax.tasks import faster_rcnn as task
from overfeat_jax.training import loop

from test_config import load_config
from test_pretrained import save_classifier


def tiny_config(data_dir: str, classifier: str = "", **faster_rcnn):
  """The quickstart at test size: 1/32 of its OverFeat backbone (from the classifier checkpoint in
  `classifier`, else from scratch), a 16-wide head, few proposals and RoIs, 64-96 px images, 2 steps."""
  config = load_config("faster_rcnn_quickstart")
  config.dataset.data_dir = data_dir
  config.input.min_size = 64
  config.input.max_size = 96
  config.input.batch_size = 4
  config.input.eval_batch_size = 8
  config.input.aspect_buckets = (2.0,)  # one canvas: one compiled program per function
  config.model.width = 1 / 32
  f = config.faster_rcnn
  f.backbone_init, f.backbone_weights = ("classifier", classifier) if classifier else ("none", "")
  f.rpn_batch = 32
  f.train_pre_nms, f.train_post_nms = 200, 40
  f.test.pre_nms, f.test.post_nms = 200, 20
  f.test.recall_proposals = (5, 20, 60)
  f.test.picture_proposals = 3
  f.head_hidden = 16
  f.num_rois = 16
  f.test.extra_size_factors, f.test.box_voting_iou = (), 0.0  # one test size (tests that merge set it)
  for key, value in faster_rcnn.items():
    f[key] = value
  config.train.max_steps = 2
  config.train.log_every = 1
  config.train.checkpoint_every = 1
  config.eval.num_examples = 16
  return config


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  """(workdir, params) of a classification run's checkpoint of the quickstart classifier's model at
  1/32 width (random weights), as configs/quickstart.py would leave it."""
  config = load_config("quickstart")
  config.model.width = 1 / 32
  model = classification.model_from_config(config)
  params = random_variables(model, seed=6)["params"]
  workdir = str(tmp_path_factory.mktemp("classifier"))
  save_classifier(workdir, params, classification.model_signature(config), 5)
  return workdir, params


@pytest.fixture(scope="module")
def trained(digits_detection_data_dir, classifier, tmp_path_factory):
  """A 2-step run of the tiny config, its backbone from `classifier`, in exact joint training (the
  other tests train approximate joint or alternating): (config, workdir)."""
  config = tiny_config(digits_detection_data_dir, classifier[0], training="joint")
  workdir = str(tmp_path_factory.mktemp("frcnn") / "run")
  result = loop.run(config, workdir)
  assert result.step == 2
  return config, workdir


def test_the_backbone_starts_from_the_classifiers_extractor(digits_detection_data_dir, classifier):
  config = tiny_config(digits_detection_data_dir, classifier[0])
  init = task.training_task(config).init_params
  params = jax.device_get(jax.jit(init)(jax.random.key(0)))
  # The quickstart classifier's convolutions are weight-standardised: the backbone gets the plain
  # kernels they amount to.
  extractor = fold_standardization(classifier[1]["extractor"])
  assert jax.tree.structure(params["shared"]) == jax.tree.structure(extractor)
  for got, expected in zip(jax.tree.leaves(params["shared"]), jax.tree.leaves(extractor)):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  # A classifier of another width does not fit: one line naming the work directory and the layers.
  config.model.width = 1 / 16
  message = one_line(CheckpointError, task.training_task, config)
  assert message.startswith(f"config.faster_rcnn.backbone_weights: checkpoint in {classifier[0]}")
  assert "another feature extractor than the overfeat_fast-w0.0625-s3x1 backbone" in message


def test_train_then_evaluate_with_recall_table_and_pictures(trained):
  config, workdir = copy.deepcopy(trained[0]), trained[1]
  records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]
  for key in ("loss", "rpn_cls", "rpn_reg", "det_cls", "det_reg", "num_fg_rois"):
    assert np.isfinite(records[-1][key]), key
  config.eval.pictures = 2
  result = evaluation.run(config, workdir, verbose=False)
  written = json.load(open(f"{workdir}/eval/metrics.json"))
  assert written["checkpoint_step"] == 2 and written["num_images"] == 16
  assert set(written["per_class"]) == {str(k) for k in range(10)}
  assert -1 <= written["coco"]["AP50"] <= 1 and -1 <= written["voc"]["mAP07"] <= 1
  recall = written["proposals"]["recall"]
  assert list(recall) == ["5", "20", "60"] and all(list(r) == ["0.5", "0.7"] for r in recall.values())
  # More proposals recall at least as much; a stricter IoU at most as much.
  for t in ("0.5", "0.7"):
    values = [recall[n][t] for n in ("5", "20", "60")]
    assert values == sorted(values) and 0 <= values[0] <= values[-1] <= 1
  assert all(recall[n]["0.7"] <= recall[n]["0.5"] for n in recall)
  assert written["proposals"]["num_ground_truth"] == written["num_ground_truth"]
  assert len(json.load(open(f"{workdir}/eval/detections.json"))) == written["num_detections"]
  assert result["proposals"] == written["proposals"]
  assert sorted(os.listdir(f"{workdir}/eval/pictures")) == ["00000.png", "00001.png"]
  # What is logged: COCO AP@0.5 first (percent), then the other APs and every recall entry.
  scalars = frcnn_eval.scalars(result)
  assert list(scalars)[:4] == ["eval/AP50", "eval/AP", "eval/mAP_voc07", "eval/mAP_voc"]
  assert scalars["eval/AP50"] == pytest.approx(100 * written["coco"]["AP50"])
  assert scalars["eval/recall_iou0.7/top20"] == pytest.approx(100 * recall["20"]["0.7"])
  assert frcnn_eval.summary(result).endswith("on 16 images of test")
  # The same evaluation during training (train.eval_every), on the first train.eval_num_examples.
  config.train.eval_every, config.train.eval_num_examples = 1, 8
  periodic = evaluation.periodic_evaluation(config)
  params, step = task.restore_params(config, workdir)
  values = periodic(params, step)
  assert list(values) == list(scalars) and all(-1 <= v <= 100 for v in values.values())
  # Images without any object are among the evaluated ones (a sixth of the data): they only count
  # as false positives, and nothing breaks.
  batches = list(detection.detection_eval_loader(config))
  assert any(b["valid"][i] and not b["box_valid"][i].any() for b in batches for i in range(len(b["valid"])))


def test_detections_to_dicts_are_the_evaluators_detections(trained):
  config, workdir = copy.deepcopy(trained[0]), trained[1]
  config.faster_rcnn.test.score_threshold = 0.0  # many detections, even from an untrained net
  params, _ = task.restore_params(config, workdir)
  batch = next(iter(detection.detection_eval_loader(config)))
  predictions = jax.device_get(jax.jit(task.make_predict_fn(config))(params, batch))
  dicts = task.detections_to_dicts(predictions, batch)
  assert len(dicts) == int(batch["valid"].sum())
  evaluator = frcnn_eval.DetectionEvaluator([str(k) for k in range(10)])
  evaluator.add(predictions, batch)
  by_image: dict[int, list] = {}
  for d in evaluator.detections():
    by_image.setdefault(d["image_id"], []).append(d)
  for i, image in zip(np.flatnonzero(batch["valid"]), dicts):
    sy, sx = batch["scale"][i]
    kept = predictions["valid"][i]
    assert len(image["boxes"]) == kept.sum() > 0
    # Hand-computed: network-input pixels divided by the resize factor of each axis.
    np.testing.assert_allclose(image["boxes"], predictions["boxes"][i][kept] / [sx, sy, sx, sy],
                               rtol=1e-6)
    assert np.all(np.diff(image["scores"]) <= 0) and image["labels"].dtype == np.int32
    theirs = by_image[int(batch["image_id"][i])]
    xywh = np.array([d["bbox"] for d in theirs])
    np.testing.assert_allclose(xywh[:, :2], image["boxes"][:, :2], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(xywh[:, 2:], image["boxes"][:, 2:] - image["boxes"][:, :2],
                               rtol=1e-5, atol=1e-4)
    assert [d["category_id"] for d in theirs] == image["labels"].tolist()


def test_recall_accumulator_against_a_hand_count():
  recall = frcnn_eval.RecallAccumulator((1, 2, 5), (0.5, 0.7))
  proposals = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 6], [50, 50, 60, 60]]],
                       np.float32)
  batch = {"boxes": np.array([[[0, 0, 10, 10], [20, 20, 30, 34], [40, 0, 50, 10]]], np.float32),
           "box_valid": np.array([[True, True, True]]), "difficult": np.array([[False, False, True]]),
           "iscrowd": np.zeros((1, 3), bool), "valid": np.array([True])}
  recall.add(proposals, np.array([[True, True, True, False]]), batch)
  result = recall.compute()
  # Box 0 is proposal 0 (IoU 1); box 1 overlaps proposal 1 by 100 / 140 = 0.714; box 2 is
  # difficult (not counted); proposal 3 is padding. Top-1: box 0 only; top-2 and more: both.
  assert result["num_ground_truth"] == 2 and result["mean_proposals"] == 3
  assert result["recall"] == {"1": {"0.5": 0.5, "0.7": 0.5}, "2": {"0.5": 1.0, "0.7": 1.0},
                              "5": {"0.5": 1.0, "0.7": 1.0}}
  assert "recall@IoU 0.7" in frcnn_eval.format_recall(result)


def test_vgg16_starts_from_torchvision_weights_and_keeps_its_first_four_convs(
    digits_detection_data_dir, tmp_path):
  # The paper-size VGG-16 from a torchvision-layout file, trained 2 steps: conv1_1 ... conv2_2 are the
  # file's weights bit for bit (the optimizer leaves them alone), conv3_1 moved a little from them.
  weights = random_vgg16.state_dict()
  path = str(tmp_path / "vgg16.safetensors")
  save_file(weights, path)
  config = tiny_config(digits_detection_data_dir, backbone="vgg16", backbone_init="torchvision",
                       backbone_weights=path, anchor_sizes=(32, 64), rpn_channels=8, roi_size=2)
  config.model.width = 1.0
  config.input.batch_size = 2
  config.train.checkpoint_every = 2  # the last step only (a paper-size VGG-16 is 59 MB a copy)
  workdir = str(tmp_path / "vgg")
  loop.run(config, workdir)
  template = task.params_template(task.model_from_config(config))
  params, step = checkpoint_io.restore_params(workdir, template)
  shared = jax.device_get(params["shared"])
  assert step == 2
  for name, index in (("conv1_1", 0), ("conv1_2", 2), ("conv2_1", 5), ("conv2_2", 7)):
    np.testing.assert_array_equal(shared[name]["kernel"],
                                  weights[f"features.{index}.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(shared[name]["bias"], weights[f"features.{index}.bias"])
  # conv3_1 started from the file too (the first step's output was the file's network's) and moved.
  kernel = weights["features.10.weight"].transpose(2, 3, 1, 0)
  assert not np.array_equal(shared["conv3_1"]["kernel"], kernel)
  assert np.mean(np.abs(shared["conv3_1"]["kernel"] - kernel)) < 0.1 * np.mean(np.abs(kernel))


def test_trainable_masks_only_the_frozen_layers():
  config = load_config("faster_rcnn_vgg16_voc07")
  config.model.width = 1 / 16
  config.faster_rcnn.head_hidden = 8
  model = task.model_from_config(config)
  params = task.params_template(model)
  mask = task.trainable(model.backbone, params)
  frozen = sorted(name for name, leaves in mask["shared"].items() if not any(leaves.values()))
  assert frozen == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
  assert all(jax.tree.leaves(mask["rpn"])) and all(jax.tree.leaves(mask["box_head"]))
  assert sum(jax.tree.leaves(mask)) == len(jax.tree.leaves(params)) - 8


def test_frozen_stages_replaces_the_backbones_own_frozen_layers():
  config = load_config("faster_rcnn_vgg16_voc07")
  config.model.width = 1 / 16
  config.faster_rcnn.head_hidden = 8
  config.faster_rcnn.frozen_stages = 0  # VGG-16 fully trained
  assert task.backbone_from_config(config).frozen_layers == ()
  config = load_config("faster_rcnn_quickstart")
  assert task.backbone_from_config(config).frozen_layers == ()  # -1: overfeat_fast's own, none
  config.faster_rcnn.frozen_stages = 2
  model = task.model_from_config(config)
  assert model.backbone.frozen_layers == ("conv1", "conv2")
  params = task.params_template(model)
  mask = task.trainable(model.backbone, params)
  trained_layers = sorted(name for name, leaves in mask["shared"].items() if all(leaves.values()))
  assert trained_layers == ["conv3", "conv4", "conv5"]
  # The loss sees the frozen layers through stop_gradient: their gradient is zero, the others' not.
  ones = jax.tree.map(lambda t: np.ones(t.shape, t.dtype), params)
  grads = jax.grad(lambda p: sum(jax.numpy.sum(x ** 2) for x in jax.tree.leaves(
      task.stop_frozen(model.backbone, p))))(ones)
  for name, layer in grads["shared"].items():
    for leaf in layer.values():
      assert np.all(leaf == (0.0 if name in ("conv1", "conv2") else 2.0)), name
  config.faster_rcnn.frozen_stages = 6
  message = one_line(ConfigError, task.backbone_from_config, config)
  assert message == ("config.faster_rcnn.frozen_stages=6 is invalid: the overfeat_fast-w0.125-s3x1 "
                     "backbone has 5 stages (conv1, conv2, conv3, conv4, conv5)")
  config.faster_rcnn.frozen_stages = -2
  message = one_line(ConfigError, validate_config, config)
  assert message.startswith("config.faster_rcnn.frozen_stages=-2 is invalid: expected >= 0, or -1")


def one_line(error_type, fn, *args, **kwargs) -> str:
  with pytest.raises(error_type) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message
  return message


def test_a_weight_file_of_another_layout_is_one_line(digits_detection_data_dir, tmp_path):
  path = str(tmp_path / "flax_layout.safetensors")
  weights = random_vgg16.state_dict()
  save_file({"features.0.weight": weights["features.0.weight"].transpose(2, 3, 1, 0).copy(),
             "features.0.bias": weights["features.0.bias"]}, path)
  config = tiny_config(digits_detection_data_dir, backbone="vgg16", backbone_init="torchvision",
                       backbone_weights=path)
  config.model.width = 1.0
  message = one_line(CheckpointError, task.training_task, config)
  assert message.startswith(f"config.faster_rcnn.backbone_weights: {path} does not hold torchvision's "
                            "VGG-16 state_dict: features.0.weight (conv1_1 kernel) has shape [3, 3, 3, 64]")
  # The paper-size file for a narrower VGG-16: refused before any file is read.
  config.model.width = 0.5
  message = one_line(ConfigError, task.training_task, config)
  assert message.endswith("fit the paper-size vgg16 backbone only, not vgg16-w0.5")


def test_a_checkpoint_of_another_backbone_is_one_line(trained):
  config, workdir = trained
  other = tiny_config(config.dataset.data_dir, backbone="zf", roi_size=6)
  other.model.width = config.model.width
  message = one_line(CheckpointError, evaluation.run, other, workdir, verbose=False)
  assert "was written for a different model" in message
  assert "task.backbone: overfeat_fast-w0.03125-s3x1 (checkpoint) vs zf-w0.03125 (now)" in message
  # Resuming training with it is refused the same way.
  other.train.max_steps = 3
  message = one_line(CheckpointError, loop.run, other, workdir)
  assert "backbone" in message and "zf" in message


def test_config_rules_between_keys():
  config = load_config("faster_rcnn_quickstart")
  validate_config(config)
  for changes, key in [
      ({"training": "joint", "roi_op": "pool"}, "faster_rcnn.training"),
      ({"backbone_init": "torchvision", "backbone_weights": ""}, "faster_rcnn.backbone_weights"),
      ({"backbone_init": "torchvision", "backbone_weights": "x.safetensors", "backbone": "zf"},
       "faster_rcnn.backbone_init"),
      ({"backbone_init": "classifier", "backbone_weights": "runs/c", "backbone": "vgg16"},
       "faster_rcnn.backbone_init"),
      ({"rpn_neg_iou": 0.8}, "faster_rcnn.rpn_neg_iou"),
      ({"roi_op": "warp"}, "faster_rcnn.roi_op"),
      ({"bg_iou": (0.5, 0.1)}, "faster_rcnn.bg_iou"),
      ({"shared_features": False, "training": "alternating"}, "faster_rcnn.shared_features"),
  ]:
    bad = load_config("faster_rcnn_quickstart")
    for k, v in changes.items():
      bad.faster_rcnn[k] = v
    message = one_line(ConfigError, validate_config, bad)
    assert message.startswith(f"config.{key}="), message
  for key, value, named in [
      ("proposal_nms_iou", 0.0, "proposal_nms_iou"), ("proposal_nms_iou", 1.5, "proposal_nms_iou"),
      ("proposal_ranking", "best", "proposal_ranking"), ("box_voting_iou", 1.5, "box_voting_iou"),
      ("extra_size_factors", (0.8, 0.0), "extra_size_factors"),
      # box voting merges several sizes' detections: it needs extra sizes
      ("extra_size_factors", (), "box_voting_iou")]:
    bad = load_config("faster_rcnn_quickstart")
    bad.faster_rcnn.test.size_factor, bad.faster_rcnn.test.extra_size_factors = 1.1, (0.9,)
    bad.faster_rcnn.test.box_voting_iou = 0.7
    validate_config(bad)
    bad.faster_rcnn.test[key] = value
    message = one_line(ConfigError, validate_config, bad)
    assert message.startswith(f"config.faster_rcnn.test.{named}="), message
  for name in ("faster_rcnn_vgg16_voc07", "faster_rcnn_zf_voc07", "faster_rcnn_vgg16_coco"):
    validate_config(load_config(name))


def test_evaluation_views_use_the_test_sizes(trained):
  config = copy.deepcopy(trained[0])  # trains at short side 64, long side <= 96
  config.faster_rcnn.test.size_factor = 1.0
  assert task.test_input_config(config) is config  # the training sizes: no copy
  config.faster_rcnn.test.size_factor = 1.25
  assert faster_rcnn_test_sizes(config) == (80, 120)
  evaluator = frcnn_eval.Evaluator(config)
  bounds = tuple(config.input.aspect_buckets)
  assert evaluator.loader.canvases == buckets.detection_canvases(bounds, 80, 120)
  assert config.input.min_size == 64  # the caller's config is left as it was
  batch = next(iter(evaluator.loader))
  h, w = batch["size"][batch["valid"]].T
  # Every image at short side 80, unless its long side would pass 120 (then that is 120).
  assert np.all((np.minimum(h, w) == 80) | (np.maximum(h, w) == 120)) and np.all(np.maximum(h, w) <= 120)
  config.faster_rcnn.test.size_factor = 0.0
  message = one_line(ConfigError, validate_config, config)
  assert message.startswith("config.faster_rcnn.test.size_factor=0.0 is invalid: expected > 0")


def single_size_detections(config, params, factor: float):
  """image id -> (batch scale (sy, sx), boxes [D, 4] in its network pixels, scores, classes, valid):
  one test size's detections, from its own eval loader and jitted predict."""
  sized = copy.deepcopy(config)
  sized.faster_rcnn.test.size_factor = factor
  sized.faster_rcnn.test.extra_size_factors = ()
  sized.faster_rcnn.test.box_voting_iou = 0.0
  sized = task.test_input_config(sized)
  predict = jax.jit(task.make_predict_fn(sized))
  found = {}
  for batch in detection.detection_eval_loader(sized):
    out = jax.device_get(predict(params, batch))
    for i in np.flatnonzero(batch["valid"]):
      found[int(batch["image_id"][i])] = (batch["scale"][i], *(np.asarray(out[k])[i] for k in
                                                                 ("boxes", "scores", "classes", "valid")))
  return found


def test_extra_test_sizes_merge_the_detections_of_each_size(trained):
  config = copy.deepcopy(trained[0])  # trains at short side 64, long side <= 96
  config.faster_rcnn.test.score_threshold = 0.0  # many detections, even from an untrained net
  config.faster_rcnn.test.size_factor = 1.25  # short side 80 ...
  config.faster_rcnn.test.extra_size_factors = (1.0,)  # ... and 64, each resized by the pipeline
  config.faster_rcnn.test.box_voting_iou = 0.6
  validate_config(config)
  # Each size runs once: size_factor's own and repeats add nothing.
  assert [c.input.min_size for c in task.extra_test_sizes(config)] == [64]
  config.faster_rcnn.test.extra_size_factors = (1.0, 1.25, 1.0)
  assert [c.input.min_size for c in task.extra_test_sizes(config)] == [64]
  params, step = task.restore_params(config, trained[1])
  evaluator = frcnn_eval.Evaluator(config)
  result, filled = evaluator.run(evaluator.params(params), step=step, verbose=False)
  # The reference: each size on its own; the 64 view's boxes mapped to the 80 view's pixels by hand,
  # each image's union merged by the per-class loop, then mapped to original pixels.
  large, small = (single_size_detections(config, params, f) for f in (1.25, 1.0))
  assert sorted(large) == sorted(small) and len(large) == 16
  got = {}
  for d in filled.detections():  # COCO format, original pixels, per image in descending score
    x, y, w, h = d["bbox"]
    got.setdefault(d["image_id"], []).append((d["score"], d["category_id"], [x, y, x + w, y + h]))
  merged_some = False
  for image_id, (scale, *ours) in large.items():
    small_scale, *theirs = small[image_id]
    theirs[0] = theirs[0] * (scale / small_scale)[[1, 0, 1, 0]]
    union = [np.concatenate(parts) for parts in zip(ours, theirs)]  # boxes, scores, classes, valid
    boxes, scores, classes = test_ops_proposals.loop_merge(*union, config.faster_rcnn.test.nms_iou,
                                                           config.faster_rcnn.test.max_detections, 0.6)
    merged_some |= union[3].sum() > len(scores)
    found = got.get(image_id, [])
    assert len(found) == len(scores), image_id
    np.testing.assert_allclose([f[0] for f in found], scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal([f[1] for f in found], classes)
    np.testing.assert_allclose(np.array([f[2] for f in found]).reshape(-1, 4),
                               boxes / scale[[1, 0, 1, 0]], rtol=1e-4, atol=1e-3)
  assert merged_some
  # The recall table is the test.size_factor view's alone.
  single = copy.deepcopy(config)
  single.faster_rcnn.test.extra_size_factors, single.faster_rcnn.test.box_voting_iou = (), 0.0
  alone = frcnn_eval.Evaluator(single)
  assert alone.run(alone.params(params), step=step, verbose=False)[0]["proposals"] == result["proposals"]
  # predict's Predictor merges the same sizes: the same detections for an image of the split.
  source = pipeline.load_source(config.dataset, config.dataset.eval_split)
  spec = get_dataset_spec(config.dataset.name)
  example = transforms.decode_example(source[0], spec)
  image_id = int(transforms.image_id(source[0], spec, 0))
  predicted = Predictor(config, params).predict(example["image"])
  np.testing.assert_allclose(predicted["scores"], [f[0] for f in got[image_id]], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.array(predicted["boxes"]).reshape(-1, 4),
                             np.array([f[2] for f in got[image_id]]).reshape(-1, 4), rtol=1e-4, atol=1e-3)


def test_random_proposals_are_drawn_per_image_id():
  # The same image draws the same proposals wherever it sits in a batch (its id folded into the
  # seed's key); another image or another seed, other ones.
  keys = jax.random.key_data(task.ranking_keys(3, np.array([5, 9, 5], np.int32)))
  np.testing.assert_array_equal(keys[0], keys[2])
  np.testing.assert_array_equal(keys[0], jax.random.key_data(jax.random.fold_in(jax.random.key(3), 5)))
  assert not np.array_equal(keys[0], keys[1])
  other = jax.random.key_data(task.ranking_keys(4, np.array([5], np.int32)))
  assert not np.array_equal(keys[0], other[0])


def test_with_backbone_replaces_only_the_backbone():
  config = load_config("faster_rcnn_quickstart")
  config.model.width = 1 / 8
  model = task.model_from_config(config)
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), task.params_template(model))
  loaded = jax.tree.map(lambda x: np.full(x.shape, 0.5, np.float32), params["shared"])
  replaced = task.with_backbone(params, loaded)
  assert all(np.all(np.asarray(x) == 0.5) for x in jax.tree.leaves(replaced["shared"]))
  assert replaced["rpn"] is params["rpn"] and replaced["box_head"] is params["box_head"]
  assert task.with_backbone(params, None) is params
  with pytest.raises(ValueError, match="backbone weights have layers"):
    task.with_backbone(params, {"conv1": loaded["conv1"]})
  # Unshared features: both backbones start from the weights.
  config.faster_rcnn.shared_features = False
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                        task.params_template(task.model_from_config(config)))
  replaced = task.with_backbone(params, loaded)
  for name in ("shared", "rpn_backbone"):
    assert all(np.all(np.asarray(x) == 0.5) for x in jax.tree.leaves(replaced[name])), name
  assert replaced["rpn"] is params["rpn"]


def stage_params(config, directory: str, step: int, *, proposer: bool = False):
  template = task.params_template(task.model_from_config(config))
  if proposer:
    template = {**template, task.PROPOSER: template}
  params, _ = checkpoint_io.restore_params(directory, template, step=step)
  return jax.device_get(params)


def same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_alternating_training_runs_four_stages_and_resumes_in_the_third(digits_detection_data_dir,
                                                                         tmp_path):
  config = tiny_config(digits_detection_data_dir, training="alternating")
  workdir = str(tmp_path / "alt")
  result = loop.run(config, workdir)
  assert result.step == 2
  dirs = task.stage_workdirs(workdir)
  assert [os.path.basename(d) for d in dirs] == ["1_rpn", "2_detector", "3_rpn_fixed_shared",
                                                 "4_detector_fixed_shared"]
  s1, s3, s4 = (stage_params(config, dirs[i], 2) for i in (0, 2, 3))
  s2 = stage_params(config, dirs[1], 2, proposer=True)
  first = [stage_params(config, d, 1, proposer=i == 1) for i, d in enumerate(dirs)]  # after 1 step

  def trained(stage: int, part: str) -> bool:
    """Whether `part` moved between the stage's first and second step."""
    return not same(first[stage - 1][part], (s1, s2, s3, s4)[stage - 1][part])

  # Step 1 trains the backbone and the RPN; step 2 a backbone of its own and the detector, on the
  # proposals of a frozen copy of step 1's network; step 3 only the RPN, on step 2's backbone;
  # step 4 only the detector: the final network is step 2's backbone, step 3's RPN, step 4's head.
  assert [trained(1, p) for p in ("shared", "rpn", "box_head")] == [True, True, False]
  assert [trained(2, p) for p in ("shared", "rpn", "box_head")] == [True, False, True]
  assert [trained(3, p) for p in ("shared", "rpn", "box_head")] == [False, True, False]
  assert [trained(4, p) for p in ("shared", "rpn", "box_head")] == [False, False, True]
  assert same(s2[task.PROPOSER], s1) and not same(s2["shared"], s1["shared"])
  assert same(first[2]["shared"], s2["shared"]) and same(first[2]["box_head"], s2["box_head"])
  assert same(first[3]["shared"], s3["shared"]) and same(first[3]["rpn"], s3["rpn"])
  evaluated, step = task.restore_params(config, workdir)
  assert step == 2 and same(jax.device_get(evaluated), s4)
  # Killed in step 3 after its first checkpoint: the rerun passes over steps 1 and 2, resumes step
  # 3 from its step 1 and ends with the same network as the uninterrupted run.
  for path in (os.path.join(checkpoint_io.checkpoint_dir(dirs[2]), "2"), dirs[3]):
    shutil.rmtree(path)
  again = loop.run(config, workdir)
  assert again.step == 2
  assert same(stage_params(config, dirs[2], 2), s3) and same(stage_params(config, dirs[3], 2), s4)
