"""The OverFeat feature extractor on its own (SPEC A6): a trained classifier's layer-N maps of images.

For each image, at its own size (any size at least the network's field of view):
  read (PNG/JPEG/...; grey repeated to RGB, alpha dropped) -> normalise with config.input.mean/std
  exactly as the input pipeline does -> feature layer N (`OverFeat.features(images, layer=N)`) ->
  <out>/<stem>.npy (float32 [h, w, C]) and <out>/<stem>.json (what the map is: `describe`).
Every image is read and checked before the checkpoint is restored, so a bad file fails before anything
is written; each output file is written atomically (`files.replace_file`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from overfeat_jax import checkpoint_io, files
from overfeat_jax.config import validate_config
from overfeat_jax.data import transforms
from overfeat_jax.errors import DataError, InputSizeError, reason
from overfeat_jax.models.overfeat import FeatureLayer, OverFeat, feature_layer
from overfeat_jax.tasks import classification

FEATURES_SUBDIR = "features"  # The default output directory, inside the work directory.


@dataclasses.dataclass(frozen=True)
class ExportedImage:
  """What `export_features` wrote for one image.

  Attributes:
    image: the image's path as given.
    npy: path of the float32 [h, w, C] feature map.
    json: path of its description (`describe`).
    shape: (h, w, C).
  """
  image: str
  npy: str
  json: str
  shape: tuple[int, int, int]


def read_image(path: str) -> np.ndarray:
  """An image file -> [H, W, 3] uint8.

  Grey is repeated to RGB and alpha dropped (not composited), the convention of the input pipeline's
  decoding (`transforms.decode_example`); palette images are expanded. PIL's RGB conversion does all
  of these.
  Raises:
    DataError: the file is missing or not an image PIL can read (names the file and why).
  """
  try:
    with Image.open(io.BytesIO(files.read_bytes(path))) as image:  # local or cloud storage
      return np.asarray(image.convert("RGB"))
  except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
    raise DataError(f"cannot read image {path}: {reason(e)}") from e


def output_stems(paths: Sequence[str]) -> list[str]:
  """Each image's file name without its extension (its outputs' name).

  Raises:
    DataError: two images share a stem (their outputs would overwrite each other).
  """
  stems, seen = [], {}
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in seen:
      raise DataError(f"images {seen[stem]} and {path} would both write {stem}.npy: give them "
                      "different names or extract them in two runs with different --out")
    seen[stem] = path
    stems.append(stem)
  return stems


def describe(layer: FeatureLayer, shape: Sequence[int], image_hw: Sequence[int], step: int,
             model: OverFeat) -> dict[str, Any]:
  """The JSON written beside a feature map: shape [h, w, C], layer (number and `layer_map_sizes` name),
  stride, receptive_field and field_origin in input pixels (cell (i, j) sees rows field_origin + i *
  stride ... + receptive_field - 1), image_size [H, W], checkpoint_step, architecture."""
  return {"shape": [int(v) for v in shape], "layer": layer.index, "layer_name": layer.name,
          "stride": layer.stride, "receptive_field": layer.receptive_field,
          "field_origin": layer.origin, "image_size": [int(v) for v in image_hw],
          "checkpoint_step": int(step), "architecture": model.arch.name}


def _npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array)
  return buffer.getvalue()


def export_features(config: ml_collections.ConfigDict, workdir: str, image_paths: Sequence[str], *,
                    layer: int | None = None, out_dir: str | None = None,
                    verbose: bool = True) -> list[ExportedImage]:
  """Writes feature layer `layer` (None = the last, the pre-pool map) of each image, computed with the
  newest intact checkpoint in `workdir`, to `out_dir` (None = `workdir/features`).

  With `verbose`, prints one line per image and a summary.
  Returns:
    One ExportedImage per image, in order.
  Raises:
    ConfigError: a bad config value, or a layer outside 1..len(arch.convs) (names the range).
    DataError: an image cannot be read, or two images share a file name stem.
    InputSizeError: an image is smaller than the field of view (names the file and both sizes).
    CheckpointError: no intact checkpoint in `workdir`, or one of another model.
    WorkdirError: an output file cannot be written (names it; the ones before it stay).
  """
  validate_config(config)
  model = classification.model_from_config(config)
  geometry = feature_layer(model.arch, len(model.arch.convs) if layer is None else layer)
  out_dir = os.path.join(workdir, FEATURES_SUBDIR) if out_dir is None else out_dir
  stems = output_stems(image_paths)
  # Every file is decoded once up front (only its size is kept, so memory stays one image) and again
  # when its turn comes.
  sizes = [read_image(path).shape for path in image_paths]  # [H, W, 3] each

  def features(params: Any, image: jax.Array) -> jax.Array:  # [1, H, W, 3] -> [1, h, w, C]
    return model.apply({"params": params}, image, geometry.index, method="features")

  template = classification.params_template(model)
  for path, size in zip(image_paths, sizes):  # shapes only: the model's own size check, per file
    try:
      jax.eval_shape(features, template, jax.ShapeDtypeStruct((1,) + size, jnp.float32))
    except InputSizeError as e:
      raise InputSizeError(f"image {path}: {e}") from None

  params, step = classification.restore_params(config, workdir)
  compute = jax.jit(features)  # one program per image size
  exported = []
  for path, stem in zip(image_paths, stems):
    image = read_image(path)  # [H, W, 3] uint8
    normalized = transforms.normalize(image[None], config.input.mean, config.input.std)  # [1, H, W, 3]
    fmap = np.asarray(compute(params, normalized)[0], np.float32)  # [h, w, C]
    npy, meta = os.path.join(out_dir, f"{stem}.npy"), os.path.join(out_dir, f"{stem}.json")
    files.replace_file(npy, _npy_bytes(fmap))
    files.replace_file(meta, json.dumps(describe(geometry, fmap.shape, image.shape[:2], step, model),
                                        indent=2) + "\n")
    exported.append(ExportedImage(image=path, npy=npy, json=meta, shape=tuple(fmap.shape)))
    if verbose:
      h, w, c = fmap.shape
      print(f"{path}: {image.shape[0]}x{image.shape[1]} -> {geometry.name} {h}x{w}x{c}", flush=True)
  if verbose:
    print(f"{len(exported)} image(s): layer {geometry.index} ({geometry.name}) of {model.arch.name}, "
          f"stride {geometry.stride}, receptive field {geometry.receptive_field}; checkpoint step "
          f"{step} of {checkpoint_io.checkpoint_dir(workdir)}; features in {out_dir}", flush=True)
  return exported
