"""The shipped experiment configs by name: `--config quickstart` as well as `--config configs/quickstart.py`.

One copy: configs/ at the repository root is the source (what the README runs and users read and
copy). pyproject.toml maps it into the package as overfeat_jax/configs/, so that a non-editable
install (`pip install .`, a wheel) carries it and the commands find a config by name from any
directory. A config may load a sibling by its own path (localization_quickstart.py loads
quickstart.py), which holds in both places.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

import overfeat_jax

_PACKAGE_DIR = os.path.dirname(os.path.abspath(overfeat_jax.__file__))
_INSTALLED = os.path.join(_PACKAGE_DIR, "configs")  # a wheel / `pip install .`
_SOURCE = os.path.join(os.path.dirname(_PACKAGE_DIR), "configs")  # a checkout (editable or PYTHONPATH)


def config_dir() -> str | None:
  """The directory holding the shipped configs, or None where there is none (a broken install)."""
  for directory in (_INSTALLED, _SOURCE):
    if os.path.isfile(os.path.join(directory, "quickstart.py")):
      return directory
  return None


def names() -> list[str]:
  """The shipped configs' names (file stems), sorted; [] where there are none."""
  directory = config_dir()
  if directory is None:
    return []
  return sorted(f[:-3] for f in os.listdir(directory) if f.endswith(".py") and not f.startswith("_"))


def resolve(value: str) -> str:
  """The config file `value` names: an existing path as given, else the shipped config of that name.

  `value` is a --config value: a path (configs/quickstart.py) or a shipped name (quickstart, or
  quickstart.py). Anything else comes back unchanged, for the caller to report as missing.
  """
  if os.path.exists(value) or os.sep in value or (os.altsep and os.altsep in value):
    return value
  stem = value[:-3] if value.endswith(".py") else value
  if stem in names():
    return os.path.join(config_dir(), stem + ".py")
  return value


def load(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config file at `path` (configs/ is not a package: loaded by path, so a
  config can start from a sibling's, e.g. `load(os.path.join(os.path.dirname(__file__), "quickstart.py"))`)."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
