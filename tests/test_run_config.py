"""config.json on resume: keys the project added after a run started count as their defaults."""

from __future__ import annotations

import json

import pytest

from overfeat_jax.config import base_config
from overfeat_jax.errors import CheckpointError
from overfeat_jax.training import run_config


def write_without(workdir, config, dotted_key):
  saved = json.loads(config.to_json())
  section, key = dotted_key.split(".")
  del saved[section][key]
  (workdir / run_config.CONFIG_FILE).write_text(json.dumps(saved))


def test_a_key_newer_than_the_run_counts_as_its_default(tmp_path):
  config = base_config()
  write_without(tmp_path, config, "input.crop_keeps_object")
  assert run_config.check_resume(str(tmp_path), config) == {}  # the default: same run
  config.input.crop_keeps_object = True  # set to something else: a different run, refused
  with pytest.raises(CheckpointError, match="input.crop_keeps_object"):
    run_config.check_resume(str(tmp_path), config)
