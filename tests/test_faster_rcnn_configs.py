"""The paper's Faster R-CNN configs (VGG-16 / ZF on VOC 2007, VGG-16 on COCO 2017) run end to end on
TFDS mock data: two training steps and an evaluation, with the width multiplier and small proposal
counts so that a CPU manages it; every other setting is the config's own."""

from __future__ import annotations

import json

import pytest
import tensorflow_datasets as tfds

from overfeat_jax.evaluation import run as evaluation
from overfeat_jax.training import loop

from test_config import load_config
from test_detection_data import _write_coco_metadata


@pytest.mark.parametrize("name, num_classes", [("faster_rcnn_vgg16_voc07", 20),
                                               ("faster_rcnn_zf_voc07", 20),
                                               ("faster_rcnn_vgg16_coco", 80)])
def test_paper_config_trains_and_evaluates_on_mock_data(tmp_path, name, num_classes):
  config = load_config(name)
  config.model.width = 1 / 16  # same layers, 1/16 of the channels
  config.faster_rcnn.backbone_init = "none"  # no ImageNet file in the tests
  config.faster_rcnn.rpn_channels = 8
  config.faster_rcnn.head_hidden = 16
  config.faster_rcnn.train_pre_nms, config.faster_rcnn.train_post_nms = 300, 50
  config.faster_rcnn.test.pre_nms, config.faster_rcnn.test.post_nms = 300, 30
  config.faster_rcnn.test.recall_proposals = (10, 30)
  config.faster_rcnn.num_rois = 16
  config.input.min_size, config.input.max_size = 64, 96
  config.input.aspect_buckets = (2.0,)  # one shape bucket: one compiled program
  config.input.batch_size = 2
  config.input.eval_batch_size = 4
  config.input.num_workers = 0  # grain workers would not see mock_data's in-process patch
  config.train.max_steps = 2
  config.train.log_every = 1
  config.eval.num_examples = 4
  workdir = str(tmp_path / name)
  options = {}
  if name.endswith("coco"):
    _write_coco_metadata(str(tmp_path), 8)
    options = {"policy": tfds.testing.MockPolicy.USE_FILES, "data_dir": str(tmp_path)}
  with tfds.testing.mock_data(num_examples=8, **options):
    with pytest.warns(UserWarning):  # mock boxes are repaired / dropped (test_detection_data)
      result = loop.run(config, workdir)
      metrics = evaluation.run(config, workdir, verbose=False)
  assert result.step == 2 and result.stopped_by is None
  records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]
  assert metrics["num_images"] == 4 and len(metrics["per_class"]) == num_classes
  assert set(metrics["proposals"]["recall"]) == {"10", "30"}
  written = json.load(open(f"{workdir}/eval/metrics.json"))
  assert written["coco"]["AP50"] == metrics["coco"]["AP50"]
