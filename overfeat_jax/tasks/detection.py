"""The OverFeat detection task (SPEC A6): the classifier trained spatially with a background class.

It starts from a classification run (config.detection.classifier_workdir): that run's newest
checkpoint gives the feature extractor, which stays frozen, and the classifier's layers, whose class
layer gains one output, BACKGROUND = K (the digits keep classes 0..K-1; the new output starts at zero).
Beside it a box regressor (`models.heads.BoxRegressor`) starts from scratch: detection.regressor
"scr" (one box per window, the variant the paper found better on ImageNet) or "pcr" (one box per digit
class and window, 4K outputs; a positive window trains only its class's 4, and evaluation reads class
c's box for class c's merge). The parameters are {'overfeat': the K + 1 class OverFeat's,
'regressor': ...}; the classifier's FC layers and the regressor train together in one loss (joint:
one pass of the frozen features feeds both heads), the extractor is frozen (`trainable`, and the loss
stops its gradients): on 2 CPU cores a backward pass through the convolutions would cost most of the
step, and the classifier's features already tell digits from scenes.

Training, per batch of whole images (`data.detection`: resized so the short side is input.min_size,
padded into the bucket's canvas; boxes in those pixels), at each scale of config.detection.train_scales
(the batch resized on device by scale / input.min_size, as localization):
  frozen features -> offset max-pooling -> classifier (K + 1 logits) and regressor at every offset,
  interleaved: one window per fine-grid position (`models.dense_grid.offset_heads`); or, with
  detection.train_fine_grid False, the last pool at offset 0 only: the coarse grid, whose windows
  are a quarter as many (the fast model's 2 x 2 pool) at twice the stride. The heads' cost is
  proportional to the windows, and on 2 CPU cores the fine grid made a step ~4x slower; the windows
  a coarse grid sees are the same kind of windows, so it teaches the same thing;
  each window is labelled (`window_labels`):
    class c   when it lies mostly on the image and holds >= detection.min_coverage (0.5) of the area of
              a box of class c whose long side is >= detection.min_box_fraction of the window's side
              (smaller boxes are the business of a larger scale); of several such boxes, the one it
              covers most (ties: the first);
    BACKGROUND when it lies mostly on the image and holds < detection.max_background_coverage of every
              box's area;
    IGNORE    otherwise (part of a box, or a box too small for this scale);
  negatives are chosen on the fly, per image and scale, with static shapes (`mine_negatives`): the
  detection.hard_negatives background windows of highest non-background probability (the most
  offending, under the current parameters), then detection.random_negatives more drawn uniformly among
  the other background windows; masks mark the slots that found a window;
  loss = softmax cross-entropy over all positive windows and the selected negatives (mean over them)
       + detection.box_loss_weight * the L2 loss of the regressor on the positive windows (their box's
         edges relative to the window, `ops.edges.encode_edges`; PCR: the outputs of the window's
         class; mean over them).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from overfeat_jax import checkpoint_io
from overfeat_jax.data import detection
from overfeat_jax.errors import InputSizeError
from overfeat_jax.models import dense_grid
from overfeat_jax.models.heads import BoxRegressor, build_regressor, class_edges
from overfeat_jax.models.overfeat import OverFeat, build_model, fc_names
from overfeat_jax.ops import pooling
from overfeat_jax.ops.edges import box_coverage, encode_edges
from overfeat_jax.tasks import classification
from overfeat_jax.tasks.base import Batch, LossFn, Task
from overfeat_jax.tasks.localization import init_regressor, params_template, scaled_batch

OVERFEAT, REGRESSOR = "overfeat", "regressor"  # the two parts of the task's parameters
EXTRACTOR, CLASSIFIER = "extractor", "classifier"  # OverFeat's two parts
IGNORE = -1  # window label: neither a positive nor a background window (no loss)


@dataclasses.dataclass(frozen=True)
class DetectionModel:
  """The K + 1 class OverFeat (class K = background) and the box regressor on its pooled map (SCR: 4
  outputs; PCR: 4 for each of the K digit classes, none for the background)."""
  overfeat: OverFeat
  regressor: BoxRegressor

  @property
  def background(self) -> int:
    """The background class's index (K)."""
    return self.overfeat.num_classes - 1


def model_from_config(config: ml_collections.ConfigDict) -> DetectionModel:
  """config.model with config.dataset.num_classes + 1 outputs, and config.detection.regressor's
  regressor (a PCR has outputs for the K digit classes only)."""
  overfeat = build_model(config.model, config.dataset.num_classes + 1)
  return DetectionModel(overfeat=overfeat, regressor=build_regressor(
      config.model, overfeat.arch, config.dataset.num_classes, config.detection.regressor))


def model_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a resumed run must match: the classifier's signature, with the background class."""
  return {**classification.model_signature(config), "background": True,
          "regressor": config.detection.regressor}


def architecture_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What evaluation must match: the parameters' shapes."""
  return {**classification.architecture_signature(config), "background": True,
          "regressor": config.detection.regressor}


# init_regressor and params_template are localization's: the same {'overfeat', 'regressor'} pair.


def trainable(params: Any, train_extractor: bool = False) -> Any:
  """`Task.trainable`: the classifier's FC layers and the regressor train; the extractor is frozen
  unless `train_extractor` (config.detection.train_extractor)."""
  return {OVERFEAT: {EXTRACTOR: jax.tree.map(lambda _: train_extractor, params[OVERFEAT][EXTRACTOR]),
                     CLASSIFIER: jax.tree.map(lambda _: True, params[OVERFEAT][CLASSIFIER])},
          REGRESSOR: jax.tree.map(lambda _: True, params[REGRESSOR])}


def with_background(classifier_params: Any, arch_fc_names: tuple[str, ...]) -> Any:
  """A K-class OverFeat's parameters -> K + 1 classes: the class layer (the last FC layer) gains a
  zero output K (background) after the K trained ones; everything else is the same arrays.

  classifier_params: {'extractor': ..., 'classifier': {..., last: {'kernel' [k, k, C, K] or
  [C, K] (any leading shape), 'bias' [K]}}}.
  """
  last = arch_fc_names[-1]
  layer = classifier_params[CLASSIFIER][last]
  grown = {name: jnp.concatenate([value, jnp.zeros(value.shape[:-1] + (1,), value.dtype)], axis=-1)
           for name, value in layer.items()}
  return {EXTRACTOR: classifier_params[EXTRACTOR],
          CLASSIFIER: {**classifier_params[CLASSIFIER], last: grown}}


def restore_classifier(config: ml_collections.ConfigDict) -> tuple[Any, int]:
  """(params, step) of the newest checkpoint of config.detection.classifier_workdir (K classes),
  checked against config.model's architecture and config.dataset's classes.

  Raises:
    CheckpointError: no checkpoint there, or one of another model (one line naming the workdir).
  """
  return classification.restore_named_run(config, "detection.classifier_workdir")


def restore_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
  """(params, step) of the newest intact detection checkpoint in `workdir` (self-contained).

  Raises:
    CheckpointError: no checkpoint, or one written for a different model.
  """
  return checkpoint_io.restore_params(workdir, params_template(model_from_config(config)),
                                      task_signature=architecture_signature(config))


def check_train_scales(model: DetectionModel, scales: tuple[int, ...], key: str) -> None:
  """InputSizeError when a scale is too small for the fine grid (SPEC A4)."""
  need = model.overfeat.arch.fine_min_size
  small = [s for s in scales if s < need]
  if small:
    raise InputSizeError(
        f"scale(s) {small} in config.{key} are too small for this model: the field of view is "
        f"{model.overfeat.arch.train_size} px and the fine-stride grid needs images of at least "
        f"{need} px")


def window_labels(windows: jax.Array, window_valid: jax.Array, boxes: jax.Array, box_labels: jax.Array,
                  box_valid: jax.Array, *, background: int, min_coverage: float,
                  min_box_fraction: float, max_background_coverage: float
                  ) -> tuple[jax.Array, jax.Array]:
  """Each window's training label and its regression target (module docstring: the rule).

  Args:
    windows: [B, H', W', 4] the windows, in the frame of the boxes.
    window_valid: bool [B, H', W'] windows that count (mostly on the image).
    boxes: [B, M, 4] true boxes; box_labels: int [B, M] in [0, K); box_valid: bool [B, M].
    background: the background class K.
    min_coverage: the fraction of a box's area a positive window must hold.
    min_box_fraction: a positive's box has a long side >= this times the window's (shorter) side.
    max_background_coverage: a background window holds less than this of every box's area.
  Returns:
    labels int32 [B, H', W']: the class in [0, K), `background`, or IGNORE;
    targets float32 [B, H', W', 4]: the positive's box edges relative to the window (zeros elsewhere).
  """
  coverage = box_coverage(windows[:, :, :, None, :], boxes[:, None, None, :, :])  # [B, H', W', M]
  coverage = jnp.where(box_valid[:, None, None, :], coverage, -1.0)
  side = jnp.minimum(windows[..., 2] - windows[..., 0], windows[..., 3] - windows[..., 1])  # [B, H', W']
  long_side = jnp.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])  # [B, M]
  big = long_side[:, None, None, :] >= min_box_fraction * side[..., None]  # [B, H', W', M]
  eligible = jnp.where(big, coverage, -1.0)
  best = jnp.argmax(eligible, axis=-1)  # [B, H', W'] first of the highest
  best_coverage = jnp.take_along_axis(eligible, best[..., None], axis=-1)[..., 0]
  positive = window_valid & (best_coverage >= min_coverage)
  negative = window_valid & jnp.all(coverage < max_background_coverage, axis=-1)
  classes = jnp.take_along_axis(box_labels[:, None, None, :], best[..., None], axis=-1)[..., 0]
  labels = jnp.where(positive, classes, jnp.where(negative, background, IGNORE))
  chosen = jnp.take_along_axis(boxes[:, None, None, :, :], best[..., None, None], axis=3)[..., 0, :]
  targets = jnp.where(positive[..., None], encode_edges(chosen, windows), 0.0)
  return labels.astype(jnp.int32), targets.astype(jnp.float32)


def mine_negatives(offending: jax.Array, negative: jax.Array, rng: jax.Array, *, num_hard: int,
                   num_random: int) -> tuple[jax.Array, jax.Array]:
  """Per image, a fixed number of background windows: the most offending, then random ones.

  Args:
    offending: float [B, N] each window's highest non-background score (higher: more offending).
    negative: bool [B, N] the background windows.
    rng: key for the random choice.
    num_hard, num_random: how many of each per image (static).
  Returns:
    hard, random: bool [B, N] the chosen windows (disjoint; each at most the count, fewer where an
    image has fewer background windows): hard = the num_hard background windows of highest
    `offending` (ties: the lower index), random = num_random of the other background windows drawn
    uniformly without replacement.
  """
  b, n = negative.shape

  def pick(values: jax.Array, k: int) -> jax.Array:
    k = min(k, n)
    if k == 0:
      return jnp.zeros((b, n), bool)
    top, index = jax.lax.top_k(values, k)  # [B, k]: slots with -inf found no window
    found = jnp.isfinite(top)
    return jnp.zeros((b, n), bool).at[jnp.arange(b)[:, None], index].max(found)

  hard = pick(jnp.where(negative, offending.astype(jnp.float32), -jnp.inf), num_hard)
  draw = jax.random.uniform(rng, (b, n))
  random = pick(jnp.where(negative & ~hard, draw, -jnp.inf), num_random)
  return hard, random


def detection_loss_fn(model: DetectionModel, *, train_scales: tuple[int, ...], min_size: int,
                      det_cfg: ml_collections.ConfigDict) -> LossFn:
  """The detector's loss on a detection batch (module docstring; the batch as localization's).

  Aux metrics (per image, all scales): 'positives', 'negatives' (selected), 'accuracy' of the
  selected windows, 'class_loss', 'box_loss'.
  """
  overfeat, regressor, arch = model.overfeat, model.regressor, model.overfeat.arch
  fine, train_extractor = bool(det_cfg.train_fine_grid), bool(det_cfg.train_extractor)
  rule = dict(background=model.background, min_coverage=float(det_cfg.min_coverage),
              min_box_fraction=float(det_cfg.min_box_fraction),
              max_background_coverage=float(det_cfg.max_background_coverage))

  def loss_fn(params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    features = params[OVERFEAT][EXTRACTOR]
    extractor = {"params": {EXTRACTOR: features if train_extractor else jax.lax.stop_gradient(features),
                            CLASSIFIER: params[OVERFEAT][CLASSIFIER]}}
    b = batch["image"].shape[0]
    ce, correct, count, squared, positives, negatives = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for i, scale in enumerate(train_scales):
      scale_rng = jax.random.fold_in(rng, i)
      dropout_rng, mining_rng = jax.random.split(scale_rng)

      def heads(pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = overfeat.apply(extractor, pooled, train=True, method="classify",
                                rngs={"dropout": dropout_rng})
        return logits, regressor.apply({"params": params[REGRESSOR]}, pooled)

      images, hw = scaled_batch(batch["image"], batch["size"], scale / min_size)
      if fine:
        dense_grid.check_grid_size(overfeat, images.shape[1:3])
      prepool = overfeat.apply(extractor, images, method="features")
      if fine:  # every pooling offset, interleaved: [B, H', W', K+1], [B, H', W', 4]
        logits, edges = dense_grid.offset_heads(prepool, arch.last_pool, heads)
      else:  # offset 0 only: a quarter of the windows (fast model), the network's own stride
        logits, edges = heads(pooling.max_pool(prepool, arch.last_pool))
      valid, windows = dense_grid.window_geometry(
          logits.shape[1:3], stride=arch.prepool_stride if fine else arch.coarse_stride,
          fov=arch.train_size, image_hw=hw, original_hw=batch["size"])
      labels, targets = window_labels(windows, valid, batch["boxes"], batch["box_labels"],
                                      batch["box_valid"], **rule)
      labels, logits = labels.reshape(b, -1), logits.reshape(b, -1, logits.shape[-1])  # [B, N], [B, N, K+1]
      probs = jax.lax.stop_gradient(jax.nn.softmax(logits, -1))
      offending = jnp.max(probs[..., :model.background], axis=-1)  # [B, N]
      hard, random = mine_negatives(offending, labels == model.background, mining_rng,
                                    num_hard=int(det_cfg.hard_negatives),
                                    num_random=int(det_cfg.random_negatives))
      positive = (labels >= 0) & (labels != model.background)
      selected = (positive | hard | random).astype(jnp.float32)
      safe = jnp.where(labels >= 0, labels, 0)
      ce += jnp.sum(selected * optax.softmax_cross_entropy_with_integer_labels(logits, safe))
      correct += jnp.sum(selected * (jnp.argmax(logits, -1) == safe))
      count += jnp.sum(selected)
      weight = positive.astype(jnp.float32)[..., None]
      # PCR: the positive's class's 4 outputs (a digit; other windows have no weight)
      edges = class_edges(edges.reshape(b, -1, edges.shape[-1]), jnp.where(positive, labels, 0))
      squared += jnp.sum(weight * (edges - targets.reshape(b, -1, 4)) ** 2)
      positives += jnp.sum(positive)
      negatives += jnp.sum(hard | random)
    class_loss = ce / jnp.maximum(count, 1.0)
    box_loss = squared / jnp.maximum(positives, 1.0)
    loss = class_loss + float(det_cfg.box_loss_weight) * box_loss
    return loss, {"class_loss": class_loss, "box_loss": box_loss,
                  "accuracy": correct / jnp.maximum(count, 1.0),
                  "positives": positives / b, "negatives": negatives / b}

  return loss_fn


def training_task(config: ml_collections.ConfigDict) -> Task:
  """The detector on config.dataset's training split, starting from the classification run of
  config.detection.classifier_workdir.

  Raises:
    CheckpointError: that run has no checkpoint, or one of another model.
    InputSizeError: a training scale smaller than the fine grid's input.
    ConfigError / DataError: as localization's (batch size, dataset without boxes, buckets).
  """
  model = model_from_config(config)
  check_train_scales(model, tuple(config.detection.train_scales), "detection.train_scales")
  classifier_params, _ = restore_classifier(config)
  start = with_background(classifier_params, fc_names(model.overfeat.arch))
  loaders = {}

  def make_loader(process_index: int, process_count: int) -> Any:
    key = (process_index, process_count)
    if key not in loaders:
      loaders[key] = detection.detection_train_loader(config, process_index=process_index,
                                                      process_count=process_count)
    return loaders[key]

  steps_per_epoch = make_loader(jax.process_index(), jax.process_count()).steps_per_epoch

  def init_params(rng: jax.Array) -> Any:
    return {OVERFEAT: start, REGRESSOR: init_regressor(model, rng)}

  return Task(init_params=init_params,
              loss_fn=detection_loss_fn(model, train_scales=tuple(config.detection.train_scales),
                                        min_size=config.input.min_size, det_cfg=config.detection),
              make_loader=make_loader,
              steps_per_epoch=steps_per_epoch,
              signature=model_signature(config),
              trainable=functools.partial(trainable,
                                          train_extractor=bool(config.detection.train_extractor)))
