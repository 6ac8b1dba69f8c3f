"""evaluate.py end to end: restores train.py's checkpoint, prints Table 2, writes eval/metrics.json."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from PIL import Image

from cli_helpers import assert_one_line_error, evaluate_cli, train_cli

# Two small scales and one shape bucket (up to 2:1, all of the digits' images) keep it to one short
# compile; 6 examples in batches of 4 exercise the padded last batch.
SMALL_EVAL = ("--config.eval.scales=((64,64),(72,80))", "--config.eval.multi_scales=(0,1)",
              "--config.eval.aspect_buckets=(2.0,)", "--config.eval.num_examples=6",
              "--config.input.eval_batch_size=4")
# One scale, one bucket, one batch: the quickest evaluation, for tests about what follows it.
ONE_SCALE_EVAL = ("--config.eval.scales=((64,64),)", "--config.eval.multi_scales=(0,)",
                  "--config.eval.aspect_buckets=(2.0,)", "--config.eval.num_examples=4",
                  "--config.input.eval_batch_size=4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
  workdir = tmp_path_factory.mktemp("eval_cli") / "run"
  proc = train_cli(workdir, "--config.train.max_steps=2", "--config.input.batch_size=4",
                   data_dir=digits_data_dir)
  assert proc.returncode == 0, proc.stderr
  return workdir


def test_evaluate_prints_table_2_and_writes_metrics(trained, digits_data_dir):
  proc = evaluate_cli(trained, *SMALL_EVAL, data_dir=digits_data_dir)
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stderr
  assert f"checkpoint step 2 of {trained / 'checkpoints'}, 6 examples of " in proc.stdout
  for title in ("centre crop (58x58 of short side 64)", "10 views (4 corners + centre, x flip)",
                "1 scale (64x64), coarse stride", "1 scale (64x64), fine stride",
                "2 scales (64x64, 72x80), fine stride", "2 scales, fine stride, flips"):
    assert title in proc.stdout, proc.stdout
  result = json.loads((trained / "eval" / "metrics.json").read_text())
  assert result["num_examples"] == 6 and result["checkpoint_step"] == 2
  assert len(result["rows"]) == 6
  for row in result["rows"].values():
    # Errors are counts out of 6 examples; padded examples must not count.
    for key in ("top1_error", "top5_error"):
      assert 0.0 <= row[key] <= 100.0
      assert abs(row[key] * 6 / 100 - round(row[key] * 6 / 100)) < 1e-6
    assert row["top5_error"] <= row["top1_error"]


def test_missing_checkpoint_is_a_one_line_error(tmp_path, digits_data_dir):
  proc = evaluate_cli(tmp_path / "empty", *SMALL_EVAL, data_dir=digits_data_dir)
  assert_one_line_error(proc, "no checkpoint in", "empty")


def test_checkpoint_of_another_model_is_a_one_line_error(trained, digits_data_dir):
  proc = evaluate_cli(trained, *SMALL_EVAL, "--config.model.width=0.25", data_dir=digits_data_dir)
  assert_one_line_error(proc, "different model", "width")


def test_scale_below_the_field_of_view_is_a_one_line_error(trained, digits_data_dir):
  proc = evaluate_cli(trained, "--config.eval.scales=((60,60),)", "--config.eval.multi_scales=(0,)",
                      data_dir=digits_data_dir)
  assert_one_line_error(proc, "60x60", "field of view", "58x58")


def test_unknown_dataset_is_a_one_line_error(trained):
  proc = evaluate_cli(trained, "--config.dataset.name=imagenet2099")
  assert_one_line_error(proc, "imagenet2099")


def test_a_failed_write_still_prints_the_table_and_is_a_one_line_error(trained, tmp_path, digits_data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("eval"))
  (workdir / "eval").write_text("")  # eval/ cannot be made: a file is in the way
  proc = evaluate_cli(workdir, *ONE_SCALE_EVAL, data_dir=digits_data_dir)
  assert_one_line_error(proc, f"cannot write {workdir / 'eval' / 'metrics.json'}: {workdir / 'eval'} is a "
                              "file, not a directory")
  table = proc.stdout[proc.stdout.index("checkpoint step 2 of"):]
  assert "1 scale (64x64), fine stride" in table and "| top-1 err % |" in table


def picture_files(workdir) -> list[str]:
  return sorted(p.name for p in (workdir / "eval" / "pictures").iterdir())


def test_pictures_of_the_first_images_have_a_panel_per_scale(trained, tmp_path, digits_data_dir):
  from overfeat_jax.config import base_config
  from overfeat_jax.data import pipeline
  from overfeat_jax.evaluation.visualize import COLORBAR_PX, MIN_LONG_SIDE_PX, PANEL_GAP_PX, TITLE_PX

  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("eval"))
  proc = evaluate_cli(workdir, *SMALL_EVAL, "--pictures", "2", data_dir=digits_data_dir)
  assert proc.returncode == 0, proc.stderr
  assert f"pictures: 2 PNG(s) in {workdir / 'eval' / 'pictures'}" in proc.stdout
  assert (workdir / "eval" / "metrics.json").exists()
  assert picture_files(workdir) == ["00000.png", "00001.png"]
  config = base_config()
  config.dataset.data_dir = digits_data_dir
  source = pipeline.load_source(config.dataset, "test")
  for index in range(2):
    h, w = source[index]["image"].shape[:2]
    zoom = math.ceil(MIN_LONG_SIDE_PX / max(h, w))
    with Image.open(workdir / "eval" / "pictures" / f"{index:05d}.png") as png:
      png.load()  # a whole, valid PNG
      # One row: the image, then a score map (with its colour bar) for each of the 2 scales;
      # a grid title and a panel title above each.
      cell_w = w * zoom + COLORBAR_PX
      assert png.mode == "RGB"
      assert png.size == (3 * cell_w + 2 * PANEL_GAP_PX, 2 * TITLE_PX + h * zoom)


def test_pictures_beyond_the_split_are_as_many_as_its_images(trained, tmp_path, digits_data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("eval"))
  proc = evaluate_cli(workdir, *ONE_SCALE_EVAL, "--config.dataset.eval_split=test[:3]",
                      "--config.eval.pictures=5", data_dir=digits_data_dir)
  assert proc.returncode == 0, proc.stderr
  assert picture_files(workdir) == ["00000.png", "00001.png", "00002.png"]


def test_negative_pictures_is_a_one_line_error(trained):
  proc = evaluate_cli(trained, "--pictures", "-1")
  assert_one_line_error(proc, "--pictures=-1", "non-negative")


def test_a_picture_that_cannot_be_written_keeps_the_metrics(trained, tmp_path, digits_data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns("eval"))
  (workdir / "eval").mkdir()
  (workdir / "eval" / "pictures").write_text("")  # a file where the pictures' directory belongs
  proc = evaluate_cli(workdir, *ONE_SCALE_EVAL, "--pictures", "1", data_dir=digits_data_dir)
  pictures = workdir / "eval" / "pictures"
  assert_one_line_error(proc, f"cannot write {pictures / '00000.png'}: {pictures} is a file")
  assert json.loads((workdir / "eval" / "metrics.json").read_text())["num_examples"] == 4
