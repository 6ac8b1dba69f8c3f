"""Localization evaluation (SPEC A1, A5): the combination of scales into (class, box) guesses against
a plain reference built on the plain merge loop, the localization error of hand-made guesses, the
centre crop's window, and evaluate.py's path end to end with its bad inputs."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from overfeat_jax import checkpoint_io
from overfeat_jax.errors import CheckpointError, ConfigError, DataError, InputSizeError
from overfeat_jax.evaluation import dense, localize
from overfeat_jax.evaluation import localization as evaluator
from overfeat_jax.evaluation import run as evaluation
from overfeat_jax.tasks import localization as task
from overfeat_jax.training.checkpoint import TrainCheckpoints
from overfeat_jax.training.state import TrainState

from cli_helpers import assert_one_line_error, run_cli
from localization_helpers import NoData, save_classifier, tiny_localization_config
from test_config import load_config
from test_ops_merge import loop_merge

F32 = np.float32


# ---------------------------------------------------------------------------------------------
# SPEC A5 (a)-(d) against a plain reference.

def random_scale(rng: np.random.Generator, n: int, k: int, per_class: bool) -> localize.ScaleBoxes:
  logits = rng.normal(size=(n, k)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  corner = rng.uniform(0, 80, (n, 2))
  windows = np.concatenate([corner, corner + rng.uniform(30, 60, (n, 2))], 1)
  return localize.ScaleBoxes(probs=probs.astype(F32), valid=rng.random(n) < 0.8,
                             windows=windows.astype(F32),
                             edges=rng.normal(scale=0.2, size=(n, k if per_class else 1, 4)).astype(F32))


def reference_guesses(scales, top_k: int, threshold: float, num_guesses: int = 5):
  """SPEC A5 as written, one class and one box at a time: [(class, box, confidence)], best first."""
  chosen = []
  for s in scales:
    score = np.where(s.valid[:, None], s.probs, 0).max(0)
    chosen.append(set(np.argsort(-score, kind="stable")[:top_k].tolist()))
  answers = []
  for c in sorted(set().union(*chosen)):
    boxes, scores, valid = [], [], []
    for s, keep in zip(scales, chosen):
      for n in range(len(s.valid)):
        edges = s.edges[n, 0 if s.edges.shape[1] == 1 else c]
        w, h = s.windows[n, 2] - s.windows[n, 0], s.windows[n, 3] - s.windows[n, 1]
        boxes.append(s.windows[n] + edges * np.array([w, h, w, h], F32))
        scores.append(s.probs[n, c])
        valid.append(bool(s.valid[n]) and c in keep)
    survivors = loop_merge(np.array(boxes, F32), np.array(scores, F32), np.array(valid), threshold)
    if survivors:
      box, confidence, _ = survivors[0]
      answers.append((c, box, float(confidence)))
  return sorted(answers, key=lambda a: -a[2])[:num_guesses]  # stable: the lower class on ties


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 60.0, 2000.0, float("inf")])
def test_merged_guesses_match_the_reference(per_class, threshold):
  rng = np.random.default_rng([int(min(threshold, 1e6)), per_class])
  scales = [random_scale(rng, n, 6, per_class) for n in (12, 20, 9)]
  guess = jax.jit(lambda s: localize.merged_guesses(s, top_k=2, threshold=threshold))
  classes, boxes, scores, valid = map(np.asarray, guess(scales))
  expected = reference_guesses(scales, 2, threshold)
  assert valid.sum() == len(expected) >= 2
  np.testing.assert_array_equal(classes[:len(expected)], [c for c, _, _ in expected])
  np.testing.assert_allclose(boxes[:len(expected)], [b for _, b, _ in expected], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(scores[:len(expected)], [s for _, _, s in expected], rtol=1e-5)
  assert not valid[len(expected):].any() and np.all(boxes[len(expected):] == 0)


def test_merged_guesses_hand_computed():
  # One scale, two positions, two classes; top-1 class per scale. Class 1 has the higher spatial
  # max (0.9 at position 0) so it is the only candidate; both positions' boxes (windows 0..58 and
  # 4..62, edges 0 -> the windows themselves) overlap by 54 * 58 = 3132 px^2, centres 4 px apart:
  # match score 3136, merged at a threshold of 3136 (inclusive), not at 3135.
  probs = np.array([[0.1, 0.9], [0.4, 0.6]], F32)
  windows = np.array([[0, 0, 58, 58], [4, 0, 62, 58]], F32)
  scale = localize.ScaleBoxes(probs=probs, valid=np.array([True, True]), windows=windows,
                              edges=np.zeros((2, 1, 4), F32))
  for threshold, box, confidence in ((3136.0, [2, 0, 60, 58], 1.5), (3135.0, [0, 0, 58, 58], 0.9)):
    classes, boxes, scores, valid = map(np.asarray, localize.merged_guesses(
        [scale], top_k=1, threshold=threshold, num_guesses=2))
    np.testing.assert_array_equal(valid, [True, False])
    assert classes[0] == 1
    np.testing.assert_allclose(boxes[0], box)
    np.testing.assert_allclose(scores[0], confidence, rtol=1e-6)


def test_crop_guesses_rank_classes_with_their_boxes():
  probs = jnp.asarray([0.1, 0.6, 0.3])
  window = jnp.asarray([10.0, 20.0, 30.0, 60.0])  # 20 wide, 40 high
  edges = jnp.asarray([[0.0, 0.0, 0.0, 0.0], [0.5, 0.25, -0.25, 0.0], [0.1, 0.1, 0.1, 0.1]])
  classes, boxes, scores, valid = map(np.asarray, localize.crop_guesses(probs, edges, window))
  np.testing.assert_array_equal(classes[:3], [1, 2, 0])
  np.testing.assert_array_equal(valid, [True, True, True, False, False])  # K = 3 < 5 guesses
  np.testing.assert_allclose(boxes[0], [20, 30, 25, 60])
  np.testing.assert_allclose(scores[:3], [0.6, 0.3, 0.1])
  _, shared, _, _ = localize.crop_guesses(probs, edges[1:2], window)  # SCR: one box for all
  np.testing.assert_allclose(np.asarray(shared)[:3], [[20, 30, 25, 60]] * 3)


# ---------------------------------------------------------------------------------------------
# The error of hand-made guesses.

def test_localization_error_hand_computed():
  # Three images, true box (0, 0, 10, 10) of class 2 in each; image 2 is padding.
  guesses = localize.Guesses(
      classes=jnp.asarray([[2, 1], [1, 2], [2, 2]]),
      boxes=jnp.asarray([[[0, 0, 10, 20], [0, 0, 10, 10]],     # IoU 0.5: right at the first guess
                         [[0, 0, 10, 10], [0, 0, 10, 21]],     # class 1 wrong; IoU 100/210 < 0.5
                         [[0, 0, 10, 10], [0, 0, 10, 10]]], jnp.float32),
      scores=jnp.ones((3, 2)), valid=jnp.asarray([[True, True], [True, True], [True, True]]))
  true_boxes = jnp.asarray([[[0, 0, 10, 10], [50, 50, 60, 60]]] * 3, jnp.float32)
  true_labels = jnp.asarray([[2, 1]] * 3)  # a second object, of class 1, elsewhere
  true_valid = jnp.asarray([[True, False]] * 3)  # ... but it is padding
  correct = localize.correct_guesses(guesses, true_boxes, true_labels, true_valid)
  np.testing.assert_array_equal(correct, [[True, False], [False, False], [True, True]])
  counts = localize.row_counts(guesses, true_boxes, true_labels, true_valid, labels=jnp.asarray([2, 2, 2]),
                               valid=jnp.asarray([True, True, False]))
  np.testing.assert_array_equal(counts, [1, 1, 1, 2])  # loc top-1, top-5; class top-1, top-5
  # Were the second object real, image 1's first guess (class 1 at (0, 0, 10, 10)) would still miss.
  correct = localize.correct_guesses(guesses, true_boxes, true_labels, jnp.ones((3, 2), bool))
  np.testing.assert_array_equal(correct[1], [False, False])


def test_centre_crop_window_hand_computed():
  # A 100 x 200 image, short side resized to 64 (64 x 128), centre crop 58: offsets (3, 35), so in
  # original pixels (x 100 / 64 = 1.5625): x 35 .. 93, y 3 .. 61 times 1.5625.
  window = dense.crop_windows(original_hw=jnp.asarray([[100, 200]]), resize_short=64, crop=58,
                              names=("centre",))
  np.testing.assert_allclose(window[0, 0], np.array([35, 3, 93, 61]) * 1.5625)


# ---------------------------------------------------------------------------------------------
# End to end, and bad input.

def save_localization(config, workdir: str, classifier_dir: str) -> None:
  """A localization checkpoint: the saved classifier and a freshly initialised regressor."""
  model = task.model_from_config(config)
  params = {"overfeat": task.restore_classifier(config)[0],
            "regressor": jax.jit(lambda k: task.init_regressor(model, k))(jax.random.key(1))}
  signature = checkpoint_io.make_signature(task.model_signature(config), params)
  with TrainCheckpoints(workdir, keep=1, signature=signature) as checkpoints:
    checkpoints.save(2, TrainState.create(params, optax.identity()), NoData())
  del classifier_dir


@pytest.fixture(scope="module")
def localization_run(tmp_path_factory, digits_data_dir):
  root = tmp_path_factory.mktemp("localization")
  classifier_dir, workdir = str(root / "classifier"), str(root / "localization")
  config = tiny_localization_config(digits_data_dir, classifier_dir)
  save_classifier(config, classifier_dir)
  save_localization(config, workdir, classifier_dir)
  return config, workdir


def test_evaluate_writes_the_table_and_pictures(localization_run, capsys):
  config, workdir = localization_run
  config = config.copy_and_resolve_references()
  config.eval.pictures = 1
  result = evaluation.run(config, workdir)
  out = capsys.readouterr().out
  assert "Localization, SCR regressor" in out and "2 scales (64x64, 72x80), fine stride" in out
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(result))
  assert saved["checkpoint_step"] == 2 and saved["num_examples"] == 4 and saved["regressor"] == "scr"
  assert list(saved["rows"]) == list(evaluator.ROWS)
  for row in saved["rows"].values():
    for key in ("top1_loc_error", "top5_loc_error", "top1_cls_error", "top5_cls_error"):
      assert round(row[key] * 4 / 100, 6).is_integer()  # whole images of the 4
    assert row["top5_loc_error"] <= row["top1_loc_error"] and row["top1_cls_error"] <= row["top1_loc_error"]
  assert os.path.getsize(os.path.join(workdir, "eval", "pictures", "00000.png")) > 0
  # Logged like every evaluation: the summary line and eval/metrics.jsonl with the same numbers.
  multi = saved["rows"][evaluator.ROW_MULTI]
  assert f"top-1 localization error {multi['top1_loc_error']:.2f}%" in out and "done: checkpoint step 2" in out
  with open(os.path.join(workdir, "eval", "metrics.jsonl")) as f:
    logged = json.loads(f.readlines()[-1])
  assert logged["step"] == 2
  assert logged["eval/multi_scale/top1_loc_error"] == multi["top1_loc_error"]
  assert logged["eval/centre_crop/top5_cls_error"] == saved["rows"][evaluator.ROW_CENTRE]["top5_cls_error"]


def test_evaluate_refuses_a_scale_below_the_fine_grid(localization_run):
  config, workdir = localization_run
  config = config.copy_and_resolve_references()
  config.eval.scales = ((60, 60), (72, 80))
  with pytest.raises(InputSizeError, match="60x60.*62x62"):
    evaluation.run(config, workdir)


def test_evaluate_refuses_a_classification_checkpoint(localization_run):
  config, _ = localization_run
  with pytest.raises(CheckpointError, match="different model"):
    evaluation.run(config, config.localization.classifier_workdir)


def test_evaluate_refuses_a_dataset_without_boxes(localization_run):
  config, workdir = localization_run
  config = config.copy_and_resolve_references()
  config.dataset.name = "imagenet2012"
  config.dataset.num_classes = 1000
  with pytest.raises(DataError, match="no.*boxes|has none"):
    evaluation.run(config, workdir)


def test_train_cli_names_a_missing_classifier_in_one_line(tmp_path):
  config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "localization_quickstart.py")
  proc = run_cli("train.py", tmp_path / "w", f"--config.localization.classifier_workdir={tmp_path / 'none'}",
                 config=config)
  assert_one_line_error(proc, "classifier_workdir", "no checkpoint")


def test_periodic_evaluation_is_refused_with_one_line_for_localization():
  """Only classification evaluates during training; asking for it elsewhere is a clear error."""
  config = load_config("localization_quickstart")
  config.train.eval_every = 10
  with pytest.raises(ConfigError, match=r"periodic evaluation is not available for task 'localization'"):
    evaluation.periodic_evaluation(config)
