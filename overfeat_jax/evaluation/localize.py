"""OverFeat's (class, box) predictions of whole images (SPEC A5), as pure jit-able functions shared by
localization evaluation, its pictures and (with K + 1 classes) detection.

- `scale_grids`: the fine grid of each test scale with the box regressor beside the classifier, one
  feature pass per scale (`models.dense_grid`); `scale_boxes` flattens one into `ScaleBoxes`.
- `merged_guesses`: SPEC A5's combination of one image's scales:
    (a) per scale, the top-k classes by the scale's spatial max (over the positions whose window
        lies mostly on the image);
    (b) for each of those classes, the regressed box of every such position and offset, with that
        position's softmax probability of the class as its score;
    (c) all scales' boxes together, per class;
    (d) the greedy merge (`ops.merge.greedy_merge`): a merged box's confidence is the sum of the
        scores of the windows whose boxes went into it;
  each class's answer is its merged box of highest confidence; the (class, box) guesses are ranked
  by that confidence.
- `centre_crop_guesses` / `crop_guesses`: one window (the training-protocol centre crop): its
  classes by probability, each with the window's regressed box (SCR: the same box; PCR: the class's).
- `correct_guesses` / `row_counts`: SPEC A1's test: the class is right and IoU >= 0.5 with a true box
  of that class; counts of images right within the top-1 / top-5 guesses.
Boxes are in original-image pixels throughout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from overfeat_jax.data import buckets
from overfeat_jax.evaluation import dense
from overfeat_jax.models import dense_grid
from overfeat_jax.models.heads import class_edges
from overfeat_jax.ops import pooling
from overfeat_jax.ops.boxes import box_iou
from overfeat_jax.ops.edges import decode_edges
from overfeat_jax.ops.merge import best_box, greedy_merge
from overfeat_jax.tasks import localization as task

MAX_GUESSES = 5  # top-5 (SPEC A1)
MIN_IOU = 0.5  # a guessed box is right at IoU >= 0.5 with a true box of its class (SPEC A1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Guesses:
  """Ranked (class, box) guesses of a batch, best first.

  Attributes:
    classes: int32 [B, G].
    boxes: float32 [B, G, 4] (x1, y1, x2, y2) original-image pixels.
    scores: float32 [B, G]: the ranking score (merged confidence, or the crop's probability).
    valid: bool [B, G]: False for padding (fewer candidate classes than G).
  """
  classes: jax.Array
  boxes: jax.Array
  scores: jax.Array
  valid: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ScaleBoxes:
  """One scale's dense predictions of one image, its positions flattened (N = H' * W').

  Attributes:
    probs: float32 [N, K] softmax over the classes at each position.
    valid: bool [N] the positions that count (window mostly on the image).
    windows: float32 [N, 4] each position's window, original-image pixels.
    edges: float32 [N, 1 or K, 4] the regressor's outputs (SCR: one box for all classes).
  """
  probs: jax.Array
  valid: jax.Array
  windows: jax.Array
  edges: jax.Array


def scale_boxes(grid: dense_grid.DenseGrid) -> ScaleBoxes:
  """A batch's DenseGrid (with regression) -> ScaleBoxes with a leading batch axis [B, N, ...]."""
  b, h, w, k = grid.logits.shape
  return ScaleBoxes(probs=jax.nn.softmax(grid.logits.astype(jnp.float32), -1).reshape(b, h * w, k),
                    valid=grid.valid.reshape(b, h * w), windows=grid.boxes.reshape(b, h * w, 4),
                    edges=class_edges(grid.regression).reshape(b, h * w, -1, 4))


def top_classes(scores: jax.Array, k: int) -> jax.Array:
  """bool [..., K]: the k highest-scoring classes (ties: the lower index)."""
  k = min(k, scores.shape[-1])
  _, index = jax.lax.top_k(scores, k)  # [..., k]
  return jnp.any(jax.nn.one_hot(index, scores.shape[-1], dtype=bool), axis=-2)


def merged_guesses(scales: list[ScaleBoxes], *, top_k: int, threshold: float, reduce: str = "max",
                   num_guesses: int = MAX_GUESSES, score: str = "paper", average: str = "pair"
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """SPEC A5's combination of one image's scales into ranked (class, box) guesses (module docstring).

  Args:
    scales: one ScaleBoxes per scale (no batch axis).
    top_k: classes kept per scale (eval.merge_top_k); threshold: the greedy merge's.
    reduce: how a scale's positions give one score per class ('max', the paper's, or 'mean').
    num_guesses: G.
    score: the merge's match_score, "paper" or "overlap" (`ops.merge`).
    average: how the merge averages two boxes, "pair" or "weighted" (`ops.merge`).
  Returns:
    (classes int32 [G], boxes float32 [G, 4], scores float32 [G] the merged confidence, valid bool
    [G]), best first. Candidate classes are the union of the scales' top-k (at most top_k * S,
    padded to a static count); a class without any box (impossible while a scale keeps it) is not a
    guess.
  """
  match_score = score  # the name `score` is reused below for the classes' scale scores
  scales = [jax.tree.map(jnp.asarray, s) for s in scales]
  num_classes = scales[0].probs.shape[-1]
  chosen = []  # [S] of bool [K]
  for s in scales:
    kept = jnp.where(s.valid[:, None], s.probs, 0.0)  # probabilities >= 0: zeros never win a max
    score = kept.max(0) if reduce == "max" else kept.sum(0) / jnp.maximum(s.valid.sum(), 1)
    chosen.append(top_classes(score, top_k))
  candidates = min(num_classes, top_k * len(scales))
  wanted = jnp.any(jnp.stack(chosen), axis=0)  # [K]
  classes = jnp.argsort(~wanted, stable=True)[:candidates].astype(jnp.int32)  # wanted ones first
  class_valid = wanted[classes]

  def one_class(c: jax.Array) -> tuple[jax.Array, jax.Array]:
    boxes, scores, valid = [], [], []
    for s, keep in zip(scales, chosen):
      edges = s.edges[:, 0] if s.edges.shape[1] == 1 else s.edges[:, c]  # [N, 4]
      boxes.append(decode_edges(edges, s.windows))
      scores.append(s.probs[:, c])
      valid.append(s.valid & keep[c])
    merged, confidence, merged_valid = greedy_merge(
        jnp.concatenate(boxes), jnp.concatenate(scores), jnp.concatenate(valid), threshold,
        score=match_score, average=average)
    return best_box(merged, confidence, merged_valid)

  boxes, confidence = jax.vmap(one_class)(classes)  # [C, 4], [C] (-inf: no box)
  confidence = jnp.where(class_valid, confidence, -jnp.inf)
  return _rank(classes, boxes, confidence, num_guesses)


def _rank(classes: jax.Array, boxes: jax.Array, scores: jax.Array, num_guesses: int
          ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The num_guesses best of C candidates by score (-inf = none), padded when C < num_guesses."""
  order = jnp.argsort(-scores, stable=True)[:num_guesses]
  pad = num_guesses - order.shape[0]
  classes, boxes, scores = classes[order], boxes[order], scores[order]
  if pad > 0:
    classes = jnp.pad(classes, (0, pad))
    boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
    scores = jnp.pad(scores, (0, pad), constant_values=-jnp.inf)
  valid = jnp.isfinite(scores)
  return classes, jnp.where(valid[:, None], boxes, 0.0), jnp.where(valid, scores, 0.0), valid


def crop_guesses(probs: jax.Array, edges: jax.Array, window: jax.Array,
                 num_guesses: int = MAX_GUESSES) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One window's guesses: classes by probability, each with its regressed box.

  Args:
    probs: [K] softmax; edges: [1 or K, 4] regressor outputs; window: [4] original pixels.
  Returns:
    As `merged_guesses` (scores: the probabilities).
  """
  classes = jnp.arange(probs.shape[0], dtype=jnp.int32)
  boxes = decode_edges(jnp.broadcast_to(edges, (probs.shape[0], 4)), window)  # [K, 4]
  return _rank(classes, boxes, probs, num_guesses)


def correct_guesses(guesses: Guesses, true_boxes: jax.Array, true_labels: jax.Array,
                    true_valid: jax.Array) -> jax.Array:
  """bool [B, G]: the guess's class is that of a true box with which its box has IoU >= MIN_IOU.

  true_boxes [B, M, 4] (the guesses' frame), true_labels int [B, M], true_valid bool [B, M].
  """
  iou = jax.vmap(box_iou)(guesses.boxes, true_boxes)  # [B, G, M]
  same = guesses.classes[:, :, None] == true_labels[:, None, :]
  hit = (iou >= MIN_IOU) & same & true_valid[:, None, :]
  return jnp.any(hit, axis=-1) & guesses.valid


def row_counts(guesses: Guesses, true_boxes: jax.Array, true_labels: jax.Array, true_valid: jax.Array,
               labels: jax.Array, valid: jax.Array) -> jax.Array:
  """int32 [4]: how many images have a correct guess (`correct_guesses`) first, and among the
  first five; then how many have the right class (labels) first, and among the first five.

  labels: int [B] the image's class; valid: bool [B] (False for padding examples, not counted).
  """
  located = correct_guesses(guesses, true_boxes, true_labels, true_valid)  # [B, G]
  named = (guesses.classes == labels[:, None]) & guesses.valid
  out = [located[:, 0], located.any(-1), named[:, 0], named.any(-1)]
  return jnp.stack([jnp.sum(x & valid) for x in out]).astype(jnp.int32)


def regressor_head(model: task.LocalizationModel, params: Any) -> dense_grid.Head:
  """The regressor as a head of the dense grid: pooled map -> [B, h', w', 4 or 4K]."""
  return lambda pooled: model.regressor.apply({"params": params[task.REGRESSOR]}, pooled)


def scale_grids(model: task.LocalizationModel, params: Any, canvas: jax.Array, eval_cfg: Any, *,
                image_hw: jax.Array, original_hw: jax.Array, bucket: buckets.Bucket,
                indices: list[int]) -> dict[int, dense_grid.DenseGrid]:
  """The fine grid, with the regressor, of each scale in `indices` (config.eval.scales) of a batch
  of one bucket: {index: DenseGrid [B, H', W', ...]}, the feature extractor once per scale."""
  variables = {"params": params[task.OVERFEAT]}
  grids = {}
  for index in indices:
    scale = tuple(int(v) for v in eval_cfg.scales[index])
    dense_grid.check_grid_size(model.overfeat, buckets.box_sides(scale))
    images, hw = dense.scale_images(canvas, image_hw=image_hw, original_hw=original_hw, scale=scale,
                                    bucket=bucket)
    grids[index] = dense_grid.dense_grid(model.overfeat, variables, images, image_hw=hw,
                                         original_hw=original_hw,
                                         regressor=regressor_head(model, params))
  return grids


def centre_crop_guesses(model: task.LocalizationModel, params: Any, canvas: jax.Array, *,
                        image_hw: jax.Array, original_hw: jax.Array, resize_short: int,
                        crop: int) -> Guesses:
  """The centre-crop row's guesses of a batch (module docstring)."""
  view = dense.centre_crop_view(canvas, image_hw=image_hw, original_hw=original_hw,
                                resize_short=resize_short, crop=crop)  # [B, c, c, 3]
  window = dense.crop_windows(original_hw=original_hw, resize_short=resize_short, crop=crop,
                              names=("centre",))[0]  # [B, 4]
  arch = model.overfeat.arch
  prepool = model.overfeat.apply({"params": params[task.OVERFEAT]}, view, method="features")
  pooled = pooling.max_pool(prepool, arch.last_pool)
  logits = model.overfeat.apply({"params": params[task.OVERFEAT]}, pooled, method="classify")
  regression = regressor_head(model, params)(pooled)
  probs = jax.nn.softmax(logits[:, 0, 0].astype(jnp.float32), -1)  # [B, K]: the crop is one window
  return Guesses(*jax.vmap(crop_guesses)(probs, class_edges(regression[:, 0, 0]), window))
