"""The OverFeat authors' released "fast" network (net_weight_0) on ImageNet-2012 (SPEC A2, A4).

  python -m overfeat_jax.convert_weights --variant fast /path/to/net_weight_0 --workdir workdirs/fast_released
  python evaluate.py --config configs/overfeat_fast_released.py --workdir workdirs/fast_released \
      --config.dataset.data_dir=/data/tfds

The paper's fast architecture and six test scales (as overfeat_fast_imagenet.py) with the release's
input normalisation: (p - 118.380948) / 61.896913 for 0..255 pixels, i.e. input.mean = 118.380948 / 255
and input.std = 61.896913 / 255 for all three channels (`released_weights_config`). README "The
authors' weights" says where the file comes from and how the class order is mapped.
"""

from overfeat_jax.config import released_weights_config


def get_config():
  return released_weights_config("fast")
