"""Weight-standardised convolutions (config model.weight_standardization): the kernel transform, the
plain network it folds into, and the runs that start from such a classifier (a localizer or
detector restores it through `classification.restore_named_run`, Faster R-CNN through
`pretrained.load_classifier_extractor`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from localization_helpers import save_classifier, tiny_localization_config
from model_helpers import random_variables, tiny
from overfeat_jax.config import base_config, validate_config
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.models import backbones, pretrained
from overfeat_jax.models.overfeat import GAIN, OverFeat, fold_standardization, standardize_kernel
from overfeat_jax.tasks import classification, localization


def test_standardize_kernel_by_hand():
  # Two outputs of fan-in 2: [1, 3] has mean 2 and variance 1, and is scaled to variance
  # 2 / fan_in = 1: [-1, 1], times its gain 3; an all-equal fan-in [10, 10] maps to zeros.
  kernel = jnp.array([[1.0, 10.0], [3.0, 10.0]])
  got = standardize_kernel(kernel, jnp.array([3.0, 5.0]))
  np.testing.assert_allclose(got, [[-3.0, 0.0], [3.0, 0.0]], atol=1e-5)


def test_standardized_kernel_statistics():
  rng = np.random.default_rng(0)
  kernel = jnp.asarray(5.0 + 0.3 * rng.standard_normal((3, 3, 8, 6)), jnp.float32)
  gain = jnp.asarray(rng.uniform(0.5, 2.0, 6), jnp.float32)
  got = np.asarray(standardize_kernel(kernel, gain)).reshape(72, 6)
  np.testing.assert_allclose(got.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(got.var(0), 2.0 / 72 * np.asarray(gain) ** 2, rtol=1e-4)


def standardized(model: OverFeat) -> OverFeat:
  return dataclasses.replace(model, weight_standardization=True)


def test_folded_parameters_compute_the_same_network():
  plain = tiny("fast")
  model = standardized(plain)
  variables = random_variables(model, seed=1)  # gains random too, so the fold has work to do
  extractor = variables["params"]["extractor"]
  assert set(extractor["conv1"]) == {"kernel", "bias", GAIN}
  assert "gain" not in variables["params"]["classifier"]["fc6"]  # only the convolutions
  folded = {"params": fold_standardization(variables["params"])}
  assert (jax.tree.structure(folded) ==
          jax.tree.structure(jax.eval_shape(lambda: plain.init(jax.random.key(0), jnp.zeros((1, 58, 58, 3)),
                                                               train=False))))
  rng = np.random.default_rng(2)
  crop = jnp.asarray(rng.uniform(-1, 1, (2, 58, 58, 3)), jnp.float32)
  image = jnp.asarray(rng.uniform(-1, 1, (1, 90, 122, 3)), jnp.float32)
  np.testing.assert_allclose(plain.apply(folded, crop, train=False),
                             model.apply(variables, crop, train=False), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(plain.apply(folded, image, method=OverFeat.class_map),
                             model.apply(variables, image, method=OverFeat.class_map),
                             rtol=1e-4, atol=1e-5)
  # The standardised model is not the plain one on the same arrays (the fold did something).
  unfolded = {"params": {**variables["params"], "extractor": {
      name: {k: v for k, v in layer.items() if k != GAIN} for name, layer in extractor.items()}}}
  assert not np.allclose(plain.apply(unfolded, crop, train=False),
                         model.apply(variables, crop, train=False), atol=1e-3)


@pytest.fixture(scope="module")
def standardized_run(tmp_path_factory):
  """(workdir, localization config with the classifier's model keys, the saved parameters) of a
  classification checkpoint trained with model.weight_standardization."""
  workdir = str(tmp_path_factory.mktemp("standardized"))
  config = tiny_localization_config("unused", workdir)
  config.model.weight_standardization = True
  saved = save_classifier(config, workdir)
  return workdir, config, saved


def test_a_localizer_gets_the_folded_classifier(standardized_run):
  workdir, config, saved = standardized_run
  assert classification.trained_with_standardization(workdir)
  plain_config = config.copy_and_resolve_references()
  plain_config.model.weight_standardization = False
  params, step = localization.restore_classifier(plain_config)
  assert step == 1
  expected = fold_standardization(jax.tree.map(jnp.asarray, saved))
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  # A config that keeps the standardisation gets the checkpoint as it is.
  params, _ = localization.restore_classifier(config)
  assert params["extractor"]["conv1"][GAIN].shape == saved["extractor"]["conv1"][GAIN].shape
  np.testing.assert_array_equal(params["extractor"]["conv2"]["kernel"],
                                saved["extractor"]["conv2"]["kernel"])


def test_a_plain_classifier_cannot_start_a_standardised_model(tmp_path):
  workdir = str(tmp_path / "plain")
  config = tiny_localization_config("unused", workdir)
  save_classifier(config, workdir)
  assert not classification.trained_with_standardization(workdir)
  config.model.weight_standardization = True
  with pytest.raises(CheckpointError) as excinfo:
    localization.restore_classifier(config)
  message = str(excinfo.value)
  assert "\n" not in message
  assert message.startswith(f"config.localization.classifier_workdir={workdir!r}: it was trained "
                            "without model.weight_standardization")


def test_a_backbone_gets_the_folded_extractor(tmp_path):
  config = base_config()
  config.model.weight_standardization = True
  workdir = str(tmp_path / "classifier")
  saved = save_classifier(config, workdir)
  backbone = backbones.build_backbone("overfeat_fast", 0.125, stem_kernel=3, stem_stride=1)
  params, _ = pretrained.load_classifier_extractor(workdir, backbone)
  x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (1, 72, 88, 3)), jnp.float32)
  model = classification.model_from_config(config)
  np.testing.assert_allclose(
      backbone.module().apply({"params": params}, x),
      model.apply({"params": jax.tree.map(jnp.asarray, saved)}, x, method=OverFeat.features),
      rtol=1e-4, atol=1e-5)


def test_faster_rcnn_refuses_the_key():
  config = base_config()
  config.task = "faster_rcnn"
  config.faster_rcnn.backbone = "overfeat_fast"
  config.model.weight_standardization = True
  with pytest.raises(ConfigError, match="folded into plain ones"):
    validate_config(config)
