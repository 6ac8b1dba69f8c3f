"""Classification metrics (SPEC A1): top-k correctness and error rates over padded batches.

Per-batch counts are jit-able (padded examples masked out with `valid`); the host adds the counts up
with `add_counts` and turns them into percentages with `error_rates` at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp

from overfeat_jax.errors import DataError


def topk_correct(scores: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Whether each label is among the k highest scores.

  Args:
    scores: [B, K] float (logits or probabilities).
    labels: [B] int in [0, K).
    k: 1 <= k <= K (top-1, top-5, ...).
  Returns:
    [B] bool. Ties are broken towards the lower class index (jax.lax.top_k's order).
  """
  num_classes = scores.shape[-1]
  if not 1 <= k <= num_classes:
    raise ValueError(f"topk_correct: k={k} must be in [1, {num_classes}] for {num_classes} classes")
  _, top = jax.lax.top_k(scores, k)  # [B, k] class indices
  return jnp.any(top == labels[:, None].astype(top.dtype), axis=-1)


def count_correct(scores: jax.Array, labels: jax.Array, valid: jax.Array,
                  ks: tuple[int, ...] = (1, 5)) -> dict[str, jax.Array]:
  """Correct predictions among the valid (non-padding) examples of a batch.

  Args:
    scores: [B, K]; labels: [B] int; valid: [B] bool (False for padding of the last batch).
    ks: which top-k to count; a k larger than K counts as K.
  Returns:
    {'top1': int32 [], 'top5': int32 [], ...}.
  """
  num_classes = scores.shape[-1]
  return {f"top{k}": jnp.sum(topk_correct(scores, labels, min(k, num_classes)) & valid,
                             dtype=jnp.int32)
          for k in ks}


def add_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
  """Sums per-batch count dicts (all with the same keys) into Python ints."""
  total: dict[str, int] = {}
  for batch_counts in counts:
    for key, value in batch_counts.items():
      total[key] = total.get(key, 0) + int(value)
  return total


def error_rates(correct_counts: Mapping[str, int], total: int) -> dict[str, float]:
  """Error rates in percent: {'top1': n_correct, ...} over `total` examples -> {'top1_error': %}.

  Raises DataError if there were no examples (total == 0).
  """
  if total <= 0:
    raise DataError(
        "no valid examples were evaluated (total = 0): check the split and eval.num_examples")
  return {f"{key}_error": 100.0 * (1.0 - int(n) / total) for key, n in correct_counts.items()}
