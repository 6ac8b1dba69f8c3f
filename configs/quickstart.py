"""Quickstart: a small OverFeat-fast classifier on the embedded "digits in scenes" dataset (CPU, minutes).

  python train.py --config configs/quickstart.py --workdir workdirs/quickstart
  python evaluate.py --config configs/quickstart.py --workdir workdirs/quickstart

Same layer structure as the paper's fast model (SPEC A2) at 1/8 width and with a 3x3/1 first layer, so
the field of view is 58 px instead of 231 and one CPU trains it in a few minutes. The six test scales
mirror the paper's six (SPEC A4) at 58/231 of their size, each chosen so that the pre-pool map is odd
and every pooling offset yields the same number of windows.
"""

from overfeat_jax.config import base_config


def get_config():
  config = base_config()
  # Everything else is base_config()'s default, which is this setting; spelled out here are the
  # values that make it the quickstart, so that the file reads as the experiment.
  config.dataset.name = "digits_in_scenes/classification"
  config.model.variant = "fast"
  config.model.width = 0.125
  config.model.stem_kernel = 3
  config.model.stem_stride = 1
  config.model.init = "he"  # N(0, 0.01^2) barely moves a net this small in minutes (DESIGN, Data).
  config.input.resize_short = 64
  config.input.crop_size = 58
  config.input.batch_size = 64
  # Handwriting is not mirror-symmetric (a mirrored 2 reads like a 6), so no training flips here;
  # the flip rows of the evaluation table show what flips cost on such data.
  config.input.random_flip = False
  config.optimizer.learning_rate = 0.01
  config.optimizer.halve_at_epochs = (20, 25, 28)
  config.train.num_epochs = 30
  config.eval.resize_short = 64
  # The first three scales (1.0-1.5x the training scale): at the larger ones the biggest digits
  # outgrow the 58-px field of view. All six are defined, so --config.eval.multi_scales can add them.
  config.eval.multi_scales = (0, 1, 2)
  return config
