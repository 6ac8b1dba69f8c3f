"""Random VGG-16 `features` weights in torchvision's state_dict layout, from a seed, with numpy only.

Shared by tests/fixtures/make_vgg16_fixture.py (which loads them into torchvision's vgg16 to compute
the reference output) and tests/test_pretrained.py (which writes them as a safetensors file without
PyTorch), so the 58 MB of weights never need to be committed: the fixture keeps their SHA-256.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED = 20261201
# torchvision's vgg16().features: Sequential index of each 3x3 Conv2d -> (out, in) channels, written
# out by hand from configuration "D" (a conv and its ReLU take two indices, a max pool one).
CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
         14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
         26: (512, 512), 28: (512, 512)}


def state_dict(seed: int = SEED) -> dict[str, np.ndarray]:
  """{'features.0.weight': float32 [64, 3, 3, 3], 'features.0.bias': [64], ...}: kernels
  N(0, 2 / fan_in) (activations keep their scale through 13 layers), biases U(-0.1, 0.1)."""
  rng = np.random.default_rng(seed)
  tensors = {}
  for index, (c_out, c_in) in CONVS.items():
    scale = np.float32(np.sqrt(2.0 / (9 * c_in)))
    tensors[f"features.{index}.weight"] = rng.standard_normal((c_out, c_in, 3, 3), np.float32) * scale
    tensors[f"features.{index}.bias"] = rng.uniform(-0.1, 0.1, c_out).astype(np.float32)
  return tensors


def digest(tensors: dict[str, np.ndarray]) -> str:
  """SHA-256 over the names, shapes, dtypes and bytes of the tensors, in name order."""
  sha = hashlib.sha256()
  for name in sorted(tensors):
    value = np.ascontiguousarray(tensors[name])
    sha.update(f"{name}:{value.shape}:{value.dtype};".encode())
    sha.update(value.tobytes())
  return sha.hexdigest()
