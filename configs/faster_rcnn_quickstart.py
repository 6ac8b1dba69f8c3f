"""Faster R-CNN quickstart: a tiny detector on the embedded "digits in scenes" detection data (CPU, minutes).

  python train.py --config configs/faster_rcnn_quickstart.py --workdir workdirs/faster_rcnn_quickstart
  python evaluate.py --config configs/faster_rcnn_quickstart.py --workdir workdirs/faster_rcnn_quickstart

The paper's detector (SPEC Part B) shrunk for 0-5 handwritten digits of 16-64 px in 128-192 px scenes:
the `tiny` backbone (four 3x3 convs 32-64-128-128, stride 8), anchors of 16, 32 and 64 px, RoIAlign
7x7, a 256-wide head, fewer proposals; approximate joint training from scratch with He init (no
ImageNet weights exist for this net, and N(0, 0.01^2) barely moves a small net in minutes).
"""

from overfeat_jax.config import base_config


def get_config():
  config = base_config()
  config.task = "faster_rcnn"
  config.dataset.name = "digits_in_scenes/detection"  # 4,000 train / 1,000 test scenes
  config.dataset.num_classes = 10
  # Images keep their size: 128-192 px on each side, short side to 128 (at most 1.5x smaller).
  config.input.min_size = 128
  config.input.max_size = 192
  config.input.aspect_buckets = (1.25, 2.0)  # canvases 160x160 and 128x192 / 192x128
  # Handwriting is not mirror-symmetric (a mirrored 2 reads like a 6): no flips.
  config.input.random_flip = False
  config.input.batch_size = 8
  config.input.eval_batch_size = 16
  config.input.max_boxes = 8  # at most 5 digits per image
  config.model.width = 1.0
  config.model.init = "he"
  config.model.dropout_rate = 0.0  # a head this small on this much data does not over-fit in minutes
  f = config.faster_rcnn
  f.backbone = "tiny"
  f.backbone_init = "none"
  f.training = "approximate_joint"
  f.anchor_sizes = (16, 32, 64)  # the digits' long sides are 16-64 px, times 0.67-1 after resizing
  f.anchor_ratios = (0.5, 1.0, 2.0)
  f.rpn_channels = 0  # the backbone's 128
  f.rpn_lambda = 10.0  # the paper's lambda and N_reg (20 x 20 positions on a 160x160 canvas)
  f.rpn_reg_normalizer = "positions"
  f.train_pre_nms = 2000  # a 160x160 canvas has 20 x 20 x 9 = 3,600 anchors
  f.train_post_nms = 300
  f.proposal_min_size = 4.0
  f.roi_op = "align"
  f.roi_size = 7
  f.head_hidden = 256
  f.num_rois = 64
  f.bg_iou = (0.0, 0.5)  # end-to-end training (SPEC B4)
  f.test.pre_nms = 1000
  f.test.post_nms = 100
  f.test.recall_proposals = (10, 50, 100, 300)
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.1
  config.optimizer.halve_at_epochs = (3,)
  config.optimizer.decay_factor = 0.1
  config.train.num_epochs = 4  # 500 steps of 8 per epoch
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  return config
