"""train.py end to end on the quickstart config (tiny setting), and its one-line user errors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from overfeat_jax.errors import CheckpointError
from overfeat_jax.tasks import classification

from cli_helpers import assert_one_line_error, hold_in_another_process, train_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
  """A workdir after `train.py --config configs/quickstart.py` for 2 steps of batch 4."""
  workdir = tmp_path_factory.mktemp("cli") / "run"
  proc = train_cli(workdir, "--config.train.max_steps=2", "--config.input.batch_size=4",
                   "--config.train.log_every=1", data_dir=digits_data_dir)
  assert proc.returncode == 0, proc.stderr
  return workdir, proc


def test_train_cli_runs_end_to_end(trained, digits_data_dir):
  workdir, proc = trained
  assert "step 2/2  loss " in proc.stdout and " img/s  ETA " in proc.stdout
  assert "Traceback" not in proc.stderr
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in records)
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["max_steps"] == 2 and config["dataset"]["data_dir"] == digits_data_dir
  assert os.listdir(workdir / "checkpoints") == ["2"]

  # What evaluate.py does: the parameters come back for the same model, and only for it.
  from ml_collections import ConfigDict
  cfg = ConfigDict(config)
  params, step = classification.restore_params(cfg, str(workdir))
  assert step == 2
  assert jax.tree.structure(params) == jax.tree.structure(
      classification.params_template(classification.model_from_config(cfg)))
  cfg.model.compute_dtype = "bfloat16"  # does not shape the parameters: fine for evaluation
  assert classification.restore_params(cfg, str(workdir))[1] == 2
  cfg.model.width = 0.25
  with pytest.raises(CheckpointError, match="different model"):
    classification.restore_params(cfg, str(workdir))


def test_resuming_with_another_model_is_a_one_line_error(trained, digits_data_dir):
  workdir, _ = trained
  proc = train_cli(workdir, "--config.train.max_steps=3", "--config.input.batch_size=4",
                   "--config.model.width=0.25", data_dir=digits_data_dir)
  assert_one_line_error(proc, f"checkpoint in {workdir}", "different model", "model.width: 0.125")


@pytest.mark.parametrize("override, fragments", [
    ("--config.model.nonexistent=1", ("unknown config key", "model.nonexistent")),
    ("--config.train.num_epochs=abc", ("config.train.num_epochs", "abc")),
])
def test_bad_overrides_are_one_line_errors(tmp_path, override, fragments):
  proc = train_cli(tmp_path / "run", override)
  assert_one_line_error(proc, *fragments)
  assert not (tmp_path / "run").exists()


def test_a_crop_size_that_is_not_the_models_input_is_a_one_line_error(tmp_path, digits_data_dir):
  proc = train_cli(tmp_path / "run", "--config.input.crop_size=50", data_dir=digits_data_dir)
  assert_one_line_error(proc, "config.input.crop_size=50", "58x58", "--config.input.crop_size=58")


def test_a_workdir_or_data_dir_that_is_a_file_is_a_one_line_error(tmp_path, digits_data_dir):
  (tmp_path / "file").write_text("x")
  proc = train_cli(tmp_path / "file", "--config.train.max_steps=1", data_dir=digits_data_dir)
  assert_one_line_error(proc, f"--workdir {tmp_path / 'file'} is a file, not a directory")
  proc = train_cli(tmp_path / "run", data_dir=str(tmp_path / "file"))
  assert_one_line_error(proc, f"config.dataset.data_dir={tmp_path / 'file'} is a file, not a directory")


def test_a_second_train_py_on_a_busy_workdir_is_a_one_line_error(trained, digits_data_dir):
  workdir, _ = trained
  holder = hold_in_another_process(workdir)  # as a first train.py would, for its whole run
  try:
    proc = train_cli(workdir, "--config.train.max_steps=3", "--config.input.batch_size=4",
                     data_dir=digits_data_dir)
  finally:
    holder.kill()
    holder.wait(timeout=30)
  assert_one_line_error(proc, f"--workdir {workdir} is in use by another training run (pid {holder.pid})")
  assert os.listdir(workdir / "checkpoints") == ["2"]
