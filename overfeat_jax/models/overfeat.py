"""The OverFeat networks (SPEC A2): architectures as data, one Flax Linen module for all variants.

An `Architecture` is a frozen description of the convolutional feature extractor and the fully
connected classifier; `FAST` and `ACCURATE` are the paper's two models, and `build_architecture`
derives scaled variants (channel width, layer-1 "stem" filter/stride, optional no-padding) from
them.
Sizes that follow from the layers (the training input = field of view, the stride before the last
pool) are computed, never stored.

`OverFeat` exposes the pieces dense evaluation needs (SPEC A4):
  images --features--> pre-pool map --last max-pool--> pooled map --classify--> class map
The classifier's "fully connected" layers are convolutions (first: kernel = `fc_kernel`, then 1x1),
so the same weights give one logit vector at the training size and a spatial class map on larger
inputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from overfeat_jax.errors import ConfigError, InputSizeError
from overfeat_jax.ops import pooling
from overfeat_jax.ops.conv_pool import conv_relu_max_pool, folds_pool

NO_POOL = 0  # ConvLayer.pool value for a layer without max pooling.
GAIN = "gain"  # The per-output gain parameter of a weight-standardised layer (`StandardizedConv`).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """A feature-extractor stage: conv (square `kernel`, `stride`, zero `padding`), ReLU, [max pool].

  `pool` is the max-pooling size (= its stride, non-overlapping, VALID/floor); NO_POOL for none.
  """
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  pool: int = NO_POOL

  @property
  def pool_factor(self) -> int:
    """The pooling size as a factor (1 when there is no pooling)."""
    return max(self.pool, 1)


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An OverFeat network as data (SPEC A2).

  Attributes:
    name: e.g. "fast", "accurate" or a derived name such as "fast-w0.125-s3x1".
    convs: the feature extractor (layers 1-5 fast, 1-6 accurate).
    fc_features: widths of the hidden fully connected layers (both get dropout); the last FC layer,
      with one output per class, is added by the model.
    fc_kernel: spatial kernel of the first FC layer = the last pooled map size at the training
      input (6 fast, 5 accurate); later FC layers are 1x1.
  """
  name: str
  convs: tuple[ConvLayer, ...]
  fc_features: tuple[int, ...]
  fc_kernel: int

  @property
  def train_size(self) -> int:
    """The training input side (= field of view): the smallest input with a 1x1 class map."""
    return field_of_view(self)

  @property
  def prepool_stride(self) -> int:
    """Input pixels per pre-pool map cell (product of all strides and pools but the last pool).

    This is the fine output stride of dense evaluation with offset pooling (SPEC A4: 12 accurate).
    """
    return feature_layer(self, len(self.convs)).stride

  @property
  def last_pool(self) -> int:
    """The last max-pooling size, the one offset pooling replaces (3 accurate, 2 fast)."""
    return self.convs[-1].pool_factor

  @property
  def coarse_stride(self) -> int:
    """Input pixels per class-map cell without offset pooling (36 accurate, 32 fast)."""
    return self.prepool_stride * self.last_pool

  @property
  def fine_min_size(self) -> int:
    """The smallest input side for which every pooling offset leaves one full classifier window.

    Offset (pool - 1) needs `pool - 1` more pre-pool cells than the training input gives, i.e.
    (pool - 1) * prepool_stride more pixels (accurate: 221 + 2 * 12 = 245, the paper's scale 1).
    """
    return self.train_size + (self.last_pool - 1) * self.prepool_stride


# The paper's two models (SPEC A2). Layers 1-5 / 1-6 are the feature extractor.
FAST = Architecture(
    name="fast",
    convs=(
        ConvLayer(96, kernel=11, stride=4, padding=0, pool=2),
        ConvLayer(256, kernel=5, stride=1, padding=0, pool=2),
        ConvLayer(512, kernel=3, stride=1, padding=1),
        ConvLayer(1024, kernel=3, stride=1, padding=1),
        ConvLayer(1024, kernel=3, stride=1, padding=1, pool=2),
    ),
    fc_features=(3072, 4096),
    fc_kernel=6,
)

ACCURATE = Architecture(
    name="accurate",
    convs=(
        ConvLayer(96, kernel=7, stride=2, padding=0, pool=3),
        ConvLayer(256, kernel=7, stride=1, padding=0, pool=2),
        ConvLayer(512, kernel=3, stride=1, padding=1),
        ConvLayer(512, kernel=3, stride=1, padding=1),
        ConvLayer(1024, kernel=3, stride=1, padding=1),
        ConvLayer(1024, kernel=3, stride=1, padding=1, pool=3),
    ),
    fc_features=(4096, 4096),
    fc_kernel=5,
)

PAPER_ARCHITECTURES = {"fast": FAST, "accurate": ACCURATE}


def scale_channels(channels: int, width: float) -> int:
  """Rounds channels * width half-up, at least 1."""
  return max(1, int(math.floor(channels * width + 0.5)))


def build_architecture(variant: str, *, width: float = 1.0, stem_kernel: int = 0,
                       stem_stride: int = 0, padding: bool = True) -> Architecture:
  """A paper architecture, optionally scaled (SPEC A2's width / input-size multiplier).

  Args:
    variant: "fast" or "accurate".
    width: multiplies the channels of every layer but the last (class) layer; rounded, >= 1.
    stem_kernel: layer-1 filter size; 0 = the paper's (11 fast, 7 accurate).
    stem_stride: layer-1 stride; 0 = the paper's (4 fast, 2 accurate). A smaller stem shrinks the
      training input: fast with stem 3/1 trains on 58 px instead of 231.
    padding: False removes all zero padding (layers 3-5/3-6); the training size grows accordingly.
      Used to test that the dense grid equals running the network on every input window.
  Returns:
    The Architecture; its train_size (field of view) follows from the layers, fc_kernel stays the
    paper's 6 / 5.
  """
  paper = PAPER_ARCHITECTURES[variant]
  convs = []
  for i, layer in enumerate(paper.convs):
    layer = dataclasses.replace(
        layer, features=scale_channels(layer.features, width),
        padding=layer.padding if padding else 0)
    if i == 0:
      layer = dataclasses.replace(layer, kernel=stem_kernel or layer.kernel,
                                  stride=stem_stride or layer.stride)
    convs.append(layer)
  name = variant
  if width != 1.0:
    name += f"-w{width:g}"
  if stem_kernel or stem_stride:
    name += f"-s{convs[0].kernel}x{convs[0].stride}"
  if not padding:
    name += "-nopad"
  return Architecture(
      name=name, convs=tuple(convs),
      fc_features=tuple(scale_channels(f, width) for f in paper.fc_features),
      fc_kernel=paper.fc_kernel)


def field_of_view(arch: Architecture) -> int:
  """The smallest input side whose class map is 1x1 (= the training input size, SPEC A2).

  Walks the layers backwards from the first FC kernel: a pool of size p needs p * n inputs for n
  outputs; a conv needs (n - 1) * stride + kernel - 2 * padding.
  """
  size = arch.fc_kernel
  for layer in reversed(arch.convs):
    size *= layer.pool_factor
    size = (size - 1) * layer.stride + layer.kernel - 2 * layer.padding
  return size


def fc_names(arch: Architecture) -> tuple[str, ...]:
  """Names of the FC layers in the paper's numbering: fc6..fc8 (fast), fc7..fc9 (accurate)."""
  first = len(arch.convs) + 1
  return tuple(f"fc{first + j}" for j in range(len(arch.fc_features) + 1))


def layer_map_sizes(arch: Architecture, h: int, w: int) -> dict[str, tuple[int, int]]:
  """Every layer's output size for an h x w input (pure Python, for tests and docs).

  Returns:
    Ordered {name: (height, width)}: 'conv1', 'pool1', 'conv2', ..., then the FC layers by their
    paper numbers ('fc6', 'fc7', 'fc8' fast). Fast at 231: conv1 (56, 56), pool1 (28, 28), ...
  Raises:
    InputSizeError: if a layer would have an empty output (the input is smaller than the field of
      view).
  """
  sizes: dict[str, tuple[int, int]] = {}

  def check(name: str, size: tuple[int, int]) -> tuple[int, int]:
    if min(size) < 1:
      raise InputSizeError(
          f"a {h}x{w} image is smaller than the {arch.name} network's field of view "
          f"{arch.train_size}x{arch.train_size} (layer {name} would be empty)")
    return size

  size = (h, w)
  for i, layer in enumerate(arch.convs, start=1):
    size = tuple((s + 2 * layer.padding - layer.kernel) // layer.stride + 1 for s in size)
    sizes[f"conv{i}"] = check(f"conv{i}", size)
    if layer.pool != NO_POOL:
      size = tuple(s // layer.pool for s in size)
      sizes[f"pool{i}"] = check(f"pool{i}", size)
  for j, name in enumerate(fc_names(arch)):
    kernel = arch.fc_kernel if j == 0 else 1
    size = tuple(s - kernel + 1 for s in size)
    sizes[name] = check(name, size)
  return sizes


@dataclasses.dataclass(frozen=True)
class FeatureLayer:
  """Where the output of feature layer `index` (1-based) lies in the input image (SPEC A6: the feature
  extractor released on its own).

  The output of layer N < last is taken after its ReLU and max-pool (what layer N + 1 consumes); that of
  the last layer before its pool (the pre-pool map, `OverFeat.features`). Cell (i, j) of the map sees
  input rows origin + i * stride ... origin + i * stride + receptive_field - 1 (and likewise columns);
  origin < 0 where zero padding lies before the image. (Bottom rows or right columns that a floor max
  pooling drops are seen by no cell.)

  Attributes:
    index: N in 1..len(arch.convs).
    name: the `layer_map_sizes` key of the map: 'pool{N}' after a pool, else 'conv{N}'.
    stride: input pixels per map cell.
    receptive_field: the side of the input square one cell sees.
    origin: input coordinate of the first row/column of cell (0, 0)'s receptive field.
  """
  index: int
  name: str
  stride: int
  receptive_field: int
  origin: int


def feature_layer(arch: Architecture, index: int) -> FeatureLayer:
  """The geometry of feature layer `index`'s output (see `FeatureLayer`), from the layers alone.

  Fast at full size, layer 5: stride 16, receptive field 151, origin -48.
  Raises:
    ConfigError: `index` is not in 1..len(arch.convs) (names the valid range).
  """
  count = len(arch.convs)
  if not (isinstance(index, (int, np.integer)) and 1 <= index <= count):
    raise ConfigError(f"feature layer {index!r} does not exist: the {arch.name} network's feature "
                      f"extractor has layers 1..{count} (conv1..conv{count})")
  stride, field, origin = 1, 1, 0
  for i, layer in enumerate(arch.convs[:index]):
    field += (layer.kernel - 1) * stride  # a conv widens the field by kernel - 1 of its input cells
    origin -= layer.padding * stride
    stride *= layer.stride
    pooled = layer.pool != NO_POOL and i < count - 1  # the last pool is left to the caller
    if pooled:
      field += (layer.pool - 1) * stride
      stride *= layer.pool
  name = f"pool{index}" if pooled else f"conv{index}"
  return FeatureLayer(index=int(index), name=name, stride=stride, receptive_field=field, origin=origin)


def param_count(params: Any) -> int:
  """Total number of scalars in a parameter pytree (arrays or jax.ShapeDtypeStructs)."""
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def weight_initializer(init: str) -> nn.initializers.Initializer:
  """'paper': N(0, 0.01^2) (SPEC A3); 'he': variance scaling, fan-in, normal (small CPU nets)."""
  return {"paper": nn.initializers.normal(stddev=0.01),
          "he": nn.initializers.variance_scaling(2.0, "fan_in", "normal")}[init]


def standardize_kernel(kernel: jax.Array, gain: jax.Array) -> jax.Array:
  """Scaled weight standardisation: the kernel a standardised layer computes with.

  Each output's fan-in weights are shifted to mean 0 and scaled to variance 2 / fan_in (He's, for a
  ReLU), then multiplied by that output's learned gain, so every layer keeps the statistics of its
  initialisation throughout training whatever its weights drift to (Qiao et al. 2019, "Weight
  Standardization"; the 2 / fan_in scale as in Brock et al. 2021's normaliser-free nets).
  Args:
    kernel: [..., F] float32 (a conv's [k, k, C, F]); fan_in = the product of the leading axes.
    gain: [F] float32.
  Returns:
    [..., F] float32, the same shape.
  """
  fan_in = int(np.prod(kernel.shape[:-1]))
  axes = tuple(range(kernel.ndim - 1))
  mean = jnp.mean(kernel, axis=axes, keepdims=True)
  variance = jnp.var(kernel, axis=axes, keepdims=True)
  # The epsilon keeps an all-equal fan-in (variance 0) finite: it maps to zeros.
  return (kernel - mean) * jax.lax.rsqrt(variance * (fan_in / 2.0) + 1e-10) * gain


def fold_standardization(params: Any) -> Any:
  """A weight-standardised network's parameters -> the plain network's that compute the same function.

  Every layer {'kernel', 'bias', 'gain'} becomes {'kernel': standardize_kernel(kernel, gain), 'bias'}
  (the layout of `nn.Conv` / `FullyConnectedConv` without standardisation); other leaves are kept.
  Any subtree works: a whole OverFeat's parameters or its 'extractor' alone.
  """
  if not isinstance(params, Mapping):
    return params
  if GAIN in params:
    return {"kernel": standardize_kernel(params["kernel"], params[GAIN]), "bias": params["bias"]}
  return {name: fold_standardization(value) for name, value in params.items()}


class StandardizedConv(nn.Module):
  """A conv + bias whose kernel is weight-standardised (`standardize_kernel`) at every call.

  Parameters: 'kernel' [k, k, C, F] (He-initialised), 'bias' [F] (zeros), 'gain' [F] (ones).
  """
  features: int
  kernel_size: int
  stride: int
  padding: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] -> [B, H', W', F] (zero padding `padding`, stride `stride`)."""
    k, pad = self.kernel_size, self.padding
    kernel = self.param("kernel", weight_initializer("he"), (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    gain = self.param(GAIN, nn.initializers.ones, (self.features,), jnp.float32)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), standardize_kernel(kernel, gain).astype(self.dtype),
        (self.stride, self.stride), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


class ConvReluPool(nn.Module):
  """conv (stride 1, zero `padding`) + bias + ReLU + a `pool` x `pool` max pool, computed as one
  space-to-depth convolution (`ops.conv_pool`; `folds_pool` says where that pays).

  Parameters, their initialisation and their names are those of the `nn.Conv` (or, `standardize`,
  the `StandardizedConv`) the layer would otherwise be, so checkpoints do not change.
  """
  features: int
  kernel_size: int
  padding: int
  pool: int
  weight_init: str = "paper"
  standardize: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] -> [B, (H + 2 pad - k + 1) // pool, ..., F]."""
    k, pad = self.kernel_size, self.padding
    shape = (k, k, x.shape[-1], self.features)
    init = weight_initializer("he" if self.standardize else self.weight_init)
    kernel = self.param("kernel", init, shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    if self.standardize:
      kernel = standardize_kernel(kernel, self.param(GAIN, nn.initializers.ones, (self.features,),
                                                     jnp.float32))
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return conv_relu_max_pool(x, kernel.astype(self.dtype), bias.astype(self.dtype), self.pool)


class FeatureExtractor(nn.Module):
  """Layers 1-5 (fast) / 1-6 (accurate) up to the last conv + ReLU, before the last max-pool.

  `standardize`: every conv is a `StandardizedConv` (config model.weight_standardization).
  """
  arch: Architecture
  weight_init: str = "paper"
  dtype: Any = jnp.float32
  standardize: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, layer: int | None = None) -> jax.Array:
    """images: [B, H, W, C_in] -> pre-pool map [B, h, w, C] in `dtype`.

    With `layer` = N (1-based), stops after layer N: its ReLU output, max-pooled if N is not the last
    layer and has a pool (`feature_layer(arch, N)`); None = the last layer, the pre-pool map.
    """
    x = images.astype(self.dtype)
    last = len(self.arch.convs) - 1
    count = last + 1 if layer is None else feature_layer(self.arch, layer).index
    for i, conv in enumerate(self.arch.convs[:count]):
      pad = conv.padding
      # The last pool is left to the caller: plain (coarse) or at every offset (SPEC A4).
      pooled = conv.pool != NO_POOL and i < last
      if pooled and folds_pool(x.shape[-1], conv.stride, conv.pool):
        x = ConvReluPool(conv.features, conv.kernel, pad, conv.pool, self.weight_init,
                         self.standardize, dtype=self.dtype, name=f"conv{i + 1}")(x)
        continue
      if self.standardize:
        x = StandardizedConv(conv.features, conv.kernel, conv.stride, pad, dtype=self.dtype,
                             name=f"conv{i + 1}")(x)
      else:
        x = nn.Conv(conv.features, (conv.kernel, conv.kernel),
                    strides=(conv.stride, conv.stride),
                    padding=((pad, pad), (pad, pad)), kernel_init=weight_initializer(self.weight_init),
                    bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32,
                    name=f"conv{i + 1}")(x)
      x = nn.relu(x)
      if pooled:
        x = pooling.max_pool(x, conv.pool)
    return x


class FullyConnectedConv(nn.Module):
  """A fully connected layer applied as a k x k VALID convolution (SPEC A2: "FC layers are convolutions").

  Parameters are those of `nn.Conv` (kernel [k, k, C, F], bias [F]), so checkpoints and parameter
  counts are the conv's. The arithmetic is an explicit im2col + one matmul: XLA:CPU runs a large
  k x k x 1024 -> 4096 convolution at a third of its matmul speed, and this layer is most of the
  dense evaluation's FLOPs (benchmarks/dense_eval.py measures both ways).
  """
  features: int
  kernel_size: int
  kernel_init: nn.initializers.Initializer
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, h, w, C] -> [B, h - k + 1, w - k + 1, F]."""
    k = self.kernel_size
    b, h, w, c = x.shape
    kernel = self.param("kernel", self.kernel_init, (k, k, c, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    out_h, out_w = h - k + 1, w - k + 1
    if k == 1:
      patches = x
    else:  # [B, h', w', k, k, C]: patch element (dy, dx, c) in the kernel's row-major order.
      patches = jnp.stack([jnp.stack([x[:, dy:dy + out_h, dx:dx + out_w, :] for dx in range(k)],
                                     axis=3) for dy in range(k)], axis=3)
    patches = patches.reshape(b, out_h, out_w, k * k * c).astype(self.dtype)
    y = patches @ kernel.reshape(k * k * c, self.features).astype(self.dtype)
    return y + bias.astype(self.dtype)


class Classifier(nn.Module):
  """The FC layers as convolutions (SPEC A2): fc_kernel x fc_kernel, then 1x1; dropout on hidden."""
  arch: Architecture
  num_classes: int
  dropout_rate: float = 0.5
  weight_init: str = "paper"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array, *, train: bool) -> jax.Array:
    """pooled: [B, h, w, C] -> logits map float32 [B, h - fc_kernel + 1, w - fc_kernel + 1, K]."""
    x = pooled.astype(self.dtype)
    widths = self.arch.fc_features + (self.num_classes,)
    for j, (name, features) in enumerate(zip(fc_names(self.arch), widths)):
      kernel = self.arch.fc_kernel if j == 0 else 1
      last = j == len(widths) - 1
      # The class layer starts near zero under 'he' as well: a gain-2 init there gives initial
      # logits of several units and a first loss of 10-20 instead of log(K).
      init = weight_initializer("paper" if last else self.weight_init)
      x = FullyConnectedConv(features, kernel, kernel_init=init, dtype=self.dtype, name=name)(x)
      if not last:  # ReLU + dropout on every FC layer but the last.
        x = nn.relu(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return x.astype(jnp.float32)


class OverFeat(nn.Module):
  """An OverFeat classifier (SPEC A2) with the entry points dense evaluation needs (SPEC A4).

  Parameters: {'extractor': {'conv1', ...}, 'classifier': {'fc6', ...}}, float32. Call any method
  through `model.apply(variables, x, method=...)`; initialise with
  `model.init(key, jnp.zeros((1, S, S, 3)), train=False)`, S = arch.train_size.
  """
  arch: Architecture
  num_classes: int
  dropout_rate: float = 0.5
  # 'paper' = N(0, 0.01^2) weights, zero biases (SPEC A3); 'he' = fan-in normal (config model.init).
  # Not called `init`: that name is Module.init.
  weight_init: str = "paper"
  dtype: Any = jnp.float32  # Compute dtype of activations; parameters stay float32.
  # Weight-standardised convolutions (config model.weight_standardization; `StandardizedConv`).
  weight_standardization: bool = False

  def setup(self):
    self.extractor = FeatureExtractor(self.arch, weight_init=self.weight_init, dtype=self.dtype,
                                      standardize=self.weight_standardization)
    self.classifier = Classifier(self.arch, self.num_classes, dropout_rate=self.dropout_rate,
                                 weight_init=self.weight_init, dtype=self.dtype)

  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """Training-size classification: images [B, S, S, 3] -> logits float32 [B, K].

    S is arch.train_size (sizes up to S + coarse_stride - 1 also give a 1x1 class map). Dropout
    needs rngs={'dropout': key} when train.
    """
    _, h, w, _ = images.shape
    final = layer_map_sizes(self.arch, h, w)[fc_names(self.arch)[-1]]
    if final != (1, 1):
      raise InputSizeError(
          f"a {h}x{w} image gives a {final[0]}x{final[1]} class map, not one score vector: "
          f"__call__ takes the training size {self.arch.train_size}x{self.arch.train_size}; use "
          f"method='class_map' (or evaluation.dense) for larger images")
    pooled = pooling.max_pool(self.features(images), self.arch.last_pool)
    return self.classify(pooled, train=train)[:, 0, 0, :]

  def features(self, images: jax.Array, layer: int | None = None) -> jax.Array:
    """The feature extractor: images [B, H, W, 3] -> pre-pool map [B, h, w, C] (before last pool).

    `layer` = N returns feature layer N's output instead ([B, h_N, w_N, C_N], `feature_layer`);
    None (or the last layer's number) is the pre-pool map.
    Raises InputSizeError if H or W is smaller than the field of view (a trace-time check), and
    ConfigError for a layer that does not exist.
    """
    _, h, w, _ = images.shape
    fov = self.arch.train_size
    if h < fov or w < fov:
      raise InputSizeError(
          f"a {h}x{w} image is smaller than the {self.arch.name} network's field of view "
          f"{fov}x{fov}")
    return self.extractor(images, layer)

  def classify(self, pooled: jax.Array, *, train: bool = False) -> jax.Array:
    """The FC-as-conv classifier: pooled [B, h, w, C] -> logits float32 [B, h', w', K].

    h' = h - fc_kernel + 1 (and likewise w').
    """
    _, h, w, _ = pooled.shape
    k = self.arch.fc_kernel
    if h < k or w < k:
      raise InputSizeError(
          f"a {h}x{w} pooled map is smaller than the first FC layer's {k}x{k} kernel")
    return self.classifier(pooled, train=train)

  def class_map(self, images: jax.Array) -> jax.Array:
    """Coarse-stride class map (last pool at offset 0 only): [B, H, W, 3] -> [B, h', w', K]."""
    pooled = pooling.max_pool(self.features(images), self.arch.last_pool)
    return self.classify(pooled, train=False)


def build_model(model_cfg: ml_collections.ConfigDict, num_classes: int) -> OverFeat:
  """The OverFeat module described by `config.model` (see overfeat_jax/config.py).

  Values are checked once, by `overfeat_jax.config.validate_config`.
  """
  arch = build_architecture(model_cfg.variant, width=model_cfg.width,
                            stem_kernel=model_cfg.stem_kernel, stem_stride=model_cfg.stem_stride)
  return OverFeat(arch=arch, num_classes=num_classes, dropout_rate=model_cfg.dropout_rate,
                  weight_init=model_cfg.init, dtype=COMPUTE_DTYPES[model_cfg.compute_dtype],
                  weight_standardization=model_cfg.weight_standardization)
