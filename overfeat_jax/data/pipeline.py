"""Input pipeline: TFDS array_record sources read through grain (DESIGN "Data").

- `load_source`: the random-access `tfds.data_source` of one split (our builders are generated on
  first use; external datasets must have been prepared with `tfds build ... --file_format=array_record`).
- `train_loader`: an infinite, deterministically shuffled stream of augmented classification batches
  (SPEC A3) over a `grain.DataLoader`, each host reading its slots of every global batch, with
  checkpointable iterator state.
- `eval_loader`: the eval split in a fixed order grouped by shape bucket, each WHOLE image resized
  (aspect kept) and padded into its bucket's canvas (SPEC A4, `overfeat_jax.data.buckets`); the last
  batch of each bucket padded and masked.

Workers: `config.input.num_workers > 0` runs the transforms in grain worker processes. Python starts
those by re-importing the main module, so a script that builds a loader with workers must guard its
entry point with `if __name__ == "__main__":`. Results do not depend on the worker count.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grain
import ml_collections
import numpy as np
from absl import flags

from overfeat_jax.data import buckets, transforms
from overfeat_jax.data.registry import DatasetSpec, get_dataset_spec
# Part of this module's API (defined with the other per-example transforms).
from overfeat_jax.data.transforms import NO_LABEL, PAD_LABEL, decode_example, pad_boxes  # noqa: F401
from overfeat_jax.errors import ConfigError, DataError, reason

_MAX_READ_THREADS = 16  # grain's default reader thread count.
T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# Sources.

def _load_local(spec: DatasetSpec, dataset_cfg: ml_collections.ConfigDict, split: str) -> Any:
  """Our own builder: generated into the data dir on first use when dataset_cfg.prepare."""
  from overfeat_jax.data.builders import digits_in_scenes  # Registers the builder with TFDS.

  config_name = spec.name.split("/", 1)[1]
  if dataset_cfg.prepare:
    try:
      builder = digits_in_scenes.prepare(config_name, dataset_cfg.data_dir)
    except OSError as e:  # e.g. a read-only or full data dir
      where = dataset_cfg.data_dir or "the default TFDS data dir"
      raise DataError(f"cannot generate dataset {spec.name} in {where}: {reason(e)} ({e.filename})") from e
  else:
    builder = digits_in_scenes.DigitsInScenes(config=config_name, data_dir=dataset_cfg.data_dir or None)
    if not builder.is_prepared():
      raise DataError(
          f"dataset {spec.name} is not prepared in {builder.data_dir}; set config.dataset.prepare=True "
          "to generate it (locally, no download)")
  try:
    return builder.as_data_source(split=split)
  except (ValueError, KeyError) as e:
    raise DataError(f"dataset {spec.name} has no split {split!r} ({e})") from e


def _load_external(spec: DatasetSpec, dataset_cfg: ml_collections.ConfigDict, split: str) -> Any:
  """A TFDS dataset prepared by the user. Never downloads or builds anything.

  Prepared files are read by a builder restored from them (no dataset code, so builders whose code
  needs TensorFlow still load); without files, the code builder is tried (this is also the path
  `tfds.testing.mock_data` patches), and its failure means "not prepared".
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import read_only_builder, registered

  data_dir = dataset_cfg.data_dir or None
  not_prepared = (
      f"dataset {spec.name} is not prepared as array_record files in "
      f"{dataset_cfg.data_dir or 'the default TFDS data dir'}; prepare it (it needs the download or "
      f"manual files TFDS documents for {spec.name}) with:\n  {spec.build_command(dataset_cfg.data_dir)}")
  try:
    builder = read_only_builder.builder_from_files(spec.name, data_dir=data_dir)
  except registered.DatasetNotFoundError:
    try:
      builder = tfds.builder(spec.name, data_dir=data_dir)
    except (registered.DatasetNotFoundError, ImportError) as e:
      raise DataError(f"{not_prepared}\n({e})") from e
  try:
    return builder.as_data_source(split=split)
  except (ValueError, KeyError, NotImplementedError, FileNotFoundError, AssertionError) as e:
    # TFDS's own message is only informative when something is there (e.g. tfrecord files).
    detail = f"\n(split {split!r}: {e})" if builder.is_prepared() else ""
    raise DataError(not_prepared + detail) from e


def load_source(dataset_cfg: ml_collections.ConfigDict, split: str) -> Any:
  """The random-access source (`tfds.data_source`) of one split of config.dataset.name.

  Args:
    dataset_cfg: config.dataset (name, data_dir, num_classes, prepare).
    split: a TFDS split ("train", "test", "train[:10%]", ...).
  Returns:
    A sequence of records (dicts of numpy arrays) with `len()` and `[i]`.
  Raises:
    DataError: unknown dataset; a data_dir that is a file or cannot be written where our dataset
      must be generated; external dataset not prepared (the message gives the `tfds build`
      command); our dataset missing with prepare=False; unknown split; num_classes mismatch.
  """
  spec = get_dataset_spec(dataset_cfg.name)
  data_dir = dataset_cfg.data_dir
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f"config.dataset.data_dir={data_dir} is a file, not a directory")
  if dataset_cfg.num_classes != spec.num_classes:
    raise DataError(
        f"config.dataset.num_classes={dataset_cfg.num_classes} but {spec.name} has "
        f"{spec.num_classes} classes")
  if spec.local:
    source = _load_local(spec, dataset_cfg, split)
  else:
    source = _load_external(spec, dataset_cfg, split)
  _check_classes(spec, source)
  return source


def _check_classes(spec: DatasetSpec, source: Any) -> None:
  """The class count the data itself declares must match the registry."""
  features = getattr(getattr(source, "dataset_info", None), "features", None)
  if features is None:
    return
  key = spec.label_key or spec.box_labels_key
  if key is None:
    return
  feature = features
  for part in key.split("/"):
    feature = feature[part]
  feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) -> ClassLabel.
  declared = getattr(feature, "num_classes", None)
  if declared is not None and declared != spec.num_classes:
    raise DataError(f"{spec.name}: feature {key!r} has {declared} classes, expected {spec.num_classes}")


# ----------------------------------------------------------------------------------------------
# Config checks and sizes.

def host_batch_size(global_batch: int, process_count: int, key: str) -> int:
  """global_batch / process_count; ConfigError naming `key` unless it divides evenly."""
  if global_batch <= 0 or global_batch % process_count:
    raise ConfigError(
        f"config.{key}={global_batch} must be a positive multiple of the process count "
        f"({process_count})")
  return global_batch // process_count


def train_steps_per_epoch(config: ml_collections.ConfigDict, num_records: int) -> int:
  """Optimizer steps per epoch: num_records // config.input.batch_size (the remainder is skipped)."""
  return num_records // config.input.batch_size


def check_process(process_index: int, process_count: int) -> None:
  """ConfigError unless 0 <= process_index < process_count."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} must be in [0, process_count={process_count})")


def prepare_workers(num_workers: int) -> None:
  """grain's worker processes read absl flags (with defaults); outside an absl app (notebooks,
  tests) nobody has parsed them, so mark them parsed, as `absl.app.run` would have done."""
  if num_workers > 0 and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def read_options(buffer: int) -> grain.ReadOptions:
  """Reader threads and a read-ahead of `buffer` records (0 = read synchronously)."""
  return grain.ReadOptions(num_threads=min(_MAX_READ_THREADS, buffer), prefetch_buffer_size=buffer)


# ----------------------------------------------------------------------------------------------
# Training.

class TrainIterator:
  """Host-local training batches; checkpointable like the `grain.DataLoaderIterator` it wraps.

  The wrapped iterator yields single augmented examples in the sampler's global order (grain keeps
  that order for any worker count); batches are stacked here, in the main process, so they are
  identical for any config.input.num_workers. `get_state()` is taken between batches, so a restored
  iterator continues with the next batch. (A state restores only into a loader with the same
  num_workers: grain checks it.)
  """

  def __init__(self, examples: grain.DataLoaderIterator, batch_size: int,
               mean: tuple[float, ...], std: tuple[float, ...]):
    self._examples = examples
    self._batch_size = batch_size
    self._mean = mean
    self._std = std

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    """{"image": [B_host, S, S, 3] float32 normalised, "label": [B_host] int32}."""
    examples = [next(self._examples) for _ in range(self._batch_size)]
    images = np.stack([e["image"] for e in examples])  # [B, S, S, 3] uint8
    labels = np.array([e["label"] for e in examples], np.int32)
    return {"image": transforms.normalize(images, self._mean, self._std), "label": labels}

  def get_state(self) -> bytes:
    """The position in the stream (grain's JSON bytes; `grain.checkpoint.CheckpointHandler` saves it)."""
    return self._examples.get_state()

  def set_state(self, state: bytes) -> None:
    """Continues from a position taken by `get_state()` (of any iterator of an equal loader)."""
    self._examples.set_state(state)

  def start_prefetch(self) -> None:
    """Starts reading ahead now (grain's checkpoint handler calls this after restoring)."""
    self._examples.start_prefetch()

  def close(self) -> None:
    """Stops reader threads and worker processes now rather than at garbage collection (which, at
    interpreter exit, comes too late for grain's workers to shut down quietly)."""
    inner = getattr(self._examples, "_iterator", None)  # grain.DataLoaderIterator has no close().
    if inner is not None:
      inner.close()


class HostSlots:
  """A grain sampler: one host's slots of every global batch of another sampler's order.

  Position j of host p is position (j // B_host) * B + p * B_host + j % B_host of `sampler` (B the
  global batch, B_host = B / process_count): the hosts' batches, stacked in process order, are the
  global batch one process would read, with the same records and augmentation (grain draws it from
  the sampler position), so a run's batches do not depend on how many processes read them.
  """

  def __init__(self, sampler: grain.samplers.IndexSampler, *, global_batch: int, process_index: int,
               process_count: int):
    self.sampler = sampler
    self.global_batch = global_batch
    self.host_batch = global_batch // process_count
    self.first_slot = process_index * self.host_batch
    self.process_count = process_count

  def __len__(self) -> int:
    return len(self.sampler) // self.process_count

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    step, slot = divmod(index, self.host_batch)
    return self.sampler[step * self.global_batch + self.first_slot + slot]

  def __repr__(self) -> str:  # grain checks a restored iterator's sampler by its repr
    return (f"HostSlots({self.sampler!r}, global_batch={self.global_batch}, "
            f"first_slot={self.first_slot}, process_count={self.process_count})")


@dataclasses.dataclass(frozen=True)
class TrainLoader:
  """An infinite training stream; each `iter()` starts a fresh `TrainIterator` at step 0.

  Attributes:
    examples: the grain.DataLoader of single augmented examples (uint8 images).
    batch_size: B_host.
    mean, std: per-channel normalisation.
    num_records: records of the split (each epoch visits each once, over all hosts).
  """

  examples: grain.DataLoader
  batch_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_records: int

  def __iter__(self) -> TrainIterator:
    return TrainIterator(iter(self.examples), self.batch_size, self.mean, self.std)


def train_loader(config: ml_collections.ConfigDict, *, process_index: int = 0,
                 process_count: int = 1) -> TrainLoader:
  """The infinite training stream of this host (SPEC A3).

  `iter(loader)` gives a `TrainIterator` (`get_state()` / `set_state()` for checkpoints) of batches
  {"image": [B_host, S, S, 3] float32 normalised ((x / 255 - mean) / std), "label": [B_host] int32},
  S = config.input.crop_size, B_host = config.input.batch_size / process_count. Each epoch is a
  fresh shuffle (from config.seed) of all records, read in global batches of config.input.batch_size;
  host p gets slots p * B_host .. (p + 1) * B_host - 1 of each (`HostSlots`). Augmentation draws from
  grain's per-record RNG, a function of config.seed and the record's position in the global stream
  only, so the global batches are the same for any process count.

  Raises:
    ConfigError: bad input config, or a batch size not divisible by process_count.
    DataError: see `load_source`; or a dataset without image-level labels.
  """
  check_process(process_index, process_count)
  prepare_workers(config.input.num_workers)
  spec = get_dataset_spec(config.dataset.name)
  if spec.label_key is None:
    raise DataError(
        f"train_loader makes classification batches, but {spec.name} has no image-level label")
  batch = host_batch_size(config.input.batch_size, process_count, "input.batch_size")
  source = load_source(config.dataset, config.dataset.train_split)
  # One process reads grain's plain sampler (so checkpoints of earlier versions still resume: grain
  # checks the sampler's repr); several read their slots of its global batches.
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.ShardOptions(0, 1, drop_remainder=True),
      shuffle=True, num_epochs=None, seed=config.seed)
  if process_count > 1:
    sampler = HostSlots(sampler, global_batch=config.input.batch_size, process_index=process_index,
                        process_count=process_count)
  inp = config.input
  augment = transforms.TrainTransform(
      spec=spec, resize_short=inp.resize_short, crop_size=inp.crop_size,
      random_flip=bool(inp.random_flip), keep_object=bool(inp.crop_keeps_object),
      object_fraction=float(inp.crop_object_fraction),
      off_object_rate=float(inp.off_object_crops),
      off_object_max_fraction=float(inp.off_object_max_fraction),
      resize_short_max=int(inp.resize_short_max))
  read_ahead = inp.prefetch * batch  # Examples.
  examples = grain.DataLoader(
      data_source=source,
      sampler=sampler,
      operations=[augment],
      worker_count=inp.num_workers,
      worker_buffer_size=max(1, math.ceil(read_ahead / max(1, inp.num_workers))),
      shard_options=grain.sharding.NoSharding(),  # the sampler holds this host's positions
      read_options=read_options(read_ahead),
  )
  return TrainLoader(examples=examples, batch_size=batch, mean=tuple(inp.mean), std=tuple(inp.std),
                     num_records=len(source))


# ----------------------------------------------------------------------------------------------
# Evaluation.

@dataclasses.dataclass(frozen=True)
class EvalLoader:
  """The eval batches of one host; iterable any number of times (same batches each time).

  Each batch holds one shape bucket (`overfeat_jax.data.buckets`): {"image": [B_host, Hb, Wb, 3]
  float32 normalised, each whole image in the top-left corner of its bucket's canvas (Hb, Wb) =
  `shape_buckets[bucket].canvas(scale)`, zeros in the padding and for padded examples; "size" [B_host, 2]
  int32, the image's (h, w) in the canvas; "original_size" [B_host, 2] int32, its decoded size;
  "bucket" [B_host] int32 (one value); "label" [B_host] int32; "valid" [B_host] bool} and, for
  datasets with boxes, "boxes" [B_host, M, 4] float32 canvas pixels, "box_labels" [B_host, M] int32,
  "box_valid" [B_host, M] bool.
  Order: the buckets in index order; within a bucket its examples in split order, in global batches
  of B = config.input.eval_batch_size (the last one padded); host p gets slots p * B_host ..
  (p + 1) * B_host - 1 of each global batch, so every host has the same number of batches and the
  same bucket at each step.

  Attributes:
    dataset: the grain MapDataset of batches.
    num_examples: real examples over all hosts (padding excluded).
    num_batches: batches per host (the same on every host).
    batch_size: B_host.
    shape_buckets: the shape buckets (`buckets.make_buckets(config.eval.aspect_buckets)`).
    scale: the canvas scale the images are delivered at (`buckets.canvas_scale(config.eval)`).
    bucket_counts: real examples per bucket (all hosts).
    read_options, num_workers: how iteration reads (threads, worker processes).
  """

  dataset: grain.MapDataset
  num_examples: int
  num_batches: int
  batch_size: int
  shape_buckets: tuple[buckets.Bucket, ...]
  scale: tuple[int, int]
  bucket_counts: tuple[int, ...]
  read_options: grain.ReadOptions
  num_workers: int

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return iterate_batches(self.dataset, self.read_options, self.num_workers)


def iterate_batches(dataset: grain.MapDataset, options: grain.ReadOptions,
                    num_workers: int) -> grain.DatasetIterator:
  """A checkpointable iterator over a MapDataset of batches: read ahead in threads, and with
  num_workers > 0 in that many worker processes (the same batches in the same order either way)."""
  ds = dataset.to_iter_dataset(options)
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def eval_count(config: ml_collections.ConfigDict, num_records: int) -> int:
  """Records evaluated of a split of `num_records`: all, or the first config.eval.num_examples."""
  n = config.eval.num_examples
  return num_records if n <= 0 else min(n, num_records)


def num_eval_examples(config: ml_collections.ConfigDict) -> int:
  """Examples evaluated: the eval split's size, or the first config.eval.num_examples if > 0."""
  return eval_count(config, len(load_source(config.dataset, config.dataset.eval_split)))


def eval_order(bucket_ids: Sequence[int], global_batch: int, process_index: int,
               process_count: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """This host's slots of the eval order (see EvalLoader).

  Args:
    bucket_ids: the shape bucket of each example (example i = source index i).
    global_batch: B; process_index, process_count: this host among all.
  Returns:
    (indices, slot_buckets): per slot of this host's batches, the source index (PAD_INDEX past the
    end of a bucket) and the bucket of its batch.
  """
  host_batch = global_batch // process_count
  indices, slot_buckets = [], []
  for bucket in sorted(set(bucket_ids)):
    members = [i for i, b in enumerate(bucket_ids) if b == bucket]
    for start in range(0, len(members), global_batch):
      first = start + process_index * host_batch
      mine = members[first:min(first + host_batch, start + global_batch)]
      indices.extend(mine + [transforms.PAD_INDEX] * (host_batch - len(mine)))
      slot_buckets.extend([bucket] * host_batch)
  return tuple(indices), tuple(slot_buckets)


def map_records(source: Any, num_examples: int, fn: Callable[[Any, int], T]) -> list[T]:
  """[fn(source[i], i) for i in range(num_examples)], the records read in threads.

  For what the loaders must know of every record before batching (its shape bucket, its boxes).
  """
  def one(i: int) -> T:
    return fn(source[i], i)

  with concurrent.futures.ThreadPoolExecutor(_MAX_READ_THREADS) as pool:
    return list(pool.map(one, range(num_examples)))


def image_sizes(source: Any, num_examples: int, spec: DatasetSpec) -> np.ndarray:
  """int [num_examples, 2] (height, width) of the first records' images, read in threads.

  Evaluation groups examples by shape before batching, so every host reads every record once for
  this (the grain pipeline reads them again to resize them).
  """
  sizes = map_records(source, num_examples, lambda record, _: transforms.image_size(record, spec))
  return np.array(sizes, np.int64).reshape(-1, 2)


def eval_loader(config: ml_collections.ConfigDict, *, process_index: int = 0,
                process_count: int = 1) -> EvalLoader:
  """The eval split of config.dataset, grouped by shape bucket (see EvalLoader, SPEC A4).

  Each image is resized as a whole, aspect kept, to its size at the canvas scale
  `buckets.canvas_scale(config.eval)` (the largest any test scale or view needs) and padded at the
  bottom and right into its bucket's canvas; the evaluator derives every test scale and the centre /
  10-view crops from it on device.

  Raises:
    ConfigError: bad eval batch size. DataError: see `load_source`; an image that is not
    [H, W, 1|3|4].
  """
  check_process(process_index, process_count)
  prepare_workers(config.input.num_workers)
  global_batch = config.input.eval_batch_size
  batch = host_batch_size(global_batch, process_count, "input.eval_batch_size")
  spec = get_dataset_spec(config.dataset.name)
  source = load_source(config.dataset, config.dataset.eval_split)
  n = eval_count(config, len(source))
  if n == 0:
    raise DataError(f"{spec.name} split {config.dataset.eval_split!r} is empty")
  bounds = tuple(config.eval.aspect_buckets)
  bucket_ids = [buckets.bucket_index(h, w, bounds) for h, w in image_sizes(source, n, spec)]
  order, slot_buckets = eval_order(bucket_ids, global_batch, process_index, process_count)
  shape_buckets = buckets.make_buckets(bounds)
  scale = buckets.canvas_scale(config.eval)
  dataset = (
      grain.MapDataset.source(transforms.EvalRecords(source, order, slot_buckets))
      .map(transforms.EvalTransform(spec=spec, shape_buckets=shape_buckets, scale=scale,
                                    max_boxes=config.input.max_boxes))
      .batch(batch, drop_remainder=False)
      .map(transforms.NormalizeBatch(mean=tuple(config.input.mean), std=tuple(config.input.std)))
  )
  return EvalLoader(
      dataset=dataset, num_examples=n, num_batches=len(order) // batch, batch_size=batch,
      shape_buckets=shape_buckets, scale=scale,
      bucket_counts=tuple(bucket_ids.count(i) for i in range(len(shape_buckets))),
      read_options=read_options(config.input.prefetch * batch),
      num_workers=config.input.num_workers)
