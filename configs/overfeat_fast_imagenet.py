"""The paper's OverFeat "fast" model on ImageNet-2012 (SPEC A2, A3, A4).

  tfds build imagenet2012 --file_format=array_record   # once; needs the ImageNet tarballs (see README)
  python train.py --config configs/overfeat_fast_imagenet.py --workdir workdirs/fast
  python evaluate.py --config configs/overfeat_fast_imagenet.py --workdir workdirs/fast

Batch 128 of random 231x231 crops from images resized to short side 256, with flips; N(0, 0.01^2)
init; SGD momentum 0.6 (damped as Torch7 does: v <- 0.6 v + 0.4 g), weight decay 1e-5, lr 5e-2 halved after epochs 30, 50, 60, 70, 80
(`paper_imagenet_config`).
"""

from overfeat_jax.config import paper_imagenet_config


def get_config():
  config = paper_imagenet_config()
  config.model.variant = "fast"
  config.input.crop_size = 231
  config.input.eval_batch_size = 32
  # The paper's six scales (SPEC A4), except scale 1: 245 px gives the fast model a 12x12 pre-pool map,
  # too small for a 6x6 classifier at the second pooling offset; 247 px gives 13x13.
  config.eval.scales = ((247, 247), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))
  return config
