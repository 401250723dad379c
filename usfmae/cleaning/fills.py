"""Fast fill step: flat-coloured shapes inside the scan (logo disks, label boxes, grey bars) and what they hold.

Speckle is never flat: every small block of tissue spans several grey levels. Scanners fill logo
disks, label boxes and grey-map bars with one colour, so a region of `block` x `block` squares
without gradient (`flat_gradient_max` allows for JPEG noise) is drawn. Dark flat regions are also what lossy
video makes of anechoic tissue (a cyst, a heart chamber), so a flat region darker than
`min_value` counts only when it is a rectangle (a label box), which anatomy never is. A drawn
fill ends in a step (`min_edge_step` between it and the pixels just outside), or sits on
speckle (`min_texture`, the spread of the pixels around it); a patch that compression flattened
fades into the equally smooth tissue around it. A found
fill is masked with everything inside its outline (the letter in a logo, the text on a label)
and `grow_px` around it (the ring of a logo, a box's anti-aliased edge).
"""

import cv2
import numpy as np

from usfmae.cleaning.config import FillsConfig, size_scale
from usfmae.cleaning.sector import flat_regions

RING_INNER, RING_OUTER = 2, 4  # pixels beyond a fill's flat area where its surroundings are measured


def fill_mask(image: np.ndarray, value: np.ndarray, region: np.ndarray, background_max: int, cfg: FillsConfig
              ) -> np.ndarray:
    """Flat-coloured shapes inside `region` and their contents -> HxW uint8 0/255.

    image: HxWx3 uint8; value: HxW uint8 max(R, G, B); region: HxW bool; pixels at most
    background_max bright are background (black), never a fill.
    """
    scale = size_scale(value.shape) ** 2
    # Whole shapes, also where the sector's edge cuts through them (a logo on the scan's corner).
    flat = flat_regions(image, cfg.flat_gradient_max, cfg.block) & (value > background_max) & (value < cfg.max_value)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(flat, 8, cv2.CV_32S)
    mask = np.zeros(value.shape, np.uint8)
    if count < 2:
        return mask
    area = stats[:, cv2.CC_STAT_AREA]
    level = np.bincount(labels[flat > 0], weights=value[flat > 0], minlength=count) / np.maximum(area, 1)
    touches = np.zeros(count, bool)
    touches[np.unique(labels[region & (flat > 0)])] = True
    # Sizes scale with the image, but not below a few pixels: compression flattens small patches.
    side = np.minimum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    sized = touches & (area >= max(cfg.min_area * scale, cfg.min_area / 2)) & (side >= max(cfg.min_side * np.sqrt(scale), 6))
    sized &= area <= cfg.max_region_share * np.count_nonzero(region)
    sized[0] = False
    height, width = value.shape
    for label in np.flatnonzero(sized):
        x, y, w, h = (int(v) for v in stats[label, :4])
        pad = RING_OUTER + 1
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(width, x + w + pad), min(height, y + h + pad)
        piece = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
        outlines, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(piece)
        cv2.drawContours(filled, outlines, -1, 1, -1)
        # Everything inside the outline (the letter of a logo, the text on a label) goes with the fill.
        rectangle = np.count_nonzero(filled) >= cfg.min_rectangularity * w * h
        # A drawn fill ends in a step; a patch that compression flattened fades into the tissue around it.
        # The flat area stops a pixel or two inside the drawn edge: compare with a ring beyond it.
        ring = cv2.dilate(filled, np.ones((2 * RING_OUTER + 1,) * 2, np.uint8)) > cv2.dilate(
            filled, np.ones((2 * RING_INNER + 1,) * 2, np.uint8))
        around = value[y0:y1, x0:x1][ring].astype(np.float32)
        step = np.abs(around - level[label]).mean() if around.size else 0.0
        textured = around.std() if around.size else 0.0  # speckle around a drawn shape of tissue-like grey
        if (level[label] >= cfg.min_value or rectangle) and (step >= cfg.min_edge_step or textured >= cfg.min_texture):
            mask[y0:y1, x0:x1] |= filled * 255
    if cfg.grow_px:
        mask = cv2.dilate(mask, np.ones((2 * cfg.grow_px + 1,) * 2, np.uint8))
    mask[~region] = 0
    return mask
