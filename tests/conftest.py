"""Shared pytest setup: CPU only, deterministic, quiet."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from overfeat_jax.cpu_flags import use_fast_cpu_convolutions  # noqa: E402  (before jax starts)

use_fast_cpu_convolutions()


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding `digits_in_scenes/classification`, generated once per test session
  through the public API (load_source prepares our builder on first use)."""
  from overfeat_jax.config import base_config
  from overfeat_jax.data import pipeline

  config = base_config()
  config.dataset.name = "digits_in_scenes/classification"
  config.dataset.data_dir = str(tmp_path_factory.mktemp("tfds_data"))
  pipeline.load_source(config.dataset, config.dataset.train_split)
  return config.dataset.data_dir


@pytest.fixture(scope="session")
def digits_detection_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding `digits_in_scenes/detection` (0-5 digits per image, some empty), made
  by the real builder but with only the first 96 train / 48 test examples of each split (the same
  images as the full dataset's first ones; the full 5,000 take ~25 s to generate on 2 cores)."""
  from unittest import mock

  from overfeat_jax.config import base_config
  from overfeat_jax.data import pipeline
  from overfeat_jax.data.builders import digits_in_scenes

  config = base_config()
  config.dataset.name = "digits_in_scenes/detection"
  config.dataset.data_dir = str(tmp_path_factory.mktemp("tfds_detection_data"))
  full = digits_in_scenes.num_examples
  with mock.patch.object(digits_in_scenes, "num_examples",
                         lambda cfg, split: min(full(cfg, split), {"train": 96, "test": 48}[split])):
    pipeline.load_source(config.dataset, config.dataset.train_split)
  return config.dataset.data_dir
