"""Detection batches (overfeat_jax/data/detection.py): boxes through resize, flip, buckets, padding."""

from __future__ import annotations

import itertools
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import naming
from tensorflow_datasets.core import splits as splits_lib

from overfeat_jax.config import base_config
from overfeat_jax.data import buckets, detection, pipeline, transforms
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.errors import DataError
from overfeat_jax.evaluation.detection import DetectionEvaluator

MEAN = np.array(base_config().input.mean, np.float32)
STD = np.array(base_config().input.std, np.float32)
MIN_SIZE, MAX_SIZE = 64, 96
# detection_canvases((1.25, 2.0), 64, 96): square 80 x 80, landscape 64 x 96, portrait 96 x 64.
CANVASES = ((80, 80), (64, 96), (96, 64))
DTYPES = {"image": np.float32, "size": np.int32, "original_size": np.int32, "scale": np.float32,
          "boxes": np.float32, "box_labels": np.int32, "box_valid": np.bool_,
          "difficult": np.bool_, "iscrowd": np.bool_, "image_id": np.int32, "bucket": np.int32,
          "valid": np.bool_}


class PaintedBoxes:
  """A fake VOC-like source: record i is a black image of a varying size (all three buckets) holding,
  unless i % 4 == 0 (an empty image), one white rectangle whose TFDS box lies exactly on its edges,
  off-centre so that a flip shows; label i % 20, difficult for odd i. With `coco_ids`, records carry
  COCO's `image/id` = 1000 + i * coco_ids[0] and `objects/is_crowd` instead."""

  def __init__(self, n: int, coco_ids: tuple[int] | None = None):
    self.n = n
    self.coco_ids = coco_ids

  def __len__(self) -> int:
    return self.n

  def box(self, i: int) -> tuple[int, int, int, int, int, int] | None:
    """(h, w, x1, y1, x2, y2) in pixels of record i's rectangle, None for an empty image."""
    h, w = 40 + (13 * i) % 70, 40 + (29 * i) % 90
    if i % 4 == 0:
      return None
    y1, x1 = h // 5 + i % 3, w // 6 + i % 5
    return h, w, x1, y1, x1 + w // 4 + 3, y1 + h // 3

  def __getitem__(self, i: int) -> dict:
    h, w = 40 + (13 * i) % 70, 40 + (29 * i) % 90
    image = np.zeros((h, w, 3), np.uint8)
    bbox, flags = np.zeros((0, 4), np.float32), np.zeros((0,), bool)
    if self.box(i) is not None:
      _, _, x1, y1, x2, y2 = self.box(i)
      image[y1:y2, x1:x2] = 255
      bbox, flags = np.array([[y1 / h, x1 / w, y2 / h, x2 / w]], np.float32), np.array([i % 2 == 1])
    labels = np.full((len(bbox),), i % 20, np.int64)
    if self.coco_ids is None:
      return {"image": image, "objects": {"bbox": bbox, "label": labels, "is_difficult": flags}}
    return {"image": image, "image/id": np.int64(1000 + i * self.coco_ids[0]),
            "objects": {"bbox": bbox, "label": labels, "is_crowd": flags}}

  def __repr__(self) -> str:
    return f"PaintedBoxes({self.n}, {self.coco_ids})"


def _config(**input_overrides):
  config = base_config()
  config.input.min_size, config.input.max_size, config.input.max_boxes = MIN_SIZE, MAX_SIZE, 6
  config.input.batch_size = config.input.eval_batch_size = 4
  for key, value in input_overrides.items():
    config.input[key] = value
  return config


@pytest.fixture
def painted_config(monkeypatch):
  """A voc/2007 config whose source (any split) is PaintedBoxes(n, coco_ids) (coco/2017 with ids)."""
  def make(n: int = 40, coco_ids: tuple[int] | None = None, **input_overrides):
    monkeypatch.setattr(pipeline, "load_source",
                        lambda dataset_cfg, split: PaintedBoxes(n, coco_ids))
    config = _config(**input_overrides)
    config.dataset.name, config.dataset.num_classes = (
        ("voc/2007", 20) if coco_ids is None else ("coco/2017", 80))
    return config
  return make


def _digits_config(data_dir: str, **input_overrides):
  config = _config(**input_overrides)
  config.dataset.name = "digits_in_scenes/detection"
  config.dataset.data_dir = data_dir
  config.dataset.train_split = "train[:48]"
  config.eval.num_examples = 24
  return config


def _pixels(images: np.ndarray) -> np.ndarray:
  """Undo the normalisation: [..., 3] float32 -> [0, 255] float32."""
  return (images * STD + MEAN) * 255.0


def _check_batch(batch: dict, batch_size: int, max_boxes: int) -> None:
  """Keys, shapes, dtypes, one bucket, and every image's ground truth inside it, padding blank."""
  assert set(batch) == set(DTYPES)
  for key, dtype in DTYPES.items():
    assert batch[key].dtype == dtype, key
  bucket = int(batch["bucket"][0])
  assert (batch["bucket"] == bucket).all()  # One bucket per batch...
  b, m = batch_size, max_boxes
  assert batch["image"].shape == (b,) + CANVASES[bucket] + (3,)  # ...in its canvas.
  for key, shape in [("size", (b, 2)), ("original_size", (b, 2)), ("scale", (b, 2)),
                     ("boxes", (b, m, 4)), ("box_labels", (b, m)), ("box_valid", (b, m)),
                     ("difficult", (b, m)), ("iscrowd", (b, m)), ("image_id", (b,)),
                     ("valid", (b,))]:
    assert batch[key].shape == shape, key
  np.testing.assert_allclose(batch["scale"], batch["size"] / batch["original_size"], rtol=1e-6)
  for j in range(b):
    h, w = batch["size"][j]
    assert h <= CANVASES[bucket][0] and w <= CANVASES[bucket][1]
    if batch["valid"][j]:  # the min / max resize (a padding example fills its canvas)
      assert min(h, w) == MIN_SIZE or max(h, w) == MAX_SIZE
    assert not batch["image"][j, h:].any() and not batch["image"][j, :, w:].any()
    valid = batch["box_valid"][j]
    boxes = batch["boxes"][j][valid]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (batch["boxes"][j][~valid] == 0).all()
    assert (batch["box_labels"][j][~valid] == transforms.PAD_LABEL).all()
    assert (batch["box_labels"][j][valid] >= 0).all()
    assert not batch["difficult"][j][~valid].any() and not batch["iscrowd"][j][~valid].any()
    assert list(np.flatnonzero(valid)) == list(range(valid.sum()))  # real boxes first


# ---------------------------------------------------------------------------------------------
# The embedded detection data.

def test_train_batches_one_bucket_each_and_every_epoch_a_new_order(digits_detection_data_dir):
  config = _digits_config(digits_detection_data_dir)
  loader = detection.detection_train_loader(config)
  counts = loader.bucket_counts
  assert sum(counts) == loader.num_examples == 48
  assert loader.steps_per_epoch == sum(n // 4 for n in counts)
  assert loader.canvases == CANVASES
  iterator = iter(loader)
  epochs = []
  for _ in range(2):
    batches = [next(iterator) for _ in range(loader.steps_per_epoch)]
    for batch in batches:
      _check_batch(batch, 4, 6)
      assert batch["valid"].all()
    ids = np.concatenate([b["image_id"] for b in batches])
    assert len(set(ids.tolist())) == len(ids) and set(ids.tolist()) <= set(range(48))
    epochs.append(ids)
  assert {b["image"].shape for b in batches} <= {(4,) + c + (3,) for c in CANVASES}
  assert not np.array_equal(epochs[0], epochs[1])  # Each epoch a new shuffle.


def test_eval_batches_each_image_once_with_its_objects(digits_detection_data_dir):
  config = _digits_config(digits_detection_data_dir)
  loader = detection.detection_eval_loader(config)
  source = pipeline.load_source(config.dataset, "test")
  objects = [len(source[i]["objects"]["label"]) for i in range(24)]
  assert 0 in objects and max(objects) == 5  # empty images and full ones among them
  batches = list(loader)
  assert len(batches) == len(loader)
  ids = []
  for batch in batches:
    _check_batch(batch, 4, 6)
    for j in np.flatnonzero(batch["valid"]):
      i = int(batch["image_id"][j])
      ids.append(i)
      assert batch["box_valid"][j].sum() == objects[i]  # an empty image: all padding
      np.testing.assert_array_equal(batch["original_size"][j], source[i]["image"].shape[:2])
    invalid = ~batch["valid"]
    assert (batch["image"][invalid] == 0).all() and not batch["box_valid"][invalid].any()
    assert (batch["image_id"][invalid] == detection.PAD_IMAGE_ID).all()
  assert sorted(ids) == list(range(24))
  assert [int(b["bucket"][0]) for b in batches] == sorted(int(b["bucket"][0]) for b in batches)


def test_same_seed_same_batches_and_the_iterator_state_resumes(digits_detection_data_dir):
  config = _digits_config(digits_detection_data_dir, random_flip=True)
  first = iter(detection.detection_train_loader(config))
  again = iter(detection.detection_train_loader(config))
  for _ in range(3):
    a, b = next(first), next(again)
    for key in DTYPES:
      np.testing.assert_array_equal(a[key], b[key])
  state = first.get_state()
  assert isinstance(state, bytes)
  steps = detection.detection_train_loader(config).steps_per_epoch
  expected = [next(first) for _ in range(steps)]  # across the end of the first epoch
  restored = iter(detection.detection_train_loader(config))  # a fresh loader, as after a restart
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in DTYPES:
      np.testing.assert_array_equal(got[key], want[key])
  config.seed = 1
  other = next(iter(detection.detection_train_loader(config)))
  assert not np.array_equal(other["image_id"], expected[0]["image_id"])


def test_workers_give_the_same_batches(digits_detection_data_dir):
  """One grain worker process (a few seconds to start) changes nothing."""
  config = _digits_config(digits_detection_data_dir, random_flip=True)
  reference = iter(detection.detection_train_loader(config))
  want = [next(reference) for _ in range(3)]
  config.input.num_workers = 1
  iterator = iter(detection.detection_train_loader(config))
  try:
    for w in want:
      got = next(iterator)
      for key in DTYPES:
        np.testing.assert_array_equal(got[key], w[key])
  finally:
    iterator.close()


def test_more_objects_than_max_boxes_keeps_the_largest_with_a_warning(digits_detection_data_dir):
  config = _digits_config(digits_detection_data_dir, max_boxes=3)
  source = pipeline.load_source(config.dataset, "test")
  spec = get_dataset_spec(config.dataset.name)
  examples = [pipeline.decode_example(source[i], spec) for i in range(24)]
  over = [(i, len(e["boxes"])) for i, e in enumerate(examples) if len(e["boxes"]) > 3]
  assert over
  with pytest.warns(UserWarning, match=rf"{len(over)} of 24 images have more objects than "
                                       rf"input.max_boxes=3 \(up to 5\); each keeps its 3 largest: "
                                       rf"image ids {over[0][0]} \({over[0][1]} objects\)"):
    loader = detection.detection_eval_loader(config)
  for batch in loader:
    for j in np.flatnonzero(batch["valid"]):
      example = examples[batch["image_id"][j]]
      assert batch["box_valid"][j].sum() == min(3, len(example["boxes"]))
      # The kept boxes, back in original pixels, are the 3 largest, in their original order.
      sy, sx = batch["scale"][j]
      kept = batch["boxes"][j][batch["box_valid"][j]] / np.array([sx, sy, sx, sy])
      boxes = example["boxes"]
      largest = np.sort(np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                                   kind="stable")[:3])
      np.testing.assert_allclose(kept, boxes[largest], atol=1e-3)


def test_eval_batches_feed_the_evaluator_back_to_original_pixels(digits_detection_data_dir):
  """Predicting each batch's own ground truth gives AP 1, and the evaluator's ground truth, mapped back
  through `scale`, is the dataset's own (independently converted) boxes and image sizes."""
  config = _digits_config(digits_detection_data_dir)
  loader = detection.detection_eval_loader(config)
  evaluator = DetectionEvaluator([str(c) for c in range(10)])

  def predict(batch):
    return {"boxes": batch["boxes"], "scores": np.ones(batch["box_valid"].shape, np.float32),
            "classes": np.maximum(batch["box_labels"], 0), "valid": batch["box_valid"]}

  result = evaluator.run(predict, loader, workdir=None, verbose=False)
  assert result["num_images"] == 24 and result["num_dropped_gt_boxes"] == 0
  assert result["voc"]["mAP"] == pytest.approx(1.0) and result["voc"]["mAP07"] == pytest.approx(1.0)
  assert result["coco"]["AP"] == pytest.approx(1.0)
  source = pipeline.load_source(config.dataset, "test")
  truth = evaluator.ground_truth()
  for image in truth["images"]:
    assert (image["height"], image["width"]) == source[image["id"]]["image"].shape[:2]
  for i in range(24):
    record = source[i]
    h, w = record["image"].shape[:2]
    yxyx = np.array(record["objects"]["bbox"], np.float64).reshape(-1, 4)
    want = np.stack([yxyx[:, 1] * w, yxyx[:, 0] * h, (yxyx[:, 3] - yxyx[:, 1]) * w,
                     (yxyx[:, 2] - yxyx[:, 0]) * h], axis=1)  # COCO [x, y, w, h]
    got = [a["bbox"] for a in truth["annotations"] if a["image_id"] == i]
    assert [a["category_id"] for a in truth["annotations"] if a["image_id"] == i] == list(
        record["objects"]["label"])
    np.testing.assert_allclose(np.array(got).reshape(-1, 4), want, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Geometry on painted rectangles.

def _painted_mask_box(image: np.ndarray) -> np.ndarray:
  """(x1, y1, x2, y2) around the white pixels of a normalised [H, W, 3] image."""
  rows, cols = np.nonzero(_pixels(image).mean(axis=-1) > 127.5)
  return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def test_resize_and_flips_keep_each_box_on_its_rectangle(painted_config):
  config = painted_config(n=40, random_flip=True)
  source = PaintedBoxes(40)
  flipped = unflipped = 0
  train = iter(detection.detection_train_loader(config))
  evaluation = detection.detection_eval_loader(config)
  steps = detection.detection_train_loader(config).steps_per_epoch
  for batch, is_train in [(next(train), True) for _ in range(steps)] + [(b, False) for b in evaluation]:
    for j in np.flatnonzero(batch["valid"]):
      i = int(batch["image_id"][j])
      if source.box(i) is None:  # An empty image: all padding, still an image.
        assert not batch["box_valid"][j].any() and batch["image"][j].any()
        continue
      assert batch["box_valid"][j].tolist() == [True] + [False] * 5
      box = batch["boxes"][j, 0]
      # Resize (and flip) map the box exactly: it still bounds the rectangle, within a pixel.
      np.testing.assert_allclose(box, _painted_mask_box(batch["image"][j]), atol=1.0)
      assert batch["difficult"][j, 0] == (i % 2 == 1) and batch["box_labels"][j, 0] == i % 20
      _, _, x1, y1, x2, y2 = source.box(i)
      sy, sx = batch["scale"][j]
      plain = np.array([x1 * sx, y1 * sy, x2 * sx, y2 * sy], np.float32)
      mirrored = np.array([batch["size"][j, 1] - plain[2], plain[1], batch["size"][j, 1] - plain[0],
                           plain[3]])
      if np.allclose(box, plain, atol=1e-3):
        unflipped += is_train
      else:
        assert is_train  # evaluation never flips
        np.testing.assert_allclose(box, mirrored, atol=1e-3)
        flipped += 1
  assert flipped > 5 and unflipped > 5


def test_a_flip_mirrors_the_image_and_moves_the_box_exactly():
  spec = get_dataset_spec("voc/2007")
  transform = detection.DetectionTransform(spec=spec, canvases=CANVASES, min_size=MIN_SIZE,
                                           max_size=MAX_SIZE, max_boxes=2)
  source = PaintedBoxes(8)
  for i in (5, 6, 10):  # square, landscape (beyond 2:1) and portrait images
    h, w = source[i]["image"].shape[:2]
    bucket = buckets.bucket_index(h, w, (1.25, 2.0))
    plain = transform.map((i, source[i], bucket, False))
    flipped = transform.map((i, source[i], bucket, True))
    h, w = plain["size"]
    np.testing.assert_array_equal(flipped["image"][:h, :w], plain["image"][:h, :w][:, ::-1])
    assert not flipped["image"][h:].any() and not flipped["image"][:, w:].any()
    x1, y1, x2, y2 = plain["boxes"][0]
    np.testing.assert_array_equal(flipped["boxes"][0], np.array([w - x2, y1, w - x1, y2], np.float32))
    # The pixels at the flipped box are the unflipped box's pixels, mirrored.
    c1, c2 = int(np.ceil(x1)), int(np.floor(x2))
    np.testing.assert_array_equal(flipped["image"][:h, w - c2:w - c1],
                                  plain["image"][:h, c1:c2][:, ::-1])
    for key in ("size", "original_size", "scale", "box_labels", "box_valid", "difficult"):
      np.testing.assert_array_equal(flipped[key], plain[key])


def test_multi_scale_training_draws_each_short_side_and_fits_the_canvas(painted_config):
  sizes = (56, 64, 80)
  config = painted_config(n=40, random_flip=True, train_min_sizes=sizes)
  plain_config = painted_config(n=40, random_flip=True)
  source = PaintedBoxes(40)
  loader, plain = detection.detection_train_loader(config), detection.detection_train_loader(plain_config)
  seen = set()
  for batch, same in zip(itertools.islice(iter(loader), 3 * loader.steps_per_epoch), iter(plain)):
    # The draw comes after the order and the flips: the same images, buckets and flips as without it.
    np.testing.assert_array_equal(batch["image_id"], same["image_id"])
    np.testing.assert_array_equal(batch["bucket"], same["bucket"])
    canvas = CANVASES[int(batch["bucket"][0])]
    for j in range(len(batch["size"])):
      (h, w), (oh, ow) = batch["size"][j], batch["original_size"][j]
      short = min(h, w)
      assert h <= canvas[0] and w <= canvas[1] and max(h, w) <= MAX_SIZE
      # The drawn short side, or the long side at max_size, or shrunk to the canvas (then touching it).
      drawn = [s for s in sizes if round(min(oh, ow) * min(s / min(oh, ow), MAX_SIZE / max(oh, ow)))
               in (h, w) and (short == s or max(h, w) == MAX_SIZE)]
      assert drawn or h == canvas[0] or w == canvas[1], (h, w, oh, ow)
      seen.update(drawn)
      i = int(batch["image_id"][j])
      if source.box(i) is not None:  # The box follows the resize exactly.
        np.testing.assert_allclose(batch["boxes"][j, 0], _painted_mask_box(batch["image"][j]), atol=1.0)
  assert seen == set(sizes)


def test_fit_in_canvas_hand_computed():
  # 150 x 180 at short side 200 is 200 x 240; the 200 x 200 canvas takes it at 167 x 200.
  np.testing.assert_array_equal(buckets.fit_in_canvas((150, 180), np.array([200, 240]), (200, 200)),
                                [167, 200])
  np.testing.assert_array_equal(buckets.fit_in_canvas((150, 180), np.array([160, 192]), (200, 200)),
                                [160, 192])  # it fits: unchanged
  np.testing.assert_array_equal(buckets.fit_in_canvas((100, 300), np.array([80, 240]), (64, 240)),
                                [64, 192])


def test_two_hosts_share_each_global_batch(painted_config):
  config = painted_config(n=40, random_flip=True)
  single = iter(detection.detection_train_loader(config))
  hosts = [iter(detection.detection_train_loader(config, process_index=p, process_count=2))
           for p in range(2)]
  for _ in range(12):
    whole, parts = next(single), [next(h) for h in hosts]
    assert parts[0]["image"].shape == parts[1]["image"].shape  # the same bucket on every host
    for key in ("image_id", "boxes", "image"):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  evaluations = [list(detection.detection_eval_loader(config, process_index=p, process_count=2))
                 for p in range(2)]
  assert len(evaluations[0]) == len(evaluations[1])
  ids = [i for host in evaluations for b in host for i in b["image_id"][b["valid"]]]
  assert sorted(ids) == list(range(40))


def test_loader_errors_and_unused_buckets(painted_config, monkeypatch):
  config = painted_config(n=12, batch_size=8)
  counts = detection.detection_eval_loader(config).bucket_counts
  assert max(counts) < 8
  with pytest.raises(DataError, match=r"no shape bucket holds a whole batch of "
                                      r"input.batch_size=8 images"):
    detection.detection_train_loader(config)
  config.input.batch_size = 4
  with pytest.warns(UserWarning, match=r"never trained on \(portrait \(1.25-2\): 2\)"):
    detection.detection_train_loader(config)
  config.dataset.name, config.dataset.num_classes = "imagenet2012", 1000
  with pytest.raises(DataError, match="need ground-truth boxes, and imagenet2012 has none"):
    detection.detection_eval_loader(config)
  config = painted_config(n=12, coco_ids=(0,))
  with pytest.raises(DataError, match=r"image id 1000 is that of records \[0, 1, 2"):
    detection.detection_eval_loader(config)


def test_invalid_boxes_are_repaired_or_dropped_with_one_warning(monkeypatch):
  image = np.zeros((50, 80, 3), np.uint8)  # landscape 1.6: resized to 60 x 96 (f = 1.2)
  yxyx = np.array([[0.2, 0.1, 0.6, 0.5],       # fine: kept as it is
                   [0.6, 0.5, 0.2, 0.1],       # swapped: sorted, kept (repaired)
                   [-0.2, 0.9, 0.4, 1.3],      # reaches outside: clipped, kept (repaired)
                   [1.1, 0.2, 1.5, 0.4],       # entirely below the image: dropped
                   [0.3, 0.2, 0.3, 0.4],       # zero height: dropped
                   [np.nan, 0.2, 0.5, 0.4]],   # not finite: dropped
                  np.float32)
  records = [{"image": image, "objects": {"bbox": yxyx, "label": np.arange(6),
                                          "is_difficult": np.array([0, 1, 0, 0, 0, 1], bool)}}]
  monkeypatch.setattr(pipeline, "load_source", lambda dataset_cfg, split: records)
  config = _config(eval_batch_size=1)
  config.dataset.name, config.dataset.num_classes = "voc/2007", 20
  with pytest.warns(UserWarning, match=r"voc/2007 split 'test': 2 ground-truth boxes repaired "
                                       r"\(a swapped min / max sorted, or clipped to the image\) and "
                                       r"kept, 3 dropped \(zero width or height after that\), in 1 "
                                       r"of 1 images \(image ids 0\)"):
    (batch,) = list(detection.detection_eval_loader(config))
  np.testing.assert_array_equal(batch["box_valid"][0], [True] * 3 + [False] * 3)
  np.testing.assert_array_equal(batch["box_labels"][0, :3], [0, 1, 2])
  np.testing.assert_array_equal(batch["difficult"][0, :3], [False, True, False])
  np.testing.assert_allclose(batch["boxes"][0, :3], [[9.6, 12, 48, 36], [9.6, 12, 48, 36],
                                                     [86.4, 0, 96, 24]], atol=1e-4)


def test_coco_image_ids_and_crowd_flags(painted_config):
  config = painted_config(n=12, coco_ids=(7,))
  batches = list(detection.detection_eval_loader(config))
  ids = sorted(i for b in batches for i in b["image_id"][b["valid"]])
  assert ids == [1000 + 7 * i for i in range(12)]
  for batch in batches:
    for j in np.flatnonzero(batch["valid"] & batch["box_valid"][:, 0]):
      i = (batch["image_id"][j] - 1000) // 7
      assert batch["iscrowd"][j, 0] == (i % 2 == 1) and not batch["difficult"][j].any()


# ---------------------------------------------------------------------------------------------
# VOC 2007 and COCO 2017 through tfds.testing.mock_data (no files, no TensorFlow).

def _write_coco_metadata(data_dir: str, num_examples: int) -> None:
  """TFDS metadata of coco/2017 (its features as tensorflow_datasets declares them) under data_dir.

  TFDS's coco builder needs TensorFlow to construct; a prepared dataset is read from its files
  instead (`pipeline.load_source`), which is the path `mock_data(policy=USE_FILES)` mocks.
  """
  builder_dir = os.path.join(data_dir, "coco", "2017", "1.1.0")
  os.makedirs(builder_dir)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format="jpeg"),
      "image/filename": tfds.features.Text(),
      "image/id": np.int64,
      "objects": tfds.features.Sequence({
          "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
          "label": tfds.features.ClassLabel(num_classes=80), "is_crowd": np.bool_}),
  })
  identity = tfds.core.DatasetIdentity(name="coco", version="1.1.0", data_dir=data_dir,
                                       module_name="coco", config_name="2017")
  splits = splits_lib.SplitDict([
      splits_lib.SplitInfo(name=name, shard_lengths=[num_examples], num_bytes=0,
                           filename_template=naming.ShardedFileTemplate(
                               data_dir=builder_dir, dataset_name="coco", split=name,
                               filetype_suffix="array_record"))
      for name in ("train", "validation")])
  info = tfds.core.DatasetInfo(builder=identity, features=features, split_dict=splits)
  info.set_file_format("array_record")
  info.write_to_directory(builder_dir)


@pytest.mark.parametrize("name, num_classes, flag_key, flag", [
    ("voc/2007", 20, "is_difficult", "difficult"),
    ("coco/2017", 80, "is_crowd", "iscrowd"),
])
def test_mock_voc_and_coco_carry_their_flags_and_report_repairs(tmp_path, name, num_classes,
                                                                flag_key, flag):
  config = _config(max_boxes=64, batch_size=2)
  config.dataset.name, config.dataset.num_classes = name, num_classes
  spec = get_dataset_spec(name)
  config.dataset.train_split, config.dataset.eval_split = spec.train_split, spec.eval_split
  options = {}
  if name == "coco/2017":
    _write_coco_metadata(str(tmp_path), 8)
    options = {"policy": tfds.testing.MockPolicy.USE_FILES, "data_dir": str(tmp_path)}
  with tfds.testing.mock_data(num_examples=8, **options):
    with pytest.warns(UserWarning) as caught:
      loader = detection.detection_eval_loader(config)
    batches = list(loader)
    with pytest.warns(UserWarning) as train_warnings:  # repairs, maybe a bucket never trained
      train_batch = next(iter(detection.detection_train_loader(config)))
    source = pipeline.load_source(config.dataset, spec.eval_split)
    records = {transforms.image_id(source[i], spec, i): source[i] for i in range(8)}
  _check_batch(train_batch, 2, 64)
  repaired = dropped = 0
  for batch in batches:
    _check_batch(batch, 4, 64)
    for j in np.flatnonzero(batch["valid"]):
      record = records[int(batch["image_id"][j])]
      # Independently: the columns cut to their common length, boxes of zero size left out.
      objects = record["objects"]
      n = min(len(objects["bbox"]), len(objects["label"]), len(objects[flag_key]))
      yxyx = np.asarray(objects["bbox"], np.float32)[:n]
      empty = (yxyx[:, 0] == yxyx[:, 2]) | (yxyx[:, 1] == yxyx[:, 3])
      swapped = (yxyx[:, 0] > yxyx[:, 2]) | (yxyx[:, 1] > yxyx[:, 3])
      repaired += int((swapped & ~empty).sum())
      dropped += int(empty.sum())
      valid = batch["box_valid"][j]
      assert valid.sum() == (~empty).sum()
      np.testing.assert_array_equal(batch[flag][j][valid], np.asarray(objects[flag_key])[:n][~empty])
      np.testing.assert_array_equal(batch["box_labels"][j][valid],
                                    np.asarray(objects["label"])[:n][~empty])
      other = "iscrowd" if flag == "difficult" else "difficult"
      assert not batch[other][j].any()
  assert sum(b["valid"].sum() for b in batches) == 8
  assert repaired > 0  # mock boxes are often swapped
  assert any("repaired" in str(w.message) for w in train_warnings)
  messages = [str(w.message) for w in caught]
  assert any(re.search(rf"{repaired} ground-truth boxes repaired .* and kept, {dropped} dropped", m)
             for m in messages), messages
