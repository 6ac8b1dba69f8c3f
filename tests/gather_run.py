"""One process of tests/test_multihost.py's detection-gather check: `python gather_run.py PORT ID`.

Process ID adds its share of a fixed set of synthetic images (ground truth and detections) to a
DetectionEvaluator and a RecallAccumulator, gathers, and prints the computed metrics as JSON.
"""

import json
import sys

import jax


def synthetic_batch(image_ids):
  import numpy as np
  rng = np.random.default_rng(0)  # the same numbers in every process; each keeps its images
  n, m, d = 6, 3, 5
  gt = rng.uniform(0, 40, (n, m, 2))
  boxes = np.concatenate([gt, gt + rng.uniform(5, 30, (n, m, 2))], axis=-1)
  preds = np.concatenate([boxes, boxes[:, :2] + rng.uniform(-3, 3, (n, 2, 4))], axis=1)  # [n, 5, 4]
  keep = np.isin(np.arange(n), image_ids)
  batch = {"image_id": np.arange(n), "valid": keep, "original_size": np.full((n, 2), 80),
           "boxes": boxes, "box_labels": rng.integers(0, 3, (n, m)), "box_valid": rng.random((n, m)) < 0.8}
  predictions = {"boxes": preds, "scores": rng.random((n, d)), "classes": rng.integers(0, 3, (n, d)),
                 "valid": rng.random((n, d)) < 0.9}
  return batch, predictions


def metrics(image_ids, gather):
  from overfeat_jax.evaluation.detection import DetectionEvaluator
  from overfeat_jax.evaluation.faster_rcnn import RecallAccumulator
  batch, predictions = synthetic_batch(image_ids)
  evaluator, recall = DetectionEvaluator(["a", "b", "c"]), RecallAccumulator((2, 5), (0.5, 0.7))
  evaluator.add(predictions, batch)
  recall.add(predictions["boxes"], predictions["valid"], batch)
  if gather:
    evaluator.gather()
    recall.gather()
  result = evaluator.compute()
  return {"num_images": result["num_images"], "num_ground_truth": result["num_ground_truth"],
          "num_detections": result["num_detections"], "stats": result["coco"]["stats"],
          "mAP07": result["voc"]["mAP07"], "recall": recall.compute()}


if __name__ == "__main__":
  port, process_id = int(sys.argv[1]), int(sys.argv[2])
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  print("RESULT " + json.dumps(metrics([0, 2, 4] if process_id == 0 else [1, 3, 5], gather=True)))
