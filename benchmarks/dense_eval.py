"""Dense evaluation with offset max-pooling vs the naive per-window classifier (SPEC A4).

  python benchmarks/dense_eval.py                          # the paper's accurate model, ~3-5 min on 2 cores
  python benchmarks/dense_eval.py --width 0.125 --runs 2   # quick smoke run (same image, same grid)
  python benchmarks/dense_eval.py --model fast             # fast model: 2x2 offsets

One image of 461x569 (scale 6 of SPEC A4), batch 1, float32, random He-scaled weights, timed on the
CPU and, when jax has one, on the default accelerator:
  (i)   fine:   evaluation.dense.dense_class_map(fine=True): the features once, the 3x3 pooling
                offsets vmapped through the classifier, interleaved: a 21x30 class map;
  (ii)  coarse: dense_class_map(fine=False): one pooling offset, a 7x10 map;
  (iii) naive:  each of the 21x30 = 630 field-of-view windows (221x221 at input stride 12, the
                stride before the last pool) cropped and run through the whole network, --chunk
                windows per jitted call;
and the feature extractor alone (model.features), compared with a large float32 matmul.
Wall times are medians over --runs calls after one compiling call (--naive-runs full passes for
(iii)); FLOPs are analytic (2 x multiply-adds from the layer map sizes) and XLA's cost analysis.
Then the issue's targets with PASS/FAIL, and a breakdown of where the time goes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import _timing
from overfeat_jax.evaluation import dense
from overfeat_jax.models.overfeat import (OverFeat, build_architecture, fc_names, layer_map_sizes,
                                         param_count)
from overfeat_jax.ops import pooling

# The targets.
MIN_SPEEDUP_VS_NAIVE = 25.0  # (i) at least this many times faster than (iii) (FLOP ratio ~29x)
RATIO_TOLERANCE = 0.15  # time ratio (i)/(ii) within 15% of the FLOP ratio (i)/(ii) (~2.6x)
MIN_CONV_VS_MATMUL = 0.70  # conv layers reach >= 70% of the matmul GFLOP/s


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", choices=("accurate", "fast"), default="accurate")
  parser.add_argument("--width", type=float, default=1.0,
                      help="channel width multiplier (1.0 = the paper's; e.g. 0.125 for a smoke run)")
  parser.add_argument("--size", type=int, nargs=2, default=(461, 569), metavar=("H", "W"),
                      help="input image size (default 461 569, scale 6 of SPEC A4)")
  parser.add_argument("--num-classes", type=int, default=1000)
  parser.add_argument("--runs", type=int, default=5, help="timed calls of (i), (ii) and features")
  parser.add_argument("--naive-runs", type=int, default=1, help="timed full passes of (iii)")
  parser.add_argument("--chunk", type=int, default=30, help="windows per call in (iii)")
  parser.add_argument("--cpu-conv", choices=_timing.CPU_CONV_CHOICES, default="default",
                      help="XLA:CPU convolution library: 'default' (jaxlib's choice, YNNPACK in jax "
                           "0.10) or 'eigen' (adds " + _timing.EIGEN_CONV_FLAG + " to XLA_FLAGS)")
  parser.add_argument("--matmul-size", type=int, default=4096,
                      help="side of the square float32 matmul reference (default 4096)")
  parser.add_argument("--platforms", default="",
                      help="comma-separated jax platforms to time on (default: cpu, and the default "
                           "backend if it is not cpu)")
  parser.add_argument("--no-breakdown", action="store_true",
                      help="skip the per-component breakdown and the prototypes")
  return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------
# The three ways to get a dense class map


def naive_chunk_fn(model: OverFeat, grid: tuple[int, int], stride: int,
                   chunk: int) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """(iii): a jitted call that crops `chunk` windows and runs the whole network on each.

  Window u = (r, c) of the rows x cols grid is image[r * stride : + fov, c * stride : + fov], the
  input window of fine-map cell u (dense.py: "cell u sees ... u * prepool_stride").
  Returns fn(variables, image [1, H, W, 3], start [] int32) -> logits [chunk, K] for windows
  start, start + 1, ... (row-major; indices past the last window repeat it).
  """
  rows, cols = grid
  fov = model.arch.train_size

  def fn(variables: Any, image: jax.Array, start: jax.Array) -> jax.Array:
    index = jnp.minimum(start + jnp.arange(chunk), rows * cols - 1)  # [chunk]

    def crop(i: jax.Array) -> jax.Array:
      return jax.lax.dynamic_slice(image[0], ((i // cols) * stride, (i % cols) * stride, 0),
                                   (fov, fov, image.shape[-1]))

    windows = jax.vmap(crop)(index)  # [chunk, fov, fov, 3]
    return model.apply(variables, windows, train=False)  # [chunk, K]

  return jax.jit(fn)


def run_naive(fn: Callable, variables: Any, image: jax.Array, num_windows: int,
              chunk: int) -> tuple[jax.Array, list[float]]:
  """All windows through `fn`, chunk by chunk: (logits [num_windows, K], seconds per chunk)."""
  outputs, seconds = [], []
  for start in range(0, num_windows, chunk):
    t0 = time.perf_counter()
    outputs.append(jax.block_until_ready(fn(variables, image, jnp.int32(start))))
    seconds.append(time.perf_counter() - t0)
  return jnp.concatenate(outputs)[:num_windows], seconds


# ------------------------------------------------------------------------------------------------
# Prototypes for the breakdown (alternatives to dense.py's vmap; not library code)


def classify_folded(model: OverFeat, variables: Any, pooled: jax.Array) -> jax.Array:
  """The offset axis folded into the batch axis instead of vmapped.

  pooled: [P*P, B, n_h, n_w, C] -> logits [P*P, B, h', w', K].
  """
  p2, b = pooled.shape[:2]
  logits = model.apply(variables, pooled.reshape((p2 * b,) + pooled.shape[2:]), method="classify")
  return logits.reshape((p2, b) + logits.shape[1:])


def classify_im2col(model: OverFeat, variables: Any, pooled: jax.Array) -> jax.Array:
  """The classifier as plain matmuls: the first FC layer on explicit k x k patches (im2col).

  pooled: [P*P, B, n_h, n_w, C] -> logits [P*P, B, h', w', K] (ReLU between layers, no dropout:
  evaluation).
  """
  params = variables["params"]["classifier"]
  k = model.arch.fc_kernel
  p2, b, n_h, n_w, c = pooled.shape
  h, w = n_h - k + 1, n_w - k + 1
  # [P*P, B, h, w, k, k, C]: patch (dy, dx, c) in the HWIO kernel's row-major order.
  patches = jnp.stack([jnp.stack([pooled[:, :, dy:dy + h, dx:dx + w, :] for dx in range(k)], axis=4)
                       for dy in range(k)], axis=4)
  x = patches.reshape(p2 * b * h * w, k * k * c)
  names = fc_names(model.arch)
  for j, name in enumerate(names):
    kernel = params[name]["kernel"]
    x = x @ kernel.reshape(-1, kernel.shape[-1]) + params[name]["bias"]
    if j < len(names) - 1:
      x = jax.nn.relu(x)
  return x.reshape(p2, b, h, w, -1)


def fine_map_im2col(model: OverFeat, variables: Any, images: jax.Array) -> jax.Array:
  """dense_class_map(fine=True) with `classify_im2col` in place of the vmapped conv classifier.

  images: [B, H, W, 3] -> [B, H', W', K] logits (the same map).
  """
  pool = model.arch.last_pool
  prepool = model.apply(variables, images, method="features")
  return pooling.interleave_offsets(
      classify_im2col(model, variables, pooling.offset_max_pool(prepool, pool)), pool)


def conv_layer_fn(stride: int, padding: int) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """One NHWC x HWIO convolution as the model runs it (no bias/ReLU), jitted."""
  def fn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.jit(fn)


# ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], runs: int) -> float:
  """Median seconds of `runs` calls after one compiling call."""
  return _timing.median(_timing.time_calls(fn, runs=runs, warmup=1))


def gflops_per_s(flops: float, seconds: float) -> float:
  return flops / seconds / _timing.GIGA


def bench_platform(model: OverFeat, args: argparse.Namespace, device: jax.Device,
                   params: Any) -> None:
  """Prints the tables and targets for one device."""
  arch, k = model.arch, args.num_classes
  h, w = args.size
  print(f"\n=== {_timing.machine_header(device)}", flush=True)
  variables = jax.device_put({"params": params}, device)
  image = jax.device_put(np.random.default_rng(0).standard_normal((1, h, w, 3), np.float32), device)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (variables, image))

  matmul = _timing.matmul_gflops(args.matmul_size, device=device)
  print(f"matmul reference: float32 {args.matmul_size}x{args.matmul_size} jnp.dot = "
        f"{matmul:,.1f} GFLOP/s", flush=True)

  fine_fn = jax.jit(lambda v, x: dense.dense_class_map(model, v, x, fine=True))
  coarse_fn = jax.jit(lambda v, x: dense.dense_class_map(model, v, x, fine=False))
  features_fn = jax.jit(lambda v, x: model.apply(v, x, method="features"))

  fine_shape = jax.eval_shape(fine_fn, *abstract).shape  # [1, rows, cols, K]
  coarse_shape = jax.eval_shape(coarse_fn, *abstract).shape
  grid = tuple(fine_shape[1:3])
  num_windows = grid[0] * grid[1]
  stride, fov = arch.prepool_stride, arch.train_size
  if (grid[0] - 1) * stride + fov > h or (grid[1] - 1) * stride + fov > w:
    raise SystemExit(f"the {grid[0]}x{grid[1]} window grid does not fit a {h}x{w} image")
  chunk = min(args.chunk, num_windows)
  num_chunks = -(-num_windows // chunk)
  naive_fn = naive_chunk_fn(model, grid, stride, chunk)

  flops_fine = sum(_timing.forward_flops(arch, k, h, w, fine=True).values())
  flops_coarse = sum(_timing.forward_flops(arch, k, h, w, fine=False).values())
  flops_window = sum(_timing.forward_flops(arch, k, fov, fov, fine=False).values())
  flops_naive = num_windows * flops_window
  flops_features = sum(_timing.feature_flops(arch, h, w).values())
  xla_fine = _timing.xla_flops(fine_fn, *abstract)
  xla_coarse = _timing.xla_flops(coarse_fn, *abstract)
  xla_features = _timing.xla_flops(features_fn, *abstract)
  xla_chunk = _timing.xla_flops(naive_fn, *abstract, jax.ShapeDtypeStruct((), jnp.int32))
  xla_naive = None if xla_chunk is None else xla_chunk * num_chunks

  t_fine = timed(lambda: fine_fn(variables, image), args.runs)
  print(f"  (i) fine: {t_fine:.3f} s", file=sys.stderr, flush=True)
  t_coarse = timed(lambda: coarse_fn(variables, image), args.runs)
  print(f"  (ii) coarse: {t_coarse:.3f} s", file=sys.stderr, flush=True)
  t_features = timed(lambda: features_fn(variables, image), args.runs)
  print(f"  features: {t_features:.3f} s", file=sys.stderr, flush=True)

  jax.block_until_ready(naive_fn(variables, image, jnp.int32(0)))  # compile
  naive_totals, chunk_seconds = [], []
  for _ in range(args.naive_runs):
    naive_logits, seconds = run_naive(naive_fn, variables, image, num_windows, chunk)
    naive_totals.append(sum(seconds))
    chunk_seconds += seconds
    print(f"  (iii) naive: {sum(seconds):.1f} s", file=sys.stderr, flush=True)
  t_naive = _timing.median(naive_totals)

  fine_map = np.asarray(fine_fn(variables, image))[0]  # [rows, cols, K]
  naive_map = np.asarray(naive_logits).reshape(fine_map.shape)
  rel_diff = float(np.abs(fine_map - naive_map).max() / np.abs(fine_map).max())
  same_argmax = float(np.mean(fine_map.argmax(-1) == naive_map.argmax(-1)))

  pool = arch.last_pool
  rows_out = [
      [f"(i) fine: features once, {pool}x{pool} offsets vmapped", f"{grid[0]}x{grid[1]}",
       f"{t_fine:.3f}", _timing.fmt(flops_fine / 1e9), _timing.fmt(_gb(xla_fine)),
       _timing.fmt(gflops_per_s(flops_fine, t_fine)), f"{t_naive / t_fine:.1f}x",
       f"{flops_naive / flops_fine:.1f}x"],
      [f"(ii) coarse: one offset", f"{coarse_shape[1]}x{coarse_shape[2]}", f"{t_coarse:.3f}",
       _timing.fmt(flops_coarse / 1e9), _timing.fmt(_gb(xla_coarse)),
       _timing.fmt(gflops_per_s(flops_coarse, t_coarse)), f"{t_naive / t_coarse:.1f}x",
       f"{flops_naive / flops_coarse:.1f}x"],
      [f"(iii) naive: {num_windows} windows {fov}x{fov} stride {stride}, {chunk}/call",
       f"{grid[0]}x{grid[1]}", f"{t_naive:.2f}", _timing.fmt(flops_naive / 1e9),
       _timing.fmt(_gb(xla_naive)), _timing.fmt(gflops_per_s(flops_naive, t_naive)), "1.0x",
       "1.0x"],
      ["conv layers only (model.features)", "-", f"{t_features:.3f}",
       _timing.fmt(flops_features / 1e9), _timing.fmt(_gb(xla_features)),
       _timing.fmt(gflops_per_s(flops_features, t_features)), "-", "-"],
  ]
  print(f"\n{arch.name} model, {param_count(params) / 1e6:.1f}M parameters, {k} classes, one "
        f"{h}x{w} image, batch 1, float32; (i)/(ii)/features: median of {args.runs} runs, (iii): "
        f"median of {args.naive_runs} full pass(es) of {num_chunks} calls "
        f"(median call {_timing.median(chunk_seconds):.2f} s x {num_chunks} = "
        f"{_timing.median(chunk_seconds) * num_chunks:.1f} s)")
  print(_timing.format_table(
      ["method", "map", "wall s", "GFLOP", "GFLOP (XLA)", "GFLOP/s", "speed-up vs (iii)",
       "FLOP ratio (iii)/x"], rows_out))
  print(f"(iii) vs (i) logits: max |diff| / max |logit| = {rel_diff:.2e}, same argmax at "
        f"{100 * same_argmax:.0f}% of cells ({'' if arch.convs[2].padding else 'no '}zero padding "
        f"in layers 3+: {'windows see zeros where the dense pass sees neighbours, so they differ' if arch.convs[2].padding else 'they should agree'})")

  conv_rate = gflops_per_s(flops_features, t_features)
  speedup = t_naive / t_fine
  time_ratio, flop_ratio = t_fine / t_coarse, flops_fine / flops_coarse
  ratio_error = time_ratio / flop_ratio - 1
  targets = [
      (f"(i) >= {MIN_SPEEDUP_VS_NAIVE:.0f}x faster than (iii) (FLOP ratio "
       f"{flops_naive / flops_fine:.1f}x)", f"{speedup:.1f}x", speedup >= MIN_SPEEDUP_VS_NAIVE),
      (f"time ratio (i)/(ii) within {100 * RATIO_TOLERANCE:.0f}% of FLOP ratio (i)/(ii) "
       f"{flop_ratio:.2f}x", f"{time_ratio:.2f}x ({100 * ratio_error:+.0f}%)",
       abs(ratio_error) <= RATIO_TOLERANCE),
      (f"conv layers >= {100 * MIN_CONV_VS_MATMUL:.0f}% of matmul GFLOP/s ({matmul:,.1f})",
       f"{conv_rate:,.1f} GFLOP/s = {100 * conv_rate / matmul:.0f}%",
       conv_rate >= MIN_CONV_VS_MATMUL * matmul),
  ]
  print("\ntargets:")
  print(_timing.format_table(["target", "measured", "result"],
                             [[t, m, "PASS" if ok else "FAIL"] for t, m, ok in targets]))

  if not args.no_breakdown:
    breakdown(model, variables, image, args, matmul, fine_map=fine_map, t_fine=t_fine,
              t_coarse=t_coarse, t_features=t_features, t_naive=t_naive)


def _gb(flops: float | None) -> float | None:
  return None if flops is None else flops / _timing.GIGA


def breakdown(model: OverFeat, variables: Any, image: jax.Array, args: argparse.Namespace,
              matmul: float, *, fine_map: np.ndarray, t_fine: float, t_coarse: float,
              t_features: float, t_naive: float) -> None:
  """Where the time of (i) and (ii) goes: per conv layer, pooling, the classifier three ways.

  fine_map: (i)'s [rows, cols, K] logits, to check the prototypes against; t_*: the seconds measured
  for (i), (ii), the features and (iii).
  """
  arch, k = model.arch, args.num_classes
  h, w = args.size
  runs = args.runs
  rows = []

  def add(name: str, shape: str, seconds: float, flops: float) -> None:
    rate = gflops_per_s(flops, seconds) if flops else None
    rows.append([name, shape, f"{1e3 * seconds:,.1f}", _timing.fmt(flops / 1e9, 2),
                 _timing.fmt(rate), "-" if rate is None else f"{100 * rate / matmul:.0f}%"])

  # Each conv layer alone, on its real input shape (lax.conv as nn.Conv calls it, no bias/ReLU).
  sizes = layer_map_sizes(arch, h, w)
  conv_flops = _timing.feature_flops(arch, h, w)
  in_hw, c_in = (h, w), 3
  params = variables["params"]["extractor"]
  for i, layer in enumerate(arch.convs, start=1):
    x = jax.device_put(jnp.ones((1,) + in_hw + (c_in,), jnp.float32), image.device)
    kernel = params[f"conv{i}"]["kernel"]
    fn = conv_layer_fn(layer.stride, layer.padding)
    add(f"conv{i} {layer.kernel}x{layer.kernel}/{layer.stride} {c_in}->{layer.features}",
        f"{in_hw[0]}x{in_hw[1]} -> {sizes[f'conv{i}'][0]}x{sizes[f'conv{i}'][1]}",
        timed(lambda: fn(x, kernel), runs), conv_flops[f"conv{i}"])
    in_hw, c_in = sizes.get(f"pool{i}", sizes[f"conv{i}"]), layer.features
  add("all conv layers (model.features)", f"{h}x{w}", t_features, sum(conv_flops.values()))

  # The classifier on the offset-pooled maps: as dense.py runs it (vmap), and two prototypes.
  prepool = jax.jit(lambda v, x: model.apply(v, x, method="features"))(variables, image)
  pool = arch.last_pool
  pool_fn = jax.jit(lambda x: pooling.offset_max_pool(x, pool))
  pooled = pool_fn(prepool)  # [P*P, 1, n_h, n_w, C]
  add(f"offset_max_pool ({pool}x{pool} offsets)", "x".join(map(str, prepool.shape[1:3])),
      timed(lambda: pool_fn(prepool), runs), 0.0)
  per_offset = sum(_timing.classifier_flops(arch, k, *pooled.shape[2:4]).values())
  first_fc = fc_names(arch)[0]
  fc_first = _timing.classifier_flops(arch, k, *pooled.shape[2:4])[first_fc]
  p2 = pooled.shape[0]
  shape = f"{p2}x{'x'.join(map(str, pooled.shape[2:]))}"
  vmapped = jax.jit(lambda v, p: jax.vmap(lambda q: model.apply(v, q, method="classify"))(p))
  folded = jax.jit(lambda v, p: classify_folded(model, v, p))
  im2col = jax.jit(lambda v, p: classify_im2col(model, v, p))
  one = jax.jit(lambda v, p: model.apply(v, p[0], method="classify"))
  reference = np.asarray(vmapped(variables, pooled))
  for name, fn in [("vmap over offsets (dense.py)", vmapped),
                   ("offsets folded into batch", folded), ("im2col + matmul", im2col)]:
    error = float(np.abs(np.asarray(fn(variables, pooled)) - reference).max()
                  / np.abs(reference).max())
    add(f"classifier, {name} (rel. diff {error:.0e})", shape,
        timed(lambda: fn(variables, pooled), runs), p2 * per_offset)
  add("classifier, one offset", "1x" + "x".join(map(str, pooled.shape[2:])),
      timed(lambda: one(variables, pooled), runs), per_offset)
  # The first FC layer's work as one plain matmul: [positions, k*k*C] @ [k*k*C, fc_features[0]].
  positions = int(p2 * (pooled.shape[2] - arch.fc_kernel + 1) * (pooled.shape[3] - arch.fc_kernel + 1))
  depth = arch.fc_kernel ** 2 * pooled.shape[-1]
  a = jax.device_put(jnp.ones((positions, depth), jnp.float32), image.device)
  b = jax.device_put(jnp.ones((depth, arch.fc_features[0]), jnp.float32), image.device)
  dot = jax.jit(jnp.dot)
  add(f"{first_fc} as one matmul [{positions}, {depth}] @ [{depth}, {arch.fc_features[0]}]", "-",
      timed(lambda: dot(a, b), runs), fc_first * p2)
  flops_fine = sum(_timing.forward_flops(arch, k, h, w, fine=True).values())
  add("(i) fine, whole", f"{h}x{w}", t_fine, flops_fine)
  fine_im2col = jax.jit(lambda v, x: fine_map_im2col(model, v, x))
  error = float(np.abs(np.asarray(fine_im2col(variables, image))[0] - fine_map).max()
                / np.abs(fine_map).max())
  t_prototype = timed(lambda: fine_im2col(variables, image), runs)
  add(f"(i) fine, classifier as im2col + matmul (prototype; rel. diff {error:.0e})", f"{h}x{w}",
      t_prototype, flops_fine)
  add("(ii) coarse, whole", f"{h}x{w}", t_coarse,
      sum(_timing.forward_flops(arch, k, h, w, fine=False).values()))
  print(f"\nbreakdown (median of {runs} runs each; % = of the matmul reference):")
  print(_timing.format_table(["component", "input", "ms", "GFLOP", "GFLOP/s", "vs matmul"], rows))
  print(f"prototype (i) with the im2col classifier: {t_naive / t_prototype:.1f}x faster than (iii) "
        f"(target >= {MIN_SPEEDUP_VS_NAIVE:.0f}x), time ratio to (ii) {t_prototype / t_coarse:.2f}x "
        f"(FLOP ratio {flops_fine / sum(_timing.forward_flops(arch, k, h, w, fine=False).values()):.2f}x)")


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  _timing.request_cpu_conv(args.cpu_conv)  # before any computation initialises the CPU backend
  arch = build_architecture(args.model, width=args.width)
  model = OverFeat(arch, num_classes=args.num_classes)
  print("dense evaluation with offset max-pooling (SPEC A4) vs per-window evaluation")
  print(f"jax {jax.__version__}; default backend {jax.default_backend()}; model {arch.name}: "
        f"train size {arch.train_size}, pre-pool stride {arch.prepool_stride}, last pool "
        f"{arch.last_pool}", flush=True)
  params = _timing.random_params(model)
  platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
  if not platforms:
    platforms = ["cpu"] + ([jax.default_backend()] if jax.default_backend() != "cpu" else [])
  for platform in platforms:
    bench_platform(model, args, jax.devices(platform)[0], params)


if __name__ == "__main__":
  main(sys.argv[1:])
