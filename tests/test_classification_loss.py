"""The classification loss and accuracy (SPEC A3), with the uniform target of off-object crops."""

from __future__ import annotations

import jax
import numpy as np

from overfeat_jax.data.transforms import OFF_OBJECT_LABEL
from overfeat_jax.tasks.classification import softmax_cross_entropy, top1_accuracy


def _naive_loss(logits: np.ndarray, labels: np.ndarray) -> float:
  """Independent reference, row by row in float64."""
  total = 0.0
  for row, label in zip(logits.astype(np.float64), labels):
    log_probs = row - np.log(np.exp(row - row.max()).sum()) - row.max()
    total += -log_probs[label] if label >= 0 else -log_probs.mean()
  return total / len(labels)


def test_labelled_rows_give_the_cross_entropy_and_off_object_rows_the_uniform_target():
  logits = np.asarray(jax.random.normal(jax.random.key(0), (6, 10)) * 3, np.float32)
  labels = np.array([3, OFF_OBJECT_LABEL, 0, 9, OFF_OBJECT_LABEL, 3], np.int32)
  np.testing.assert_allclose(float(softmax_cross_entropy(logits, labels)), _naive_loss(logits, labels),
                             rtol=1e-5)
  # The uniform target's loss is smallest (log K) exactly when the logits are all equal.
  flat = np.zeros((1, 10), np.float32)
  np.testing.assert_allclose(float(softmax_cross_entropy(flat, np.array([OFF_OBJECT_LABEL]))),
                             np.log(10), rtol=1e-6)
  assert float(softmax_cross_entropy(logits[:1], np.array([OFF_OBJECT_LABEL]))) > np.log(10)


def test_accuracy_counts_only_labelled_rows():
  logits = np.eye(4, dtype=np.float32)  # row i predicts class i
  labels = np.array([0, 2, OFF_OBJECT_LABEL, OFF_OBJECT_LABEL], np.int32)
  assert float(top1_accuracy(logits, labels)) == 0.5
  assert float(top1_accuracy(logits, np.full(4, OFF_OBJECT_LABEL, np.int32))) == 0.0
