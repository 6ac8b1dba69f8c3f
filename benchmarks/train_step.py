"""Train-step throughput of each config at its training input size (SPEC A3), on the default device.

  python benchmarks/train_step.py                                  # all three configs
  python benchmarks/train_step.py --configs quickstart --steps 10
  python benchmarks/train_step.py --configs overfeat_fast_imagenet --batch 32
  python benchmarks/train_step.py --cpu-conv ynnpack               # jaxlib's default YNNPACK convolutions

Runs the library's own jitted step (training.steps.compile_train_step over mesh.make_mesh,
with the config's optimizer and schedule and the classification loss the training loop uses) on
random images and labels, compiles it with one untimed step, then times --steps steps, each waited
for with block_until_ready. Prints img/s, ms/step, GFLOP per image (forward + backward ~ 3 x the
analytic forward count, and XLA's cost analysis of the whole compiled step), the achieved GFLOP/s,
and a large float32 matmul's GFLOP/s on the same device for comparison.

Batch: the config's input.batch_size, except that on a CPU the paper models (train size > 100 px)
default to --cpu-batch (16) so that a step takes seconds, not minutes; the table says which. At 8
the accurate model's step loses a quarter of its time to the optimizer update, a memory-bound pass
over its 145M parameters and momentum buffers that does not shrink with the batch.

--breakdown adds, per config, where the step's time goes: the forward pass and loss alone, forward
+ backward (the gradients, no update), and the whole step, each jitted on its own, as ms and as
GFLOP/s (forward 1x, the others 3x the analytic forward count) against the matmul reference.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import jax
import numpy as np

import _timing
from overfeat_jax.models.overfeat import build_model, param_count
from overfeat_jax import mesh as mesh_lib
from overfeat_jax.tasks import classification
from overfeat_jax.training import optim, steps
from overfeat_jax.training.state import TrainState

DEFAULT_CONFIGS = ("quickstart", "overfeat_fast_imagenet", "overfeat_accurate_imagenet")
# Models whose training input is larger than this are "full size": small batch on a CPU.
FULL_SIZE_PX = 100
# Steps per epoch for the schedule (irrelevant to speed: the halving boundaries are never reached).
STEPS_PER_EPOCH = 10_000


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                      help="comma-separated config names from configs/ (default: all three)")
  parser.add_argument("--batch", type=int, default=0,
                      help="global batch for every config (0: the config's; see --cpu-batch)")
  parser.add_argument("--cpu-batch", type=int, default=16,
                      help="batch for full-size models on a CPU when --batch is 0 (default 16)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per config (default 5)")
  parser.add_argument("--breakdown", action="store_true",
                      help="also time the forward pass and forward + backward alone, per config")
  _timing.add_machine_args(parser)
  return parser.parse_args(argv)


def choose_batch(config_batch: int, train_size: int, args: argparse.Namespace) -> tuple[int, str]:
  """(global batch, where it came from) for one config."""
  if args.batch:
    return args.batch, "--batch"
  if jax.default_backend() == "cpu" and train_size > FULL_SIZE_PX:
    return min(args.cpu_batch, config_batch), "CPU-reduced"
  return config_batch, "config"


def bench_config(name: str, args: argparse.Namespace, mesh: Any) -> dict[str, Any]:
  """Builds the config's model and train step, times it; returns one table row's values."""
  config = _timing.load_config(name)
  model = build_model(config.model, config.dataset.num_classes)
  size = model.arch.train_size
  batch_size, batch_source = choose_batch(config.input.batch_size, size, args)
  mesh_lib.check_batch_divisible(batch_size, mesh)

  # The training loop's pieces (training.loop.train / tasks.classification.training_task).
  tx = optim.make_optimizer(config.optimizer, STEPS_PER_EPOCH)
  schedule = optim.learning_rate_schedule(config.optimizer, STEPS_PER_EPOCH)

  def apply(params: Any, images: jax.Array, rng: jax.Array) -> jax.Array:
    return model.apply({"params": params}, images, train=True, rngs={"dropout": rng})  # [B, K]

  loss_fn = classification.classification_loss_fn(apply)
  train_step = steps.compile_train_step(loss_fn, tx, schedule, mesh)
  params = _timing.random_params(model, seed=config.seed)
  state = jax.device_put(TrainState.create(params, tx), mesh_lib.replicated(mesh))
  rng_np = np.random.default_rng(0)
  batch = mesh_lib.to_global({
      "image": rng_np.standard_normal((batch_size, size, size, 3), np.float32),
      "label": rng_np.integers(0, config.dataset.num_classes, batch_size).astype(np.int32),
  }, mesh)
  dropout_rng = jax.device_put(jax.random.key(0), mesh_lib.replicated(mesh))

  # XLA's count for the whole compiled step (forward, backward, optimizer), from shapes only.
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          (state, batch, dropout_rng))
  xla_step = _timing.xla_flops(train_step, *abstract)

  def one_step() -> Any:
    nonlocal state
    state, metrics = train_step(state, batch, dropout_rng)  # state is donated: keep the new one
    return state, metrics

  seconds = _timing.median(_timing.time_calls(one_step, runs=args.steps, warmup=1))
  parts = breakdown(loss_fn, state.params, batch, dropout_rng, args.steps) if args.breakdown else None
  forward = sum(_timing.forward_flops(model.arch, config.dataset.num_classes, size, size,
                                      fine=False).values())
  analytic_step = 3.0 * forward  # forward + backward (two matmuls per forward one)
  return {
      "config": name, "model": model.arch.name, "params": param_count(params), "size": size,
      "batch": batch_size, "batch_source": batch_source, "seconds": seconds,
      "fwd_gflop": forward / _timing.GIGA, "step_gflop": analytic_step / _timing.GIGA,
      "xla_gflop": None if xla_step is None else xla_step / batch_size / _timing.GIGA,
      "parts": parts,
  }


def breakdown(loss_fn: Any, params: Any, batch: Any, rng: jax.Array, runs: int) -> dict[str, float]:
  """Median seconds of the loss alone ('forward') and of the loss and its gradients ('gradients'),
  each jitted on its own, on the same inputs as the step."""
  forward = jax.jit(lambda p: loss_fn(p, batch, rng)[0])
  gradients = jax.jit(jax.grad(lambda p: loss_fn(p, batch, rng)[0]))
  return {name: _timing.median(_timing.time_calls(lambda f=f: f(params), runs=runs, warmup=1))
          for name, f in (("forward", forward), ("gradients", gradients))}


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  _timing.request_cpu_conv(args.cpu_conv)  # before any computation initialises the CPU backend
  mesh = mesh_lib.make_mesh()
  print("train-step throughput (SPEC A3): the library's jitted step over the mesh, random data")
  print(_timing.machine_header())
  print(f"mesh: {mesh.devices.size} device(s) on axis '{mesh_lib.DATA_AXIS}'; {args.steps} timed "
        f"steps after 1 compile step; median step time")
  matmul = _timing.matmul_gflops(args.matmul_size)
  print(f"matmul reference: float32 {args.matmul_size}x{args.matmul_size} jnp.dot = "
        f"{matmul:,.1f} GFLOP/s\n", flush=True)

  results = []
  for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
    results.append(bench_config(name, args, mesh))
    print(f"  done: {name}", file=sys.stderr, flush=True)
  # The matmul again: on a shared machine single measurements are noisy; the faster one is used.
  matmul_after = _timing.matmul_gflops(args.matmul_size)
  print(f"matmul reference again after the configs: {matmul_after:,.1f} GFLOP/s; 'vs matmul' uses "
        f"{max(matmul, matmul_after):,.1f}\n")
  matmul = max(matmul, matmul_after)

  rows = []
  for r in results:
    img_s = r["batch"] / r["seconds"]
    achieved = r["step_gflop"] * img_s
    rows.append([
        r["config"], r["model"], f"{r['params'] / 1e6:.2f}M", f"{r['size']}px",
        f"{r['batch']} ({r['batch_source']})", _timing.fmt(img_s), _timing.fmt(1e3 * r["seconds"]),
        _timing.fmt(r["fwd_gflop"], 2), _timing.fmt(r["step_gflop"], 2),
        _timing.fmt(r["xla_gflop"], 2), _timing.fmt(achieved),
        _timing.fmt(None if r["xla_gflop"] is None else r["xla_gflop"] * img_s),
        f"{100 * achieved / matmul:.0f}%",
    ])
  print(_timing.format_table(
      ["config", "model", "params", "input", "batch", "img/s", "ms/step", "GFLOP/img fwd",
       "GFLOP/img step (3x fwd)", "GFLOP/img step (XLA)", "GFLOP/s (3x fwd)", "GFLOP/s (XLA)",
       "vs matmul"], rows))
  if args.breakdown:
    print_breakdown(results, matmul)
  print("\nGFLOP = 2 x multiply-adds of conv and FC layers. '3x fwd' counts the backward pass as two "
        "forward passes (input and weight gradients; conv1's input gradient is not needed, so it is a "
        "slight overestimate); 'step (XLA)' is XLA's cost analysis of the whole compiled step "
        "(forward, backward, optimizer update) divided by the batch.")


def print_breakdown(results: list[dict[str, Any]], matmul: float) -> None:
  """Where each step's time goes: forward alone, forward + backward, the whole step (the update is
  the difference between the last two)."""
  rows = []
  for r in results:
    parts = {**r["parts"], "whole step": r["seconds"]}
    for name, seconds in parts.items():
      gflop = r["fwd_gflop"] * (1 if name == "forward" else 3) * r["batch"]
      rows.append([r["config"], r["batch"], name, _timing.fmt(1e3 * seconds), _timing.fmt(gflop / seconds),
                   f"{100 * gflop / seconds / matmul:.0f}%"])
    rows.append([r["config"], r["batch"], "update (step - gradients)",
                 _timing.fmt(1e3 * (r["seconds"] - r["parts"]["gradients"])), "", ""])
  print("\nwhere the step's time goes (GFLOP: forward 1x, gradients and step 3x the analytic forward)")
  print(_timing.format_table(["config", "batch", "part", "ms", "GFLOP/s", "vs matmul"], rows))


if __name__ == "__main__":
  main(sys.argv[1:])
