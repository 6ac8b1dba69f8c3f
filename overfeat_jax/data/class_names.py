"""The names of a dataset's classes, for pictures and per-class tables."""

from __future__ import annotations

from typing import Any

from overfeat_jax.data.registry import DatasetSpec


def class_names(source: Any, spec: DatasetSpec) -> tuple[str, ...]:
  """The spec.num_classes class names of a split's source (`pipeline.load_source`).

  They are the names of the TFDS ClassLabel feature of the image label (or, for detection datasets,
  of the box labels): "0".."9" for the digits, the synset ids for imagenet2012. A source without
  that feature, or whose ClassLabel has no names or another number of them, gets str(k).
  """
  key = spec.label_key or spec.box_labels_key
  feature = getattr(getattr(source, "dataset_info", None), "features", None)
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
