"""Train the task of a config (`config.task`; the OverFeat classifier of SPEC A3 by default).

  python train.py --config configs/quickstart.py --workdir workdirs/quickstart [--config.key=value ...]

Writes <workdir>/checkpoints, config.json, run_info.json, metrics.jsonl and TensorBoard event files
(with --config.train.eval_every=N, also an evaluation every N steps), and ends with one summary line.
Rerunning the same command resumes from the newest intact checkpoint. Ctrl-C or SIGTERM saves a
checkpoint and exits with status 128 + the signal number (130 / 143), so that `train.py &&
evaluate.py` does not evaluate an unfinished run;
before the first step (imports, data, restore, compile) there is nothing to save and it exits at once.
"""

from __future__ import annotations

import sys

from overfeat_jax import stop_signals

# First (and only in the main process, not in grain workers that re-import this file), so that a
# Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals("exited at once; rerun the same command to resume from the newest "
                               "complete checkpoint, if any")

from overfeat_jax import cli  # noqa: E402


def main() -> None:
  import jax  # Heavy imports after flag parsing.

  from overfeat_jax.evaluation import run as evaluation
  from overfeat_jax.training import loop

  config = cli.CONFIG.value
  if config.train.distributed:
    jax.distributed.initialize()
  result = loop.run(config, cli.WORKDIR.value, evaluate=evaluation.periodic_evaluation(config))
  if result.stopped_by is not None:
    sys.exit(128 + result.stopped_by)


if __name__ == "__main__":
  cli.run(main)
