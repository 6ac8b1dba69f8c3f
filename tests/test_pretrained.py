"""Backbone weight import: a torchvision VGG-16 state_dict in safetensors (against torchvision's own
conv5_3 output) and a classifier checkpoint of ours; files and checkpoints that do not fit.

tests/fixtures/torchvision_vgg16.npz was written by tests/fixtures/make_vgg16_fixture.py (torch
2.14.1, torchvision 0.29.1, CPU) from the weights tests/random_vgg16.py makes; these tests need
neither torch nor the 58 MB weight file, which they write again from the seed.
"""

from __future__ import annotations

import pathlib

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import save_file

import random_vgg16
from model_helpers import random_variables
from overfeat_jax import checkpoint_io
from overfeat_jax.config import base_config
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.models import backbones, pretrained
from overfeat_jax.models.overfeat import OverFeat, param_count
from overfeat_jax.tasks import classification
from overfeat_jax.training import checkpoint
from overfeat_jax.training.state import TrainState

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "torchvision_vgg16.npz"


@pytest.fixture(scope="module")
def tv() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as data:
    return dict(data)


@pytest.fixture(scope="module")
def weights(tv) -> dict[str, np.ndarray]:
  tensors = random_vgg16.state_dict(int(tv["seed"]))
  # The same bytes torchvision ran with (numpy's generator stream could change between versions).
  assert random_vgg16.digest(tensors) == str(tv["weights_sha256"])
  return tensors


def one_line_error(error_type, fn, *args, **kwargs) -> str:
  with pytest.raises(error_type) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message
  return message


def test_conv5_3_equals_torchvisions(tv, weights, tmp_path):
  path = tmp_path / "vgg16.safetensors"
  # As the user's file: the whole model's state_dict, the classifier's tensors included (ignored).
  save_file(dict(weights, **{"classifier.0.weight": np.zeros((8, 4), np.float32)}), str(path))
  params = pretrained.load_torchvision_vgg16(path)
  vgg = backbones.build_backbone("vgg16")
  assert param_count(params) == int(tv["features_param_count"]) == 14_714_688
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  # features.0.weight[o, i, y, x] is our kernel[y, x, i, o].
  np.testing.assert_array_equal(params["conv1_1"]["kernel"][1, 2, 0, 5],
                                weights["features.0.weight"][5, 0, 1, 2])
  np.testing.assert_array_equal(params["conv5_3"]["bias"], weights["features.28.bias"])
  out = vgg.module().apply({"params": params}, jnp.asarray(tv["image"]))
  expected = tv["conv5_3"]  # [1, 4, 4, 512], max about 11
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  assert (expected > 0).mean() > 0.3  # not a map of zeros after the ReLU


def test_half_precision_files_are_read_as_float32(weights, tmp_path):
  path = tmp_path / "vgg16_f16.safetensors"
  save_file({k: v.astype(np.float16) for k, v in weights.items()}, str(path))
  params = pretrained.load_torchvision_vgg16(path)
  assert params["conv2_1"]["kernel"].dtype == np.float32
  np.testing.assert_array_equal(params["conv2_1"]["kernel"],
                                weights["features.5.weight"].astype(np.float16).astype(np.float32)
                                .transpose(2, 3, 1, 0))


def first_layers(weights: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
  """The first `count` convs' tensors (a bad file fails at its first bad layer: no need for all)."""
  indices = list(random_vgg16.CONVS)[:count]
  return {k: v for k, v in weights.items() if int(k.split(".")[1]) in indices}


def test_files_that_do_not_fit(weights, tmp_path):
  path = str(tmp_path / "bad.safetensors")
  # A missing layer: conv3_2 (features.12).
  tensors = first_layers(weights, 6)
  del tensors["features.12.weight"]
  save_file(tensors, path)
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, path)
  assert message.startswith(f"{path} does not hold torchvision's VGG-16 state_dict: "
                            "features.12.weight (conv3_2 kernel) is missing (the file has 11 tensors")
  # A kernel in Flax's layout [kh, kw, in, out] instead of torch's.
  tensors = first_layers(weights, 3)
  tensors["features.5.weight"] = tensors["features.5.weight"].transpose(2, 3, 1, 0).copy()
  save_file(tensors, path)
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, path)
  assert message.endswith("features.5.weight (conv2_1 kernel) has shape [3, 3, 64, 128], expected "
                          "[128, 64, 3, 3] (the right sizes in another order: a kernel saved in "
                          "another layout than torch's [out, in, kh, kw]?)")
  # A bias of another size.
  tensors = first_layers(weights, 2)
  tensors["features.2.bias"] = np.zeros(32, np.float32)
  save_file(tensors, path)
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, path)
  assert message.endswith("features.2.bias (conv1_2 bias) has shape [32], expected [64]")
  # vgg16_bn's layout: a BatchNorm2d after every conv shifts the indices.
  tensors = {"features.0.weight": weights["features.0.weight"], "features.0.bias": weights["features.0.bias"]}
  tensors.update({f"features.1.{k}": np.ones(64, np.float32) for k in ("weight", "bias", "running_mean")})
  save_file(tensors, path)
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, path)
  assert message.endswith("features.2.weight (conv1_2 kernel) is missing, and it has batch-norm "
                          "statistics: vgg16_bn's layout, not vgg16's")
  # Integer tensors.
  save_file({"features.0.weight": np.zeros((64, 3, 3, 3), np.int32)}, path)
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, path)
  assert message.endswith("features.0.weight (conv1_1 kernel) has dtype I32, expected a float "
                          "(F16/BF16/F32/F64)")


def test_unreadable_files_and_other_backbones(tmp_path):
  missing = tmp_path / "none.safetensors"
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, missing)
  assert message == f"cannot read VGG-16 weights from {missing}: No such file or directory"
  not_safetensors = tmp_path / "vgg16.pth"
  not_safetensors.write_bytes(b"PK\x03\x04 a torch zip file" + bytes(64))
  message = one_line_error(CheckpointError, pretrained.load_torchvision_vgg16, not_safetensors)
  assert message.startswith(f"cannot read VGG-16 weights from {not_safetensors}: ")
  for backbone in (backbones.build_backbone("vgg16", 0.5), backbones.build_backbone("zf")):
    message = one_line_error(ConfigError, pretrained.load_torchvision_vgg16, missing, backbone)
    assert message.endswith(f"fit the paper-size vgg16 backbone only, not {backbone.name}")


def save_classifier(workdir: str, params, signature, step: int) -> None:
  """A checkpoint as a training run writes it (TrainCheckpoints: params, optimizer, data position)."""
  state = TrainState.create(params, optax.sgd(0.1))
  with checkpoint.TrainCheckpoints(workdir, keep=2,
                                   signature=checkpoint_io.make_signature(signature, params)) as ckpts:
    ckpts.save(step, state, iter(grain.MapDataset.range(4).to_iter_dataset()))


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
  """(workdir, model, params) of a checkpoint of the default config's classifier (OverFeat fast,
  width 0.125, stem 3x3/1, 10 classes) at step 7."""
  config = base_config()
  model = classification.model_from_config(config)
  variables = random_variables(model, seed=4)
  workdir = str(tmp_path_factory.mktemp("classifier"))
  save_classifier(workdir, variables["params"], classification.model_signature(config), 7)
  return workdir, model, variables


def test_backbone_from_a_classifier_checkpoint(classifier_run):
  workdir, model, variables = classifier_run
  backbone = backbones.build_backbone("overfeat_fast", 0.125, stem_kernel=3, stem_stride=1)
  params, step = pretrained.load_classifier_extractor(workdir, backbone)
  assert step == 7 and pretrained.load_classifier_extractor(workdir, backbone, step=7)[1] == 7
  saved = variables["params"]["extractor"]
  assert jax.tree.structure(params) == jax.tree.structure(saved)
  for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(got, expected)
  x = jnp.asarray(np.random.default_rng(5).uniform(0, 1, (1, 72, 88, 3)), jnp.float32)
  np.testing.assert_allclose(backbone.module().apply({"params": params}, x),
                             model.apply(variables, x, method=OverFeat.features), rtol=1e-6, atol=1e-6)


def test_checkpoints_that_do_not_fit(classifier_run, tmp_path):
  workdir, _, _ = classifier_run
  wider = backbones.build_backbone("overfeat_fast", 0.25, stem_kernel=3, stem_stride=1)
  message = one_line_error(CheckpointError, pretrained.load_classifier_extractor, workdir, wider)
  directory = checkpoint_io.checkpoint_dir(workdir)
  assert message.startswith(
      f"checkpoint in {directory} holds another feature extractor than the "
      "overfeat_fast-w0.25-s3x1 backbone (it was trained with variant fast, width 0.125, "
      "stem_kernel 3, stem_stride 1): conv1/bias: [12] (checkpoint) vs [24] (now); "
      "conv1/kernel: [3, 3, 3, 12] (checkpoint) vs [3, 3, 3, 24] (now);")
  message = one_line_error(CheckpointError, pretrained.load_classifier_extractor, workdir,
                           backbones.build_backbone("vgg16"))
  assert "than the vgg16 backbone" in message
  assert "conv1/kernel: [3, 3, 3, 12] (checkpoint) vs <absent> (now)" in message
  # A run of another task (no 'extractor'), and no run at all.
  other = str(tmp_path / "other")
  save_classifier(other, {"Dense_0": {"kernel": np.ones((4, 2), np.float32)}}, {"model": {}}, 1)
  message = one_line_error(CheckpointError, pretrained.load_classifier_extractor, other, wider)
  assert message == (f"checkpoint in {checkpoint_io.checkpoint_dir(other)} holds no OverFeat feature "
                     "extractor (its parameters: Dense_0); the overfeat_fast-w0.25-s3x1 backbone starts "
                     "from a classification run's checkpoint")
  empty = str(tmp_path / "empty")
  message = one_line_error(CheckpointError, pretrained.load_classifier_extractor, empty, wider)
  assert message.startswith(f"no checkpoint in {checkpoint_io.checkpoint_dir(empty)}")
