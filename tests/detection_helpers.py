"""A tiny detection config on the small `digits_in_scenes/detection` fixture, for the detection tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from overfeat_jax.config import base_config


def tiny_detection_config(data_dir: str, classifier_workdir: str, *,
                          classification: bool = False) -> ml_collections.ConfigDict:
  """The quickstart's layers at 1/32 width (58-px field of view, fine grid from 62 px) on the
  detection fixture: whole images with short side 64 in one shape bucket, two training steps of
  batch 4 at scales 62 and 64, evaluation of 8 images at the same two scales. `classification`:
  the classification config of the same model (to write the checkpoint the detector starts from)."""
  config = base_config()
  config.dataset.data_dir = data_dir
  config.model.width = 1 / 32
  config.optimizer.learning_rate = 0.05
  config.optimizer.halve_at_epochs = ()
  config.train.max_steps = 2
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  if classification:
    return config
  config.task = "detection"
  config.dataset.name = "digits_in_scenes/detection"
  config.input.batch_size = 4
  config.input.eval_batch_size = 4
  config.input.min_size = 64
  config.input.max_size = 128
  config.input.aspect_buckets = (2.0,)  # one bucket: one compiled step
  config.input.random_flip = False
  config.eval.num_examples = 8
  config.detection.classifier_workdir = classifier_workdir
  config.detection.train_scales = (62, 64)
  config.detection.test_scales = (62, 64)
  config.detection.hard_negatives = 3
  config.detection.random_negatives = 2
  config.detection.max_boxes_per_class = 32
  config.detection.max_detections = 20
  return config


def random_params(template, seed: int = 0, scale: float = 0.05):
  """Parameters of `template`'s shapes (a task's params_template), drawn N(0, scale^2): a model whose
  every layer passes signal, for tests of shapes and gradients."""
  rng = np.random.default_rng(seed)  # numpy: jax.random would compile a program per leaf shape
  return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, scale, leaf.shape), leaf.dtype), template)
