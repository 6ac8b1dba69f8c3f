"""Classification metrics (SPEC A1): top-k correctness, jit-able (the evaluation step counts with it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
