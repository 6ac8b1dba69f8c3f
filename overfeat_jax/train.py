"""Train the task of a config (`config.task`; the OverFeat classifier of SPEC A3 by default).

  python -m overfeat_jax.train --config quickstart --workdir workdirs/quickstart [--config.key=value ...]
  overfeat-train ...            (the same, as the installed console script)
  python train.py ...           (the same, from a checkout)

--config is a config file (configs/quickstart.py) or a shipped config's name (quickstart).
Writes <workdir>/checkpoints, config.json, run_info.json, metrics.jsonl and TensorBoard event files
(with --config.train.eval_every=N, also an evaluation every N steps), and ends with one summary line.
Rerunning the same command resumes from the newest intact checkpoint. Ctrl-C or SIGTERM saves a
checkpoint and exits with status 128 + the signal number (130 / 143), so that `train && evaluate`
does not evaluate an unfinished run; before the first step (imports, data, restore, compile) there is
nothing to save and it exits at once.
"""

from __future__ import annotations

import sys

from overfeat_jax import stop_signals

STOPPED_EARLY = "exited at once; rerun the same command to resume from the newest complete checkpoint, if any"

# First (and only in the main process, not in grain workers that re-import the main module), so that
# a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals(STOPPED_EARLY)

from overfeat_jax import cli  # noqa: E402


def main() -> None:
  """Trains `cli.CONFIG` into `cli.WORKDIR` (the flags parsed); exits 128 + signal when stopped."""
  from overfeat_jax import multihost  # Heavy imports after flag parsing.

  config = cli.CONFIG.value
  multihost.initialize(config)  # before any module that might start a jax backend is imported
  from overfeat_jax.evaluation import run as evaluation
  from overfeat_jax.training import loop

  result = loop.run(config, cli.WORKDIR.value, evaluate=evaluation.periodic_evaluation(config))
  if result.stopped_by is not None:
    sys.exit(128 + result.stopped_by)


def command() -> None:
  """The command line (`overfeat-train`, train.py): signals, flags, one-line user errors, `main`."""
  stop_signals.exit_on_signals(STOPPED_EARLY)  # again where already installed: harmless
  cli.run(main, usage=__doc__)


if __name__ == "__main__":
  command()
