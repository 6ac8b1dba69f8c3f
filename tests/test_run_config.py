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


def test_a_resume_may_change_the_detectors_test_settings_but_not_its_training(tmp_path):
  config = base_config()
  config.task = "detection"
  (tmp_path / run_config.CONFIG_FILE).write_text(config.to_json())
  config.detection.test_scales = (128, 176, 224)
  config.detection.max_boxes_per_class = 32
  config.detection.min_window_score = 0.3
  config.detection.top_class_only = True
  config.detection.max_detections = 50
  changes = run_config.check_resume(str(tmp_path), config)
  assert sorted(changes) == ["detection.max_boxes_per_class", "detection.max_detections",
                             "detection.min_window_score", "detection.test_scales",
                             "detection.top_class_only"]
  config.detection.train_scales = (128, 176)
  with pytest.raises(CheckpointError, match=r"detection.train_scales: \[128\] \(config.json\) vs \[128, 176\]"):
    run_config.check_resume(str(tmp_path), config)
