"""A run's config.json: the config its checkpoints were trained with, and what a resume may change.

A fresh run writes the resolved config (defaults + overrides) to `<workdir>/config.json`. A resume
continues the same run: only the keys of `config.RESUME_MAY_CHANGE` may differ from config.json (the
run's length, logging, checkpointing, workers, data_dir, eval.*). Any other difference (the model, the
data and augmentation, `input.batch_size` (which maps steps to epochs), the optimizer and its schedule,
the seed) is refused, so config.json never stops describing the checkpoints. A key that config.json
lacks (one added to the project after the run started) counts as its default (`base_config()`), so
such a run resumes unless the new key is set to something else. Allowed changes are
written to config.json and recorded, one JSON line per resume, in `config_changes.jsonl`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from flax import traverse_util

from overfeat_jax import checkpoint_io, files
from overfeat_jax.config import base_config, resume_may_change
from overfeat_jax.errors import CheckpointError, reason

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"

Changes = dict[str, list[Any]]  # dotted key -> [value in config.json, value now]


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep=".")


def read_saved(workdir: str) -> dict[str, Any] | None:
  """The config in `workdir/config.json` as JSON, or None when there is no such file.

  Raises:
    CheckpointError: the file cannot be read or is not a JSON object (e.g. empty, cut short).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not files.exists(path):
    return None
  try:
    saved = json.loads(files.read_text(path))
  except (OSError, ValueError) as e:
    saved, why = None, reason(e)
  else:
    why = "not a JSON object"
  if not isinstance(saved, dict):
    raise CheckpointError(
        f"cannot resume from {files.absolute(workdir)}: {path} is unreadable ({why}); it records the "
        "config the checkpoints were trained with: restore it, or delete it to resume with the current "
        "config checked against the checkpoints' model signature alone")
  return saved


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> Changes:
  """The allowed changes of `config` against the run's config.json ({} when there is no file).

  Raises:
    CheckpointError: config.json is unreadable, or `config` differs in a key a resume may not change
      (names the keys: the model's first, as "written for a different model").
  """
  saved = read_saved(workdir)
  if saved is None:
    return {}
  path = os.path.join(workdir, CONFIG_FILE)
  old, new = _flat(saved), _flat(checkpoint_io.as_json(config.to_dict()))
  defaults = _flat(checkpoint_io.as_json(base_config().to_dict()))
  old = {**{k: v for k, v in defaults.items() if k not in old}, **old}  # keys newer than the run
  model = checkpoint_io.signature_differences(
      {k: v for k, v in old.items() if k.startswith("model.")},
      {k: v for k, v in new.items() if k.startswith("model.")}, saved_label="config.json")
  where = f"checkpoint in {checkpoint_io.checkpoint_dir(workdir)}"
  advice = " (use a new --workdir, or the config that wrote it)"
  if model:
    raise CheckpointError(f"{where} was written for a different model ({path}): " + "; ".join(model) + advice)
  fixed = checkpoint_io.signature_differences(
      {k: v for k, v in old.items() if not resume_may_change(k)},
      {k: v for k, v in new.items() if not resume_may_change(k)}, saved_label="config.json")
  if fixed:
    raise CheckpointError(
        f"{where} was trained with other settings ({path}): " + "; ".join(fixed) + "; a resume may "
        "change only the run's length, logging, checkpointing, workers, data_dir and eval.* "
        "(RESUME_MAY_CHANGE in overfeat_jax/config.py)" + advice)
  return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def save(workdir: str, config: ml_collections.ConfigDict, *, step: int, changes: Changes) -> None:
  """Writes config.json for a fresh run (`step` 0) or a resume with `changes` (then also records
  them in config_changes.jsonl); a resume without changes leaves config.json untouched.

  Raises:
    WorkdirError: a file cannot be written (the old config.json is left as it was).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if step and not changes and files.exists(path):
    return
  if step and changes:
    files.add_line(os.path.join(workdir, CHANGES_FILE), json.dumps({"step": step, "changes": changes}))
  files.replace_file(path, config.to_json(indent=2) + "\n")
