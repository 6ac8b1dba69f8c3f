"""The datasets the pipeline knows: where each keeps its image, label and boxes (DESIGN "Data").

`config.dataset.name` is looked up here; the pipeline reads features by these keys and nothing else.
Feature keys are TFDS feature paths; "objects/bbox" means `record["objects"]["bbox"]`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import MappingProxyType

from overfeat_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to read one TFDS dataset.

  Attributes:
    name: the name configs use (`config.dataset.name`); also the TFDS name[/config].
    num_classes: object classes, without background (config.dataset.num_classes must equal it).
    image_key: feature holding the image ([H, W, 3] or [H, W, 1] uint8).
    label_key: feature holding the image-level class, or None when the dataset has none (detection
      datasets: an image holds 0..N objects).
    boxes_key: feature holding the boxes (TFDS BBoxFeature: normalised ymin, xmin, ymax, xmax), or None.
    box_labels_key: feature holding each box's class, or None.
    difficult_key: feature holding each box's "difficult" flag (VOC), or None (no box is difficult).
    iscrowd_key: feature holding each box's "crowd" flag (COCO), or None (no box is a crowd).
    image_id_key: feature holding the image's integer id (COCO's `image/id`), or None: the image's
      index in the split it is read from is its id.
    local: True for our own builders, generated on this machine from installed packages; False for
      external datasets that the user prepares with `tfds build` (they need downloads).
    train_split: the TFDS split a config of this dataset trains on by default.
    eval_split: the TFDS split it evaluates on by default.
  """

  name: str
  num_classes: int
  image_key: str = "image"
  label_key: str | None = "label"
  boxes_key: str | None = None
  box_labels_key: str | None = None
  difficult_key: str | None = None
  iscrowd_key: str | None = None
  image_id_key: str | None = None
  local: bool = False
  train_split: str = "train"
  eval_split: str = "test"

  @property
  def has_boxes(self) -> bool:
    """Whether examples carry ground-truth boxes."""
    return self.boxes_key is not None

  def build_command(self, data_dir: str) -> str:
    """The shell command that prepares this dataset for `tfds.data_source` (array_record files)."""
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")  # TFDS's default.
    return f"tfds build {self.name} --file_format=array_record --data_dir={where}"


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    spec.name: spec for spec in (
        DatasetSpec(name="digits_in_scenes/classification", num_classes=10,
                    boxes_key="objects/bbox", box_labels_key="objects/label", local=True),
        DatasetSpec(name="digits_in_scenes/classification_x4", num_classes=10,
                    boxes_key="objects/bbox", box_labels_key="objects/label", local=True),
        DatasetSpec(name="digits_in_scenes/classification_x8", num_classes=10,
                    boxes_key="objects/bbox", box_labels_key="objects/label", local=True),
        DatasetSpec(name="digits_in_scenes/classification_x8_distorted", num_classes=10,
                    boxes_key="objects/bbox", box_labels_key="objects/label", local=True),
        DatasetSpec(name="digits_in_scenes/detection", num_classes=10, label_key=None,
                    boxes_key="objects/bbox", box_labels_key="objects/label", local=True),
        # ILSVRC 2012 (SPEC A1, A4): the "validation" split is the paper's test set.
        DatasetSpec(name="imagenet2012", num_classes=1000, eval_split="validation"),
        # VOC 2007: train on trainval, test on test (SPEC B6).
        DatasetSpec(name="voc/2007", num_classes=20, label_key=None, boxes_key="objects/bbox",
                    box_labels_key="objects/label", difficult_key="objects/is_difficult",
                    train_split="train+validation"),
        # VOC 2012 test labels are not public: evaluate on its validation split.
        DatasetSpec(name="voc/2012", num_classes=20, label_key=None, boxes_key="objects/bbox",
                    box_labels_key="objects/label", difficult_key="objects/is_difficult",
                    train_split="train", eval_split="validation"),
        # COCO 2017: test-dev labels are not public; "validation" is val2017.
        DatasetSpec(name="coco/2017", num_classes=80, label_key=None, boxes_key="objects/bbox",
                    box_labels_key="objects/label", iscrowd_key="objects/is_crowd",
                    image_id_key="image/id", eval_split="validation"),
    )
})


def known_datasets() -> tuple[str, ...]:
  """The names `get_dataset_spec` accepts, sorted."""
  return tuple(sorted(DATASETS))


def get_dataset_spec(name: str) -> DatasetSpec:
  """The spec of dataset `name` (e.g. "digits_in_scenes/classification").

  Raises:
    DataError: the dataset is unknown (the message lists the known ones).
  """
  try:
    return DATASETS[name]
  except KeyError:
    raise DataError(
        f"unknown dataset {name!r} (config.dataset.name); known datasets: "
        + ", ".join(known_datasets())) from None
