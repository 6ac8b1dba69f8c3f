"""A tiny classification checkpoint and a tiny localization config on the digits data, for the
localization tests (no classifier training: the checkpoint holds numpy-filled parameters)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from overfeat_jax import checkpoint_io
from overfeat_jax.config import base_config
from overfeat_jax.tasks import classification
from overfeat_jax.training.checkpoint import TrainCheckpoints
from overfeat_jax.training.state import TrainState

from model_helpers import random_variables

NEGATIVE_ZERO_LEAF = ("classifier", "fc8", "bias")  # holds a -0.0: a frozen update of +0.0 would flip it


def tiny_localization_config(data_dir: str, classifier_workdir: str,
                             **localization) -> ml_collections.ConfigDict:
  """The digits data, the quickstart's layers at 1/32 width (58-px field of view, fine grid from
  62 px), one shape bucket, whole images with short side 64, three training steps of batch 4."""
  config = base_config()
  config.task = "localization"
  config.dataset.name = "digits_in_scenes/classification"
  config.dataset.data_dir = data_dir
  config.dataset.train_split = "train[:32]"
  config.model.width = 1 / 32
  config.input.batch_size = 4
  config.input.eval_batch_size = 4
  config.input.min_size = 64
  config.input.max_size = 128
  config.input.aspect_buckets = (2.0,)  # one bucket: one compiled step
  config.input.random_flip = False
  config.eval.aspect_buckets = (2.0,)
  config.eval.scales = ((64, 64), (72, 80))
  config.eval.single_scale = 0
  config.eval.multi_scales = (0, 1)
  config.eval.num_examples = 4
  config.optimizer.learning_rate = 0.05
  config.optimizer.halve_at_epochs = ()
  config.train.max_steps = 3
  config.train.log_every = 1
  config.train.checkpoint_every = 3
  config.localization.classifier_workdir = classifier_workdir
  config.localization.train_scales = (62, 64)
  for key, value in localization.items():
    config.localization[key] = value
  return config


class NoData:
  """A data iterator with an empty position (what a checkpoint needs of one)."""

  def get_state(self) -> bytes:
    return b"{}"

  def set_state(self, state: bytes) -> None:
    del state


def save_classifier(config: ml_collections.ConfigDict, workdir: str, seed: int = 0) -> dict:
  """Writes a classification checkpoint (step 1) of config.model with random parameters, one of
  them -0.0 (NEGATIVE_ZERO_LEAF[0]), into `workdir`; returns the parameters (numpy)."""
  model = classification.model_from_config(config)
  params = jax.device_get(random_variables(model, seed)["params"])
  leaf = params
  for key in NEGATIVE_ZERO_LEAF[:-1]:
    leaf = leaf[key]
  leaf[NEGATIVE_ZERO_LEAF[-1]] = np.asarray(leaf[NEGATIVE_ZERO_LEAF[-1]]).copy()
  leaf[NEGATIVE_ZERO_LEAF[-1]][0] = -0.0
  state = TrainState.create(jax.tree.map(jnp.asarray, params), optax.identity())
  signature = checkpoint_io.make_signature(classification.model_signature(config), params)
  with TrainCheckpoints(workdir, keep=1, signature=signature) as checkpoints:
    checkpoints.save(1, state, NoData())
  return params


def bits(tree) -> dict:
  """{'a/b/c': uint32 array of the float32 leaf's bits}: equality is bit for bit (-0.0 != 0.0)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
  return {"/".join(str(k.key) for k in path): np.asarray(leaf, np.float32).view(np.uint32)
          for path, leaf in flat}
