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
