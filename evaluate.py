"""Evaluate a trained OverFeat classifier with the paper's dense multi-scale protocol (SPEC A4).

  python evaluate.py --config configs/quickstart.py --workdir workdirs/quickstart

Restores the latest checkpoint in --workdir, prints top-1/top-5 error in the layout of the paper's
Table 2 and writes it to <workdir>/eval/metrics.json.
"""

from overfeat_jax import cli


def main() -> None:
  import jax  # Heavy imports after flag parsing.

  from overfeat_jax.evaluation import run

  config = cli.CONFIG.value
  if config.train.distributed:
    jax.distributed.initialize()
  run.run(config, cli.WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
