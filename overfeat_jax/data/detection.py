"""Detection batches: ground-truth boxes through the input pipeline, shared by every detector.

OverFeat localization / detection and Faster R-CNN take their batches from here and add only their
model, targets and loss.

- `detection_train_loader(config, process_index, process_count)`: an endless, deterministic,
  checkpointable stream of this host's training batches.
- `detection_eval_loader(config, process_index, process_count)`: the eval split once, in a fixed
  order, each bucket's last batch padded and masked (the batches `evaluation.DetectionEvaluator`
  reads).

Every view of an image is the WHOLE image, never a crop: resized, aspect kept, by
`buckets.min_max_size` (short side config.input.min_size unless the long side would pass
config.input.max_size; SPEC B5: 600 / 1000), in training flipped left to right with probability 1/2
when config.input.random_flip (the boxes move with it: x1' = w - x2, x2' = w - x1 in the resized
width w), then padded at the bottom and right into the canvas of its shape bucket
(`buckets.make_buckets(config.input.aspect_buckets)`, canvases `buckets.detection_canvases`). A
batch holds one bucket, so a jitted step compiles one program per bucket. Multi-scale training
(config.input.train_min_sizes, py-faster-rcnn's TRAIN.SCALES): each training image's short side is
drawn from those sizes instead of min_size, and the image shrunk, aspect kept, where it would not
fit its canvas (the canvases stay those of min_size, so a step costs what it did).

Batches of both loaders (B = the host's batch, M = config.input.max_boxes, (Hb, Wb) the canvas):
  image          [B, Hb, Wb, 3] float32, normalised ((x / 255 - mean) / std); zeros outside each
                 image and for padding examples.
  size           [B, 2] int32: (h, w) of the resized image, which fills [0, h) x [0, w).
  original_size  [B, 2] int32: (height, width) of the decoded image.
  scale          [B, 2] float32: (sy, sx) = size / original_size, network-input pixels per original
                 pixel, per axis (the rounding of `size` makes them differ slightly).
  boxes          [B, M, 4] float32: (x1, y1, x2, y2) in network-input pixels; zeros in padding.
  box_labels     [B, M] int32: the class in [0, K); PAD_LABEL (-1) in padding.
  box_valid      [B, M] bool: False in padding (an image without objects: all False).
  difficult      [B, M] bool: VOC's `is_difficult` (False for datasets without it, and in padding).
  iscrowd        [B, M] bool: COCO's `is_crowd` (likewise).
  image_id       [B] int32: the dataset's image id (`DatasetSpec.image_id_key`, COCO's `image/id`),
                 else the record's index in the split read; PAD_IMAGE_ID for padding examples.
  bucket         [B] int32: the shape bucket (one value per batch).
  valid          [B] bool: False for the padding examples of an eval bucket's last batch (training
                 batches hold none).

Ground truth, at the pipeline's edge (DESIGN "Data"):
  - Boxes arrive as TFDS's normalised (ymin, xmin, ymax, xmax), a list of (4,) arrays or stacked.
  - Repaired: a swapped pair (ymin > ymax, which only `tfds.testing.mock_data` makes) is sorted; a
    box reaching outside the image is clipped to it.
  - Dropped: a box of zero width or height after that (on a line, entirely outside the image, not
    finite). No detector can learn or match such a box (the evaluator would drop it too).
  - Truncated: an image with more than M boxes keeps its M largest (by area), in their order.
  Before batching, each loader reads every record of its split once (every host does: the shape
  buckets fix the batch order) and warns once about what it repaired, dropped and truncated, with the
  counts and the first image ids. An image without boxes (or with dropped ones only) trains and
  evaluates like any other, its ground truth all padding.

Training order. Each epoch (rng seeded with (config.seed, epoch)): shuffle the split's records,
split them into their shape buckets keeping the shuffled order, cut each bucket into global batches
of config.input.batch_size, DROP each bucket's incomplete last batch (other records every epoch;
a bucket with fewer images than a batch never trains, which the loader warns about), shuffle the
order of the batches, and draw a flip per example. Host p takes slots [p * B, (p + 1) * B) of each
global batch, so every host runs the same bucket at each step. The order is a pure function of the
config and the position in the stream, so a restored iterator position (`get_state()` /
`set_state()`) continues with exactly the batches an uninterrupted run would see, for any number of
workers.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from overfeat_jax.data import buckets, pipeline, transforms
from overfeat_jax.data.registry import DatasetSpec, get_dataset_spec
from overfeat_jax.errors import DataError
from overfeat_jax.ops.boxes import flip_boxes

PAD_IMAGE_ID = -1  # `image_id` of a padding example (its `valid` entry is False).
_MAX_IMAGE_ID = 2**31 - 1  # Image ids travel as int32 (jax's default integer type).
_SHOWN_IDS = 5  # Image ids a warning names.

# (record index or transforms.PAD_INDEX, shape bucket, flip[, short side]): the optional short side
# (input.train_min_sizes' draw) replaces input.min_size for that example.
Slot = tuple[int, int, bool] | tuple[int, int, bool, int]


# ----------------------------------------------------------------------------------------------
# What the loaders read of every record before batching.

@dataclasses.dataclass(frozen=True)
class SplitSummary:
  """The first N records of a split as the loaders see them before batching.

  Attributes:
    what: e.g. "voc/2007 split 'test'", for messages.
    sizes: int64 [N, 2] (height, width) of each image.
    image_ids: int64 [N] (see `transforms.image_id`).
    num_objects: int64 [N] boxes kept (repaired or not), before truncation to max_boxes.
    num_repaired: int64 [N] of those, boxes that were sorted or clipped.
    num_dropped: int64 [N] boxes dropped (zero width or height after repair).
  """

  what: str
  sizes: np.ndarray
  image_ids: np.ndarray
  num_objects: np.ndarray
  num_repaired: np.ndarray
  num_dropped: np.ndarray

  def bucket_ids(self, bounds: Sequence[float]) -> list[int]:
    """The shape bucket of each image among `buckets.make_buckets(bounds)`."""
    return [buckets.bucket_index(h, w, bounds) for h, w in self.sizes]


def summarise_split(source: Any, num_examples: int, spec: DatasetSpec, what: str) -> SplitSummary:
  """Reads the first `num_examples` records once (in threads) for their sizes, ids and boxes.

  Raises:
    DataError: a record lacks a feature, or an image id is outside [0, 2**31).
  """
  def one(record: Mapping[str, Any], index: int) -> tuple[int, ...]:
    h, w = transforms.image_size(record, spec)
    repaired, dropped = transforms.box_defects(transforms.object_columns(record, spec)["bbox"], h, w)
    return (h, w, transforms.image_id(record, spec, index), int((~dropped).sum()), int(repaired.sum()),
            int(dropped.sum()))

  rows = np.array(pipeline.map_records(source, num_examples, one), np.int64).reshape(-1, 6)
  ids = rows[:, 2]
  bad = np.flatnonzero((ids < 0) | (ids > _MAX_IMAGE_ID))
  if len(bad):
    raise DataError(f"{what}: record {bad[0]} has image id {ids[bad[0]]}, outside [0, 2**31)")
  return SplitSummary(what=what, sizes=rows[:, :2], image_ids=ids, num_objects=rows[:, 3],
                      num_repaired=rows[:, 4], num_dropped=rows[:, 5])


def _ids(image_ids: np.ndarray, counts: np.ndarray | None = None) -> str:
  """'3, 17 (20 objects), ...': the first _SHOWN_IDS ids, with counts when given."""
  shown = [str(i) for i in image_ids[:_SHOWN_IDS]]
  if counts is not None:
    shown = [f"{i} ({c} objects)" for i, c in zip(shown, counts)]
  return ", ".join(shown) + (", ..." if len(image_ids) > _SHOWN_IDS else "")


def warn_about_boxes(summary: SplitSummary, max_boxes: int) -> None:
  """Warns (UserWarning, at most one of each kind) about repaired, dropped and truncated boxes."""
  fixed = (summary.num_repaired > 0) | (summary.num_dropped > 0)
  if fixed.any():
    warnings.warn(
        f"{summary.what}: {summary.num_repaired.sum()} ground-truth boxes repaired (a swapped "
        f"min / max sorted, or clipped to the image) and kept, {summary.num_dropped.sum()} dropped "
        f"(zero width or height after that), in {fixed.sum()} of {len(fixed)} images (image ids "
        f"{_ids(summary.image_ids[fixed])})", stacklevel=4)
  over = summary.num_objects > max_boxes
  if over.any():
    warnings.warn(
        f"{summary.what}: {over.sum()} of {len(over)} images have more objects than "
        f"input.max_boxes={max_boxes} (up to {summary.num_objects.max()}); each keeps its "
        f"{max_boxes} largest: image ids {_ids(summary.image_ids[over], summary.num_objects[over])}",
        stacklevel=4)


# ----------------------------------------------------------------------------------------------
# Per example.

@dataclasses.dataclass(frozen=True)
class DetectionRecords:
  """Random-access source of a loader's slots: position -> (index, record or PADDING, bucket, flip).

  `slots[position]` is a `Slot`; PAD_INDEX slots (an eval bucket's last batch) read nothing.
  """

  source: Any
  slots: Sequence[Slot]

  def __len__(self) -> int:
    return len(self.slots)

  def __getitem__(self, position: int) -> tuple[Any, ...]:
    index, *rest = self.slots[position]
    record = transforms.PADDING if index == transforms.PAD_INDEX else self.source[index]
    return (index, record, *rest)


@dataclasses.dataclass(frozen=True)
class DetectionTransform(grain.transforms.Map):
  """(index, record or PADDING, bucket, flip[, short side]) -> one example of a detection batch
  (uint8 image).

  The keys and rules are the module docstring's, per example (no leading B). A padding example is a
  blank canvas with size = original_size = the canvas, scale 1 and no boxes. A short side given in
  the element replaces `min_size`, and the image is then shrunk where needed to fit the canvas.
  """

  spec: DatasetSpec
  canvases: tuple[tuple[int, int], ...]  # `buckets.detection_canvases(...)`, per bucket.
  min_size: int
  max_size: int
  max_boxes: int

  def map(self, element: tuple[Any, ...]) -> dict[str, np.ndarray]:
    index, record, bucket, flip, *short_side = element
    image = np.zeros(self.canvases[bucket] + (3,), np.uint8)  # [Hb, Wb, 3]
    if record is transforms.PADDING:
      canvas = np.array(self.canvases[bucket], np.int32)
      objects = {"boxes": np.zeros((0, 4), np.float32), "box_labels": np.zeros((0,), np.int32),
                 "difficult": np.zeros((0,), bool), "iscrowd": np.zeros((0,), bool)}
      return {"image": image, "size": canvas, "original_size": canvas,
              "scale": np.ones(2, np.float32), **transforms.pad_objects(objects, self.max_boxes),
              "image_id": np.int32(PAD_IMAGE_ID), "bucket": np.int32(bucket), "valid": np.bool_(False)}
    example = transforms.decode_example(record, self.spec)
    h, w = example["image"].shape[:2]
    size = buckets.min_max_size((h, w), short_side[0] if short_side else self.min_size,
                                self.max_size)  # [2] int32
    size = buckets.fit_in_canvas((h, w), size, self.canvases[bucket])  # (at min_size it fits)
    crop = transforms.whole_image(h, w, size)
    resized = transforms.apply_crop(example["image"], crop)  # [h', w', 3]
    keep = transforms.nonempty_boxes(example["boxes"])
    boxes, _ = transforms.crop_boxes(example["boxes"][keep], h, w, crop)  # [N, 4] scaled per axis.
    if flip:
      resized = resized[:, ::-1]
      boxes = flip_boxes(boxes, np.float32(size[1]))
    image[:size[0], :size[1]] = resized
    objects = {"boxes": boxes, "box_labels": example["box_labels"][keep],
               "difficult": example["difficult"][keep], "iscrowd": example["iscrowd"][keep]}
    return {"image": image, "size": size, "original_size": np.array([h, w], np.int32),
            "scale": (size / np.array([h, w], np.float64)).astype(np.float32),
            **transforms.pad_objects(objects, self.max_boxes),
            "image_id": np.int32(transforms.image_id(record, self.spec, index)), "bucket": np.int32(bucket),
            "valid": np.bool_(True)}


# ----------------------------------------------------------------------------------------------
# Training order (module docstring).

def epoch_batches(bucket_ids: np.ndarray, num_buckets: int, global_batch: int, seed: int,
                  epoch: int, random_flip: bool, min_sizes: Sequence[int] = ()
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """One epoch's global training batches, each of one shape bucket (module docstring).

  Args:
    bucket_ids: int [N], the shape bucket of each record of the split.
    num_buckets: the number of buckets; global_batch: B.
    seed, epoch: the epoch's rng is seeded with (seed, epoch).
    random_flip: draw a flip per example (else none is flipped).
    min_sizes: draw each example's short side from these, uniformly (after the flips, so that
      without them the batches and flips are the same).
  Returns:
    indices int64 [S, B]: the records of each batch, S = sum over buckets of (count // B);
    flips bool [S, B]; short sides int64 [S, B], or None without `min_sizes`.
  """
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(len(bucket_ids))
  batches = []
  for bucket in range(num_buckets):
    members = order[bucket_ids[order] == bucket]
    whole = len(members) // global_batch
    batches.append(members[:whole * global_batch].reshape(whole, global_batch))
  indices = np.concatenate(batches)[rng.permutation(sum(len(b) for b in batches))]
  flips = rng.random(indices.shape) < 0.5 if random_flip else np.zeros(indices.shape, bool)
  sizes = rng.choice(np.asarray(min_sizes, np.int64), indices.shape) if len(min_sizes) else None
  return indices.astype(np.int64), flips, sizes


class TrainSchedule:
  """This host's endless training order: position -> `Slot` (a sequence, for grain).

  Position j of host p is slot p * B_host + j % B_host of global batch j // B_host (all epochs in a
  row); each epoch's batches are `epoch_batches(...)`, computed when first needed (the two latest
  are kept).
  """

  def __init__(self, bucket_ids: Sequence[int], num_buckets: int, global_batch: int, *,
               process_index: int, process_count: int, seed: int, random_flip: bool,
               min_sizes: Sequence[int] = ()):
    self.bucket_ids = np.asarray(bucket_ids, np.int64)
    self.num_buckets = num_buckets
    self.global_batch = global_batch
    self.host_batch = global_batch // process_count
    self.first_slot = process_index * self.host_batch
    self.seed = seed
    self.random_flip = random_flip
    self.min_sizes = tuple(int(v) for v in min_sizes)
    counts = np.bincount(self.bucket_ids, minlength=num_buckets)
    self.steps_per_epoch = int((counts // global_batch).sum())
    self._epochs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

  def __len__(self) -> int:
    return sys.maxsize - sys.maxsize % self.host_batch  # Endless, in whole batches.

  def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`epoch_batches(...)` of one epoch (cached)."""
    cached = self._epochs.get(epoch)
    if cached is None:
      cached = epoch_batches(self.bucket_ids, self.num_buckets, self.global_batch, self.seed, epoch,
                             self.random_flip, self.min_sizes)
      self._epochs[epoch] = cached
      for old in [e for e in list(self._epochs) if e < epoch - 1]:
        self._epochs.pop(old, None)
    return cached

  def __getitem__(self, position: int) -> Slot:
    step, j = divmod(position, self.host_batch)
    epoch, row = divmod(step, self.steps_per_epoch)
    indices, flips, sizes = self.epoch(epoch)
    column = self.first_slot + j
    index = int(indices[row, column])
    slot = (index, int(self.bucket_ids[index]), bool(flips[row, column]))
    return slot if sizes is None else slot + (int(sizes[row, column]),)


# ----------------------------------------------------------------------------------------------
# Loaders.

class DetectionIterator:
  """Host-local detection batches; `get_state()` / `set_state()` give and take the position as JSON
  bytes (what `grain.checkpoint.CheckpointHandler` saves for a non-grain iterator)."""

  def __init__(self, batches: grain.DatasetIterator):
    self._batches = batches

  def __iter__(self) -> DetectionIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    """One batch (module docstring)."""
    return next(self._batches)

  def get_state(self) -> bytes:
    """The position in the stream, taken between batches."""
    return json.dumps(self._batches.get_state()).encode()

  def set_state(self, state: bytes) -> None:
    """Continues from a position taken by `get_state()` (of any iterator of an equal loader)."""
    self._batches.set_state(json.loads(state))

  def start_prefetch(self) -> None:
    """Starts reading ahead now where grain supports it (its checkpoint handler calls this)."""
    start = getattr(self._batches, "start_prefetch", None)
    if start is not None:
      start()

  def close(self) -> None:
    """Stops worker processes now rather than at garbage collection."""
    close = getattr(self._batches, "close", None)
    if close is not None:
      close()


@dataclasses.dataclass(frozen=True)
class DetectionLoader:
  """The batches of one detection loader; `iter()` starts again from its first batch.

  Attributes:
    dataset: the grain MapDataset of this host's batches (endless for training).
    batch_size: B_host.
    num_examples: records of the split it reads (all hosts; eval: without padding).
    num_batches: batches per host: per epoch for training, in all for evaluation.
    shape_buckets: `buckets.make_buckets(config.input.aspect_buckets)`.
    canvases: (height, width) of each bucket's canvas (`buckets.detection_canvases`).
    bucket_counts: records per bucket (all hosts).
    read_options, num_workers: how iteration reads (threads, worker processes).
  """

  dataset: grain.MapDataset
  batch_size: int
  num_examples: int
  num_batches: int
  shape_buckets: tuple[buckets.Bucket, ...]
  canvases: tuple[tuple[int, int], ...]
  bucket_counts: tuple[int, ...]
  read_options: grain.ReadOptions
  num_workers: int

  def __iter__(self) -> DetectionIterator:
    return DetectionIterator(
        pipeline.iterate_batches(self.dataset, self.read_options, self.num_workers))


@dataclasses.dataclass(frozen=True)
class DetectionTrainLoader(DetectionLoader):
  """An endless training stream (num_batches = steps_per_epoch)."""

  @property
  def steps_per_epoch(self) -> int:
    """Optimizer steps per epoch: sum over buckets of (records // input.batch_size)."""
    return self.num_batches


@dataclasses.dataclass(frozen=True)
class DetectionEvalLoader(DetectionLoader):
  """The eval split once: buckets in index order, within a bucket the records in split order, in
  global batches of input.eval_batch_size (each bucket's last one padded; host p takes slots
  [p * B_host, (p + 1) * B_host) of each, as `pipeline.eval_order`)."""

  def __len__(self) -> int:
    return self.num_batches


@dataclasses.dataclass(frozen=True)
class _Split:
  """A split read for a detection loader: its source, summary and shape buckets."""

  spec: DatasetSpec
  source: Any
  summary: SplitSummary
  shape_buckets: tuple[buckets.Bucket, ...]
  canvases: tuple[tuple[int, int], ...]
  bucket_ids: tuple[int, ...]

  @property
  def bucket_counts(self) -> tuple[int, ...]:
    return tuple(self.bucket_ids.count(i) for i in range(len(self.shape_buckets)))


def _read_split(config: ml_collections.ConfigDict, split: str, *, evaluation: bool,
                process_index: int, process_count: int) -> _Split:
  """Checks, loads and summarises a split: all of it, or for evaluation its first
  config.eval.num_examples records when > 0."""
  pipeline.check_process(process_index, process_count)
  pipeline.prepare_workers(config.input.num_workers)
  spec = get_dataset_spec(config.dataset.name)
  if not spec.has_boxes:
    raise DataError(f"detection batches need ground-truth boxes, and {spec.name} has none")
  source = pipeline.load_source(config.dataset, split)
  n = pipeline.eval_count(config, len(source)) if evaluation else len(source)
  if n == 0:
    raise DataError(f"{spec.name} split {split!r} is empty")
  summary = summarise_split(source, n, spec, f"{spec.name} split {split!r}")
  if process_index == 0:  # every host reads the whole split: one warning, from host 0
    warn_about_boxes(summary, config.input.max_boxes)
  inp = config.input
  bounds = tuple(inp.aspect_buckets)
  return _Split(spec=spec, source=source, summary=summary, shape_buckets=buckets.make_buckets(bounds),
                canvases=buckets.detection_canvases(bounds, inp.min_size, inp.max_size),
                bucket_ids=tuple(summary.bucket_ids(bounds)))


def _batches(config: ml_collections.ConfigDict, split: _Split, slots: Sequence[Slot],
             batch_size: int) -> grain.MapDataset:
  inp = config.input
  transform = DetectionTransform(spec=split.spec, canvases=split.canvases, min_size=inp.min_size,
                                 max_size=inp.max_size, max_boxes=inp.max_boxes)
  return (grain.MapDataset.source(DetectionRecords(split.source, slots))
          .map(transform)
          .batch(batch_size, drop_remainder=True)
          .map(transforms.NormalizeBatch(mean=tuple(inp.mean), std=tuple(inp.std))))


def detection_train_loader(config: ml_collections.ConfigDict, *, process_index: int = 0,
                           process_count: int = 1) -> DetectionTrainLoader:
  """This host's endless stream of detection training batches (module docstring).

  `iter(loader)` gives a `DetectionIterator`; config.input.prefetch batches are read ahead (as
  many threads), in config.input.num_workers worker processes when > 0.

  Raises:
    ConfigError: bad process index, or input.batch_size not divisible by process_count.
    DataError: see `pipeline.load_source`; a dataset without boxes; an empty split; no bucket with
      a whole batch of images.
  """
  global_batch = config.input.batch_size
  batch = pipeline.host_batch_size(global_batch, process_count, "input.batch_size")
  split = _read_split(config, config.dataset.train_split, evaluation=False,
                      process_index=process_index, process_count=process_count)
  schedule = TrainSchedule(split.bucket_ids, len(split.shape_buckets), global_batch,
                           process_index=process_index, process_count=process_count,
                           seed=config.seed, random_flip=bool(config.input.random_flip),
                           min_sizes=tuple(config.input.train_min_sizes))
  what = split.summary.what
  if schedule.steps_per_epoch == 0:
    raise DataError(
        f"{what}: no shape bucket holds a whole batch of input.batch_size={global_batch} images "
        f"(images per bucket: {split.bucket_counts}); lower the batch size or use fewer "
        f"input.aspect_buckets")
  unused = [f"{b.name}: {n}" for b, n in zip(split.shape_buckets, split.bucket_counts)
            if 0 < n < global_batch]
  if unused and process_index == 0:  # the same on every host
    warnings.warn(f"{what}: images of buckets smaller than input.batch_size={global_batch} are "
                  f"never trained on ({', '.join(unused)})", stacklevel=2)
  return DetectionTrainLoader(
      dataset=_batches(config, split, schedule, batch), batch_size=batch,
      num_examples=len(split.bucket_ids), num_batches=schedule.steps_per_epoch,
      shape_buckets=split.shape_buckets, canvases=split.canvases,
      bucket_counts=split.bucket_counts, read_options=pipeline.read_options(config.input.prefetch),
      num_workers=config.input.num_workers)


def detection_eval_loader(config: ml_collections.ConfigDict, *, process_index: int = 0,
                          process_count: int = 1) -> DetectionEvalLoader:
  """This host's detection eval batches of config.dataset.eval_split (the first
  config.eval.num_examples when > 0), never flipped (module docstring, `DetectionEvalLoader`).

  Raises:
    ConfigError: bad process index or input.eval_batch_size. DataError: see `pipeline.load_source`;
    a dataset without boxes; an empty split; an image id seen twice.
  """
  global_batch = config.input.eval_batch_size
  batch = pipeline.host_batch_size(global_batch, process_count, "input.eval_batch_size")
  split = _read_split(config, config.dataset.eval_split, evaluation=True,
                      process_index=process_index, process_count=process_count)
  ids, counts = np.unique(split.summary.image_ids, return_counts=True)
  if (counts > 1).any():
    twice = ids[counts > 1][0]
    raise DataError(f"{split.summary.what}: image id {twice} is that of records "
                    f"{np.flatnonzero(split.summary.image_ids == twice).tolist()}; ids must be unique")
  order, slot_buckets = pipeline.eval_order(split.bucket_ids, global_batch, process_index,
                                            process_count)
  slots = tuple((index, bucket, False) for index, bucket in zip(order, slot_buckets))
  return DetectionEvalLoader(
      dataset=_batches(config, split, slots, batch), batch_size=batch,
      num_examples=len(split.bucket_ids), num_batches=len(slots) // batch,
      shape_buckets=split.shape_buckets, canvases=split.canvases,
      bucket_counts=split.bucket_counts, read_options=pipeline.read_options(config.input.prefetch),
      num_workers=config.input.num_workers)
