"""Installs that stay consistent: accelerator extras on the CPU default's jax, the package's file list,
configs by name, the CPU flag on `import overfeat_jax`, and a real non-editable `pip install .`."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest
from packaging.requirements import Requirement

from overfeat_jax import cli, shipped_configs

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> dict[str, Requirement]:
  lines = (ROOT / "requirements.txt").read_text().splitlines()
  reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
  return {r.name: r for r in reqs}


@pytest.mark.parametrize("extra", ["cuda12", "cuda13", "tpu"])
def test_accelerator_extras_pin_the_cpu_defaults_jax(extra):
  cpu_jax = _requirements()["jax"]
  reqs = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
  jax = [r for r in reqs if r.name == "jax"]
  assert len(jax) == 1, reqs
  assert jax[0].extras == {extra}  # jax's own extra: jaxlib and the plugin / libtpu at jax's version
  assert jax[0].specifier == cpu_jax.specifier and str(cpu_jax.specifier), (jax[0], cpu_jax)
  # Nothing else in the extra may name a jax package with its own version.
  assert not [r for r in reqs if r.name.startswith(("jaxlib", "jax-", "libtpu"))], reqs


def test_the_listed_packages_are_the_source_trees():
  listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
  found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "overfeat_jax").rglob("__init__.py")}
  assert listed == found | {"overfeat_jax.configs"}
  assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"overfeat_jax.configs": "configs"}


def test_a_config_name_becomes_the_shipped_file():
  quickstart = str(ROOT / "configs" / "quickstart.py")
  assert os.path.samefile(shipped_configs.resolve("quickstart"), quickstart)
  assert os.path.samefile(shipped_configs.resolve("quickstart.py"), quickstart)
  assert "localization_quickstart" in shipped_configs.names()
  assert sorted(p.stem for p in (ROOT / "configs").glob("*.py")) == shipped_configs.names()
  # Paths and unknown names pass unchanged (parse_flags reports them missing).
  assert shipped_configs.resolve("configs/nope.py") == "configs/nope.py"
  assert shipped_configs.resolve("nope") == "nope"
  argv = cli.with_shipped_config(["train", "--config", "quickstart", "--config.seed=3",
                                  "--config=localization_quickstart", "--workdir", "quickstart"])
  assert argv[2] == shipped_configs.resolve("quickstart") != "quickstart"
  assert argv[3] == "--config.seed=3"
  assert argv[4] == "--config=" + shipped_configs.resolve("localization_quickstart")
  assert argv[6] == "quickstart"  # another flag's value is left alone


# Which library XLA:CPU compiles a 64-channel convolution to (the check of benchmarks/_timing.py).
_CONV_LIBRARY = """
import os, sys
{before}
import jax, numpy as np
x, k = np.zeros((1, 16, 16, 64), np.float32), np.zeros((3, 3, 64, 64), np.float32)
conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(x, k).compile().as_text()
{after}
print("ynn" in hlo.lower(), os.environ.get("XLA_FLAGS", ""))
"""


def _conv_library(before: str, after: str = "", **env: str) -> tuple[bool, str]:
  environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OVERFEAT_JAX_CPU_FLAGS")}
  environ.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **env)
  out = subprocess.run([sys.executable, "-c", _CONV_LIBRARY.format(before=before, after=after)],
                       capture_output=True, text=True, env=environ, timeout=120, check=True).stdout
  ynn, flags = out.strip().splitlines()[-1].split(" ", 1) if " " in out.strip() else (out.strip(), "")
  return ynn == "True", flags


@pytest.mark.skipif(not __import__("importlib.metadata").metadata.version("jaxlib").startswith("0.10."),
                    reason="the flag exists only in jaxlib 0.10's XLA")
def test_import_overfeat_jax_moves_cpu_convolutions_off_ynnpack():
  from overfeat_jax.cpu_flags import CPU_CONV_FLAG

  # The reference: jaxlib's default (opted out) compiles the convolution to YNNPACK.
  assert _conv_library("import overfeat_jax", OVERFEAT_JAX_CPU_FLAGS="0") == (True, "")
  # A notebook's `import overfeat_jax` first: XLA's own convolution, the flag in $XLA_FLAGS.
  assert _conv_library("import overfeat_jax") == (False, CPU_CONV_FLAG)
  # The user's other flags are kept; their own choice of this flag wins.
  assert _conv_library("import overfeat_jax", XLA_FLAGS="--xla_cpu_use_thunk_runtime=true") == (
      False, "--xla_cpu_use_thunk_runtime=true " + CPU_CONV_FLAG)
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
  assert _conv_library("import overfeat_jax", XLA_FLAGS=mine) == (True, mine)
  # After jax's backend started the import changes nothing (too late to take effect).
  assert _conv_library("", "import overfeat_jax") == (True, "")


def _copy_source(dest: pathlib.Path) -> None:
  """What `pip install .` of a fresh clone needs (a copy, so the build leaves the checkout clean)."""
  for name in ("pyproject.toml", "requirements.txt", "README.md"):
    shutil.copy(ROOT / name, dest / name)
  for name in ("overfeat_jax", "configs"):
    shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.mark.slow
def test_a_non_editable_install_runs_the_commands_and_configs_by_name(tmp_path):
  source, venv, away = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
  for d in (source, away):
    d.mkdir()
  _copy_source(source)
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  python = venv / "bin" / "python"
  # The dependencies: this environment's site-packages, after the venv's own (a plain path entry, so
  # its .pth files, e.g. an editable install of a checkout, are not processed).
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  pathlib.Path(site, "test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
  # --no-deps: the dependencies come from the test's own environment (no downloads but the build's).
  subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)], check=True,
                 timeout=300)
  shutil.rmtree(source)  # nothing may still point at the source tree
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(JAX_PLATFORMS="cpu")

  def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=away, env=env, timeout=300)

  where = run(str(python), "-c", "import overfeat_jax, overfeat_jax.shipped_configs as s; "
              "print(overfeat_jax.__file__); print(s.config_dir())")
  package_file, config_dir = where.stdout.split()
  assert package_file.startswith(str(venv)) and config_dir.startswith(str(venv)), where.stdout

  for cmd in ([str(python), "-m", "overfeat_jax.train"], [str(venv / "bin" / "overfeat-train")]):
    proc = run(*cmd, "--help")  # absl prints the docstring and exits with 1
    assert "python -m overfeat_jax.train --config quickstart" in proc.stdout, proc.stderr
  # A shipped config by name, one that loads its sibling by path: it loads and validates, and the
  # command gets as far as the (empty) work directory.
  empty = away / "empty"
  for cmd in ([str(python), "-m", "overfeat_jax.evaluate"], [str(venv / "bin" / "overfeat-evaluate")]):
    proc = run(*cmd, "--config", "localization_quickstart", "--workdir", str(empty))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "config" not in errors[0], proc.stderr
  image = away / "image.png"
  image.write_bytes(b"not a picture")
  for cmd in ([str(python), "-m", "overfeat_jax.predict"], [str(venv / "bin" / "overfeat-predict")]):
    proc = run(*cmd, "--config", "quickstart", "--workdir", str(empty), str(image))
    assert proc.returncode == 2 and f"error: cannot read image {image}" in proc.stderr, proc.stderr
  proc = run(str(python), "-m", "overfeat_jax.train", "--config", "nope", "--workdir", str(empty))
  assert proc.returncode == 2 and "quickstart" in proc.stderr and "nope" in proc.stderr, proc.stderr
