"""OverFeat detection evaluation (SPEC A6): dense boxes at every scale, per-class greedy merge, COCO/VOC.

Per eval batch (`data.detection.detection_eval_loader`: whole images, short side input.min_size,
padded into their bucket's canvas), one jitted function:
  for each scale of config.detection.test_scales (short sides): the batch resized on device by
    scale / input.min_size; the fine grid (`models.dense_grid`, every pooling offset) with the
    K + 1 class logits and the regressor's box at every position (PCR: one per digit class);
    softmax;
  per image and digit class c (never the background), all scales together: the windows whose
    probability of c is >= detection.min_window_score (with detection.top_class_only, only where c
    is the window's most probable digit) (at most detection.max_boxes_per_class, the most
    probable), each with its regressed box (PCR: its box for class c) and that probability as its
    score;
  `ops.merge.greedy_merge` of those boxes with eval.merge_score, eval.merge_threshold and
    eval.merge_average: every merged box, with the summed scores of the windows that went into it,
    is a detection;
  with detection.merged_nms_iou < 1, per-class NMS of the merged boxes (`ops.nms.batched_nms`): one
    whose IoU with a more confident one of its class is above it is dropped;
  the detection.max_detections detections of highest confidence per image.
The boxes are in the batch's pixels; `evaluation.detection.DetectionEvaluator` maps them to the
original images and computes COCO AP@[.5:.95], AP@0.5, VOC07 AP and the per-class table, written to
eval/metrics.json (and eval/detections.json). An image without digits gives the detections its
windows produce (few and of low confidence once trained) and counts as any other.

Pictures (config.eval.pictures, a second pass after the metrics): per image, the detections with
their classes and confidences (those above PICTURE_MIN_SCORE), the true boxes, and per test scale
the map of the highest digit probability of every fine-grid window.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from overfeat_jax.data import detection as detection_data
from overfeat_jax.data import pipeline
from overfeat_jax.data.class_names import class_names
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.evaluation import outputs, visualize
from overfeat_jax.evaluation.detection import DetectionEvaluator
from overfeat_jax.models import dense_grid
from overfeat_jax.ops.merge import greedy_merge
from overfeat_jax.ops.nms import PAD_INDEX, batched_nms
from overfeat_jax.tasks import detection as task
from overfeat_jax.tasks.localization import scaled_batch

PICTURE_MIN_SCORE = 0.5  # pictures show detections of at least this confidence (summed probabilities)


def scale_outputs(model: task.DetectionModel, params: Any, images: jax.Array, image_hw: jax.Array, *,
                  scale: int, min_size: int) -> tuple[jax.Array, jax.Array, jax.Array, dense_grid.DenseGrid]:
  """One test scale of a batch [B, Hb, Wb, 3] (images of sizes image_hw [B, 2] at short side
  min_size): (probs [B, N, K + 1], valid [B, N], boxes regressed in batch pixels, [B, N, 4] (SCR) or
  [B, N, K, 4] (PCR: one per digit class); the grid)."""
  scaled, hw = scaled_batch(images, image_hw, scale / min_size)
  grid = dense_grid.dense_grid(
      model.overfeat, {"params": params[task.OVERFEAT]}, scaled, image_hw=hw, original_hw=image_hw,
      regressor=lambda pooled: model.regressor.apply({"params": params[task.REGRESSOR]}, pooled))
  b = images.shape[0]
  probs = jax.nn.softmax(grid.logits.astype(jnp.float32), -1).reshape(b, -1, grid.logits.shape[-1])
  boxes = dense_grid.regressed_boxes(grid)  # [B, H', W', 1 or K, 4]
  boxes = boxes.reshape((b, -1, 4) if boxes.shape[-2] == 1 else (b, -1) + boxes.shape[-2:])
  return probs, grid.valid.reshape(b, -1), boxes, grid


def image_detections(probs: jax.Array, valid: jax.Array, boxes: jax.Array, *, background: int,
                     min_window_score: float, max_boxes_per_class: int, threshold: float, score: str,
                     max_detections: int, top_class_only: bool = False,
                     merged_nms_iou: float = 1.0, average: str = "pair") -> dict[str, jax.Array]:
  """One image's detections from its windows of every scale (module docstring).

  Args:
    probs: [N, K + 1] softmax (class `background` = K); valid: bool [N]; boxes: [N, 4] (one box per
      window, SCR) or [N, K, 4] (one per window and digit class, PCR).
    min_window_score, max_boxes_per_class: which windows enter a class's merge.
    top_class_only: a window enters only the merge of its most probable digit class.
    threshold, score, average: the greedy merge's (`ops.merge.greedy_merge`).
    merged_nms_iou: < 1: per-class NMS of the merged boxes at this IoU; 1: none.
    max_detections: D.
  Returns:
    {"boxes" [D, 4], "scores" [D] (merged confidence), "classes" int32 [D], "valid" bool [D]}, by
    confidence descending; padding rows zero and invalid.
  """
  n = probs.shape[0]
  per_class = min(max_boxes_per_class, n)
  best = jnp.argmax(probs[:, :background], axis=-1)  # [N] each window's most probable digit

  def one_class(c: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    p = probs[:, c]
    enters = valid & (p >= min_window_score) & ((best == c) | (not top_class_only))
    keyed = jnp.where(enters, p, -jnp.inf)
    top, index = jax.lax.top_k(keyed, per_class)  # the most probable windows first
    class_boxes = boxes if boxes.ndim == 2 else boxes[:, c]  # [N, 4]
    return greedy_merge(class_boxes[index], p[index], jnp.isfinite(top), threshold, score=score,
                        average=average)

  merged, confidence, merged_valid = jax.vmap(one_class)(jnp.arange(background))  # [K, C, ...]
  classes = jnp.broadcast_to(jnp.arange(background, dtype=jnp.int32)[:, None], confidence.shape)
  keyed = jnp.where(merged_valid, confidence, -jnp.inf).reshape(-1)
  d = min(max_detections, keyed.shape[0])
  if merged_nms_iou < 1.0:
    # The kept ones by confidence descending, as top_k orders them; PAD_INDEX slots are not found.
    index = batched_nms(merged.reshape(-1, 4), keyed, classes.reshape(-1), merged_nms_iou, d,
                        valid=merged_valid.reshape(-1))
    found = index != PAD_INDEX
    index = jnp.where(found, index, 0)
    top = jnp.where(found, keyed[index], 0.0)
  else:
    top, index = jax.lax.top_k(keyed, d)
    found = jnp.isfinite(top)
  out = {"boxes": jnp.where(found[:, None], merged.reshape(-1, 4)[index], 0.0),
         "scores": jnp.where(found, top, 0.0), "classes": jnp.where(found, classes.reshape(-1)[index], 0),
         "valid": found}
  pad = max_detections - d
  if pad:
    out = {k: jnp.pad(v, ((0, pad),) + ((0, 0),) * (v.ndim - 1)) for k, v in out.items()}
  return out


def predict(model: task.DetectionModel, config: ml_collections.ConfigDict, params: Any,
            images: jax.Array, image_hw: jax.Array) -> dict[str, jax.Array]:
  """A batch's detections ([B, D, ...], `image_detections`) from all test scales; jit-able."""
  det, ev = config.detection, config.eval
  per_scale = [scale_outputs(model, params, images, image_hw, scale=int(s),
                             min_size=int(config.input.min_size))[:3] for s in det.test_scales]
  probs, valid, boxes = (jnp.concatenate(parts, axis=1) for parts in zip(*per_scale))
  per_image = functools.partial(
      image_detections, background=model.background, min_window_score=float(det.min_window_score),
      max_boxes_per_class=int(det.max_boxes_per_class), threshold=float(ev.merge_threshold),
      score=ev.merge_score, average=ev.merge_average, max_detections=int(det.max_detections),
      top_class_only=bool(det.top_class_only), merged_nms_iou=float(det.merged_nms_iou))
  return jax.vmap(per_image)(probs, valid, boxes)


def check_eval_sizes(model: task.DetectionModel, config: ml_collections.ConfigDict) -> None:
  """InputSizeError before compiling anything when a test scale is too small for the fine grid."""
  task.check_train_scales(model, tuple(config.detection.test_scales), "detection.test_scales")


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = True) -> dict:
  """Restores the newest detection checkpoint in `workdir` and evaluates it on
  config.dataset.eval_split (module docstring). `config` must have passed `validate_config`.

  Returns:
    DetectionEvaluator's result ({"coco": {"AP", "AP50", ...}, "voc": {"mAP07", "mAP"},
    "per_class": ..., ...}) with "task", "checkpoint_step", "merge_score", "merge_threshold",
    "test_scales", "split" and "seconds" first; written to `workdir/eval/metrics.json`.
  Raises:
    CheckpointError: no intact checkpoint, or one of another model. InputSizeError / DataError /
    ConfigError: a config that cannot be evaluated. OverfeatError: a file could not be written.
  """
  model = task.model_from_config(config)
  check_eval_sizes(model, config)
  params, step = task.restore_params(config, workdir)
  batches = detection_data.detection_eval_loader(config, process_index=jax.process_index(),
                                                 process_count=jax.process_count())
  spec = get_dataset_spec(config.dataset.name)
  names = class_names(pipeline.load_source(config.dataset, config.dataset.eval_split), spec)
  step_fn = jax.jit(functools.partial(predict, model, config))
  start, seen = time.time(), [0]

  def predict_fn(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    out = jax.device_get(step_fn(params, batch["image"], batch["size"]))
    seen[0] += int(np.sum(batch["valid"]))
    if verbose and (seen[0] == batches.num_examples or seen[0] % 200 < len(batch["valid"])):
      print(f"eval: {seen[0]}/{batches.num_examples} images, "
            f"{seen[0] / max(time.time() - start, 1e-9):.1f} img/s", flush=True)
    return out

  extra = {"task": "detection", "checkpoint_step": int(step), "dataset": config.dataset.name,
           "split": config.dataset.eval_split, "merge_score": config.eval.merge_score,
           "merge_threshold": float(config.eval.merge_threshold),
           "merge_average": config.eval.merge_average, "regressor": config.detection.regressor,
           "test_scales": [int(s) for s in config.detection.test_scales]}
  evaluator = DetectionEvaluator(names)
  writer = workdir if jax.process_index() == 0 else None
  if verbose:
    print(f"checkpoint step {step}: OverFeat detection, test scales {extra['test_scales']}, merge "
          f"score {extra['merge_score']!r} threshold {extra['merge_threshold']:g} average "
          f"{extra['merge_average']!r}", flush=True)
  result = evaluator.run(predict_fn, batches, workdir=writer, verbose=verbose, extra=extra)
  result["seconds"] = round(time.time() - start, 1)
  if writer is not None and config.eval.pictures:
    write_pictures(config, workdir, model, params, names, verbose=verbose)
  return result


def _unnormalise(image: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """A normalised [H, W, 3] canvas back to uint8 RGB."""
  pixels = (image * np.asarray(config.input.std) + np.asarray(config.input.mean)) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def picture_outputs(model: task.DetectionModel, config: ml_collections.ConfigDict, params: Any,
                     images: jax.Array, image_hw: jax.Array) -> dict[str, Any]:
  """The detections of a batch (`predict`) and, per test scale, the highest digit probability of each
  window ("maps" [B, H', W']) with the windows' validity ("map_valid"): what the pictures and the
  predictions (`evaluation.prediction`) show."""
  out = predict(model, config, params, images, image_hw)
  out["maps"], out["map_valid"] = [], []
  for s in config.detection.test_scales:
    grid = scale_outputs(model, params, images, image_hw, scale=int(s),
                         min_size=int(config.input.min_size))[3]
    probs = jax.nn.softmax(grid.logits.astype(jnp.float32), -1)
    out["maps"].append(jnp.max(probs[..., :model.background], axis=-1))
    out["map_valid"].append(grid.valid)
  return out


def detection_panels(image: np.ndarray, predictions: dict[str, Any], truth: dict[str, Any] | None, *,
                     names: tuple[str, ...], scales: list[int], min_size: int, stride: int,
                     fov: int) -> tuple[list[Any], list[str]]:
  """One image's panels (module docstring) and titles; everything in the batch's pixels.

  image: [H, W, 3] uint8 (the resized image); predictions: `picture_outputs` of the image (batch
  axis removed); truth: {"boxes" [M, 4], "box_labels" [M], "box_valid" [M]}, or None for an image
  without ground truth (a prediction: no ground-truth panel).
  """
  keep = np.asarray(predictions["valid"], bool) & (np.asarray(predictions["scores"]) >= PICTURE_MIN_SCORE)
  panels, titles = [], []
  if truth is not None:
    panels.append(visualize.draw_detections(image, truth["boxes"], truth["box_labels"], None, names,
                                            valid=truth["box_valid"], title="true boxes"))
    titles.append("ground truth")
  panels.append(visualize.draw_detections(image, predictions["boxes"], predictions["classes"],
                                          predictions["scores"], names, valid=keep,
                                          title=f"{int(keep.sum())} detections >= {PICTURE_MIN_SCORE:g}"))
  titles.append("detections (merged, all scales)")
  for s, scale in enumerate(scales):
    factor = scale / min_size  # the map's windows are in the scaled image's pixels
    panels.append(visualize.draw_score_map(
        image, predictions["maps"][s], stride=stride / factor, offset=fov / 2 / factor,
        valid=predictions["map_valid"][s], vmin=0.0, vmax=1.0, title="max digit probability"))
    titles.append(f"scale {scale}")
  return panels, titles


def _pictures(config: ml_collections.ConfigDict, model: task.DetectionModel, params: Any,
              names: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
  """(name, picture) of each of the first config.eval.pictures images of the eval loader."""
  batches = detection_data.detection_eval_loader(config)
  fn = jax.jit(functools.partial(picture_outputs, model, config))
  arch = model.overfeat.arch
  scales = [int(s) for s in config.detection.test_scales]
  count = 0
  for batch in batches:
    out = jax.device_get(fn(params, batch["image"], batch["size"]))
    for i in np.flatnonzero(batch["valid"]):
      if count >= config.eval.pictures:
        return
      h, w = (int(v) for v in batch["size"][i])
      image = _unnormalise(np.asarray(batch["image"][i, :h, :w]), config)
      predictions = jax.tree.map(lambda x: np.asarray(x)[i], out)
      truth = {k: batch[k][i] for k in ("boxes", "box_labels", "box_valid")}
      panels, titles = detection_panels(image, predictions, truth, names=names, scales=scales,
                                        min_size=int(config.input.min_size),
                                        stride=arch.prepool_stride, fov=arch.train_size)
      yield f"{int(batch['image_id'][i]):05d}", visualize.panel_grid(panels, ncols=len(panels),
                                                                    titles=titles)
      count += 1


def write_pictures(config: ml_collections.ConfigDict, workdir: str, model: task.DetectionModel,
                   params: Any, names: tuple[str, ...], *, verbose: bool = True) -> list[str]:
  """Writes the pictures of the first config.eval.pictures eval images to `workdir/eval/pictures/`.

  Raises:
    WorkdirError: a picture cannot be written (names the file).
  """
  return outputs.write_pictures(workdir, _pictures(config, model, params, names), verbose=verbose)


def scalars(result: dict[str, Any]) -> dict[str, float]:
  """The logged metrics: COCO AP@0.5 first, then AP@[.5:.95] and the VOC07 mean AP (fractions)."""
  return {"eval/AP50": float(result["coco"]["AP50"]), "eval/AP": float(result["coco"]["AP"]),
          "eval/mAP07": float(result["voc"]["mAP07"])}


def summary(result: dict[str, Any]) -> str:
  """The headline in words."""
  return (f"detection AP@0.5 {100 * result['coco']['AP50']:.2f}%, AP@[.5:.95] "
          f"{100 * result['coco']['AP']:.2f}%, VOC07 mAP {100 * result['voc']['mAP07']:.2f}% on "
          f"{result['num_images']} images of {result['split']}")
