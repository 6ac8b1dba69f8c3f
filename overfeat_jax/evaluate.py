"""Evaluate a trained model of a config (`config.task`): the paper's dense multi-scale protocol (SPEC A4).

  python -m overfeat_jax.evaluate --config quickstart --workdir workdirs/quickstart [--pictures N]
  overfeat-evaluate ...         (the same, as the installed console script)
  python evaluate.py ...        (the same, from a checkout)

--config is a config file (configs/quickstart.py) or a shipped config's name (quickstart).
Restores the newest intact checkpoint in --workdir, prints top-1/top-5 error in the layout of the
paper's Table 2 (naming the checkpoint step), then writes it to <workdir>/eval/metrics.json, logs it
(eval/metrics.jsonl, TensorBoard events, eval/run_info.json) and prints a summary line.
--pictures N (short for --config.eval.pictures=N, which it overrides) then draws the first N images
of the eval split with what the evaluator saw in them, as PNGs in <workdir>/eval/pictures/.
Ctrl-C or SIGTERM stops it at once (status 130 / 143).
"""

from __future__ import annotations

from overfeat_jax import stop_signals

STOPPED = "evaluation abandoned"

# First (and only in the main process, not in grain workers that re-import the main module), so that
# a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals(STOPPED)

from absl import flags  # noqa: E402

from overfeat_jax import cli  # noqa: E402

PICTURES = flags.DEFINE_integer(
    "pictures", None, "Write pictures of the first N images of the eval split to "
    "<workdir>/eval/pictures/ (sets config.eval.pictures; 0 = none).", lower_bound=0)


def main() -> None:
  """Evaluates `cli.CONFIG`'s model in `cli.WORKDIR` (the flags parsed)."""
  from overfeat_jax import multihost  # Heavy imports after flag parsing.

  config = cli.CONFIG.value
  if PICTURES.value is not None:
    config.eval.pictures = PICTURES.value
  multihost.initialize(config)  # before any module that might start a jax backend is imported
  from overfeat_jax.evaluation import run

  run.run(config, cli.WORKDIR.value)


def command() -> None:
  """The command line (`overfeat-evaluate`, evaluate.py): signals, flags, one-line user errors, `main`."""
  stop_signals.exit_on_signals(STOPPED)  # again where already installed: harmless
  cli.run(main, usage=__doc__)


if __name__ == "__main__":
  command()
