r"""The paper's ablations (SPEC B6) as one command: trains what they need, evaluates, prints the table.

  python -m overfeat_jax.ablations --config configs/faster_rcnn_quickstart.py --workdir workdirs/ablations \
      [--steps N] [--examples N] [--rows shared,unshared,...] \
      [--detection_config configs/detection_quickstart.py] [--detection_workdir DIR] [--config.a.b=value ...]

Rows (`overfeat_jax.ablation_study.ROWS`): shared (approximate joint training, the baseline), unshared
(the RPN with its own backbone), no_nms (6,000 test proposals without NMS), top_100, random_1000 and
random_100 (no cls: random test proposals), no_reg (anchors as test proposals), exact_joint,
alternating (4-step), overfeat (the OverFeat detector of --detection_config on the same data). The
test-time rows (no_nms ... no_reg) evaluate the baseline's model. --steps sets each Faster R-CNN
training's length (0: the config's), --examples the first N test images (0: the config's
eval.num_examples); the OverFeat row trains its own config's length (override with
--detection_config.train.max_steps=N) in <workdir>/train/overfeat, or evaluates --detection_workdir.
The classifiers the trainings start from (faster_rcnn.backbone_weights, detection.classifier_workdir:
the quickstart's workdirs/quickstart) must exist. Rerunning the same command resumes: finished
trainings and rows are kept. Prints the table and writes <workdir>/ablations.md and ablations.json;
Ctrl-C or SIGTERM saves the training it is in and exits with 128 + the signal number.
"""

from __future__ import annotations

import sys

from overfeat_jax import stop_signals

STOPPED_EARLY = "exited at once; rerun the same command to resume"

# First (and only when run as a command), so that a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals(STOPPED_EARLY)

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from overfeat_jax import cli, shipped_configs  # noqa: E402
from overfeat_jax.cpu_flags import use_fast_cpu_convolutions  # noqa: E402

USAGE = ("python -m overfeat_jax.ablations --config CONFIG --workdir WORKDIR [--steps N] [--examples N] "
         "[--rows ROW,...] [--detection_config CONFIG] [--detection_workdir DIR]")


def main(argv: list[str]) -> int:
  """Runs the command on `argv` (the arguments after the program name); returns 0, or 128 + the
  signal that stopped a training. Its flags live in a FlagValues of their own, so that it can run
  more than once in one process.

  Raises:
    SystemExit(2) after printing a one-line error on stderr (`cli.fail`) for a user error.
  """
  if "--help" in argv or "-h" in argv:
    print(__doc__)
    return 0
  use_fast_cpu_convolutions()  # before the first jax import (below), where it has not happened yet
  flag_values = flags.FlagValues()
  config, workdir = cli.define_config_flags(flag_values, argv)
  steps = flags.DEFINE_integer("steps", 0, "Training steps of each Faster R-CNN training (0: the "
                               "config's length).", lower_bound=0, flag_values=flag_values)
  examples = flags.DEFINE_integer("examples", 0, "Evaluate on the first N test images (0: the config's "
                                  "eval.num_examples).", lower_bound=0, flag_values=flag_values)
  rows = flags.DEFINE_list("rows", [], "Rows to run, comma-separated (default: all).",
                           flag_values=flag_values)
  detection_config = config_flags.DEFINE_config_file(
      "detection_config", shipped_configs.resolve("detection_quickstart"),
      "The OverFeat detection config of the overfeat row (override keys with "
      "--detection_config.a.b=value).", flag_values=flag_values, lock_config=True, sys_argv=list(argv))
  detection_workdir = flags.DEFINE_string(
      "detection_workdir", "", "An OverFeat detection run to evaluate for the overfeat row instead of "
      "training one in <workdir>/train/overfeat.", flag_values=flag_values)
  rest = cli.parse_flags(["ablations"] + list(argv), flag_values=flag_values, config=config,
                         workdir=workdir)[1:]
  if rest:
    cli.fail(f"unexpected positional arguments: {' '.join(rest)} ({USAGE})")
  cli.quiet_library_logs()
  status = [0]

  def study() -> None:
    from overfeat_jax import ablation_study  # heavy (jax) imports after flag parsing

    needs_detection = not rows.value or ablation_study.OVERFEAT in rows.value
    try:
      detection = detection_config.value if needs_detection else None
      if detection is not None:
        detection.keys()  # config_flags defers a load error until first use
    except Exception as e:  # the config file itself raised (missing, syntax error, ...)
      cli.fail(f"cannot load --detection_config: {' '.join(str(e).split())}")
    result = ablation_study.run_study(
        config.value, workdir.value, rows=rows.value, steps=steps.value, examples=examples.value,
        detection_config=detection, detection_workdir=detection_workdir.value,
        log=lambda line: print(line, flush=True))
    if result.stopped_by is not None:
      print(f"stopped by signal {result.stopped_by}; rerun the same command to resume", flush=True)
      status[0] = 128 + result.stopped_by
      return
    print(result.table, flush=True)
    print(f"table written to {workdir.value}/{ablation_study.TABLE_MD} and "
          f"{ablation_study.TABLE_JSON}", flush=True)

  cli.report_user_errors(study)
  return status[0]


if __name__ == "__main__":
  stop_signals.exit_on_signals(STOPPED_EARLY)
  sys.exit(main(sys.argv[1:]))
