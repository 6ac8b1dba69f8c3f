"""Predicting on one's own images (`python -m overfeat_jax.predict`, `overfeat_jax.predict.predict`,
`evaluation.prediction.Predictor`) for the four tasks, on checkpoints of random parameters of the
tests' tiny models (no dataset is generated: the class names come from the builder's code).

The classifier's answer is checked against the evaluation's own scores (`dense.evaluate_views`) on a
canvas built here by hand, the localizer's against SPEC A5's combination of its scales done here in
numpy, the image files' conversion to RGB against hand-computed arrays."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import test_faster_rcnn_task
from cli_helpers import QUICKSTART, ROOT, assert_one_line_error
from detection_helpers import tiny_detection_config
from localization_helpers import tiny_localization_config
from overfeat_jax import checkpoint_io, predict, shipped_configs, tasks
from overfeat_jax.data import buckets
from overfeat_jax.data.image_files import read_image
from overfeat_jax.errors import DataError
from overfeat_jax.evaluation import dense
from overfeat_jax.evaluation.prediction import PICTURE_SUFFIX, PREDICTIONS_FILE, Predictor

FOV = 58  # the quickstart's layers at 1/32 width: 58-px field of view, fine grid from 62 px
STEP = 3
# The quickstart classifier at 1/32 width, two test scales (64x64, 72x80), one shape bucket; the same
# as command-line overrides of configs/quickstart.py.
CLASSIFIER_FLAGS = ("--config.model.width=0.03125", "--config.dataset.name=digits_in_scenes/classification",
                    "--config.eval.multi_scales=(0,1)", "--config.eval.aspect_buckets=(2.0,)")


def classifier_config(data_dir: str):
  config = shipped_configs.load(QUICKSTART)
  config.model.width = 1 / 32
  config.dataset.name = "digits_in_scenes/classification"
  config.dataset.data_dir = data_dir
  config.eval.multi_scales = (0, 1)
  config.eval.aspect_buckets = (2.0,)
  return config


def task_config(task: str, data_dir: str):
  """The tests' tiny config of `task` (its data dir is never read)."""
  if task == "classification":
    return classifier_config(data_dir)
  if task == "localization":
    return tiny_localization_config(data_dir, "unused")
  if task == "detection":
    config = tiny_detection_config(data_dir, "unused")
    config.detection.min_window_score = 0.0  # an untrained net: let every window's box in
    return config
  config = test_faster_rcnn_task.tiny_config(data_dir)
  config.faster_rcnn.test.score_threshold = 0.0  # many detections, even from an untrained net
  return config


def random_params(template, seed: int):
  """The template's arrays filled from numpy: kernels N(0, 2 / fan_in), biases N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "bias":
      return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
    fan_in = max(1, int(np.prod(leaf.shape[:-1])))
    return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, template)


def params_template(config):
  module = tasks.get_task(config)
  return module.params_template(module.model_from_config(config))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{task: (config, workdir)}: a checkpoint (step STEP) of random parameters for each task."""
  root = tmp_path_factory.mktemp("predict")
  out = {}
  for seed, task in enumerate(("classification", "localization", "detection", "faster_rcnn")):
    config = task_config(task, str(root / "no_data"))
    params = random_params(params_template(config), seed)
    workdir = str(root / task)
    checkpoint_io.save_params(workdir, params, checkpoint_io.make_signature(
        tasks.get_task(config).model_signature(config), params), step=STEP)
    out[task] = (config, workdir)
  assert not os.path.exists(root / "no_data")  # nothing generated
  return out


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, 256, size=(h, w, 3)).astype(np.uint8)


def save(path, pixels, mode=None, **kwargs) -> str:
  Image.fromarray(pixels, mode).save(path, **kwargs)
  return str(path)


def reference_canvas(config, image: np.ndarray):
  """The evaluation's input for one image, built here: the whole image resized (PIL bilinear) to its
  size at the canvas scale (`buckets.scaled_size`), normalised, zero-padded into its bucket's canvas."""
  h, w = image.shape[:2]
  bounds = tuple(config.eval.aspect_buckets)
  bucket = buckets.make_buckets(bounds)[buckets.bucket_index(h, w, bounds)]
  scale = buckets.canvas_scale(config.eval)
  ch, cw = bucket.canvas(scale)
  sh, sw = (int(v) for v in buckets.scaled_size((h, w), scale, (ch, cw)))
  resized = np.asarray(Image.fromarray(image).resize((sw, sh), Image.Resampling.BILINEAR), np.float32)
  canvas = np.zeros((1, ch, cw, 3), np.float32)
  canvas[0, :sh, :sw] = (resized / 255 - np.asarray(config.input.mean)) / np.asarray(config.input.std)
  return canvas, np.array([[sh, sw]], np.int32), np.array([[h, w]], np.int32), bucket


def test_classifier_top_k_is_the_evaluations_multi_scale_row(runs):
  config, workdir = runs["classification"]
  predictor = Predictor.from_workdir(config, workdir)
  image = random_image(70, 96, seed=1)  # landscape: its own canvas size in the one bucket
  got = predictor.predict(image)
  canvas, size, original, bucket = reference_canvas(config, image)
  rows = jax.jit(functools.partial(
      dense.evaluate_views, predictor.model, eval_cfg=config.eval, bucket=bucket,
      crop_size=config.input.crop_size, resize_short=config.eval.resize_short))(
          {"params": predictor.params}, canvas, image_hw=size, original_hw=original)
  scores = np.asarray(rows[dense.ROW_MULTI][0], np.float64)  # [10] evaluate.py's headline row
  assert got["labels"][0] == int(np.argmax(scores))
  assert got["labels"] == np.argsort(-scores, kind="stable")[:5].tolist()
  assert got["names"] == [str(k) for k in got["labels"]]  # the digits' ClassLabel names
  np.testing.assert_allclose(got["scores"], scores[got["labels"]], rtol=1e-4, atol=1e-6)
  probabilities = np.asarray(got["probabilities"])
  np.testing.assert_allclose(probabilities, scores[got["labels"]] / scores.sum(), rtol=1e-4)
  assert np.all(np.diff(probabilities) <= 0) and probabilities.sum() <= 1 + 1e-9
  assert (got["task"], got["image_size"], got["checkpoint_step"]) == ("classification", [70, 96], STEP)
  assert json.loads(json.dumps(got)) == got  # plain JSON values
  assert len(predictor.predict(image, top_k=10)["labels"]) == 10
  assert predictor.predict(image, top_k=99)["labels"] == np.argsort(-scores, kind="stable").tolist()


def test_localization_guesses_are_the_paper_combination_of_the_scales(runs):
  config, workdir = runs["localization"]
  assert config.eval.merge_threshold == 0  # no pair merges: each class answers with its best window
  predictor = Predictor.from_workdir(config, workdir)
  image = random_image(66, 90, seed=2)
  outputs = predictor.outputs(image)
  got = predictor.prediction(image, outputs, top_k=3)
  # SPEC A5 by hand from the same grids' maps: per scale the top merge_top_k classes by their spatial
  # max over the valid positions; a class's confidence is its best window in the scales that chose it.
  confidence, best_box = np.full(10, -np.inf), {}
  for probs, valid, boxes in zip(outputs["probs"], outputs["valid_map"], outputs["class_boxes"]):
    kept = np.where(valid[..., None], probs, 0.0)  # [h, w, K]
    for c in np.argsort(-kept.max(axis=(0, 1)))[:config.eval.merge_top_k]:
      if kept[..., c].max() > confidence[c]:
        confidence[c] = kept[..., c].max()
        best_box[c] = boxes[np.unravel_index(np.argmax(kept[..., c]), valid.shape)]
  order = np.argsort(-confidence)[:3]
  assert got["labels"] == order.tolist() and got["names"] == [str(k) for k in order]
  np.testing.assert_allclose(got["scores"], confidence[order], rtol=1e-5)
  # class_boxes are every window's box for the first guess's class: its answer is its best window's.
  np.testing.assert_allclose(got["boxes"][0], np.clip(best_box[order[0]], 0, [90, 66, 90, 66]),
                             rtol=1e-5, atol=1e-4)
  boxes = np.asarray(got["boxes"])
  assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 90).all() and (boxes[:, [1, 3]] <= 66).all()
  assert predictor.predict(image)["labels"] == np.argsort(-confidence)[:5].tolist()  # default top-5
  assert predictor.picture(image, outputs).get_figwidth() > 0


@pytest.mark.parametrize("task", ["detection", "faster_rcnn"])
def test_detections_have_no_padding_and_lie_in_the_image(runs, task):
  config, workdir = runs[task]
  predictor = Predictor.from_workdir(config, workdir)
  image = random_image(75, 101, seed=3)
  got, figure = predictor.predict_and_draw(image)
  n = len(got["scores"])
  maximum = config.detection.max_detections if task == "detection" else config.faster_rcnn.test.max_detections
  assert 0 < n <= maximum  # only what the model found: no padding rows
  assert len(got["boxes"]) == len(got["labels"]) == len(got["names"]) == n
  boxes = np.asarray(got["boxes"])
  assert boxes.shape == (n, 4) and np.isfinite(boxes).all()
  assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 101).all() and (boxes[:, [1, 3]] <= 75).all()
  if task == "faster_rcnn":  # decoded from positive widths and heights (OverFeat's random regressor
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()  # may invert)
  assert all(0 <= k < 10 for k in got["labels"]) and got["names"] == [str(k) for k in got["labels"]]
  assert np.all(np.diff(got["scores"]) <= 0) and min(got["scores"]) > 0
  assert predictor.predict(image, top_k=2) == {**got, **{k: got[k][:2] for k in
                                                       ("labels", "names", "scores", "boxes")}}
  assert figure.get_figwidth() > 0


def test_each_image_mode_becomes_the_expected_rgb(tmp_path):
  grey = np.array([[0, 128, 255], [7, 8, 9]], np.uint8)
  alpha = np.array([[0, 255, 10], [20, 30, 40]], np.uint8)
  rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 13
  expected_grey = np.repeat(grey[..., None], 3, axis=-1)
  np.testing.assert_array_equal(read_image(save(tmp_path / "l.png", grey, "L")), expected_grey)
  np.testing.assert_array_equal(read_image(save(tmp_path / "la.png", np.stack([grey, alpha], -1), "LA")),
                                expected_grey)  # alpha dropped, not composited
  np.testing.assert_array_equal(read_image(save(tmp_path / "rgba.png", np.dstack([rgb, alpha]), "RGBA")), rgb)
  palette = Image.new("P", (3, 2))
  palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
  palette.putdata([0, 1, 2, 2, 1, 0])
  palette.save(tmp_path / "p.png")
  assert Image.open(tmp_path / "p.png").mode == "P"
  red, green, blue = [255, 0, 0], [0, 255, 0], [0, 0, 255]
  np.testing.assert_array_equal(read_image(tmp_path / "p.png"), [[red, green, blue], [blue, green, red]])
  # 16-bit grey: scaled by 255 / 65535 and rounded (PIL's own conversion would clip 1000 to 255).
  wide = np.array([[0, 257, 65535], [1000, 30000, 128]], np.uint16)
  save(tmp_path / "i16.png", wide)
  assert Image.open(tmp_path / "i16.png").mode == "I;16"
  np.testing.assert_array_equal(read_image(tmp_path / "i16.png"),
                                np.repeat(np.array([[0, 1, 255], [4, 117, 0]], np.uint8)[..., None], 3, -1))
  # JPEG (lossy): one flat 8x8 block decodes to its colour within rounding.
  flat = np.broadcast_to(np.array([200, 100, 50], np.uint8), (8, 8, 3)).copy()
  decoded = read_image(save(tmp_path / "flat.jpg", flat, quality=100))
  assert decoded.dtype == np.uint8 and decoded.shape == (8, 8, 3)
  assert np.abs(decoded.astype(int) - flat).max() <= 3
  # An EXIF orientation tag (6: shown turned 90 degrees clockwise) is applied.
  exif = Image.Exif()
  exif[0x0112] = 6
  save(tmp_path / "turned.png", rgb, exif=exif.tobytes())
  np.testing.assert_array_equal(read_image(tmp_path / "turned.png"), np.rot90(rgb, k=-1))
  # A float image (unknown range) is refused, naming the file and its mode.
  Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tiff")
  with pytest.raises(DataError, match=r"float\.tiff has pixel mode 'F', which is not supported"):
    read_image(tmp_path / "float.tiff")


def run(workdir, *args: str) -> int:
  return predict.main(["--config", QUICKSTART, *CLASSIFIER_FLAGS, "--workdir", str(workdir), *args])


def test_the_command_prints_json_lines_and_writes_pictures(runs, tmp_path, capsys):
  _, workdir = runs["classification"]
  images = [save(tmp_path / "scene.png", random_image(64, 80, seed=4)),
            save(tmp_path / "grey.jpg", random_image(90, 60, seed=5)[..., 0], "L")]  # portrait, grey
  out = tmp_path / "out"
  assert run(workdir, "--out", str(out), "--top-k", "3", *images) == 0
  captured = capsys.readouterr()
  lines = captured.out.splitlines()
  assert len(lines) == 2 and (out / PREDICTIONS_FILE).read_text().splitlines() == lines
  for line, path, stem in zip(lines, images, ("scene", "grey")):
    result = json.loads(line)
    assert result["image"] == path and len(result["labels"]) == 3
    assert result["picture"] == str(out / (stem + PICTURE_SUFFIX))
    with Image.open(result["picture"]) as png:
      assert png.mode == "RGB" and png.width > png.height > 0
  assert "2 image(s): classification, checkpoint step 3" in captured.err
  # The library function gives the same dicts (without the pictures) and prints nothing.
  again = predict.predict(classifier_config("unused"), workdir, images, top_k=3)
  assert again == [{k: v for k, v in json.loads(line).items() if k != "picture"} for line in lines]
  assert capsys.readouterr().out == ""


def one_line_error(capsys, excinfo) -> str:
  assert excinfo.value.code == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


def test_bad_inputs_are_one_line_errors_naming_the_file(runs, tmp_path, capsys):
  _, workdir = runs["classification"]
  good = save(tmp_path / "good.png", random_image(64, 64))
  (tmp_path / "notes.png").write_text("not a picture")
  data = open(good, "rb").read()
  (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
  small = save(tmp_path / "small.png", random_image(FOV - 1, 80))
  Image.fromarray(np.zeros((64, 64), np.float32)).save(tmp_path / "float.tiff")
  os.makedirs(tmp_path / "other")
  twin = save(tmp_path / "other" / "good.jpg", random_image(64, 64))
  out = tmp_path / "out"
  cases = [((good, str(tmp_path / "missing.png")), ("cannot read image", "missing.png", "No such file")),
           ((str(tmp_path / "notes.png"),), ("cannot read image", "notes.png")),
           ((good, str(tmp_path / "cut.png")), ("cannot read image", "cut.png")),
           ((small,), (small, "57x80", f"field of view {FOV}x{FOV}")),
           ((str(tmp_path / "float.tiff"),), ("float.tiff", "pixel mode 'F'")),
           (("--out", str(out), good, twin), ("would both write good" + PICTURE_SUFFIX, twin)),
           ((), ("no images given",)),
           (("--top-k", "0", good), ("top-k",))]
  for args, fragments in cases:
    with pytest.raises(SystemExit) as excinfo:
      run(workdir, *args)
    line = one_line_error(capsys, excinfo)
    assert all(fragment in line for fragment in fragments), (args, line)
  assert not out.exists()  # every image is checked before anything is written
  with pytest.raises(SystemExit) as excinfo:
    run(tmp_path / "empty", good)
  line = one_line_error(capsys, excinfo)
  assert "no checkpoint in" in line and str(tmp_path / "empty") in line, line


def test_the_module_runs_as_a_command(tmp_path):
  good = save(tmp_path / "good.png", random_image(64, 64))
  proc = subprocess.run(
      [sys.executable, "-m", "overfeat_jax.predict", "--config", "quickstart", "--workdir",
       str(tmp_path / "empty"), good, str(tmp_path / "missing.png")],
      capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert_one_line_error(proc, "cannot read image", "missing.png")
  assert proc.stdout == ""
