"""notebooks/quickstart.ipynb: the committed file is clean nbformat v4, and it runs top to bottom.

The run executes the notebook in a fresh IPython kernel of this interpreter (nbclient), with the
parameters cell's values overridden as papermill would (assignments appended to that cell) to a
test-sized run: the quickstart's layers at 1/32 width, a few steps, two test scales, 4 test images.
Any cell error fails the test; the outputs must hold the Table 2 and localization tables and the
pictures as inline PNGs. The optional detection sections run only under `-m slow`.
"""

from __future__ import annotations

import base64
import json
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
KERNEL = "overfeat-jax-test"  # a kernelspec written per test run (tmp dir), so no install step is needed
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = 2

# One shape bucket, two scales, batches of 4: few and small compiles (as tests/test_evaluate_cli.py).
SHARED = {"model.width": 1 / 32, "input.batch_size": 4, "input.eval_batch_size": 4,
          "eval.multi_scales": (0, 1), "eval.aspect_buckets": (2.0,), "eval.num_examples": 4,
          "train.log_every": 1, "train.eval_every": 0}
# The session's data dir holds the 4,000-image classification config, not the quickstart's x8 one.
CLASSIFICATION = {"dataset.name": "digits_in_scenes/classification"}
LOCALIZATION = {"dataset.name": "digits_in_scenes/classification", "dataset.train_split": "train[:32]",
                "localization.train_scales": (62, 64), "input.min_size": 64, "input.max_size": 128,
                "input.aspect_buckets": (2.0,)}


def detection_settings(data_dir: str) -> dict:
  """The detection section at test size (tests/detection_helpers.py's tiny config)."""
  return {"dataset.data_dir": data_dir, "input.min_size": 64, "input.max_size": 128,
          "input.aspect_buckets": (2.0,), "detection.train_scales": (62, 64),
          "detection.test_scales": (62, 64), "detection.hard_negatives": 3,
          "detection.random_negatives": 2, "detection.max_boxes_per_class": 32,
          "detection.max_detections": 20}


def faster_rcnn_settings(data_dir: str) -> dict:
  """The Faster R-CNN section at test size (tests/test_faster_rcnn_task.py's tiny config)."""
  return {"dataset.data_dir": data_dir, "input.min_size": 64, "input.max_size": 96,
          "input.aspect_buckets": (2.0,), "faster_rcnn.rpn_batch": 32,
          "faster_rcnn.train_pre_nms": 200, "faster_rcnn.train_post_nms": 40,
          "faster_rcnn.test.pre_nms": 200, "faster_rcnn.test.post_nms": 20,
          "faster_rcnn.test.recall_proposals": (5, 20, 60), "faster_rcnn.test.picture_proposals": 3,
          "faster_rcnn.head_hidden": 16, "faster_rcnn.num_rois": 16}


def read_notebook() -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)


def cell(notebook: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
  (found,) = [c for c in notebook.cells if c.get("id") == cell_id]
  return found


def parameters_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
  (found,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  return found


def test_committed_notebook_is_valid_v4_without_outputs():
  notebook = read_notebook()
  nbformat.validate(notebook)
  assert notebook.nbformat == 4
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert code and all(c.outputs == [] and c.execution_count is None for c in code)
  # Papermill-style: one cell tagged `parameters`, holding every name the test sets.
  source = parameters_cell(notebook).source
  for name in ("REPO", "WORKDIR", "DATA_DIR", "STEPS", "LOCALIZATION_STEPS", "PICTURES", "RUN_DETECTION",
               "RUN_FASTER_RCNN", "SHARED_OVERRIDES", "CLASSIFICATION_OVERRIDES",
               "LOCALIZATION_OVERRIDES", "DETECTION_OVERRIDES", "FASTER_RCNN_OVERRIDES"):
    assert f"\n{name} = " in f"\n{source}", name


def write_kernelspec(directory) -> None:
  """A kernelspec named KERNEL that starts ipykernel on this interpreter (found through JUPYTER_PATH)."""
  spec_dir = directory / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "overfeat_jax test", "language": "python"}))


def execute(tmp_path, monkeypatch, **parameters) -> nbformat.NotebookNode:
  """The notebook run in a new kernel (cwd tmp_path) with `parameters` appended to its parameters
  cell; raises nbclient's CellExecutionError at the first cell that fails."""
  notebook = read_notebook()
  cell_ = parameters_cell(notebook)
  cell_.source += "\n\n# tests/test_notebook.py\n" + "\n".join(
      f"{name} = {value!r}" for name, value in parameters.items())
  write_kernelspec(tmp_path / "jupyter")
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  NotebookClient(notebook, kernel_name=KERNEL, timeout=600,
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  return notebook


def text(cell_: nbformat.NotebookNode) -> str:
  return "".join(o.get("text", "") for o in cell_.outputs if o.output_type == "stream")


def pngs(cell_: nbformat.NotebookNode) -> list[bytes]:
  """The decoded image/png of each display_data output of the cell."""
  return [base64.b64decode(o.data["image/png"]) for o in cell_.outputs
          if o.output_type == "display_data" and "image/png" in o.get("data", {})]


def assert_pictures(cell_: nbformat.NotebookNode, count: int) -> None:
  images = pngs(cell_)
  assert len(images) == count, cell_.outputs
  assert all(image.startswith(PNG_SIGNATURE) for image in images)


def assert_all_cells_ran(notebook: nbformat.NotebookNode) -> None:
  for c in notebook.cells:
    if c.cell_type == "code":
      assert c.execution_count is not None, c.id
      assert not [o for o in c.outputs if o.output_type == "error"], c.id


@pytest.mark.slow  # minutes on 2 cores: out of the default run (README, "The tests")
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, digits_data_dir):
  notebook = execute(tmp_path, monkeypatch, WORKDIR=str(tmp_path / "work"), DATA_DIR=digits_data_dir,
                     STEPS=3, LOCALIZATION_STEPS=2, PICTURES=PICTURES, SHARED_OVERRIDES=SHARED,
                     CLASSIFICATION_OVERRIDES=CLASSIFICATION, LOCALIZATION_OVERRIDES=LOCALIZATION)
  assert_all_cells_ran(notebook)
  # The package is importable here, so the install cell must not have reached for REPO (whose
  # placeholder would have raised).
  assert "already installed" in text(cell(notebook, "install"))

  assert "step 3/3" in text(cell(notebook, "classifier-train"))
  assert_pictures(cell(notebook, "classifier-train"), 1)  # the training curve
  table = text(cell(notebook, "classifier-eval"))
  for fragment in ("Approach", "top-1 err %", "centre crop (58x58 of short side 64)",
                   "2 scales (64x64, 72x80), fine stride", "checkpoint step 3 of"):
    assert fragment in table, table
  assert_pictures(cell(notebook, "classifier-pictures"), PICTURES)

  assert "step 2/2" in text(cell(notebook, "localization-train"))
  assert_pictures(cell(notebook, "localization-train"), 1)
  table = text(cell(notebook, "localization-eval"))
  for fragment in ("top-1 loc err %", "2 scales (64x64, 72x80), fine stride", "checkpoint step 2 of"):
    assert fragment in table, table
  assert_pictures(cell(notebook, "localization-pictures"), PICTURES)

  for section, flag in (("detection", "RUN_DETECTION"), ("faster-rcnn", "RUN_FASTER_RCNN")):
    assert f"skipped: set {flag} = True" in text(cell(notebook, section))
  assert (tmp_path / "work" / "quickstart" / "eval" / "metrics.json").is_file()
  assert (tmp_path / "work" / "localization" / "eval" / "metrics.json").is_file()


@pytest.mark.slow
def test_notebook_detection_sections(tmp_path, monkeypatch, digits_data_dir, digits_detection_data_dir):
  notebook = execute(tmp_path, monkeypatch, WORKDIR=str(tmp_path / "work"), DATA_DIR=digits_data_dir,
                     STEPS=2, LOCALIZATION_STEPS=1, PICTURES=PICTURES, SHARED_OVERRIDES=SHARED,
                     CLASSIFICATION_OVERRIDES=CLASSIFICATION, LOCALIZATION_OVERRIDES=LOCALIZATION,
                     RUN_DETECTION=True, DETECTION_STEPS=2,
                     DETECTION_OVERRIDES=detection_settings(digits_detection_data_dir),
                     RUN_FASTER_RCNN=True, FASTER_RCNN_STEPS=2,
                     FASTER_RCNN_OVERRIDES=faster_rcnn_settings(digits_detection_data_dir))
  assert_all_cells_ran(notebook)
  for section in ("detection", "faster-rcnn"):
    output = text(cell(notebook, section))
    assert "step 2/2" in output and "AP50" in output, output
    assert_pictures(cell(notebook, section), PICTURES)
