"""Classification evaluation (SPEC A4): restore, run the dense grid over a split, print Table 2.

One jit-compiled step over the device mesh (one program per shape bucket) takes a batch of whole
images padded into their bucket's canvas and returns, for every row of the paper's Table 2 layout,
how many examples were right within top-1 and top-5; the host only adds up. `Evaluator` holds that
step, built once; evaluate.py runs it on the newest checkpoint (`evaluate`) and training every
train.eval_every steps (`periodic_evaluation`); both log `scalars(result)` (see `ROW_NAMES`).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

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


class Evaluator:
  """The Table 2 evaluation (SPEC A4) of any parameters of config.model on the first
  config.eval.num_examples examples (0: all) of config.dataset.eval_split, built once: the model, the
  mesh, this host's eval batches and one jitted step per shape bucket (compiled on first use), so
  that it runs again at little cost during training (`periodic_evaluation`).

  Raises (on construction):
    ConfigError / InputSizeError / DataError for a config that cannot be evaluated.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = task.model_from_config(config)
    check_eval_sizes(self.model, config)
    self.mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_divisible(config.input.eval_batch_size, self.mesh, "input.eval_batch_size")
    self.batches = pipeline.eval_loader(config, process_index=jax.process_index(),
                                        process_count=jax.process_count())
    self._step_fns = {}  # bucket index -> its jitted step (one program per shape bucket)

  def _step_fn(self, bucket: int):
    if bucket not in self._step_fns:
      self._step_fns[bucket] = jax.jit(
          functools.partial(_row_counts, self.model, self.config, self.batches.shape_buckets[bucket]),
          in_shardings=(mesh_lib.replicated(self.mesh),) + (mesh_lib.batch_sharded(self.mesh),) * 5,
          out_shardings=mesh_lib.replicated(self.mesh))
    return self._step_fns[bucket]

  def variables(self, params: Any) -> Any:
    """{'params': params} replicated over the mesh (no copy for parameters that already are)."""
    return jax.device_put({"params": params}, mesh_lib.replicated(self.mesh))

  def run(self, variables: Any, *, step: int, verbose: bool) -> dict[str, Any]:
    """Evaluates `variables` (from `self.variables`), trained for `step` steps.

    Returns:
      {'checkpoint_step': step, 'num_examples', 'dataset', 'split', 'seconds',
       'rows': {row: {'title', 'top1_error', 'top5_error'}}} (errors in percent); with `verbose`,
      prints progress lines while it runs.
    """
    config, total = self.config, self.batches.num_examples
    counts = jnp.zeros((len(dense.ROWS), 2), jnp.int32)
    seen, start = 0, time.time()
    for i, batch in enumerate(self.batches):
      bucket_step = self._step_fn(int(batch["bucket"][0]))  # every host holds the same bucket at each step
      batch = mesh_lib.to_global(batch, self.mesh)
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
    return {"checkpoint_step": int(step), "num_examples": int(total),
            "dataset": config.dataset.name, "split": config.dataset.eval_split,
            "seconds": round(time.time() - start, 1), "rows": rows}


# Each Table 2 row's name in the logged metrics (metrics.jsonl keys, TensorBoard tags:
# "eval/<name>/top1_error", "eval/<name>/top5_error"), and the row the run summaries quote.
ROW_NAMES = {
    dense.ROW_CENTRE: "centre_crop",
    dense.ROW_TEN_VIEWS: "ten_views",
    dense.ROW_COARSE: "one_scale_coarse",
    dense.ROW_FINE: "one_scale_fine",
    dense.ROW_MULTI: "multi_scale",
    dense.ROW_MULTI_FLIP: "multi_scale_flips",
}
HEADLINE_ROW = dense.ROW_MULTI  # the paper's dense multi-scale result (flips hurt on handwriting)


def scalars(result: dict[str, Any]) -> dict[str, float]:
  """The logged metrics of an `Evaluator.run` result: {"eval/<row name>/top1_error": percent, ...
  top5 ...}, the HEADLINE_ROW's top-1 error first, then the rows in Table 2 order."""
  values = {}
  for row in (HEADLINE_ROW,) + dense.ROWS:
    for metric in ("top1_error", "top5_error"):
      values.setdefault(f"eval/{ROW_NAMES[row]}/{metric}", float(result["rows"][row][metric]))
  return values


def summary(result: dict[str, Any]) -> str:
  """The headline in words, e.g. 'top-1 error 23.50% (3 scales (64x64, ...), fine stride) on 1000
  examples of test'."""
  row = result["rows"][HEADLINE_ROW]
  return (f"top-1 error {row['top1_error']:.2f}% ({row['title']}) on {result['num_examples']} examples of "
          f"{result['split']}")


def periodic_evaluation(config: ml_collections.ConfigDict) -> Callable[[Any, int], dict[str, float]]:
  """The evaluation training runs every config.train.eval_every steps: `Evaluator` on the first
  config.train.eval_num_examples examples (0: config.eval.num_examples') of the eval split, built
  now (so a config that cannot be evaluated fails before training); each call prints one line on
  process 0 and returns `scalars`.
  """
  eval_config = ml_collections.ConfigDict(config.to_dict())  # a copy; the caller's stays as it is
  if config.train.eval_num_examples:
    eval_config.eval.num_examples = config.train.eval_num_examples
  evaluator = Evaluator(eval_config)

  def evaluate_params(params: Any, step: int) -> dict[str, float]:
    result = evaluator.run(evaluator.variables(params), step=step, verbose=False)
    if jax.process_index() == 0:
      print(f"eval at step {step}: {summary(result)}, {result['seconds']:.1f} s", flush=True)
    return scalars(result)

  return evaluate_params


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
  mesh_lib.check_batch_divisible(config.input.eval_batch_size, mesh_lib.make_mesh(), "input.eval_batch_size")
  params, step = task.restore_params(config, workdir)
  evaluator = Evaluator(config)
  variables = evaluator.variables(params)
  result = evaluator.run(variables, step=step, verbose=verbose)
  if verbose:  # before writing: a failed write must not lose the result
    print(f"checkpoint step {step} of {checkpoint_io.checkpoint_dir(workdir)}, {result['num_examples']} "
          f"examples of {config.dataset.name} ({config.dataset.eval_split}):", flush=True)
    print(format_table(result["rows"], row_titles(config)), flush=True)
  if jax.process_index() == 0:
    outputs.write_metrics(workdir, result)
    if config.eval.pictures:
      classification_pictures.write_pictures(config, workdir, evaluator.model, variables, verbose=verbose)
  return result
