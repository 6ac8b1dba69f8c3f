"""Config files and their validation: every shipped config is valid; each bad value names its key."""

from __future__ import annotations

import pathlib

import pytest

from overfeat_jax import shipped_configs
from overfeat_jax.config import base_config, validate_config
from overfeat_jax.errors import ConfigError

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load_config(name: str):
  return shipped_configs.load(str(CONFIG_DIR / f"{name}.py"))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.py")))
def test_shipped_configs_are_valid(name):
  validate_config(load_config(name))


def test_paper_configs_follow_spec_a3():
  for name, crop in [("overfeat_fast_imagenet", 231), ("overfeat_accurate_imagenet", 221)]:
    c = load_config(name)
    assert c.input.crop_size == crop and c.input.resize_short == 256 and c.input.batch_size == 128
    assert c.optimizer.learning_rate == 5e-2 and c.optimizer.momentum == 0.6
    assert c.optimizer.weight_decay == 1e-5
    assert tuple(c.optimizer.halve_at_epochs) == (30, 50, 60, 70, 80)
    assert c.model.init == "paper" and c.model.width == 1.0 and c.model.dropout_rate == 0.5
    assert len(c.eval.scales) == 6 and c.dataset.name == "imagenet2012"


@pytest.mark.parametrize("key, value, fragment", [
    ("model.variant", "huge", "model.variant"),
    ("model.init", "xavier", "model.init"),
    ("eval.spatial_reduce", "median", "eval.spatial_reduce"),
    ("input.resize_short", 32, "input.resize_short"),
    ("optimizer.halve_at_epochs", (5, 3), "optimizer.halve_at_epochs"),
    ("eval.single_scale", 9, "eval.single_scale"),
    ("eval.multi_scales", (0, 7), "eval.multi_scales"),
    ("model.dropout_rate", 1.0, "model.dropout_rate"),
    ("model.compute_dtype", "float16", "model.compute_dtype"),
    ("model.width", 0.0, "model.width"),
    ("model.stem_stride", -1, "model.stem_stride"),
    ("dataset.num_classes", 1, "dataset.num_classes"),
    ("input.crop_size", 70, "input.resize_short"),
    ("input.prefetch", -1, "input.prefetch"),
    ("input.crop_object_fraction", 0.0, "input.crop_object_fraction"),
    ("input.crop_object_fraction", 1.5, "input.crop_object_fraction"),
    ("input.off_object_crops", 1.0, "input.off_object_crops"),
    ("input.off_object_max_fraction", 0.0, "input.off_object_max_fraction"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate"),
    ("optimizer.momentum", -0.5, "optimizer.momentum"),
    ("optimizer.dampening", 1.0, "optimizer.dampening"),
    ("optimizer.warmup_epochs", -1.0, "optimizer.warmup_epochs"),
    ("optimizer.halve_at_epochs", (0, 3), "optimizer.halve_at_epochs"),
    ("train.log_every", 0, "train.log_every"),
    ("train.keep_checkpoints", 0, "train.keep_checkpoints"),
    ("eval.scales", (), "eval.scales"),
    ("eval.multi_scales", (), "eval.multi_scales"),
    ("eval.aspect_buckets", (2.0, 1.5), "eval.aspect_buckets"),
    ("eval.aspect_buckets", (0.8,), "eval.aspect_buckets"),
    ("eval.pictures", -1, "eval.pictures"),
    ("input.min_size", 0, "input.min_size"),
    ("input.max_size", 100, "input.max_size"),
    ("input.train_min_sizes", (128, 0), "expected sizes > 0"),
    ("input.train_min_sizes", (128, 300), "must each be <= input.max_size=224"),
    ("input.train_min_sizes", (128, 160), "is for task 'faster_rcnn'"),  # base_config: classification
    ("input.aspect_buckets", (1.5, 1.5), "input.aspect_buckets"),
    ("faster_rcnn.joint_box_gradient_scale", -0.1, "faster_rcnn.joint_box_gradient_scale"),
    ("seed", -1, "seed"),
    ("task", "segmentation", "task"),
])
def test_bad_values_name_their_key(key, value, fragment):
  config = base_config()
  *sections, field = key.split(".")
  node = config
  for section in sections:
    node = node[section]
  node[field] = value
  with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
    validate_config(config)


def test_unknown_key_added_in_code_is_rejected():
  config = base_config()
  config.model.unlock()
  config.model.depth = 3
  with pytest.raises(ConfigError, match=r"model\.depth"):
    validate_config(config)


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_an_unknown_task_is_a_one_line_error_from_both_clis(tmp_path, script):
  from cli_helpers import assert_one_line_error, run_cli
  proc = run_cli(script, tmp_path / "run", "--config.task=segmentation")
  assert_one_line_error(proc, "config.task='segmentation' is invalid", "classification")
  assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("key, value", [("input.off_object_crops", 0.25),
                                        ("input.crop_object_fraction", 0.6)])
def test_object_crop_options_need_crop_keeps_object(key, value):
  config = base_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=f"{key}.*crop_keeps_object"):
    validate_config(config)
  config.input.crop_keeps_object = True
  validate_config(config)
