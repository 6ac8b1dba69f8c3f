"""A tiny classification task for the training-loop tests (in-process, and as a subprocess script).

The model is a 2-layer MLP with dropout whose hidden width is `128 * config.model.width`; the data is
96 random 8x8x3 images whose label is the argmax of a fixed linear map, served by a grain DataLoader
(the same kind of loader the real pipeline returns). Small enough that a step costs milliseconds.

As a script (the multi-device and kill/resume tests):
  python tests/tiny_training.py --workdir W --max_steps 8 [--checkpoint_every 3] [--step_delay 0.3]
      [--batch_size 8] [--width 0.125] [--out params.npz]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from overfeat_jax import stop_signals
from overfeat_jax.config import base_config
from overfeat_jax.tasks import classification
from overfeat_jax.tasks.base import Task
from overfeat_jax.training import loop

NUM_RECORDS = 96
NUM_CLASSES = 4
IMAGE_SIZE = 8


class TinyNet(nn.Module):
  """images [B, 8, 8, 3] -> logits [B, NUM_CLASSES]."""
  hidden: int
  dropout_rate: float

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    x = images.reshape(images.shape[0], -1)  # [B, 192]
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(NUM_CLASSES)(x)


def tiny_records() -> list[dict[str, np.ndarray]]:
  """96 examples {'image': [8, 8, 3] float32, 'label': [] int32}; labels are learnable (linear rule)."""
  rs = np.random.RandomState(1234)
  images = rs.normal(size=(NUM_RECORDS, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  projection = rs.normal(size=(IMAGE_SIZE * IMAGE_SIZE * 3, NUM_CLASSES))
  labels = np.argmax(images.reshape(NUM_RECORDS, -1) @ projection, axis=1).astype(np.int32)
  return [{"image": images[i], "label": labels[i]} for i in range(NUM_RECORDS)]


def tiny_config(**train: Any) -> ml_collections.ConfigDict:
  """base_config() with a batch of 8, logging every 2 steps and the given `train.*` overrides."""
  config = base_config()
  config.dataset.num_classes = NUM_CLASSES
  config.input.batch_size = 8
  config.model.dropout_rate = 0.1
  config.optimizer.learning_rate = 0.02
  config.optimizer.halve_at_epochs = (1,)  # halved from step 12 on
  config.train.log_every = 2
  config.train.checkpoint_every = 4
  for key, value in train.items():
    config.train[key] = value
  return config


class SlowIterator:
  """Wraps a grain iterator, sleeping `delay` seconds per batch (to give the kill test a window)."""

  def __init__(self, inner: Any, delay: float):
    self.inner, self.delay = inner, delay

  def __iter__(self) -> SlowIterator:
    return self

  def __next__(self) -> Any:
    time.sleep(self.delay)
    return next(self.inner)

  def get_state(self) -> Any:
    return self.inner.get_state()

  def set_state(self, state: Any) -> None:
    self.inner.set_state(state)

  def start_prefetch(self) -> None:
    self.inner.start_prefetch()


class SlowLoader:
  def __init__(self, loader: Any, delay: float):
    self.loader, self.delay = loader, delay

  def __iter__(self) -> SlowIterator:
    return SlowIterator(iter(self.loader), self.delay)


def tiny_task(config: ml_collections.ConfigDict, *, step_delay: float = 0.0) -> Task:
  """The tiny task for `config` (reads seed, input.batch_size, model.width, model.dropout_rate)."""
  model = TinyNet(hidden=max(1, int(128 * config.model.width)), dropout_rate=config.model.dropout_rate)
  records = tiny_records()

  def init_params(rng: jax.Array) -> Any:
    return model.init(rng, jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), train=False)["params"]

  def apply(params: Any, images: jax.Array, rng: jax.Array) -> jax.Array:
    return model.apply({"params": params}, images, train=True, rngs={"dropout": rng})

  def make_loader(process_index: int, process_count: int) -> Any:
    sampler = grain.samplers.IndexSampler(
        NUM_RECORDS, grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True),
        shuffle=True, num_epochs=None, seed=config.seed)
    loader = grain.DataLoader(
        data_source=records, sampler=sampler, worker_count=0,
        operations=[grain.transforms.Batch(config.input.batch_size // process_count, drop_remainder=True)])
    return SlowLoader(loader, step_delay) if step_delay else loader

  return Task(init_params=init_params, loss_fn=classification.classification_loss_fn(apply),
                   make_loader=make_loader, steps_per_epoch=NUM_RECORDS // config.input.batch_size,
                   signature={"model": config.model.to_dict(), "num_classes": NUM_CLASSES})


def flat_params(params: Any) -> dict[str, np.ndarray]:
  """{'Dense_0/kernel': array, ...} as host numpy arrays."""
  flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(params))
  return {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in flat}


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--max_steps", type=int, required=True)
  parser.add_argument("--checkpoint_every", type=int, default=4)
  parser.add_argument("--log_every", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--width", type=float, default=0.125)
  parser.add_argument("--step_delay", type=float, default=0.0)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  stop_signals.exit_on_signals("exited at once")  # as train.py: a stop before the first step is at once
  config = tiny_config(max_steps=args.max_steps, checkpoint_every=args.checkpoint_every,
                       log_every=args.log_every)
  config.input.batch_size = args.batch_size
  config.model.width = args.width
  print(f"devices {jax.device_count()}", flush=True)
  result = loop.train(config, args.workdir, tiny_task(config, step_delay=args.step_delay))
  if args.out:
    np.savez(args.out, step=result.step, **flat_params(result.state.params))
  return 128 + result.stopped_by if result.stopped_by else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
