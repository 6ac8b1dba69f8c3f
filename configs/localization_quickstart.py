"""Localization quickstart: a box regressor on the quickstart classifier (SPEC A5; CPU, minutes).

  python train.py --config configs/quickstart.py --workdir workdirs/quickstart
  python train.py --config configs/localization_quickstart.py --workdir workdirs/localization
  python evaluate.py --config configs/localization_quickstart.py --workdir workdirs/localization

The first command trains the classifier this one starts from (localization.classifier_workdir); its
feature extractor and classifier stay frozen, only the regressor (1/8 of the paper's 4096 and 1024
widths, 4 outputs: SCR) trains, on whole images at three scales. evaluate.py prints the localization
error (top-1 and top-5 (class, box) guesses, IoU >= 0.5) for the centre crop, one scale and three
scales, with each image's boxes merged as SPEC A5 says.
"""

import os

from overfeat_jax import shipped_configs


def _quickstart_config():
  """configs/quickstart.py's config, from beside this file (a checkout or an install)."""
  return shipped_configs.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))


def get_config():
  config = _quickstart_config()  # the same model, data and test scales as the classifier's
  config.task = "localization"
  # The first 4,000 training scenes (one per training digit): enough for the regressor, and the
  # loader reads each record of its split once before it starts (all 32,000: ~30 s).
  config.dataset.train_split = "train[:4000]"
  config.localization.classifier_workdir = "workdirs/quickstart"
  config.localization.regressor = "scr"  # --config.localization.regressor=pcr for one per class
  # The classifier's three test scales' short sides (eval.scales 0-2): the regressor learns the
  # boxes at the sizes it is used at.
  config.localization.train_scales = (64, 72, 80)
  config.localization.min_coverage = 0.5
  # Batches of whole images, short side 80 (the largest training scale; the others are resized on
  # device), long side up to 160: the embedded images are at most 1.8:1.
  config.input.min_size = 80
  config.input.max_size = 160
  config.input.aspect_buckets = (1.25, 2.0)
  config.input.batch_size = 16
  config.input.random_flip = False  # handwriting is not mirror-symmetric (as the classifier)
  config.optimizer.learning_rate = 0.01
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.halve_at_epochs = ()
  config.train.num_epochs = 0
  config.train.max_steps = 150
  config.train.log_every = 25
  config.train.checkpoint_every = 150
  config.train.eval_every = 0  # the classifier's learning curve; evaluate.py reports localization
  config.eval.merge_top_k = 5
  # SPEC A5's merge threshold (base_config's comment): measured best here at 0 (no pair merges).
  config.eval.merge_threshold = 0.0
  return config
