"""Pixel-format helpers shared by both cleaning pipelines: input normalisation and final resizing."""

import cv2
import numpy as np

from usfmae.io.intensity import NoFiniteValues, to_rgb


def to_rgb_uint8(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Return `image` as a contiguous HxWx3 uint8 RGB array.

    Accepts gray HxW or HxWx1, RGB HxWx3 and RGBA HxWx4 (alpha dropped). Pixel types other than uint8
    follow the readers' rule (`usfmae.io.intensity.to_rgb`, min-max): a frame cleaned here has the
    intensities it would have coming out of a reader, and fine-tuning images use the same rule.
    `source` names the input in error messages.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{source}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"{source}: empty image with shape {image.shape}")
    if not (image.ndim == 2 or image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        raise ValueError(f"{source}: expected HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if not (image.dtype == np.bool_ or np.issubdtype(image.dtype, np.number)):
        raise TypeError(f"{source}: unsupported pixel type {image.dtype}")
    try:
        return to_rgb(image)
    except NoFiniteValues as error:
        raise ValueError(f"{source}: image {error}") from None


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size with area interpolation (the shard writer's last step; aspect not kept)."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
