"""The converter of the OverFeat authors' released weights (net_weight_0 / net_weight_1).

The real files (584 MB, not redistributable) are not used. The paper networks' float counts are checked
against the counts the issue states for the files; the conversion itself is tested on a synthetic file
of a width-reduced fast network written here in the release's layout (per layer: weight [out, in, kh,
kw], then bias; little-endian float32), against a forward pass written directly on those Torch-layout
arrays (NCHW, OIHW kernels) that shares no code with the converter or the Flax model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from cli_helpers import ROOT, assert_one_line_error
from overfeat_jax import checkpoint_io, convert_weights
from overfeat_jax.config import released_weights_config, validate_config
from overfeat_jax.data import transforms
from overfeat_jax.errors import CheckpointError
from overfeat_jax.evaluation import run as evaluation
from overfeat_jax.models import released_weights
from overfeat_jax.models.overfeat import ACCURATE, FAST, OverFeat, param_count
from overfeat_jax.tasks import classification
from test_config import load_config

WIDTH = 0.0625  # fast at 1/16 width: 6, 16, 32, 64, 64 conv channels, FC 192 and 256, 1000 classes
# (name, out, in, kernel, padding, pool) of that network, written out by hand from SPEC A2.
TINY_FAST_LAYERS = (("conv1", 6, 3, 11, 0, 2), ("conv2", 16, 6, 5, 0, 2), ("conv3", 32, 16, 3, 1, 0),
                    ("conv4", 64, 32, 3, 1, 0), ("conv5", 64, 64, 3, 1, 2),
                    ("fc6", 192, 64, 6, 0, 0), ("fc7", 256, 192, 1, 0, 0), ("fc8", 1000, 256, 1, 0, 0))
CONV1_STRIDE = 4


def tiny_config():
  config = released_weights_config("fast")
  config.model.width = WIDTH
  return config


def torch_layout_arrays(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """(name, weight [out, in, k, k], bias [out]) per layer of the tiny fast net, He-scaled so that the
  activations keep their size through the layers (a wrong transpose then changes the logits a lot)."""
  rng = np.random.default_rng(seed)
  layers = []
  for name, out, inp, k, _, _ in TINY_FAST_LAYERS:
    scale = np.float32(np.sqrt(2 / (inp * k * k)))
    weight = rng.standard_normal((out, inp, k, k)).astype(np.float32) * scale
    layers.append((name, weight, (0.1 * rng.standard_normal(out)).astype(np.float32)))
  return layers


def write_release_file(path, layers) -> None:
  with open(path, "wb") as f:
    for _, weight, bias in layers:
      f.write(weight.astype("<f4").tobytes())  # C order: out, in, kh, kw
      f.write(bias.astype("<f4").tobytes())


def torch_reference_logits(layers, images_nhwc: np.ndarray) -> np.ndarray:
  """The network run as Torch7 ran it: NCHW maps, OIHW kernels, FC layers as convolutions."""
  x = jnp.asarray(images_nhwc.transpose(0, 3, 1, 2))  # [B, 3, H, W]
  for (name, weight, bias), (_, _, _, _, pad, pool) in zip(layers, TINY_FAST_LAYERS):
    stride = CONV1_STRIDE if name == "conv1" else 1
    x = jax.lax.conv_general_dilated(x, jnp.asarray(weight), (stride, stride), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                     precision=jax.lax.Precision.HIGHEST)
    x = x + bias[None, :, None, None]
    if name != "fc8":
      x = jax.nn.relu(x)
    if pool:
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, pool, pool), (1, 1, pool, pool), "VALID")
  assert x.shape[2:] == (1, 1)
  return np.asarray(x[:, :, 0, 0])


def expected_flax_params(layers) -> dict:
  """The Flax parameter tree, each kernel transposed by hand: [out, in, kh, kw] -> [kh, kw, in, out]."""
  tree = {"extractor": {}, "classifier": {}}
  for name, weight, bias in layers:
    top = "extractor" if name.startswith("conv") else "classifier"
    tree[top][name] = {"kernel": np.transpose(weight, (2, 3, 1, 0)), "bias": bias}
  return tree


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """A synthetic release file of the tiny fast net, its arrays, and a batch of 0..255 images."""
  directory = tmp_path_factory.mktemp("release")
  layers = torch_layout_arrays()
  path = str(directory / "net_weight_tiny")
  write_release_file(path, layers)
  pixels = np.random.default_rng(1).integers(0, 256, (2, 231, 231, 3), dtype=np.uint8)
  return path, layers, pixels


def test_paper_networks_have_the_released_files_float_counts():
  # The counts of net_weight_0 / net_weight_1 (the issue; SPEC A2's parameter counts).
  assert released_weights.float_count(FAST) == 145_920_872
  assert released_weights.float_count(ACCURATE) == 144_656_488
  for arch in (FAST, ACCURATE):  # ... and the models' own parameter counts (shapes only, nothing allocated)
    model = OverFeat(arch, num_classes=1000)
    x = jax.ShapeDtypeStruct((1, arch.train_size, arch.train_size, 3), jnp.float32)
    params = jax.eval_shape(lambda a, m=model: m.init(jax.random.key(0), a, train=False), x)["params"]
    assert param_count(params) == released_weights.float_count(arch)
  layout = released_weights.file_layout(FAST)
  # The arrays follow each other with no gap; offsets that third-party loaders of net_weight_0 use.
  assert all(a.offset + a.size == b.offset for a, b in zip(layout, layout[1:]))
  by_path = {"/".join(e.path[1:]): e for e in layout}
  assert by_path["conv1/bias"].offset == 34_848
  assert by_path["fc6/kernel"].file_shape == (3072, 1024, 6, 6)
  assert by_path["fc6/kernel"].offset == 15_987_584
  assert by_path["fc8/bias"].offset == 145_919_872


def test_converted_model_gives_the_logits_of_the_torch_layout_network(release, tmp_path):
  path, layers, pixels = release
  config = tiny_config()
  done = convert_weights.convert(config, path, str(tmp_path))
  assert done.num_floats == os.path.getsize(path) // 4
  assert done.class_order == convert_weights.CLASS_ORDER_RELEASED
  params, step = classification.restore_params(config, str(tmp_path))  # what evaluate.py restores
  assert step == 0
  expected = expected_flax_params(layers)
  for top, group in expected.items():
    for name, leaves in group.items():
      for leaf, value in leaves.items():
        np.testing.assert_array_equal(np.asarray(params[top][name][leaf]), value, err_msg=f"{name}/{leaf}")
  model = classification.model_from_config(config)
  images = transforms.normalize(pixels, config.input.mean, config.input.std)
  with jax.default_matmul_precision("highest"):
    logits = np.asarray(model.apply({"params": params}, images, train=False))
  reference = torch_reference_logits(layers, (pixels.astype(np.float64) - 118.380948) / 61.896913)
  assert logits.shape == (2, 1000)
  assert np.abs(reference).max() > 1.0  # not a vacuous comparison of near-zero numbers
  np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_class_order_file_puts_outputs_in_sorted_wnid_order(release, tmp_path):
  path, layers, pixels = release
  rng = np.random.default_rng(2)
  wnids = [f"n{v:08d}" for v in rng.choice(10**8, size=1000, replace=False)]  # the release's order
  order_file = tmp_path / "order.txt"
  order_file.write_text("".join(f"{w} class {k}\n" for k, w in enumerate(wnids)))
  config = tiny_config()
  convert_weights.convert(config, path, str(tmp_path / "sorted"), class_order=str(order_file))
  params, _ = classification.restore_params(config, str(tmp_path / "sorted"))
  images = transforms.normalize(pixels, config.input.mean, config.input.std)
  with jax.default_matmul_precision("highest"):
    model = classification.model_from_config(config)
    logits = np.asarray(model.apply({"params": params}, images, train=False))
  reference = torch_reference_logits(layers, (pixels.astype(np.float64) - 118.380948) / 61.896913)
  for k, wnid in enumerate(sorted(wnids)):  # output k is the class with the k-th smallest WNID
    np.testing.assert_allclose(logits[:, k], reference[:, wnids.index(wnid)], rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())


def test_tfds_imagenet2012_labels_are_the_sorted_wnids():
  # The mapping's premise, on the label file of the installed tensorflow_datasets.
  text = (resources.files("tensorflow_datasets") / "datasets" / "imagenet2012" / "labels.txt").read_text()
  labels = text.split()
  assert len(labels) == 1000 and labels == sorted(labels) and labels[0] == "n01440764"


def test_devkit_meta_mat_gives_the_leaf_wnids_by_id(tmp_path):
  rng = np.random.default_rng(3)
  wnids = [f"n{v:08d}" for v in rng.choice(10**8, size=1000, replace=False)]
  rows = [(k + 1, w, f"class {k}", 0) for k, w in enumerate(wnids)]
  rows += [(1001 + j, f"n9{j:07d}", "inner node", 3) for j in range(5)]  # non-leaf synsets are skipped
  rows = [rows[i] for i in rng.permutation(len(rows))]
  synsets = np.empty((len(rows), 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"),
                                             ("num_children", "O")])
  for i, row in enumerate(rows):
    synsets[i, 0] = row
  scipy.io.savemat(tmp_path / "meta.mat", {"synsets": synsets})
  assert released_weights.read_class_order(str(tmp_path / "meta.mat")) == wnids


def test_bad_class_order_files_are_one_line_errors(tmp_path):
  short = tmp_path / "short.txt"
  short.write_text("n01440764\nn01443537\n")
  with pytest.raises(CheckpointError, match=r"gives 2 WNIDs \(2 distinct\), expected 1000"):
    released_weights.read_class_order(str(short))
  bad = tmp_path / "bad.txt"
  bad.write_text("n01440764 tench\ngoldfish\n")
  with pytest.raises(CheckpointError, match="line 2 does not start with a WNID"):
    released_weights.read_class_order(str(bad))


def test_released_normalisation_is_the_releases_pixel_standardisation():
  for variant in ("fast", "accurate"):
    config = released_weights_config(variant)
    validate_config(config)
    pixels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # every value, 3 channels
    ours = transforms.normalize(pixels, config.input.mean, config.input.std)
    theirs = (np.arange(256, dtype=np.float64)[:, None] - 118.380948) / 61.896913
    np.testing.assert_allclose(ours, np.repeat(theirs, 3, axis=1), rtol=0, atol=2e-6)
    assert config.input.mean == (released_weights.PIXEL_MEAN / 255,) * 3
    assert config.input.std == (released_weights.PIXEL_STD / 255,) * 3


@pytest.mark.parametrize("variant", ["fast", "accurate"])
def test_released_configs_are_the_paper_configs_but_for_the_normalisation(variant):
  released = load_config(f"overfeat_{variant}_released").to_dict()
  paper = load_config(f"overfeat_{variant}_imagenet").to_dict()
  assert released == released_weights_config(variant).to_dict()
  for key in ("mean", "std"):
    assert released["input"].pop(key) != paper["input"].pop(key)
  assert released == paper


def test_wrong_size_names_both_counts_and_the_variant_that_fits(tmp_path):
  accurate_sized = tmp_path / "net_weight_1"
  with open(accurate_sized, "wb") as f:
    f.truncate(144_656_488 * 4)  # sparse: no disk used, and the size check reads nothing
  proc = subprocess.run([sys.executable, "-m", "overfeat_jax.convert_weights", "--variant", "fast",
                         str(accurate_sized), "--workdir", str(tmp_path / "w")],
                        capture_output=True, text=True, cwd=ROOT, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert_one_line_error(proc, "144,656,488 float32 values", "145,920,872", "use --variant accurate")
  assert not os.path.exists(tmp_path / "w" / "checkpoints")
  odd = tmp_path / "odd"
  odd.write_bytes(b"\0" * 10)
  with pytest.raises(CheckpointError, match="10 bytes .not a whole number of float32 values.*145,920,872"):
    released_weights.read_released_weights(str(odd), FAST)


def test_non_finite_values_and_existing_checkpoints_are_refused(release, tmp_path):
  path, layers, _ = release
  broken = [(n, w.copy(), b) for n, w, b in layers]
  broken[5][1][0, 0, 0, 0] = np.nan
  write_release_file(tmp_path / "nan", broken)
  with pytest.raises(CheckpointError, match="NaN or Inf in fc6/kernel"):
    convert_weights.convert(tiny_config(), str(tmp_path / "nan"), str(tmp_path / "w_nan"))
  convert_weights.convert(tiny_config(), path, str(tmp_path / "w"))
  with pytest.raises(CheckpointError, match="already holds checkpoints"):
    convert_weights.convert(tiny_config(), path, str(tmp_path / "w"))


def test_training_refuses_to_resume_from_a_converted_checkpoint(release, tmp_path):
  path, _, _ = release
  config = tiny_config()
  convert_weights.convert(config, path, str(tmp_path))
  saved, _ = checkpoint_io.read_signature(str(tmp_path))
  template = classification.params_template(classification.model_from_config(config))
  training = checkpoint_io.make_signature(classification.model_signature(config), template)
  with pytest.raises(CheckpointError, match="written for a different model: task.converted_from"):
    checkpoint_io.check_signature(saved, training, "checkpoints")


def test_command_converts_and_evaluate_runs_on_the_checkpoint(release, tmp_path, monkeypatch, capsys):
  path, _, _ = release
  # The command with the tiny network in place of the paper's (its config function is the only change).
  monkeypatch.setattr(convert_weights, "released_weights_config", lambda variant: tiny_config())
  workdir = str(tmp_path / "converted")
  assert convert_weights.main(["--variant", "fast", path, "--workdir", workdir]) == 0
  out, err = capsys.readouterr()
  assert "into" in out and "evaluate: python evaluate.py --config configs/overfeat_fast_released.py" in out
  assert "keep the release's order" in err
  config = tiny_config()
  config.input.eval_batch_size = 1
  config.input.num_workers = 0  # grain workers would not see mock_data's in-process patch
  config.eval.num_examples = 1
  config.eval.scales = ((247, 247),)  # one scale: one dense-grid program to compile
  config.eval.multi_scales = (0,)
  with tfds.testing.mock_data(num_examples=1):
    metrics = evaluation.run(config, workdir, verbose=False)
  assert metrics["num_examples"] == 1 and metrics["checkpoint_step"] == 0
