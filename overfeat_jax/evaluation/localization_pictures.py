"""Pictures of localization (config.eval.pictures, evaluate.py --pictures N): the paper's
localization figure for each of the first N images of the eval split (SPEC A5).

One PNG per image, `<workdir>/eval/pictures/<index in the split, 5 digits>.png`, a `panel_grid` of
two rows, one column per multi-scale test scale (config.eval.multi_scales) after a first column:
  - top row: the image with its true boxes; then per scale the regressed box of EVERY position that
    counts (window mostly on the image), for the predicted class (the best guess of the "N scales"
    row), outlines only;
  - bottom row: the merged result, the top-5 (class, box) guesses with their merged confidence (the
    best drawn on top); then per scale the softmax probability of the predicted class at every
    position, as a heat map over the original image (colour scale 0..1; `classification_pictures`).

A separate pass after the metrics are written, as classification's: process 0, one image at a time
on its first device, one jitted function per shape bucket.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from overfeat_jax.data import buckets, pipeline, transforms
from overfeat_jax.data.class_names import class_names
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.evaluation import classification_pictures, localize, outputs, visualize
from overfeat_jax.models import dense_grid
from overfeat_jax.tasks import localization as task


def picture_predictions(model: task.LocalizationModel, config: ml_collections.ConfigDict,
                        bucket: buckets.Bucket, params: Any, canvas: jax.Array, image_hw: jax.Array,
                        original_hw: jax.Array, *, num_guesses: int = localize.MAX_GUESSES
                        ) -> dict[str, Any]:
  """What the picture of a batch of one bucket shows: the "N scales" row's guesses ("classes",
  "boxes", "scores", "valid", [B, G, ...], G = num_guesses; boxes in original pixels) and per multi
  scale ("probs" [B, h, w, K], "valid_map" [B, h, w], "size" [B, 2] the image's size at that scale,
  "class_boxes" [B, h, w, 4] every position's regressed box for the best guess's class, original
  pixels). Also what `evaluation.prediction` reports of a localization model."""
  ev = config.eval
  multi = [int(i) for i in ev.multi_scales]
  grids = localize.scale_grids(model, params, canvas, ev, image_hw=image_hw,
                                   original_hw=original_hw, bucket=bucket, indices=multi)
  per_image = functools.partial(localize.merged_guesses, top_k=int(ev.merge_top_k),
                                threshold=float(ev.merge_threshold), reduce=ev.spatial_reduce,
                                score=ev.merge_score, average=ev.merge_average, num_guesses=num_guesses)
  guesses = localize.Guesses(*jax.vmap(per_image)(
      [localize.scale_boxes(grids[i]) for i in multi]))
  out = {"classes": guesses.classes, "boxes": guesses.boxes, "scores": guesses.scores,
         "valid": guesses.valid, "probs": [], "valid_map": [], "size": [], "class_boxes": []}
  for index in multi:
    grid = grids[index]
    predicted = jnp.broadcast_to(guesses.classes[:, 0, None, None], grid.valid.shape)
    out["probs"].append(jax.nn.softmax(grid.logits, axis=-1))
    out["valid_map"].append(grid.valid)
    out["class_boxes"].append(dense_grid.regressed_boxes(grid, predicted))
    scale = tuple(int(v) for v in ev.scales[index])
    out["size"].append(buckets.scaled_size(original_hw, scale, bucket.canvas(scale), xp=jnp))
  return out


def localization_panels(image: Any, predictions: dict[str, Any], *, scales: list[tuple[int, int]],
                        true_boxes: Any | None, true_labels: Any | None, label: int | None,
                        names: list[str], stride: int, fov: int) -> tuple[list[Figure], list[str]]:
  """The panels of one image (module docstring) and their titles.

  Args:
    image: [H, W, 3] uint8, the original image.
    predictions: `picture_predictions` of a batch of one, on the host, batch axis removed.
    scales: the multi scales (H, W), in predictions' order.
    true_boxes: [M, 4] original pixels; true_labels: [M]; label: the image's class. All three None
      for an image without ground truth (a prediction): the first panel is the image alone.
    names: the K class names; stride, fov: the fine grid's (arch.prepool_stride, arch.train_size).
  """
  guess_valid = np.asarray(predictions["valid"], bool)
  predicted = int(predictions["classes"][0])
  name = names[predicted]
  if true_boxes is None:  # a prediction: no ground truth to draw
    top = [visualize.draw_detections(image, np.zeros((0, 4)), np.zeros((0,), int), None, names)]
    top_titles = ["image"]
  else:
    true = names[label] if 0 <= label < len(names) else "?"
    top = [visualize.draw_detections(image, true_boxes, true_labels, None, names,
                                     title=f"true {true}")]
    top_titles = ["image, true box"]
  bottom = [visualize.draw_detections(
      image, predictions["boxes"], predictions["classes"], predictions["scores"], names,
      valid=guess_valid, title=f"merged: {name} ({predictions['scores'][0]:.2f})")]
  bottom_titles = [f"merged result (top-{len(guess_valid)} guesses)"]
  for s, scale in enumerate(scales):
    valid = np.asarray(predictions["valid_map"][s], bool)
    boxes = np.asarray(predictions["class_boxes"][s]).reshape(-1, 4)
    keep = valid.reshape(-1)
    top.append(visualize.draw_detections(
        image, boxes, np.full(len(boxes), predicted), None, names, valid=keep,
        max_boxes=len(boxes), captions=False, title=f"{int(keep.sum())} boxes of {name}"))
    top_titles.append("scale {}x{}".format(*scale))
    scale_map = classification_pictures.place_map(
        scale, predictions["probs"][s], valid, size=predictions["size"][s],
        original_size=image.shape[:2], stride=stride, fov=fov)
    probs = scale_map.probs[..., predicted]
    best = float(probs[valid].max()) if valid.any() else float("nan")
    bottom.append(visualize.draw_score_map(
        image, probs, stride=scale_map.stride, offset=scale_map.offset, valid=valid, vmin=0.0,
        vmax=1.0, title=f"p({name}): max {best:.2f}"))
    bottom_titles.append("scale {}x{}".format(*scale))
  return top + bottom, top_titles + bottom_titles


def _pictures(config: ml_collections.ConfigDict, model: task.LocalizationModel, params: Any
              ) -> Iterator[tuple[str, Figure]]:
  """(name, picture) of each of the first config.eval.pictures images of the eval split."""
  spec = get_dataset_spec(config.dataset.name)
  source = pipeline.load_source(config.dataset, config.dataset.eval_split)
  names = class_names(source, spec)
  bounds = tuple(config.eval.aspect_buckets)
  shape_buckets = buckets.make_buckets(bounds)
  to_canvas = transforms.EvalTransform(spec=spec, shape_buckets=shape_buckets,
                                       scale=buckets.canvas_scale(config.eval),
                                       max_boxes=config.input.max_boxes)
  normalize = transforms.NormalizeBatch(mean=tuple(config.input.mean), std=tuple(config.input.std))
  params = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, params)
  scales = [tuple(int(v) for v in config.eval.scales[i]) for i in config.eval.multi_scales]
  arch = model.overfeat.arch
  fns = {}  # bucket index -> its jitted picture_predictions
  for index in range(min(config.eval.pictures, len(source))):
    record = source[index]
    example = transforms.decode_example(record, spec)
    bucket = buckets.bucket_index(*example["image"].shape[:2], bounds)
    batch = normalize.map({k: v[None] for k, v in to_canvas.map((record, True, bucket)).items()})
    if bucket not in fns:
      fns[bucket] = jax.jit(functools.partial(picture_predictions, model, config, shape_buckets[bucket]))
    predictions = jax.device_get(fns[bucket](params, batch["image"], batch["size"],
                                             batch["original_size"]))
    predictions = jax.tree.map(lambda x: np.asarray(x)[0], predictions)
    figures, titles = localization_panels(
        example["image"], predictions, scales=scales, true_boxes=example["boxes"],
        true_labels=example["box_labels"], label=int(example["label"]), names=names,
        stride=arch.prepool_stride, fov=arch.train_size)
    yield f"{index:05d}", visualize.panel_grid(figures, ncols=len(scales) + 1, titles=titles)


def write_pictures(config: ml_collections.ConfigDict, workdir: str,
                   model: task.LocalizationModel, params: Any, *, verbose: bool = True) -> list[str]:
  """Writes the pictures of the first config.eval.pictures images of config.dataset.eval_split to
  `workdir/eval/pictures/`; returns the paths.

  Raises:
    WorkdirError: a picture cannot be written (names the file).
  """
  return outputs.write_pictures(workdir, _pictures(config, model, params), verbose=verbose)
