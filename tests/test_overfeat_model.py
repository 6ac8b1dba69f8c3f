"""The OverFeat models (SPEC A2): paper shapes and parameter counts (via jax.eval_shape, nothing
allocated), derived sizes of scaled variants, FC-as-conv = dense layers, init, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfeat_jax.config import base_config
from overfeat_jax.errors import InputSizeError
from overfeat_jax.models import overfeat
from overfeat_jax.models.overfeat import (ACCURATE, FAST, OverFeat, build_architecture, build_model,
                                          field_of_view, layer_map_sizes, param_count)

# SPEC A2's tables, "spatial size in -> out" per layer.
FAST_SIZES = {"conv1": 56, "pool1": 28, "conv2": 24, "pool2": 12, "conv3": 12, "conv4": 12,
              "conv5": 12, "pool5": 6, "fc6": 1, "fc7": 1, "fc8": 1}
ACCURATE_SIZES = {"conv1": 108, "pool1": 36, "conv2": 30, "pool2": 15, "conv3": 15, "conv4": 15,
                  "conv5": 15, "conv6": 15, "pool6": 5, "fc7": 1, "fc8": 1, "fc9": 1}

from model_helpers import abstract_variables, random_variables, tiny


@pytest.mark.parametrize("arch,expected", [(FAST, 145_920_872), (ACCURATE, 144_656_488)])
def test_paper_parameter_counts(arch, expected):
  """SPEC A2: weights + biases with 1000 classes (the paper says 145M and 144M)."""
  assert param_count(abstract_variables(OverFeat(arch, num_classes=1000))) == expected


@pytest.mark.parametrize("arch,sizes,train",
                         [(FAST, FAST_SIZES, 231), (ACCURATE, ACCURATE_SIZES, 221)])
def test_paper_map_sizes_pure_python(arch, sizes, train):
  assert arch.train_size == field_of_view(arch) == train
  got = layer_map_sizes(arch, train, train)
  assert got == {name: (s, s) for name, s in sizes.items()}


@pytest.mark.parametrize("arch,sizes", [(FAST, FAST_SIZES), (ACCURATE, ACCURATE_SIZES)])
def test_paper_map_sizes_of_the_real_module(arch, sizes):
  """Every conv / FC output of the real module at the training input, from captured intermediates
  under jax.eval_shape; the pools show in the next layer's size and in the features / class map."""
  model = OverFeat(arch, num_classes=1000)
  variables = abstract_variables(model)
  s = arch.train_size
  x = jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32)
  logits, state = jax.eval_shape(
      lambda v, a: model.apply(v, a, train=False, capture_intermediates=True), variables, x)
  assert logits.shape == (2, 1000)
  inter = state["intermediates"]
  for name, size in sizes.items():
    if name.startswith("conv"):
      assert inter["extractor"][name]["__call__"][0].shape[1:3] == (size, size), name
    elif name.startswith("fc"):
      assert inter["classifier"][name]["__call__"][0].shape[1:3] == (size, size), name
  last_pool = [n for n in sizes if n.startswith("pool")][-1]
  prepool = jax.eval_shape(lambda v, a: model.apply(v, a, method="features"), variables, x)
  last_conv = sizes[f"conv{len(arch.convs)}"]
  assert prepool.shape == (2, last_conv, last_conv, 1024)
  cmap = jax.eval_shape(lambda v, a: model.apply(v, a, method="class_map"), variables, x)
  assert cmap.shape == (2, 1, 1, 1000)
  assert arch.fc_kernel == sizes[last_pool]  # the first FC kernel covers the last pooled map


def test_paper_strides():
  assert (FAST.prepool_stride, FAST.last_pool, FAST.coarse_stride) == (16, 2, 32)
  # SPEC A4: offset pooling gives an output stride of 12 instead of 36 for the accurate model.
  assert (ACCURATE.prepool_stride, ACCURATE.last_pool, ACCURATE.coarse_stride) == (12, 3, 36)
  assert ACCURATE.fine_min_size == 245  # the paper's smallest test scale


def test_stem_is_an_input_size_multiplier():
  """Fast with a 3x3 stride-1 stem: 58 -> 56 -> 28 -> ..., the paper's maps from layer 2 on;
  the training size is derived, the first FC kernel stays 6."""
  arch = build_architecture("fast", stem_kernel=3, stem_stride=1)
  assert arch.train_size == 58 and arch.fc_kernel == 6
  assert layer_map_sizes(arch, 58, 58) == {n: (s, s) for n, s in FAST_SIZES.items()}
  acc = build_architecture("accurate", stem_kernel=3, stem_stride=1)
  assert acc.train_size == 110 and acc.fc_kernel == 5  # 108 + 2
  assert acc.prepool_stride == 6
  # Only layer 1 changes.
  assert arch.convs[1:] == FAST.convs[1:]
  assert (arch.convs[0].kernel, arch.convs[0].stride, arch.convs[0].features) == (3, 1, 96)


@pytest.mark.parametrize("variant", ["fast", "accurate"])
@pytest.mark.parametrize("kwargs", [dict(width=0.25, stem_kernel=5, stem_stride=2),
                                    dict(width=1 / 32, stem_kernel=3, stem_stride=1, padding=False),
                                    dict(stem_kernel=9, stem_stride=3)])
def test_derived_field_of_view_is_the_smallest_input_with_a_1x1_class_map(variant, kwargs):
  arch = build_architecture(variant, **kwargs)
  s = arch.train_size
  final = overfeat.fc_names(arch)[-1]
  assert layer_map_sizes(arch, s, s)[final] == (1, 1)
  assert layer_map_sizes(arch, s + arch.coarse_stride - 1, s)[final] == (1, 1)
  assert layer_map_sizes(arch, s + arch.coarse_stride, s)[final] == (2, 1)
  with pytest.raises(InputSizeError, match=f"field of view {s}x{s}"):
    layer_map_sizes(arch, s - 1, s)
  model = OverFeat(arch, num_classes=7)
  x = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
  logits = jax.eval_shape(lambda v, a: model.apply(v, a, train=False), abstract_variables(model), x)
  assert logits.shape == (1, 7)


def test_no_padding_variant():
  arch = build_architecture("fast", padding=False)
  assert all(layer.padding == 0 for layer in arch.convs)
  # 6 -> 12 (pool) -> 14 -> 16 -> 18 (three unpadded 3x3) -> 36 -> 40 -> 80 -> 79*4 + 11.
  assert arch.train_size == 327


def test_width_scales_every_layer_but_the_last():
  arch = build_architecture("fast", width=0.125)
  assert [c.features for c in arch.convs] == [12, 32, 64, 128, 128]
  assert arch.fc_features == (384, 512)
  assert arch.train_size == 231
  assert [c.features for c in build_architecture("accurate", width=0.001).convs] == [1] * 6
  model = OverFeat(arch, num_classes=10)
  params = abstract_variables(model)["params"]
  assert params["classifier"]["fc8"]["kernel"].shape == (1, 1, 512, 10)
  assert params["classifier"]["fc6"]["kernel"].shape == (6, 6, 128, 384)


@pytest.mark.parametrize("variant", ["fast", "accurate"])
def test_fc_as_conv_equals_dense_layers(variant):
  """SPEC A2 (b): at the training size, the conv classifier equals flatten + dense layers with the
  same (reshaped) weights."""
  model = tiny(variant)
  variables = random_variables(model)
  s = model.arch.train_size
  images = jnp.asarray(np.random.default_rng(2).normal(size=(3, s, s, 3)), jnp.float32)
  logits = model.apply(variables, images, train=False)
  prepool = model.apply(variables, images, method="features")
  pooled = np.asarray(overfeat.pooling.max_pool(prepool, model.arch.last_pool))
  k = model.arch.fc_kernel
  assert pooled.shape[1:3] == (k, k)
  x = pooled.reshape(3, -1)  # flatten (h, w, c) row-major
  fc = variables["params"]["classifier"]
  names = overfeat.fc_names(model.arch)
  for j, name in enumerate(names):
    kernel = np.asarray(fc[name]["kernel"])
    x = x @ kernel.reshape(-1, kernel.shape[-1]) + np.asarray(fc[name]["bias"])
    if j < len(names) - 1:
      x = np.maximum(x, 0.0)
  np.testing.assert_allclose(np.asarray(logits), x, rtol=1e-5, atol=1e-5)


def test_features_is_before_the_last_pool_and_class_map_matches_call():
  model = tiny("fast")
  variables = random_variables(model)
  s = model.arch.train_size  # 58: 56 -> 28 -> 24 -> 12 -> 12 (pre-pool)
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, s, s + 8, 3)), jnp.float32)
  prepool = model.apply(variables, images, method="features")  # width: 66 -> 64 -> 32 -> 28 -> 14
  assert prepool.shape == (2, 12, 14, model.arch.convs[-1].features)
  assert float(prepool.min()) >= 0.0  # after the last ReLU
  # Pooled 6x7 -> a 1x2 class map; at the training size class_map is __call__'s 1x1 map.
  assert model.apply(variables, images, method="class_map").shape == (2, 1, 2, 5)
  square = images[:, :, :s]
  cmap = model.apply(variables, square, method="class_map")
  assert cmap.shape == (2, 1, 1, 5)
  np.testing.assert_allclose(cmap[:, 0, 0], model.apply(variables, square, train=False), atol=1e-6)


def test_input_size_errors():
  model = tiny("fast")
  variables = random_variables(model)
  with pytest.raises(InputSizeError, match="57x80 image is smaller .* field of view 58x58"):
    model.apply(variables, jnp.zeros((1, 57, 80, 3)), method="features")
  with pytest.raises(InputSizeError, match="field of view 58x58"):
    model.apply(variables, jnp.zeros((1, 80, 40, 3)), train=False)
  # Larger than the training size: a 2x2 class map, so __call__ points to class_map.
  with pytest.raises(InputSizeError, match="2x2 class map.*class_map"):
    model.apply(variables, jnp.zeros((1, 66, 66, 3)), train=False)
  with pytest.raises(InputSizeError, match="6x6 kernel"):
    model.apply(variables, jnp.zeros((1, 5, 9, 4)), method="classify")


def test_dropout_only_when_training():
  model = tiny("fast")
  variables = random_variables(model)
  s = model.arch.train_size
  images = jnp.asarray(np.random.default_rng(3).normal(size=(4, s, s, 3)), jnp.float32)
  eval1 = model.apply(variables, images, train=False)
  key5, key6 = jax.random.key(5, impl="rbg"), jax.random.key(6, impl="rbg")  # cheap to compile
  eval2 = model.apply(variables, images, train=False, rngs={"dropout": key5})
  np.testing.assert_array_equal(eval1, eval2)
  train1 = model.apply(variables, images, train=True, rngs={"dropout": key5})
  train2 = model.apply(variables, images, train=True, rngs={"dropout": key6})
  assert not np.allclose(train1, eval1) and not np.allclose(train1, train2)
  no_dropout = OverFeat(model.arch, num_classes=5, dropout_rate=0.0, weight_init="he")
  np.testing.assert_allclose(
      no_dropout.apply(variables, images, train=True, rngs={"dropout": key5}), eval1, atol=1e-6)


def test_init_schemes():
  """'paper': N(0, 0.01^2) weights (SPEC A3); 'he': N(0, 2 / fan_in); zero biases; float32.
  (An rbg key: the scheme does not depend on the PRNG, and threefry compiles slowly on CPU.)"""
  arch = build_architecture("fast", width=1 / 32, stem_kernel=3, stem_stride=1)
  s = arch.train_size
  for init, expected_std in [("paper", lambda fan_in: 0.01),
                             ("he", lambda fan_in: np.sqrt(2.0 / fan_in))]:
    model = OverFeat(arch, num_classes=10, weight_init=init)
    key = jax.random.key(0, impl="rbg")
    params = jax.jit(lambda k: model.init(k, jnp.zeros((1, s, s, 3)), train=False))(key)["params"]
    kernel = np.asarray(params["classifier"]["fc6"]["kernel"])  # 6*6*32*96 weights
    fan_in = np.prod(kernel.shape[:3])
    assert abs(kernel.mean()) < 0.02 * expected_std(fan_in)
    assert kernel.std() == pytest.approx(expected_std(fan_in), rel=0.02)
    conv1 = np.asarray(params["extractor"]["conv1"]["kernel"])  # 3*3*3*3: only a loose check
    assert conv1.std() == pytest.approx(expected_std(27), rel=0.5)
    for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      assert leaf.dtype == np.float32
      if leaf_path[-1].key == "bias":
        assert not np.any(np.asarray(leaf)), leaf_path


def test_bfloat16_compute_keeps_float32_params_and_logits():
  cfg = base_config().model
  cfg.width = 1 / 32
  cfg.compute_dtype = "bfloat16"
  model = build_model(cfg, num_classes=10)
  s = model.arch.train_size
  variables = random_variables(model)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype("float32")}
  prepool = model.apply(variables, jnp.ones((1, s, s, 3)), method="features")
  assert prepool.dtype == jnp.bfloat16
  assert model.apply(variables, jnp.ones((1, s, s, 3)), train=False).dtype == jnp.float32


def test_build_model_from_base_config():
  cfg = base_config()
  model = build_model(cfg.model, num_classes=cfg.dataset.num_classes)
  # Base config: fast, width 1/8, stem 3/1 -> a 58-px training input.
  assert model.arch.train_size == cfg.input.crop_size == 58
  assert model.weight_init == "he" and model.dropout_rate == 0.5 and model.num_classes == 10
  assert model.arch.convs[0].features == 12


@pytest.mark.parametrize("kernel, size", [(1, (3, 4)), (3, (5, 7)), (5, (5, 5))])
def test_fully_connected_conv_is_a_valid_convolution(kernel, size):
  """The im2col arithmetic of the FC layers equals XLA's VALID convolution with the same kernel."""
  from overfeat_jax.models.overfeat import FullyConnectedConv

  layer = FullyConnectedConv(6, kernel, kernel_init=jax.nn.initializers.normal(1.0))  # shapes only
  rng = np.random.default_rng(kernel)  # numpy: eager jax.random compiles a program per shape
  x = jnp.asarray(rng.standard_normal((2, *size, 4)), jnp.float32)
  kernel_shape = jax.eval_shape(layer.init, jax.random.key(2), x)["params"]["kernel"].shape
  params = {"kernel": jnp.asarray(rng.standard_normal(kernel_shape), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(6), jnp.float32)}
  got = layer.apply({"params": params}, x)
  want = jax.lax.conv_general_dilated(x, params["kernel"], (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["bias"]
  assert got.shape == (2, size[0] - kernel + 1, size[1] - kernel + 1, 6)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
