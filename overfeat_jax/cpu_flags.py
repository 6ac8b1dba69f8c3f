"""XLA:CPU settings that must be in place before jax starts its backend.

jaxlib 0.10's CPU backend hands convolutions to YNNPACK, which runs this model's large kernels
(7x7 and 11x11 stems, 5x5x1024 classifier) at a quarter to a third of the machine's matmul speed;
XLA's own convolution path runs them 1.3-1.8x faster end to end (quickstart training 136 -> 246
img/s; `benchmarks/dense_eval.py --cpu-conv {default,eigen}` measures both). The flag that selects it
exists only in that XLA generation, and an XLA that does not know a flag aborts at start-up, so it is
set only for jaxlib 0.10.x and only when the user has not chosen for themselves.

`import overfeat_jax` applies it (`apply_on_import`), so that notebook users get it as the commands
do, provided jax has not started a backend yet (XLA reads $XLA_FLAGS once, when the first backend
starts: import overfeat_jax before the first jax computation). A user's own
`--xla_cpu_experimental_ynn_fusion_type=...` in $XLA_FLAGS is kept, and OVERFEAT_JAX_CPU_FLAGS=0 in
the environment leaves $XLA_FLAGS untouched altogether.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
OPT_OUT = "OVERFEAT_JAX_CPU_FLAGS"  # "0": the import leaves $XLA_FLAGS alone
_before: str | None = None  # $XLA_FLAGS before we added CPU_CONV_FLAG, if we did


def use_fast_cpu_convolutions() -> bool:
  """Adds CPU_CONV_FLAG to $XLA_FLAGS where it is known to help; returns whether it is now set.

  Call before jax is imported (it only edits the environment). Accelerators ignore CPU flags.
  """
  current = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in current:
    return CPU_CONV_FLAG in current
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if not version.startswith("0.10."):
    return False
  global _before
  _before = current
  os.environ["XLA_FLAGS"] = f"{current} {CPU_CONV_FLAG}".strip()
  return True


def take_back() -> None:
  """Restores $XLA_FLAGS as it was before `use_fast_cpu_convolutions` added the flag (if it did):
  jaxlib's own convolutions again, for a comparison. Call before jax starts its backend."""
  global _before
  if _before is not None and os.environ.get("XLA_FLAGS", "").endswith(CPU_CONV_FLAG):
    os.environ["XLA_FLAGS"] = _before
  _before = None


def _backend_started() -> bool:
  """Whether jax has started a backend already (so that $XLA_FLAGS was read); never imports jax."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # no public query in jax 0.10
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # another jax: assume the worst, change nothing
    return True


def apply_on_import() -> bool:
  """`use_fast_cpu_convolutions()` unless $OVERFEAT_JAX_CPU_FLAGS is "0" or jax's backend has started
  (a late change would not take effect, only mislead). Returns whether the flag is now set."""
  if os.environ.get(OPT_OUT, "1") == "0" or _backend_started():
    return CPU_CONV_FLAG in os.environ.get("XLA_FLAGS", "")
  return use_fast_cpu_convolutions()
