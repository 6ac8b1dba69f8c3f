"""The feature extractor command (SPEC A6): `python -m overfeat_jax.features`, mostly through its
`main(argv)` in-process, against the model's own `features` and a hand-chained computation."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cli_helpers import QUICKSTART, ROOT
from overfeat_jax import features
from overfeat_jax.models.overfeat import layer_map_sizes
from overfeat_jax.tasks import classification
from overfeat_jax.tasks.base import Task
from overfeat_jax.training import loop

TRAIN_STEPS = 2
# Quickstart's network (fast, 1/8 width, 3x3/1 stem): field of view 58, 5 feature layers.
FOV = 58


def quickstart_config():
  """configs/quickstart.py's config, as `--config configs/quickstart.py` gives it."""
  spec = importlib.util.spec_from_file_location("quickstart_config", QUICKSTART)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A work directory holding a checkpoint of the quickstart model after TRAIN_STEPS steps of the real
  training loop on 16 random images (no dataset to generate)."""
  config = quickstart_config()
  config.input.batch_size = 4
  config.train.max_steps = TRAIN_STEPS
  config.train.eval_every = 0  # no evaluation callback here: the checkpoint is all this needs
  model = classification.model_from_config(config)
  rs = np.random.RandomState(0)
  records = [{"image": rs.normal(size=(FOV, FOV, 3)).astype(np.float32), "label": np.int32(i % 10)}
             for i in range(16)]

  def apply(params, images, rng):
    return model.apply({"params": params}, images, train=True, rngs={"dropout": rng})

  def make_loader(process_index, process_count):
    sampler = grain.samplers.IndexSampler(
        len(records), grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True),
        shuffle=True, num_epochs=None, seed=0)
    return grain.DataLoader(data_source=records, sampler=sampler, worker_count=0,
                            operations=[grain.transforms.Batch(4, drop_remainder=True)])

  task = Task(init_params=lambda rng: classification.init_params(model, rng),
              loss_fn=classification.classification_loss_fn(apply), make_loader=make_loader,
              steps_per_epoch=4, signature=classification.model_signature(config))
  path = tmp_path_factory.mktemp("features_cli") / "run"
  assert loop.train(config, str(path), task).step == TRAIN_STEPS
  return path


def write_image(path, pixels: np.ndarray, mode: str | None = None) -> str:
  Image.fromarray(pixels, mode).save(path)
  return str(path)


def random_pixels(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
  shape = (h, w) if channels == 1 else (h, w, channels)
  return np.random.RandomState(seed).randint(0, 256, size=shape).astype(np.uint8)


def run(workdir, *args: str) -> int:
  return features.main(["--config", QUICKSTART, "--workdir", str(workdir), *args])


def reference_features(workdir, pixels: np.ndarray, layer: int | None = None) -> np.ndarray:
  """The model's own `features` of an RGB uint8 image [H, W, 3], normalised here by hand -> [h, w, C]."""
  config = quickstart_config()
  model = classification.model_from_config(config)
  params, _ = classification.restore_params(config, str(workdir))
  mean, std = np.array(config.input.mean), np.array(config.input.std)
  image = ((pixels / 255.0 - mean) / std).astype(np.float32)[None]
  args = () if layer is None else (layer,)
  return np.asarray(model.apply({"params": params}, jnp.asarray(image), *args, method="features"))[0]


def one_line_error(capsys, excinfo) -> str:
  assert excinfo.value.code == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


def test_default_layer_is_the_models_features_with_its_description(workdir, tmp_path, capsys):
  pixels = {"a": random_pixels(70, 66, seed=1), "b": random_pixels(58, 91, seed=2)}
  paths = [write_image(tmp_path / f"{name}.png", p) for name, p in pixels.items()]
  assert run(workdir, *paths) == 0
  printed = capsys.readouterr().out
  for name, p in pixels.items():
    saved = np.load(workdir / "features" / f"{name}.npy")  # the default --out
    expected = reference_features(workdir, p)
    assert saved.dtype == np.float32 and saved.shape == expected.shape
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5)
    # 70x66: conv1 68x64, pool1 34x32, conv2 30x28, pool2 15x14, conv3-5 15x14 (padded), 128 channels.
    h, w = layer_map_sizes(classification.model_from_config(quickstart_config()).arch, *p.shape[:2])["conv5"]
    assert saved.shape == (h, w, 128) and (name != "a" or (h, w) == (15, 14))
    meta = json.loads((workdir / "features" / f"{name}.json").read_text())
    # Quickstart's conv5 by hand: stride 2 (conv1 pool) x 2 (conv2 pool) = 4; receptive field
    # 3 -> 4 (pool1) -> 4 + 4*2 = 12 -> 14 (pool2) -> 22 -> 30 -> 38; origin -4 - 4 - 4 = -12.
    assert meta == {"shape": [h, w, 128], "layer": 5, "layer_name": "conv5", "stride": 4,
                    "receptive_field": 38, "field_origin": -12, "image_size": list(p.shape[:2]),
                    "checkpoint_step": TRAIN_STEPS, "architecture": "fast-w0.125-s3x1"}
    assert f"{tmp_path / name}.png: {p.shape[0]}x{p.shape[1]} -> conv5 {h}x{w}x128" in printed
  assert (f"2 image(s): layer 5 (conv5) of fast-w0.125-s3x1, stride 4, receptive field 38; checkpoint "
          f"step {TRAIN_STEPS} of {workdir / 'checkpoints'}; features in {workdir / 'features'}") in printed


def hand_chained(params, image: np.ndarray, n: int) -> np.ndarray:
  """Quickstart's layers 1..n written out (lax conv, bias, ReLU, floor max-pool by reshaping); its
  convolutions are weight-standardised: each output's fan-in to mean 0, variance 2 / fan_in, x gain."""
  arch = classification.model_from_config(quickstart_config()).arch
  x = image[None]
  for i, layer in enumerate(arch.convs[:n]):
    conv = params["extractor"][f"conv{i + 1}"]
    kernel = np.asarray(conv["kernel"], np.float64)
    fan_in = kernel[..., 0].size
    centred = kernel - kernel.mean(axis=(0, 1, 2))
    kernel = centred / np.sqrt(centred.var(axis=(0, 1, 2)) * fan_in / 2) * np.asarray(conv["gain"])
    p = layer.padding
    x = jax.lax.conv_general_dilated(x, kernel.astype(np.float32), (layer.stride,) * 2,
                                     ((p, p), (p, p)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    x = np.maximum(np.asarray(x) + np.asarray(conv["bias"]), 0.0)
    if layer.pool and i < len(arch.convs) - 1:
      q = layer.pool
      _, h, w, c = x.shape
      x = x[:, :h // q * q, :w // q * q].reshape(1, h // q, q, w // q, q, c).max(axis=(2, 4))
  return x[0]


@pytest.mark.parametrize("layer, name, stride, field", [(1, "pool1", 2, 4), (2, "pool2", 4, 14),
                                                        (4, "conv4", 4, 30)])
def test_layer_n_is_the_hand_chained_layers(workdir, tmp_path, capsys, layer, name, stride, field):
  pixels = random_pixels(61, 75, seed=3)
  path = write_image(tmp_path / "scene.png", pixels)
  out = tmp_path / "maps"
  assert run(workdir, "--layer", str(layer), "--out", str(out), path) == 0
  saved = np.load(out / "scene.npy")
  config = quickstart_config()
  params, _ = classification.restore_params(config, str(workdir))
  mean, std = np.array(config.input.mean), np.array(config.input.std)
  expected = hand_chained(params, ((pixels / 255.0 - mean) / std).astype(np.float32), layer)
  arch = classification.model_from_config(config).arch
  channels = arch.convs[layer - 1].features
  assert saved.shape == expected.shape == layer_map_sizes(arch, 61, 75)[name] + (channels,)
  np.testing.assert_allclose(saved, expected, rtol=1e-4, atol=1e-5)
  meta = json.loads((out / "scene.json").read_text())
  assert (meta["layer"], meta["layer_name"], meta["stride"], meta["receptive_field"]) == (
      layer, name, stride, field)
  assert meta["shape"] == list(saved.shape) and meta["image_size"] == [61, 75]
  assert not (workdir / "features" / "scene.npy").exists()
  assert f"layer {layer} ({name})" in capsys.readouterr().out


def test_grey_and_rgba_images_are_read_as_rgb(workdir, tmp_path):
  grey = random_pixels(64, 60, channels=1, seed=4)
  rgba = random_pixels(60, 64, channels=4, seed=5)
  paths = [write_image(tmp_path / "grey.png", grey, "L"),
           write_image(tmp_path / "grey_as_rgb.png", np.repeat(grey[..., None], 3, axis=-1)),
           write_image(tmp_path / "rgba.png", rgba, "RGBA"),
           write_image(tmp_path / "rgba_as_rgb.png", np.ascontiguousarray(rgba[..., :3]))]
  assert Image.open(paths[2]).mode == "RGBA"
  assert run(workdir, "--out", str(tmp_path / "out"), *paths) == 0
  maps = {name: np.load(tmp_path / "out" / f"{name}.npy")
          for name in ("grey", "grey_as_rgb", "rgba", "rgba_as_rgb")}
  np.testing.assert_array_equal(maps["grey"], maps["grey_as_rgb"])  # grey repeated
  np.testing.assert_array_equal(maps["rgba"], maps["rgba_as_rgb"])  # alpha dropped, not composited
  assert json.loads((tmp_path / "out" / "rgba.json").read_text())["image_size"] == [60, 64]


def test_bfloat16_compute_still_writes_float32_maps(workdir, tmp_path):
  path = write_image(tmp_path / "x.png", random_pixels(64, 64, seed=6))
  for dtype in ("float32", "bfloat16"):
    assert run(workdir, f"--config.model.compute_dtype={dtype}", "--out", str(tmp_path / dtype), path) == 0
  full, half = np.load(tmp_path / "float32" / "x.npy"), np.load(tmp_path / "bfloat16" / "x.npy")
  assert half.dtype == np.float32 and half.shape == full.shape
  assert not np.array_equal(half, full)  # the override reached the model
  np.testing.assert_allclose(half, full, atol=0.05 * np.abs(full).max())


def test_an_image_below_the_field_of_view_is_a_one_line_error_before_any_output(workdir, tmp_path, capsys):
  good = write_image(tmp_path / "good.png", random_pixels(64, 64))
  small = write_image(tmp_path / "small.png", random_pixels(FOV - 1, 80))
  out = tmp_path / "out"
  with pytest.raises(SystemExit) as excinfo:
    run(workdir, "--out", str(out), good, small)
  line = one_line_error(capsys, excinfo)
  assert small in line and "57x80" in line and f"field of view {FOV}x{FOV}" in line, line
  assert not out.exists()  # every image is checked before anything is written


@pytest.mark.parametrize("layer", ["99", "0", "-2"])
def test_a_layer_that_does_not_exist_is_a_one_line_error(workdir, tmp_path, capsys, layer):
  image = write_image(tmp_path / "x.png", random_pixels(64, 64))
  with pytest.raises(SystemExit) as excinfo:
    run(workdir, "--layer", layer, image)
  line = one_line_error(capsys, excinfo)
  assert f"feature layer {layer} does not exist" in line and "layers 1..5 (conv1..conv5)" in line, line


def test_a_workdir_without_checkpoint_is_a_one_line_error(tmp_path, capsys):
  image = write_image(tmp_path / "x.png", random_pixels(64, 64))
  with pytest.raises(SystemExit) as excinfo:
    run(tmp_path / "empty", image)
  line = one_line_error(capsys, excinfo)
  assert "no checkpoint in" in line and str(tmp_path / "empty") in line, line


def test_bad_files_and_arguments_are_one_line_errors(workdir, tmp_path, capsys):
  good = write_image(tmp_path / "good.png", random_pixels(64, 64))
  (tmp_path / "notes.png").write_text("not a picture")
  os.makedirs(tmp_path / "other")
  twin = write_image(tmp_path / "other" / "good.jpg", random_pixels(64, 64))
  cases = [((good, str(tmp_path / "missing.png")), ("cannot read image", "missing.png",
                                                    "No such file or directory")),
           ((str(tmp_path / "notes.png"),), ("cannot read image", "notes.png")),
           ((good, twin), ("would both write good.npy", twin)),
           ((), ("no images given",)),
           (("--layer", "three", good), ("layer", "three")),
           (("--config.model.widht=0.5", good), ("unknown config key 'model.widht'",)),
           (("--config.model.width=0.25", good), ("different model", "model.width: 0.125"))]
  for args, fragments in cases:
    with pytest.raises(SystemExit) as excinfo:
      run(workdir, *args)
    line = one_line_error(capsys, excinfo)
    assert all(fragment in line for fragment in fragments), (args, line)
  assert not (tmp_path / "good.npy").exists()


def test_the_command_runs_as_a_module(workdir, tmp_path):
  image = write_image(tmp_path / "scene.png", random_pixels(64, 70))
  proc = subprocess.run(
      [sys.executable, "-m", "overfeat_jax.features", "--config", QUICKSTART, "--workdir", str(workdir),
       "--layer", "3", "--out", str(tmp_path / "out"), image],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))  # run from ROOT: this checkout's package
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == "", proc.stderr
  meta = json.loads((tmp_path / "out" / "scene.json").read_text())
  assert meta["layer_name"] == "conv3"
  assert meta["shape"] == list(np.load(tmp_path / "out" / "scene.npy").shape)
  assert "1 image(s): layer 3 (conv3)" in proc.stdout
