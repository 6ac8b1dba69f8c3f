"""The base experiment config: every key the library reads, with its default and what it means.

Experiment files under `configs/` call `base_config()` and override what differs, so a key that is
not here does not exist (ml_collections rejects it on the command line and `validate_config` rejects
it in code). Nothing in the library calls `config.get(key, default)`.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the full config tree with defaults (the small CPU OverFeat on the embedded data)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # One seed for parameters, dropout and the data order: same seed, same numbers on CPU.

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits_in_scenes/classification"  # TFDS name[/config]; see overfeat_jax.data.registry.
  c.dataset.data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  c.dataset.train_split = "train"  # TFDS split used for training.
  c.dataset.eval_split = "test"  # TFDS split used by evaluate.py.
  c.dataset.num_classes = 10  # Number of classes (must match the dataset; checked at start).
  c.dataset.prepare = True  # Build our own builders' data on first use (never downloads anything).

  c.input = ml_collections.ConfigDict()
  c.input.resize_short = 64  # Training: resize so the short side is this many pixels (paper: 256).
  c.input.crop_size = 58  # Training: random square crop (paper: 231 fast / 221 accurate).
  c.input.random_flip = True  # Training: random horizontal flips (paper: yes).
  c.input.mean = (0.485, 0.456, 0.406)  # Per-channel mean of [0, 1] pixels, subtracted.
  c.input.std = (0.229, 0.224, 0.225)  # Per-channel std of [0, 1] pixels, divided.
  c.input.batch_size = 64  # Global training batch (split over all devices and hosts).
  c.input.eval_batch_size = 64  # Global evaluation batch; the last batch is padded and masked.
  c.input.max_boxes = 16  # Ground truth padded to this many boxes per image (with a valid mask).
  c.input.num_workers = 0  # grain worker processes (0 = in the main process; deterministic either way).
  c.input.prefetch = 2  # grain read-ahead buffer size (batches).

  c.model = ml_collections.ConfigDict()
  c.model.variant = "fast"  # "fast" or "accurate" (SPEC A2).
  c.model.width = 0.125  # Channel multiplier on every layer but the last (1.0 = the paper's model).
  c.model.stem_kernel = 3  # Layer-1 filter size; 0 = the paper's (11 fast, 7 accurate).
  c.model.stem_stride = 1  # Layer-1 stride; 0 = the paper's (4 fast, 2 accurate).
  c.model.dropout_rate = 0.5  # Dropout on the first two fully connected layers (paper: 0.5).
  c.model.init = "he"  # "paper" = N(0, 0.01^2) weights; "he" = variance scaling (small nets learn faster).
  c.model.compute_dtype = "float32"  # "float32" or "bfloat16" (activations; parameters stay float32).

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 0.02  # Initial learning rate (paper: 5e-2).
  c.optimizer.momentum = 0.9  # SGD momentum (paper: 0.6).
  c.optimizer.weight_decay = 1e-5  # L2 weight decay added to the gradient (paper: 1e-5).
  c.optimizer.halve_at_epochs = (6, 9, 11)  # Halve the learning rate after these epochs (paper: 30,50,60,70,80).

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = 12  # Training length in epochs of the train split.
  c.train.max_steps = 0  # If > 0, stop after this many steps (smoke tests); 0 = num_epochs decides.
  c.train.log_every = 50  # Print and append to metrics.jsonl every this many steps.
  c.train.checkpoint_every = 500  # Save a checkpoint every this many steps (and at the end, and on SIGTERM).
  c.train.keep_checkpoints = 2  # How many recent checkpoints to keep.
  c.train.distributed = False  # Call jax.distributed.initialize() (multi-host runs).

  c.eval = ml_collections.ConfigDict()
  c.eval.resize_short = 64  # Centre-crop / 10-view protocol: resize the short side to this, then crop.
  c.eval.scales = ((64, 64), (72, 80), (80, 96), (96, 112), (104, 120), (112, 136))  # (H, W) per test scale.
  c.eval.single_scale = 0  # Index into `scales` used by the single-scale rows (paper: scale 1).
  c.eval.multi_scales = (0, 1, 2, 3, 4, 5)  # Indices into `scales` used by the multi-scale rows.
  c.eval.spatial_reduce = "max"  # How a class map becomes one score per class: "max" (paper) or "mean".
  c.eval.num_examples = 0  # If > 0, evaluate only the first N examples of the split.
  return c
