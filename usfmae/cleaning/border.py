"""Fast border step: marks on the black margin between the scan and the edge of the detected sector.

The detected sector is generous (the convex hull of the scan, grown so no scan edge is cut,
mirrored; with a black near field it spans a wide black wedge), so it also holds background
where scanners put logos, orientation marks, depth numbers and ticks, dotted sector edges,
measurement bars and the outer half of labels across the scan's edge. The scan itself is dense:
speckle leaves few background-dark pixels in any small window, marks on black leave many, and
flat fills (a logo's disk) are not texture at all. The scan proper is the convex hull of the
dense parts (fans and rectangles are convex, so anechoic chambers and dark tissue inside stay in
it); in the sector but off that hull, every small piece brighter than the background with
pixels at least `min_mark_value` bright, a share of them drawn (sharp-edged strokes,
`strokes.Strokes`), is a mark: not the blurred ring-down at the apex of a fan whose near field
is black. A piece touching the hull may be speckle at the scan's very edge (the hull ends half a
density window inside it): it is a mark only if it reaches farther out than that (a label drawn
against the edge does).
"""

import cv2
import numpy as np

from usfmae.cleaning.config import BorderConfig, SectorConfig, StrokeConfig
from usfmae.cleaning.sector import background_level, fill_region, main_parts, odd_kernel_side, textured_foreground
from usfmae.cleaning.strokes import Strokes

EDGE_SLACK_PX = 3  # beyond half a density window, how far the scan's own edge speckle can reach out


def scan_hull(image: np.ndarray, lit: np.ndarray, region: np.ndarray, sector_cfg: SectorConfig,
              stroke_cfg: StrokeConfig, cfg: BorderConfig) -> np.ndarray | None:
    """Convex hull of the dense scan inside `region` -> HxW uint8 0/255, or None if nothing is dense.

    lit, region: HxW bool. Density is a smooth measure: it is computed on a copy at most
    `cfg.work_side` pixels on its shorter side; an opening as wide as the density window cuts the
    thin bridges a logo or a label touching the scan would make.
    """
    shape = lit.shape
    scale = min(1.0, cfg.work_side / min(shape))
    if scale < 1.0:
        shrink = lambda a: cv2.resize(a, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)  # noqa: E731
        image, lit, region = shrink(image), shrink(lit.astype(np.uint8)) > 0, shrink(region.astype(np.uint8)) > 0
    texture = textured_foreground(image, sector_cfg, stroke_cfg) & lit
    window = odd_kernel_side(cfg.window_fraction, texture.shape)
    dense = ((cv2.blur(texture.astype(np.float32), (window, window)) >= cfg.min_density) & region).astype(np.uint8)
    dense = cv2.morphologyEx(dense * 255, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (window,) * 2))
    scan = main_parts(dense, cfg.min_part_fraction)
    if not scan.any():
        return None
    return fill_region(scan, True, scale, shape)


def island_mask(image: np.ndarray, strokes: Strokes, region: np.ndarray, sector_cfg: SectorConfig,
                stroke_cfg: StrokeConfig, cfg: BorderConfig) -> np.ndarray:
    """Marks on the black margin inside the sector -> HxW uint8 0/255.

    image: HxWx3 uint8; strokes: its stroke map; region: HxW bool. The scan's density is
    that of the sector detector's textured foreground (`sector.textured_foreground`: no flat
    fills, no strokes on black), above the background level measured outside the sector.
    """
    value, sharp = strokes.value, strokes.sharp
    mask = np.zeros(value.shape, np.uint8)
    if region.all():
        return mask  # no sector was found: there is no margin to look at
    lit = value > background_level(value, region, sector_cfg.background_max, cfg.max_background)
    hull = scan_hull(image, lit, region, sector_cfg, stroke_cfg, cfg)
    if hull is None:
        return mask
    if cfg.scan_margin_px:
        hull = cv2.dilate(hull, np.ones((2 * cfg.scan_margin_px + 1,) * 2, np.uint8))
    count, pieces, stats, _ = cv2.connectedComponentsWithStats((region & (hull == 0) & lit).astype(np.uint8), 8,
                                                               cv2.CV_32S)
    # A window half over the scan's edge is half full, so the hull ends about half a window inside
    # the scan: the speckle between the two joins the hull and reaches no farther than that.
    # Marks stand apart from the hull across black, or, when they touch it (a label drawn against
    # the scan's edge), reach out well beyond the edge.
    touching = np.bincount(pieces[cv2.dilate(hull, np.ones((3, 3), np.uint8)) > 0], minlength=count) > 0
    edge = cfg.window_fraction * min(value.shape) / 2 + EDGE_SLACK_PX
    beyond_edge = cv2.distanceTransform((hull == 0).astype(np.uint8), cv2.DIST_L2, 3) > edge
    reaches_out = np.bincount(pieces[beyond_edge], minlength=count) > 0
    bright = np.bincount(pieces[value >= cfg.min_mark_value], minlength=count)
    drawn = np.bincount(pieces[sharp & (value >= cfg.min_mark_value)], minlength=count)
    # Marks are bright, small and drawn; a large dim piece is far-field speckle the density test
    # missed, a blurred bright one the probe's ring-down at the apex of a fan with a black near field.
    marks = (bright > 0) & (stats[:, cv2.CC_STAT_AREA] <= cfg.max_piece_fraction * value.size)
    marks &= (drawn >= cfg.min_drawn_share * bright) & (~touching | reaches_out)
    marks[0] = False
    mask[marks[pieces]] = 255
    if cfg.grow_px:
        mask = cv2.dilate(mask, np.ones((2 * cfg.grow_px + 1,) * 2, np.uint8))
    mask[~region] = 0
    return mask
