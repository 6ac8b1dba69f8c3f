"""The names of a dataset's classes, for pictures, per-class tables and predictions."""

from __future__ import annotations

from typing import Any

import ml_collections

from overfeat_jax.data.registry import DatasetSpec, get_dataset_spec


def names_from_info(info: Any, spec: DatasetSpec) -> tuple[str, ...]:
  """The spec.num_classes class names in a TFDS `DatasetInfo` (or None: numbers).

  They are the names of the ClassLabel feature of the image label (or, for detection datasets, of
  the box labels): "0".."9" for the digits, the synset ids (WordNet ids, "n01440764", ...) for
  imagenet2012. Without that feature, or with a ClassLabel of no names or another number of them,
  the names are str(k).
  """
  key = spec.label_key or spec.box_labels_key
  feature = getattr(info, "features", None)
  names = None
  if key is not None and feature is not None:
    try:
      for part in key.split("/"):
        feature = feature[part]
      names = getattr(getattr(feature, "feature", feature), "names", None)  # Sequence(ClassLabel)
    except (KeyError, TypeError):
      names = None
  if names is None or len(names) != spec.num_classes:
    return tuple(str(k) for k in range(spec.num_classes))
  return tuple(str(name) for name in names)


def class_names(source: Any, spec: DatasetSpec) -> tuple[str, ...]:
  """The class names (`names_from_info`) of a split's source (`pipeline.load_source`)."""
  return names_from_info(getattr(source, "dataset_info", None), spec)


def dataset_class_names(dataset_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The class names (`names_from_info`) of config.dataset.name without reading any of its data.

  The names are in the dataset's builder (our own builder's code; TFDS's code or its prepared files
  for the others), so this works where the dataset was never prepared (predicting on one's own
  images). Where no builder can be had, the names are numbers.
  Raises:
    DataError: the dataset is unknown.
  """
  spec = get_dataset_spec(dataset_cfg.name)
  data_dir = dataset_cfg.data_dir or None
  try:
    if spec.local:
      from overfeat_jax.data.builders import digits_in_scenes  # pylint: disable=g-import-not-at-top

      builder = digits_in_scenes.DigitsInScenes(config=spec.name.split("/", 1)[1], data_dir=data_dir)
    else:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      from tensorflow_datasets.core import read_only_builder  # pylint: disable=g-import-not-at-top

      try:
        builder = read_only_builder.builder_from_files(spec.name, data_dir=data_dir)
      except Exception:  # noqa: BLE001  (not prepared: TFDS's code builder has the names too)
        builder = tfds.builder(spec.name, data_dir=data_dir)
    info = builder.info
  except Exception:  # noqa: BLE001  names only: a builder that cannot be made (its code needs
    info = None  # TensorFlow, ...) costs the names, never the prediction
  return names_from_info(info, spec)
