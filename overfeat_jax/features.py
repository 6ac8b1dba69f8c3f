r"""The OverFeat feature extractor (SPEC A6): a trained classifier's layer-N feature maps of images.

  python -m overfeat_jax.features --config configs/quickstart.py --workdir workdirs/quickstart \
      [--layer N] [--out DIR] IMAGE...

Restores the newest intact checkpoint in --workdir and, for each image at its own size (at least the
network's field of view; grey and RGBA images become RGB), writes <out>/<image stem>.npy, the float32
[h, w, C] output of feature layer N, and <out>/<image stem>.json (shape, layer, stride, receptive
field, image size, checkpoint step). --layer defaults to the last feature layer (5 fast, 6 accurate):
the map before its max-pool, what the classifier's dense evaluation starts from; a smaller N gives
layer N after its ReLU and max-pool, what layer N + 1 reads. --out defaults to <workdir>/features.
Prints one line per image and a summary; a bad image, layer or work directory is a one-line error
(status 2). Library side: `overfeat_jax.evaluation.feature_export`.
"""

from __future__ import annotations

import sys

from overfeat_jax import stop_signals

# First (and only when run as a command), so that a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals("feature extraction abandoned")

from absl import flags  # noqa: E402

from overfeat_jax import cli  # noqa: E402
from overfeat_jax.cpu_flags import use_fast_cpu_convolutions  # noqa: E402

USAGE = ("python -m overfeat_jax.features --config CONFIG --workdir WORKDIR [--layer N] [--out DIR] "
         "IMAGE...")


def main(argv: list[str]) -> int:
  """Runs the command on `argv` (the arguments after the program name); returns 0.

  Its flags live in a FlagValues of their own, so that it can run more than once in one process.
  Raises:
    SystemExit(2) after printing a one-line error on stderr (`cli.fail`) for a user error.
  """
  if "--help" in argv or "-h" in argv:
    print(__doc__)
    return 0
  use_fast_cpu_convolutions()  # before the first jax import (below), where it has not happened yet
  flag_values = flags.FlagValues()
  config, workdir = cli.define_config_flags(flag_values, argv)
  layer = flags.DEFINE_integer(
      "layer", None, "Feature layer N (1 .. number of conv layers); default: the last one, before its "
      "max-pool.", flag_values=flag_values)
  out = flags.DEFINE_string("out", None, "Output directory; default: <workdir>/features.",
                            flag_values=flag_values)
  images = cli.parse_flags(["features"] + list(argv), flag_values=flag_values, config=config,
                           workdir=workdir)[1:]
  if not images:
    cli.fail(f"no images given: {USAGE}")
  cli.quiet_library_logs()

  def extract() -> None:
    from overfeat_jax.evaluation import feature_export  # heavy (jax) imports after flag parsing

    feature_export.export_features(config.value, workdir.value, images, layer=layer.value,
                                   out_dir=out.value)

  cli.report_user_errors(extract)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
