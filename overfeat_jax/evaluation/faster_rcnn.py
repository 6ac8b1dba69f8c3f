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
Everything goes to <workdir>/eval/metrics.json ("recall": {"N": {"IoU": recall}}). Pictures
(config.eval.pictures > 0) come after, in a pass of their own: per image, the ground truth, the top
faster_rcnn.test.picture_proposals proposals and the detections scoring >= test.picture_score,
side by side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from overfeat_jax import checkpoint_io
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.data import buckets, detection, pipeline, transforms
from overfeat_jax.data.class_names import class_names
from overfeat_jax.data.registry import get_dataset_spec
from overfeat_jax.evaluation import outputs, visualize
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


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = True) -> dict:
  """Restores the newest intact checkpoint in `workdir` and evaluates it on config.dataset.eval_split.

  `config` must have passed `validate_config` (`evaluation.run.run` does both).
  Returns:
    {"checkpoint_step", "dataset", "split", "seconds", **DetectionEvaluator.compute(),
     "proposals": RecallAccumulator.compute()}, also written to <workdir>/eval/metrics.json (with
    detections.json) after the tables are printed; then the pictures.
  Raises:
    CheckpointError: no intact checkpoint in `workdir`, or one of another model. DataError /
    ConfigError: data that cannot be evaluated. OverfeatError / WorkdirError: a file cannot be written.
  """
  model = task.model_from_config(config)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_divisible(config.input.eval_batch_size, mesh, "input.eval_batch_size")
  params, step = task.restore_params(config, workdir)
  params = jax.device_put(params, mesh_lib.replicated(mesh))
  test = config.faster_rcnn.test
  predict = jax.jit(task.make_predict_fn(config, model, num_proposals=max(test.recall_proposals)),
                    in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)),
                    out_shardings=mesh_lib.batch_sharded(mesh))
  loader = detection.detection_eval_loader(config, process_index=jax.process_index(),
                                           process_count=jax.process_count())
  spec = get_dataset_spec(config.dataset.name)
  names = class_names(pipeline.load_source(config.dataset, config.dataset.eval_split), spec)
  evaluator = DetectionEvaluator(names)
  recall = RecallAccumulator(test.recall_proposals, test.recall_ious)
  seen, start = 0, time.time()
  for i, batch in enumerate(loader):
    out = _host_local(predict(params, mesh_lib.to_global(batch, mesh)), mesh)
    evaluator.add(out, batch)
    recall.add(out["proposal_boxes"], out["proposal_valid"], batch)
    seen += int(np.sum(batch["valid"]))
    if verbose and (i == 0 or i % 20 == 0 or i == len(loader) - 1):
      print(f"eval: {seen}/{loader.num_examples} images, {seen / max(time.time() - start, 1e-9):.1f} "
            "img/s", flush=True)
  result = {"checkpoint_step": int(step), "dataset": config.dataset.name,
            "split": config.dataset.eval_split, "seconds": round(time.time() - start, 1),
            **evaluator.compute(), "proposals": recall.compute()}
  if verbose:  # before writing: a failed write must not lose the result
    print(f"checkpoint step {step} of {checkpoint_io.checkpoint_dir(workdir)}, "
          f"{result['num_images']} images of {config.dataset.name} ({config.dataset.eval_split}):",
          flush=True)
    print(format_report(result), flush=True)
    print("Recall of the ground truth by the top-N test proposals:", flush=True)
    print(format_recall(result["proposals"]), flush=True)
  if jax.process_index() == 0:
    write_eval_files(workdir, result, evaluator.detections())
    if config.eval.pictures:
      write_pictures(config, workdir, model, params, names, verbose=verbose)
  return result


# ----------------------------------------------------------------------------------------------
# Pictures.

def detection_panels(image: np.ndarray, *, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                     proposals: np.ndarray, proposal_scores: np.ndarray, boxes: np.ndarray,
                     scores: np.ndarray, labels: np.ndarray, names: Sequence[str],
                     score_threshold: float) -> Figure:
  """Ground truth | proposals | detections over one image (all boxes in its pixels), one figure.

  Args:
    image: [H, W, 3] uint8. gt_boxes [G, 4], gt_labels [G]; proposals [P, 4] with their objectness
    probabilities [P]; boxes [D, 4], scores [D], labels [D] the detections; names: the K classes.
  """
  panels = [
      visualize.draw_detections(image, gt_boxes, gt_labels, None, names),
      visualize.draw_detections(image, proposals, np.zeros(len(proposals), np.int64),
                                proposal_scores, ("object",), max_boxes=len(proposals)),
      visualize.draw_detections(image, boxes, labels, scores, names,
                                score_threshold=score_threshold),
  ]
  titles = [f"ground truth ({len(gt_boxes)})", f"top {len(proposals)} proposals",
            f"detections (score >= {score_threshold:g})"]
  return visualize.panel_grid(panels, ncols=3, titles=titles)


def _pictures(config: ml_collections.ConfigDict, model: Any, params: Any,
              names: Sequence[str]) -> Iterator[tuple[str, Figure]]:
  """(name, figure) of each of the first config.eval.pictures images of the eval split."""
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

