"""Heads that run on OverFeat's pooled feature map beside the classifier: the box regressor (SPEC A5).

The regression network takes the same pooled map as the classifier (the frozen feature extractor's
output after the last max-pool, at one pooling offset) and, like the classifier, is made of "fully
connected" layers applied as convolutions, so that on a large image it gives one prediction per
window of the dense grid (`models.dense_grid`):

  pooled [B, h, w, C] --fc_kernel x fc_kernel, 4096--> ReLU --1x1, 1024--> ReLU --1x1, 4 or 4K-->
  [B, h - fc_kernel + 1, w - fc_kernel + 1, 4 or 4K]

The outputs are box edges relative to the window of their position, in window sizes
(`ops.edges.encode_edges`). A single-class regressor (SCR) has 4 outputs shared by all classes; a
per-class regressor (PCR) has 4 per class, class k's in outputs [4k, 4k + 4) (`class_edges` picks
them). Widths scale with config.model.width like the classifier's (4096 and 1024 at width 1).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from overfeat_jax.models.overfeat import (COMPUTE_DTYPES, Architecture, FullyConnectedConv,
                                          scale_channels, weight_initializer)

REGRESSOR_FEATURES = (4096, 1024)  # SPEC A5: the two hidden layers at the paper's size.
BOX_EDGES = 4  # (x1, y1, x2, y2)
SINGLE_CLASS, PER_CLASS = "scr", "pcr"  # config.localization.regressor


class BoxRegressor(nn.Module):
  """The regression network of SPEC A5 on a pooled feature map.

  Attributes:
    arch: the OverFeat architecture whose pooled map it reads (its first layer's kernel is
      arch.fc_kernel, as the classifier's).
    features: the hidden layers' widths (REGRESSOR_FEATURES scaled by the model's width).
    num_outputs: BOX_EDGES (SCR) or BOX_EDGES * K (PCR).
    weight_init: 'paper' = N(0, 0.01^2) or 'he' for the hidden layers; the output layer always
      starts near zero (N(0, 0.01^2)), so the first predictions are about the windows themselves.
    dtype: compute dtype (parameters float32).
  Parameters: {'hidden1', 'hidden2', 'edges'}, each {'kernel', 'bias'} (FullyConnectedConv's).
  """
  arch: Architecture
  features: tuple[int, ...] = REGRESSOR_FEATURES
  num_outputs: int = BOX_EDGES
  weight_init: str = "paper"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    """pooled: [B, h, w, C] -> float32 [B, h - fc_kernel + 1, w - fc_kernel + 1, num_outputs]."""
    x = pooled.astype(self.dtype)
    for j, features in enumerate(self.features):
      kernel = self.arch.fc_kernel if j == 0 else 1
      x = FullyConnectedConv(features, kernel, kernel_init=weight_initializer(self.weight_init),
                             dtype=self.dtype, name=f"hidden{j + 1}")(x)
      x = nn.relu(x)
    kernel = self.arch.fc_kernel if not self.features else 1
    x = FullyConnectedConv(self.num_outputs, kernel, kernel_init=weight_initializer("paper"),
                           dtype=self.dtype, name="edges")(x)
    return x.astype(jnp.float32)


def build_regressor(model_cfg: ml_collections.ConfigDict, arch: Architecture, num_classes: int,
                    kind: str) -> BoxRegressor:
  """The regressor for config.model's width on `arch`'s pooled map.

  Args:
    model_cfg: config.model (width, init, compute_dtype).
    arch: the feature extractor's architecture.
    num_classes: K, the classes a PCR has outputs for (a detector's K + 1 with background).
    kind: SINGLE_CLASS ("scr": 4 outputs) or PER_CLASS ("pcr": 4K outputs).
  """
  if kind not in (SINGLE_CLASS, PER_CLASS):
    raise ValueError(f"unknown regressor kind {kind!r}; expected {SINGLE_CLASS!r} or {PER_CLASS!r}")
  return BoxRegressor(
      arch=arch, features=tuple(scale_channels(f, model_cfg.width) for f in REGRESSOR_FEATURES),
      num_outputs=BOX_EDGES * (num_classes if kind == PER_CLASS else 1),
      weight_init=model_cfg.init, dtype=COMPUTE_DTYPES[model_cfg.compute_dtype])


def class_edges(outputs: jax.Array, classes: jax.Array | None = None) -> jax.Array:
  """The 4 box edges of a regressor's outputs, for given classes where it is per class.

  Args:
    outputs: [..., 4] (SCR) or [..., 4K] (PCR) regressor outputs.
    classes: None, or int [...] (the leading shape of `outputs`) one class per prediction.
  Returns:
    classes None: [..., 1, 4] (SCR: one box for every class) or [..., K, 4] (PCR: one per class);
    classes given: [..., 4], that class's edges (SCR: the shared ones).
  """
  edges = outputs.reshape(outputs.shape[:-1] + (-1, BOX_EDGES))  # [..., 1 or K, 4]
  if classes is None:
    return edges
  if edges.shape[-2] == 1:
    return edges[..., 0, :]
  index = jnp.asarray(classes)[..., None, None]  # [..., 1, 1]
  return jnp.take_along_axis(edges, jnp.broadcast_to(index, edges.shape[:-2] + (1, BOX_EDGES)),
                             axis=-2)[..., 0, :]
