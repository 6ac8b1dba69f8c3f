"""Evaluation: dense classification (SPEC A4) and detection metrics (SPEC B6).

`coco_evaluate` (COCO's 12 numbers by pycocotools) and `voc_ap` (VOC 2007 11-point / area AP) are
the public detection metrics; `evaluation.detection.DetectionEvaluator` accumulates detector outputs.
"""

from overfeat_jax.evaluation.coco import coco_evaluate
from overfeat_jax.evaluation.voc import voc_ap

__all__ = ["coco_evaluate", "voc_ap"]
