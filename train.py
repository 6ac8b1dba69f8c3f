"""Train the task of a config (`config.task`; the OverFeat classifier of SPEC A3 by default).

  python train.py --config configs/quickstart.py --workdir workdirs/quickstart [--config.key=value ...]

Writes <workdir>/checkpoints, config.json and metrics.jsonl. Rerunning the same command resumes from
the last checkpoint. Ctrl-C or SIGTERM saves a checkpoint and exits with status 128 + the signal
number (130 / 143), so that `train.py && evaluate.py` does not evaluate an unfinished run.
"""

from __future__ import annotations

import sys

from overfeat_jax import cli


def main() -> None:
  import jax  # Heavy imports after flag parsing.

  from overfeat_jax.training import loop

  config = cli.CONFIG.value
  if config.train.distributed:
    jax.distributed.initialize()
  result = loop.run(config, cli.WORKDIR.value)
  if result.stopped_by is not None:
    sys.exit(128 + result.stopped_by)


if __name__ == "__main__":
  cli.run(main)
