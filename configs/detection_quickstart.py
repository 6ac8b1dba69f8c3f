"""Detection quickstart: OverFeat detection on the quickstart classifier (SPEC A6; CPU, minutes).

  python train.py --config configs/quickstart.py --workdir workdirs/quickstart
  python train.py --config configs/detection_quickstart.py --workdir workdirs/detection
  python evaluate.py --config configs/detection_quickstart.py --workdir workdirs/detection

The first command trains the classifier this one starts from (detection.classifier_workdir): its
feature extractor stays frozen; its FC layers, grown by a background output, train together with an
SCR box regressor on whole `digits_in_scenes/detection` images (128-192 px, 0-5 digits of 16-64 px),
with the most offending and random background windows mined in every step. evaluate.py runs the fine
grid at every test scale, merges each class's boxes greedily (1 - IoU match score) and prints COCO
AP@[.5:.95], AP@0.5, VOC07 AP and the per-class table (README, "Detection (OverFeat)").
"""

import os

from overfeat_jax import shipped_configs


def _quickstart_config():
  """configs/quickstart.py's config, from beside this file (a checkout or an install)."""
  return shipped_configs.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))


def get_config():
  config = _quickstart_config()  # the classifier's model (its checkpoint must match)
  config.task = "detection"
  config.dataset.name = "digits_in_scenes/detection"  # 4,000 train / 1,000 test images
  config.detection.classifier_workdir = "workdirs/quickstart"
  # Whole images at their own size (128-192 px a side, at most 1.5:1): short side 128 unless the
  # long side would pass 192. Digits are then 11-64 px against the 58-px field of view.
  config.input.min_size = 128
  config.input.max_size = 192
  config.input.aspect_buckets = (1.25, 2.0)
  config.input.batch_size = 8
  config.input.eval_batch_size = 16
  config.input.random_flip = False  # handwriting is not mirror-symmetric (as the classifier)
  # Two scales: 1x for the large digits, 1.75x so that the small ones fill enough of a window (a
  # 10.7-px digit at 128 is 18.7 px at 224, over min_box_fraction x 58 px: every digit is a positive
  # at some scale). (128, 176) before: main job AP@0.5 47.9% -> 56.2% for ~100 s more of training
  # and evaluation (README, "Detection (OverFeat)").
  config.detection.train_scales = (128, 224)
  # Testing also at 96 (0.75x) shows the largest digits (48-64 px, hardly inside one 58-px window at
  # 1x, so their boxes come from windows inside them) whole: AP@0.5 66.6% -> 68.2% for ~14% more
  # network time in evaluation. Training at 96 as well did worse (67.0%; README, "Detection
  # (OverFeat)").
  config.detection.test_scales = (96, 128, 224)
  config.detection.train_fine_grid = False  # the coarse grid: ~4x faster steps (tasks/detection.py)
  # A window is a digit only when it holds >= 80% of its box, and background when it holds < 50% of
  # every box (base: 0.5 / 0.2): windows that cut a digit learn to say "background" rather than fire
  # for it, which leaves fewer stray boxes to merge (main job: AP@0.5 42.5% -> 47.9%; README,
  # "Detection (OverFeat)").
  config.detection.min_coverage = 0.8
  config.detection.min_box_fraction = 0.3
  config.detection.max_background_coverage = 0.5
  config.detection.hard_negatives = 32
  config.detection.random_negatives = 32
  config.detection.min_window_score = 0.1
  # The 64 most probable windows per class and image enter its merge (base: 256). More make more
  # duplicates of each digit, and a cluster of weak windows sums to a high confidence (with the
  # paper's pair average, on the first 320 test images: AP@0.5 31.6% with 256, 38.5% with 64, 38.8%
  # with 32); with the weighted average below, 32 gave 1.1 points less than 64 and 96 only 0.3
  # more, for a larger merge (README, "Detection (OverFeat)").
  config.detection.max_boxes_per_class = 64
  # Only the new layers train, from the classifier's FC layers and zeros: 0.02 rather than 0.01
  # (main job, seeds 0 / 1: AP@0.5 59.9% / 58.7% -> 61.6% / 61.9%); now 0.04 halved after steps
  # 100, 150, 200 and 250 (epochs of 499 steps) rather than 0.02 throughout: AP@0.5 68.2% -> 68.4%,
  # AP@[.5:.95] 27.2% -> 28.6% (README, "Detection (OverFeat)").
  config.optimizer.learning_rate = 0.04
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.halve_at_epochs = (0.2, 0.3, 0.4, 0.5)
  config.train.num_epochs = 0
  config.train.max_steps = 300
  config.train.log_every = 25
  config.train.checkpoint_every = 300
  config.train.eval_every = 0  # evaluate.py after training
  config.train.eval_num_examples = 0
  # The merge (ops/merge.py): 1 - IoU, so pairs with IoU >= 0.5 merge, most overlapping first, into
  # their confidence-weighted mean: a merged box is the score-weighted mean of its windows' boxes.
  # The paper's pair average lets the window merged last pull the box halfway to it, so it only
  # worked with a tight threshold (0.2) and duplicates suppressed after it (detection.merged_nms_iou
  # 0.5), which a 0.5 merge makes moot: same windows, AP@0.5 61.9% -> 65.5%, AP@[.5:.95] 23.6% ->
  # 25.8% (README, "Detection (OverFeat)").
  config.eval.merge_score = "overlap"
  config.eval.merge_average = "weighted"
  config.eval.merge_threshold = 0.5
  return config
