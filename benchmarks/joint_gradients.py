"""What exact joint training adds to the RPN's gradient: on a trained Faster R-CNN run, each RPN head
layer's gradient from the RPN's own loss beside the one the detector's loss sends it through the
proposal coordinates (exact joint minus approximate joint training's, same batch, same sampling).

  python benchmarks/joint_gradients.py --workdir workdirs/faster_rcnn_quickstart [--batches 4]
  python benchmarks/joint_gradients.py --config faster_rcnn_quickstart --workdir W --batches 8

Not a timing: the measurement behind README "Ablations" (why exact joint training trains a worse
detector there). The run's newest checkpoint, on the first --batches training batches of the
config's dataset (its training loader, as train.py reads it); --set overrides the config as in
faster_rcnn_settings.py (the backbone's starting weights are not read: the checkpoint has them).
Per batch and RPN layer: the norm of each gradient, their ratio and their cosine. The objectness
layer only ranks the proposals, so the detector sends it nothing.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import jax
import numpy as np

import _timing
from faster_rcnn_settings import variant_config
from overfeat_jax.data import detection
from overfeat_jax.tasks import faster_rcnn as task


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="faster_rcnn_quickstart",
                      help="config name from configs/ (default faster_rcnn_quickstart)")
  parser.add_argument("--workdir", required=True, help="the Faster R-CNN run to read")
  parser.add_argument("--batches", type=int, default=4, help="training batches (default 4)")
  parser.add_argument("--set", default="", dest="overrides",
                      help="comma-separated key=value overrides of the config")
  return parser.parse_args(argv)


def rpn_layer_vectors(grads) -> dict[str, np.ndarray]:
  """{RPN layer name: its gradient (kernel and bias) as one flat vector}."""
  return {name: np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(layer)])
          for name, layer in grads["rpn"].items()}


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  config = variant_config(args.config, args.overrides)
  model = task.model_from_config(config)
  params, step = task.restore_params(config, args.workdir)
  min_size = config.faster_rcnn.proposal_min_size

  def term(p, batch, rng, joint, which):
    t = task.loss_terms(model, p, batch, rng, joint=joint, min_size_original=min_size)
    return t.rpn_cls + t.rpn_reg if which == "rpn" else t.det_cls + t.det_reg

  grad = jax.jit(jax.grad(term), static_argnums=(3, 4))
  loader = detection.detection_train_loader(config, process_index=0, process_count=1)
  print(f"RPN gradients of {args.workdir} (step {step}), configs/{args.config}.py, "
        f"{args.batches} training batches")
  rows = []
  for index, batch in enumerate(itertools.islice(iter(loader), args.batches)):
    rng = jax.random.key(index)
    own = rpn_layer_vectors(grad(params, batch, rng, False, "rpn"))
    exact = rpn_layer_vectors(grad(params, batch, rng, True, "det"))
    approximate = rpn_layer_vectors(grad(params, batch, rng, False, "det"))
    for name, g_own in own.items():
      g_det = exact[name] - approximate[name]
      n_own, n_det = float(np.linalg.norm(g_own)), float(np.linalg.norm(g_det))
      cosine = float(g_own @ g_det) / (n_own * n_det) if n_own * n_det > 0 else 0.0
      rows.append([index, name, f"{n_own:.3e}", f"{n_det:.3e}",
                   f"{n_det / n_own:.1f}" if n_own > 0 else "-", f"{cosine:+.3f}"])
  print(_timing.format_table(["batch", "RPN layer", "|grad| RPN loss", "|grad| detector via boxes",
                              "ratio", "cosine"], rows))


if __name__ == "__main__":
  main(sys.argv[1:])
