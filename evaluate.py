"""Evaluate a trained OverFeat classifier with the paper's dense multi-scale protocol (SPEC A4).

  python evaluate.py --config configs/quickstart.py --workdir workdirs/quickstart [--pictures N]

Restores the newest intact checkpoint in --workdir, prints top-1/top-5 error in the layout of the
paper's Table 2 (naming the checkpoint step), then writes it to <workdir>/eval/metrics.json, logs it
(eval/metrics.jsonl, TensorBoard events, eval/run_info.json) and prints a summary line.
--pictures N (short for --config.eval.pictures=N, which it overrides) then draws the first N images
of the eval split with what the evaluator saw in them, as PNGs in <workdir>/eval/pictures/.
Other tasks (config.task) print their own tables: Faster R-CNN (configs/faster_rcnn_*.py) the
per-class AP table, COCO's summary and the recall-vs-proposals table.
Ctrl-C or SIGTERM stops it at once (status 130 / 143).
"""

from overfeat_jax import stop_signals

# First (and only in the main process, not in grain workers that re-import this file), so that a
# Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals("evaluation abandoned")

from absl import flags  # noqa: E402

from overfeat_jax import cli  # noqa: E402

PICTURES = flags.DEFINE_integer(
    "pictures", None, "Write pictures of the first N images of the eval split to "
    "<workdir>/eval/pictures/ (sets config.eval.pictures; 0 = none).", lower_bound=0)


def main() -> None:
  import jax  # Heavy imports after flag parsing.

  from overfeat_jax.evaluation import run

  config = cli.CONFIG.value
  if PICTURES.value is not None:
    config.eval.pictures = PICTURES.value
  if config.train.distributed:
    jax.distributed.initialize()
  run.run(config, cli.WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
