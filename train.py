"""Train an OverFeat classifier (SPEC A3) with the config's dataset, model and schedule.

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

  from overfeat_jax.config import validate_config
  from overfeat_jax.training import classification

  config = cli.CONFIG.value
  validate_config(config)
  if config.train.distributed:
    jax.distributed.initialize()
  result = classification.train(config, cli.WORKDIR.value)
  if result.stopped_by is not None:
    sys.exit(128 + result.stopped_by)


if __name__ == "__main__":
  cli.run(main)
