"""Errors that mean "the user asked for something wrong", as opposed to a bug.

The CLIs catch `OverfeatError` and print its message on one line with a non-zero exit; anything
else is a bug and keeps its traceback. `reason(e)` says in a few words why a file operation failed.
"""

from __future__ import annotations

import os
import re

# How tensorstore (orbax's array files) names the OS error under its own message.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_MAX_REASON = 240


def reason(error: BaseException) -> str:
  """Why `error` happened, on one short line, for a message that names the file itself.

  The innermost cause counts (orbax wraps tensorstore's error in a bare Exception); an OSError gives
  the OS's words ("No space left on device"), also where a library only quotes its code.
  """
  while error.__cause__ is not None:
    error = error.__cause__
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = " ".join(str(error).split()) or type(error).__name__
  code = _OS_ERROR_CODE.search(text)
  if code:
    return os.strerror(int(code.group(1)))
  return text if len(text) <= _MAX_REASON else text[:_MAX_REASON - 3] + "..."


class OverfeatError(Exception):
  """Base class: a problem with the user's input, config, data or work directory."""


class ConfigError(OverfeatError, ValueError):
  """A config key, value or combination is invalid (names the key)."""


class DataError(OverfeatError, ValueError):
  """A dataset is unknown, missing, or holds examples the pipeline cannot use."""


class InputSizeError(OverfeatError, ValueError):
  """An image is smaller than the network's field of view (names both sizes)."""


class CheckpointError(OverfeatError, RuntimeError):
  """No (intact) checkpoint where one is needed, one that does not match the model or the run's
  config, or a save that failed."""


class WorkdirError(OverfeatError, RuntimeError):
  """The work directory (or a file in it) cannot be used: not a directory, not writable, full, or in
  use by another training run (names the directory or file, and the OS's reason)."""


class LossNotFiniteError(OverfeatError, FloatingPointError):
  """The training loss became NaN or Inf (usually: the learning rate is too high for the model)."""


class ParamsNotFiniteError(OverfeatError, FloatingPointError):
  """A parameter became NaN or Inf while the loss was still finite (names the step and the parameter)."""


class DistributedError(OverfeatError, RuntimeError):
  """jax's distributed system (several processes as one run) cannot start: names the mode, the
  coordinator and jax's reason."""
