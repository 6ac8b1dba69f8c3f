"""The paper's OverFeat "accurate" model on ImageNet-2012 (SPEC A2, A3, A4).

  tfds build imagenet2012 --file_format=array_record   # once; needs the ImageNet tarballs (see README)
  python train.py --config configs/overfeat_accurate_imagenet.py --workdir workdirs/accurate
  python evaluate.py --config configs/overfeat_accurate_imagenet.py --workdir workdirs/accurate

Batch 128 of random 221x221 crops from images resized to short side 256, with flips; N(0, 0.01^2)
init; SGD momentum 0.6, weight decay 1e-5, lr 5e-2 halved after epochs 30, 50, 60, 70, 80; tested at
the paper's six scales with 3x3 pooling offsets.
"""

from overfeat_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.num_classes = 1000
  config.dataset.prepare = False

  config.model.variant = "accurate"
  config.model.width = 1.0
  config.model.stem_kernel = 0  # The paper's 7x7, stride 2.
  config.model.stem_stride = 0
  config.model.init = "paper"
  config.model.dropout_rate = 0.5

  config.input.resize_short = 256
  config.input.crop_size = 221
  config.input.random_flip = True
  config.input.batch_size = 128
  config.input.eval_batch_size = 16
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
  config.eval.scales = ((245, 245), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))  # SPEC A4
  config.eval.single_scale = 0
  config.eval.multi_scales = (0, 1, 2, 3, 4, 5)
  return config
