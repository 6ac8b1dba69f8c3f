"""Pictures of classification (config.eval.pictures, evaluate.py --pictures N): what the dense
multi-scale grid (SPEC A4) sees in each of the first N images of the eval split.

One PNG per image, `<workdir>/eval/pictures/<index in the split, 5 digits>.png`, a `panel_grid` of
  - the image (with its ground-truth boxes where the dataset has them), titled with the true class,
    the predicted one (the top-1 of the Table 2 row "N scales, fine stride") and the top-5;
  - per multi-scale test scale (config.eval.multi_scales), the softmax probability of the predicted
    class at every position of that scale's fine-stride class map, as a heat map over the ORIGINAL
    image (colour scale 0..1): each position painted over the tile around its window's centre,
    positions whose window lies mostly on the padding left unpainted; titled with the scale and the
    class's highest probability over the positions that count (its spatial max).

The pass runs after the metrics are written and apart from them (the evaluation step is untouched):
process 0 only, one image at a time on its first device, one small jitted function per shape bucket.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from overfeat_jax.data import buckets, pipeline, transforms
from overfeat_jax.data.class_names import class_names
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.evaluation import dense, outputs, visualize
from overfeat_jax.models import dense_grid
from overfeat_jax.models.overfeat import OverFeat

MAX_COLUMNS = 4  # panels per row of a picture


@dataclasses.dataclass(frozen=True)
class ScaleMap:
  """One test scale's fine-stride class map of one image, placed over the original image.

  Attributes:
    scale: (H, W) of config.eval.scales.
    probs: float [h, w, K]: softmax over the classes at each position.
    valid: bool [h, w]: the positions that count (window mostly on the image).
    stride: (y, x) original-image pixels between neighbouring window centres.
    offset: (y, x) original-image position of window (0, 0)'s centre.
  """

  scale: tuple[int, int]
  probs: np.ndarray
  valid: np.ndarray
  stride: tuple[float, float]
  offset: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Panels:
  """The panels of one image's picture, in order, and a title line above each.

  Attributes:
    figures: [image panel, one score map per scale] (`visualize` figures, each with its own title).
    titles: one line per figure, shown above it in the grid.
  """

  figures: list[Figure]
  titles: list[str]

  def picture(self) -> Figure:
    """All panels in one figure, MAX_COLUMNS to a row."""
    return visualize.panel_grid(self.figures, ncols=MAX_COLUMNS, titles=self.titles)


def place_map(scale: tuple[int, int], probs: Any, valid: Any, *, size: Any, original_size: Any,
              stride: int, fov: int) -> ScaleMap:
  """A fine-stride map of the image resized to `size` [2] (h, w), placed over the image at its
  `original_size` [2]: position u sees the resized image's window [u * stride, u * stride + fov)
  on each axis (`models.dense_grid`), so its centre lies at (u * stride + fov / 2) / r original
  pixels, r = size / original_size per axis (the windows of `dense_grid`'s boxes).
  probs [h, w, K], valid [h, w] as in ScaleMap."""
  ratio = np.asarray(original_size, np.float64) / np.asarray(size, np.float64)  # [2] (y, x)
  return ScaleMap(scale=tuple(int(v) for v in scale), probs=np.asarray(probs),
                  valid=np.asarray(valid, bool), stride=tuple(map(float, stride * ratio)),
                  offset=tuple(map(float, fov / 2 * ratio)))


def classification_panels(image: Any, scale_maps: Sequence[ScaleMap], scores: Any, *, label: int | None,
                          names: Sequence[str], boxes: Any | None = None,
                          box_labels: Any | None = None, zoom: int | None = None) -> Panels:
  """The panels of one image (module docstring).

  Args:
    image: [H, W, 3] uint8, the original image.
    scale_maps: one ScaleMap per multi-scale test scale.
    scores: [K] the image's multi-scale class scores; the prediction is their argmax.
    label: the true class, in [0, K) (anything else shows as "?": a split without labels); None for
      an image whose class is not known (a prediction): its title names only the predicted class.
    names: the K class names.
    boxes: [N, 4] ground-truth boxes (x1, y1, x2, y2) in original pixels, drawn with box_labels [N];
      None draws none.
    zoom: integer upscaling of every panel (`visualize`); default from the image size.
  Returns:
    Panels: len(scale_maps) + 1 figures.
  """
  scores = np.asarray(scores, np.float64)
  top = np.argsort(-scores, kind="stable")[:min(5, len(names))]
  predicted = int(top[0])
  if boxes is None:
    boxes, box_labels = np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)
  top_names = ", ".join(names[k] for k in top)
  figures = [visualize.draw_detections(image, boxes, box_labels, None, names, zoom=zoom,
                                       title=f"top-{len(top)}: {top_names}")]
  titles = [f"predicted {names[predicted]} ({scores[predicted]:.2f})"]
  if label is not None:
    titles[0] = f"true {names[label] if 0 <= label < len(names) else '?'}, {titles[0]}"
  for scale_map in scale_maps:
    probs = np.asarray(scale_map.probs)[..., predicted]  # [h, w]
    best = float(probs[scale_map.valid].max()) if scale_map.valid.any() else float("nan")
    figures.append(visualize.draw_score_map(
        image, probs, stride=scale_map.stride, offset=scale_map.offset, valid=scale_map.valid,
        vmin=0.0, vmax=1.0, zoom=zoom, title=f"p({names[predicted]}): max {best:.2f}"))
    titles.append("scale {}x{}".format(*scale_map.scale))
  return Panels(figures=figures, titles=titles)


def multi_scale_maps(model: OverFeat, eval_cfg: ml_collections.ConfigDict,
                     bucket: buckets.Bucket, variables: Any, canvas: jax.Array,
                     image_hw: jax.Array, original_hw: jax.Array) -> dict[str, Any]:
  """The multi-scale grids of a batch of one bucket: canvases [B, Hb, Wb, 3] (as the eval loader
  makes them), sizes in them [B, 2] and before resizing [B, 2] -> {"scores": [B, K] (the Table 2
  row "N scales, fine stride", evaluate.py's headline row), and per multi scale: "probs"
  [B, h, w, K], "valid" [B, h, w], "size" int32 [B, 2] the images' size at that scale}.
  Also the pictures' and predictions' (`evaluation.prediction`) class scores."""
  out = {"probs": [], "valid": [], "size": []}
  scores = []
  for index in eval_cfg.multi_scales:
    images, hw = dense.scale_images(canvas, image_hw=image_hw, original_hw=original_hw,
                                    scale=tuple(eval_cfg.scales[index]), bucket=bucket)
    grid = dense_grid.dense_grid(model, variables, images, image_hw=hw, original_hw=original_hw)
    scores.append(dense.class_scores(grid.logits, eval_cfg.spatial_reduce, grid.valid))
    out["probs"].append(jax.nn.softmax(grid.logits.astype(jnp.float32), axis=-1))
    out["valid"].append(grid.valid)
    out["size"].append(hw)
  return {**out, "scores": jnp.mean(jnp.stack(scores), axis=0)}


def _pictures(config: ml_collections.ConfigDict, model: OverFeat, variables: Any
              ) -> Iterator[tuple[str, Figure]]:
  """(name, picture) of each of the first config.eval.pictures images of the eval split, rendered
  one at a time (module docstring)."""
  spec = get_dataset_spec(config.dataset.name)
  source = pipeline.load_source(config.dataset, config.dataset.eval_split)
  names = class_names(source, spec)
  bounds = tuple(config.eval.aspect_buckets)
  shape_buckets = buckets.make_buckets(bounds)
  # The evaluation's own canvases: the loader's per-example transform on a batch of one.
  to_canvas = transforms.EvalTransform(spec=spec, shape_buckets=shape_buckets,
                                       scale=buckets.canvas_scale(config.eval),
                                       max_boxes=config.input.max_boxes)
  normalize = transforms.NormalizeBatch(mean=tuple(config.input.mean), std=tuple(config.input.std))
  # The replicated variables' copy on this process's first device (no other host takes part).
  variables = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x,
                           variables)
  scales = [tuple(int(v) for v in config.eval.scales[i]) for i in config.eval.multi_scales]
  maps_fns = {}  # bucket index -> its jitted multi_scale_maps
  for index in range(min(config.eval.pictures, len(source))):
    record = source[index]
    example = transforms.decode_example(record, spec)
    bucket = buckets.bucket_index(*example["image"].shape[:2], bounds)
    batch = normalize.map({k: v[None] for k, v in to_canvas.map((record, True, bucket)).items()})
    if bucket not in maps_fns:
      maps_fns[bucket] = jax.jit(functools.partial(multi_scale_maps, model, config.eval,
                                                  shape_buckets[bucket]))
    maps = jax.device_get(maps_fns[bucket](variables, batch["image"], batch["size"],
                                           batch["original_size"]))
    scale_maps = [
        place_map(scale, probs[0], valid[0], size=size[0], original_size=batch["original_size"][0],
                  stride=model.arch.prepool_stride, fov=model.arch.train_size)
        for scale, probs, valid, size in zip(scales, maps["probs"], maps["valid"], maps["size"])]
    panels = classification_panels(example["image"], scale_maps, maps["scores"][0],
                                   label=int(example["label"]), names=names,
                                   boxes=example["boxes"], box_labels=example["box_labels"])
    yield f"{index:05d}", panels.picture()


def write_pictures(config: ml_collections.ConfigDict, workdir: str, model: OverFeat,
                   variables: Any, *, verbose: bool = True) -> list[str]:
  """Writes the pictures of the first config.eval.pictures images of config.dataset.eval_split
  (all of them if the split is smaller) to `workdir/eval/pictures/`; returns the paths.

  Args:
    config: a validated config; model, variables: the evaluated OverFeat and its variables.
  Raises:
    WorkdirError: a picture cannot be written (names the file).
  """
  return outputs.write_pictures(workdir, _pictures(config, model, variables), verbose=verbose)
