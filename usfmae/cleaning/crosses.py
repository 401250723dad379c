"""Fast cross step: measurement crosses and caliper ends ('+' and 'x'), from crossing line openings.

A cross is two short straight strokes crossing at their middles. Opening the bright-mark pixels
with a line kernel of 2 * min_arm + 1 pixels keeps only pixels on straight runs that long in that
direction; where the horizontal and vertical openings (or the two diagonal ones) meet is a
crossing. It is a cross when the strokes through it form one small thin component whose four
arms reach min_arm to max_arm pixels out from the crossing, about equally, with dark, empty
pixels between the arms: speckle grains are short along the beam, bright tissue blobs are bright
between the arms too, and tissue interfaces that cross run on far beyond a cross's arms.
Sizes are for a 480-pixel-high image and scale with the shorter image side.
"""

import cv2
import numpy as np

from usfmae.cleaning.config import CrossesConfig, size_scale
from usfmae.cleaning.strokes import Strokes


def line_kernels(length: int, diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two perpendicular 1-pixel line kernels `length` long: horizontal/vertical or the two diagonals."""
    if diagonal:
        eye = np.eye(length, dtype=np.uint8)
        return eye, np.ascontiguousarray(eye[::-1])
    return np.ones((1, length), np.uint8), np.ones((length, 1), np.uint8)


def off_arms(w: int, h: int, cx: float, cy: float, diagonal: bool, reach: float) -> np.ndarray:
    """Pixels of a w x h box farther than `reach` from both strokes of a cross centred at (cx, cy) -> h x w bool."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    if diagonal:
        return (np.abs(dx - dy) > reach * np.sqrt(2)) & (np.abs(dx + dy) > reach * np.sqrt(2))
    return (np.abs(dx) > reach) & (np.abs(dy) > reach)


def crosses_of(marks: np.ndarray, value: np.ndarray, diagonal: bool, cfg: CrossesConfig, scale: float) -> np.ndarray:
    """Strokes of '+' (diagonal False) or 'x' crosses among `marks` (HxW uint8 0/1) -> HxW bool.

    value: HxW uint8 brightness; between the arms it must be dark: a cross is drawn over the
    image, a bright tissue blob is bright all round.
    """
    min_arm, max_arm = max(2, int(round(cfg.min_arm * scale))), max(3, int(round(cfg.max_arm * scale)))
    first, second = line_kernels(2 * min_arm + 1, diagonal)
    along_first = cv2.morphologyEx(marks, cv2.MORPH_OPEN, first)
    along_second = cv2.morphologyEx(marks, cv2.MORPH_OPEN, second)
    centres = along_first & along_second
    if not centres.any():
        return np.zeros(marks.shape, bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(along_first | along_second, 8, cv2.CV_32S)
    ys, xs = np.nonzero(centres)
    owner = labels[ys, xs]  # the stroke component each crossing pixel lies in
    # Shape first, for every component at once: a small thin cross with arms of about equal reach.
    n = np.bincount(owner, minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(owner, weights=xs, minlength=count) / n - stats[:, cv2.CC_STAT_LEFT]
        cy = np.bincount(owner, weights=ys, minlength=count) / n - stats[:, cv2.CC_STAT_TOP]
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_AREA]
    arms = np.stack([cx, w - 1 - cx, cy, h - 1 - cy])  # left, right, up, down: [4, count]
    shaped = (n > 0) & (arms.min(axis=0) >= min_arm - 1) & (arms.max(axis=0) <= max_arm + 1)
    shaped &= (arms.max(axis=0) <= 2 * np.maximum(arms.min(axis=0), 1)) & (area <= cfg.max_thickness * (w + h))
    shaped[0] = False
    keep = np.zeros(count, bool)
    for label in np.flatnonzero(shaped):  # few: the pixels between the arms decide
        x, y = stats[label, cv2.CC_STAT_LEFT], stats[label, cv2.CC_STAT_TOP]
        strokes = labels[y : y + h[label], x : x + w[label]] == label
        between = off_arms(w[label], h[label], cx[label], cy[label], diagonal, cfg.max_thickness / 2 + 1)
        if not between.any():
            continue
        patch = value[y : y + h[label], x : x + w[label]].astype(np.int32)
        dark_between = np.median(patch[between]) <= np.median(patch[strokes]) - cfg.min_contrast
        empty = np.count_nonzero(marks[y : y + h[label], x : x + w[label]][between]) <= 0.1 * np.count_nonzero(between)
        keep[label] = dark_between and empty
    return keep[labels]


def cross_mask(strokes: Strokes, region: np.ndarray, cfg: CrossesConfig) -> np.ndarray:
    """'+' and 'x' crosses inside `region` (HxW bool) -> HxW uint8 0/255.

    Only stroke pixels at least `min_peak` bright and `min_contrast` above their surroundings count.
    """
    value = strokes.value
    scale = size_scale(value.shape)
    marks = (strokes.mask & region & (value >= cfg.min_peak) & (strokes.tophat >= cfg.min_contrast)).astype(np.uint8)
    found = crosses_of(marks, value, False, cfg, scale) | crosses_of(marks, value, True, cfg, scale)
    return np.where(found, 255, 0).astype(np.uint8)
