"""Overlay strokes: thin structures much brighter than their surroundings.

Scanners draw text, calipers, dotted lines and boxes as 1-4 px strokes in saturated colours.
A white top-hat with a kernel wider than those strokes keeps exactly such thin bright structures;
max(R, G, B) makes white, yellow, green and cyan overlays equally bright. Shared by the fast
text, grayscale, line and sector steps, computed once per image.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from usfmae.cleaning.config import StrokeConfig


def brightness(image: np.ndarray) -> np.ndarray:
    """max(R, G, B) per pixel. image: HxWx3 uint8 -> HxW uint8 (several times faster than max(axis=2))."""
    return np.maximum(np.maximum(image[:, :, 0], image[:, :, 1]), image[:, :, 2])


@dataclass(frozen=True)
class Strokes:
    """The stroke map of one image, shared by every step that looks for overlays."""

    value: np.ndarray  # HxW uint8, max(R, G, B)
    tophat: np.ndarray  # HxW uint8, value above its local background (white top-hat)
    mask: np.ndarray  # HxW bool, thin bright overlay strokes
    sharp: np.ndarray  # HxW bool, stroke pixels with a drawn (step) edge


def find_strokes(image: np.ndarray, cfg: StrokeConfig) -> Strokes:
    """Thin bright overlay strokes of image HxWx3 uint8, with the brightness and top-hat they come from.

    A stroke pixel is sharp when it drops by at least cfg.sharp_step of its top-hat contrast to
    one of its 4 neighbours: drawn strokes step down to the background within a pixel, tissue is
    blurred by the point-spread function (a speckle grain's peak falls by less than half per pixel).
    """
    value = brightness(image)
    kernel = np.ones((cfg.tophat_kernel, cfg.tophat_kernel), np.uint8)
    tophat = cv2.morphologyEx(value, cv2.MORPH_TOPHAT, kernel)
    mask = (value >= cfg.min_value) & (tophat >= cfg.min_contrast)
    drop = value.astype(np.int16) - cv2.erode(value, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    return Strokes(value, tophat, mask, mask & (drop >= cfg.sharp_step * tophat))
