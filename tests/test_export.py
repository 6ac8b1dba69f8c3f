"""jax.export of a trained classifier: written by the command, reloaded in a fresh process that has
only jax and numpy (no flax, no code of this project), run at two batch sizes, equal to the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_helpers import random_variables
from overfeat_jax import checkpoint_io, export
from overfeat_jax.config import base_config
from overfeat_jax.data import transforms
from overfeat_jax.errors import CheckpointError, ConfigError, InputSizeError
from overfeat_jax.models.overfeat import layer_map_sizes
from overfeat_jax.tasks import classification

# The fresh process: what a user of the exported files writes.
RELOAD = """
import sys
import jax
import numpy as np
program, images_file, results_file = sys.argv[1:]
with open(program, "rb") as f:
  exported = jax.export.deserialize(bytearray(f.read()))
params = dict(np.load(program + ".npz"))
images = np.load(images_file)
results = {}
for n in (1, 3):  # one program, two batch sizes
  outputs = exported.call(params, images[:n])
  results.update({f"{name}_{n}": np.asarray(value) for name, value in outputs.items()})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("overfeat_jax", "flax", "tensorflow"))
assert not loaded, loaded
np.savez(results_file, **results)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A work directory holding a checkpoint of the base config's small classifier (random weights,
  non-zero biases), written through the checkpoint layout evaluation reads."""
  config = base_config()  # fast, width 0.125, 3x3/1 stem: 58 px training input, 10 classes
  model = classification.model_from_config(config)
  params = random_variables(model, seed=3)["params"]
  workdir = str(tmp_path_factory.mktemp("trained"))
  checkpoint_io.save_params(workdir, params, checkpoint_io.make_signature(
      classification.model_signature(config), params), step=7)
  return config, model, params, workdir


def model_logits(model, params, config, images: np.ndarray) -> np.ndarray:
  return np.asarray(model.apply({"params": params}, transforms.normalize(images, config.input.mean,
                                                                        config.input.std), train=False))


def test_exported_classifier_runs_in_a_fresh_process_like_the_model(trained, tmp_path, capsys):
  config, model, params, workdir = trained
  program = str(tmp_path / "classifier")
  config_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                             "quickstart.py")
  # The command, in-process; the quickstart config's model is the base config's but for its
  # weight-standardised convolutions.
  assert export.main(["--config", config_file, "--workdir", workdir, "--out", program,
                      "--config.dataset.num_classes=10",
                      "--config.model.weight_standardization=False"]) == 0
  assert "checkpoint step 7" in capsys.readouterr().out
  with open(program + ".json") as f:
    description = json.load(f)
  assert description["inputs"] == [{"name": "images", "shape": ["batch", 58, 58, 3], "dtype": "uint8",
                                    "meaning": "RGB pixels 0..255"}]
  assert description["outputs"]["logits"] == {"shape": ["batch", 10], "dtype": "float32"}
  assert description["platforms"] == ["cpu", "cuda", "tpu"] and description["checkpoint_step"] == 7
  images = np.random.default_rng(0).integers(0, 256, (3, 58, 58, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-c", RELOAD, program, str(tmp_path / "images.npy"),
                         str(tmp_path / "results.npz")], capture_output=True, text=True, cwd=tmp_path,
                        timeout=300, env=dict(env, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr
  results = np.load(tmp_path / "results.npz")
  expected = model_logits(model, params, config, images)  # [3, 10]
  assert np.abs(expected).max() > 1.0  # not a comparison of near-zero numbers
  for n in (1, 3):
    np.testing.assert_allclose(results[f"logits_{n}"], expected[:n], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results[f"probabilities_{n}"], jax.nn.softmax(expected[:n]), rtol=1e-5,
                               atol=1e-6)


def test_larger_fixed_size_gives_the_class_maps_spatial_max(trained, tmp_path):
  config, model, params, workdir = trained
  written = export.export_model(config, workdir, str(tmp_path / "big"), batch=2, height=70, width=81,
                                platforms=["cpu"])
  with open(written.program, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  assert exported.platforms == ("cpu",)
  images = np.random.default_rng(1).integers(0, 256, (2, 70, 81, 3), dtype=np.uint8)
  outputs = exported.call(dict(np.load(written.params)), images)
  normalized = transforms.normalize(images, config.input.mean, config.input.std)
  class_map = np.asarray(model.apply({"params": params}, normalized, method="class_map"))  # [2, h, w, 10]
  assert class_map.shape[1:3] == layer_map_sizes(model.arch, 70, 81)["fc8"] == (2, 3)  # 6 windows
  np.testing.assert_allclose(outputs["logits"], class_map.max(axis=(1, 2)), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="expected same constant"):  # the batch was fixed at 2
    exported.call(dict(np.load(written.params)), images[:1])


def test_any_predict_function_exports_with_shared_symbolic_dimensions():
  # As a detector's would: two inputs sharing the batch, a dict of padded outputs.
  params = {"head": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4)}}

  def predict(p, images, sizes):  # images [B, H, W, 3] float32, sizes [B, 2] int32
    scores = images.mean(axis=(1, 2)) @ p["head"]["kernel"]  # [B, 4]
    return {"boxes": jnp.concatenate([jnp.zeros_like(sizes), sizes], axis=1).astype(jnp.float32),
            "scores": scores}

  inputs = [export.InputSpec("images", "batch, height, width, 3", "float32"),
            export.InputSpec("sizes", "batch, 2", "int32")]
  exported = jax.export.deserialize(export.export_function(predict, params, inputs,
                                                           platforms=["cpu"]).serialize())
  description = export.describe(exported, inputs)
  assert description["inputs"][0]["shape"] == ["batch", "height", "width", 3]
  assert description["outputs"]["boxes"]["shape"] == ["batch", 4]
  rng = np.random.default_rng(2)
  for b, h, w in ((1, 5, 7), (4, 9, 3)):
    images = rng.standard_normal((b, h, w, 3)).astype(np.float32)
    sizes = rng.integers(1, 100, (b, 2)).astype(np.int32)
    got = exported.call(export.flatten_params(params), images, sizes)
    want = predict(params, images, sizes)
    for key in want:
      np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)
  with pytest.raises(Exception, match="batch"):  # the two inputs' batch must agree
    exported.call(export.flatten_params(params), np.zeros((2, 4, 4, 3), np.float32),
                  np.zeros((3, 2), np.int32))


def test_bad_requests_are_one_line_errors(trained, tmp_path):
  config, _, _, workdir = trained
  with pytest.raises(InputSizeError, match="40x58 image is smaller than"):
    export.export_model(config, workdir, str(tmp_path / "x"), height=40, platforms=["cpu"])
  with pytest.raises(ConfigError, match="--platforms gpu is invalid"):
    export.export_model(config, workdir, str(tmp_path / "x"), platforms=["gpu"])
  with pytest.raises(ConfigError, match="--batch=-1 is invalid"):
    export.export_model(config, workdir, str(tmp_path / "x"), batch=-1)
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    export.export_model(config, str(tmp_path / "empty"), str(tmp_path / "x"), platforms=["cpu"])
  assert not os.path.exists(tmp_path / "x")


# The fresh process for a detector: inputs (images, sizes) from an npz, two batch sizes.
RELOAD_DETECTOR = """
import sys
import jax
import numpy as np
program, inputs_file, results_file = sys.argv[1:]
with open(program, "rb") as f:
  exported = jax.export.deserialize(bytearray(f.read()))
params = dict(np.load(program + ".npz"))
inputs = np.load(inputs_file)
results = {}
for n in (1, 2):
  outputs = exported.call(params, inputs["images"][:n], inputs["sizes"][:n])
  results.update({f"{name}_{n}": np.asarray(value) for name, value in outputs.items()})
assert not [m for m in sys.modules if m.split(".")[0] in ("overfeat_jax", "flax", "tensorflow")]
np.savez(results_file, **results)
"""


def test_exported_detector_runs_in_a_fresh_process_like_the_model(tmp_path):
  import test_faster_rcnn_task
  import test_predict
  from overfeat_jax.tasks import faster_rcnn
  config = test_faster_rcnn_task.tiny_config(str(tmp_path / "no_data"))
  config.faster_rcnn.test.score_threshold = 0.0  # an untrained net: keep its many detections
  config.faster_rcnn.test.size_factor = 1.0  # the default canvas: the training sizes 64 x 96
  model = faster_rcnn.model_from_config(config)
  params = test_predict.random_params(faster_rcnn.params_template(model), seed=5)
  workdir = str(tmp_path / "run")
  checkpoint_io.save_params(workdir, params, checkpoint_io.make_signature(
      faster_rcnn.model_signature(config), params), step=4)
  written = export.export_model(config, workdir, str(tmp_path / "detector"), platforms=["cpu"])
  with open(written.description) as f:
    description = json.load(f)
  assert [i["shape"] for i in description["inputs"]] == [["batch", 64, 96, 3], ["batch", 2]]
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
  sizes = np.array([[64, 96], [50, 70]], np.int32)  # the second image is padded
  np.savez(tmp_path / "inputs.npz", images=images, sizes=sizes)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-c", RELOAD_DETECTOR, written.program, str(tmp_path / "inputs.npz"),
                         str(tmp_path / "results.npz")], capture_output=True, text=True, cwd=tmp_path,
                        timeout=300, env=dict(env, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr
  results = np.load(tmp_path / "results.npz")
  # The model's own test-time outputs on the pipeline's normalisation (zeros outside each image).
  normalized = transforms.normalize(images, config.input.mean, config.input.std)
  normalized[1, 50:], normalized[1, :, 70:] = 0.0, 0.0
  predict = jax.jit(lambda p, batch: faster_rcnn.predict(  # jitted: op by op takes many times longer
      model, p, batch, min_size_original=config.faster_rcnn.proposal_min_size))
  expected = predict(params, {"image": normalized, "size": sizes, "scale": np.ones((2, 2), np.float32)})
  assert np.asarray(expected["valid"]).sum() > 10  # real detections are compared, not padding
  for n in (1, 2):
    valid = np.asarray(expected["valid"])[:n]
    np.testing.assert_array_equal(results[f"valid_{n}"], valid)
    np.testing.assert_array_equal(results[f"classes_{n}"][valid], np.asarray(expected["classes"])[:n][valid])
    # Boxes to 1e-3 px: exp() of decoded deltas amplifies the compiled program's float rounding.
    for key, atol in (("boxes", 1e-3), ("scores", 1e-5)):
      np.testing.assert_allclose(results[f"{key}_{n}"][valid], np.asarray(expected[key])[:n][valid],
                                 rtol=1e-4, atol=atol)
  # The default canvas is the test sizes: with faster_rcnn.test.size_factor, 1.25 x (64, 96).
  config.faster_rcnn.test.size_factor = 1.25
  assert export._faster_rcnn(config, "batch", 0, 0).inputs[0].shape == "batch, 80, 120, 3"
  config.faster_rcnn.test.proposal_ranking = "random"  # an ablation's setting: refused in one line
  with pytest.raises(ConfigError, match=r"proposal_ranking='random' cannot be exported"):
    export.export_model(config, workdir, str(tmp_path / "random"), platforms=["cpu"])
  assert not os.path.exists(tmp_path / "random")
