"""The paper's OverFeat "fast" model on ImageNet-2012 (SPEC A2, A3, A4).

  tfds build imagenet2012 --file_format=array_record   # once; needs the ImageNet tarballs (see README)
  python train.py --config configs/overfeat_fast_imagenet.py --workdir workdirs/fast
  python evaluate.py --config configs/overfeat_fast_imagenet.py --workdir workdirs/fast

Batch 128 of random 231x231 crops from images resized to short side 256, with flips; N(0, 0.01^2)
init; SGD momentum 0.6, weight decay 1e-5, lr 5e-2 halved after epochs 30, 50, 60, 70, 80.
"""

from overfeat_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.num_classes = 1000
  config.dataset.prepare = False  # ImageNet is never generated; it must be built beforehand.

  config.model.variant = "fast"
  config.model.width = 1.0
  config.model.stem_kernel = 0  # The paper's 11x11, stride 4.
  config.model.stem_stride = 0
  config.model.init = "paper"
  config.model.dropout_rate = 0.5

  config.input.resize_short = 256
  config.input.crop_size = 231
  config.input.random_flip = True
  config.input.batch_size = 128
  config.input.eval_batch_size = 32
  config.input.num_workers = 8

  config.optimizer.learning_rate = 5e-2
  config.optimizer.momentum = 0.6
  config.optimizer.weight_decay = 1e-5
  config.optimizer.halve_at_epochs = (30, 50, 60, 70, 80)
  config.train.num_epochs = 90
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.train.keep_checkpoints = 3

  config.eval.resize_short = 256
  # The paper's six scales (SPEC A4), except scale 1: 245 px gives the fast model a 12x12 pre-pool map,
  # too small for a 6x6 classifier at the second pooling offset; 247 px gives 13x13.
  config.eval.scales = ((247, 247), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))
  config.eval.single_scale = 0
  config.eval.multi_scales = (0, 1, 2, 3, 4, 5)
  return config
