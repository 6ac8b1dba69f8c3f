"""Per-example transforms of the input pipeline: decode, box conversion, resize/crop/flip, padding.

All numpy (plus PIL for resampling); the grain transform classes at the bottom wrap them. Boxes leave
this module as (x1, y1, x2, y2) float32 pixels of the image they belong to (DESIGN "Conventions").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

from overfeat_jax.data import buckets
from overfeat_jax.data.registry import DatasetSpec
from overfeat_jax.errors import DataError
from overfeat_jax.ops.boxes import box_area

NO_LABEL = -1  # `label` of an example whose dataset has no image-level class (detection datasets).
# `label` of a classification training crop that holds too little of the object to show its class
# (`input.off_object_crops`): trained toward the uniform distribution over the classes.
OFF_OBJECT_LABEL = -2
PAD_LABEL = -1  # Class of a padding slot in `box_labels` (its `valid`/`box_valid` entry is False).


# ----------------------------------------------------------------------------------------------
# Decoding.

def _feature(record: Mapping[str, Any], key: str) -> Any:
  """`record[key]` where key is a TFDS feature path ("objects/bbox" -> record["objects"]["bbox"])."""
  if key in record:  # Flat keys that contain "/" (e.g. "image/filename").
    return record[key]
  value = record
  for part in key.split("/"):
    if not isinstance(value, Mapping) or part not in value:
      raise DataError(f"example has no feature {key!r}; it has {sorted(record)}")
    value = value[part]
  return value


def _rgb(image: Any) -> np.ndarray:
  """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8 -> [H, W, 3] uint8 (grey repeated, alpha dropped)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise DataError(f"expected a uint8 image, got {image.dtype} with shape {image.shape}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise DataError(f"expected an image [H, W, 1|3|4], got shape {image.shape}")
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  return image[..., :3]


def tfds_boxes_to_pixels(bboxes: Any, height: int, width: int) -> np.ndarray:
  """TFDS boxes -> our boxes, the one place this conversion happens.

  Args:
    bboxes: normalised (ymin, xmin, ymax, xmax) as a list of (4,) arrays (our builders through
      `tfds.data_source`), a stacked [N, 4] array (`tfds.testing.mock_data`) or an empty list.
    height, width: size of the image the boxes belong to.
  Returns:
    [N, 4] float32 (x1, y1, x2, y2) in pixels, repaired and clipped: each coordinate pair is sorted
    (mock data can hold ymin > ymax; a real dataset never does, so sorting only ever fixes such
    swapped pairs) and then clipped to [0, width] x [0, height]. Boxes may have zero width or height
    (`nonempty_boxes` tells; `box_defects` counts what was repaired).
  """
  yxyx = np.asarray(bboxes, np.float32).reshape(-1, 4)  # [N, 4]
  ys = np.sort(yxyx[:, 0::2], axis=1) * height  # [N, 2] (ymin, ymax)
  xs = np.sort(yxyx[:, 1::2], axis=1) * width  # [N, 2] (xmin, xmax)
  boxes = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
  return np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32)).astype(np.float32)


def nonempty_boxes(boxes: np.ndarray) -> np.ndarray:
  """[N, 4] (x1, y1, x2, y2) -> [N] bool: positive width and height (False for NaN boxes too)."""
  return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def box_defects(bboxes: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """What `tfds_boxes_to_pixels` does to each TFDS box, so that no repair passes silently.

  Args:
    bboxes: normalised (ymin, xmin, ymax, xmax), as for `tfds_boxes_to_pixels`.
    height, width: size of the image the boxes belong to.
  Returns:
    repaired [N] bool: a swapped pair (ymin > ymax or xmin > xmax) was sorted, or a coordinate
      outside [0, 1] was clipped to the image, and the box kept a positive width and height;
    dropped [N] bool: the box has zero width or height after sorting and clipping (it lay on a line,
      entirely outside the image, or was not finite); the detection pipeline leaves such boxes out.
  """
  yxyx = np.asarray(bboxes, np.float32).reshape(-1, 4)  # [N, 4]
  dropped = ~nonempty_boxes(tfds_boxes_to_pixels(yxyx, height, width))
  swapped = (yxyx[:, 0] > yxyx[:, 2]) | (yxyx[:, 1] > yxyx[:, 3])
  outside = ((yxyx < 0.0) | (yxyx > 1.0)).any(axis=1)
  return (swapped | outside) & ~dropped, dropped


def image_size(record: Mapping[str, Any], spec: DatasetSpec) -> tuple[int, int]:
  """(height, width) of a record's image."""
  shape = np.shape(_feature(record, spec.image_key))
  if len(shape) not in (2, 3):
    raise DataError(f"expected an image [H, W, 1|3|4], got shape {shape}")
  return int(shape[0]), int(shape[1])


def object_columns(record: Mapping[str, Any], spec: DatasetSpec) -> dict[str, np.ndarray]:
  """The per-object features of a record (its dataset must have boxes), as raw as TFDS gives them.

  Returns:
    bbox: [N, 4] float32 normalised (ymin, xmin, ymax, xmax), unchecked (see `box_defects`).
    label: [N] int32, each box's class.
    difficult: [N] bool (VOC's `is_difficult`; all False when the dataset has no such flag).
    iscrowd: [N] bool (COCO's `is_crowd`; all False likewise).
    TFDS stores a Sequence of dicts as equal-length columns, so only `tfds.testing.mock_data` (which
    draws each column's length independently) can disagree: N is the shortest column's length, the
    pairs it has.
  """
  columns = {
      "bbox": np.asarray(_feature(record, spec.boxes_key), np.float32).reshape(-1, 4),
      "label": np.asarray(_feature(record, spec.box_labels_key), np.int32).reshape(-1),
  }
  for name, key in (("difficult", spec.difficult_key), ("iscrowd", spec.iscrowd_key)):
    if key is not None:
      columns[name] = np.asarray(_feature(record, key), bool).reshape(-1)
  n = min(len(column) for column in columns.values())
  columns = {name: column[:n] for name, column in columns.items()}
  for name in ("difficult", "iscrowd"):
    columns.setdefault(name, np.zeros((n,), bool))
  return columns


def image_id(record: Mapping[str, Any], spec: DatasetSpec, index: int) -> int:
  """A record's image id: its `spec.image_id_key` feature (COCO's `image/id`), else `index`, the
  record's place in the split it was read from."""
  if spec.image_id_key is None:
    return int(index)
  return int(np.asarray(_feature(record, spec.image_id_key)))


def decode_example(record: Mapping[str, Any], spec: DatasetSpec) -> dict[str, np.ndarray]:
  """One TFDS record (as `tfds.data_source` returns it) -> our example.

  Returns:
    image: [H, W, 3] uint8.
    label: [] int32, the image-level class, or NO_LABEL when the dataset has none.
    boxes: [N, 4] float32 (x1, y1, x2, y2) pixels (see `tfds_boxes_to_pixels`); N = 0 without boxes.
    box_labels: [N] int32, the class of each box.
    difficult, iscrowd: [N] bool, each box's flags (see `object_columns`).
  Raises:
    DataError: a feature is missing or malformed.
  """
  image = _rgb(_feature(record, spec.image_key))
  height, width = image.shape[:2]
  label = NO_LABEL if spec.label_key is None else int(np.asarray(_feature(record, spec.label_key)))
  if spec.boxes_key is None:
    columns = {"bbox": np.zeros((0, 4), np.float32), "label": np.zeros((0,), np.int32),
               "difficult": np.zeros((0,), bool), "iscrowd": np.zeros((0,), bool)}
  else:
    columns = object_columns(record, spec)
  return {"image": image, "label": np.int32(label),
          "boxes": tfds_boxes_to_pixels(columns["bbox"], height, width),
          "box_labels": columns["label"], "difficult": columns["difficult"],
          "iscrowd": columns["iscrowd"]}


def keep_largest(boxes: np.ndarray, max_boxes: int) -> np.ndarray:
  """Indices of the `max_boxes` largest boxes (by area; ties: the earlier one), in their original
  order; all indices when there are no more than `max_boxes`. boxes: [N, 4] -> int [min(N, M)]."""
  if len(boxes) <= max_boxes:
    return np.arange(len(boxes))
  return np.sort(np.argsort(-box_area(boxes), kind="stable")[:max_boxes])


def pad_objects(objects: Mapping[str, np.ndarray], max_boxes: int) -> dict[str, np.ndarray]:
  """Pads an image's ground truth to a fixed count (static shapes inside jit, DESIGN "Conventions").

  When there are more than `max_boxes` boxes, the `max_boxes` LARGEST are kept (`keep_largest`), so
  that the objects easiest to see survive truncation (COCO has images with ~90 objects;
  config.input.max_boxes sets the budget).

  Args:
    objects: "boxes" [N, 4] float32 (x1, y1, x2, y2) and any other per-object arrays [N, ...] (e.g.
      "box_labels" [N] int32, "difficult" [N] bool).
    max_boxes: M.
  Returns:
    The same keys [M, ...] with their dtypes, padding filled with PAD_LABEL for "box_labels" and
    zeros (False) otherwise, and "box_valid" [M] bool (False in padding).
  """
  keep = keep_largest(np.asarray(objects["boxes"]).reshape(-1, 4), max_boxes)
  out = {}
  for name, column in objects.items():
    column = np.asarray(column)[keep]
    padded = np.full((max_boxes,) + column.shape[1:], PAD_LABEL if name == "box_labels" else 0,
                     column.dtype)
    padded[:len(keep)] = column
    out[name] = padded
  out["box_valid"] = np.arange(max_boxes) < len(keep)
  return out


def pad_boxes(boxes: np.ndarray, labels: np.ndarray, max_boxes: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`pad_objects` of boxes and labels alone.

  Args:
    boxes: [N, 4] float32 (x1, y1, x2, y2).
    labels: [N] int.
    max_boxes: M.
  Returns:
    boxes [M, 4] float32 (zeros in padding), labels [M] int32 (PAD_LABEL in padding),
    valid [M] bool.
  """
  out = pad_objects({"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                     "box_labels": np.asarray(labels, np.int32).reshape(-1)}, max_boxes)
  return out["boxes"], out["box_labels"], out["box_valid"]


# ----------------------------------------------------------------------------------------------
# Geometry: every resize below is "resize the whole image to (rh, rw), then cut (top, left, oh, ow)".

@dataclasses.dataclass(frozen=True)
class Crop:
  """A resize to (resized_h, resized_w) followed by a crop of (out_h, out_w) at (top, left)."""

  resized_h: int
  resized_w: int
  top: int
  left: int
  out_h: int
  out_w: int


def _crop_start(low: float, high: float, size: int, extent: int, rng: np.random.Generator) -> int:
  """A random start s in [0, extent - size] with [low, high] inside [s, s + size] where that is
  possible; otherwise the start that centres [low, high] (clamped to the image)."""
  first, last = max(0, math.ceil(high) - size), min(extent - size, math.floor(low))
  if first > last:
    first = last = int(np.clip(round((low + high - size) / 2), 0, extent - size))
  return int(rng.integers(first, last + 1))


def _held_area(box: np.ndarray, size: int, extent_hw: tuple[int, int]) -> np.ndarray:
  """[T, L] fraction of the area of `box` (x1, y1, x2, y2, resized pixels) inside the square crop of
  side `size` at each (top, left) of an image of `extent_hw` (h, w) resized pixels."""
  def covered(low: float, high: float, extent: int) -> np.ndarray:  # [extent - size + 1]
    starts = np.arange(extent - size + 1, dtype=np.float64)
    inside = np.minimum(starts + size, high) - np.maximum(starts, low)
    return np.clip(inside, 0.0, None) / max(high - low, 1e-9)

  return covered(box[1], box[3], extent_hw[0])[:, None] * covered(box[0], box[2], extent_hw[1])[None, :]


def _random_position(allowed: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
  """A uniformly random (top, left) among the True entries of [T, L] `allowed`."""
  top, left = np.unravel_index(rng.choice(np.flatnonzero(allowed)), allowed.shape)
  return int(top), int(left)


def _resized_box(box: np.ndarray, height: int, width: int, rh: int, rw: int) -> np.ndarray:
  return np.asarray(box, np.float64) * np.array([rw / width, rh / height] * 2)


def train_crop(height: int, width: int, resize_short: int, crop_size: int,
               rng: np.random.Generator, keep_box: np.ndarray | None = None,
               keep_fraction: float = 1.0) -> Crop:
  """SPEC A3: short side -> resize_short (aspect kept), then a random crop_size x crop_size crop.

  Args:
    keep_box: optional (x1, y1, x2, y2) pixels of the original image: the crop is drawn among those
      that contain the box whole (uniformly), or centred on it when none does (`input.crop_keeps_object`).
    keep_fraction: below 1, the crop is drawn among those that hold at least this fraction of the
      box's area instead (`input.crop_object_fraction`).
  """
  rh, rw = (int(v) for v in buckets.short_side_size((height, width), resize_short, crop_size))
  if keep_box is None:
    top = int(rng.integers(0, rh - crop_size + 1))
    left = int(rng.integers(0, rw - crop_size + 1))
  elif keep_fraction < 1.0:  # those holding the fraction, or those holding the most when none does
    area = _held_area(_resized_box(keep_box, height, width, rh, rw), crop_size, (rh, rw))
    top, left = _random_position(area >= min(keep_fraction, area.max()) - 1e-9, rng)
  else:
    x1, y1, x2, y2 = _resized_box(keep_box, height, width, rh, rw)
    top = _crop_start(y1, y2, crop_size, rh, rng)
    left = _crop_start(x1, x2, crop_size, rw, rng)
  return Crop(rh, rw, top, left, crop_size, crop_size)


def off_object_crop(height: int, width: int, resize_short: int, crop_size: int,
                    rng: np.random.Generator, box: np.ndarray, max_fraction: float) -> Crop | None:
  """A random crop (as `train_crop`) among those holding less than `max_fraction` of the area of
  `box` (x1, y1, x2, y2 pixels of the original image), or None when every crop holds more.
  """
  rh, rw = (int(v) for v in buckets.short_side_size((height, width), resize_short, crop_size))
  allowed = _held_area(_resized_box(box, height, width, rh, rw), crop_size, (rh, rw)) < max_fraction
  if not allowed.any():
    return None
  top, left = _random_position(allowed, rng)
  return Crop(rh, rw, top, left, crop_size, crop_size)


def whole_image(height: int, width: int, size: tuple[int, int]) -> Crop:
  """The whole (height, width) image resized to `size` (h, w): a Crop that cuts nothing."""
  h, w = (int(v) for v in size)
  return Crop(h, w, 0, 0, h, w)


def apply_crop(image: np.ndarray, crop: Crop) -> np.ndarray:
  """[H, W, 3] uint8 -> [out_h, out_w, 3] uint8 (bilinear, antialiased when shrinking).

  One PIL resample of the source region that maps onto the crop: the same pixels as resizing the
  whole image and then cropping, at the cost of the crop only.
  """
  h, w = image.shape[:2]
  sy, sx = crop.resized_h / h, crop.resized_w / w
  box = (crop.left / sx, crop.top / sy,
         min(w, (crop.left + crop.out_w) / sx), min(h, (crop.top + crop.out_h) / sy))
  out = Image.fromarray(image).resize((crop.out_w, crop.out_h), Image.Resampling.BILINEAR, box=box)
  return np.asarray(out)


def crop_boxes(boxes: np.ndarray, height: int, width: int, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
  """Maps [N, 4] pixel boxes of an (height, width) image through `crop`.

  Returns:
    boxes [N, 4] float32 clipped to the crop, and nonempty [N] bool (False for boxes the crop cut
    away entirely).
  """
  scale = np.array([crop.resized_w / width, crop.resized_h / height] * 2, np.float32)
  shift = np.array([crop.left, crop.top] * 2, np.float32)
  limit = np.array([crop.out_w, crop.out_h] * 2, np.float32)
  out = np.clip(boxes * scale - shift, 0.0, limit).astype(np.float32)
  return out, nonempty_boxes(out)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 [..., 3] -> float32 (x / 255 - mean) / std, per channel."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (images.astype(np.float32) * np.float32(1 / 255) - mean) / std


# ----------------------------------------------------------------------------------------------
# grain transforms (module-level dataclasses so that worker processes can unpickle them).

@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """Record -> {"image": [S, S, 3] uint8, "label": [] int32} (SPEC A3), randomness from grain's
  per-record RNG (a function of the seed and the record's global position: worker count is moot)."""

  spec: DatasetSpec
  resize_short: int
  crop_size: int
  random_flip: bool
  keep_object: bool = False  # input.crop_keeps_object: crops contain the labelled object's box
  object_fraction: float = 1.0  # input.crop_object_fraction: ... at least this fraction of its area
  off_object_rate: float = 0.0  # input.off_object_crops: this share of crops holds little of it ...
  off_object_max_fraction: float = 0.5  # input.off_object_max_fraction: ... less than this fraction
  resize_short_max: int = 0  # input.resize_short_max: short side drawn from [resize_short, this]

  def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    example = decode_example(element, self.spec)
    h, w = example["image"].shape[:2]
    boxes = example["boxes"]
    keep_box = None
    if self.keep_object and len(boxes):  # the union of the boxes (one per classification image)
      keep_box = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])
    short = self.resize_short
    if self.resize_short_max > self.resize_short:
      short = int(rng.integers(self.resize_short, self.resize_short_max + 1))
    crop, label = None, example["label"]
    if keep_box is not None and self.off_object_rate > 0 and rng.random() < self.off_object_rate:
      crop = off_object_crop(h, w, short, self.crop_size, rng, keep_box, self.off_object_max_fraction)
      if crop is not None:
        label = OFF_OBJECT_LABEL
    if crop is None:
      crop = train_crop(h, w, short, self.crop_size, rng, keep_box, self.object_fraction)
    image = apply_crop(example["image"], crop)
    if self.random_flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return {"image": np.ascontiguousarray(image), "label": np.int32(label)}


@dataclasses.dataclass(frozen=True)
class NormalizeBatch(grain.transforms.Map):
  """Batch {"image": [B, H, W, 3] uint8, ...} -> the same with normalised float32 images. Padded
  examples (a `valid` entry False) become exact zeros, and so does the padding around each image
  when the batch says how large its images are ("size" [B, 2] (h, w))."""

  mean: tuple[float, ...]
  std: tuple[float, ...]

  def map(self, element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    images = normalize(element["image"], self.mean, self.std)
    if "valid" in element:
      images *= element["valid"][:, None, None, None]
    if "size" in element:  # (ops.resize.pixel_mask on device; the pipeline stays free of jax)
      _, h, w, _ = images.shape
      rows = np.arange(h)[None, :, None] < element["size"][:, 0, None, None]  # [B, H, 1]
      cols = np.arange(w)[None, None, :] < element["size"][:, 1, None, None]  # [B, 1, W]
      images *= (rows & cols)[..., None]
    return {**element, "image": images}


PADDING = None  # The record of a slot of the eval order past the last example of a bucket.
PAD_INDEX = -1  # EvalRecords.indices entry of such a slot.


@dataclasses.dataclass(frozen=True)
class EvalRecords:
  """Random-access source of the eval order: position i -> (record or PADDING, valid, bucket)."""

  source: Any
  indices: tuple[int, ...]  # Source index per position; PAD_INDEX for padding.
  bucket_ids: tuple[int, ...]  # Shape bucket per position (that of its batch, padding included).

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, position: int) -> tuple[Any, bool, int]:
    index, bucket = self.indices[position], self.bucket_ids[position]
    if index == PAD_INDEX:
      return PADDING, False, bucket
    return self.source[index], True, bucket


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """(record, valid, bucket) -> the whole image, resized (aspect kept) and padded into its bucket's
  canvas at the canvas scale (SPEC A4; geometry in `overfeat_jax.data.buckets`).

  Returns image [Hb, Wb, 3] uint8, (Hb, Wb) = `shape_buckets[bucket].canvas(scale)`, with the image in
  [0, h) x [0, w) and zeros elsewhere; size [2] int32 (h, w); original_size [2] int32, the decoded
  image's (height, width); bucket [] int32; label [] int32 (0 for padding); valid [] bool; and, when
  the dataset has boxes, boxes [M, 4] float32 canvas pixels, box_labels [M] int32 and box_valid [M]
  bool (M = max_boxes). A padding slot is a blank image filling the whole canvas.
  """

  spec: DatasetSpec
  shape_buckets: tuple[buckets.Bucket, ...]  # `buckets.make_buckets(config.eval.aspect_buckets)`
  scale: tuple[int, int]  # `buckets.canvas_scale(config.eval)`
  max_boxes: int

  def map(self, element: tuple[Any, bool, int]) -> dict[str, np.ndarray]:
    record, valid, bucket = element
    ch, cw = self.shape_buckets[bucket].canvas(self.scale)
    out = {"image": np.zeros((ch, cw, 3), np.uint8), "bucket": np.int32(bucket),
           "valid": np.bool_(valid)}
    if record is PADDING:
      canvas = np.array([ch, cw], np.int32)
      out.update(label=np.int32(0), size=canvas, original_size=canvas)
      if self.spec.has_boxes:
        boxes, labels, box_valid = pad_boxes(np.zeros((0, 4)), np.zeros((0,)), self.max_boxes)
        out.update(boxes=boxes, box_labels=labels, box_valid=box_valid)
      return out
    example = decode_example(record, self.spec)
    h, w = example["image"].shape[:2]
    size = buckets.scaled_size((h, w), self.scale, (ch, cw))  # [2] int32
    crop = whole_image(h, w, size)
    out["image"][:size[0], :size[1]] = apply_crop(example["image"], crop)
    out.update(label=example["label"], size=size, original_size=np.array([h, w], np.int32))
    if self.spec.has_boxes:
      boxes, nonempty = crop_boxes(example["boxes"], h, w, crop)
      boxes, labels, box_valid = pad_boxes(boxes[nonempty], example["box_labels"][nonempty],
                                           self.max_boxes)
      out.update(boxes=boxes, box_labels=labels, box_valid=box_valid)
    return out
