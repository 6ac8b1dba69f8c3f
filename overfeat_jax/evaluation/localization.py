"""Localization evaluation (SPEC A1, A5): the localization error of (class, box) guesses, the table.

A guess is correct when its class is right and its box has IoU >= 0.5 with a true box of that class
(SPEC A1); the top-1 / top-5 localization error counts the images whose first / first five guesses
hold no correct one. The rows, in the layout of the paper's localization results:
  - centre crop: the training-protocol view (short side eval.resize_short, centre crop of the
    training size), one window: its classes by probability, each with the window's regressed box;
  - 1 scale (eval.single_scale) and N scales (eval.multi_scales): the whole image at each scale
    (padded buckets, as classification evaluation), every fine-grid window's class scores and box,
    the top eval.merge_top_k classes per scale merged with threshold eval.merge_threshold
    (`localize.merged_guesses`, SPEC A5 (a)-(d)).
The classification error of the same guesses (their classes against the image's label) is printed
beside it, to tell a wrong class from a wrong box.

One jit-compiled step per shape bucket computes every row's correct counts on device; the host adds
them up, prints the table, writes eval/metrics.json and then, with config.eval.pictures, the
pictures (`localization_pictures`).
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
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.errors import DataError, InputSizeError
from overfeat_jax.evaluation import localization_pictures, localize, outputs
from overfeat_jax.tasks import classification
from overfeat_jax.tasks import localization as task

ROW_CENTRE = "centre crop"
ROW_SINGLE = "1 scale"
ROW_MULTI = "N scales"
ROWS = (ROW_CENTRE, ROW_SINGLE, ROW_MULTI)
# Counts per row, in the order of `localize.row_counts`.
COUNTS = ("loc_top1", "loc_top5", "cls_top1", "cls_top5")


def evaluate_rows(model: task.LocalizationModel, config: ml_collections.ConfigDict,
                  bucket: buckets.Bucket, params: Any, canvas: jax.Array, image_hw: jax.Array,
                  original_hw: jax.Array) -> dict[str, localize.Guesses]:
  """Every row's guesses for a batch of one bucket (canvases [B, Hb, Wb, 3], sizes in them and
  before resizing [B, 2]); jit-able, static shapes per bucket."""
  ev = config.eval
  single, multi = int(ev.single_scale), [int(i) for i in ev.multi_scales]
  grids = localize.scale_grids(model, params, canvas, ev, image_hw=image_hw, original_hw=original_hw,
                      bucket=bucket, indices=sorted(set(multi) | {single}))
  boxes = {index: localize.scale_boxes(grid) for index, grid in grids.items()}
  per_image = functools.partial(localize.merged_guesses, top_k=int(ev.merge_top_k),
                                threshold=float(ev.merge_threshold), reduce=ev.spatial_reduce,
                                score=ev.merge_score, average=ev.merge_average)

  def merged(indices: list[int]) -> localize.Guesses:
    return localize.Guesses(*jax.vmap(per_image)([boxes[i] for i in indices]))

  return {ROW_CENTRE: localize.centre_crop_guesses(model, params, canvas, image_hw=image_hw,
                                          original_hw=original_hw, resize_short=ev.resize_short,
                                          crop=config.input.crop_size),
          ROW_SINGLE: merged([single]), ROW_MULTI: merged(multi)}


def original_boxes(boxes: jax.Array, image_hw: jax.Array, original_hw: jax.Array) -> jax.Array:
  """Boxes [B, M, 4] in the canvas images' pixels (size image_hw [B, 2]) -> original pixels."""
  ratio = jnp.asarray(original_hw, jnp.float32) / jnp.asarray(image_hw, jnp.float32)  # (y, x)
  return boxes * jnp.stack([ratio[:, 1], ratio[:, 0], ratio[:, 1], ratio[:, 0]], -1)[:, None, :]


def _row_counts(model: task.LocalizationModel, config: ml_collections.ConfigDict,
                bucket: buckets.Bucket, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """One evaluation step: int32 [rows, 4] correct counts (ROWS x COUNTS) of a batch of one bucket."""
  rows = evaluate_rows(model, config, bucket, params, batch["image"], batch["size"],
                       batch["original_size"])
  true_boxes = original_boxes(batch["boxes"], batch["size"], batch["original_size"])
  return jnp.stack([localize.row_counts(rows[row], true_boxes, batch["box_labels"], batch["box_valid"],
                               batch["label"], batch["valid"]) for row in ROWS])


def check_eval_sizes(model: task.LocalizationModel, config: ml_collections.ConfigDict) -> None:
  """ConfigError / InputSizeError before compiling anything when a size cannot work (as
  classification evaluation: the crop is the training size, every used scale fits the fine grid)."""
  classification.check_input_size(model.overfeat, config)
  need = model.overfeat.arch.fine_min_size
  for index in sorted(set(config.eval.multi_scales) | {config.eval.single_scale}):
    h, w = config.eval.scales[index]
    if min(h, w) < need:
      raise InputSizeError(
          f"test scale {h}x{w} in config.eval.scales is too small for this model: the field of view "
          f"is {model.overfeat.arch.train_size}x{model.overfeat.arch.train_size} and the fine-stride "
          f"grid needs at least {need}x{need}")


def row_titles(config: ml_collections.ConfigDict) -> dict[str, str]:
  """Row names with their scales, e.g. '3 scales (64x64, 72x80, 80x96)'."""
  scales = [tuple(s) for s in config.eval.scales]
  one = "{}x{}".format(*scales[config.eval.single_scale])
  multi = ", ".join("{}x{}".format(*scales[i]) for i in config.eval.multi_scales)
  crop = config.input.crop_size
  return {ROW_CENTRE: f"centre crop ({crop}x{crop} of short side {config.eval.resize_short})",
          ROW_SINGLE: f"1 scale ({one}), fine stride",
          ROW_MULTI: f"{len(config.eval.multi_scales)} scales ({multi}), fine stride"}


def format_table(rows: dict[str, dict[str, Any]], regressor: str, threshold: float) -> str:
  """The localization table: per row, top-1 / top-5 localization error and classification error %;
  the head names the regressor (SCR / PCR) and the merge threshold."""
  head = f"Localization, {regressor.upper()} regressor, merge threshold {threshold:g}"
  width = max([len(head)] + [len(r["title"]) for r in rows.values()])
  lines = [f"{head:<{width}} | top-1 loc err % | top-5 loc err % | top-1 cls err % | top-5 cls err %",
           f"{'-' * width}-+-----------------+-----------------+-----------------+----------------"]
  for row in ROWS:
    r = rows[row]
    lines.append(f"{r['title']:<{width}} | {r['top1_loc_error']:15.2f} | {r['top5_loc_error']:15.2f} | "
                 f"{r['top1_cls_error']:15.2f} | {r['top5_cls_error']:15.2f}")
  return "\n".join(lines)


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = True) -> dict:
  """Restores the newest intact localization checkpoint in `workdir` and evaluates it on
  config.dataset.eval_split (module docstring). `config` must have passed `validate_config`.

  Returns:
    {'rows': {row: {'title', 'top1_loc_error', 'top5_loc_error', 'top1_cls_error',
    'top5_cls_error'}}, 'regressor', 'merge_threshold', 'merge_top_k', 'num_examples',
    'checkpoint_step', ...}; also written to `workdir/eval/metrics.json` after the table is printed.
  Raises:
    CheckpointError: no intact checkpoint in `workdir`, or one of another model.
    ConfigError / InputSizeError / DataError: a config that cannot be evaluated (a dataset without
      boxes among them); WorkdirError: eval/metrics.json or a picture cannot be written.
  """
  model = task.model_from_config(config)
  check_eval_sizes(model, config)
  if not get_dataset_spec(config.dataset.name).has_boxes:
    raise DataError(f"localization is evaluated against true boxes, and {config.dataset.name} has none")
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(config.input.eval_batch_size, mesh, "input.eval_batch_size")
  params, step = task.restore_params(config, workdir)
  params = jax.device_put(params, mesh_lib.replicated(mesh))
  batches = pipeline.eval_loader(config, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  step_fns = {}  # bucket index -> its jitted step

  def step_fn(bucket: int):
    if bucket not in step_fns:
      step_fns[bucket] = jax.jit(
          functools.partial(_row_counts, model, config, batches.shape_buckets[bucket]),
          in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)),
          out_shardings=mesh_lib.replicated(mesh))
    return step_fns[bucket]

  keys = ("image", "size", "original_size", "boxes", "box_labels", "box_valid", "label", "valid")
  total = batches.num_examples
  counts = jnp.zeros((len(ROWS), len(COUNTS)), jnp.int32)
  seen, start = 0, time.time()
  for i, batch in enumerate(batches):
    bucket_step = step_fn(int(batch["bucket"][0]))
    batch = mesh_lib.to_global({key: batch[key] for key in keys}, mesh)
    counts = counts + bucket_step(params, batch)
    seen += int(jnp.sum(batch["valid"]))
    if verbose and (i == 0 or seen == total or i % 10 == 0):
      print(f"eval: {seen}/{total} images, {seen / max(time.time() - start, 1e-9):.1f} img/s", flush=True)
  counts = jax.device_get(counts)

  titles = row_titles(config)
  rows = {}
  for r, row in enumerate(ROWS):
    errors = {name: 100.0 * (1.0 - counts[r, c] / total) for c, name in enumerate(COUNTS)}
    rows[row] = {"title": titles[row],
                 "top1_loc_error": errors["loc_top1"], "top5_loc_error": errors["loc_top5"],
                 "top1_cls_error": errors["cls_top1"], "top5_cls_error": errors["cls_top5"]}
  result = {"task": "localization", "regressor": config.localization.regressor,
            "merge_threshold": float(config.eval.merge_threshold),
            "merge_score": config.eval.merge_score, "merge_average": config.eval.merge_average,
            "merge_top_k": int(config.eval.merge_top_k), "checkpoint_step": int(step),
            "num_examples": int(total), "dataset": config.dataset.name,
            "split": config.dataset.eval_split, "seconds": round(time.time() - start, 1), "rows": rows}
  if verbose:  # before writing: a failed write must not lose the result
    print(f"checkpoint step {step} of {checkpoint_io.checkpoint_dir(workdir)}, {total} examples of "
          f"{config.dataset.name} ({config.dataset.eval_split}):", flush=True)
    print(format_table(rows, config.localization.regressor, float(config.eval.merge_threshold)),
          flush=True)
  if jax.process_index() == 0:
    outputs.write_metrics(workdir, result)
    if config.eval.pictures:
      localization_pictures.write_pictures(config, workdir, model, params, verbose=verbose)
  return result


# Logged names of the rows (metrics.jsonl / TensorBoard tags: no spaces).
ROW_NAMES = {ROW_CENTRE: "centre_crop", ROW_SINGLE: "single_scale", ROW_MULTI: "multi_scale"}
_METRICS = ("top1_loc_error", "top5_loc_error", "top1_cls_error", "top5_cls_error")


def scalars(result: dict[str, Any]) -> dict[str, float]:
  """The logged metrics of an `evaluate` result: {"eval/<row>/<metric>": percent}, the multi-scale
  top-1 localization error first."""
  values = {f"eval/{ROW_NAMES[ROW_MULTI]}/top1_loc_error": float(result["rows"][ROW_MULTI]["top1_loc_error"])}
  for row in ROWS:
    for metric in _METRICS:
      values.setdefault(f"eval/{ROW_NAMES[row]}/{metric}", float(result["rows"][row][metric]))
  return values


def summary(result: dict[str, Any]) -> str:
  """The headline in words: the multi-scale top-1 localization error, the regressor and the split."""
  row = result["rows"][ROW_MULTI]
  return (f"top-1 localization error {row['top1_loc_error']:.2f}% ({row['title']}, "
          f"{result['regressor'].upper()}) on {result['num_examples']} examples of {result['split']}")
