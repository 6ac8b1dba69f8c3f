"""The input pipeline (DESIGN "Data", SPEC A3/A4): registry, decoding, boxes, train and eval loaders."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from overfeat_jax.config import base_config, validate_config
from overfeat_jax.data import buckets, pipeline, transforms
from overfeat_jax.data.registry import DATASETS, get_dataset_spec
from overfeat_jax.errors import ConfigError, DataError

MEAN = np.array(base_config().input.mean, np.float32)
STD = np.array(base_config().input.std, np.float32)


class IndexImages:
  """A fake source: record i is a constant image of a varying size whose pixels encode i
  (R = i // 256, G = i % 256, B = 200), label i % 10. Resizing, cropping and flipping keep a
  constant image constant, so every batch tells exactly which records it holds."""

  def __init__(self, n: int):
    self.n = n

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict:
    image = np.empty((40 + i % 17, 30 + (7 * i) % 41, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = i // 256, i % 256, 200
    return {"image": image, "label": np.int64(i % 10)}

  def __repr__(self) -> str:  # grain validates restored states against repr(source).
    return f"IndexImages({self.n})"


def _pixels(images: np.ndarray) -> np.ndarray:
  """Undo the normalisation: [B, H, W, 3] float32 -> uint8-valued float32."""
  return (images * STD + MEAN) * 255.0


def _indices(batch: dict) -> np.ndarray:
  """Record indices of an IndexImages batch (read from each image's top-left pixel)."""
  px = np.round(_pixels(batch["image"][:, 0, 0]))
  return (px[:, 0] * 256 + px[:, 1]).astype(int)


@pytest.fixture
def fake_config(monkeypatch):
  """A config whose source (any split) is IndexImages(n); returns a factory of configs."""
  def make(n: int = 200, **input_overrides):
    monkeypatch.setattr(pipeline, "load_source", lambda dataset_cfg, split: IndexImages(n))
    config = base_config()
    config.dataset.name = "imagenet2012"
    config.dataset.num_classes = 1000
    config.input.batch_size = 8
    config.input.eval_batch_size = 4
    for key, value in input_overrides.items():
      config.input[key] = value
    return config
  return make


def _digits_config(data_dir: str, batch_size: int = 8):
  config = base_config()
  config.dataset.data_dir = data_dir
  config.input.batch_size = batch_size
  config.input.eval_batch_size = batch_size
  return config


# ---------------------------------------------------------------------------------------------
# Registry and sources.

def test_registry_knows_the_datasets():
  assert set(DATASETS) == {"digits_in_scenes/classification", "digits_in_scenes/classification_x4",
                           "digits_in_scenes/classification_x8",
                           "digits_in_scenes/classification_x8_distorted", "digits_in_scenes/detection",
                           "imagenet2012", "voc/2007", "voc/2012", "coco/2017"}
  assert get_dataset_spec("imagenet2012").num_classes == 1000
  assert get_dataset_spec("coco/2017").num_classes == 80
  assert get_dataset_spec("voc/2007").label_key is None
  assert get_dataset_spec("digits_in_scenes/classification").local
  with pytest.raises(DataError, match=r"unknown dataset 'mnist'.*imagenet2012.*voc/2007"):
    get_dataset_spec("mnist")


def test_load_source_errors(tmp_path):
  config = base_config()
  config.dataset.data_dir = str(tmp_path)
  config.dataset.name = "not_a_dataset"
  with pytest.raises(DataError, match="unknown dataset 'not_a_dataset'"):
    pipeline.load_source(config.dataset, "train")
  config.dataset.name = "digits_in_scenes/classification"
  config.dataset.num_classes = 11
  with pytest.raises(DataError, match="num_classes=11"):
    pipeline.load_source(config.dataset, "train")
  config.dataset.num_classes = 10
  config.dataset.prepare = False
  with pytest.raises(DataError, match="not prepared"):
    pipeline.load_source(config.dataset, "train")
  config.dataset.name = "imagenet2012"
  config.dataset.num_classes = 1000
  with pytest.raises(DataError) as error:
    pipeline.load_source(config.dataset, "train")
  assert f"tfds build imagenet2012 --file_format=array_record --data_dir={tmp_path}" in str(error.value)


# ---------------------------------------------------------------------------------------------
# Decoding and boxes.

def test_tfds_boxes_to_pixels_hand_checked():
  # H = 100, W = 200: (ymin, xmin, ymax, xmax) = (0.1, 0.2, 0.5, 0.6) -> x1 = 40, y1 = 10, x2 = 120,
  # y2 = 50; the second box lies partly outside the image and is clipped.
  boxes = transforms.tfds_boxes_to_pixels([[0.1, 0.2, 0.5, 0.6], [-0.1, 0.25, 1.2, 0.5]], 100, 200)
  np.testing.assert_allclose(boxes, [[40, 10, 120, 50], [50, 0, 100, 100]], atol=1e-4)
  assert boxes.dtype == np.float32


def test_invalid_boxes_are_repaired():
  # Mock data can swap min and max; sorting each pair repairs it.
  swapped = transforms.tfds_boxes_to_pixels([[0.5, 0.6, 0.1, 0.2]], 100, 200)
  np.testing.assert_allclose(swapped, [[40, 10, 120, 50]], atol=1e-4)


def test_list_and_stacked_bbox_forms_agree():
  spec = get_dataset_spec("digits_in_scenes/detection")
  image = np.zeros((50, 80, 3), np.uint8)
  yxyx = [np.array([0.2, 0.1, 0.6, 0.5], np.float32), np.array([0.0, 0.5, 1.0, 1.0], np.float32)]
  as_list = {"image": image, "objects": {"bbox": yxyx, "label": [3, 7]}}
  stacked = {"image": image, "objects": {"bbox": np.stack(yxyx), "label": np.array([3, 7])}}
  a, b = pipeline.decode_example(as_list, spec), pipeline.decode_example(stacked, spec)
  np.testing.assert_array_equal(a["boxes"], b["boxes"])
  np.testing.assert_allclose(a["boxes"], [[8, 10, 40, 30], [40, 0, 80, 50]], atol=1e-4)
  np.testing.assert_array_equal(a["box_labels"], [3, 7])
  assert a["box_labels"].dtype == np.int32 and a["label"] == pipeline.NO_LABEL
  empty = pipeline.decode_example({"image": image, "objects": {"bbox": [], "label": []}}, spec)
  assert empty["boxes"].shape == (0, 4) and empty["box_labels"].shape == (0,)


def test_decode_grey_image_and_label():
  spec = get_dataset_spec("imagenet2012")
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
  example = pipeline.decode_example({"image": grey, "label": np.int64(7)}, spec)
  assert example["image"].shape == (3, 4, 3)
  np.testing.assert_array_equal(example["image"][..., 2], grey[..., 0])
  assert example["label"] == 7 and example["label"].dtype == np.int32
  assert example["boxes"].shape == (0, 4)
  with pytest.raises(DataError, match="no feature 'label'"):
    pipeline.decode_example({"image": grey}, spec)


def test_pad_boxes_pads_and_keeps_the_largest():
  boxes = np.array([[0, 0, 2, 2], [0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 5, 5]], np.float32)
  labels = np.array([1, 2, 3, 4])
  out, out_labels, valid = pipeline.pad_boxes(boxes, labels, 6)
  np.testing.assert_array_equal(out[:4], boxes)
  np.testing.assert_array_equal(out[4:], 0)
  np.testing.assert_array_equal(out_labels, [1, 2, 3, 4, pipeline.PAD_LABEL, pipeline.PAD_LABEL])
  np.testing.assert_array_equal(valid, [True] * 4 + [False] * 2)
  # Truncation keeps the 2 largest (areas 100 and 25), in their original order.
  out, out_labels, valid = pipeline.pad_boxes(boxes, labels, 2)
  np.testing.assert_array_equal(out, boxes[[1, 3]])
  np.testing.assert_array_equal(out_labels, [2, 4])
  assert valid.all()


# ---------------------------------------------------------------------------------------------
# Geometry.

def test_crop_geometry_hand_checked():
  # Whole image: a crop that cuts nothing.
  assert transforms.whole_image(100, 50, (224, 112)) == transforms.Crop(224, 112, 0, 0, 224, 112)
  # Train: short side 100 -> 64 makes 64 x 128; 58-crops start at rows 0..6, columns 0..70.
  rng = np.random.default_rng(0)
  crops = [transforms.train_crop(100, 200, 64, 58, rng) for _ in range(400)]
  assert {(c.resized_h, c.resized_w, c.out_h, c.out_w) for c in crops} == {(64, 128, 58, 58)}
  assert {c.top for c in crops} == set(range(7))
  assert min(c.left for c in crops) == 0 and max(c.left for c in crops) == 70
  # A 20 x 30 image is resized up, never refused.
  assert transforms.train_crop(20, 30, 64, 58, rng).resized_h == 64


def test_apply_crop_equals_resize_then_slice():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
  for crop in (transforms.Crop(245, 136, 80, 0, 112, 136), transforms.whole_image(90, 70, (112, 87)),
               transforms.train_crop(90, 70, 64, 58, rng)):
    full = np.asarray(Image.fromarray(image).resize((crop.resized_w, crop.resized_h),
                                                    Image.Resampling.BILINEAR))
    ref = full[crop.top:crop.top + crop.out_h, crop.left:crop.left + crop.out_w]
    got = transforms.apply_crop(image, crop)
    assert got.shape == ref.shape
    assert np.abs(got.astype(int) - ref).max() <= 1  # Rounding of the resampling only.


def test_crop_boxes_maps_into_the_canvas():
  crop = transforms.Crop(272, 136, 80, 0, 112, 136)  # 100 x 50 scaled by 2.72, offset (80, 0).
  boxes, nonempty = transforms.crop_boxes(
      np.array([[10, 40, 20, 60], [0, 0, 50, 10]], np.float32), 100, 50, crop)
  np.testing.assert_allclose(boxes[0], [27.2, 28.8, 54.4, 83.2], atol=1e-3)
  assert nonempty.tolist() == [True, False]  # The second box lies above the centre crop.


def test_steps_per_epoch():
  assert pipeline.train_steps_per_epoch(base_config(), 4000) == 62


# ---------------------------------------------------------------------------------------------
# Training loader.

def test_train_batches_shapes_normalisation_and_epochs(fake_config):
  config = fake_config(n=40)
  loader = pipeline.train_loader(config)
  iterator = iter(loader)
  seen = []
  for _ in range(10):  # Two epochs of 40 records in batches of 8.
    batch = next(iterator)
    assert batch["image"].shape == (8, 58, 58, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    # Normalised exactly: undoing (x / 255 - mean) / std gives the constant source pixels.
    px = _pixels(batch["image"])
    np.testing.assert_allclose(px, np.round(px), atol=1e-3)
    np.testing.assert_allclose(px[..., 2], 200.0, atol=1e-3)
    indices = _indices(batch)
    np.testing.assert_array_equal(batch["label"], indices % 10)
    seen.append(indices)
  first, second = np.concatenate(seen[:5]), np.concatenate(seen[5:])
  assert sorted(first) == list(range(40)) and sorted(second) == list(range(40))
  assert not np.array_equal(first, second)  # Each epoch is a new shuffle.
  assert not np.array_equal(first, np.arange(40))


def test_hosts_read_their_slots_of_the_global_batches(fake_config):
  # 200 records in global batches of 8: 25 per epoch; 30 steps cross into the second epoch's shuffle.
  config = fake_config(n=200)
  one = iter(pipeline.train_loader(config))
  hosts = [iter(pipeline.train_loader(config, process_index=p, process_count=2)) for p in range(2)]
  epoch = []
  for step in range(30):
    want = _indices(next(one))
    got = [_indices(next(host)) for host in hosts]
    assert [len(g) for g in got] == [4, 4]
    # Host p holds slots 4p .. 4p + 3 of the batch a single process reads at the same step.
    np.testing.assert_array_equal(np.concatenate(got), want, err_msg=f"step {step}")
    epoch.extend(want)
  assert sorted(epoch[:200]) == list(range(200))  # each record once per epoch
  assert epoch[200:] != epoch[:40]  # then a new shuffle
  with pytest.raises(ConfigError, match="input.batch_size=8"):
    pipeline.train_loader(config, process_index=0, process_count=3)


def test_hosts_augment_their_slots_as_one_process_would(digits_data_dir):
  config = _digits_config(digits_data_dir)
  config.input.resize_short_max = 80  # scale jitter, random crops and flips, all drawn per record
  one = iter(pipeline.train_loader(config))
  hosts = [iter(pipeline.train_loader(config, process_index=p, process_count=2)) for p in range(2)]
  wants, states = [], []
  for _ in range(2):
    wants.append(next(one))
    got = [next(host) for host in hosts]
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), wants[-1][key])
    states.append(hosts[1].get_state())
  # Host 1's position after step 1 restores into a fresh loader of host 1 (as a resumed run's does).
  restored = iter(pipeline.train_loader(config, process_index=1, process_count=2))
  restored.set_state(states[0])
  np.testing.assert_array_equal(next(restored)["image"], wants[1]["image"][4:])


def test_train_loader_needs_image_labels(fake_config):
  config = fake_config()
  config.dataset.name = "voc/2007"
  config.dataset.num_classes = 20
  with pytest.raises(DataError, match="no image-level label"):
    pipeline.train_loader(config)


def test_train_seed_determines_the_batches(digits_data_dir):
  config = _digits_config(digits_data_dir)
  a = [next(iter(pipeline.train_loader(config))) for _ in range(2)]
  np.testing.assert_array_equal(a[0]["image"], a[1]["image"])
  np.testing.assert_array_equal(a[0]["label"], a[1]["label"])
  config.seed = 1
  b = next(iter(pipeline.train_loader(config)))
  assert not np.array_equal(a[0]["image"], b["image"])


def test_train_iterator_state_restores(digits_data_dir):
  config = _digits_config(digits_data_dir)
  iterator = iter(pipeline.train_loader(config))
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(2)]
  restored = iter(pipeline.train_loader(config))  # A fresh loader, as after a restart.
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_workers_give_the_same_batches(digits_data_dir):
  """grain worker processes (started once here: a few seconds) change nothing."""
  config = _digits_config(digits_data_dir, batch_size=4)
  reference = iter(pipeline.train_loader(config))
  want = [next(reference) for _ in range(3)]
  config.input.num_workers = 1
  iterator = iter(pipeline.train_loader(config))
  try:
    for w in want:
      got = next(iterator)
      np.testing.assert_array_equal(got["image"], w["image"])
      np.testing.assert_array_equal(got["label"], w["label"])
  finally:
    iterator.close()


# ---------------------------------------------------------------------------------------------
# Eval loader.

# IndexImages 0..9 (H = 40 + i, W = 30 + 7i % 41) by bucket of (1.25, 2.0): 1-3 and 7-9 square,
# 4 and 5 landscape (44 x 58, 45 x 65), 0 and 6 portrait (40 x 30, 46 x 31).
BUCKET_OF_FIRST_10 = [2, 0, 0, 0, 1, 1, 2, 0, 0, 0]
# Their canvases at base_config()'s canvas scale (112, 136): square max(136, 1.25 * 112) = 140;
# landscape (max(112, 136 / 1.25), max(136, 2 * 112)) = (112, 224); portrait the transpose.
CANVASES = {0: (140, 140), 1: (112, 224), 2: (224, 112)}


def test_eval_batches_grouped_by_bucket_padded_and_masked(fake_config):
  config = fake_config(n=50)
  config.eval.num_examples = 10
  loader = pipeline.eval_loader(config)
  assert [buckets.bucket_index(*IndexImages(50)[i]["image"].shape[:2], (1.25, 2.0))
          for i in range(10)] == BUCKET_OF_FIRST_10
  assert loader.num_examples == 10 and loader.scale == (112, 136)
  assert loader.bucket_counts == (6, 2, 2)
  batches = list(loader)
  assert len(batches) == len(loader) == 4  # bucket 0: 2 batches, buckets 1 and 2: 1 each
  expected = [([1, 2, 3, 7], 0), ([8, 9], 0), ([4, 5], 1), ([0, 6], 2)]
  for batch, (indices, bucket) in zip(batches, expected):
    n = len(indices)
    assert batch["image"].shape == (4,) + CANVASES[bucket] + (3,)
    assert batch["image"].dtype == np.float32 and batch["valid"].dtype == np.bool_
    assert batch["size"].dtype == np.int32 and batch["original_size"].dtype == np.int32
    np.testing.assert_array_equal(batch["bucket"], [bucket] * 4)
    np.testing.assert_array_equal(batch["valid"], [True] * n + [False] * (4 - n))
    np.testing.assert_array_equal(_indices(batch)[:n], indices)
    np.testing.assert_array_equal(batch["label"], [i % 10 for i in indices] + [0] * (4 - n))
    np.testing.assert_array_equal(batch["image"][n:], 0.0)
    for i, (h, w) in zip(indices, batch["size"]):  # zeros around each image, the image inside
      image = batch["image"][list(indices).index(i)]
      assert not image[h:].any() and not image[:, w:].any() and image[:h, :w].all()
    assert "boxes" not in batch  # imagenet2012 has no boxes.
  assert list(loader)[1]["label"].tolist() == batches[1]["label"].tolist()  # Re-iterable.


def test_eval_order_is_the_same_number_of_batches_on_every_host():
  # 2 hosts take 2 slots of each global batch of 4; each bucket's last batch is padded.
  order = {p: pipeline.eval_order(BUCKET_OF_FIRST_10, 4, p, 2) for p in range(2)}
  pad = transforms.PAD_INDEX
  assert order[0] == ((1, 2, 8, 9, 4, 5, 0, 6), (0, 0, 0, 0, 1, 1, 2, 2))
  assert order[1] == ((3, 7) + (pad,) * 6, (0, 0, 0, 0, 1, 1, 2, 2))


def test_eval_two_hosts_split_each_global_batch(fake_config):
  config = fake_config(n=10)
  loaders = [pipeline.eval_loader(config, process_index=p, process_count=2) for p in range(2)]
  hosts = [list(loader) for loader in loaders]
  assert [len(h) for h in hosts] == [4, 4]  # Same number of batches on every host...
  for a, b in zip(*hosts):  # ...and the same bucket at every step.
    assert a["bucket"][0] == b["bucket"][0] and a["image"].shape == b["image"].shape
  order = [(_indices(b), b["valid"]) for step in zip(*hosts) for b in step]
  indices = np.concatenate([i for i, _ in order])
  valid = np.concatenate([v for _, v in order])
  assert sorted(indices[valid]) == list(range(10)) and valid.sum() == 10


def test_eval_image_is_the_normalised_whole_image(digits_data_dir):
  config = _digits_config(digits_data_dir, batch_size=4)
  config.eval.num_examples = 6
  loader = pipeline.eval_loader(config)
  source = pipeline.load_source(config.dataset, "test")
  spec = get_dataset_spec(config.dataset.name)
  examples = [pipeline.decode_example(source[i], spec) for i in range(6)]
  bucket_ids = [buckets.bucket_index(*e["image"].shape[:2], (1.25, 2.0)) for e in examples]
  order, _ = pipeline.eval_order(bucket_ids, 4, 0, 1)
  slots = [(batch, j) for batch in loader for j in range(4)]
  assert len(slots) == len(order)
  for (batch, j), i in zip(slots, order):
    if i == transforms.PAD_INDEX:
      assert not batch["valid"][j]
      continue
    example = examples[i]
    h, w = example["image"].shape[:2]
    # Independent reference: the whole image resized by f = max(112 / short, 136 / long), padded.
    f = max(112 / min(h, w), 136 / max(h, w))
    rh, rw = round(h * f), round(w * f)
    np.testing.assert_array_equal(batch["size"][j], [rh, rw])
    np.testing.assert_array_equal(batch["original_size"][j], [h, w])
    full = np.asarray(Image.fromarray(example["image"]).resize((rw, rh), Image.Resampling.BILINEAR))
    ref = (full / 255.0 - MEAN) / STD
    assert np.abs(batch["image"][j, :rh, :rw] - ref).max() <= 1.0 / 255 / STD.min() + 1e-5
    assert not batch["image"][j, rh:].any() and not batch["image"][j, :, rw:].any()
    assert batch["label"][j] == example["label"]
    # Ground truth scaled like the image (per axis by the rounded size), nothing cut away.
    sx, sy = rw / w, rh / h
    np.testing.assert_allclose(batch["boxes"][j, 0], example["boxes"][0] * [sx, sy, sx, sy],
                               atol=0.05)
    assert batch["box_valid"][j, 0] and not batch["box_valid"][j, 1:].any()
    assert batch["box_labels"][j, 0] == example["label"]


# ---------------------------------------------------------------------------------------------
# External datasets through tfds.testing.mock_data (no files, no TensorFlow).

def test_imagenet_mock_feeds_both_loaders():
  config = base_config()
  config.dataset.name = "imagenet2012"
  config.dataset.num_classes = 1000
  config.dataset.eval_split = "validation"
  config.input.batch_size = 4
  config.input.eval_batch_size = 4
  with tfds.testing.mock_data(num_examples=6):
    batch = next(iter(pipeline.train_loader(config)))
    assert batch["image"].shape == (4, 58, 58, 3) and batch["label"].shape == (4,)
    assert ((batch["label"] >= 0) & (batch["label"] < 1000)).all()
    loader = pipeline.eval_loader(config)
    eval_batches = list(loader)
  assert sum(b["valid"].sum() for b in eval_batches) == 6  # in batches of one bucket each
  for batch in eval_batches:
    canvas = loader.shape_buckets[batch["bucket"][0]].canvas(loader.scale)
    assert batch["image"].shape == (4,) + canvas + (3,)


def test_voc_mock_boxes_are_valid_pixels():
  config = base_config()
  config.dataset.name = "voc/2007"
  config.dataset.num_classes = 20
  config.input.eval_batch_size = 4
  with tfds.testing.mock_data(num_examples=4):
    source = pipeline.load_source(config.dataset, "test")
    spec = get_dataset_spec("voc/2007")
    for i in range(4):
      example = pipeline.decode_example(source[i], spec)
      h, w = example["image"].shape[:2]
      boxes = example["boxes"]
      assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
      assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    batch = next(iter(pipeline.eval_loader(config)))
  assert batch["boxes"].shape == (4, 16, 4) and batch["box_valid"].shape == (4, 16)
  assert (batch["label"][batch["valid"]] == pipeline.NO_LABEL).all()


def test_scale_jitter_draws_the_short_side_from_the_range():
  """input.resize_short_max: a horizontal ramp (pixel value = column) shows each crop's scale, since
  58 crop columns span 58 * 200 / short source columns."""
  spec = get_dataset_spec("imagenet2012")
  ramp = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (200, 200, 3)).copy()
  record = {"image": ramp, "label": np.int64(3)}

  def shorts(resize_short_max: int) -> np.ndarray:
    augment = transforms.TrainTransform(spec=spec, resize_short=64, crop_size=58, random_flip=False,
                                        resize_short_max=resize_short_max)
    spans = []
    for seed in range(60):
      image = augment.random_map(record, np.random.default_rng(seed))["image"][0, :, 0].astype(float)
      spans.append((image[-1] - image[0]) / 57)  # source columns per crop column = 200 / short
    return 200 / np.array(spans)

  fixed = shorts(0)
  np.testing.assert_allclose(fixed, 64, rtol=0.03)
  jittered = shorts(128)
  assert jittered.min() >= 64 * 0.97 and jittered.max() <= 128 * 1.03
  assert jittered.min() < 75 and jittered.max() > 115  # the whole range is used


def test_scale_jitter_range_is_checked():
  config = base_config()
  config.input.resize_short_max = 60  # below resize_short (64)
  with pytest.raises(ConfigError, match="input.resize_short_max"):
    validate_config(config)


def test_off_object_crops_are_labelled_as_such_at_the_configured_rate(digits_data_dir):
  """input.off_object_crops: that share of the training examples that have an off-object crop comes
  out with OFF_OBJECT_LABEL (their crops' geometry: tests/test_train_crop.py); the others keep their
  class."""
  config = _digits_config(digits_data_dir)
  spec = get_dataset_spec(config.dataset.name)
  source = pipeline.load_source(config.dataset, "train")
  augment = transforms.TrainTransform(spec=spec, resize_short=64, crop_size=58, random_flip=False,
                                      keep_object=True, off_object_rate=0.3, off_object_max_fraction=0.5)
  labels, true, possible = [], [], []
  for i in range(400):
    record = source[i]
    labels.append(int(augment.random_map(record, np.random.default_rng(i))["label"]))
    example = transforms.decode_example(record, spec)
    true.append(int(example["label"]))
    h, w = example["image"].shape[:2]
    possible.append(transforms.off_object_crop(h, w, 64, 58, np.random.default_rng(0),
                                               example["boxes"][0], 0.5) is not None)
  labels, true, possible = np.array(labels), np.array(true), np.array(possible)
  off = labels == transforms.OFF_OBJECT_LABEL
  assert not (off & ~possible).any() and possible.sum() > 40
  assert 0.15 < off.sum() / possible.sum() < 0.45
  np.testing.assert_array_equal(labels[~off], true[~off])
