"""Faster R-CNN evaluation (SPEC B6): detections through the shared `DetectionEvaluator`, the recall of
the ground truth by the top-N proposals, and pictures of proposals and detections.

One jitted predict function per shape bucket over the device mesh (`tasks.faster_rcnn.predict`)
returns padded detections and the test proposals (as many as the largest N of the recall table, of
which the detector sees the first faster_rcnn.test.post_nms: NMS is greedy in objectness order, so
the first n proposals are those that post_nms = n would give). The host accumulates:
  - detections: `DetectionEvaluator` (COCO AP by pycocotools, VOC07 11-point AP, per-class table,
    <workdir>/eval/detections.json), boxes mapped back to original-image pixels;
  - recall: for each ground-truth box (not difficult, not crowd) and each N of
    faster_rcnn.test.recall_proposals, the best IoU among the image's top-N proposals; a box is
    recalled at IoU t when that is >= t (the paper's recall-vs-proposals analysis, SPEC B6). N above
    the proposals an image has counts all of them.
With faster_rcnn.test.extra_size_factors, each of those sizes is a pass of its own first (its own
loader: the pipeline resizes the images to it; detections only), whose detections are kept per
image id; the main pass then merges each image's detections of every size
(`tasks.faster_rcnn.merge_test_sizes`: per-class NMS, box voting) before the evaluator sees them.
The recall table is the main size's. Everything goes to <workdir>/eval/metrics.json ("recall":
{"N": {"IoU": recall}}). Pictures (config.eval.pictures > 0) come after, in a pass of their own:
per image, the ground truth, the top faster_rcnn.test.picture_proposals proposals and the
detections scoring >= test.picture_score, side by side (the main size's).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from overfeat_jax import checkpoint_io, multihost
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.data import buckets, detection, pipeline, transforms
from overfeat_jax.data.class_names import class_names
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.evaluation import outputs, visualize
from overfeat_jax.evaluation.coco import UNDEFINED
from overfeat_jax.evaluation.detection import DetectionEvaluator, format_report, write_eval_files
from overfeat_jax.ops.boxes import box_iou
from overfeat_jax.tasks import faster_rcnn as task

class RecallAccumulator:
  """Best IoU of each ground-truth box with the top-N proposals, for several N (module docstring)."""

  def __init__(self, num_proposals: Sequence[int], ious: Sequence[float]):
    self.num_proposals = tuple(int(n) for n in num_proposals)
    self.ious = tuple(float(t) for t in ious)
    self.best: list[np.ndarray] = []  # one [G, len(num_proposals)] per image
    self.proposals_per_image: list[int] = []

  def add(self, proposal_boxes: Any, proposal_valid: Any, batch: Mapping[str, Any]) -> None:
    """proposal_boxes [B, N, 4] / proposal_valid [B, N] (descending objectness), and the batch's
    ground truth (boxes [B, M, 4], box_valid, difficult, iscrowd [B, M], valid [B])."""
    proposal_boxes = np.asarray(proposal_boxes, np.float64)
    proposal_valid = np.asarray(proposal_valid, bool)
    boxes = np.asarray(batch["boxes"], np.float64)
    keep = np.asarray(task.training_boxes({k: np.asarray(batch[k]) for k in
                                           ("box_valid", "difficult", "iscrowd") if k in batch}))
    examples = np.asarray(batch.get("valid", np.ones(len(boxes), bool)), bool)
    for i in np.flatnonzero(examples):
      valid = proposal_valid[i]
      self.proposals_per_image.append(int(valid.sum()))
      gt = boxes[i][keep[i]]  # [G, 4]
      iou = box_iou(gt, proposal_boxes[i]) if len(gt) else np.zeros((0, len(valid)))
      iou = np.where(valid[None, :], iou, 0.0)  # [G, N]; padding overlaps nothing
      running = np.maximum.accumulate(iou, axis=1) if iou.shape[1] else np.zeros((len(gt), 1))
      columns = [min(n, running.shape[1]) - 1 for n in self.num_proposals]
      self.best.append(running[:, columns] if running.shape[1] else np.zeros((len(gt), len(columns))))

  def gather(self) -> None:
    """Makes this accumulator hold every process's images (a collective, as
    `DetectionEvaluator.gather`; nothing happens with one process)."""
    if jax.process_count() == 1:
      return
    mine = json.dumps([[b.tolist() for b in self.best], self.proposals_per_image]).encode()
    parts = [json.loads(part) for part in multihost.gather_bytes(mine)]
    width = len(self.num_proposals)
    self.best = [np.asarray(b, np.float64).reshape(-1, width) for best, _ in parts for b in best]
    self.proposals_per_image = [n for _, counts in parts for n in counts]

  def compute(self) -> dict[str, Any]:
    """{"num_ground_truth", "mean_proposals" (valid per image), "recall": {"N": {"t": recall}}}; recall
    is -1 when there is no ground truth."""
    best = np.concatenate(self.best) if self.best else np.zeros((0, len(self.num_proposals)))
    recall = {str(n): {f"{t:g}": (float(np.mean(best[:, j] >= t)) if len(best) else -1.0)
                       for t in self.ious} for j, n in enumerate(self.num_proposals)}
    return {"num_ground_truth": int(len(best)),
            "mean_proposals": float(np.mean(self.proposals_per_image)) if self.proposals_per_image
            else 0.0,
            "recall": recall}


def format_recall(result: Mapping[str, Any]) -> str:
  """The recall-vs-proposals table (percent), one row per N."""
  recall = result["recall"]
  ious = list(next(iter(recall.values())))
  head = ["proposals"] + [f"recall@IoU {t}" for t in ious]
  rows = [[n] + [("n/a" if r[t] < 0 else f"{100 * r[t]:.2f}") for t in ious] for n, r in recall.items()]
  widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
  lines = [" | ".join(f"{c:>{w}}" for c, w in zip(head, widths)), "-+-".join("-" * w for w in widths)]
  lines += [" | ".join(f"{c:>{w}}" for c, w in zip(row, widths)) for row in rows]
  lines.append(f"{result['num_ground_truth']} ground-truth boxes; {result['mean_proposals']:.1f} "
               "test proposals per image on average")
  return "\n".join(lines)


def _host_local(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """This process's rows of batch-sharded global arrays, as numpy."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.device_get(multihost_utils.global_array_to_host_local_array(
      tree, mesh, jax.sharding.PartitionSpec(mesh_lib.DATA_AXIS)))


class Evaluator:
  """The evaluation of config's eval split (its first config.eval.num_examples images), built once:
  the model, the mesh, the jitted predict function, the loader and the class names; `run(params)`
  evaluates a parameter set (evaluate.py once, training every train.eval_every steps)."""

  def __init__(self, config: ml_collections.ConfigDict):
    extra_configs = task.extra_test_sizes(config)
    config = task.test_input_config(config)  # images at the test sizes (faster_rcnn.test.size_factor)
    self.config = config
    self.model = task.model_from_config(config)
    self.mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_divisible(config.input.eval_batch_size, self.mesh, "input.eval_batch_size")
    test = config.faster_rcnn.test
    shardings = {"in_shardings": (mesh_lib.replicated(self.mesh), mesh_lib.batch_sharded(self.mesh)),
                 "out_shardings": mesh_lib.batch_sharded(self.mesh)}
    self.predict = jax.jit(
        task.make_predict_fn(config, self.model, num_proposals=max(test.recall_proposals)),
        **shardings)
    loader = functools.partial(detection.detection_eval_loader, process_index=jax.process_index(),
                               process_count=jax.process_count())
    self.loader = loader(config)
    # More test sizes: the same images resized by the pipeline to each, their detections merged.
    self.extra_sizes = [(c.input.min_size, loader(c)) for c in extra_configs]
    self.predict_detections = jax.jit(task.make_predict_fn(config, self.model), **shardings)
    self.merge = jax.jit(task.merge_test_sizes(config))
    spec = get_dataset_spec(config.dataset.name)
    self.names = class_names(pipeline.load_source(config.dataset, config.dataset.eval_split), spec)

  def params(self, params: Any) -> Any:
    """`params` replicated over the mesh."""
    return jax.device_put(params, mesh_lib.replicated(self.mesh))

  def run(self, params: Any, *, step: int, verbose: bool = True
          ) -> tuple[dict[str, Any], DetectionEvaluator]:
    """(result, the filled DetectionEvaluator) of `params` (replicated, `self.params`): {
    "checkpoint_step": step, "dataset", "split", "seconds", **DetectionEvaluator.compute(),
    "proposals": RecallAccumulator.compute()}."""
    test = self.config.faster_rcnn.test
    evaluator = DetectionEvaluator(self.names)
    recall = RecallAccumulator(test.recall_proposals, test.recall_ious)
    start = time.time()
    extra = [self._detections_by_image(params, loader, f"short side {size}: " if verbose else "")
             for size, loader in self.extra_sizes]
    seen = 0
    for i, batch in enumerate(self.loader):
      out = _host_local(self.predict(params, mesh_lib.to_global(batch, self.mesh)), self.mesh)
      if extra:
        out = {**out, **self._merged(out, batch, extra)}
      evaluator.add(out, batch)
      recall.add(out["proposal_boxes"], out["proposal_valid"], batch)
      seen += int(np.sum(batch["valid"]))
      if verbose and (i == 0 or i % 20 == 0 or i == len(self.loader) - 1):
        print(f"eval: {seen}/{self.loader.num_examples} images, "
              f"{seen / max(time.time() - start, 1e-9):.1f} img/s", flush=True)
    evaluator.gather()  # each process evaluated its share of the images
    recall.gather()
    result = {"checkpoint_step": int(step), "dataset": self.config.dataset.name,
              "split": self.config.dataset.eval_split, "seconds": round(time.time() - start, 1),
              **evaluator.compute(), "proposals": recall.compute()}
    return result, evaluator

  def _detections_by_image(self, params: Any, loader: Any, progress: str
                           ) -> dict[int, dict[str, np.ndarray]]:
    """image id -> the detections of one test size (`DETECTION_KEYS`, [D] each; boxes in ORIGINAL
    pixels); `progress`: a prefix for progress lines, "" for none."""
    found, seen, start = {}, 0, time.time()
    for i, batch in enumerate(loader):
      out = _host_local(self.predict_detections(params, mesh_lib.to_global(batch, self.mesh)),
                        self.mesh)
      original = task.rescale_detections(out, batch["scale"], np.ones_like(batch["scale"]))
      for j in np.flatnonzero(batch["valid"]):
        found[int(batch["image_id"][j])] = {k: v[j] for k, v in original.items()}
      seen += int(np.sum(batch["valid"]))
      if progress and (i == 0 or i % 20 == 0 or i == len(loader) - 1):
        print(f"eval: {progress}{seen}/{loader.num_examples} images, "
              f"{seen / max(time.time() - start, 1e-9):.1f} img/s", flush=True)
    return found

  def _merged(self, out: Mapping[str, Any], batch: Mapping[str, Any],
              extra: Sequence[Mapping[int, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The batch's detections (`out`, at test.size_factor) merged with those of the other sizes
    (`extra`, by image id, original pixels), in the batch's pixels."""
    parts = [{k: np.asarray(out[k]) for k in task.DETECTION_KEYS}]
    blank = {k: np.zeros_like(v[0]) for k, v in parts[0].items()}  # no detections
    ones = np.ones_like(batch["scale"])
    for found in extra:
      rows = [found.get(int(image_id), blank) if real else blank
              for image_id, real in zip(batch["image_id"], batch["valid"])]
      stacked = {k: np.stack([r[k] for r in rows]) for k in task.DETECTION_KEYS}
      parts.append(task.rescale_detections(stacked, ones, batch["scale"]))
    merged = self.merge({k: np.concatenate([p[k] for p in parts], axis=1) for k in task.DETECTION_KEYS})
    return jax.device_get(merged)


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = True) -> dict:
  """Restores the newest intact checkpoint in `workdir` and evaluates it on config.dataset.eval_split.

  `config` must have passed `validate_config` (`evaluation.run.run` does both).
  Returns:
    `Evaluator.run`'s result, also written to <workdir>/eval/metrics.json (with detections.json)
    after the tables are printed; then the pictures.
  Raises:
    CheckpointError: no intact checkpoint in `workdir`, or one of another model. DataError /
    ConfigError: data that cannot be evaluated. OverfeatError / WorkdirError: a file cannot be written.
  """
  params, step = task.restore_params(config, workdir)
  evaluator = Evaluator(config)
  params = evaluator.params(params)
  result, detections = evaluator.run(params, step=step, verbose=verbose)
  if verbose:  # before writing: a failed write must not lose the result
    print(f"checkpoint step {step} of {checkpoint_io.checkpoint_dir(workdir)}, "
          f"{result['num_images']} images of {config.dataset.name} ({config.dataset.eval_split}):",
          flush=True)
    print(format_report(result), flush=True)
    print("Recall of the ground truth by the top-N test proposals:", flush=True)
    print(format_recall(result["proposals"]), flush=True)
  if jax.process_index() == 0:
    write_eval_files(workdir, result, detections.detections())
    if config.eval.pictures:
      write_pictures(config, workdir, evaluator.model, params, evaluator.names, verbose=verbose)
  return result


def _percent(value: float) -> float:
  return float(value) if value == UNDEFINED else 100.0 * float(value)


def scalars(result: dict[str, Any]) -> dict[str, float]:
  """The logged metrics of a result, in percent (-1: no ground truth): COCO AP@0.5 first, then
  AP@[.5:.95], the VOC07 11-point and area mAP, and each recall-vs-proposals entry."""
  values = {"eval/AP50": _percent(result["coco"]["AP50"]), "eval/AP": _percent(result["coco"]["AP"]),
            "eval/mAP_voc07": _percent(result["voc"]["mAP07"]),
            "eval/mAP_voc": _percent(result["voc"]["mAP"])}
  for n, by_iou in result["proposals"]["recall"].items():
    for iou, value in by_iou.items():
      values[f"eval/recall_iou{iou}/top{n}"] = _percent(value)
  return values


def summary(result: dict[str, Any]) -> str:
  """The headline in words, e.g. 'AP@0.5 71.23%, AP@[.5:.95] 40.06%, VOC07 mAP 70.51% on 1000
  images of test'."""
  coco, voc = result["coco"], result["voc"]
  return (f"AP@0.5 {_percent(coco['AP50']):.2f}%, AP@[.5:.95] {_percent(coco['AP']):.2f}%, VOC07 mAP "
          f"{_percent(voc['mAP07']):.2f}% on {result['num_images']} images of {result['split']}")


def periodic_evaluation(config: ml_collections.ConfigDict) -> Callable[[Any, int], dict[str, float]]:
  """The evaluation training runs every config.train.eval_every steps: `Evaluator` on the first
  config.train.eval_num_examples images (0: config.eval.num_examples') of the eval split, built now;
  each call prints one line on process 0 and returns `scalars`."""
  eval_config = ml_collections.ConfigDict(config.to_dict())  # a copy; the caller's stays as it is
  if config.train.eval_num_examples:
    eval_config.eval.num_examples = config.train.eval_num_examples
  evaluator = Evaluator(eval_config)

  def evaluate_params(params: Any, step: int) -> dict[str, float]:
    result, _ = evaluator.run(params, step=step, verbose=False)
    if jax.process_index() == 0:
      print(f"eval at step {step}: {summary(result)}, {result['seconds']:.1f} s", flush=True)
    return scalars(result)

  return evaluate_params


# ----------------------------------------------------------------------------------------------
# Pictures.

def detection_panels(image: np.ndarray, *, gt_boxes: np.ndarray | None, gt_labels: np.ndarray | None,
                     proposals: np.ndarray, proposal_scores: np.ndarray, boxes: np.ndarray,
                     scores: np.ndarray, labels: np.ndarray, names: Sequence[str],
                     score_threshold: float) -> Figure:
  """Ground truth | proposals | detections over one image (all boxes in its pixels), one figure.

  Args:
    image: [H, W, 3] uint8. gt_boxes [G, 4], gt_labels [G] (both None for an image without ground
    truth, a prediction: no ground-truth panel); proposals [P, 4] with their objectness
    probabilities [P]; boxes [D, 4], scores [D], labels [D] the detections; names: the K classes.
  """
  panels, titles = [], []
  if gt_boxes is not None:
    panels.append(visualize.draw_detections(image, gt_boxes, gt_labels, None, names))
    titles.append(f"ground truth ({len(gt_boxes)})")
  panels += [
      visualize.draw_detections(image, proposals, np.zeros(len(proposals), np.int64),
                                proposal_scores, ("object",), max_boxes=len(proposals)),
      visualize.draw_detections(image, boxes, labels, scores, names,
                                score_threshold=score_threshold),
  ]
  titles += [f"top {len(proposals)} proposals", f"detections (score >= {score_threshold:g})"]
  return visualize.panel_grid(panels, ncols=len(panels), titles=titles)


def _pictures(config: ml_collections.ConfigDict, model: Any, params: Any,
              names: Sequence[str]) -> Iterator[tuple[str, Figure]]:
  """(name, figure) of each of the first config.eval.pictures images of the eval split."""
  config = task.test_input_config(config)
  spec = get_dataset_spec(config.dataset.name)
  source = pipeline.load_source(config.dataset, config.dataset.eval_split)
  inp = config.input
  bounds = tuple(inp.aspect_buckets)
  to_canvas = detection.DetectionTransform(
      spec=spec, canvases=buckets.detection_canvases(bounds, inp.min_size, inp.max_size),
      min_size=inp.min_size, max_size=inp.max_size, max_boxes=inp.max_boxes)
  normalize = transforms.NormalizeBatch(mean=tuple(inp.mean), std=tuple(inp.std))
  # The replicated parameters' copy on this process's first device (no other host takes part).
  params = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, params)
  predict = jax.jit(task.make_predict_fn(config, model))
  shown = config.faster_rcnn.test.picture_proposals
  for index in range(min(config.eval.pictures, len(source))):
    record = source[index]
    example = transforms.decode_example(record, spec)
    bucket = buckets.bucket_index(*example["image"].shape[:2], bounds)
    batch = normalize.map({k: np.asarray(v)[None] for k, v in
                           to_canvas.map((index, record, bucket, False)).items()})
    out = jax.device_get(predict(params, batch))
    sy, sx = batch["scale"][0]
    to_original = np.array([sx, sy, sx, sy], np.float32)
    kept = out["valid"][0]
    proposals = out["proposal_valid"][0][:shown]
    yield f"{index:05d}", detection_panels(
        example["image"], gt_boxes=example["boxes"], gt_labels=example["box_labels"],
        proposals=out["proposal_boxes"][0][:shown][proposals] / to_original,
        proposal_scores=out["proposal_scores"][0][:shown][proposals],
        boxes=out["boxes"][0][kept] / to_original, scores=out["scores"][0][kept],
        labels=out["classes"][0][kept], names=names,
        score_threshold=config.faster_rcnn.test.picture_score)


def write_pictures(config: ml_collections.ConfigDict, workdir: str, model: Any, params: Any,
                   names: Sequence[str], *, verbose: bool = True) -> list[str]:
  """Writes the pictures of the first config.eval.pictures images of config.dataset.eval_split to
  `workdir/eval/pictures/` (module docstring); returns the paths.

  Raises:
    WorkdirError: a picture cannot be written (names the file).
  """
  return outputs.write_pictures(workdir, _pictures(config, model, params, names), verbose=verbose)

