"""Image files a user gives a command (`overfeat_jax.features`, `overfeat_jax.predict`) -> RGB uint8.

The one reader of such files: PNG, JPEG and anything else PIL opens, in these modes (PIL's names):
  1, L, LA, La              grey (and alpha): grey repeated to R, G and B;
  P, PA                     palette: expanded to its colours;
  RGB, RGBA, RGBa, RGBX     colour: as is;
  CMYK, YCbCr               other colour spaces (JPEG): PIL's conversion to RGB;
  I;16, I;16L, I;16B, I;16N 16-bit grey (a 16-bit grey PNG): scaled to 0..255 as round(v * 255 / 65535),
                            then repeated (PIL's own RGB conversion would clip every value above 255);
alpha is dropped, not composited (as the input pipeline does, `transforms.decode_example`). An EXIF
orientation tag (phone photos) is applied first, so the image is upright as a viewer shows it. Every
other mode is refused (32-bit integer "I" and float "F" images, whose range is unknown, LAB, HSV, ...),
as are files PIL cannot read; the error names the file.
"""

from __future__ import annotations

import io
import os

import numpy as np
from etils import epath
from PIL import Image, ImageOps

from overfeat_jax.errors import DataError, reason

# Modes PIL converts to RGB exactly as wanted (module docstring).
_PIL_TO_RGB = frozenset(("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"))
_SIXTEEN_BIT = frozenset(("I;16", "I;16L", "I;16B", "I;16N"))
MAX_16 = 65535


def scale_16_bit(values: np.ndarray) -> np.ndarray:
  """uint16 (or wider integers in 0..65535) -> uint8: round(v * 255 / 65535), i.e. (v + 128) // 257."""
  return ((np.asarray(values, np.uint32) + 128) // 257).astype(np.uint8)


def image_to_rgb(image: Image.Image, name: str) -> np.ndarray:
  """An opened PIL image -> [H, W, 3] uint8 (module docstring).

  Raises:
    DataError: a mode that is not supported (names `name` and the mode).
  """
  image = ImageOps.exif_transpose(image)
  if image.mode in _SIXTEEN_BIT:
    grey = scale_16_bit(np.asarray(image))  # [H, W]
    return np.repeat(grey[..., None], 3, axis=-1)
  if image.mode not in _PIL_TO_RGB:
    raise DataError(f"image {name} has pixel mode {image.mode!r}, which is not supported (supported: "
                    f"8-bit grey, palette, RGB(A), CMYK, YCbCr and 16-bit grey)")
  return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
  """An image file -> [H, W, 3] uint8 (module docstring).

  Raises:
    DataError: the file is missing, unreadable, not an image PIL can decode (or truncated), or of a
      mode that is not supported; the message names the file and why.
  """
  try:
    # Through epath, so that an image on cloud storage reads like a local one.
    with Image.open(io.BytesIO(epath.Path(path).read_bytes())) as image:
      return image_to_rgb(image, str(path))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # PIL's UnidentifiedImageError and truncated data are OSErrors; some decoders raise SyntaxError.
    if isinstance(e, DataError):
      raise
    raise DataError(f"cannot read image {path}: {reason(e)}") from e
