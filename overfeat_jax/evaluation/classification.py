"""Classification evaluation (SPEC A4): restore, run the dense grid over a split, print Table 2.

One jit-compiled step over the device mesh (one program per shape bucket) takes a batch of whole
images padded into their bucket's canvas and returns, for every row of the paper's Table 2 layout,
how many examples were right within top-1 and top-5; the host only adds up.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from overfeat_jax import checkpoint_io
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.data import buckets, pipeline
from overfeat_jax.errors import InputSizeError
from overfeat_jax.evaluation import classification_pictures, dense, metrics, outputs
from overfeat_jax.models.overfeat import OverFeat
from overfeat_jax.tasks import classification as task


def check_eval_sizes(model: OverFeat, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError / InputSizeError before compiling anything when a size cannot work.

  The centre crop must be the model's training input, and every test scale large enough that every
  pooling offset still leaves one full classifier window (the fine grid's requirement).
  """
  task.check_input_size(model, config)
  need = model.arch.fine_min_size
  for h, w in config.eval.scales:
    if min(h, w) < need:
      raise InputSizeError(
          f"test scale {h}x{w} in config.eval.scales is too small for this model: the field of view "
          f"is {model.arch.train_size}x{model.arch.train_size} and the fine-stride grid needs at least "
          f"{need}x{need}")


def _row_counts(model: OverFeat, config: ml_collections.ConfigDict, bucket: buckets.Bucket,
                variables: Any, images: jax.Array, image_hw: jax.Array, original_hw: jax.Array,
                labels: jax.Array, valid: jax.Array) -> jax.Array:
  """One evaluation step on a batch of one bucket: [B, Hb, Wb, 3] canvases, image sizes [B, 2] in
  them and before resizing [B, 2], labels [B], valid [B] -> int32 [rows, 2] (top-1, top-5 correct
  counts)."""
  scores = dense.evaluate_views(model, variables, images, config.eval, image_hw=image_hw,
                                original_hw=original_hw, bucket=bucket,
                                crop_size=config.input.crop_size,
                                resize_short=config.eval.resize_short)
  k5 = min(5, config.dataset.num_classes)
  counts = []
  for row in dense.ROWS:
    top1 = metrics.topk_correct(scores[row], labels, 1) & valid
    top5 = metrics.topk_correct(scores[row], labels, k5) & valid
    counts.append(jnp.stack([top1.sum(), top5.sum()]))
  return jnp.stack(counts).astype(jnp.int32)


def row_titles(config: ml_collections.ConfigDict) -> dict[str, str]:
  """Table 2 row names with the scales they use spelled out, e.g. '1 scale (64x64), fine stride'."""
  scales = [tuple(s) for s in config.eval.scales]
  one = "{}x{}".format(*scales[config.eval.single_scale])
  multi = ", ".join("{}x{}".format(*scales[i]) for i in config.eval.multi_scales)
  n = len(config.eval.multi_scales)
  crop = config.input.crop_size
  return {
      dense.ROW_CENTRE: f"centre crop ({crop}x{crop} of short side {config.eval.resize_short})",
      dense.ROW_TEN_VIEWS: "10 views (4 corners + centre, x flip)",
      dense.ROW_COARSE: f"1 scale ({one}), coarse stride",
      dense.ROW_FINE: f"1 scale ({one}), fine stride",
      dense.ROW_MULTI: f"{n} scales ({multi}), fine stride",
      dense.ROW_MULTI_FLIP: f"{n} scales, fine stride, flips",
  }


def format_table(results: dict[str, dict[str, float]], titles: dict[str, str]) -> str:
  """The paper's Table 2 layout: one row per approach, top-1 and top-5 error in percent."""
  width = max(len(t) for t in titles.values())
  lines = [f"{'Approach':<{width}} | top-1 err % | top-5 err %",
           f"{'-' * width}-+-------------+------------"]
  for row in dense.ROWS:
    r = results[row]
    lines.append(f"{titles[row]:<{width}} | {r['top1_error']:11.2f} | {r['top5_error']:11.2f}")
  return "\n".join(lines)


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = True) -> dict:
  """Restores the newest intact checkpoint in `workdir`, evaluates it on config.dataset.eval_split.

  `config` must have passed `validate_config` (`evaluation.run.run` does both).

  Returns:
    {'rows': {row: {'top1_error', 'top5_error', 'title'}}, 'num_examples', 'checkpoint_step', ...};
    the same is written to `workdir/eval/metrics.json` after the table (with `verbose`) is printed.
    Then, when config.eval.pictures > 0, pictures of the first images go to workdir/eval/pictures/
    (`classification_pictures`; process 0, a separate pass).
  Raises:
    CheckpointError when `workdir` holds no intact checkpoint or one of another model; ConfigError /
    InputSizeError / DataError for a config that cannot be evaluated; WorkdirError when
    eval/metrics.json or a picture cannot be written (the table is printed first, metrics.json is
    written before any picture).
  """
  model = task.model_from_config(config)
  check_eval_sizes(model, config)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(config.input.eval_batch_size, mesh, "input.eval_batch_size")
  params, step = task.restore_params(config, workdir)
  variables = {"params": params}

  variables = jax.device_put(variables, mesh_lib.replicated(mesh))
  step_fns = {}  # bucket index -> its jitted step (one program per shape bucket)

  def step_fn(bucket: int):
    if bucket not in step_fns:
      step_fns[bucket] = jax.jit(
          functools.partial(_row_counts, model, config, batches.shape_buckets[bucket]),
          in_shardings=(mesh_lib.replicated(mesh),) + (mesh_lib.batch_sharded(mesh),) * 5,
          out_shardings=mesh_lib.replicated(mesh))
    return step_fns[bucket]

  total = pipeline.num_eval_examples(config)
  counts = jnp.zeros((len(dense.ROWS), 2), jnp.int32)
  seen, start = 0, time.time()
  batches = pipeline.eval_loader(config, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  for i, batch in enumerate(batches):
    bucket_step = step_fn(int(batch["bucket"][0]))  # every host holds the same bucket at each step
    batch = mesh_lib.to_global(batch, mesh)
    counts = counts + bucket_step(variables, batch["image"], batch["size"], batch["original_size"],
                                  batch["label"], batch["valid"])
    seen += int(jnp.sum(batch["valid"]))  # each bucket's last batch is padded
    if verbose and (i == 0 or seen == total or i % 10 == 0):
      rate = seen / max(time.time() - start, 1e-9)
      print(f"eval: {seen}/{total} images, {rate:.1f} img/s", flush=True)
  counts = jax.device_get(counts)

  titles = row_titles(config)
  rows = {}
  for r, row in enumerate(dense.ROWS):
    rows[row] = {"title": titles[row],
                 "top1_error": 100.0 * (1.0 - counts[r, 0] / total),
                 "top5_error": 100.0 * (1.0 - counts[r, 1] / total)}
  result = {"checkpoint_step": int(step), "num_examples": int(total),
            "dataset": config.dataset.name, "split": config.dataset.eval_split,
            "seconds": round(time.time() - start, 1), "rows": rows}
  if verbose:  # before writing: a failed write must not lose the result
    print(f"checkpoint step {step} of {checkpoint_io.checkpoint_dir(workdir)}, {total} examples of "
          f"{config.dataset.name} ({config.dataset.eval_split}):", flush=True)
    print(format_table(rows, titles), flush=True)
  if jax.process_index() == 0:
    outputs.write_metrics(workdir, result)
    if config.eval.pictures:
      classification_pictures.write_pictures(config, workdir, model, variables, verbose=verbose)
  return result
