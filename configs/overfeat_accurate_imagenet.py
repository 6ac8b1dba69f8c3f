"""The paper's OverFeat "accurate" model on ImageNet-2012 (SPEC A2, A3, A4).

  tfds build imagenet2012 --file_format=array_record   # once; needs the ImageNet tarballs (see README)
  python train.py --config configs/overfeat_accurate_imagenet.py --workdir workdirs/accurate
  python evaluate.py --config configs/overfeat_accurate_imagenet.py --workdir workdirs/accurate

Batch 128 of random 221x221 crops from images resized to short side 256, with flips; N(0, 0.01^2)
init; SGD momentum 0.6 (damped as Torch7 does: v <- 0.6 v + 0.4 g), weight decay 1e-5, lr 5e-2 halved after epochs 30, 50, 60, 70, 80
(`paper_imagenet_config`); tested at the paper's six scales with 3x3 pooling offsets.
"""

from overfeat_jax.config import paper_imagenet_config


def get_config():
  config = paper_imagenet_config()
  config.model.variant = "accurate"
  config.input.crop_size = 221
  config.input.eval_batch_size = 16
  config.eval.scales = ((245, 245), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))  # SPEC A4
  return config
