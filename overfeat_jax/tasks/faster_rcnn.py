"""The Faster R-CNN task (SPEC Part B): model, parameters, signature, restore, loss, data, predict.

Batches are `data.detection`'s (whole images resized so the short side is input.min_size, padded into
shape-bucket canvases; boxes in network-input pixels with a valid mask). Per config.faster_rcnn:

- the model (`model_from_config`): the backbone of faster_rcnn.backbone at config.model.width, the RPN
  and the Fast R-CNN head (models/faster_rcnn.py);
- its first parameters (`training_task`): config.model.init everywhere, then the backbone replaced by
  faster_rcnn.backbone_init's weights ("torchvision": a VGG-16 safetensors file; "classifier": a
  classification run's feature extractor; models/pretrained.py);
- frozen layers (`trainable`): the backbone's `frozen_layers` (VGG-16 conv1_1 ... conv2_2) are left
  bit for bit as they are by the optimizer (`Task.trainable`), and their gradients are stopped in the
  loss so that no backward pass runs through them;
- the loss (`faster_rcnn_loss_fn`): RPN log loss + lambda smooth L1, detector cross-entropy + smooth
  L1 (`FasterRCNN.losses`), in one jitted step; approximate joint or exact joint training
  (faster_rcnn.training). Ground-truth boxes marked difficult (VOC) or crowd (COCO) are not trained
  on, as py-faster-rcnn leaves them out;
- prediction (`make_predict_fn`): fixed-shape padded detections in network-input pixels — the
  contract of `evaluation.DetectionEvaluator`, which divides by the batch's `scale` — plus the test
  proposals; `detections_to_dicts` turns them into per-image dicts in ORIGINAL-image pixels without
  padding.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from overfeat_jax import checkpoint_io
from overfeat_jax.config import faster_rcnn_test_sizes
from overfeat_jax.data import detection
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.models import pretrained
from overfeat_jax.models.backbones import Backbone, build_backbone, frozen_mask
from overfeat_jax.models.faster_rcnn import (BACKBONES, SHARED, FasterRCNN, Losses, Settings, init_params,
                                             params_template)
from overfeat_jax.models.overfeat import COMPUTE_DTYPES
from overfeat_jax.ops.proposals import Detections, merge_detections
from overfeat_jax.tasks.base import Batch, LossFn, Stage, Task


# ----------------------------------------------------------------------------------------------
# Model and signature.

def backbone_from_config(config: ml_collections.ConfigDict) -> Backbone:
  """faster_rcnn.backbone at config.model.width (stem_kernel / stem_stride for overfeat_* only), its
  first faster_rcnn.frozen_stages stages frozen (-1: the backbone's own frozen layers)."""
  name = config.faster_rcnn.backbone
  stems = {}
  if name.startswith("overfeat_"):
    stems = {"stem_kernel": config.model.stem_kernel, "stem_stride": config.model.stem_stride}
  backbone = build_backbone(name, config.model.width, **stems)
  frozen = config.faster_rcnn.frozen_stages
  if frozen >= 0:
    if frozen > len(backbone.stages):
      raise ConfigError(f"config.faster_rcnn.frozen_stages={frozen} is invalid: the {backbone.name} "
                        f"backbone has {len(backbone.stages)} stages ({', '.join(backbone.layer_names)})")
    backbone = dataclasses.replace(backbone, frozen_layers=backbone.layer_names[:frozen])
  return backbone


def settings_from_config(config: ml_collections.ConfigDict) -> Settings:
  """The model's static hyperparameters from config.faster_rcnn and config.dataset.num_classes."""
  f = config.faster_rcnn
  return Settings(
      num_classes=config.dataset.num_classes,
      anchor_sizes=tuple(float(v) for v in f.anchor_sizes),
      anchor_ratios=tuple(float(v) for v in f.anchor_ratios),
      rpn_channels=f.rpn_channels or backbone_from_config(config).channels,
      rpn_batch=f.rpn_batch, rpn_positive_fraction=f.rpn_positive_fraction,
      rpn_pos_iou=f.rpn_pos_iou, rpn_neg_iou=f.rpn_neg_iou, rpn_lambda=f.rpn_lambda,
      rpn_reg_normalizer=f.rpn_reg_normalizer, shared_features=bool(f.shared_features),
      train_pre_nms=f.train_pre_nms, train_post_nms=f.train_post_nms,
      test_pre_nms=f.test.pre_nms, test_post_nms=f.test.post_nms,
      proposal_nms_iou=f.proposal_nms_iou, test_proposal_nms_iou=f.test.proposal_nms_iou,
      test_proposal_ranking=f.test.proposal_ranking,
      test_rpn_box_regression=bool(f.test.rpn_box_regression),
      roi_op=f.roi_op, roi_size=f.roi_size, roi_sampling_ratio=f.roi_sampling_ratio,
      head_hidden=f.head_hidden, num_rois=f.num_rois, fg_fraction=f.fg_fraction, fg_iou=f.fg_iou,
      bg_iou=tuple(float(v) for v in f.bg_iou), detector_lambda=f.detector_lambda,
      joint_box_gradient_scale=f.joint_box_gradient_scale,
      score_threshold=f.test.score_threshold, detection_nms_iou=f.test.nms_iou,
      max_detections=f.test.max_detections)


def model_from_config(config: ml_collections.ConfigDict) -> FasterRCNN:
  """The FasterRCNN module of config.faster_rcnn / config.model for config.dataset's classes."""
  return FasterRCNN(backbone_from_config(config), settings_from_config(config),
                    weight_init=config.model.init, dropout_rate=config.model.dropout_rate,
                    dtype=COMPUTE_DTYPES[config.model.compute_dtype])


def architecture_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What evaluation must match: what shapes the parameters (the backbone's name says its width and
  stem)."""
  s = settings_from_config(config)
  return {"model": "faster_rcnn", "backbone": backbone_from_config(config).name,
          "num_anchors": s.num_anchors, "rpn_channels": s.rpn_channels, "roi_size": s.roi_size,
          "head_hidden": s.head_hidden, "num_classes": s.num_classes}


def model_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a resumed run must match: the architecture, config.model and config.faster_rcnn (but its
  test-time settings)."""
  f = {k: v for k, v in config.faster_rcnn.to_dict().items() if k != "test"}
  return {**architecture_signature(config), "model_config": config.model.to_dict(), "faster_rcnn": f}


def restore_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
  """(params, step) of the newest intact checkpoint of the run in `workdir` (for 4-step alternating
  training, its last stage's), checked against the config's architecture (`architecture_signature`).

  Raises:
    CheckpointError: no checkpoint, or one written for a different model (e.g. another backbone:
      one line naming the differences).
  """
  if config.faster_rcnn.training == "alternating":
    workdir = stage_workdirs(workdir)[-1]
  return checkpoint_io.restore_params(workdir, params_template(model_from_config(config)),
                                      task_signature=architecture_signature(config))


# ----------------------------------------------------------------------------------------------
# Parameters: initial backbone weights, frozen layers.

def initial_backbone_params(config: ml_collections.ConfigDict, backbone: Backbone) -> Any | None:
  """The backbone's starting weights of faster_rcnn.backbone_init, or None ("none").

  Raises:
    CheckpointError: the file / work directory cannot be read or holds weights of another layout
      (one line naming the first layer that does not fit, models/pretrained.py).
    ConfigError: torchvision's VGG-16 weights for a backbone other than the paper-size vgg16.
  """
  f = config.faster_rcnn
  if f.backbone_init == "none":
    return None
  try:
    if f.backbone_init == "torchvision":
      return pretrained.load_torchvision_vgg16(f.backbone_weights, backbone)
    return pretrained.load_classifier_extractor(f.backbone_weights, backbone)[0]
  except CheckpointError as e:
    raise CheckpointError(f"config.faster_rcnn.backbone_weights: {e}") from None


def with_backbone(params: Any, backbone_params: Any | None) -> Any:
  """`params` with its backbone subtree(s) replaced by `backbone_params` (None: unchanged), cast to
  the template's dtypes: 'shared', and 'rpn_backbone' where the RPN has its own (both start from
  the same weights); ValueError if the structures or shapes differ."""
  if backbone_params is None:
    return params
  template = params[SHARED]
  if jax.tree.structure(template) != jax.tree.structure(backbone_params):
    raise ValueError(f"backbone weights have layers {sorted(backbone_params)}, the model "
                     f"{sorted(template)}")
  loaded = jax.tree.map(lambda t, v: jnp.asarray(v, t.dtype).reshape(t.shape), template,
                        backbone_params)
  return {**params, **{name: loaded for name in BACKBONES if name in params}}


def trainable(backbone: Backbone, params: Any) -> Any:
  """`Task.trainable`: every leaf True but those of the backbone's (backbones') frozen layers."""
  mask = jax.tree.map(lambda _: True, params)
  for name in BACKBONES:
    if name in params:
      mask[name] = jax.tree.map(lambda f: not f, frozen_mask(backbone, params[name]))
  return mask


def stop_frozen(backbone: Backbone, params: Any) -> Any:
  """`params` with stop_gradient on the frozen layers: no gradient, and no backward pass through
  the first layers (they are the first stages, and the images need no gradient)."""
  if not backbone.frozen_layers:
    return params
  out = dict(params)
  for name in BACKBONES:
    if name in params:
      out[name] = {layer: jax.lax.stop_gradient(p) if layer in backbone.frozen_layers else p
                   for layer, p in params[name].items()}
  return out


# ----------------------------------------------------------------------------------------------
# Loss.

def training_boxes(batch: Batch) -> jax.Array:
  """bool [B, M]: the ground-truth boxes trained on: valid, not difficult, not crowd."""
  valid = batch["box_valid"]
  for flag in ("difficult", "iscrowd"):
    if flag in batch:
      valid = valid & ~batch[flag]
  return valid


def proposal_min_size(batch: Batch, min_size_original: float) -> jax.Array:
  """[B] the proposal layer's minimum box side in network-input pixels: config's original-image
  pixels times each image's resize factor (the smaller of its two axes')."""
  return min_size_original * jnp.min(jnp.asarray(batch["scale"], jnp.float32), axis=-1)


def loss_terms(model: FasterRCNN, params: Any, batch: Batch, rng: jax.Array, *, joint: bool,
               min_size_original: float, **parts: Any) -> Losses:
  """`FasterRCNN.losses` of a detection batch (rng split into the 'sample' and 'dropout' streams);
  `parts`: its rpn / detector / proposals arguments."""
  sample_rng, dropout_rng = jax.random.split(rng)
  return model.apply({"params": params}, batch["image"], batch["size"],
                     proposal_min_size(batch, min_size_original), batch["boxes"],
                     batch["box_labels"], training_boxes(batch), joint=joint,
                     method=FasterRCNN.losses, rngs={"sample": sample_rng, "dropout": dropout_rng},
                     **parts)


def faster_rcnn_loss_fn(model: FasterRCNN, *, joint: bool, min_size_original: float) -> LossFn:
  """The sum of the four loss terms (SPEC B2 + B4); aux: each term and the sampling counts."""

  def loss_fn(params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    terms = loss_terms(model, stop_frozen(model.backbone, params), batch, rng, joint=joint,
                       min_size_original=min_size_original)
    total = terms.rpn_cls + terms.rpn_reg + terms.det_cls + terms.det_reg
    return total, terms._asdict()

  return loss_fn


# ----------------------------------------------------------------------------------------------
# The training task.

def _loader_factory(config: ml_collections.ConfigDict) -> Callable[[int, int], Any]:
  loaders = {}

  def make_loader(process_index: int, process_count: int) -> Any:
    key = (process_index, process_count)
    if key not in loaders:  # each one reads the whole split once (its sizes and boxes)
      loaders[key] = detection.detection_train_loader(config, process_index=process_index,
                                                      process_count=process_count)
    return loaders[key]

  return make_loader


def training_task(config: ml_collections.ConfigDict) -> Task:
  """Faster R-CNN (approximate or exact joint training) on config.dataset's training split.

  Raises:
    CheckpointError / ConfigError: the backbone's starting weights cannot be used.
    ConfigError: a batch size that does not split over the processes.
    DataError: the dataset cannot be loaded or has no boxes, or no shape bucket holds a whole batch.
  """
  model = model_from_config(config)
  backbone_params = initial_backbone_params(config, model.backbone)
  make_loader = _loader_factory(config)
  steps_per_epoch = make_loader(jax.process_index(), jax.process_count()).steps_per_epoch
  return Task(init_params=lambda rng: with_backbone(init_params(model, rng), backbone_params),
              loss_fn=faster_rcnn_loss_fn(model, joint=config.faster_rcnn.training == "joint",
                                          min_size_original=config.faster_rcnn.proposal_min_size),
              make_loader=make_loader,
              steps_per_epoch=steps_per_epoch,
              signature=model_signature(config),
              trainable=functools.partial(trainable, model.backbone))


# ----------------------------------------------------------------------------------------------
# 4-step alternating training (SPEC B5 1).

# The stages, each trained to the end in <workdir>/alternating/<name>: (name, description, which
# parts train, which losses).
STAGES = (
    ("1_rpn", "train the RPN from the initial backbone", ("shared", "rpn"), "rpn"),
    ("2_detector", "train Fast R-CNN from the initial backbone on step 1's proposals",
     ("shared", "box_head"), "detector"),
    ("3_rpn_fixed_shared", "fine-tune the RPN's own layers on step 2's backbone (frozen)", ("rpn",),
     "rpn"),
    ("4_detector_fixed_shared", "fine-tune Fast R-CNN's own layers on step 3's proposals",
     ("box_head",), "detector"),
)
PROPOSER = "proposer"  # step 2's copy of step 1's network (frozen), which makes its proposals


def stage_workdirs(workdir: str) -> list[str]:
  """<workdir>/alternating/<stage name> for each of the 4 STAGES."""
  return [os.path.join(workdir, "alternating", name) for name, *_ in STAGES]


def training_stages(config: ml_collections.ConfigDict, workdir: str) -> list[Stage]:
  """faster_rcnn.training's stages: one (`training_task` in `workdir`) for joint training, the four
  of STAGES for "alternating" (each trains config.train's length with the optimizer's schedule
  from its start; py-faster-rcnn trains 80k / 40k / 80k / 40k mini-batches)."""
  if config.faster_rcnn.training != "alternating":
    return [Stage("", workdir, lambda: training_task(config))]
  dirs = stage_workdirs(workdir)
  return [Stage(f"step {i} of 4-step alternating training: {description}", dirs[i - 1],
                functools.partial(alternating_task, config, i, dirs))
          for i, (_, description, _, _) in enumerate(STAGES, 1)]


def _stage_template(model: FasterRCNN, stage: int) -> Any:
  template = params_template(model)
  return {**template, PROPOSER: template} if stage == 2 else template


def _restore_stage(config: ml_collections.ConfigDict, model: FasterRCNN, dirs: list[str],
                   stage: int) -> Any:
  """The finished `stage`'s parameters (its newest checkpoint); the proposer dropped."""
  params, _ = checkpoint_io.restore_params(dirs[stage - 1], _stage_template(model, stage),
                                           task_signature=architecture_signature(config))
  return {k: v for k, v in params.items() if k != PROPOSER}


def stage_trainable(backbone: Backbone, stage: int, params: Any) -> Any:
  """`Task.trainable` of a stage: its parts (STAGES) but the backbone's frozen layers."""
  parts = STAGES[stage - 1][2]
  mask = {name: jax.tree.map(lambda _, on=name in parts: on, subtree)
          for name, subtree in params.items()}
  if SHARED in parts:
    mask[SHARED] = trainable(backbone, {SHARED: params[SHARED]})[SHARED]
  return mask


def _stop_untrained(params: Any, mask: Any) -> Any:
  """stop_gradient on the leaves that do not train (no gradient and no backward pass for them)."""
  return jax.tree.map(lambda p, on: p if on else jax.lax.stop_gradient(p), params, mask)


def alternating_task(config: ml_collections.ConfigDict, stage: int, dirs: list[str]) -> Task:
  """Step `stage` (1-4) of 4-step alternating training (SPEC B5 1), the steps before it finished:
    1. the RPN (and backbone) from the initial backbone (faster_rcnn.backbone_init);
    2. Fast R-CNN (and a backbone of its own) from the initial backbone, on the proposals of step 1's
       network — a frozen copy of it ('proposer') rides in the parameters;
    3. the RPN's own layers (from step 1) on step 2's backbone, frozen; the detector is step 2's;
    4. Fast R-CNN's own layers on step 3's proposals, everything else frozen: the final network.
  The backbone's frozen layers stay frozen throughout.
  """
  model = model_from_config(config)
  make_loader = _loader_factory(config)
  steps_per_epoch = make_loader(jax.process_index(), jax.process_count()).steps_per_epoch
  min_size = config.faster_rcnn.proposal_min_size
  if stage == 1:
    backbone_params = initial_backbone_params(config, model.backbone)
    init = lambda rng: with_backbone(init_params(model, rng), backbone_params)
  elif stage == 2:
    backbone_params = initial_backbone_params(config, model.backbone)
    step1 = _restore_stage(config, model, dirs, 1)
    init = lambda rng: {**with_backbone(init_params(model, rng), backbone_params), PROPOSER: step1}
  elif stage == 3:
    step1, step2 = (_restore_stage(config, model, dirs, i) for i in (1, 2))
    init = lambda rng: {**step2, "rpn": step1["rpn"]}
  else:
    step3 = _restore_stage(config, model, dirs, 3)
    init = lambda rng: step3
  mask_of = functools.partial(stage_trainable, model.backbone, stage)
  losses = STAGES[stage - 1][3]

  def loss_fn(params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    params = _stop_untrained(params, mask_of(params))
    proposals = None
    if PROPOSER in params:
      proposals = model.apply({"params": params[PROPOSER]}, batch["image"], batch["size"],
                              proposal_min_size(batch, min_size), method=FasterRCNN.train_proposals)
      params = {k: v for k, v in params.items() if k != PROPOSER}
    terms = loss_terms(model, params, batch, rng, joint=False, min_size_original=min_size,
                       rpn=losses == "rpn", detector=losses == "detector", proposals=proposals)
    return terms.rpn_cls + terms.rpn_reg + terms.det_cls + terms.det_reg, terms._asdict()

  return Task(init_params=init, loss_fn=loss_fn, make_loader=make_loader,
              steps_per_epoch=steps_per_epoch,
              signature={**model_signature(config), "alternating_step": stage},
              trainable=mask_of)


# ----------------------------------------------------------------------------------------------
# Prediction.

def ranking_keys(seed: int, image_ids: jax.Array) -> jax.Array:
  """[B] PRNG keys for random proposal ranking (faster_rcnn.test.proposal_ranking "random"): the
  seed's key folded with each image's id, so that an image draws the same proposals in any batch."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(image_ids).astype(jnp.uint32))


def predict(model: FasterRCNN, params: Any, batch: Batch, *, min_size_original: float,
            num_proposals: int = 0, seed: int = 0) -> dict[str, jax.Array]:
  """Test-time outputs of a detection batch (B images), fixed shapes, padded and masked; `seed`
  draws the random proposals of test_proposal_ranking "random" (`ranking_keys` of the batch's
  "image_id", or of the images' positions in a batch without ids).

  Returns (network-input pixels, the `evaluation.DetectionEvaluator` contract):
    boxes [B, D, 4], scores [B, D] (class probability), classes int32 [B, D] in [0, K),
    valid bool [B, D] (D = faster_rcnn.test.max_detections);
    proposal_boxes [B, N, 4], proposal_scores [B, N] (objectness probability), proposal_valid
    [B, N] (N = max(test.post_nms, num_proposals), in ranking order: descending objectness, or
    random).
  """
  keys = None
  if model.settings.test_proposal_ranking == "random":  # images without ids: their batch positions
    ids = batch["image_id"] if "image_id" in batch else jnp.arange(batch["image"].shape[0])
    keys = ranking_keys(seed, ids)
  outputs = model.apply({"params": params}, batch["image"], batch["size"],
                        proposal_min_size(batch, min_size_original), num_proposals=num_proposals,
                        ranking_keys=keys)
  d, p = outputs.detections, outputs.proposals
  return {"boxes": d.boxes, "scores": d.scores, "classes": d.classes, "valid": d.valid,
          "proposal_boxes": p.boxes, "proposal_scores": jax.nn.sigmoid(p.scores),
          "proposal_valid": p.valid}


def test_input_config(config: ml_collections.ConfigDict, factor: float | None = None
                      ) -> ml_collections.ConfigDict:
  """A copy of `config` whose input.min_size / max_size are the test sizes
  (`config.faster_rcnn_test_sizes`: times faster_rcnn.test.size_factor, or `factor`), for everything
  that makes an evaluation-side view of an image; `config` itself when they are the training sizes."""
  min_size, max_size = faster_rcnn_test_sizes(config, factor)
  if (min_size, max_size) == (config.input.min_size, config.input.max_size):
    return config
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.input.min_size, copy.input.max_size = min_size, max_size
  return copy


def make_predict_fn(config: ml_collections.ConfigDict, model: FasterRCNN | None = None, *,
                    num_proposals: int = 0) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """(params, batch) -> `predict(...)`, not jitted (the caller jits it over its mesh); random
  proposals (faster_rcnn.test.proposal_ranking) are drawn from config.seed."""
  model = model or model_from_config(config)
  return functools.partial(predict, model, min_size_original=config.faster_rcnn.proposal_min_size,
                           num_proposals=num_proposals, seed=config.seed)


DETECTION_KEYS = ("boxes", "scores", "classes", "valid")  # `predict`'s detections


def extra_test_sizes(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One config per size of faster_rcnn.test.extra_size_factors other than test.size_factor (each
  once, in order), its input sizes that size's (`test_input_config`)."""
  t = config.faster_rcnn.test
  factors = dict.fromkeys(float(f) for f in t.extra_size_factors if float(f) != float(t.size_factor))
  return [test_input_config(config, f) for f in factors]


def rescale_detections(predictions: Mapping[str, Any], from_scale: Any, to_scale: Any
                       ) -> dict[str, np.ndarray]:
  """`predict`'s detections (boxes [B, D, 4], scores, classes, valid [B, D]) of images resized by
  `from_scale`, with their boxes in the pixels of the same images resized by `to_scale` (both [B, 2]
  (sy, sx) per original pixel, the batches' "scale")."""
  factor = np.asarray(to_scale, np.float32) / np.asarray(from_scale, np.float32)  # [B, 2] (y, x)
  out = {k: np.asarray(predictions[k]) for k in DETECTION_KEYS}
  out["boxes"] = out["boxes"] * factor[:, None, [1, 0, 1, 0]]
  return out


def merge_test_sizes(config: ml_collections.ConfigDict) -> Callable[[Mapping[str, Any]],
                                                                     dict[str, jax.Array]]:
  """The merge of several test sizes' detections (faster_rcnn.test.extra_size_factors), not jitted:
  {boxes [B, N, 4], scores [B, N], classes [B, N], valid [B, N]} (each image's detections of every
  size, concatenated, in one pixel frame) -> the same keys [B, D] (`ops.merge_detections` at
  test.nms_iou, test.max_detections D, test.box_voting_iou)."""
  t = config.faster_rcnn.test
  merge = functools.partial(merge_detections, nms_iou=float(t.nms_iou),
                            max_detections=int(t.max_detections),
                            voting_iou=float(t.box_voting_iou))

  def merge_batch(detections: Mapping[str, Any]) -> dict[str, jax.Array]:
    merged = jax.vmap(merge)(Detections(*(jnp.asarray(detections[k]) for k in DETECTION_KEYS)))
    return dict(zip(DETECTION_KEYS, merged))

  return merge_batch


def detections_to_dicts(predictions: Mapping[str, Any], batch: Mapping[str, Any]
                        ) -> list[dict[str, np.ndarray]]:
  """Per-image detections without padding, in ORIGINAL-image pixels.

  Args:
    predictions: `predict(...)`'s boxes [B, D, 4], scores [B, D], classes [B, D], valid [B, D].
    batch: its batch's "scale" [B, 2] (sy, sx: network-input pixels per original pixel) and,
      optionally, "valid" [B] (False: a padding example, left out).
  Returns:
    One dict per real example, in batch order: {'boxes': float32 [n, 4] (x1, y1, x2, y2) original
    pixels, 'scores': float32 [n] descending, 'labels': int32 [n] in [0, K)}.
  """
  boxes = np.asarray(predictions["boxes"], np.float32)
  scores = np.asarray(predictions["scores"], np.float32)
  labels = np.asarray(predictions["classes"], np.int32)
  valid = np.asarray(predictions["valid"], bool)
  scale = np.asarray(batch["scale"], np.float32)
  examples = np.asarray(batch.get("valid", np.ones(len(boxes), bool)), bool)
  out = []
  for i in np.flatnonzero(examples):
    sy, sx = scale[i]
    keep = valid[i]
    out.append({"boxes": boxes[i][keep] / np.array([sx, sy, sx, sy], np.float32),
                "scores": scores[i][keep], "labels": labels[i][keep]})
  return out

