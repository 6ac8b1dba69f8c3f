"""Backbones (SPEC B1): paper parameter counts, map sizes, strides, receptive fields, width, frozen
layers, and the OverFeat backbone against the spine's feature extractor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model_helpers import random_variables, tiny
from overfeat_jax.errors import InputSizeError
from overfeat_jax.models import backbones
from overfeat_jax.models.overfeat import OverFeat, build_architecture, param_count


def abstract_params(backbone: backbones.Backbone, size: tuple[int, int] = (64, 64)):
  """Parameter shapes from jax.eval_shape: nothing is allocated, even at paper size."""
  x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
  return jax.eval_shape(lambda k, a: backbone.module().init(k, a), jax.random.key(0), x)["params"]


def random_params(backbone: backbones.Backbone, seed: int = 0, in_channels: int = 3):
  """Parameters filled from numpy (model.init's threefry costs seconds per shape on CPU): kernels
  N(0, 2 / fan_in), biases N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)
  x = jax.ShapeDtypeStruct((1, 64, 64, in_channels), jnp.float32)
  template = jax.eval_shape(backbone.module().init, jax.random.key(0), x)["params"]

  def fill(path, leaf):
    if path[-1].key == "bias":
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1])),
                       jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, template)


def output_shape(backbone: backbones.Backbone, size: tuple[int, int]) -> tuple[int, ...]:
  params = abstract_params(backbone)
  x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
  return jax.eval_shape(lambda p, a: backbone.module().apply({"params": p}, a), params, x).shape


def conv_params(layers: list[tuple[int, int, int]]) -> int:
  """Weights + biases of convs given as (kernel, in, out): an independent count from a layer list."""
  return sum(k * k * c_in * c_out + c_out for k, c_in, c_out in layers)


# torchvision's VGG-16 configuration "D" (models/vgg.py cfgs["D"]): 'M' = max pool.
VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_layers(width: float = 1.0) -> list[tuple[int, int, int]]:
  channels = [max(1, int(np.floor(c * width + 0.5))) for c in VGG16_D if c != "M"]
  return [(3, c_in, c_out) for c_in, c_out in zip([3] + channels[:-1], channels)]


def test_paper_parameter_counts():
  # VGG-16's conv part: 14,714,688 (torchvision's vgg16().features; also the sum over "D").
  assert conv_params(vgg16_layers()) == 14_714_688
  assert param_count(abstract_params(backbones.build_backbone("vgg16"))) == 14_714_688
  # ZF as py-faster-rcnn: 7x7x3x96, 5x5x96x256, 3x3x256x384, 3x3x384x384, 3x3x384x256 (+ biases).
  zf = conv_params([(7, 3, 96), (5, 96, 256), (3, 256, 384), (3, 384, 384), (3, 384, 256)])
  assert zf == 3_726_464
  assert param_count(abstract_params(backbones.build_backbone("zf"))) == zf
  # OverFeat: SPEC A2's totals less the FC layers (fast fc6 6x6x1024x3072, fc7 3072x4096, fc8
  # 4096x1000; accurate fc7 5x5x1024x4096, fc8 4096x4096, fc9 4096x1000), and the spine's own
  # extractor parameters.
  fast_fc = 6 * 6 * 1024 * 3072 + 3072 + 3072 * 4096 + 4096 + 4096 * 1000 + 1000
  accurate_fc = 5 * 5 * 1024 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
  for variant, total, fc in (("fast", 145_920_872, fast_fc), ("accurate", 144_656_488, accurate_fc)):
    count = param_count(abstract_params(backbones.build_backbone(f"overfeat_{variant}")))
    assert count == total - fc
    model = OverFeat(build_architecture(variant), num_classes=1000)
    size = model.arch.train_size
    spine = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, size, size, 3)), train=False),
                           jax.random.key(0))["params"]["extractor"]
    assert count == param_count(spine)


@pytest.mark.parametrize("name, stride, channels, size", [
    # VGG-16: 4 floor 2x2 pools: 600 -> 300 -> 150 -> 75 -> 37, 1000 -> ... -> 125 -> 62.
    ("vgg16", 16, 512, (37, 62)),
    # ZF: conv1 /2 (pad 3), pool 3/2 pad 1, conv2 /2 (pad 2), pool: each ceil(n / 2):
    # 600 -> 300 -> 150 -> 75 -> 38, 1000 -> 500 -> 250 -> 125 -> 63.
    ("zf", 16, 256, (38, 63)),
    # Fast: conv1 11/4 (600 - 11) // 4 + 1 = 148, pool 74, conv2 5x5 70, pool 35 (pre-pool map);
    # 1000: 248, 124, 120, 60.
    ("overfeat_fast", 16, 1024, (35, 60)),
    # Accurate: conv1 7/2 297, pool 3 99, conv2 7x7 93, pool 2 46; 1000: 497, 165, 159, 79.
    ("overfeat_accurate", 12, 1024, (46, 79)),
])
def test_paper_map_sizes_at_600x1000(name, stride, channels, size):
  backbone = backbones.build_backbone(name)
  assert (backbone.stride, backbone.channels) == (stride, channels)
  assert backbone.map_size(600, 1000) == size
  assert output_shape(backbone, (600, 1000)) == (1, *size, channels)


def test_overfeat_backbone_strides_are_the_spines():
  for variant in ("fast", "accurate"):
    arch = build_architecture(variant)
    assert backbones.build_backbone(f"overfeat_{variant}").stride == arch.prepool_stride


def test_width_multiplier():
  vgg = backbones.build_backbone("vgg16", 0.25)
  assert vgg.name == "vgg16-w0.25"
  assert [s.conv.features for s in vgg.stages] == [c_out for _, _, c_out in vgg16_layers(0.25)]
  assert param_count(abstract_params(vgg)) == conv_params(vgg16_layers(0.25))
  zf = backbones.build_backbone("zf", 0.1)
  # round-half-up of 9.6, 25.6, 38.4, 38.4, 25.6
  assert [s.conv.features for s in zf.stages] == [10, 26, 38, 38, 26]
  assert (zf.channels, zf.stride) == (26, 16)
  assert param_count(abstract_params(zf)) == conv_params(
      [(7, 3, 10), (5, 10, 26), (3, 26, 38), (3, 38, 38), (3, 38, 26)])
  small = backbones.build_backbone("overfeat_fast", 0.125, stem_kernel=3, stem_stride=1)
  assert small.name == "overfeat_fast-w0.125-s3x1"
  assert small.stride == 4 and small.channels == 128


@pytest.mark.parametrize("name, width", [("vgg16", 1 / 8), ("zf", 1 / 8), ("overfeat_fast", 1 / 16)])
def test_small_real_inputs(name, width):
  backbone = backbones.build_backbone(name, width)
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, 96, 80, 3)), jnp.float32)
  y = backbone.module().apply({"params": random_params(backbone)}, x)
  assert y.shape == (2, *backbone.map_size(96, 80), backbone.channels)
  assert y.dtype == jnp.float32 and bool(jnp.all(y >= 0)) and float(y.max()) > 0  # after a ReLU
  assert not np.allclose(y[0], y[1])  # each image its own map


@pytest.mark.parametrize("name", backbones.BACKBONE_NAMES)
def test_receptive_field_centres_and_stride(name):
  # Independent of the formulas: with kernels 1 / C_in and zero biases every activation is >= 0, and
  # a cell is non-zero exactly when its receptive field contains a lit pixel. Light one column per
  # image; the columns that reach cell (0, j) are its receptive field, whose middle must be
  # receptive_field_center + j * stride where the padding does not cut it.
  backbone = backbones.build_backbone(name, 1 / 16)
  height, width = 55, 288
  images = np.zeros((width, height, width, 1), np.float32)  # one input channel: geometry only
  images[np.arange(width), :, np.arange(width), :] = 1.0
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.zeros(leaf.shape) if path[-1].key == "bias"
      else jnp.full(leaf.shape, 1.0 / leaf.shape[2]), random_params(backbone, in_channels=1))
  out = backbone.module().apply({"params": params}, jnp.asarray(images))  # [x, h, w, C]
  reached = np.asarray(out[:, 0, :, 0] > 0)  # [x, j]: lit column x reaches cell (0, j)
  fields = []
  for j in range(reached.shape[1]):
    columns = np.flatnonzero(reached[:, j])
    np.testing.assert_array_equal(columns, np.arange(columns[0], columns[-1] + 1))  # one interval
    fields.append((columns[0], columns[-1] + 1))  # continuous pixels: column x covers [x, x + 1)
  # Cells near either end have fields cut by the zero padding; the others have the full size.
  full = max(end - start for start, end in fields)
  centres = {j: (start + end) / 2 for j, (start, end) in enumerate(fields) if end - start == full}
  assert len(centres) >= 3 and fields[0][0] == 0, fields
  for j, centre in centres.items():
    assert centre == backbone.receptive_field_center + j * backbone.stride, (j, centre)


def test_overfeat_backbone_is_the_spines_feature_extractor():
  model = tiny("fast")
  variables = random_variables(model, seed=3)
  backbone = backbones.overfeat_backbone(model.arch)
  assert backbone == backbones.build_backbone("overfeat_fast", 1 / 32, stem_kernel=3, stem_stride=1)
  extractor = variables["params"]["extractor"]
  x = jnp.asarray(np.random.default_rng(2).normal(0, 1, (2, 70, 83, 3)), jnp.float32)
  assert jax.tree.structure(abstract_params(backbone, (70, 83))) == jax.tree.structure(extractor)
  expected = model.apply(variables, x, method=OverFeat.features)
  got = backbone.module().apply({"params": extractor}, x)
  assert got.shape == expected.shape == (2, *backbone.map_size(70, 83), backbone.channels)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_frozen_layers_stay_fixed_under_optax():
  vgg = backbones.build_backbone("vgg16", 1 / 16)
  assert vgg.frozen_layers == ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
  params = random_params(vgg)
  mask = backbones.frozen_mask(vgg, params)
  frozen = sorted(name for name, leaves in mask.items() if all(leaves.values()))
  assert frozen == sorted(vgg.frozen_layers)
  assert sum(jax.tree.leaves(mask)) == 8 and len(jax.tree.leaves(mask)) == 26
  tx = optax.chain(optax.add_decayed_weights(1e-2), optax.masked(optax.set_to_zero(), mask),
                   optax.sgd(0.1))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  for name in vgg.layer_names:
    changed = not np.array_equal(new[name]["kernel"], params[name]["kernel"])
    assert changed == (name not in vgg.frozen_layers), name
  for name in ("zf", "overfeat_fast"):
    assert backbones.build_backbone(name).frozen_layers == ()
  with pytest.raises(ValueError, match=r"frozen layers \['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2'\]"):
    backbones.frozen_mask(vgg, {"conv1": {}})


def test_too_small_inputs_and_unknown_names():
  with pytest.raises(InputSizeError, match="a 8x64 image is too small for the vgg16 backbone "
                                           r"\(conv4_3's pool would be empty\)"):
    backbones.build_backbone("vgg16").map_size(8, 64)
  small = backbones.build_backbone("overfeat_fast", 1 / 16)
  with pytest.raises(InputSizeError, match=r"\(conv2 would be empty\)"):
    small.module().init(jax.random.key(0), jnp.zeros((1, 40, 40, 3)))
  with pytest.raises(ValueError, match="unknown backbone 'resnet50'; known: vgg16, zf, overfeat_fast"):
    backbones.build_backbone("resnet50")
  with pytest.raises(ValueError, match="OverFeat backbones only"):
    backbones.build_backbone("vgg16", stem_kernel=3)


def test_tiny_backbone():
  # Four 3x3 convs 3-32-64-128-128, 2x2 pools after the first three: stride 8; cell (i, j) centred
  # on pixel (8 i + 4, 8 j + 4) (the receptive-field test above checks the centre by lit columns).
  tiny = backbones.build_backbone("tiny")
  assert param_count(abstract_params(tiny)) == conv_params(
      [(3, 3, 32), (3, 32, 64), (3, 64, 128), (3, 128, 128)]) == 240_832
  assert (tiny.stride, tiny.channels, tiny.receptive_field_center) == (8, 128, 4.0)
  assert tiny.map_size(160, 192) == (20, 24) and tiny.frozen_layers == ()
  assert backbones.build_backbone("tiny", 0.25).name == "tiny-w0.25"
