"""Faster R-CNN backbones (SPEC B1): one NHWC feature map for the whole image, described as data.

A `Backbone` is a frozen list of `Stage`s (a conv + ReLU, then an optional max pool), built from the
same `ConvLayer` and `scale_channels` as the OverFeat networks (models/overfeat.py). Four are
known (`BACKBONE_NAMES`), each at paper size and with a width multiplier for CPU:

  vgg16              VGG-16 conv1_1 ... conv5_3: 13 3x3 convs (padding 1), ReLU, a 2x2/2 max pool
                     after conv1_2, conv2_2, conv3_3 and conv4_3; no pool after conv5_3 (RoI pooling
                     takes its place). Total stride 16, 512 channels, 14,714,688 parameters. The
                     parameter names are torchvision's layers renamed (features.0 -> conv1_1, ...,
                     see models/pretrained.py), and the pools floor as torchvision's do (Caffe's
                     ceil-mode pools give 38 x 63 instead of 37 x 62 at 600 x 1000).
                     conv1_1, conv1_2, conv2_1, conv2_2 are frozen (`frozen_layers`): Fast R-CNN
                     fine-tunes VGG-16 from conv3_1 up, and Faster R-CNN follows it.
  zf                 ZF net conv1 ... conv5 as py-faster-rcnn's ZF prototxts have it: conv1 96 7x7/2
                     pad 3, max pool 3x3/2 pad 1, conv2 256 5x5/2 pad 2, max pool 3x3/2 pad 1, conv3
                     384, conv4 384, conv5 256 (3x3, pad 1). Total stride 16, 256 channels,
                     3,726,464 parameters. Nothing frozen (py-faster-rcnn trains all five: lr_mult 1).
                     Two details are not kept:
                     - the LRN after conv1 and conv2 (local_size 3, alpha 5e-5, beta 0.75, within
                       channel) is left out: it scales by (1 + 5e-5 * mean(x^2 over 3x3))^-0.75,
                       within 0.1% of 1 while activations stay below ~5, as they do on normalised
                       inputs (it mattered on Caffe's 0-255 pixels); there are no ZF ImageNet weights
                       to load that would expect it, and OverFeat dropped LRN too (SPEC A2).
                     - Caffe's pools round their output size up (ceil mode); these round down, so a
                       pool's output is ceil(n / 2) = every window centred on an input cell, and cell
                       (i, j) of conv5 is centred on image pixel (16 i, 16 j) exactly. At 600 x 1000
                       the map is 38 x 63 (Caffe: 39 x 64, one extra border row/column).
  overfeat_fast,     the OverFeat feature extractor of the spine (SPEC A2: layers 1-5 fast, 1-6
  overfeat_accurate  accurate, `models.overfeat.FeatureExtractor`), up to the last conv + ReLU,
                     before the last max pool: as with VGG-16's pool5, RoI pooling replaces that
                     pool. Stride = `Architecture.prepool_stride`: 16 fast, 12 accurate; channels
                     1024; no padding in layers 1-2, so the map is smaller than H / stride (and
                     empty below the first pool's field of view). The parameters have the
                     extractor's own names and shapes (conv1 ... conv5 / conv6): a classifier's
                     'extractor' parameters fit as they are (models/pretrained.py). Nothing frozen.
  tiny               not a paper network: the small CPU detector of issue 8's benchmark and of
                     configs/faster_rcnn_quickstart.py: four 3x3 convs (padding 1) with 32, 64, 128,
                     128 channels, a 2x2/2 max pool after each of the first three. Total stride 8,
                     128 channels, 240,832 parameters; cell (i, j) centred on pixel (8 i + 4, 8 j + 4).
                     Nothing frozen.

Sizes follow from the stages and are computed, never stored: `stride`, `channels`, `map_size`,
`receptive_field_center` (where anchors centred on a cell's receptive field go). `BackboneNet` is the
one Flax module for all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from overfeat_jax.errors import InputSizeError
from overfeat_jax.models.overfeat import (NO_POOL, PAPER_ARCHITECTURES, Architecture, ConvLayer,
                                          ConvReluPool, weight_initializer, scale_channels,
                                          build_architecture)
from overfeat_jax.ops import pooling
from overfeat_jax.ops.conv_pool import folds_pool


@dataclasses.dataclass(frozen=True)
class MaxPool:
  """Max pooling over `size` x `size` windows every `stride` cells, `padding` cells of -inf on each
  side, output size floor((n + 2 padding - size) / stride) + 1."""
  size: int
  stride: int
  padding: int = 0


@dataclasses.dataclass(frozen=True)
class Stage:
  """One backbone stage: conv (`conv`'s features, kernel, stride, padding) + ReLU, then `pool`.

  The pool is a separate `MaxPool` (and `conv.pool` stays NO_POOL) because ZF's pools overlap
  (3x3, stride 2, padding 1), which ConvLayer's pool (size = stride, no padding) cannot describe.
  `name` is the stage's parameter name ('conv1_1', 'conv1', ...).
  """
  name: str
  conv: ConvLayer
  pool: MaxPool | None = None


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A backbone as data: its stages, and which of them training keeps fixed.

  Attributes:
    name: e.g. "vgg16", "zf-w0.25", "overfeat_fast-w0.125-s3x1".
    stages: conv stages in order; the output is the last stage's (after its ReLU and pool, if any).
    frozen_layers: names of the stages whose parameters training keeps fixed (see `frozen_mask`).
  """
  name: str
  stages: tuple[Stage, ...]
  frozen_layers: tuple[str, ...] = ()

  @property
  def stride(self) -> int:
    """Input pixels per output cell: the product of all conv and pool strides."""
    stride = 1
    for stage in self.stages:
      stride *= stage.conv.stride * (stage.pool.stride if stage.pool else 1)
    return stride

  @property
  def channels(self) -> int:
    """Channels of the output map (the last conv's features)."""
    return self.stages[-1].conv.features

  @property
  def layer_names(self) -> tuple[str, ...]:
    """The stages' parameter names, in order."""
    return tuple(stage.name for stage in self.stages)

  @property
  def receptive_field_center(self) -> float:
    """Where output cell 0's receptive field is centred, in continuous input pixels (both axes).

    Cell (i, j) is centred on (x, y) = (c + j * stride, c + i * stride), c this value: 8.0 for
    VGG-16 (the cell's middle), 0.5 for ZF (the middle of pixel 16 i), 27.5 for OverFeat fast.
    Pass it as `ops.anchors(..., offset=c)` to centre the anchors on the receptive fields.
    """
    center, step = 0.5, 1  # the middle of input pixel 0; pixels per cell
    for stage in self.stages:
      layers = [(stage.conv.kernel, stage.conv.stride, stage.conv.padding)]
      if stage.pool:
        layers.append((stage.pool.size, stage.pool.stride, stage.pool.padding))
      for kernel, stride, padding in layers:
        center += step * ((kernel - 1) / 2 - padding)  # the middle of the first window
        step *= stride
    return center

  def map_size(self, height: int, width: int) -> tuple[int, int]:
    """The output map's (h, w) for a height x width input (pure Python, no tracing).

    Raises:
      InputSizeError: a stage's output would be empty (the input is smaller than the backbone's
        smallest input), naming that stage.
    """
    size = (height, width)
    for stage in self.stages:
      windows = [(stage.conv.kernel, stage.conv.stride, stage.conv.padding, stage.name)]
      if stage.pool:
        windows.append((stage.pool.size, stage.pool.stride, stage.pool.padding, f"{stage.name}'s pool"))
      for kernel, stride, padding, what in windows:
        size = tuple((s + 2 * padding - kernel) // stride + 1 for s in size)
        if min(size) < 1:
          raise InputSizeError(f"a {height}x{width} image is too small for the {self.name} backbone "
                               f"({what} would be empty)")
    return size

  def module(self, *, weight_init: str = "paper", dtype: Any = jnp.float32) -> BackboneNet:
    """The Flax module: images [B, H, W, C_in] -> map [B, h, w, channels] (see BackboneNet)."""
    return BackboneNet(self, weight_init=weight_init, dtype=dtype)


def _vgg16_stages(width: float) -> tuple[Stage, ...]:
  """VGG-16 configuration "D" up to conv5_3: blocks of (channels, convs), a pool after blocks 1-4."""
  stages = []
  for block, (channels, count) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
    for i in range(1, count + 1):
      pool = MaxPool(2, 2) if i == count and block < 5 else None
      stages.append(Stage(f"conv{block}_{i}",
                          ConvLayer(scale_channels(channels, width), kernel=3, stride=1, padding=1),
                          pool))
  return tuple(stages)


def _zf_stages(width: float) -> tuple[Stage, ...]:
  """ZF conv1-conv5 as py-faster-rcnn (see the module docstring for LRN and the pools' rounding)."""
  pool = MaxPool(3, 2, padding=1)
  layers = ((96, 7, 2, 3, pool), (256, 5, 2, 2, pool), (384, 3, 1, 1, None), (384, 3, 1, 1, None),
            (256, 3, 1, 1, None))
  return tuple(Stage(f"conv{i}", ConvLayer(scale_channels(c, width), kernel=k, stride=s, padding=p),
                     pool)
               for i, (c, k, s, p, pool) in enumerate(layers, 1))


def overfeat_stages(arch: Architecture) -> tuple[Stage, ...]:
  """An OverFeat feature extractor's layers as stages: every pool but the last (models.overfeat.
  FeatureExtractor leaves the last pool to its caller); names conv1, conv2, ... as there."""
  last = len(arch.convs) - 1
  return tuple(
      Stage(f"conv{i + 1}", dataclasses.replace(layer, pool=NO_POOL),
            MaxPool(layer.pool, layer.pool) if layer.pool != NO_POOL and i < last else None)
      for i, layer in enumerate(arch.convs))


def _tiny_stages(width: float) -> tuple[Stage, ...]:
  """The tiny CPU backbone (module docstring): 3x3 convs 32-64-128-128, pools after the first three."""
  return tuple(Stage(f"conv{i}", ConvLayer(scale_channels(c, width), kernel=3, stride=1, padding=1),
                     MaxPool(2, 2) if i < 4 else None)
               for i, c in enumerate((32, 64, 128, 128), 1))


VGG16_FROZEN = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
BACKBONE_NAMES = ("vgg16", "zf") + tuple(f"overfeat_{v}" for v in PAPER_ARCHITECTURES) + ("tiny",)


def build_backbone(name: str, width: float = 1.0, *, stem_kernel: int = 0,
                   stem_stride: int = 0) -> Backbone:
  """A backbone by name (one of BACKBONE_NAMES), optionally narrower.

  Args:
    name: "vgg16", "zf", "overfeat_fast", "overfeat_accurate" or "tiny".
    width: multiplies every layer's channels (rounded half up, >= 1); 1.0 = the paper's.
    stem_kernel, stem_stride: OverFeat only: layer 1's filter size / stride as in
      `models.overfeat.build_architecture` (0 = the paper's), so that the backbone matches a
      classifier trained with a small stem.
  Raises:
    ValueError: an unknown name, or a stem option for a backbone without one.
  """
  if name not in BACKBONE_NAMES:
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONE_NAMES)}")
  suffix = f"-w{width:g}" if width != 1.0 else ""
  if name.startswith("overfeat_"):
    return overfeat_backbone(build_architecture(name.removeprefix("overfeat_"), width=width,
                                                stem_kernel=stem_kernel, stem_stride=stem_stride))
  if stem_kernel or stem_stride:
    raise ValueError(f"stem_kernel / stem_stride apply to the OverFeat backbones only, not {name!r}")
  if name == "vgg16":
    return Backbone("vgg16" + suffix, _vgg16_stages(width), frozen_layers=VGG16_FROZEN)
  if name == "tiny":
    return Backbone("tiny" + suffix, _tiny_stages(width))
  return Backbone("zf" + suffix, _zf_stages(width))


def overfeat_backbone(arch: Architecture) -> Backbone:
  """The backbone made of an OverFeat architecture's feature extractor (any variant / width / stem)."""
  return Backbone(f"overfeat_{arch.name}", overfeat_stages(arch))


class BackboneNet(nn.Module):
  """A backbone's convolutions: images [B, H, W, C_in] -> feature map [B, h, w, channels].

  (h, w) = backbone.map_size(H, W). Parameters {stage name: {'kernel': [k, k, C_in, C_out], 'bias':
  [C_out]}}, float32, as nn.Conv's; activations in `dtype`.
  """
  backbone: Backbone
  # 'paper' = N(0, 0.01^2) weights, zero biases; 'he' = fan-in normal (small nets trained from scratch).
  weight_init: str = "paper"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: [B, H, W, C_in] -> [B, h, w, channels]; InputSizeError (at trace time) if too small."""
    self.backbone.map_size(images.shape[1], images.shape[2])
    x = images.astype(self.dtype)
    for stage in self.backbone.stages:
      conv, pad, pool = stage.conv, stage.conv.padding, stage.pool
      plain_pool = pool is not None and pool.size == pool.stride and not pool.padding
      if plain_pool and folds_pool(x.shape[-1], conv.stride, pool.size):
        x = ConvReluPool(conv.features, conv.kernel, pad, pool.size, self.weight_init,
                         dtype=self.dtype, name=stage.name)(x)
        continue
      x = nn.Conv(conv.features, (conv.kernel, conv.kernel), strides=(conv.stride, conv.stride),
                  padding=((pad, pad), (pad, pad)), kernel_init=weight_initializer(self.weight_init),
                  bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32,
                  name=stage.name)(x)
      x = nn.relu(x)
      if pool is None:
        continue
      if plain_pool:
        x = pooling.max_pool(x, pool.size)  # the reshape-based pool the OverFeat extractor uses
      else:
        x = nn.max_pool(x, (pool.size, pool.size), strides=(pool.stride, pool.stride),
                        padding=((pool.padding, pool.padding), (pool.padding, pool.padding)))
    return x


def frozen_mask(backbone: Backbone, params: Any) -> Any:
  """A pytree like the backbone's `params` with True on the leaves of `frozen_layers`, else False.

  Use with optax to keep them fixed, e.g. `optax.chain(optax.masked(optax.set_to_zero(), mask),
  tx)` (zero updates, weight decay included), or `optax.multi_transform`. The frozen stages are
  the first ones, so `jax.lax.stop_gradient` on the last frozen stage's output would also skip
  their backward pass; that is the training task's choice.
  Raises:
    ValueError: a frozen layer is missing from `params` (they are not this backbone's).
  """
  missing = [name for name in backbone.frozen_layers if name not in params]
  if missing:
    raise ValueError(f"the {backbone.name} backbone's frozen layers {missing} are not in the params "
                     f"(which hold {sorted(params)})")
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({path: path[0] in backbone.frozen_layers for path in flat})
