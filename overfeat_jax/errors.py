"""Errors that mean "the user asked for something wrong", as opposed to a bug.

The CLIs catch `OverfeatError` and print its message on one line with a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class OverfeatError(Exception):
  """Base class: a problem with the user's input, config, data or work directory."""


class ConfigError(OverfeatError, ValueError):
  """A config key, value or combination is invalid (names the key)."""


class DataError(OverfeatError, ValueError):
  """A dataset is unknown, missing, or holds examples the pipeline cannot use."""


class InputSizeError(OverfeatError, ValueError):
  """An image is smaller than the network's field of view (names both sizes)."""


class CheckpointError(OverfeatError, RuntimeError):
  """No checkpoint where one is needed, or one that does not match the model."""


class LossNotFiniteError(OverfeatError, FloatingPointError):
  """The training loss became NaN or Inf (usually: the learning rate is too high for the model)."""
