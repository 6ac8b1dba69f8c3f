"""Predictions of a trained model on one's own images: the library side of `overfeat_jax.predict`.

Each image goes the way an image of the eval split goes in `evaluate.py`, through the same code:
  - classification (config.task): the whole image in its shape bucket (`transforms.EvalTransform`),
    the dense fine-stride grid at every scale of eval.multi_scales, per scale the softmax at each
    position reduced by eval.spatial_reduce over the positions that count, averaged over the scales:
    the Table 2 row "N scales, fine stride", evaluate.py's headline row
    (`classification_pictures.multi_scale_maps`);
  - localization: the same canvases and grids with the box regressor; per class the greedy merge of
    the boxes of all scales (`localize.merged_guesses` via `localization_pictures.picture_predictions`),
    the (class, box) guesses ranked by merged confidence, as the localization table's "N scales" row;
  - detection (OverFeat): the detection canvas (`data.detection.DetectionTransform`: short side
    input.min_size), the fine grid at every detection.test_scales scale, the per-class merge
    (`detection_overfeat.predict`);
  - faster_rcnn: the same canvas, `tasks.faster_rcnn.make_predict_fn` and `detections_to_dicts`.

A prediction is a plain JSON-ready dict:
  image: the file as given (None for an array); image_size: [H, W] of the image read;
  task: config.task; checkpoint_step: the step of the parameters (None when not known);
  labels: [n] class ids in [0, K); names: [n] their names (`data.class_names.dataset_class_names`:
    the dataset's ClassLabel names, "0".."9" for the digits, the WordNet ids for imagenet2012);
  scores: [n] floats, best first:
    classification: the multi-scale score of each of the top-k classes (the mean over scales of the
      spatial max of the softmax: what the evaluation ranks by; with spatial_reduce "max" they may
      sum to more than 1 over the classes, since each class takes its own best position);
    localization / detection: the merged confidence, the sum of the probabilities of the windows
      whose boxes went into the box (so it may exceed 1);
    faster_rcnn: the detector's class probability;
  probabilities (classification only): [n] the scores divided by their sum over all K classes, a
    distribution with the same order (equal to the scores when spatial_reduce is "mean");
  boxes (all but classification): [n, 4] (x1, y1, x2, y2) in pixels of the original image, clipped
    to it; no padding (only the boxes the model produced).
n is min(top_k, K) classes for classification, the valid guesses among top_k for localization, and
every detection (at most top_k when given) for the detectors.

`Predictor(config, params)` holds the model, its jitted functions (one per shape bucket) and the class
names, so that a notebook predicts image after image without restoring or compiling again;
`Predictor.from_workdir(config, workdir)` restores the newest intact checkpoint first.
`predict_files(config, workdir, paths, ...)` is the command: every file read and size-checked before
the checkpoint is restored, then one JSON line per image on stdout and, with `out_dir`, a picture per
image (the evaluation pictures' panels, `<out_dir>/<image stem>_prediction.png`) and
`<out_dir>/predictions.jsonl`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from overfeat_jax import checkpoint_io, files, shipped_configs, tasks
from overfeat_jax.config import validate_config
from overfeat_jax.data import buckets, transforms
from overfeat_jax.data.class_names import dataset_class_names
from overfeat_jax.data.detection import DetectionTransform
from overfeat_jax.data.image_files import read_image
from overfeat_jax.data.registry import DatasetSpec
from overfeat_jax.errors import ConfigError, DataError, InputSizeError
from overfeat_jax.evaluation import (classification, classification_pictures, detection_overfeat,
                                     faster_rcnn, feature_export, localization, localization_pictures,
                                     visualize)
from overfeat_jax.models.faster_rcnn import smallest_input
from overfeat_jax.ops.boxes import clip_boxes
from overfeat_jax.tasks import classification as classification_task
from overfeat_jax.tasks import detection as detection_task
from overfeat_jax.tasks import faster_rcnn as faster_rcnn_task
from overfeat_jax.tasks import localization as localization_task

DEFAULT_TOP_K = 5  # classes (classification) and guesses (localization) when top_k is None
PREDICTIONS_FILE = "predictions.jsonl"  # in out_dir, beside the pictures
PICTURE_SUFFIX = "_prediction.png"  # <image stem><this>: never the image itself, even with --out at its side


def load_config(config: ml_collections.ConfigDict | str) -> ml_collections.ConfigDict:
  """A ConfigDict as it is, or the config file / shipped config a string names ('quickstart').

  Raises:
    ConfigError: no such file or shipped config.
  """
  if isinstance(config, ml_collections.ConfigDict):
    return config
  path = shipped_configs.resolve(str(config))
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist (shipped configs, by name: "
                      f"{', '.join(shipped_configs.names()) or 'none found'})")
  return shipped_configs.load(path)


def smallest_image(config: ml_collections.ConfigDict) -> tuple[int, str]:
  """(side, what it is): an image's height and width must be at least `side` for config's model: the
  OverFeat network's field of view, or the smallest input Faster R-CNN's backbone maps to a cell."""
  if config.task == "faster_rcnn":
    backbone = faster_rcnn_task.backbone_from_config(config)
    side = smallest_input(backbone)
    return side, f"the smallest input {side}x{side} of the {backbone.name} backbone"
  arch = classification_task.model_from_config(config).arch
  return arch.train_size, f"the field of view {arch.train_size}x{arch.train_size} of the {arch.name} network"


def check_image_size(config: ml_collections.ConfigDict, image_hw: Sequence[int], name: str) -> None:
  """InputSizeError naming `name` and both sizes when an (H, W) image is below `smallest_image`."""
  side, what = smallest_image(config)
  h, w = (int(v) for v in image_hw)
  if h < side or w < side:
    raise InputSizeError(f"image {name}: {h}x{w} is smaller than {what}")


def _image_spec(config: ml_collections.ConfigDict) -> DatasetSpec:
  """A spec of records that hold an image and nothing else (no label, no boxes)."""
  return DatasetSpec(name=config.dataset.name, num_classes=config.dataset.num_classes, label_key=None)


def _to_list(values: Any) -> list:
  """numpy -> nested Python lists of floats / ints (JSON)."""
  return np.asarray(values).tolist()


class Predictor:
  """A model of `config` with restored `params`, ready to predict on one image at a time.

  Args:
    config: a validated config (its task, model, eval / detection / faster_rcnn settings).
    params: the task's parameters (`tasks.get_task(config).restore_params`).
    step: the checkpoint's step, reported in each prediction (None: not known).
    names: the K class names; default `dataset_class_names(config.dataset)`.
  Raises:
    ConfigError / InputSizeError: settings the evaluation would refuse (e.g. a test scale below the
      fine grid).
  """

  def __init__(self, config: ml_collections.ConfigDict, params: Any, *, step: int | None = None,
               names: Sequence[str] | None = None):
    validate_config(config)
    self.config, self.step = config, step
    self.names = tuple(names) if names is not None else dataset_class_names(config.dataset)
    if len(self.names) != config.dataset.num_classes:
      raise ConfigError(f"{len(self.names)} class names for config.dataset.num_classes="
                        f"{config.dataset.num_classes}")
    # One image at a time on the first device: the restored parameters' copy there (restore replicates
    # them over every device), as the evaluation pictures do.
    self.params = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, params)
    self.task = config.task
    self._fns: dict[Any, Any] = {}  # bucket index (or None) -> its jitted function
    if self.task == "classification":
      self.model = classification_task.model_from_config(config)
      classification.check_eval_sizes(self.model, config)
    elif self.task == "localization":
      self.model = localization_task.model_from_config(config)
      localization.check_eval_sizes(self.model, config)
    elif self.task == "detection":
      self.model = detection_task.model_from_config(config)
      detection_overfeat.check_eval_sizes(self.model, config)
    elif self.task == "faster_rcnn":
      self.model = faster_rcnn_task.model_from_config(config)
      self.config = faster_rcnn_task.test_input_config(config)  # images at the test sizes
      self._extra_size_configs = faster_rcnn_task.extra_test_sizes(config)
    else:
      tasks.get_task(config)  # the error naming the known tasks
      raise ConfigError(f"no prediction for task {self.task!r}")

  @classmethod
  def from_workdir(cls, config: ml_collections.ConfigDict | str, workdir: str) -> Predictor:
    """The Predictor of the newest intact checkpoint in `workdir` (a config or a config's name).

    Raises:
      CheckpointError: no intact checkpoint, or one of another model.
    """
    config = load_config(config)
    validate_config(config)
    params, step = tasks.get_task(config).restore_params(config, workdir)
    return cls(config, params, step=step)

  # ---------------------------------------------------------------------------------------------
  # Canvases: the evaluation's own per-example transforms on a record that holds only the image.

  def _eval_batch(self, image: np.ndarray) -> tuple[int, dict[str, np.ndarray]]:
    """(bucket, batch of one) as the classification eval loader makes it (normalised)."""
    ev = self.config.eval
    bounds = tuple(ev.aspect_buckets)
    to_canvas = transforms.EvalTransform(spec=_image_spec(self.config),
                                         shape_buckets=buckets.make_buckets(bounds),
                                         scale=buckets.canvas_scale(ev),
                                         max_boxes=self.config.input.max_boxes)
    bucket = buckets.bucket_index(*image.shape[:2], bounds)
    return bucket, self._normalize(to_canvas.map(({"image": image}, True, bucket)))

  def _detection_batch(self, image: np.ndarray, config: ml_collections.ConfigDict | None = None
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(batch of one as the detection eval loader makes it (normalised), the resized uint8 image),
    at `config`'s input sizes (default: this predictor's)."""
    inp = (config or self.config).input
    bounds = tuple(inp.aspect_buckets)
    to_canvas = DetectionTransform(
        spec=_image_spec(self.config),
        canvases=buckets.detection_canvases(bounds, inp.min_size, inp.max_size),
        min_size=inp.min_size, max_size=inp.max_size, max_boxes=inp.max_boxes)
    example = to_canvas.map((0, {"image": image}, buckets.bucket_index(*image.shape[:2], bounds), False))
    h, w = (int(v) for v in example["size"])
    return self._normalize(example), example["image"][:h, :w]

  def _normalize(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inp = self.config.input
    normalize = transforms.NormalizeBatch(mean=tuple(inp.mean), std=tuple(inp.std))
    return normalize.map({k: np.asarray(v)[None] for k, v in example.items()})

  def _jitted(self, key: Any, make: Any) -> Any:
    if key not in self._fns:
      self._fns[key] = jax.jit(make())
    return self._fns[key]

  # ---------------------------------------------------------------------------------------------
  # Per task: the model's outputs for one image (host numpy, batch axis removed), then the dict and
  # the picture drawn from them.

  def outputs(self, image: np.ndarray) -> dict[str, Any]:
    """The model's raw outputs of one [H, W, 3] uint8 image (what `prediction` and `picture` read).

    Raises:
      DataError: not an [H, W, 3] uint8 array. InputSizeError: smaller than `smallest_image`.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise DataError(f"expected an RGB image [H, W, 3] uint8, got {image.dtype} {image.shape} "
                      "(data.image_files.read_image reads a file as one)")
    check_image_size(self.config, image.shape[:2], "array")
    if self.task in ("classification", "localization"):
      bucket, batch = self._eval_batch(image)
      if self.task == "classification":
        fn = self._jitted(bucket, lambda: functools.partial(
            classification_pictures.multi_scale_maps, self.model, self.config.eval,
            buckets.make_buckets(tuple(self.config.eval.aspect_buckets))[bucket]))
        out = fn({"params": self.params}, batch["image"], batch["size"], batch["original_size"])
      else:
        fn = self._jitted(bucket, lambda: functools.partial(
            localization_pictures.picture_predictions, self.model, self.config,
            buckets.make_buckets(tuple(self.config.eval.aspect_buckets))[bucket],
            # every candidate class (top-k per scale), so that any top_k can be cut from them
            num_guesses=int(self.config.eval.merge_top_k) * len(self.config.eval.multi_scales)))
        out = fn(self.params, batch["image"], batch["size"], batch["original_size"])
      return jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(out))
    batch, resized = self._detection_batch(image)
    if self.task == "detection":
      fn = self._jitted(None, lambda: functools.partial(detection_overfeat.picture_outputs, self.model,
                                                        self.config))
      out = fn(self.params, batch["image"], batch["size"])
    else:
      fn = self._jitted(None, lambda: faster_rcnn_task.make_predict_fn(self.config, self.model))
      out = jax.device_get(fn(self.params, {k: batch[k] for k in ("image", "size", "scale")}))
      out = {**out, **self._merge_extra_sizes(image, out, batch["scale"], fn)}
    return {**jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(out)),
            "batch_scale": batch["scale"][0], "resized": resized}

  def _merge_extra_sizes(self, image: np.ndarray, out: dict[str, Any], scale: np.ndarray,
                         fn: Any) -> dict[str, Any]:
    """Faster R-CNN's detections `out` of `image` at test.size_factor (batch `scale`) merged with
    those of faster_rcnn.test.extra_size_factors, as evaluate.py merges them ({} without extras)."""
    if not self._extra_size_configs:
      return {}
    parts = [{k: np.asarray(out[k]) for k in faster_rcnn_task.DETECTION_KEYS}]
    for sized in self._extra_size_configs:
      batch, _ = self._detection_batch(image, sized)
      found = jax.device_get(fn(self.params, {k: batch[k] for k in ("image", "size", "scale")}))
      parts.append(faster_rcnn_task.rescale_detections(found, batch["scale"], scale))
    merge = self._jitted("merge", lambda: faster_rcnn_task.merge_test_sizes(self.config))
    return jax.device_get(merge({k: np.concatenate([p[k] for p in parts], axis=1)
                                 for k in faster_rcnn_task.DETECTION_KEYS}))

  def prediction(self, image: np.ndarray, outputs: dict[str, Any], *, top_k: int | None = None
                 ) -> dict[str, Any]:
    """The JSON-ready dict (module docstring) of `outputs(image)`."""
    h, w = image.shape[:2]
    out = {"image": None, "image_size": [int(h), int(w)], "task": self.task,
           "checkpoint_step": None if self.step is None else int(self.step)}
    if self.task == "classification":
      scores = np.asarray(outputs["scores"], np.float64)  # [K]
      k = min(DEFAULT_TOP_K if top_k is None else top_k, len(scores))
      labels = np.argsort(-scores, kind="stable")[:k]  # as the evaluation's top-k (ties: lower id)
      return {**out, **self._labelled(labels), "scores": _to_list(scores[labels]),
              "probabilities": _to_list(scores[labels] / scores.sum())}
    if self.task == "localization":
      keep = np.flatnonzero(outputs["valid"])[:DEFAULT_TOP_K if top_k is None else top_k]
      labels, boxes, scores = outputs["classes"][keep], outputs["boxes"][keep], outputs["scores"][keep]
    elif self.task == "detection":
      keep = np.flatnonzero(outputs["valid"])  # by confidence, descending
      sy, sx = outputs["batch_scale"]
      boxes = outputs["boxes"][keep] / np.array([sx, sy, sx, sy], np.float32)  # network -> original
      labels, scores = outputs["classes"][keep], outputs["scores"][keep]
    else:
      batch_of_one = {k: outputs[k][None] for k in ("boxes", "scores", "classes", "valid", "batch_scale")}
      found = faster_rcnn_task.detections_to_dicts(batch_of_one, {"scale": batch_of_one["batch_scale"]})[0]
      labels, boxes, scores = found["labels"], found["boxes"], found["scores"]
    if top_k is not None:
      labels, boxes, scores = labels[:top_k], boxes[:top_k], scores[:top_k]
    boxes = clip_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), (h, w))
    return {**out, **self._labelled(labels), "scores": _to_list(np.asarray(scores, np.float64)),
            "boxes": _to_list(np.asarray(boxes, np.float64))}

  def _labelled(self, labels: np.ndarray) -> dict[str, list]:
    labels = [int(k) for k in np.asarray(labels).reshape(-1)]
    return {"labels": labels, "names": [self.names[k] for k in labels]}

  def picture(self, image: np.ndarray, outputs: dict[str, Any], *, top_k: int | None = None) -> Figure:
    """The evaluation pictures' panels of one image, without ground truth (`evaluate.py --pictures`):
    classification: the image titled with the top-5 and a score map of the predicted class per
    scale; localization: the top_k merged guesses, every window's box for the best one's class and
    the score maps per scale; detection: the detections (confidence >= 0.5) and the highest digit
    probability per scale, on the image resized to input.min_size; faster_rcnn: the top proposals
    and the detections."""
    config = self.config
    if self.task in ("classification", "localization"):
      arch = self.model.arch if self.task == "classification" else self.model.overfeat.arch
      scales = [tuple(int(v) for v in config.eval.scales[i]) for i in config.eval.multi_scales]
      if self.task == "localization":
        guesses = DEFAULT_TOP_K if top_k is None else top_k
        outputs = {**outputs, **{k: outputs[k][:guesses] for k in ("classes", "boxes", "scores", "valid")}}
        figures, titles = localization_pictures.localization_panels(
            image, outputs, scales=scales, true_boxes=None, true_labels=None, label=None,
            names=list(self.names), stride=arch.prepool_stride, fov=arch.train_size)
        return visualize.panel_grid(figures, ncols=len(scales) + 1, titles=titles)
      scale_maps = [
          classification_pictures.place_map(scale, probs, valid, size=size, original_size=image.shape[:2],
                                            stride=arch.prepool_stride, fov=arch.train_size)
          for scale, probs, valid, size in zip(scales, outputs["probs"], outputs["valid"], outputs["size"])]
      return classification_pictures.classification_panels(image, scale_maps, outputs["scores"], label=None,
                                                           names=self.names).picture()
    if self.task == "detection":
      arch = self.model.overfeat.arch
      panels, titles = detection_overfeat.detection_panels(
          outputs["resized"], outputs, None, names=self.names,
          scales=[int(s) for s in config.detection.test_scales], min_size=int(config.input.min_size),
          stride=arch.prepool_stride, fov=arch.train_size)
      return visualize.panel_grid(panels, ncols=len(panels), titles=titles)
    sy, sx = outputs["batch_scale"]
    to_original = np.array([sx, sy, sx, sy], np.float32)
    shown = int(config.faster_rcnn.test.picture_proposals)
    proposals = np.asarray(outputs["proposal_valid"][:shown], bool)
    kept = np.asarray(outputs["valid"], bool)
    return faster_rcnn.detection_panels(
        image, gt_boxes=None, gt_labels=None,
        proposals=outputs["proposal_boxes"][:shown][proposals] / to_original,
        proposal_scores=outputs["proposal_scores"][:shown][proposals],
        boxes=outputs["boxes"][kept] / to_original, scores=outputs["scores"][kept],
        labels=outputs["classes"][kept], names=self.names,
        score_threshold=config.faster_rcnn.test.picture_score)

  def predict(self, image: np.ndarray, *, top_k: int | None = None) -> dict[str, Any]:
    """The prediction (module docstring) of one [H, W, 3] uint8 image."""
    return self.prediction(image, self.outputs(image), top_k=top_k)

  def predict_and_draw(self, image: np.ndarray, *, top_k: int | None = None
                       ) -> tuple[dict[str, Any], Figure]:
    """(`predict`, `picture`) of one image from one pass of the model."""
    outputs = self.outputs(image)
    return self.prediction(image, outputs, top_k=top_k), self.picture(image, outputs, top_k=top_k)


def predict_files(config: ml_collections.ConfigDict | str, workdir: str, paths: Sequence[str], *,
                  top_k: int | None = None, out_dir: str | None = None,
                  stream: TextIO | None = None) -> list[dict[str, Any]]:
  """Predicts on each image file with the newest intact checkpoint in `workdir` (module docstring).

  Args:
    config: a config, or a config file / shipped config's name.
    paths: image files (PNG, JPEG, ...; `data.image_files`).
    top_k: classes / guesses / detections kept per image (None: module docstring); >= 1.
    out_dir: where to write a picture per image (`<stem>` + PICTURE_SUFFIX) and PREDICTIONS_FILE;
      None: nothing is written.
    stream: where each prediction goes as a JSON line (the command: stdout); None: nowhere. A
      summary line goes to stderr when a stream is given.
  Returns:
    One prediction dict per path, in order (with "picture": its path when out_dir is given).
  Raises:
    ConfigError: a bad config or top_k. DataError: a file is missing, unreadable or of an unsupported
    mode, or two files share a stem or a picture would overwrite an image (with out_dir).
    InputSizeError: an image below `smallest_image`.
    All of these before the checkpoint is read, each naming the file. CheckpointError: no intact
    checkpoint in `workdir`, or one of another model. WorkdirError: an output cannot be written.
  """
  config = load_config(config)
  validate_config(config)
  tasks.get_task(config)
  if top_k is not None and top_k < 1:
    raise ConfigError(f"top_k must be at least 1, got {top_k}")
  if not paths:
    raise DataError("no images given")
  pictures = [None] * len(paths)
  if out_dir is not None:
    pictures = [os.path.join(out_dir, stem + PICTURE_SUFFIX)
                for stem in feature_export.output_stems(paths, PICTURE_SUFFIX)]
    inputs = {os.path.realpath(p): p for p in paths}
    for picture in pictures:
      if os.path.realpath(picture) in inputs:
        raise DataError(f"the picture of an image would overwrite image {inputs[os.path.realpath(picture)]}: "
                        "give another --out")
  # Every file is decoded and size-checked first (only its size kept), so that a bad one fails before
  # the checkpoint is read and anything is written; each is decoded again when its turn comes.
  for path in paths:
    check_image_size(config, read_image(path).shape[:2], path)
  predictor = Predictor.from_workdir(config, workdir)
  results = []
  for path, picture in zip(paths, pictures):
    image = read_image(path)
    if picture is None:
      result = predictor.predict(image, top_k=top_k)
    else:
      result, figure = predictor.predict_and_draw(image, top_k=top_k)
      visualize.save_png(figure, picture)
      result["picture"] = picture
    result["image"] = str(path)
    results.append(result)
    if stream is not None:
      stream.write(json.dumps(result) + "\n")
      stream.flush()
  if out_dir is not None:
    files.replace_file(os.path.join(out_dir, PREDICTIONS_FILE),
                       "".join(json.dumps(r) + "\n" for r in results))
  if stream is not None:
    where = f"; pictures and {PREDICTIONS_FILE} in {out_dir}" if out_dir is not None else ""
    print(f"{len(results)} image(s): {config.task}, checkpoint step {predictor.step} of "
          f"{checkpoint_io.checkpoint_dir(workdir)}{where}", file=sys.stderr, flush=True)
  return results
