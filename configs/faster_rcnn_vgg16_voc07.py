"""Faster R-CNN, VGG-16, PASCAL VOC 2007 trainval -> test (SPEC B1-B6; the paper's 69.9% mAP row).

  # once: the dataset (TFDS) and torchvision's ImageNet VGG-16 as safetensors (models/pretrained.py)
  tfds build voc/2007 --file_format=array_record
  python train.py --config configs/faster_rcnn_vgg16_voc07.py --workdir workdirs/frcnn_vgg16_voc07 \
      --config.faster_rcnn.backbone_weights=/path/to/vgg16_imagenet.safetensors
  python evaluate.py --config configs/faster_rcnn_vgg16_voc07.py --workdir workdirs/frcnn_vgg16_voc07

The paper's recipe (SPEC B5): approximate joint training, one image per mini-batch with its short side
600 (long side <= 1000), SGD momentum 0.9, weight decay 5e-4, lr 1e-3 for 60k mini-batches then 1e-4
for 20k (VOC07 trainval has 5,011 images: 12 + 4 epochs), 256 anchors and 128 RoIs per image,
proposals 12000 -> 2000 in training and 6000 -> 300 at test, RoI pooling 7x7, two 4096 FC layers
with dropout 0.5 (`paper_faster_rcnn_config`); conv1_1 ... conv2_2 frozen (models/backbones.py).
"""

from overfeat_jax.config import paper_faster_rcnn_config


def get_config():
  config = paper_faster_rcnn_config()
  f = config.faster_rcnn
  f.backbone = "vgg16"
  f.backbone_init = "torchvision"
  f.backbone_weights = "vgg16_imagenet.safetensors"  # --config.faster_rcnn.backbone_weights=...
  f.rpn_channels = 512
  f.roi_size = 7
  f.head_hidden = 4096
  return config
