"""Shared helpers of the benchmark scripts: timing, FLOP counts (analytic and XLA's), the matmul
reference, a machine header and plain-text tables. Not part of the library; never run by pytest.

FLOPs are counted as 2 x multiply-adds of the convolutions and the FC-as-conv layers (bias adds,
ReLU and pooling are left out: they are < 0.5% of the total for these networks).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from overfeat_jax.cpu_flags import CPU_CONV_FLAG, take_back, use_fast_cpu_convolutions
from overfeat_jax.models.overfeat import Architecture, OverFeat, fc_names, layer_map_sizes
from overfeat_jax.ops import pooling

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GIGA = 1e9


# ------------------------------------------------------------------------------------------------
# Configs and parameters


def load_config(name: str) -> ml_collections.ConfigDict:
  """configs/<name>.py's get_config() (name without '.py', e.g. 'quickstart')."""
  path = REPO_ROOT / "configs" / f"{name}.py"
  if not path.exists():
    available = sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.py"))
    raise SystemExit(f"no config {path}; available: {', '.join(available)}")
  spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def abstract_params(model: OverFeat) -> Any:
  """The model's parameter shapes (jax.ShapeDtypeStruct pytree), allocating nothing."""
  s = model.arch.train_size
  images = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
  return jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0),
                        images)["params"]


def random_params(model: OverFeat, seed: int = 0) -> Any:
  """He-scaled random parameters from numpy: kernels N(0, 2 / fan_in), biases N(0, 0.01^2).

  Timing does not depend on the values, but numpy avoids compiling threefry init for 145M
  parameters, and He scaling keeps activations O(1) (no denormals, which are slow on CPUs).
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "bias":
      return jnp.asarray(0.01 * rng.standard_normal(leaf.shape, np.float32))
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2 / fan_in)))

  return jax.tree_util.tree_map_with_path(fill, abstract_params(model))


# ------------------------------------------------------------------------------------------------
# Analytic FLOPs (2 x multiply-adds)


def _conv_flops(out_hw: tuple[int, int], kernel: int, c_in: int, c_out: int) -> float:
  return 2.0 * out_hw[0] * out_hw[1] * kernel * kernel * c_in * c_out


def feature_flops(arch: Architecture, h: int, w: int) -> dict[str, float]:
  """FLOPs of each conv layer of the feature extractor for one h x w image: {'conv1': ..., ...}."""
  sizes = layer_map_sizes(arch, h, w)
  flops, c_in = {}, 3
  for i, layer in enumerate(arch.convs, start=1):
    flops[f"conv{i}"] = _conv_flops(sizes[f"conv{i}"], layer.kernel, c_in, layer.features)
    c_in = layer.features
  return flops


def classifier_flops(arch: Architecture, num_classes: int, pooled_h: int,
                     pooled_w: int) -> dict[str, float]:
  """FLOPs of each FC-as-conv layer on one pooled map of pooled_h x pooled_w cells."""
  flops, c_in = {}, arch.convs[-1].features
  h, w = pooled_h, pooled_w
  widths = arch.fc_features + (num_classes,)
  for j, (name, c_out) in enumerate(zip(fc_names(arch), widths)):
    kernel = arch.fc_kernel if j == 0 else 1
    h, w = h - kernel + 1, w - kernel + 1
    flops[name] = _conv_flops((h, w), kernel, c_in, c_out)
    c_in = c_out
  return flops


def prepool_size(arch: Architecture, h: int, w: int) -> tuple[int, int]:
  """The last conv's (pre-pool) map size for an h x w input."""
  return layer_map_sizes(arch, h, w)[f"conv{len(arch.convs)}"]


def forward_flops(arch: Architecture, num_classes: int, h: int, w: int, *,
                  fine: bool) -> dict[str, float]:
  """{'features': F, 'classifier': C} for one h x w image.

  fine=False: the last pool at offset 0 (the plain network / class_map). fine=True: the classifier
  runs on each of the pool x pool offset-pooled maps (SPEC A4), the features once.
  """
  features = sum(feature_flops(arch, h, w).values())
  ph, pw = prepool_size(arch, h, w)
  pool = arch.last_pool
  if fine:
    n_h, n_w = pooling.offset_pooled_size(ph, pool), pooling.offset_pooled_size(pw, pool)
    classifier = pool * pool * sum(classifier_flops(arch, num_classes, n_h, n_w).values())
  else:
    classifier = sum(classifier_flops(arch, num_classes, ph // pool, pw // pool).values())
  return {"features": features, "classifier": classifier}


# ------------------------------------------------------------------------------------------------
# XLA's own count


def xla_flops(jitted: Any, *args: Any, **kwargs: Any) -> float | None:
  """FLOPs of one call as XLA's cost analysis of the compiled executable counts them, or None.

  `jitted` is a jax.jit-wrapped function; the arguments may be arrays or ShapeDtypeStructs.
  """
  try:
    analysis = jitted.lower(*args, **kwargs).compile().cost_analysis()
  except Exception:  # Not every backend / version implements it; the tables then print "n/a".
    return None
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per executable
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  flops = float(analysis["flops"])
  return flops if flops > 0 else None


# ------------------------------------------------------------------------------------------------
# Timing


def time_calls(fn: Callable[[], Any], *, runs: int, warmup: int = 1) -> list[float]:
  """Seconds of each of `runs` calls of fn() (after `warmup` untimed calls, which compile).

  Each call is waited for with jax.block_until_ready on its result, so asynchronous dispatch does
  not hide device time.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  seconds = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - start)
  return seconds


def time_interleaved(fns: dict[str, Callable[[], Any]], *, runs: int) -> dict[str, list[float]]:
  """Like time_calls for several functions, taking turns: round r times each fn once.

  On a shared machine the load drifts; interleaving exposes every function to the same drift, so
  their time ratios stay meaningful. Each fn is called once untimed first (compiles).
  """
  for fn in fns.values():
    jax.block_until_ready(fn())
  seconds: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      seconds[name].append(time.perf_counter() - start)
  return seconds


def median(values: Sequence[float]) -> float:
  return float(statistics.median(values))


def matmul_gflops(n: int, *, runs: int = 5, device: jax.Device | None = None) -> float:
  """The machine's float32 matmul speed: a jitted n x n @ n x n jnp.dot, 2 n^3 FLOPs, median time."""
  rng = np.random.default_rng(0)
  a = jax.device_put(rng.standard_normal((n, n), np.float32), device)
  b = jax.device_put(rng.standard_normal((n, n), np.float32), device)
  # Default precision, as the model uses (on GPUs that may mean TF32 for both).
  dot = jax.jit(jnp.dot)
  seconds = median(time_calls(lambda: dot(a, b), runs=runs))
  return 2.0 * n ** 3 / seconds / GIGA


# ------------------------------------------------------------------------------------------------
# XLA:CPU convolution library

# jaxlib 0.10's XLA:CPU hands convolutions (and dots) to YNNPACK by default; the CLIs, the library's
# notebook users and the tests move convolutions to XLA's Eigen path (overfeat_jax.cpu_flags; dots
# stay on YNNPACK). By default the benchmarks run exactly what the CLIs run ('cli'); 'ynnpack' puts
# XLA_FLAGS back as the user set them (`import overfeat_jax` added the flag), to compare with jaxlib's
# own choice.
EIGEN_CONV_FLAG = CPU_CONV_FLAG
CPU_CONV_CHOICES = ("cli", "ynnpack")


def request_cpu_conv(choice: str) -> None:
  """'cli': the CLIs' XLA:CPU settings (cpu_flags.use_fast_cpu_convolutions); 'ynnpack': jaxlib's
  defaults. Call before jax initialises a backend."""
  if choice == "cli":
    use_fast_cpu_convolutions()
  else:
    take_back()


def add_machine_args(parser: argparse.ArgumentParser) -> None:
  """The flags every benchmark shares: --cpu-conv and --matmul-size."""
  parser.add_argument("--cpu-conv", choices=CPU_CONV_CHOICES, default="cli",
                      help="XLA:CPU convolutions: 'cli' (default: what train.py / evaluate.py run, "
                           "XLA's Eigen convolutions via " + EIGEN_CONV_FLAG + ") or "
                           "'ynnpack' (jaxlib 0.10's default, XLA_FLAGS left as they are)")
  parser.add_argument("--matmul-size", type=int, default=4096,
                      help="side of the square float32 matmul reference (default 4096)")


def cpu_conv_library() -> str:
  """Which library XLA:CPU compiles a 3x3, 64-channel float32 convolution to: 'YNNPACK' or 'XLA/Eigen'.

  (XLA picks per convolution: very small ones, e.g. 16 channels or 3 input channels, stay on Eigen.)
  """
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  cpu = jax.devices("cpu")[0]
  x = jax.device_put(np.zeros((1, 16, 16, 64), np.float32), cpu)  # committed: compiles for the CPU
  k = jax.device_put(np.zeros((3, 3, 64, 64), np.float32), cpu)
  hlo = conv.lower(x, k).compile().as_text()
  return "YNNPACK" if "ynn" in hlo.lower() else "XLA/Eigen"


# ------------------------------------------------------------------------------------------------
# Output


def machine_header(device: jax.Device | None = None) -> str:
  """jax version, backend, device kind and count, host CPUs and load average."""
  device = device or jax.devices()[0]
  try:
    load = "load average %.2f %.2f %.2f" % os.getloadavg()
  except OSError:
    load = "load average n/a"
  line = (f"jax {jax.__version__} | backend {device.platform} | device {device.device_kind} "
          f"(x{len(jax.devices(device.platform))}) | host {platform.machine()} {os.cpu_count()} CPUs"
          f" | {load}")
  if device.platform == "cpu":
    line += (f" | CPU convolutions: {cpu_conv_library()} | "
             f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(unset)'}")
  return line


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table, columns left-aligned, floats as given (pre-format them)."""
  cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
  """A float with `digits` decimals, or 'n/a'."""
  return "n/a" if value is None else f"{value:,.{digits}f}"
