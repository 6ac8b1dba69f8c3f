"""Backbone parameters from elsewhere: torchvision's VGG-16 ImageNet weights, and our classifiers.

**torchvision VGG-16** (SPEC B5: the backbone starts from ImageNet weights). The package reads a
torchvision `state_dict` saved as a safetensors file, without PyTorch. Write the file once, anywhere
PyTorch, torchvision and safetensors are installed:

    import torchvision, safetensors.torch
    vgg16 = torchvision.models.vgg16(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)
    safetensors.torch.save_file(vgg16.state_dict(), "vgg16_imagenet.safetensors")

`load_torchvision_vgg16(path)` takes its `features.N.weight` / `features.N.bias` tensors (conv1_1 =
features.0, conv1_2 = features.2, conv2_1 = features.5, ..., conv5_3 = features.28; `classifier.*`
is ignored), turns torch's [out, in, kh, kw] kernels into Flax's [kh, kw, in, out], and returns the
vgg16 backbone's parameters. Those weights expect RGB images in [0, 1] normalised by
TORCHVISION_MEAN / TORCHVISION_STD (config.input.mean / std default to the same values). A file of
another layout is refused on one line naming the first layer that does not fit.

**A classifier of ours**: `load_classifier_extractor(workdir, backbone)` takes the OverFeat feature
extractor's parameters (the 'extractor' subtree) of a classification run's checkpoint, for the
overfeat_* backbone of the same variant, width and stem; a checkpoint of another architecture is
refused on one line naming the differing layers.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError, safe_open

from overfeat_jax import checkpoint_io
from overfeat_jax.errors import CheckpointError, ConfigError, reason
from overfeat_jax.models.backbones import Backbone, Stage, build_backbone
from overfeat_jax.models.overfeat import GAIN, fold_standardization

# ImageNet statistics torchvision's weights were trained with, for [0, 1] RGB pixels.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
# safetensors dtypes read (as float32); torchvision saves F32.
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
Params = dict[str, dict[str, np.ndarray]]


def torchvision_vgg16_keys(backbone: Backbone) -> Iterator[tuple[Stage, str]]:
  """(stage, 'features.N') for each conv of the vgg16 backbone, N its index in torchvision's
  `vgg16().features` (nn.Sequential of Conv2d, ReLU and MaxPool2d: a conv and its ReLU take two
  indices, a pool one)."""
  index = 0
  for stage in backbone.stages:
    yield stage, f"features.{index}"
    index += 2 + (stage.pool is not None)


def _file_error(path: str, problem: str) -> CheckpointError:
  return CheckpointError(f"{path} does not hold torchvision's VGG-16 state_dict: {problem}")


def load_torchvision_vgg16(path: str | os.PathLike, backbone: Backbone | None = None) -> Params:
  """The vgg16 backbone's parameters from a torchvision VGG-16 state_dict in a safetensors file.

  Args:
    path: the file (see the module docstring for the lines that write it).
    backbone: the backbone they are for; it must be the paper-size vgg16 (the default).
  Returns:
    {'conv1_1': {'kernel': float32 [3, 3, 3, 64], 'bias': float32 [64]}, ..., 'conv5_3': {...}}:
    numpy arrays with the structure of `backbone.module().init(...)['params']`.
  Raises:
    ConfigError: `backbone` is not the paper-size vgg16.
    CheckpointError: the file cannot be read, is not safetensors, or a tensor is missing or has
      another shape or a non-float dtype (one line naming the first such layer, in network order).
  """
  vgg16 = build_backbone("vgg16")
  if backbone is not None and backbone != vgg16:
    raise ConfigError(f"torchvision's VGG-16 weights fit the paper-size vgg16 backbone only, not "
                      f"{backbone.name}")
  path = os.fspath(path)
  try:
    handle = safe_open(path, framework="numpy")
  except (OSError, SafetensorError) as e:
    # safetensors' FileNotFoundError carries no strerror, only a message that repeats the path.
    why = os.strerror(errno.ENOENT) if isinstance(e, FileNotFoundError) else reason(e)
    raise CheckpointError(f"cannot read VGG-16 weights from {path}: {why}") from e
  params: Params = {}
  with handle as f:
    keys = set(f.keys())
    in_channels = 3
    for stage, prefix in torchvision_vgg16_keys(vgg16):
      out_channels, kernel = stage.conv.features, stage.conv.kernel
      layer: dict[str, np.ndarray] = {}
      for suffix, name, expected in (("weight", "kernel", (out_channels, in_channels, kernel, kernel)),
                                     ("bias", "bias", (out_channels,))):
        key = f"{prefix}.{suffix}"
        what = f"{key} ({stage.name} {name})"
        if key not in keys:
          hint = (", and it has batch-norm statistics: vgg16_bn's layout, not vgg16's"
                  if any(k.endswith("running_mean") for k in keys)
                  else f" (the file has {len(keys)} tensors: {', '.join(sorted(keys)[:3])}, ...)")
          raise _file_error(path, f"{what} is missing{hint}")
        tensor = f.get_slice(key)
        shape, dtype = tuple(tensor.get_shape()), tensor.get_dtype()
        if shape != expected:
          hint = (" (the right sizes in another order: a kernel saved in another layout than torch's "
                  "[out, in, kh, kw]?)" if sorted(shape) == sorted(expected) else "")
          raise _file_error(path, f"{what} has shape {list(shape)}, expected {list(expected)}{hint}")
        if dtype not in _FLOAT_DTYPES:
          raise _file_error(path, f"{what} has dtype {dtype}, expected a float ({'/'.join(_FLOAT_DTYPES)})")
        value = np.asarray(f.get_tensor(key), np.float32)
        # torch Conv2d weight [out, in, kh, kw] -> Flax nn.Conv kernel [kh, kw, in, out].
        layer[name] = np.ascontiguousarray(value.transpose(2, 3, 1, 0) if suffix == "weight" else value)
      params[stage.name] = layer
      in_channels = out_channels
  return params


def _abstract_params(backbone: Backbone) -> Any:
  """The backbone's parameter shapes (jax.eval_shape: nothing is allocated)."""
  x = jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32)  # large enough for every backbone
  return jax.eval_shape(backbone.module().init, jax.random.key(0), x)["params"]


# The classification signature's model fields that shape an extractor (as tasks/classification.py's
# ARCHITECTURE_KEYS; models may not import tasks), shown when a checkpoint does not fit.
_ARCHITECTURE_FIELDS = ("variant", "width", "stem_kernel", "stem_stride")
EXTRACTOR = "extractor"  # the OverFeat classifier's feature-extractor subtree (models/overfeat.py)


def load_classifier_extractor(workdir: str, backbone: Backbone, *,
                              step: int | None = None) -> tuple[Any, int]:
  """An overfeat_* backbone's parameters from a classification run's checkpoint (its 'extractor').

  The checkpoint's signature is read first (any class count is fine: the classifier's layers are
  read and dropped), its extractor's shapes compared with the backbone's, then its parameters
  restored with `checkpoint_io.restore_params` (skipping damaged newer steps with a warning).
  Args:
    workdir: the classification run's work directory (holding `checkpoints/`).
    backbone: e.g. build_backbone("overfeat_fast", 0.125, stem_kernel=3, stem_stride=1) for a
      classifier trained with config.model.variant "fast", width 0.125, stem 3 / 1.
    step: this step only (no fall-back); None = the newest intact one.
  Returns:
    (params, step): {'conv1': {'kernel', 'bias'}, ...} jax arrays for `backbone.module()` (a
    weight-standardised classifier's kernels folded: `fold_standardization`), and the checkpoint's step.
  Raises:
    CheckpointError: no (intact) checkpoint, one without an OverFeat feature extractor, or one whose
      extractor has other layers or shapes than the backbone (one line naming the first few).
  """
  directory = checkpoint_io.checkpoint_dir(workdir)
  signature, _ = checkpoint_io.read_signature(workdir, step=step)
  saved = signature.get("param_shapes", {})
  prefix = f"{EXTRACTOR}/"
  extractor = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
  # A weight-standardised classifier's gains fold into its kernels (below): compare the rest.
  extractor = {k: v for k, v in extractor.items() if not k.endswith(f"/{GAIN}")}
  if not extractor:
    tops = sorted({k.split("/")[0] for k in saved})
    raise CheckpointError(f"checkpoint in {directory} holds no OverFeat feature extractor (its "
                          f"parameters: {', '.join(tops) or 'none'}); the {backbone.name} backbone "
                          f"starts from a classification run's checkpoint")
  differences = checkpoint_io.signature_differences(
      extractor, checkpoint_io.param_shapes(_abstract_params(backbone)))
  if differences:
    model = signature.get("task", {}).get("model", {})
    trained = ", ".join(f"{k} {model[k]}" for k in _ARCHITECTURE_FIELDS if k in model)
    raise CheckpointError(
        f"checkpoint in {directory} holds another feature extractor than the {backbone.name} "
        f"backbone{f' (it was trained with {trained})' if trained else ''}: " + "; ".join(differences))
  template = traverse_util.unflatten_dict(
      {tuple(k.split("/")): jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in saved.items()})
  params, restored_step = checkpoint_io.restore_params(workdir, template, step=step)
  return fold_standardization(params[EXTRACTOR]), restored_step
