"""What the commands share: the --config/--workdir flags and one-line user errors.

A user mistake (unknown config key, wrong type, missing file, bad dataset, missing checkpoint, ...)
or an unusable work directory prints `error: <what is wrong>` on stderr and exits with status 2; a bug
keeps its traceback. (Ctrl-C and SIGTERM: `overfeat_jax.stop_signals`, installed by the scripts first.)

train.py and evaluate.py use absl's global flags (`CONFIG`, `WORKDIR`, `run`); a command whose
`main(argv)` must run more than once in one process (`overfeat_jax.features`, called in-process by its
tests) defines the same flags on its own `flags.FlagValues` (`define_config_flags`) and parses them with
`parse_flags(..., flag_values=...)`.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from overfeat_jax import shipped_configs
from overfeat_jax.config import base_config
from overfeat_jax.cpu_flags import use_fast_cpu_convolutions
from overfeat_jax.errors import OverfeatError

USER_ERROR_EXIT = 2

_CONFIG_HELP = ("Experiment config: a file (configs/*.py) or a shipped config's name (quickstart, ...); "
                "override keys with --config.a.b=value.")
_WORKDIR_HELP = "Directory for checkpoints, metrics and eval outputs."

CONFIG = config_flags.DEFINE_config_file("config", None, _CONFIG_HELP, lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, _WORKDIR_HELP)


def define_config_flags(flag_values: flags.FlagValues, argv: Sequence[str]
                        ) -> tuple[flags.FlagHolder, flags.FlagHolder]:
  """--config and --workdir (as CONFIG and WORKDIR) on a command's own `flag_values`.

  `argv` is the command line they will parse: config_flags finds the --config.a.b overrides in it
  (by default it would read sys.argv).
  """
  config = config_flags.DEFINE_config_file("config", None, _CONFIG_HELP, flag_values=flag_values,
                                           lock_config=True, sys_argv=list(argv))
  workdir = flags.DEFINE_string("workdir", None, _WORKDIR_HELP, flag_values=flag_values)
  return config, workdir


def fail(message: str) -> None:
  """Prints a one-line error and exits with USER_ERROR_EXIT."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(USER_ERROR_EXIT)


def _unknown_override(argv: Sequence[str]) -> str | None:
  """The first `--config.a.b=...` whose key does not exist in the base config, if any."""
  reference = base_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node = reference
    for depth, part in enumerate(path):
      if not hasattr(node, "keys") or part not in node:
        return ".".join(path[:depth + 1])
      node = node[part]
  return None


def with_shipped_config(argv: Sequence[str]) -> list[str]:
  """`argv` with a --config value that names a shipped config (`--config quickstart`) as its path.

  Paths, existing or not, pass unchanged (`shipped_configs.resolve`); so do the --config.a.b overrides.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    if arg in ("--config", "-config") and i + 1 < len(out):
      out[i + 1] = shipped_configs.resolve(out[i + 1])
    elif arg.startswith(("--config=", "-config=")):
      flag, value = arg.split("=", 1)
      out[i] = f"{flag}={shipped_configs.resolve(value)}"
  return out


def parse_flags(argv: list[str], *, flag_values: flags.FlagValues | None = None,
                config: flags.FlagHolder | None = None,
                workdir: flags.FlagHolder | None = None) -> list[str]:
  """absl flag parsing whose errors are one line naming the flag (config_flags raises a traceback).

  Parses `argv` (program name first) into the global flags (CONFIG, WORKDIR), or into `flag_values`
  holding `config` and `workdir` from `define_config_flags`. Returns the program name and the
  positional arguments. --config takes a path or a shipped config's name (`with_shipped_config`).
  """
  argv = with_shipped_config(argv)
  flag_values = flags.FLAGS if flag_values is None else flag_values
  config = CONFIG if config is None else config
  workdir = WORKDIR if workdir is None else workdir
  try:
    rest = flag_values(argv)
  except Exception as e:  # absl's flags.Error, and config_flags' AttributeError/KeyError/ValueError.
    unknown = _unknown_override(argv)
    if unknown is not None:
      fail(f"unknown config key '{unknown}' (valid keys are listed in overfeat_jax/config.py)")
    fail(" ".join(str(e).split()))
  if config.value is None:
    fail("--config is required, e.g. --config configs/quickstart.py or --config quickstart")
  path = config_flags.get_config_filename(flag_values["config"])
  if not os.path.isfile(path):
    fail(f"config file {path} does not exist (shipped configs, by name: "
         f"{', '.join(shipped_configs.names()) or 'none found'})")
  try:
    config.value.keys()  # config_flags defers a load error until first use.
  except Exception as e:  # The config file itself raised (syntax error, bad import, ...).
    fail(f"cannot load config file {path}: {' '.join(str(e).split())}")
  if not workdir.value:
    fail("--workdir is required")
  return rest


def quiet_library_logs() -> None:
  """Keeps orbax's, grain's and TFDS's log lines off stderr (see `run`)."""
  logging.set_verbosity(logging.FATAL)


def report_user_errors(main: Callable[[], None]) -> None:
  """Runs `main()`; an OverfeatError becomes `fail(message)` (one line, exit status 2)."""
  try:
    main()
  except OverfeatError as e:
    fail(str(e))


def run(main: Callable[[], None], usage: str | None = None) -> None:
  """Runs `main()` under absl with one-line errors for every OverfeatError.

  `usage`: what --help prints where the main module has no docstring of its own (absl prints
  __main__'s; a console script's entry module has none).
  """
  main_module = sys.modules.get("__main__")
  if usage and main_module is not None and not main_module.__doc__:
    main_module.__doc__ = usage

  use_fast_cpu_convolutions()  # Before the first jax import (in `main`).

  def _main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      fail(f"unexpected positional arguments: {' '.join(argv[1:])}")
    # orbax, grain and TFDS log every file operation at INFO and benign notes at WARNING
    # (read-only checkpoint manager, no OpenCV), and orbax logs a failed background save at ERROR
    # with its traceback before raising it (reported here, on one line); the progress lines are
    # ours. --verbosity=0 shows all.
    if not flags.FLAGS["verbosity"].present:
      quiet_library_logs()
    report_user_errors(main)

  app.run(_main, flags_parser=parse_flags)
