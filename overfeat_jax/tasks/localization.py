"""The OverFeat localization task (SPEC A5): a box regressor trained on a frozen classifier.

It starts from a classification run (config.localization.classifier_workdir): that run's newest
checkpoint gives the feature extractor and the classifier, which stay frozen. The task's parameters
are {'overfeat': the classifier's parameters (frozen), 'regressor': the BoxRegressor's (trained)}, so
a localization checkpoint holds everything evaluation needs. Freezing is the loop's business
(`Task.trainable`: the optimizer leaves the 'overfeat' leaves bit for bit as they are), and the loss
stops their gradients, so no backward pass runs through the feature extractor.

Training (SPEC A5), per batch of whole images (`data.detection`: each image resized, aspect kept, so
its short side is input.min_size, padded into its shape bucket's canvas, boxes padded + valid mask):
  for each training scale s (config.localization.train_scales, short sides):
    resize the batch on device by s / input.min_size;
    frozen features -> offset max-pooling -> the regressor at every offset, interleaved: one
      prediction per fine-grid window (`models.dense_grid.offset_heads`, the classifier's grid);
    a window trains when it lies mostly on the image and holds >= min_coverage (0.5) of a true box's
      area (the box it covers most; ties: the first); its target is that box's edges relative to the
      window (`ops.edges.encode_edges`), and PCR trains the true class's 4 outputs;
  loss = sum over the selected windows of all scales of the squared error of the 4 edges, divided by
  the number of selected windows (an L2 loss per window, averaged).
Windows and boxes are in the batch images' pixels, so the targets do not depend on the scale.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from overfeat_jax import checkpoint_io
from overfeat_jax.data import detection
from overfeat_jax.errors import InputSizeError
from overfeat_jax.models import dense_grid
from overfeat_jax.models.heads import BoxRegressor, build_regressor, class_edges
from overfeat_jax.models.overfeat import OverFeat
from overfeat_jax.ops import resize
from overfeat_jax.ops.edges import box_coverage, encode_edges
from overfeat_jax.tasks import classification
from overfeat_jax.tasks.base import Batch, LossFn, Task

OVERFEAT, REGRESSOR = "overfeat", "regressor"  # the two parts of the task's parameters


@dataclasses.dataclass(frozen=True)
class LocalizationModel:
  """The frozen classifier and the box regressor on its pooled map."""
  overfeat: OverFeat
  regressor: BoxRegressor


def model_from_config(config: ml_collections.ConfigDict) -> LocalizationModel:
  """The OverFeat of config.model and the regressor of config.localization.regressor on it."""
  overfeat = classification.model_from_config(config)
  regressor = build_regressor(config.model, overfeat.arch, config.dataset.num_classes,
                              config.localization.regressor)
  return LocalizationModel(overfeat=overfeat, regressor=regressor)


def model_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a resumed run must match: the classifier's signature and the regressor kind."""
  return {**classification.model_signature(config), "regressor": config.localization.regressor}


def architecture_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What evaluation must match: the parameters' shapes (the architecture keys, K, the regressor)."""
  return {**classification.architecture_signature(config), "regressor": config.localization.regressor}


def init_regressor(model: LocalizationModel, rng: jax.Array) -> Any:
  """The regressor's parameters from `rng`, for the classifier's pooled map at the training size
  (also the detection task's: any model with `overfeat` and `regressor`)."""
  arch = model.overfeat.arch
  pooled = jnp.zeros((1, arch.fc_kernel, arch.fc_kernel, arch.convs[-1].features), jnp.float32)
  return model.regressor.init(rng, pooled)["params"]


def params_template(model: LocalizationModel) -> Any:
  """{'overfeat': ..., 'regressor': ...} as `jax.ShapeDtypeStruct`s, allocating nothing."""
  return {OVERFEAT: classification.params_template(model.overfeat),
          REGRESSOR: jax.eval_shape(lambda rng: init_regressor(model, rng), jax.random.key(0))}


def trainable(params: Any) -> Any:
  """`Task.trainable`: the regressor trains, the classifier ('overfeat') is frozen."""
  return {OVERFEAT: jax.tree.map(lambda _: False, params[OVERFEAT]),
          REGRESSOR: jax.tree.map(lambda _: True, params[REGRESSOR])}


def restore_classifier(config: ml_collections.ConfigDict) -> tuple[Any, int]:
  """(params, step) of the newest checkpoint of config.localization.classifier_workdir, checked
  against config.model's architecture and config.dataset's classes.

  Raises:
    CheckpointError: no checkpoint there, or one of another model (one line naming the workdir).
  """
  return classification.restore_named_run(config, "localization.classifier_workdir")


def restore_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
  """(params, step) of the newest intact localization checkpoint in `workdir` (self-contained:
  {'overfeat', 'regressor'}), checked against the config's architecture and regressor kind.

  Raises:
    CheckpointError: no checkpoint, or one written for a different model.
  """
  return checkpoint_io.restore_params(workdir, params_template(model_from_config(config)),
                                      task_signature=architecture_signature(config))


def check_train_scales(model: LocalizationModel, config: ml_collections.ConfigDict) -> None:
  """InputSizeError when a training scale is too small for the fine grid (SPEC A4)."""
  need = model.overfeat.arch.fine_min_size
  small = [s for s in config.localization.train_scales if s < need]
  if small:
    raise InputSizeError(
        f"training scale(s) {small} in config.localization.train_scales are too small for this model: "
        f"the field of view is {model.overfeat.arch.train_size} px and the fine-stride grid needs "
        f"images of at least {need} px")


def scaled_batch(images: jax.Array, image_hw: jax.Array, factor: float) -> tuple[jax.Array, jax.Array]:
  """A padded batch resized by `factor`: [B, H, W, 3], sizes int [B, 2] -> [B, ceil(H f), ceil(W f),
  3] with each image resized to round(size * f) (>= 1) in its top-left corner, and those sizes."""
  _, h, w, _ = images.shape
  shape = (math.ceil(h * factor), math.ceil(w * factor))
  new_hw = jnp.clip(jnp.round(jnp.asarray(image_hw, jnp.float32) * factor), 1,
                    jnp.asarray(shape, jnp.float32)).astype(jnp.int32)
  return resize.resize_into(images, image_hw, new_hw, shape), new_hw


def regression_targets(windows: jax.Array, window_valid: jax.Array, boxes: jax.Array,
                       box_labels: jax.Array, box_valid: jax.Array, min_coverage: float
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Which windows train, on which box, and their targets (SPEC A5: >= 50% of the box's area).

  Args:
    windows: [B, H', W', 4] the windows, in the frame of the boxes.
    window_valid: bool [B, H', W'] windows that count (mostly on the image).
    boxes: [B, M, 4] true boxes; box_labels: int [B, M]; box_valid: bool [B, M] (padding False).
    min_coverage: the fraction of a box's area a window must hold.
  Returns:
    targets float32 [B, H', W', 4]: the chosen box's edges relative to the window (zeros where not
      selected); classes int32 [B, H', W']: its class (0 where not selected); selected bool
      [B, H', W']: the window is valid and holds >= min_coverage of some valid box (of several, the
      one it covers most; ties: the first).
  """
  coverage = box_coverage(windows[:, :, :, None, :], boxes[:, None, None, :, :])  # [B, H', W', M]
  coverage = jnp.where(box_valid[:, None, None, :], coverage, -1.0)
  best = jnp.argmax(coverage, axis=-1)  # [B, H', W'] first of the highest
  best_coverage = jnp.take_along_axis(coverage, best[..., None], axis=-1)[..., 0]
  selected = window_valid & (best_coverage >= min_coverage)
  chosen = jnp.take_along_axis(boxes[:, None, None, :, :], best[..., None, None], axis=3)[..., 0, :]
  targets = jnp.where(selected[..., None], encode_edges(chosen, windows), 0.0)
  classes = jnp.where(selected, jnp.take_along_axis(box_labels[:, None, None, :], best[..., None],
                                                    axis=-1)[..., 0], 0)
  return targets.astype(jnp.float32), classes.astype(jnp.int32), selected


def localization_loss_fn(model: LocalizationModel, *, train_scales: tuple[int, ...], min_size: int,
                         min_coverage: float) -> LossFn:
  """The regressor's loss on a detection batch (module docstring).

  The batch: {'image': [B, Hb, Wb, 3] normalised canvases, 'size': int [B, 2] the images' sizes in
  them (short side min_size), 'boxes': [B, M, 4] in those images' pixels, 'box_labels': [B, M],
  'box_valid': [B, M]} (`data.detection`). Aux metrics: 'windows', the mean number of selected
  windows per image (all scales); 'window_loss', the loss of predicting every window itself (t = 0),
  the level to beat.
  """
  overfeat, regressor, arch = model.overfeat, model.regressor, model.overfeat.arch

  def loss_fn(params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    del rng  # no dropout in the regressor; the classifier is frozen
    frozen = {"params": jax.lax.stop_gradient(params[OVERFEAT])}  # no backward pass through it

    def head(pooled: jax.Array) -> jax.Array:
      return regressor.apply({"params": params[REGRESSOR]}, pooled)

    squared, zero_squared, count = 0.0, 0.0, 0.0
    for scale in train_scales:
      images, hw = scaled_batch(batch["image"], batch["size"], scale / min_size)
      dense_grid.check_grid_size(overfeat, images.shape[1:3])
      prepool = overfeat.apply(frozen, images, method="features")
      outputs = dense_grid.offset_heads(prepool, arch.last_pool, head)  # [B, H', W', 4 or 4K]
      valid, windows = dense_grid.window_geometry(
          outputs.shape[1:3], stride=arch.prepool_stride, fov=arch.train_size, image_hw=hw,
          original_hw=batch["size"])  # windows in the batch images' pixels, as the boxes
      targets, classes, selected = regression_targets(
          windows, valid, batch["boxes"], batch["box_labels"], batch["box_valid"], min_coverage)
      edges = class_edges(outputs, classes)  # [B, H', W', 4]
      weight = selected[..., None].astype(jnp.float32)
      squared += jnp.sum(weight * (edges - targets) ** 2)
      zero_squared += jnp.sum(weight * targets ** 2)
      count += jnp.sum(weight)
    per_window = 1.0 / jnp.maximum(count, 1.0)  # a batch without any selected window: loss 0
    return squared * per_window, {"windows": count / batch["image"].shape[0],
                                  "window_loss": zero_squared * per_window}

  return loss_fn


def training_task(config: ml_collections.ConfigDict) -> Task:
  """The regressor on config.dataset's training split, starting from the classification run of
  config.localization.classifier_workdir (frozen).

  Raises:
    CheckpointError: that run has no checkpoint, or one of another model.
    InputSizeError: a training scale smaller than the fine grid's input.
    ConfigError: a batch size that does not split over the processes.
    DataError: the dataset cannot be loaded or has no boxes, or no shape bucket holds a whole batch.
  """
  model = model_from_config(config)
  check_train_scales(model, config)
  classifier_params, _ = restore_classifier(config)
  loaders = {}

  def make_loader(process_index: int, process_count: int) -> Any:
    key = (process_index, process_count)
    if key not in loaders:  # each one reads the whole split once (its boxes and sizes)
      loaders[key] = detection.detection_train_loader(config, process_index=process_index,
                                                      process_count=process_count)
    return loaders[key]

  steps_per_epoch = make_loader(jax.process_index(), jax.process_count()).steps_per_epoch

  def init_params(rng: jax.Array) -> Any:
    return {OVERFEAT: classifier_params, REGRESSOR: init_regressor(model, rng)}

  return Task(init_params=init_params,
              loss_fn=localization_loss_fn(model, train_scales=tuple(config.localization.train_scales),
                                           min_size=config.input.min_size,
                                           min_coverage=config.localization.min_coverage),
              make_loader=make_loader,
              steps_per_epoch=steps_per_epoch,
              signature=model_signature(config),
              trainable=trainable)
