"""What a Faster R-CNN setting costs in training: the loss + gradient of several variants of one
config, timed in turns, each on its own training batches.

  python benchmarks/faster_rcnn_settings.py --set faster_rcnn.num_rois=64 --set faster_rcnn.num_rois=128
  python benchmarks/faster_rcnn_settings.py --config faster_rcnn_quickstart --rounds 5 --steps 10 \
      --set faster_rcnn.roi_op=pool --set faster_rcnn.roi_op=align

Each --set is one variant: comma-separated key=value overrides of the config (values as Python
literals; nothing given: the config as it is). Every variant gets the config's training task
(`tasks.faster_rcnn.training_task`: its loss, its model, its training batches from the config's
dataset, built locally for the embedded one), with a random backbone (timing does not depend on the
weights, and no classifier checkpoint is needed). Its jitted loss-and-gradient function (what the
training step runs, without the optimizer update, which is the same for these variants) is
compiled once per shape bucket, then the variants take turns: each round times one call on each of
the variant's first --steps training batches (the buckets' canvases in the proportions training
sees them, give or take the sampling: compare input.aspect_buckets with --steps 32 or more), so
that a machine whose load drifts slows every variant alike. Prints img/s per round, the median,
and each median relative to the first variant's.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys

import jax
import numpy as np

import _timing
from overfeat_jax.tasks import faster_rcnn as task


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="faster_rcnn_quickstart",
                      help="config name from configs/ (default faster_rcnn_quickstart)")
  parser.add_argument("--set", action="append", default=[], dest="variants",
                      help="one variant: comma-separated key=value overrides (repeat; default: the "
                           "config alone)")
  parser.add_argument("--rounds", type=int, default=3, help="rounds of turns (default 3)")
  parser.add_argument("--steps", type=int, default=15,
                      help="timed calls per variant and round: its first STEPS training batches")
  _timing.add_machine_args(parser)
  return parser.parse_args(argv)


def variant_config(name: str, overrides: str):
  """The config with `overrides` ("a.b=1,c.d=(1, 2)") applied; SystemExit naming a bad key."""
  config = _timing.load_config(name)
  config.faster_rcnn.backbone_init, config.faster_rcnn.backbone_weights = "none", ""
  for item in filter(None, (part.strip() for part in split_overrides(overrides))):
    key, _, text = item.partition("=")
    *parents, leaf = key.strip().split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise SystemExit(f"--set {item!r}: the config has no key {key.strip()!r}")
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      value = text.strip()
    node[leaf] = value
  return config


def split_overrides(text: str) -> list[str]:
  """Splits on the commas outside brackets ("a=(1, 2),b=3" -> ["a=(1, 2)", "b=3"])."""
  parts, depth, current = [], 0, ""
  for ch in text:
    depth += ch in "([{"
    depth -= ch in ")]}"
    if ch == "," and depth == 0:
      parts.append(current)
      current = ""
    else:
      current += ch
  return parts + [current]


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  _timing.request_cpu_conv(args.cpu_conv)
  variants = args.variants or [""]
  print(f"Faster R-CNN loss + gradient per variant of configs/{args.config}.py, in turns "
        f"({args.rounds} rounds x {args.steps} batches each, after one untimed pass that compiles "
        f"each canvas)")
  print(_timing.machine_header())
  fns, batch_sizes, images = {}, {}, {}
  for overrides in variants:
    config = variant_config(args.config, overrides)
    training = task.training_task(config)
    params = jax.jit(training.init_params)(jax.random.key(0))
    batches = list(itertools.islice(iter(training.make_loader(0, 1)), args.steps))
    grad = jax.jit(jax.value_and_grad(training.loss_fn, has_aux=True))
    keys = [jax.random.key(i) for i in range(len(batches))]

    def calls(grad=grad, params=params, batches=batches, keys=keys):
      return [grad(params, b, k) for b, k in zip(batches, keys)]

    name = overrides or "(the config)"
    fns[name] = calls
    batch_sizes[name] = int(batches[0]["image"].shape[0])
    images[name] = sum(int(b["image"].shape[0]) for b in batches)
    canvases = sorted({tuple(b["image"].shape[1:3]) for b in batches})
    print(f"{name}: {len(batches)} batches on canvases {', '.join(f'{h}x{w}' for h, w in canvases)}")
  seconds = _timing.time_interleaved(fns, runs=args.rounds)
  rows, first = [], None
  for name, times in seconds.items():
    rates = [images[name] / t for t in times]
    median = float(np.median(rates))
    first = first or median
    rows.append([name, batch_sizes[name], " ".join(f"{r:.1f}" for r in rates), f"{median:.1f}",
                 f"{median / first:.3f}"])
  print(_timing.format_table(["variant", "batch", "img/s per round", "median img/s",
                              "vs first"], rows))


if __name__ == "__main__":
  main(sys.argv[1:])
