r"""Convert the OverFeat authors' released weights into a checkpoint of this project (SPEC A2).

  python -m overfeat_jax.convert_weights --variant fast /path/to/net_weight_0 \
      --workdir workdirs/fast_released [--class_order /path/to/ILSVRC2012_devkit_t12/data/meta.mat]
  python evaluate.py --config configs/overfeat_fast_released.py --workdir workdirs/fast_released

(`--variant accurate` with `net_weight_1` and configs/overfeat_accurate_released.py likewise.) Reads the
file (layout: `overfeat_jax.models.released_weights`), refusing on one line a file of the wrong size
(naming both float counts and the variant that count belongs to), and writes into --workdir, which
must hold no checkpoint yet:
  checkpoints/0   the parameters and the model signature of `config.released_weights_config(variant)`
                  (`checkpoint_io.save_params`): what evaluate.py, the feature extractor and
                  `tasks.classification.restore_params` restore; train.py refuses to resume from it;
  config.json     that config (the released input normalisation included).
--class_order (the ILSVRC2012 devkit's data/meta.mat, or a text file of the outputs' WNIDs in order)
puts the outputs in TFDS imagenet2012's label order (sorted WNIDs); without it they keep the
release's order (the devkit's ILSVRC2012_ID order) and evaluate.py on TFDS labels would score them
against the wrong classes: the command says so. The weights' licence forbids redistributing them:
this project ships the converter only.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from overfeat_jax import stop_signals

# First (and only when run as a command), so that a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals("conversion abandoned")

import ml_collections  # noqa: E402
from absl import flags  # noqa: E402

from overfeat_jax import checkpoint_io, cli, files  # noqa: E402
from overfeat_jax.config import released_weights_config, validate_config  # noqa: E402
from overfeat_jax.cpu_flags import use_fast_cpu_convolutions  # noqa: E402
from overfeat_jax.errors import CheckpointError  # noqa: E402

USAGE = ("python -m overfeat_jax.convert_weights --variant fast|accurate WEIGHTS_FILE --workdir DIR "
         "[--class_order meta.mat]")
CLASS_ORDER_SORTED = "sorted WNIDs (TFDS imagenet2012 labels)"
CLASS_ORDER_RELEASED = "as released (ILSVRC2012 devkit IDs 1..1000), not TFDS imagenet2012's"


@dataclasses.dataclass(frozen=True)
class Conversion:
  """What `convert` wrote.

  Attributes:
    checkpoint_dir: the work directory's checkpoints/ (one step, 0).
    config_file: the config.json written beside it.
    num_floats: the weight file's float32 count.
    class_order: CLASS_ORDER_SORTED or CLASS_ORDER_RELEASED.
  """
  checkpoint_dir: str
  config_file: str
  num_floats: int
  class_order: str


def convert(config: ml_collections.ConfigDict, weights_path: str, workdir: str, *,
            class_order: str | None = None) -> Conversion:
  """Writes the released weights in `weights_path` as a checkpoint of `config`'s classifier in `workdir`.

  Args:
    config: `released_weights_config(variant)` (tests shrink config.model.width and write a file of
      that network in the same layout).
    class_order: a file for `released_weights.read_class_order`; None keeps the release's order.
  Raises:
    ConfigError: a bad config value.
    CheckpointError: the weight file or class-order file is unreadable or of the wrong size or
      contents (one line), or `workdir` already holds checkpoints.
    WorkdirError: `workdir` cannot be written or is in use by a training run.
  """
  from overfeat_jax.models import released_weights  # heavy (jax) imports after flag parsing
  from overfeat_jax.tasks import classification
  from overfeat_jax.training import run_config
  from overfeat_jax.training.workdir import WorkdirLock

  validate_config(config)
  existing = checkpoint_io.checkpoint_dir(workdir)
  if files.listdir(existing):  # before reading 584 MB (save_params checks again)
    raise CheckpointError(f"{existing} already holds checkpoints: use a new --workdir")
  model = classification.model_from_config(config)
  num_classes = config.dataset.num_classes
  wnids = (None if class_order is None
           else released_weights.read_class_order(class_order, num_classes))  # before the big read
  params = released_weights.read_released_weights(weights_path, model.arch, num_classes)
  differences = checkpoint_io.signature_differences(
      checkpoint_io.param_shapes(params), checkpoint_io.param_shapes(classification.params_template(model)))
  if differences:  # the file layout and the model disagree: a bug, not a user error
    raise AssertionError("released_weights.file_layout does not build the model's parameters: "
                         + "; ".join(differences))
  if wnids is not None:
    params = released_weights.reorder_classes(params, model.arch, released_weights.sorted_wnid_order(wnids))
  order = CLASS_ORDER_RELEASED if wnids is None else CLASS_ORDER_SORTED
  task_signature: dict[str, Any] = {
      **classification.model_signature(config),
      # Not in a training run's signature: train.py refuses to resume from this params-only checkpoint.
      "converted_from": {"file": os.path.basename(weights_path), "class_order": order},
  }
  with WorkdirLock(workdir):
    directory = checkpoint_io.save_params(workdir, params,
                                          checkpoint_io.make_signature(task_signature, params))
    run_config.save(workdir, config, step=0, changes={})
  return Conversion(checkpoint_dir=directory, config_file=os.path.join(workdir, run_config.CONFIG_FILE),
                    num_floats=released_weights.float_count(model.arch, num_classes), class_order=order)


def main(argv: list[str]) -> int:
  """Runs the command on `argv` (the arguments after the program name); returns 0.

  Raises:
    SystemExit(2) after printing a one-line error on stderr (`cli.fail`) for a user error.
  """
  if "--help" in argv or "-h" in argv:
    print(__doc__)
    return 0
  use_fast_cpu_convolutions()  # before the first jax import
  flag_values = flags.FlagValues()
  variant = flags.DEFINE_enum("variant", None, ["fast", "accurate"],
                              "Which network the file holds: fast (net_weight_0) or accurate (net_weight_1).",
                              flag_values=flag_values)
  workdir = flags.DEFINE_string("workdir", None, "Directory to write (it must hold no checkpoint).",
                                flag_values=flag_values)
  class_order = flags.DEFINE_string(
      "class_order", None, "The ILSVRC2012 devkit's data/meta.mat, or a text file of the outputs' WNIDs "
      "in order: puts the classes in TFDS imagenet2012's order.", flag_values=flag_values)
  try:
    positional = flag_values(["convert_weights"] + list(argv))[1:]
  except flags.Error as e:
    cli.fail(" ".join(str(e).split()))
  if variant.value is None:
    cli.fail(f"--variant is required: {USAGE}")
  if not workdir.value:
    cli.fail(f"--workdir is required: {USAGE}")
  if len(positional) != 1:
    cli.fail(f"expected one weight file, got {len(positional)}: {USAGE}")
  cli.quiet_library_logs()

  def run() -> None:
    config = released_weights_config(variant.value)
    done = convert(config, positional[0], workdir.value, class_order=class_order.value)
    print(f"converted {positional[0]} ({variant.value} network, {done.num_floats:,} floats) into "
          f"{done.checkpoint_dir} (step 0) and {done.config_file}")
    if class_order.value is None:
      print("warning: the classes keep the release's order (ILSVRC2012 devkit IDs), not TFDS "
            "imagenet2012's: pass --class_order ILSVRC2012_devkit_t12/data/meta.mat before evaluating "
            "on TFDS labels", file=sys.stderr)
    else:
      print(f"classes reordered to {CLASS_ORDER_SORTED} from {class_order.value}")
    print(f"evaluate: python evaluate.py --config configs/overfeat_{variant.value}_released.py "
          f"--workdir {workdir.value}")

  cli.report_user_errors(run)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
