"""One training run in a process of its own, for the determinism tests (tests/test_determinism.py).

Trains, then writes the final TrainState to an npz: "step", every parameter ("params<path>") and every
optimizer-state leaf ("opt_state<path>"), paths as `jax.tree_util.keystr` writes them.

  python tests/determinism_run.py --task tiny --workdir W --seed S --out state.npz
  python tests/determinism_run.py --task faster_rcnn --data_dir D --workdir W --seed S --out state.npz

"tiny" is the MLP classification task of tests/tiny_training.py (36 steps, 3 epochs, across the
learning-rate halving); "faster_rcnn" is test_faster_rcnn_task's tiny Faster R-CNN (approximate joint
training of a 1/32-width OverFeat backbone from scratch, 2 steps) on the embedded detection data.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import jax
import numpy as np

import tiny_training
from overfeat_jax.training import loop


def flat_state(state: Any) -> dict[str, np.ndarray]:
  """{"step": ..., "params['Dense_0']['kernel']": ..., "opt_state[0].trace[...]": ...} as numpy."""
  state = jax.device_get(state)
  flat = {"step": np.asarray(state.step)}
  for name in ("params", "opt_state"):
    leaves, _ = jax.tree_util.tree_flatten_with_path(getattr(state, name))
    flat.update({name + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves})
  return flat


def train(task: str, workdir: str, seed: int, data_dir: str) -> loop.TrainResult:
  if task == "tiny":
    config = tiny_training.tiny_config(max_steps=36, checkpoint_every=12)
    config.seed = seed
    return loop.train(config, workdir, tiny_training.tiny_task(config))
  from test_faster_rcnn_task import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir)
  config.seed = seed
  return loop.run(config, workdir)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--task", choices=("tiny", "faster_rcnn"), required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seed", type=int, required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args(argv)
  result = train(args.task, args.workdir, args.seed, args.data_dir)
  np.savez(args.out, **flat_state(result.state))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
