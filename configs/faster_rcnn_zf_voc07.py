"""Faster R-CNN, ZF net, PASCAL VOC 2007 trainval -> test (SPEC B1-B6; the paper's 59.9% mAP row).

  tfds build voc/2007 --file_format=array_record
  python train.py --config configs/faster_rcnn_zf_voc07.py --workdir workdirs/frcnn_zf_voc07
  python evaluate.py --config configs/faster_rcnn_zf_voc07.py --workdir workdirs/frcnn_zf_voc07

The paper's VOC recipe (`paper_faster_rcnn_config`: schedule, counts, approximate joint training)
with the ZF backbone: a 256-wide RPN conv, 6x6 RoI pooling and two 4096 FC layers. The paper starts
ZF from ImageNet weights; torchvision has none for ZF (and our classifiers are OverFeat nets), so
this config starts from N(0, 0.01^2): expect less than the paper's 59.9% unless ZF weights are
imported.
"""

from overfeat_jax.config import paper_faster_rcnn_config


def get_config():
  config = paper_faster_rcnn_config()
  f = config.faster_rcnn
  f.backbone = "zf"
  f.backbone_init = "none"
  f.rpn_channels = 256
  f.roi_size = 6
  f.head_hidden = 4096
  return config
