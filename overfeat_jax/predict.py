r"""Predict on your own images with a trained model of any task (config.task).

  python -m overfeat_jax.predict --config configs/quickstart.py --workdir workdirs/quickstart \
      [--out DIR] [--top-k K] IMAGE...
  overfeat-predict ...          (the same, as the installed console script)

Restores the newest intact checkpoint in --workdir and prints one JSON line per image on stdout:
  {"image": "seven.png", "image_size": [H, W], "task": "classification", "checkpoint_step": 2000,
   "labels": [7, 1, ...], "names": ["7", "1", ...], "scores": [...], "probabilities": [...]}
- classification: the top-K classes (default 5) of the paper's dense multi-scale evaluation of the
  whole image (evaluate.py's "N scales, fine stride" row); "scores" are that row's scores,
  "probabilities" the same normalised over all classes;
- localization: the top-K (class, box) guesses after the greedy merge of all scales, as the
  localization evaluation makes them, with "boxes" [[x1, y1, x2, y2], ...];
- detection (OverFeat) and faster_rcnn: every detection (at most K when --top-k is given): "boxes",
  "labels", "names", "scores";
boxes in pixels of the original image, clipped to it. With --out DIR it also writes a picture per
image, DIR/<image stem>_prediction.png (the panels of evaluate.py --pictures: the top-5 and score maps of a
classifier, the boxes of a detector), and DIR/predictions.jsonl (the same lines); a summary line goes
to stderr. Images of any size at least the network's field of view (58 px for the quickstart); grey,
grey + alpha, palette, RGBA, CMYK, 16-bit grey PNGs (scaled, not clipped) and JPEGs become RGB. A
missing, unreadable or too small image, an unsupported pixel mode or a work directory without a
checkpoint is a one-line error (status 2), before anything is written.

In Python: `overfeat_jax.predict.predict(config, workdir, ["seven.png"])` -> [dict, ...] (config: a
ConfigDict or a config's name); to predict many times without restoring again,
`overfeat_jax.evaluation.prediction.Predictor.from_workdir(config, workdir)` (or `Predictor(config,
params)`) and its `predict(image)`, `image` an [H, W, 3] uint8 array
(`overfeat_jax.data.image_files.read_image(path)` reads a file as one).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from overfeat_jax import stop_signals

STOPPED = "prediction abandoned"

# First (and only when run as a command), so that a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals(STOPPED)

from absl import flags  # noqa: E402

from overfeat_jax import cli  # noqa: E402
from overfeat_jax.cpu_flags import use_fast_cpu_convolutions  # noqa: E402

USAGE = ("python -m overfeat_jax.predict --config CONFIG --workdir WORKDIR [--out DIR] [--top-k K] "
         "IMAGE...")


def predict(config: Any, workdir: str, images: Sequence[str], *, top_k: int | None = None,
            out_dir: str | None = None, verbose: bool = False) -> list[dict[str, Any]]:
  """The predictions of the newest intact checkpoint in `workdir` on each image file (module
  docstring); `config` a ConfigDict or a config file / shipped config's name. With `verbose`, prints
  the JSON lines on stdout (and a summary on stderr) as the command does.

  Raises:
    OverfeatError (ConfigError, DataError, InputSizeError, CheckpointError, WorkdirError): a bad
    config, image, work directory or output directory; see `evaluation.prediction.predict_files`.
  """
  use_fast_cpu_convolutions()  # before the first jax import, where it has not happened yet
  from overfeat_jax.evaluation import prediction  # heavy (jax) imports here, not at import time

  return prediction.predict_files(config, workdir, list(images), top_k=top_k, out_dir=out_dir,
                                  stream=sys.stdout if verbose else None)


def main(argv: list[str]) -> int:
  """Runs the command on `argv` (the arguments after the program name); returns 0.

  Its flags live in a FlagValues of their own, so that it can run more than once in one process.
  Raises:
    SystemExit(2) after printing a one-line error on stderr (`cli.fail`) for a user error.
  """
  if "--help" in argv or "-h" in argv:
    print(__doc__)
    return 0
  use_fast_cpu_convolutions()
  flag_values = flags.FlagValues()
  config, workdir = cli.define_config_flags(flag_values, argv)
  out = flags.DEFINE_string("out", None, "Directory for a picture per image and predictions.jsonl; "
                            "default: none written.", flag_values=flag_values)
  top_k = flags.DEFINE_integer("top-k", None, "Classes (classification) or guesses (localization) per "
                               "image, default 5; at most this many detections (detectors), default "
                               "all.", lower_bound=1, flag_values=flag_values)
  images = cli.parse_flags(["predict"] + list(argv), flag_values=flag_values, config=config,
                           workdir=workdir)[1:]
  if not images:
    cli.fail(f"no images given: {USAGE}")
  cli.quiet_library_logs()
  cli.report_user_errors(lambda: predict(config.value, workdir.value, images, top_k=top_k.value,
                                         out_dir=out.value, verbose=True))
  return 0


def command() -> None:
  """The command line (`overfeat-predict`): signals, then `main` on sys.argv."""
  stop_signals.exit_on_signals(STOPPED)  # again where already installed: harmless
  sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
  command()
