"""What an evaluation leaves in the work directory: `<workdir>/eval/metrics.json` and, when
config.eval.pictures > 0, `<workdir>/eval/pictures/*.png`.

Evaluators print their results before they write them, so a write that fails (eval/ not writable, a
full disk) loses nothing that was computed: the error names the file and why. Pictures come last, in
a pass of their own after metrics.json is written, so a picture that cannot be written loses no
metrics either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from overfeat_jax import files
from overfeat_jax.evaluation import visualize

EVAL_SUBDIR = "eval"
METRICS_FILE = "metrics.json"
PICTURES_SUBDIR = "pictures"


def metrics_path(workdir: str) -> str:
  """`workdir/eval/metrics.json`."""
  return os.path.join(workdir, EVAL_SUBDIR, METRICS_FILE)


def write_metrics(workdir: str, result: dict[str, Any]) -> str:
  """Writes `result` as JSON to `workdir/eval/metrics.json` (atomically); returns the path.

  Raises:
    WorkdirError: the file cannot be written (the previous one, if any, is left as it was).
  """
  path = metrics_path(workdir)
  files.replace_file(path, json.dumps(result, indent=2) + "\n")
  return path


def pictures_dir(workdir: str) -> str:
  """`workdir/eval/pictures`: where every evaluator's pictures go (config.eval.pictures)."""
  return os.path.join(workdir, EVAL_SUBDIR, PICTURES_SUBDIR)


def write_pictures(workdir: str, pictures: Iterable[tuple[str, visualize.Picture]], *,
                   verbose: bool = True) -> list[str]:
  """Writes each (name, picture) as `workdir/eval/pictures/<name>.png` (atomically), one at a time
  as `pictures` yields them (a generator renders the next one only after the last one is written),
  then, with `verbose`, prints how many went where. Returns the paths.

  Raises:
    WorkdirError: a picture cannot be written (names the file; those written before it stay).
  """
  directory, paths = pictures_dir(workdir), []
  for name, picture in pictures:
    paths.append(os.path.join(directory, f"{name}.png"))
    visualize.save_png(picture, paths[-1])
  if verbose:
    print(f"pictures: {len(paths)} PNG(s) in {directory}", flush=True)
  return paths
