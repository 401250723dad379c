"""Scan-sector detection: the fan (phased/curved probes) or rectangle (linear probes) holding the scan.

Everything a scanner draws outside the sector (patient and institution text, dates, colour bars,
logos, toolbars) is annotation; inside it is anatomy. The sector is the largest textured region:
speckle has local variance, flat panels and black background do not, and text or markers touching
the sector are thinner than an opening kernel a few percent of the image wide. Text blocks are
told apart from speckle by density: strokes cover a small part of their neighbourhood.
"""

import cv2
import numpy as np

from usfmae.cleaning.config import SectorConfig, StrokeConfig
from usfmae.cleaning.strokes import brightness


# Grey levels added to the background's median and noise: scanners draw the black around the
# scan a few levels above the black of the rest of the screen (Philips: 5 against 2).
BACKGROUND_MARGIN = 6
NOISE_REACH = 12  # grey levels around the background's value that count as its noise


def background_level(value: np.ndarray, region: np.ndarray, floor: int, ceiling: int) -> int:
    """Brightest value that is still background outside `region`: its most common value plus its noise and a margin.

    value: HxW uint8; region: HxW bool. The background is the most common value outside the scan
    (black, or 5-20 with noise in video and grabbed frames); its noise is the median absolute
    deviation of the pixels within NOISE_REACH levels of it, so neither text nor dim tissue outside
    the region moves the level.
    """
    outside = value[~region]
    if outside.size == 0:
        return floor
    mode = int(np.bincount(outside, minlength=256).argmax())
    dark = outside[np.abs(outside.astype(np.int16) - mode) <= NOISE_REACH].astype(np.float32)
    spread = float(np.median(np.abs(dark - mode)))
    return int(min(ceiling, max(floor, mode + 3 * spread + BACKGROUND_MARGIN)))


def odd_kernel_side(fraction: float, shape: tuple[int, int]) -> int:
    """An odd kernel side of `fraction` of the shorter image side, at least 3."""
    side = max(3, int(round(fraction * min(shape))))
    return side + 1 - side % 2


def flat_regions(image: np.ndarray, max_gradient: int, block: int) -> np.ndarray:
    """Pixels in block x block squares whose 3x3 gradients are all at most max_gradient (flat colour, never
    speckle). image: HxWx3 uint8 -> HxW uint8 0/1."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    gradient = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    flat = (gradient <= max_gradient).astype(np.uint8)
    return flat if block <= 1 else cv2.morphologyEx(flat, cv2.MORPH_OPEN, np.ones((block, block), np.uint8))


def textured_foreground(image: np.ndarray, cfg: SectorConfig, stroke_cfg: StrokeConfig) -> np.ndarray:
    """Pixels that are neither background, nor inside flat colour areas, nor near strokes drawn on black.

    image: HxWx3 -> HxW bool. A flat area is a 5x5 block without gradient (panels, bands); single
    flat pixels are common in dim speckle and stay foreground. Bright thin strokes whose
    surroundings are black (text and markers beside the scan) are removed with their rim, so text
    blocks stay sparse even in small blurry images; bright speckle grains sit on speckle and stay.
    """
    value = brightness(image)
    flat_area = flat_regions(image, cfg.flat_gradient_max, 5) > 0
    kernel = np.ones((stroke_cfg.tophat_kernel,) * 2, np.uint8)
    surround = cv2.morphologyEx(value, cv2.MORPH_OPEN, kernel)  # local background under thin strokes
    strokes = (value >= stroke_cfg.min_value) & (value - surround >= stroke_cfg.min_contrast)
    on_black = (strokes & (surround <= cfg.dark_surround_max)).astype(np.uint8)
    near_strokes = cv2.dilate(on_black, np.ones((3, 3), np.uint8)) > 0
    return (value > cfg.background_max) & ~flat_area & ~near_strokes


def main_parts(mask: np.ndarray, min_part_fraction: float) -> np.ndarray:
    """Components of a uint8 0/255 mask at least min_part_fraction the size of the largest one.

    A dim scan often falls apart into a few dense pieces (a heart's walls across dark chambers);
    keeping every large piece keeps the whole scan.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return np.zeros_like(mask)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(count, bool)
    keep[1:] = areas >= min_part_fraction * areas.max()
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def grown_into_texture(region: np.ndarray, foreground: np.ndarray, reach: int, max_added: float) -> np.ndarray:
    """region (uint8 0/255) plus the pieces of textured foreground (HxW bool) it touches, up to `reach` px out,
    each adding at most `max_added` times the region's area.

    Dim far-field tissue in the corners of a fan cropped by the image edge is too sparse to be
    dense, but it is texture joined to the scan; text and markers on black and flat panels are not
    foreground at all, so they stay out.
    """
    near = cv2.distanceTransform((region == 0).astype(np.uint8), cv2.DIST_L2, 3) <= reach
    count, labels, stats, _ = cv2.connectedComponentsWithStats((foreground & near).astype(np.uint8), 8, cv2.CV_32S)
    outside = np.bincount(labels[region == 0], minlength=count)  # what each piece would add
    joined = np.zeros(count, bool)
    joined[np.unique(labels[region > 0])] = True
    # A piece adding much is background noise of a grabbed frame next to the scan, not a corner of it.
    joined &= outside <= max_added * np.count_nonzero(region)
    joined[0] = False
    return np.where(joined[labels], 255, region).astype(np.uint8)


def mirrored(mask: np.ndarray, top_fraction: float = 0.05) -> np.ndarray:
    """mask united with its mirror image about the vertical line through the centre of its top rows.

    Fans (about their apex) and rectangles (about their centre) are left-right symmetric, so a
    corner lost to dark far-field tissue is restored from the opposite corner.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    top = mask[rows[0] : rows[0] + max(1, int(top_fraction * (rows[-1] - rows[0] + 1)))]
    axis = np.flatnonzero(top.any(axis=0)).mean()  # x of the apex (or of the top edge's centre)
    width = mask.shape[1]
    source = np.round(2 * axis - np.arange(width)).astype(int)  # column each output column mirrors
    inside = (source >= 0) & (source < width)
    flipped = np.zeros_like(mask)
    flipped[:, inside] = mask[:, source[inside]]
    return mask | flipped


def fill_region(mask: np.ndarray, convex_hull: bool, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """Fill the region's holes (anechoic areas), optionally up to the convex hull of all its parts.

    mask was found on an image `scale` times the input size; the result has the input `shape`.
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [np.round(c / scale).astype(np.int32) for c in contours]
    filled = np.zeros(shape, np.uint8)
    if convex_hull:
        cv2.fillConvexPoly(filled, cv2.convexHull(np.concatenate(contours)), 255)
    else:
        cv2.drawContours(filled, contours, -1, 255, -1)
    return filled


def detect_sector(image: np.ndarray, cfg: SectorConfig, stroke_cfg: StrokeConfig | None = None) -> np.ndarray | None:
    """Return the scan sector as an HxW uint8 0/255 mask, or None when no trustworthy sector exists.

    image: HxWx3 uint8 RGB. None means "treat the whole image as the scan" (a full-frame crop, a
    blank image, or a region too small to be a scan). Works on a copy at most `cfg.work_side`
    pixels on its shorter side: the sector is large, so detail does not matter and time does.
    """
    scale = min(1.0, cfg.work_side / min(image.shape[:2]))
    work = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    shape = work.shape[:2]
    foreground = textured_foreground(work, cfg, stroke_cfg or StrokeConfig()).astype(np.float32)
    # Speckle fills most of its neighbourhood; text and markers on black fill little of theirs.
    window = odd_kernel_side(cfg.window_fraction, shape)
    solid = np.where(cv2.blur(foreground, (window, window)) >= cfg.min_density, 255, 0).astype(np.uint8)
    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (odd_kernel_side(cfg.open_fraction, shape),) * 2)
    solid = cv2.morphologyEx(solid, cv2.MORPH_OPEN, opening)
    region = main_parts(solid, cfg.min_part_fraction)
    if np.count_nonzero(region) < max(1, cfg.min_fraction * region.size):
        return None
    # The density threshold and the opening pull edges in and round corners off: grow the region
    # back by half a window so scan edges are never cut (black background inside costs nothing).
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (window, window)))
    if cfg.grow_windows:
        # Only texture above the background's own level: video and grabbed frames have noisy black.
        value = brightness(work)
        lit = value > background_level(value, region > 0, cfg.background_max, cfg.max_grow_background)
        region = grown_into_texture(region, (foreground > 0) & lit, int(round(cfg.grow_windows * window)),
                                    cfg.max_grow_fraction)
    if cfg.mirror:
        region = mirrored(region)
    return fill_region(region, cfg.convex_hull, scale, image.shape[:2])
