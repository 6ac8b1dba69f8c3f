"""Faster R-CNN (SPEC B1-B5): shared convolutions -> RPN -> proposals -> RoI pooling -> Fast R-CNN head.

The network reads as the paper's figure 2 (STYLE "Take" 10): `FasterRCNN` holds three parts,
  shared    the backbone (models/backbones.py): images [B, H, W, 3] -> feature map [B, h, w, C],
  rpn       `RPNHead`: 3x3 conv + ReLU, then sibling 1x1 convs: k objectness logits and 4k deltas per
            cell (SPEC B1), k = len(anchor_sizes) * len(anchor_ratios),
  box_head  `BoxHead`: RoI features [B, R, p, p, C] -> two FC layers with dropout -> K + 1 class
            logits (column 0 BACKGROUND) and class-specific deltas [B, R, K + 1, 4] (SPEC B4),
and everything between them is ops/ (anchors, targets, proposals, RoI pooling, detections), with
static shapes: one jitted training step runs backbone, RPN loss, proposals, RoI sampling and the
detector loss with no host round trip (`FasterRCNN.losses`).

Choices where the paper leaves one:
- Objectness: k logits with a sigmoid (the paper's "k with a sigmoid" alternative to 2k softmax
  scores; torchvision's choice): the log loss of SPEC B2 is the binary cross-entropy.
- Anchors and RoIs are placed on the backbone's receptive fields: feature cell (i, j) stands for the
  image point (c + j * stride, c + i * stride), c = `Backbone.receptive_field_center` (8 for VGG-16,
  the cell's middle). Anchors are centred there (`ops.anchors(..., offset=c)`), and RoI pooling /
  RoIAlign see boxes shifted by -c, so that the cell whose centre is nearest a box corner is the one
  the box starts in. py-faster-rcnn centres anchors on (7.5, 7.5) + 16 (i, j) but pools with cell j
  at pixel 16 j, half a cell apart; for OverFeat's backbone (c = 27.5 at stride 16) it matters.
- RPN loss: N_cls = the number of sampled anchors (256 when there are enough); N_reg = the number of
  anchor positions h * w (the paper's ~2,400) or the sampled count (Settings.rpn_reg_normalizer).
  Losses are means over the images of the batch.
- Detector loss: cross-entropy over the sampled RoIs plus smooth L1 on the foreground RoIs' deltas of
  their ground-truth class, both divided by the number of sampled RoIs (py-faster-rcnn's and
  torchvision's normalisation).
- smooth L1 with beta 1 (SPEC B2: 0.5 x^2 if |x| < 1 else |x| - 0.5) in both heads.

Training schemes (SPEC B5), `losses(..., joint=...)`: approximate joint training (joint=False) feeds
the detector `stop_gradient(proposals)`; exact joint training (joint=True) lets the detector loss
reach the RPN's delta layer through the proposal coordinates — only RoIAlign is differentiable in
them (RoI max pooling rounds the coordinates), so `joint` requires roi_op "align" — scaled by
Settings.joint_box_gradient_scale (1: exact). 4-step
alternating training computes one half at a time (`losses(..., rpn=..., detector=...)`), its step 2
on another network's proposals (`train_proposals`, passed as `proposals=`); tasks/faster_rcnn.py
runs the steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from overfeat_jax.errors import InputSizeError
from overfeat_jax.models.backbones import Backbone
from overfeat_jax.models.overfeat import weight_initializer
from overfeat_jax.ops import anchors as make_anchors
from overfeat_jax.ops.boxes import RPN_WEIGHTS, encode_boxes
from overfeat_jax.ops.proposals import Detections, Proposals, detect, propose
from overfeat_jax.ops.roi import batched_roi_align, roi_pool
from overfeat_jax.ops.targets import (IGNORE, POSITIVE, RoiTargets, inside_image, match_anchors,
                                      sample_fixed_indices, sample_rois)

# New layers' weights (SPEC B2: N(0, 0.01^2)); the box regressor's as py-faster-rcnn's bbox_pred.
NEW_LAYER_STD = 0.01
BBOX_PRED_STD = 0.001
ROI_OPS = ("pool", "align")
RPN_REG_NORMALIZERS = ("positions", "samples")
PROPOSAL_RANKINGS = ("objectness", "random")
# The parameters' backbone subtrees: the shared one (the detector's, and the RPN's unless
# Settings.shared_features is False: then the RPN has its own copy).
SHARED = "shared"
RPN_BACKBONE = "rpn_backbone"
BACKBONES = (SHARED, RPN_BACKBONE)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Faster R-CNN's static hyperparameters (counts are static shapes; defaults are the paper's).

  Attributes:
    num_classes: K object classes (the head has K + 1 columns, 0 = background).
    anchor_sizes, anchor_ratios: anchors per cell = sizes x ratios (height / width) (SPEC B1).
    rpn_channels: the RPN's 3x3 conv width (512 VGG-16, 256 ZF: the backbone's channels).
    rpn_batch, rpn_positive_fraction: anchors sampled per image and the most positives among them.
    rpn_pos_iou, rpn_neg_iou: anchor labelling thresholds (SPEC B2).
    anchor_border: pixels an anchor may cross the image boundary and still train (0: SPEC B2).
    rpn_lambda: lambda of the RPN loss; rpn_reg_normalizer: N_reg = "positions" (h * w) or
      "samples" (the sampled anchors).
    shared_features: the RPN and the detector read one backbone's features (the paper's shared
      convolutions), or (False) each has its own backbone, both starting from the same weights
      (SPEC B6's "unshared" ablation; parameters {'shared', 'rpn_backbone', ...}).
    train_pre_nms, train_post_nms, test_pre_nms, test_post_nms: proposal counts (SPEC B3).
    proposal_nms_iou, test_proposal_nms_iou: NMS IoU of the proposal layer in training and at test
      (>= 1: no NMS).
    test_proposal_ranking: "objectness" (the paper) or "random": test proposals drawn uniformly at
      random among the decoded boxes (SPEC B6's "no cls" ablation; `FasterRCNN.__call__`).
    test_rpn_box_regression: False: the test proposals are the anchors themselves (clipped), scored
      by objectness (SPEC B6's "no reg" ablation).
    roi_op: "pool" (RoI max pooling) or "align" (RoIAlign); roi_size: its p x p output grid.
    roi_sampling_ratio: RoIAlign's samples per bin and axis (<= 0: adaptive, as torchvision).
    head_hidden: the two FC layers' width (4096 for VGG-16).
    num_rois, fg_fraction, fg_iou, bg_iou: RoI sampling per image (SPEC B4).
    detector_lambda: weight of the detector's box loss.
    joint_box_gradient_scale: exact joint training's factor on the gradient through the proposal
      coordinates (1: the exact gradient; the forward pass does not change).
    score_threshold, detection_nms_iou, max_detections: test-time detections (SPEC B4).
  """
  num_classes: int
  anchor_sizes: tuple[float, ...] = (128.0, 256.0, 512.0)
  anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
  rpn_channels: int = 512
  rpn_batch: int = 256
  rpn_positive_fraction: float = 0.5
  rpn_pos_iou: float = 0.7
  rpn_neg_iou: float = 0.3
  anchor_border: float = 0.0
  rpn_lambda: float = 10.0
  rpn_reg_normalizer: str = "positions"
  shared_features: bool = True
  train_pre_nms: int = 12000
  train_post_nms: int = 2000
  test_pre_nms: int = 6000
  test_post_nms: int = 300
  proposal_nms_iou: float = 0.7
  test_proposal_nms_iou: float = 0.7
  test_proposal_ranking: str = "objectness"
  test_rpn_box_regression: bool = True
  roi_op: str = "pool"
  roi_size: int = 7
  roi_sampling_ratio: int = 2
  head_hidden: int = 4096
  num_rois: int = 128
  fg_fraction: float = 0.25
  fg_iou: float = 0.5
  bg_iou: tuple[float, float] = (0.1, 0.5)
  detector_lambda: float = 1.0
  joint_box_gradient_scale: float = 1.0
  score_threshold: float = 0.05
  detection_nms_iou: float = 0.3
  max_detections: int = 100

  @property
  def num_anchors(self) -> int:
    """k, the anchors per feature-map cell."""
    return len(self.anchor_sizes) * len(self.anchor_ratios)

  def __post_init__(self):
    if self.roi_op not in ROI_OPS:
      raise ValueError(f"roi_op must be one of {ROI_OPS}, got {self.roi_op!r}")
    if self.rpn_reg_normalizer not in RPN_REG_NORMALIZERS:
      raise ValueError(f"rpn_reg_normalizer must be one of {RPN_REG_NORMALIZERS}, got "
                       f"{self.rpn_reg_normalizer!r}")
    if self.test_proposal_ranking not in PROPOSAL_RANKINGS:
      raise ValueError(f"test_proposal_ranking must be one of {PROPOSAL_RANKINGS}, got "
                       f"{self.test_proposal_ranking!r}")


# ----------------------------------------------------------------------------------------------
# Losses (pure; one image each unless said otherwise).

def scale_gradient(x: jax.Array, factor: float) -> jax.Array:
  """x unchanged (bit for bit) in the forward pass; its gradient times `factor` in the backward one
  (`x - stop_gradient(x)` is exactly 0 and carries x's gradient)."""
  constant = jax.lax.stop_gradient(x)
  return constant + factor * (x - constant)


def smooth_l1(x: jax.Array) -> jax.Array:
  """Elementwise smooth L1 (SPEC B2): 0.5 x^2 where |x| < 1, |x| - 0.5 elsewhere."""
  ax = jnp.abs(x)
  return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


class RpnTargets(NamedTuple):
  """One image's RPN training targets over its A anchors.

  labels: int32 [A]: POSITIVE / NEGATIVE for the sampled anchors, IGNORE for the rest (boundary-
    crossing anchors, IoUs between the thresholds, and everything not sampled).
  deltas: [A, 4] the matched ground-truth box encoded against the anchor (RPN_WEIGHTS) where
    POSITIVE, 0 elsewhere. Constants.
  """
  labels: jax.Array
  deltas: jax.Array


def rpn_targets(anchors: jax.Array, image_hw: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array,
                rng: jax.Array, settings: Settings) -> RpnTargets:
  """SPEC B2 for one image: ignore anchors crossing the image, label by IoU (> 0.7 or a ground-truth
  box's best: positive; < 0.3: negative), sample rpn_batch at up to rpn_positive_fraction positive,
  encode the positives' matched boxes.

  Args:
    anchors: [A, 4]; image_hw: [2] (height, width) of the image in its canvas.
    gt_boxes: [G, 4] padded; gt_valid: bool [G]; rng: the sampling key.
  """
  anchors = jnp.asarray(anchors)
  anchor_valid = inside_image(anchors, image_hw, settings.anchor_border)
  labels, matched = match_anchors(anchors, anchor_valid, gt_boxes, gt_valid,
                                  pos_iou=settings.rpn_pos_iou, neg_iou=settings.rpn_neg_iou)
  indices, sample_labels, sample_valid = sample_fixed_indices(
      labels, rng, num_samples=settings.rpn_batch, positive_fraction=settings.rpn_positive_fraction)
  num_anchors = anchors.shape[0]
  # Slots that are not taken write out of bounds, and are dropped.
  labels = jnp.full((num_anchors,), IGNORE, jnp.int32).at[
      jnp.where(sample_valid, indices, num_anchors)].set(sample_labels, mode="drop")
  deltas = jnp.zeros_like(anchors)
  if gt_boxes.shape[0] == 0:
    return RpnTargets(labels=labels, deltas=deltas)
  # Only the sampled positives (<= rpn_batch) are encoded: the loss reads nothing else, and encoding
  # every anchor was a third of this function's time. Other slots encode their anchor against
  # itself (0), never a padding box (log 0).
  positive = sample_labels == POSITIVE  # [S]
  slot_anchors = anchors[jnp.where(positive, indices, 0)]
  matched_boxes = jnp.where(positive[:, None], gt_boxes[matched[jnp.where(positive, indices, 0)]],
                            slot_anchors)
  deltas = deltas.at[jnp.where(positive, indices, num_anchors)].set(
      encode_boxes(matched_boxes, slot_anchors, RPN_WEIGHTS), mode="drop")
  return RpnTargets(labels=labels, deltas=jax.lax.stop_gradient(deltas))


def rpn_loss(logits: jax.Array, deltas: jax.Array, targets: RpnTargets, num_positions: int,
             settings: Settings) -> tuple[jax.Array, jax.Array]:
  """The RPN loss of one image (SPEC B2): (L_cls, lambda * L_reg).

  Args:
    logits: [A] objectness logits; deltas: [A, 4] predicted deltas; targets: `rpn_targets(...)`.
    num_positions: h * w anchor positions (N_reg for rpn_reg_normalizer "positions").
  Returns:
    ([] mean binary log loss over the sampled anchors (0 if none),
     [] rpn_lambda * sum of smooth L1 over the positives' deltas / N_reg).
  """
  sampled = (targets.labels != IGNORE).astype(jnp.float32)
  positive = (targets.labels == POSITIVE).astype(jnp.float32)
  num_sampled = jnp.sum(sampled)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), positive)
  cls = jnp.sum(bce * sampled) / jnp.maximum(num_sampled, 1.0)
  n_reg = float(num_positions) if settings.rpn_reg_normalizer == "positions" else jnp.maximum(
      num_sampled, 1.0)
  reg = jnp.sum(smooth_l1(deltas.astype(jnp.float32) - targets.deltas) * positive[:, None]) / n_reg
  return cls, settings.rpn_lambda * reg


def detector_loss(logits: jax.Array, deltas: jax.Array, targets: RoiTargets,
                  settings: Settings) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The Fast R-CNN loss of a batch of sampled RoIs (SPEC B4).

  Args:
    logits: [B, R, K + 1]; deltas: [B, R, K + 1, 4]; targets: `RoiTargets` with a leading B.
  Returns:
    (cross-entropy summed over the valid RoIs, detector_lambda * smooth L1 of the foreground RoIs'
     deltas of their class summed, the number of valid RoIs): divide the sums by the count.
  """
  valid = targets.valid.astype(jnp.float32)  # [B, R]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets.labels)
  foreground = ((targets.labels > 0) & targets.valid).astype(jnp.float32)
  class_deltas = jnp.take_along_axis(deltas, targets.labels[..., None, None], axis=2)[..., 0, :]
  box = jnp.sum(smooth_l1(class_deltas.astype(jnp.float32) - targets.targets), axis=-1)
  return (jnp.sum(ce * valid), settings.detector_lambda * jnp.sum(box * foreground), jnp.sum(valid))


# ----------------------------------------------------------------------------------------------
# The network.

class RPNHead(nn.Module):
  """The region proposal network on a feature map (SPEC B1): [B, h, w, C] -> (objectness logits
  [B, h * w * k], deltas [B, h * w * k, 4]), in `ops.anchors` order (row-major cells, the k anchors
  of a cell together). Every layer N(0, 0.01^2), zero biases (SPEC B2)."""
  num_anchors: int
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    init = nn.initializers.normal(stddev=NEW_LAYER_STD)
    conv = dict(kernel_init=init, bias_init=nn.initializers.zeros, dtype=self.dtype,
                param_dtype=jnp.float32)
    x = nn.relu(nn.Conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), name="conv", **conv)(
        features.astype(self.dtype)))
    logits = nn.Conv(self.num_anchors, (1, 1), name="objectness", **conv)(x)  # [B, h, w, k]
    deltas = nn.Conv(4 * self.num_anchors, (1, 1), name="deltas", **conv)(x)  # [B, h, w, 4k]
    batch = features.shape[0]
    return (logits.reshape(batch, -1).astype(jnp.float32),
            deltas.reshape(batch, -1, 4).astype(jnp.float32))


class BoxHead(nn.Module):
  """The Fast R-CNN head (SPEC B4): RoI features [B, R, p, p, C] -> fc6, fc7 (`hidden` wide, ReLU,
  dropout) -> class logits [B, R, K + 1] and class-specific deltas [B, R, K + 1, 4].

  fc6 / fc7 initialised by `weight_init` ('paper' N(0, 0.01^2), 'he'); cls_score N(0, 0.01^2),
  bbox_pred N(0, 0.001^2) (py-faster-rcnn); zero biases.
  """
  num_classes: int
  hidden: int
  dropout_rate: float = 0.5
  weight_init: str = "paper"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    batch, rois = pooled.shape[:2]
    dense = dict(bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32)
    x = pooled.reshape(batch, rois, -1).astype(self.dtype)
    for name in ("fc6", "fc7"):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=weight_initializer(self.weight_init), name=name,
                           **dense)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    columns = self.num_classes + 1
    logits = nn.Dense(columns, kernel_init=nn.initializers.normal(NEW_LAYER_STD), name="cls_score",
                      **dense)(x)
    deltas = nn.Dense(4 * columns, kernel_init=nn.initializers.normal(BBOX_PRED_STD),
                      name="bbox_pred", **dense)(x)
    return (logits.astype(jnp.float32),
            deltas.reshape(batch, rois, columns, 4).astype(jnp.float32))


class Outputs(NamedTuple):
  """What the network gives at test time for a batch.

  proposals: `Proposals` with a leading B: boxes [B, N, 4] (network-input pixels), objectness logits
    [B, N], valid [B, N]; N = max(test_post_nms, the `num_proposals` asked for), in ranking order
    (descending objectness, or random: Settings.test_proposal_ranking); the first n of them are
    what test_post_nms = n would give (NMS is greedy in that order).
  detections: `Detections` with a leading B: boxes [B, D, 4] (network-input pixels), scores [B, D],
    classes [B, D] in [0, K), valid [B, D]; D = max_detections; from the first test_post_nms
    proposals.
  """
  proposals: Proposals
  detections: Detections


class Losses(NamedTuple):
  """The batch's loss terms ([] each) and what they were computed from.

  rpn_cls, rpn_reg: SPEC B2's two terms (rpn_reg includes lambda), means over the images.
  det_cls, det_reg: SPEC B4's (det_reg includes detector_lambda), over the sampled RoIs.
  num_positive_anchors, num_fg_rois: per image, means over the batch (how the sampling went).
  num_proposals: valid proposals per image, mean.
  """
  rpn_cls: jax.Array
  rpn_reg: jax.Array
  det_cls: jax.Array
  det_reg: jax.Array
  num_positive_anchors: jax.Array
  num_fg_rois: jax.Array
  num_proposals: jax.Array


class FasterRCNN(nn.Module):
  """Faster R-CNN: backbone, RPN and Fast R-CNN head sharing one feature map (module docstring).

  Parameters: {'shared': the backbone's, 'rpn': {'conv', 'objectness', 'deltas'}, 'box_head':
  {'fc6', 'fc7', 'cls_score', 'bbox_pred'}}, and 'rpn_backbone' (the RPN's own backbone, the same
  layers as 'shared') when settings.shared_features is False. Methods take images [B, H, W, 3] (a canvas per
  batch), each image's (height, width) in its canvas `image_hw` int [B, 2], and the proposal layer's
  minimum box side in pixels `min_size` [B] (py-faster-rcnn: 16 original pixels x the resize factor).
  """
  backbone: Backbone
  settings: Settings
  weight_init: str = "paper"  # the backbone's and fc6 / fc7's initialisation (no weight file)
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  def setup(self):
    s = self.settings
    self.shared = self.backbone.module(weight_init=self.weight_init, dtype=self.dtype)
    if not s.shared_features:
      self.rpn_backbone = self.backbone.module(weight_init=self.weight_init, dtype=self.dtype)
    self.rpn = RPNHead(s.num_anchors, s.rpn_channels, dtype=self.dtype)
    self.box_head = BoxHead(s.num_classes, s.head_hidden, self.dropout_rate, self.weight_init,
                            dtype=self.dtype)

  # -- parts --------------------------------------------------------------------------------

  def anchors(self, feature_hw: tuple[int, int]) -> np.ndarray:
    """float32 [h * w * k, 4]: the anchors of an h x w feature map (constants; module docstring)."""
    return anchor_boxes(self.backbone, self.settings, feature_hw)

  def pool(self, features: jax.Array, rois: jax.Array) -> jax.Array:
    """RoI pooling / RoIAlign of each image's RoIs: features [B, h, w, C], rois [B, R, 4] (network-
    input pixels) -> [B, R, p, p, C] (module docstring: boxes shifted onto the receptive fields)."""
    return pool_rois(features, rois, self.backbone, self.settings)

  def proposals(self, logits: jax.Array, deltas: jax.Array, anchors: np.ndarray,
                image_hw: jax.Array, min_size: jax.Array, *, pre_nms: int, post_nms: int,
                nms_iou: float, ranking_keys: jax.Array | None = None) -> Proposals:
    """The proposal layer on every image (SPEC B3): Proposals with a leading B. `ranking_keys`: [B]
    PRNG keys to rank each image's boxes at random instead of by objectness (`ops.propose`)."""

    def one(logit, delta, hw, size, key):
      return propose(logit, delta, anchors, hw, pre_nms_top_n=pre_nms, post_nms_top_n=post_nms,
                     nms_iou=nms_iou, min_size=size, ranking_key=key)

    if ranking_keys is None:
      return jax.vmap(lambda lo, d, hw, size: one(lo, d, hw, size, None))(logits, deltas, image_hw,
                                                                          min_size)
    return jax.vmap(one)(logits, deltas, image_hw, min_size, ranking_keys)

  def rpn_outputs(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, np.ndarray]:
    """(the detector's features [B, h, w, C], objectness logits [B, A], deltas [B, A, 4], anchors
    [A, 4]); the RPN reads the same features, or its own backbone's without shared_features."""
    features = self.shared(images)
    rpn_features = features if self.settings.shared_features else self.rpn_backbone(images)
    logits, deltas = self.rpn(rpn_features)
    return features, logits, deltas, self.anchors(features.shape[1:3])

  def init_all(self, images: jax.Array) -> tuple[jax.Array, ...]:
    """Touches every layer once (for `init`): images [B, H, W, 3] of any size the backbone takes."""
    features, logits, deltas, _ = self.rpn_outputs(images)
    s = self.settings
    pooled = jnp.zeros((images.shape[0], 1, s.roi_size, s.roi_size, features.shape[-1]), self.dtype)
    return (logits, deltas) + self.box_head(pooled, train=False)

  # -- test ---------------------------------------------------------------------------------

  def __call__(self, images: jax.Array, image_hw: jax.Array, min_size: jax.Array, *,
               num_proposals: int = 0, ranking_keys: jax.Array | None = None) -> Outputs:
    """Test-time proposals and detections (`Outputs`); `num_proposals` > test_post_nms returns
    that many proposals (for recall-vs-proposals), the detector still sees test_post_nms.
    `ranking_keys` [B] PRNG keys: required when settings.test_proposal_ranking is "random" (each
    image's proposals are then a uniform sample of its decoded boxes), unused otherwise."""
    s = self.settings
    features, logits, deltas, anchors = self.rpn_outputs(images)
    if not s.test_rpn_box_regression:  # "no reg" (SPEC B6): zero deltas decode to the anchors
      deltas = jnp.zeros_like(deltas)
    if s.test_proposal_ranking == "objectness":
      ranking_keys = None
    elif ranking_keys is None:
      raise ValueError("test_proposal_ranking 'random' needs ranking_keys, one PRNG key per image")
    proposals = self.proposals(logits, deltas, anchors, image_hw, min_size, pre_nms=s.test_pre_nms,
                               post_nms=max(s.test_post_nms, num_proposals),
                               nms_iou=s.test_proposal_nms_iou, ranking_keys=ranking_keys)
    rois = proposals.boxes[:, :s.test_post_nms]
    roi_valid = proposals.valid[:, :s.test_post_nms]
    class_logits, class_deltas = self.box_head(self.pool(features, rois), train=False)
    probs = jax.nn.softmax(class_logits, axis=-1)

    def one(p, d, r, v, hw):
      return detect(p, d, r, v, hw, score_threshold=s.score_threshold,
                    nms_iou=s.detection_nms_iou, max_detections=s.max_detections)

    detections = jax.vmap(one)(probs, class_deltas, rois, roi_valid, image_hw)
    return Outputs(proposals=proposals, detections=detections)

  # -- training -----------------------------------------------------------------------------

  def rpn_losses(self, logits: jax.Array, deltas: jax.Array, anchors: np.ndarray,
                 feature_hw: tuple[int, int], image_hw: jax.Array, gt_boxes: jax.Array,
                 gt_valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(L_cls, lambda L_reg, positives per image) of the batch, means over images (SPEC B2).
    Draws the anchor sample from the 'sample' rng stream."""
    s = self.settings
    rngs = jax.random.split(self.make_rng("sample"), logits.shape[0])
    targets = jax.vmap(lambda hw, g, v, r: rpn_targets(anchors, hw, g, v, r, s))(
        image_hw, gt_boxes, gt_valid, rngs)
    positions = feature_hw[0] * feature_hw[1]
    cls, reg = jax.vmap(lambda lo, d, t: rpn_loss(lo, d, t, positions, s))(logits, deltas, targets)
    positives = jnp.sum(targets.labels == POSITIVE, axis=1).astype(jnp.float32)
    return jnp.mean(cls), jnp.mean(reg), jnp.mean(positives)

  def detector_losses(self, features: jax.Array, proposals: Proposals, gt_boxes: jax.Array,
                      gt_labels: jax.Array, gt_valid: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(L_cls, lambda L_reg, foreground RoIs per image) of the Fast R-CNN head on `proposals`
    (SPEC B4): RoI sampling from the 'sample' rng stream, dropout from 'dropout'. Gradients reach
    the proposals' boxes only if the caller did not stop them (and through RoIAlign only)."""
    s = self.settings
    rngs = jax.random.split(self.make_rng("sample"), gt_boxes.shape[0])

    def one(boxes, valid, g, lab, gv, r):
      return sample_rois(boxes, valid, g, lab, gv, r, num_rois=s.num_rois,
                         fg_fraction=s.fg_fraction, fg_iou=s.fg_iou, bg_iou=s.bg_iou)

    targets = jax.vmap(one)(proposals.boxes, proposals.valid, gt_boxes, gt_labels, gt_valid, rngs)
    logits, deltas = self.box_head(self.pool(features, targets.rois), train=True)
    ce, box, count = detector_loss(logits, deltas, targets, s)
    per_roi = 1.0 / jnp.maximum(count, 1.0)
    fg = jnp.sum((targets.labels > 0) & targets.valid, axis=1).astype(jnp.float32)
    return ce * per_roi, box * per_roi, jnp.mean(fg)

  def losses(self, images: jax.Array, image_hw: jax.Array, min_size: jax.Array, gt_boxes: jax.Array,
             gt_labels: jax.Array, gt_valid: jax.Array, *, joint: bool = False, rpn: bool = True,
             detector: bool = True, proposals: Proposals | None = None) -> Losses:
    """The loss terms of one training step (SPEC B5).

    Args:
      images [B, H, W, 3], image_hw int [B, 2], min_size [B]: as the class docstring.
      gt_boxes: [B, G, 4] network-input pixels; gt_labels: int [B, G] in [0, K); gt_valid: bool
        [B, G] (False: padding, or a box not to train on).
      joint: exact joint training (gradients through the proposal coordinates), else approximate
        joint training (the proposals are constants).
      rpn, detector: which terms to compute (the others are 0): both for joint training; the
        stages of 4-step alternating training train one of them.
      proposals: the detector's proposals from another network (alternating training's step 2,
        treated as constants), with a leading B; None = this network's own.
    Needs rngs 'sample' (anchor and RoI sampling) and 'dropout'.
    """
    s = self.settings
    zero = jnp.zeros((), jnp.float32)
    features, logits, deltas, anchors = self.rpn_outputs(images)
    rpn_cls = rpn_reg = positives = zero
    if rpn:
      rpn_cls, rpn_reg, positives = self.rpn_losses(logits, deltas, anchors, features.shape[1:3],
                                                    image_hw, gt_boxes, gt_valid)
    det_cls = det_reg = fg = num_proposals = zero
    if detector:
      own = proposals is None
      if own:
        proposals = self.proposals(logits, deltas, anchors, image_hw, min_size,
                                   pre_nms=s.train_pre_nms, post_nms=s.train_post_nms,
                                   nms_iou=s.proposal_nms_iou)
      if not (joint and own):  # approximate joint training: constants (SPEC B5 2)
        proposals = proposals._replace(boxes=jax.lax.stop_gradient(proposals.boxes))
      elif s.joint_box_gradient_scale != 1.0:
        proposals = proposals._replace(
            boxes=scale_gradient(proposals.boxes, s.joint_box_gradient_scale))
      det_cls, det_reg, fg = self.detector_losses(features, proposals, gt_boxes, gt_labels, gt_valid)
      num_proposals = jnp.mean(jnp.sum(proposals.valid, axis=1).astype(jnp.float32))
    return Losses(rpn_cls=rpn_cls, rpn_reg=rpn_reg, det_cls=det_cls, det_reg=det_reg,
                  num_positive_anchors=positives, num_fg_rois=fg, num_proposals=num_proposals)

  def train_proposals(self, images: jax.Array, image_hw: jax.Array, min_size: jax.Array) -> Proposals:
    """This network's training proposals (train_pre_nms -> train_post_nms), with a leading B: what
    4-step alternating training's step 2 trains its detector on (SPEC B5 1)."""
    s = self.settings
    _, logits, deltas, anchors = self.rpn_outputs(images)
    return self.proposals(logits, deltas, anchors, image_hw, min_size, pre_nms=s.train_pre_nms,
                          post_nms=s.train_post_nms, nms_iou=s.proposal_nms_iou)


# ----------------------------------------------------------------------------------------------
# Geometry shared by the module and its users.

def anchor_boxes(backbone: Backbone, settings: Settings, feature_hw: tuple[int, int]) -> np.ndarray:
  """float32 [h * w * k, 4]: anchors of settings' sizes x ratios on every cell of an h x w map,
  centred on the cells' receptive fields (`ops.anchors`, offset = receptive_field_center)."""
  return make_anchors(tuple(feature_hw), backbone.stride, settings.anchor_sizes,
                      settings.anchor_ratios, offset=backbone.receptive_field_center)


def pool_rois(features: jax.Array, rois: jax.Array, backbone: Backbone,
              settings: Settings) -> jax.Array:
  """[B, h, w, C], [B, R, 4] -> [B, R, p, p, C] by settings.roi_op. Boxes move by -c (c the receptive
  field centre of cell 0) so that cell j, centred on image point c + j * stride, is read at j."""
  shifted = rois - backbone.receptive_field_center
  size = (settings.roi_size, settings.roi_size)
  scale = 1.0 / backbone.stride
  if settings.roi_op == "pool":
    return jax.vmap(lambda f, b: roi_pool(f, b, size, scale))(features, shifted)
  return batched_roi_align(features, shifted, size, scale, settings.roi_sampling_ratio)


def smallest_input(backbone: Backbone) -> int:
  """The smallest square side (a multiple of 8) the backbone maps to at least one cell."""
  for side in range(8, 4096, 8):
    try:
      backbone.map_size(side, side)
      return side
    except InputSizeError:
      continue
  raise InputSizeError(f"the {backbone.name} backbone takes no input up to 4096 px")


def init_params(model: FasterRCNN, rng: jax.Array) -> Any:
  """The model's parameters from `rng` (every layer; the input size does not shape them). Without
  shared features the RPN's backbone starts as a copy of the detector's (the paper's two networks
  both start from the same ImageNet model)."""
  side = smallest_input(model.backbone)
  params = model.init(rng, jnp.zeros((1, side, side, 3), jnp.float32), method=FasterRCNN.init_all)[
      "params"]
  if not model.settings.shared_features:
    params = {**params, RPN_BACKBONE: params[SHARED]}
  return params


def params_template(model: FasterRCNN) -> Any:
  """The parameters' shapes and dtypes (`jax.ShapeDtypeStruct`s), allocating nothing."""
  return jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))


__all__ = ["BACKBONES", "BoxHead", "FasterRCNN", "Losses", "Outputs", "PROPOSAL_RANKINGS", "RPNHead",
           "RPN_BACKBONE", "RpnTargets", "SHARED", "Settings", "anchor_boxes", "detector_loss",
           "init_params", "params_template", "pool_rois", "rpn_loss", "rpn_targets", "scale_gradient",
           "smallest_input", "smooth_l1"]
