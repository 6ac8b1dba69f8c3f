"""XLA:CPU settings that must be in place before jax starts its backend.

jaxlib 0.10's CPU backend hands convolutions to YNNPACK, which runs this model's large kernels
(7x7 and 11x11 stems, 5x5x1024 classifier) at a quarter to a third of the machine's matmul speed;
XLA's own convolution path runs them 1.3-1.8x faster end to end (quickstart training 136 -> 246
img/s; `benchmarks/dense_eval.py --cpu-conv {default,eigen}` measures both). The flag that selects it
exists only in that XLA generation, and an XLA that does not know a flag aborts at start-up, so it is
set only for jaxlib 0.10.x and only when the user has not chosen for themselves.
"""

from __future__ import annotations

import importlib.metadata
import os

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


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
  os.environ["XLA_FLAGS"] = f"{current} {CPU_CONV_FLAG}".strip()
  return True
