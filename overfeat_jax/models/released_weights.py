"""The weight files the OverFeat authors released, read into this project's OverFeat parameters.

The OverFeat release (github.com/sermanet/OverFeat; its `download_weights.py` fetches
`overfeat-weights.tgz` into `data/default/`) holds `net_weight_0` (the fast network) and `net_weight_1`
(the accurate one). Each is a flat array of little-endian float32 with no header: for every layer in
network order (conv1, conv2, ..., then the "fully connected" layers), its weight in Torch7's
[out, in, kh, kw] order, then its bias [out]; fast holds 145,920,872 floats, accurate 144,656,488 (the
SPEC A2 parameter counts). The networks read RGB pixels in 0..255 standardised as
(p - PIXEL_MEAN) / PIXEL_STD, one mean and one std for all three channels.

The fully connected layers are stored as convolutions too. OverFeat ran them as Torch7 convolutions
(SpatialConvolutionMM: layer 6 of the fast net a 6x6 convolution over the 1024-channel 6x6 map, the
later ones 1x1), whose weights are [out, in, kh, kw] like every other layer: layer 6's row for one
output runs over the input channels, then the kernel rows, then the kernel columns. (A Linear layer
over the flattened map would have the same (in, kh, kw) order if the map was flattened as Torch
stores it, [C, H, W]; either reading gives the same layout.) This cannot be checked without the real
file: a file that stored layer 6's inputs in another order (e.g. [kh, kw, in]) would have the same
size and load without error but classify badly. `torch_to_flax` is the one place that turns a file
layer into a Flax kernel, so such a difference would be fixed there. No kernel is flipped: the
release's C++ runs its convolutions as Torch's cross-correlation (conv2Dmv/conv2Dmm with "X"), which
is what XLA's convolution computes too.

`file_layout(arch, num_classes)` describes the layers of any architecture (the paper's two, or a
width-reduced one for tests); `read_released_weights` checks the file's size against it and returns
the parameter tree of `OverFeat(arch, num_classes)`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from overfeat_jax.errors import CheckpointError, reason
from overfeat_jax.models.overfeat import PAPER_ARCHITECTURES, Architecture, fc_names

PIXEL_MEAN = 118.380948  # Of 0..255 pixels, all channels (the release's preprocessing).
PIXEL_STD = 61.896913
RELEASED_FILES = {"fast": "net_weight_0", "accurate": "net_weight_1"}
RELEASED_NUM_CLASSES = 1000
FILE_DTYPE = np.dtype("<f4")  # little-endian float32

Params = dict[str, dict[str, dict[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class FileEntry:
  """One array of the file.

  Attributes:
    path: where it goes in the OverFeat parameter tree, e.g. ('extractor', 'conv1', 'kernel').
    file_shape: its shape in the file: (out, in, kh, kw) for a weight, (out,) for a bias.
    offset: its first float's index in the file.
  """
  path: tuple[str, str, str]
  file_shape: tuple[int, ...]
  offset: int

  @property
  def size(self) -> int:
    return int(np.prod(self.file_shape))


def file_layout(arch: Architecture, num_classes: int = RELEASED_NUM_CLASSES) -> tuple[FileEntry, ...]:
  """The arrays of a released-format file for `OverFeat(arch, num_classes)`, in file order.

  Fast at full size: conv1 weight (96, 3, 11, 11) at 0, conv1 bias (96,) at 34,848, conv2 weight
  (256, 96, 5, 5) at 34,944, ..., fc6 weight (3072, 1024, 6, 6), ..., fc8 bias (1000,) last.
  """
  layers = []  # (path prefix, out, in, kernel)
  in_channels = 3
  for i, conv in enumerate(arch.convs):
    layers.append((("extractor", f"conv{i + 1}"), conv.features, in_channels, conv.kernel))
    in_channels = conv.features
  widths = arch.fc_features + (num_classes,)
  for j, (name, out) in enumerate(zip(fc_names(arch), widths)):
    layers.append((("classifier", name), out, in_channels, arch.fc_kernel if j == 0 else 1))
    in_channels = out
  entries, offset = [], 0
  for prefix, out, inp, kernel in layers:
    for leaf, shape in (("kernel", (out, inp, kernel, kernel)), ("bias", (out,))):
      entry = FileEntry(path=prefix + (leaf,), file_shape=shape, offset=offset)
      entries.append(entry)
      offset += entry.size
  return tuple(entries)


def float_count(arch: Architecture, num_classes: int = RELEASED_NUM_CLASSES) -> int:
  """How many float32 values a released-format file for this network holds."""
  last = file_layout(arch, num_classes)[-1]
  return last.offset + last.size


def torch_to_flax(entry: FileEntry, values: np.ndarray) -> np.ndarray:
  """One file array (flat float32) -> the Flax parameter: THE one place the layout is converted.

  Weights [out, in, kh, kw] -> [kh, kw, in, out] (nn.Conv's and FullyConnectedConv's kernel, which
  for the FC layers is what their im2col patches in (dy, dx, c) order multiply); biases as they are.
  """
  array = values.reshape(entry.file_shape)
  if array.ndim == 4:
    array = array.transpose(2, 3, 1, 0)
  return np.ascontiguousarray(array, dtype=np.float32)


def _size_error(path: str, size: int, arch: Architecture, num_classes: int) -> CheckpointError:
  """The one-line error for a file of `size` bytes that is not `arch`'s, naming the variant it fits."""
  expected = float_count(arch, num_classes)
  if size % FILE_DTYPE.itemsize:
    found = f"{size:,} bytes (not a whole number of float32 values)"
  else:
    found = f"{size // FILE_DTYPE.itemsize:,} float32 values"
  fits = [name for name, paper in PAPER_ARCHITECTURES.items()
          if size == float_count(paper) * FILE_DTYPE.itemsize and name != arch.name]
  hint = (f"; that is the {fits[0]} network's count ({RELEASED_FILES[fits[0]]}): use --variant {fits[0]}"
          if fits else "")
  return CheckpointError(f"{path} holds {found}, but the {arch.name} network's weights are "
                         f"{expected:,} float32 values{hint}")


def read_released_weights(path: str | os.PathLike, arch: Architecture,
                          num_classes: int = RELEASED_NUM_CLASSES) -> Params:
  """The parameters of `OverFeat(arch, num_classes)` from a released-format weight file.

  Args:
    path: `net_weight_0` for the fast network, `net_weight_1` for the accurate one (or a file of the
      same layout for another architecture, e.g. in tests).
    arch: the network the file holds.
  Returns:
    {'extractor': {'conv1': {'kernel': float32 [kh, kw, in, out], 'bias': [out]}, ...},
     'classifier': {'fc6': {...}, ...}}: numpy arrays shaped as `OverFeat.init(...)['params']`.
  Raises:
    CheckpointError: the file cannot be read, its size is not the network's float count (one line
      naming both counts, and the variant whose count it is, if any), or it holds NaN or Inf (a file
      of another format or byte order; names the first such layer).
  """
  path = os.fspath(path)
  expected = float_count(arch, num_classes)
  try:
    size = os.path.getsize(path)
    if size != expected * FILE_DTYPE.itemsize:
      raise _size_error(path, size, arch, num_classes)
    flat = np.fromfile(path, dtype=FILE_DTYPE)
  except OSError as e:
    raise CheckpointError(f"cannot read OverFeat weights from {path}: {reason(e)}") from e
  params: Params = {}
  for entry in file_layout(arch, num_classes):
    values = flat[entry.offset:entry.offset + entry.size]
    if not np.all(np.isfinite(values)):
      raise CheckpointError(f"{path} holds NaN or Inf in {'/'.join(entry.path[1:])}: not an OverFeat "
                            "weight file (flat little-endian float32)")
    top, layer, leaf = entry.path
    params.setdefault(top, {}).setdefault(layer, {})[leaf] = torch_to_flax(entry, values)
  return params


def reorder_classes(params: Params, arch: Architecture, order: Sequence[int]) -> Params:
  """The same network with its class outputs permuted: new output k = old output order[k].

  Args:
    params: as `read_released_weights` returns (the last FC layer's kernel [1, 1, C, K], bias [K]).
    order: a permutation of range(K).
  Returns:
    A new tree; only the last FC layer differs.
  """
  last = fc_names(arch)[-1]
  order = np.asarray(order)
  layer = params["classifier"][last]
  if sorted(order.tolist()) != list(range(layer["bias"].shape[0])):
    raise ValueError(f"reorder_classes: not a permutation of the {layer['bias'].shape[0]} classes")
  new_layer = {"kernel": np.ascontiguousarray(layer["kernel"][..., order]),
               "bias": np.ascontiguousarray(layer["bias"][order])}
  return {**params, "classifier": {**params["classifier"], last: new_layer}}


# ---------------------------------------------------------------------------------------------
# Class order. The released networks' output k is ILSVRC2012 class ID k + 1 of the ILSVRC2012
# development kit (its data/meta.mat: ID 1 = n02119789 kit fox, 2 = n02100735 English setter, ...,
# the order of OverFeat's own class-name list), not TFDS imagenet2012's label order, which is the
# WNIDs sorted (label 0 = n01440764 tench). The devkit order is not shipped here; the user's copy
# of meta.mat (or a text list of the WNIDs in output order) gives it.

def _is_wnid(token: str) -> bool:
  return len(token) == 9 and token[0] == "n" and token[1:].isdigit()


def read_class_order(path: str | os.PathLike, num_classes: int = RELEASED_NUM_CLASSES) -> list[str]:
  """The WNIDs of the network's outputs, output 0 first.

  Args:
    path: the ILSVRC2012 devkit's `data/meta.mat` (its `synsets` with no children, the 1000 classes,
      ordered by ILSVRC2012_ID; read with scipy), or a text file whose non-empty lines each start
      with a WNID, line k for output k (e.g. "n02119789 kit fox").
  Raises:
    CheckpointError: the file cannot be read, or does not give `num_classes` distinct WNIDs (names
      the first bad line or the count found).
  """
  path = os.fspath(path)
  try:
    if path.endswith(".mat"):
      import scipy.io  # a dependency of scikit-image; only this file format needs it

      synsets = scipy.io.loadmat(path, squeeze_me=True)["synsets"]
      leaves = sorted((int(s["ILSVRC2012_ID"]), str(s["WNID"]))
                      for s in synsets if int(s["num_children"]) == 0)  # the 1000 classes
      wnids = [wnid for _, wnid in leaves]
    else:
      with open(path) as f:
        lines = [(number, line.split()) for number, line in enumerate(f, start=1) if line.strip()]
      wnids = []
      for number, tokens in lines:
        if not _is_wnid(tokens[0]):
          raise CheckpointError(f"{path} line {number} does not start with a WNID (n + 8 digits): "
                                f"{' '.join(tokens)[:60]!r}")
        wnids.append(tokens[0])
  except (OSError, ValueError, KeyError, TypeError) as e:  # scipy: ValueError / KeyError on other files
    raise CheckpointError(f"cannot read the class order from {path}: {reason(e)}") from e
  if len(wnids) != num_classes or len(set(wnids)) != num_classes or not all(map(_is_wnid, wnids)):
    raise CheckpointError(f"{path} gives {len(wnids)} WNIDs ({len(set(wnids))} distinct), expected "
                          f"{num_classes} distinct ones, one per network output")
  return wnids


def sorted_wnid_order(wnids: Sequence[str]) -> np.ndarray:
  """The permutation for `reorder_classes` that puts the outputs in sorted-WNID order (TFDS
  imagenet2012's labels): int [K], entry k = the output whose WNID is the k-th smallest."""
  return np.argsort(np.asarray(wnids), kind="stable")
