"""The package's layers (DESIGN "Layout"): dependencies point downward only, checked on the source."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "overfeat_jax"

# Sub-package -> the sub-packages of ours it must never import.
FORBIDDEN = {
    "ops": ("models", "data", "tasks", "training", "evaluation"),
    "models": ("data", "tasks", "training", "evaluation"),
    "data": ("models", "tasks", "training", "evaluation"),
    "tasks": ("training", "evaluation"),
    "training": ("evaluation",),
    "evaluation": ("training",),
}

# Commands inside the package (`python -m ...`; the top-level train.py and evaluate.py wrap the first
# two): they may import everything, and no module of the package may import them (DESIGN: "No module
# imports a CLI").
CLI_MODULES = ("overfeat_jax.train", "overfeat_jax.evaluate", "overfeat_jax.features",
               "overfeat_jax.convert_weights", "overfeat_jax.export", "overfeat_jax.predict",
               "overfeat_jax.ablations")


def imported_modules(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_downward(layer):
  offending = []
  for path in sorted((PACKAGE / layer).rglob("*.py")):
    for name in imported_modules(path):
      for other in FORBIDDEN[layer]:
        if name == f"overfeat_jax.{other}" or name.startswith(f"overfeat_jax.{other}."):
          offending.append(f"{path.relative_to(PACKAGE)} imports {name}")
  assert not offending, offending


def test_the_checker_sees_imports():
  # Not vacuous: the evaluation runner does import the tasks layer.
  assert "overfeat_jax.tasks" in imported_modules(PACKAGE / "evaluation" / "run.py")


def module_name(path: pathlib.Path) -> str:
  return ".".join(("overfeat_jax",) + path.relative_to(PACKAGE).with_suffix("").parts)


def test_no_module_imports_a_cli():
  paths = sorted(PACKAGE.rglob("*.py"))
  assert {module_name(p) for p in paths} >= set(CLI_MODULES)  # the commands exist where listed
  offending = [f"{module_name(path)} imports {name}" for path in paths if module_name(path) not in CLI_MODULES
               for name in imported_modules(path)
               if any(name == cli or name.startswith(f"{cli}.") for cli in CLI_MODULES)]
  assert not offending, offending
