"""Faster R-CNN's network and losses (models/faster_rcnn.py): the paper's layer shapes, the RPN's output
order against the anchors, the losses against plain numpy, the training schemes' gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.models import faster_rcnn as fr
from overfeat_jax.models.backbones import build_backbone
from overfeat_jax.models.overfeat import param_count
from overfeat_jax.ops import IGNORE, POSITIVE, RoiTargets, anchors, box_iou, encode_boxes


def tiny_model(roi_op: str = "align", **overrides) -> fr.FasterRCNN:
  settings = dict(num_classes=3, anchor_sizes=(16.0, 32.0), anchor_ratios=(0.5, 1.0, 2.0),
                  rpn_channels=8, rpn_batch=32, train_pre_nms=200, train_post_nms=40,
                  test_pre_nms=200, test_post_nms=20, roi_op=roi_op, roi_size=4, head_hidden=16,
                  num_rois=16, bg_iou=(0.0, 0.5), max_detections=10)
  settings.update(overrides)
  return fr.FasterRCNN(build_backbone("tiny", 1 / 8), fr.Settings(**settings), weight_init="he",
                       dropout_rate=0.0)


def init(model: fr.FasterRCNN, seed: int):
  """The model's parameters, jitted (eager op-by-op dispatch is many times slower) without XLA:CPU's
  backend optimisation (seconds spent on random-number code that runs once; as training.loop)."""
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
  return jax.jit(lambda key: fr.init_params(model, key), compiler_options=options)(
      jax.random.key(seed))


_JITTED: dict = {}  # (id(model), keywords) -> (model, its jitted apply); the model kept alive


def apply(model: fr.FasterRCNN, params, *args, **kwargs):
  """model.apply jitted, keyword arguments static: one jitted function per model and keywords, so
  that a test's calls of the same shapes compile once."""
  key = (id(model), tuple(sorted(kwargs.items())))
  if key not in _JITTED:
    _JITTED[key] = (model, jax.jit(lambda p, *a: model.apply({"params": p}, *a, **kwargs)))
  return _JITTED[key][1](params, *args)


def images_and_boxes(batch: int = 2, size: int = 64):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(0, 1, (batch, size, size, 3)), jnp.float32)
  image_hw = jnp.asarray([[size, size]] * batch, jnp.int32)
  gt = np.zeros((batch, 3, 4), np.float32)
  gt[:, 0] = (8, 10, 30, 40)
  gt[:, 1] = (34, 30, 60, 58)
  labels = np.array([[0, 2, -1]] * batch, np.int32)
  return images, image_hw, jnp.asarray(gt), jnp.asarray(labels), jnp.asarray(labels >= 0)


def test_paper_head_parameter_counts():
  # VGG-16 (SPEC B1, B4): RPN 3x3 conv 512 -> 512, 1x1 to 9 logits and 36 deltas; 7x7x512 RoIs ->
  # fc6 4096 -> fc7 4096 -> 21 scores and 84 deltas (VOC's 20 classes + background).
  vgg = fr.FasterRCNN(build_backbone("vgg16"), fr.Settings(num_classes=20))
  params = fr.params_template(vgg)
  assert param_count(params["rpn"]) == (9 * 512 * 512 + 512) + (512 * 9 + 9) + (512 * 36 + 36)
  assert param_count(params["box_head"]) == ((7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096)
                                             + (4096 * 21 + 21) + (4096 * 84 + 84))
  assert param_count(params["shared"]) == 14_714_688
  # ZF: 256-wide RPN conv on its 256 channels, 6x6 RoIs.
  zf = fr.FasterRCNN(build_backbone("zf"), fr.Settings(num_classes=20, rpn_channels=256, roi_size=6))
  params = fr.params_template(zf)
  assert params["rpn"]["conv"]["kernel"].shape == (3, 3, 256, 256)
  assert params["box_head"]["fc6"]["kernel"].shape == (6 * 6 * 256, 4096)


def test_rpn_outputs_follow_the_anchor_order():
  # Channel c of the delta conv = c, of the objectness conv = 100 + c (zero kernels, biases): row
  # cell * k + a of the outputs must hold anchor a's 4 deltas (4a .. 4a + 3) and logit 100 + a,
  # which is ops.anchors' order (the k anchors of a cell together, cells row-major).
  head = fr.RPNHead(num_anchors=6, channels=4)
  features = jnp.ones((1, 3, 5, 2))
  params = head.init(jax.random.key(0), features)["params"]
  params = jax.tree.map(jnp.zeros_like, params)
  params["deltas"]["bias"] = jnp.arange(24.0)
  params["objectness"]["bias"] = 100 + jnp.arange(6.0)
  logits, deltas = head.apply({"params": params}, features)
  assert logits.shape == (1, 3 * 5 * 6) and deltas.shape == (1, 3 * 5 * 6, 4)
  assert anchors((3, 5), 8, (16, 32), (0.5, 1.0, 2.0)).shape == (3 * 5 * 6, 4)
  a = np.arange(3 * 5 * 6) % 6
  np.testing.assert_array_equal(logits[0], 100 + a)
  np.testing.assert_array_equal(deltas[0], 4 * a[:, None] + np.arange(4))


def test_new_layers_are_initialised_as_the_paper_says():
  model = fr.FasterRCNN(build_backbone("tiny"), fr.Settings(num_classes=3, rpn_channels=128,
                                                            head_hidden=512))
  params = init(model, 0)
  for layer in ("conv", "objectness", "deltas"):
    kernel = np.asarray(params["rpn"][layer]["kernel"])
    assert abs(kernel.std() - 0.01) < 0.002 and not params["rpn"][layer]["bias"].any(), layer
  assert abs(np.asarray(params["box_head"]["cls_score"]["kernel"]).std() - 0.01) < 0.002
  assert abs(np.asarray(params["box_head"]["bbox_pred"]["kernel"]).std() - 0.001) < 0.0002


def naive_smooth_l1(x):
  x = np.asarray(x, np.float64)
  return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def test_rpn_targets_and_loss_against_numpy():
  settings = fr.Settings(num_classes=3, rpn_batch=16, rpn_lambda=10.0)
  boxes = anchors((4, 4), 16, (16.0, 32.0), (1.0,), offset=8.0)  # [32, 4]
  image_hw = jnp.asarray([64, 56])  # anchors past x = 56 cross the boundary
  gt = jnp.asarray([[4, 4, 20, 22], [30, 28, 62, 60], [0, 0, 0, 0]], jnp.float32)
  gt_valid = jnp.asarray([True, True, False])
  targets = fr.rpn_targets(boxes, image_hw, gt, gt_valid, jax.random.key(3), settings)
  labels = np.asarray(targets.labels)
  crossing = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > 56) | (boxes[:, 3] > 64)
  assert np.all(labels[crossing] == IGNORE)
  assert 0 < np.sum(labels == POSITIVE) <= 8 and np.sum(labels != IGNORE) <= 16
  # Every positive's target is its best ground-truth box encoded against it.
  best = np.argmax(np.asarray(box_iou(boxes, np.asarray(gt)[:2])), axis=1)
  expected = np.asarray(encode_boxes(np.asarray(gt)[best], boxes))
  pos = labels == POSITIVE
  np.testing.assert_allclose(np.asarray(targets.deltas)[pos], expected[pos], rtol=1e-5, atol=1e-6)
  assert not np.asarray(targets.deltas)[~pos].any()

  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, 32).astype(np.float32)
  deltas = rng.normal(0, 1, (32, 4)).astype(np.float32)
  cls, reg = fr.rpn_loss(jnp.asarray(logits), jnp.asarray(deltas), targets, 16, settings)
  sampled = labels != IGNORE
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  bce = -(pos * np.log(p) + (1 - pos) * np.log(1 - p))
  np.testing.assert_allclose(float(cls), bce[sampled].mean(), rtol=1e-5)
  sl1 = naive_smooth_l1(deltas - np.asarray(targets.deltas))[pos].sum()
  np.testing.assert_allclose(float(reg), 10.0 * sl1 / 16, rtol=1e-5)  # lambda / N_reg (positions)
  _, reg_samples = fr.rpn_loss(jnp.asarray(logits), jnp.asarray(deltas), targets, 16,
                               fr.Settings(num_classes=3, rpn_lambda=1.0, rpn_reg_normalizer="samples"))
  np.testing.assert_allclose(float(reg_samples), sl1 / sampled.sum(), rtol=1e-5)


def test_detector_loss_against_numpy():
  rng = np.random.default_rng(2)
  b, r, k = 2, 5, 3
  logits = rng.normal(0, 1, (b, r, k + 1)).astype(np.float32)
  deltas = rng.normal(0, 1, (b, r, k + 1, 4)).astype(np.float32)
  labels = np.array([[2, 0, 1, 0, 0], [3, 3, 0, 0, 0]], np.int32)
  valid = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
  targets_ = rng.normal(0, 1, (b, r, 4)).astype(np.float32) * (labels > 0)[..., None]
  targets = RoiTargets(rois=jnp.zeros((b, r, 4)), labels=jnp.asarray(labels),
                       targets=jnp.asarray(targets_), valid=jnp.asarray(valid),
                       matched_gt=jnp.zeros((b, r), jnp.int32), indices=jnp.zeros((b, r), jnp.int32))
  ce, box, count = fr.detector_loss(jnp.asarray(logits), jnp.asarray(deltas), targets,
                                    fr.Settings(num_classes=k, detector_lambda=2.0))
  expected_ce = expected_box = 0.0
  for i in range(b):
    for j in range(r):
      if not valid[i, j]:
        continue
      z = logits[i, j].astype(np.float64)
      expected_ce += np.log(np.exp(z).sum()) - z[labels[i, j]]
      if labels[i, j] > 0:
        expected_box += naive_smooth_l1(deltas[i, j, labels[i, j]] - targets_[i, j]).sum()
  assert float(count) == valid.sum()
  np.testing.assert_allclose(float(ce), expected_ce, rtol=1e-5)
  np.testing.assert_allclose(float(box), 2.0 * expected_box, rtol=1e-5)


def losses_of(model, params, batch, *, joint: bool, seed: int = 0,
              min_size: float = 2.0) -> fr.Losses:
  images, image_hw, gt, labels, valid = batch
  return model.apply({"params": params}, images, image_hw, jnp.full((images.shape[0],), min_size),
                     gt, labels, valid, joint=joint, method=fr.FasterRCNN.losses,
                     rngs={"sample": jax.random.key(seed), "dropout": jax.random.key(seed + 1)})


def test_detector_gradient_reaches_the_rpn_deltas_only_in_exact_joint_training():
  # SPEC B5: d(detector loss) / d(RPN delta layer) is the gradient through the proposal
  # coordinates (the delta layer feeds nothing else of the detector). Approximate joint training
  # stops it: exactly zero. Exact joint training, through RoIAlign: non-zero. The objectness layer
  # only ranks the proposals: zero in both.
  model = tiny_model("align")
  params = init(model, 1)
  batch = images_and_boxes()

  def detector_loss(p, joint, model=model):
    terms = losses_of(model, p, batch, joint=joint)
    return terms.det_cls + terms.det_reg

  results = {joint: jax.jit(jax.value_and_grad(detector_loss), static_argnums=1)(params, joint)
             for joint in (False, True)}
  for joint, (_, grads) in results.items():
    delta_grad = np.abs(np.asarray(grads["rpn"]["deltas"]["kernel"])).sum()
    assert (delta_grad > 1e-6) if joint else (delta_grad == 0.0), (joint, delta_grad)
    assert np.abs(np.asarray(grads["rpn"]["objectness"]["kernel"])).sum() == 0.0
    assert np.abs(np.asarray(grads["box_head"]["fc6"]["kernel"])).sum() > 0  # the detector learns
  # The forward pass is the same in both schemes.
  np.testing.assert_allclose(float(results[False][0]), float(results[True][0]), rtol=1e-6)
  # joint_box_gradient_scale scales that gradient alone: not the loss, nor the detector's own.
  scaled_model = tiny_model("align", joint_box_gradient_scale=0.25)
  value, scaled = jax.jit(jax.value_and_grad(lambda p: detector_loss(p, True, scaled_model)))(params)
  assert float(value) == float(results[True][0])
  np.testing.assert_allclose(scaled["rpn"]["deltas"]["kernel"],
                             0.25 * np.asarray(results[True][1]["rpn"]["deltas"]["kernel"]),
                             rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(scaled["box_head"]["fc6"]["kernel"],
                             results[True][1]["box_head"]["fc6"]["kernel"], rtol=1e-5, atol=1e-7)


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(5, 4)) * 100, jnp.float32)
  np.testing.assert_array_equal(fr.scale_gradient(x, 0.3), x)  # bit for bit
  grad = jax.grad(lambda v: jnp.sum(jnp.sin(fr.scale_gradient(v, 0.3))))(x)
  np.testing.assert_allclose(grad, 0.3 * np.cos(np.asarray(x)), rtol=1e-6, atol=1e-7)


def test_images_without_boxes_and_with_every_proposal_suppressed():
  model = tiny_model("pool")
  params = init(model, 2)
  images, image_hw, gt, labels, valid = images_and_boxes()
  losses = jax.jit(lambda p, v, m: losses_of(model, p, (images, image_hw, gt, labels, v), joint=False,
                                             min_size=m))
  # No ground truth in the whole batch: only background, no box loss, all finite.
  empty = losses(params, jnp.zeros_like(valid), 2.0)
  assert all(np.isfinite(float(v)) for v in empty)
  assert float(empty.rpn_reg) == 0 and float(empty.det_reg) == 0 and float(empty.num_fg_rois) == 0
  assert float(empty.num_positive_anchors) == 0 and float(empty.det_cls) > 0
  # A minimum size no proposal reaches: no proposal at all, the detector trains on the ground truth.
  terms = losses(params, valid, 1000.0)
  assert float(terms.num_proposals) == 0 and float(terms.num_fg_rois) == 2  # the 2 boxes themselves
  assert all(np.isfinite(float(v)) for v in terms)
  out = apply(model, params, images, image_hw, jnp.full((2,), 1000.0))
  assert not np.asarray(out.proposals.valid).any() and not np.asarray(out.detections.valid).any()
  assert out.detections.boxes.shape == (2, 10, 4)
  assert np.all(np.isfinite(np.asarray(out.detections.boxes)))


def test_test_time_outputs_are_padded_and_within_the_images():
  model = tiny_model("align", score_threshold=0.0)
  params = init(model, 3)
  images, _, _, _, _ = images_and_boxes()
  image_hw = jnp.asarray([[64, 64], [40, 52]], jnp.int32)  # the second image is padded
  out = apply(model, params, images, image_hw, jnp.zeros((2,)), num_proposals=30)
  assert out.proposals.boxes.shape == (2, 30, 4) and out.detections.boxes.shape == (2, 10, 4)
  for i, (h, w) in enumerate(np.asarray(image_hw)):
    for boxes, valid in ((out.proposals.boxes[i], out.proposals.valid[i]),
                         (out.detections.boxes[i], out.detections.valid[i])):
      boxes = np.asarray(boxes)[np.asarray(valid)]
      assert len(boxes) > 0
      assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= w and boxes[:, 3].max() <= h
    scores = np.asarray(out.detections.scores[i])
    assert np.all(np.diff(scores[np.asarray(out.detections.valid[i])]) <= 0)
    assert np.all(np.asarray(out.detections.classes[i]) < 3)
  # The first test_post_nms proposals of a longer list are the test_post_nms list itself.
  short = apply(model, params, images, image_hw, jnp.zeros((2,)))
  np.testing.assert_array_equal(short.proposals.boxes, out.proposals.boxes[:, :20])


def test_rois_are_pooled_on_the_receptive_fields():
  # Cell (i, j) of the tiny backbone is centred on pixel (8 j + 4, 8 i + 4): a box centred there,
  # one cell wide, pools (RoIAlign, 1x1 bin, 1 sample) exactly that cell's value; RoI max pooling of
  # a box that covers only cell (i, j)'s centre reads that cell too.
  backbone = build_backbone("tiny")
  assert backbone.receptive_field_center == 4.0 and backbone.stride == 8
  features = jnp.arange(6 * 7, dtype=jnp.float32).reshape(1, 6, 7, 1)
  i, j = 2, 5
  cx, cy = 8 * j + 4, 8 * i + 4
  boxes = {"align": (cx - 4, cy - 4, cx + 4, cy + 4), "pool": (cx, cy, cx + 1, cy + 1)}
  for op, box in boxes.items():
    settings = fr.Settings(num_classes=1, roi_op=op, roi_size=1, roi_sampling_ratio=1)
    pooled = fr.pool_rois(features, jnp.asarray([[box]], jnp.float32), backbone, settings)
    assert float(pooled[0, 0, 0, 0, 0]) == 7 * i + j, op
    # Without the shift, RoIAlign would read half a cell off (between cells j and j + 1).


def nonzero(tree) -> bool:
  return any(np.abs(np.asarray(x)).sum() > 0 for x in jax.tree.leaves(tree))


def test_unshared_features_give_the_rpn_its_own_backbone():
  # SPEC B6's "unshared": the RPN reads a backbone of its own, a copy of the detector's at the start
  # (twice the backbone's parameters); the RPN loss trains only it, the detector loss only the other.
  model = tiny_model("align", shared_features=False)
  params = init(model, 4)
  shared = init(tiny_model("align"), 4)
  assert set(params) == {"shared", "rpn_backbone", "rpn", "box_head"} and "rpn_backbone" not in shared
  assert param_count(params["rpn_backbone"]) == param_count(params["shared"]) > 0
  assert param_count(params) - param_count(shared) == param_count(shared["shared"])
  for a, b in zip(jax.tree.leaves(params["rpn_backbone"]), jax.tree.leaves(params["shared"])):
    np.testing.assert_array_equal(a, b)
  batch = images_and_boxes()

  def part_loss(p, part):
    terms = losses_of(model, p, batch, joint=False)
    return terms.rpn_cls + terms.rpn_reg if part == "rpn" else terms.det_cls + terms.det_reg

  grad = jax.jit(jax.grad(part_loss), static_argnums=1)
  rpn, det = grad(params, "rpn"), grad(params, "detector")
  assert nonzero(rpn["rpn_backbone"]) and not nonzero(rpn["shared"])
  assert nonzero(det["shared"]) and not nonzero(det["rpn_backbone"])
  # Once they differ, the proposals follow the RPN's backbone: another one, other proposals.
  images, image_hw = batch[:2]
  # Jitted whole: eagerly, every leaf's shape would compile a random-number program of its own.
  noise = jax.jit(lambda tree: jax.tree.map(
      lambda x: x + 0.5 * jnp.std(x) * jax.random.normal(jax.random.key(0), x.shape), tree))
  moved = {**params, "rpn_backbone": noise(params["rpn_backbone"])}
  before, after = (apply(model, p, images, image_hw, jnp.zeros((2,))).proposals.boxes
                   for p in (params, moved))
  assert not np.allclose(before, after)


def rpn_reference(model, params, images, image_hw, *, deltas_zero: bool, priority=None):
  """The test proposals of each image by the naive pipeline of tests/test_ops_proposals.py on the
  network's own RPN outputs ([B] lists of (boxes, ranking scores))."""
  from test_ops_proposals import loop_propose

  _, logits, deltas, anchors = apply(model, params, images, method=fr.FasterRCNN.rpn_outputs)
  s = model.settings
  out = []
  for i, hw in enumerate(np.asarray(image_hw)):
    d = np.zeros_like(deltas[i]) if deltas_zero else np.asarray(deltas[i])
    rank = np.asarray(logits[i]) if priority is None else priority[i]
    out.append(loop_propose(rank, d, np.asarray(anchors), tuple(hw), s.test_pre_nms, s.test_post_nms,
                            s.test_proposal_nms_iou, 0.0))
  return out


def test_without_box_regression_the_proposals_are_the_anchors_ranked_by_objectness():
  model = tiny_model("align", test_rpn_box_regression=False)
  params = init(model, 5)
  images, image_hw = images_and_boxes()[:2]
  out = apply(model, params, images, image_hw, jnp.zeros((2,)))
  with_reg = apply(tiny_model("align"), params, images, image_hw, jnp.zeros((2,)))
  for i, (boxes, scores) in enumerate(rpn_reference(model, params, images, image_hw, deltas_zero=True)):
    n = len(scores)
    assert n > 0 and np.asarray(out.proposals.valid[i]).sum() == n
    np.testing.assert_allclose(np.asarray(out.proposals.boxes[i])[:n], boxes, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.proposals.scores[i])[:n], scores, rtol=1e-6)
  assert not np.allclose(out.proposals.boxes, with_reg.proposals.boxes)  # the deltas did matter


def test_random_ranking_needs_a_key_per_image_and_follows_it():
  model = tiny_model("align", test_proposal_ranking="random", test_proposal_nms_iou=1.0)
  params = init(model, 6)
  images, image_hw = images_and_boxes()[:2]
  with pytest.raises(ValueError, match="needs ranking_keys"):
    apply(model, params, images, image_hw, jnp.zeros((2,)))
  keys = jax.random.split(jax.random.key(3), 2)
  out = jax.jit(lambda p, k: model.apply({"params": p}, images, image_hw, jnp.zeros((2,)),
                                         ranking_keys=k))(params, keys)
  num_anchors = len(apply(model, params, images, method=fr.FasterRCNN.rpn_outputs)[3])
  priority = [np.asarray(jax.random.uniform(k, (num_anchors,))) for k in keys]
  reference = rpn_reference(model, params, images, image_hw, deltas_zero=False, priority=priority)
  for i, (boxes, _) in enumerate(reference):
    n = len(boxes)
    assert n == model.settings.test_post_nms and bool(np.all(out.proposals.valid[i]))
    np.testing.assert_allclose(np.asarray(out.proposals.boxes[i]), boxes, atol=1e-4)
  # The task's predict draws them from the seed and each image's id; a batch without ids (one's own
  # images) uses the images' positions: the same as ids 0, 1, ...
  from overfeat_jax.tasks import faster_rcnn as task

  batch = {"image": images, "size": image_hw, "scale": jnp.ones((2, 2))}
  predict = jax.jit(lambda p, b: task.predict(model, p, b, min_size_original=0.0, seed=3))
  by_position = predict(params, batch)
  by_id = predict(params, {**batch, "image_id": jnp.arange(2)})
  swapped = predict(params, {**batch, "image_id": jnp.array([1, 0])})
  np.testing.assert_array_equal(by_position["proposal_boxes"], by_id["proposal_boxes"])
  folded = jax.jit(lambda p, k: model.apply({"params": p}, images, image_hw, jnp.zeros((2,)),
                                            ranking_keys=k))(params, task.ranking_keys(3, np.arange(2)))
  np.testing.assert_array_equal(by_id["proposal_boxes"], folded.proposals.boxes)
  assert not np.array_equal(swapped["proposal_boxes"], by_id["proposal_boxes"])
