"""Faster R-CNN, VGG-16, COCO 2017 train -> val (SPEC B1-B6; the paper's COCO rows: 42.1% AP@0.5,
21.5% AP@[.5:.95] on test-dev).

  tfds build coco/2017 --file_format=array_record
  python train.py --config configs/faster_rcnn_vgg16_coco.py --workdir workdirs/frcnn_vgg16_coco \
      --config.faster_rcnn.backbone_weights=/path/to/vgg16_imagenet.safetensors
  python evaluate.py --config configs/faster_rcnn_vgg16_coco.py --workdir workdirs/frcnn_vgg16_coco

The VOC recipe (`paper_faster_rcnn_config`) with the paper's COCO changes (its section 4.2): anchors
add 64^2 (4 sizes x 3 ratios = 12), background RoIs IoU [0, 0.5), 8 GPUs of one image each (a global
batch of 8), lr 3e-3 for 240k mini-batches then 3e-4 for 80k (train2017's 118k images: 16 + 6
epochs). Crowd boxes are not trained on (they are COCO's ignore regions in the evaluation).
"""

from overfeat_jax.config import paper_faster_rcnn_config


def get_config():
  config = paper_faster_rcnn_config()
  config.dataset.name = "coco/2017"
  config.dataset.num_classes = 80
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"  # val2017; test-dev labels are not public
  config.input.batch_size = 8
  config.input.eval_batch_size = 8
  config.input.max_boxes = 100  # a few COCO images hold more: they keep their 100 largest
  config.optimizer.learning_rate = 3e-3
  config.optimizer.halve_at_epochs = (16,)
  config.optimizer.decay_factor = 0.1
  config.train.num_epochs = 22
  f = config.faster_rcnn
  f.backbone = "vgg16"
  f.backbone_init = "torchvision"
  f.backbone_weights = "vgg16_imagenet.safetensors"  # --config.faster_rcnn.backbone_weights=...
  f.rpn_channels = 512
  f.roi_size = 7
  f.head_hidden = 4096
  f.anchor_sizes = (64, 128, 256, 512)
  f.bg_iou = (0.0, 0.5)
  return config
