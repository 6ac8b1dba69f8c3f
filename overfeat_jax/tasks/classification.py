"""The OverFeat classification task (SPEC A3): model, parameters, signature, restore, loss and data.

The signature a checkpoint is written with (`model_signature`) and the one evaluation checks it
against (`architecture_signature`) come from this one module.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from overfeat_jax import checkpoint_io
from overfeat_jax.data import pipeline
from overfeat_jax.errors import CheckpointError, ConfigError
from overfeat_jax.models.overfeat import OverFeat, build_model, fold_standardization
from overfeat_jax.tasks.base import Batch, LossFn, Task

# The config.model fields that decide the parameters' shapes (the others: init, dropout, compute dtype).
ARCHITECTURE_KEYS = ("variant", "width", "stem_kernel", "stem_stride")

# (params, images [B, S, S, 3], dropout rng) -> logits [B, K]
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def model_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a resumed run must match: the whole config.model section and the class count."""
  return {"model": config.model.to_dict(), "num_classes": config.dataset.num_classes}


def architecture_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What evaluation must match: the part of `model_signature` that shapes the parameters.

  model.weight_standardization (its gains are parameters) is named only when on, so that
  checkpoints written before the key existed still match a plain config.
  """
  model = {key: config.model[key] for key in ARCHITECTURE_KEYS}
  if config.model.weight_standardization:
    model["weight_standardization"] = True
  return {"model": model, "num_classes": config.dataset.num_classes}


def model_from_config(config: ml_collections.ConfigDict) -> OverFeat:
  """The OverFeat module of config.model for config.dataset.num_classes classes."""
  return build_model(config.model, config.dataset.num_classes)


def check_input_size(model: OverFeat, config: ml_collections.ConfigDict) -> None:
  """The training crop must be the network's training input size (its field of view, SPEC A2)."""
  train_size = model.arch.train_size
  if config.input.crop_size != train_size:
    raise ConfigError(
        f"config.input.crop_size={config.input.crop_size} but this model ({config.model.variant}, "
        f"width {config.model.width}) trains on {train_size}x{train_size} inputs: set "
        f"--config.input.crop_size={train_size} (and input.resize_short >= it)")


def init_params(model: OverFeat, rng: jax.Array) -> Any:
  """The model's parameters from `rng` (SPEC A3 init as config.model.init says)."""
  size = model.arch.train_size
  return model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False)["params"]


def params_template(model: OverFeat) -> Any:
  """The parameters' shapes and dtypes (`jax.ShapeDtypeStruct`s), allocating nothing."""
  return jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy (SPEC A3), with a uniform target for crops without a class.

  Args:
    logits: [B, K] float.
    labels: [B] int32 class indices in [0, K), or OFF_OBJECT_LABEL (negative) for a crop that shows
      too little of its object (`input.off_object_crops`): its target is uniform over the K classes.
  Returns:
    [] float32, the mean over the batch of -log softmax(logits)[label] (uniform target: the mean
    over k of -log softmax(logits)[k]).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, K]
  labelled = labels >= 0
  picked = jnp.take_along_axis(log_probs, jnp.where(labelled, labels, 0)[:, None], axis=-1)[:, 0]
  return -jnp.mean(jnp.where(labelled, picked, log_probs.mean(axis=-1)))


def top1_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of the labelled rows (label >= 0) whose highest logit is the label: logits [B, K],
  labels [B] -> [] float32 (0 when no row is labelled)."""
  labelled = labels >= 0
  hits = jnp.sum((jnp.argmax(logits, axis=-1) == labels) & labelled)
  return hits / jnp.maximum(jnp.sum(labelled), 1)


def classification_loss_fn(apply_fn: ApplyFn) -> LossFn:
  """The classification loss for a model: batch {'image': [B, S, S, 3], 'label': [B]} -> CE, accuracy."""

  def loss_fn(params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = apply_fn(params, batch["image"], rng)  # [B, K]
    return softmax_cross_entropy(logits, batch["label"]), {"accuracy": top1_accuracy(logits, batch["label"])}

  return loss_fn


def training_task(config: ml_collections.ConfigDict) -> Task:
  """OverFeat (config.model) on config.dataset's training split with softmax cross-entropy.

  Raises:
    ConfigError: input.crop_size != the model's training size, or a batch larger than the split.
    DataError: the dataset cannot be loaded (see data.pipeline.load_source).
  """
  model = model_from_config(config)
  check_input_size(model, config)
  num_records = len(pipeline.load_source(config.dataset, config.dataset.train_split))
  steps_per_epoch = pipeline.train_steps_per_epoch(config, num_records)
  if steps_per_epoch < 1:
    raise ConfigError(f"config.input.batch_size={config.input.batch_size} is larger than the "
                      f"{num_records} training records of {config.dataset.name}")

  def apply(params: Any, images: jax.Array, rng: jax.Array) -> jax.Array:
    return model.apply({"params": params}, images, train=True, rngs={"dropout": rng})  # [B, K]

  def make_loader(process_index: int, process_count: int) -> Any:
    return pipeline.train_loader(config, process_index=process_index, process_count=process_count)

  return Task(init_params=lambda rng: init_params(model, rng),
              loss_fn=classification_loss_fn(apply),
              make_loader=make_loader,
              steps_per_epoch=steps_per_epoch,
              signature=model_signature(config))


def restore_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, int]:
  """(params, step) of the latest checkpoint in `workdir`, checked against config.model's
  architecture fields (so a bfloat16 evaluation of a float32-trained run is fine).

  Raises:
    CheckpointError: no checkpoint, or one written for a different model.
  """
  return checkpoint_io.restore_params(workdir, params_template(model_from_config(config)),
                                      task_signature=architecture_signature(config))


def restore_named_run(config: ml_collections.ConfigDict, key: str) -> tuple[Any, int]:
  """(params, step) of the classification run whose workdir the config key `key` names (e.g.
  "localization.classifier_workdir": the run a localizer or detector starts from), checked as
  `restore_params` checks. A run trained with model.weight_standardization gives the plain kernels it
  amounts to (`fold_standardization`) when the config has it off, as a localizer's or detector's does.

  Raises:
    CheckpointError: no checkpoint there, or one of another model (one line naming the key and workdir).
  """
  section, name = key.split(".")
  workdir = config[section][name]
  try:
    standardized = trained_with_standardization(workdir)
    if config.model.weight_standardization and not standardized:
      raise CheckpointError("it was trained without model.weight_standardization, which this config "
                            "sets (a plain kernel has no standardised form)")
    as_trained = config.copy_and_resolve_references()
    as_trained.model.weight_standardization = standardized
    params, step = restore_params(as_trained, workdir)
  except CheckpointError as e:
    raise CheckpointError(f"config.{key}={workdir!r}: {e}") from None
  if standardized and not config.model.weight_standardization:
    params = fold_standardization(params)
  return params, step


def trained_with_standardization(workdir: str) -> bool:
  """Whether the newest checkpoint of a classification run was trained with weight-standardised
  convolutions (its signature's model.weight_standardization; absent in older runs = no).

  Raises:
    CheckpointError: no checkpoint there.
  """
  signature, _ = checkpoint_io.read_signature(workdir)
  return bool(signature.get("task", {}).get("model", {}).get("weight_standardization", False))
