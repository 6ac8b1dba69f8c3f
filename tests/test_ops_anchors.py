"""RPN anchors (SPEC B1) in torchvision's AnchorGenerator order, checked by hand.

Against torchvision's own output: tests/test_ops_torchvision.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from overfeat_jax.ops import anchors, base_anchors


def test_base_anchors_by_hand():
  # Ratio h / w = 0.5, size 32: w = 32 / sqrt(0.5) = 45.25, h = 22.63; halves 22.63 and 11.31
  # round to 23 and 11. Ratio 2 swaps them. Ratio-major order: (0.5, 32), (0.5, 64), (1, 32), ...
  expected = [[-23, -11, 23, 11], [-45, -23, 45, 23], [-16, -16, 16, 16], [-32, -32, 32, 32],
              [-11, -23, 11, 23], [-23, -45, 23, 45]]
  got = base_anchors((32, 64), (0.5, 1.0, 2.0))
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, expected)


def test_base_anchors_round_halves_to_even_as_torch():
  # Size 5, ratio 1: the half-width 2.5 rounds to 2 (torch.round), not 3.
  np.testing.assert_array_equal(base_anchors((5,), (1.0,)), [[-2, -2, 2, 2]])


def test_anchor_order_is_cells_row_major_then_base_anchors():
  got = anchors((2, 3), 16, (32, 64), (0.5, 1.0, 2.0))
  assert got.shape == (2 * 3 * 6, 4) and got.dtype == np.float32
  base = base_anchors((32, 64), (0.5, 1.0, 2.0))
  cells = got.reshape(2, 3, 6, 4)
  for i in range(2):
    for j in range(3):
      np.testing.assert_array_equal(cells[i, j], base + [16 * j, 16 * i, 16 * j, 16 * i])


def test_stride_pair_and_offset():
  got = anchors((2, 2), (8, 16), (10,), (1.0,), offset=4.0).reshape(2, 2, 4)
  np.testing.assert_array_equal(got[1, 1], [16 + 4 - 5, 8 + 4 - 5, 16 + 4 + 5, 8 + 4 + 5])


def test_paper_anchor_count_and_use_inside_jit():
  """SPEC B1: 9 anchors per position, ~20,000 for a ~60 x 40 map."""
  grid = anchors((38, 63), 16, (128, 256, 512), (0.5, 1.0, 2.0))
  assert grid.shape == (38 * 63 * 9, 4)
  assert 20_000 <= len(grid) <= 22_000
  widths = jax.jit(lambda a: a[:, 2] - a[:, 0])(jnp.asarray(grid))
  assert float(widths.max()) == 2 * 362  # size 512, ratio 0.5: w / 2 = 362.04 -> 362
