"""What an evaluation leaves in the work directory: `<workdir>/eval/metrics.json`.

Evaluators print their results before they write them, so a write that fails (eval/ not writable, a
full disk) loses nothing that was computed: the error names the file and why.
"""

from __future__ import annotations

import json
import os
from typing import Any

from overfeat_jax import files

EVAL_SUBDIR = "eval"
METRICS_FILE = "metrics.json"


def write_metrics(workdir: str, result: dict[str, Any]) -> str:
  """Writes `result` as JSON to `workdir/eval/metrics.json` (atomically); returns the path.

  Raises:
    WorkdirError: the file cannot be written (the previous one, if any, is left as it was).
  """
  path = os.path.join(workdir, EVAL_SUBDIR, METRICS_FILE)
  files.replace_file(path, json.dumps(result, indent=2) + "\n")
  return path
