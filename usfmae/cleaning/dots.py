"""Fast dotted-line step: chains of small identical marks, evenly spaced along a straight line.

Calipers are joined by dotted or dashed lines, cursor lines cross the image from the probe face,
sector edges and depth scales are dotted. Each dot is a few bright pixels, like a bright speckle
grain, so a dot alone proves nothing; a chain does. A mark is a dot when it is a small component
of overlay strokes; it is in a dotted line when

    it is the middle of a triple: two partners on opposite sides, at the same distance (within
    `spacing_tolerance`), on one straight line (within `angle_tolerance_deg`), all three alike in
    size and brightness (overlay dots are copies of each other; speckle grains differ), and
    no other candidate lies within `isolation` times the spacing of the middle dot (dots of a
    line are alone on it; bright speckle grains come in crowds), and
    a neighbour along that line is the middle of its own triple in the same direction,

i.e. at least four dots in a row. Random bright grains rarely line up four times evenly.
Neighbours are found through a grid of cells one maximum spacing wide (no all-pairs matrix).
"""

import cv2
import numpy as np

from usfmae.cleaning.config import DotsConfig, size_scale
from usfmae.cleaning.strokes import Strokes

ANGLE_BINS = 36  # direction bins over 180 degrees, for matching triples along a chain


def dot_candidates(strokes: Strokes, region: np.ndarray, cfg: DotsConfig, scale: float):
    """Small, bright, contrasted, drawn stroke components inside `region` (HxW bool).

    scale: `config.size_scale` of the image. Returns (labels HxW int32, ids [n] of candidate
    labels, centroids [n, 2], areas [n], peaks [n]).
    """
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        (strokes.mask & region).astype(np.uint8), 8, cv2.CV_32S)
    inside = labels > 0
    peaks = np.zeros(count, np.float32)
    np.maximum.at(peaks, labels[inside], strokes.value[inside])  # brightest pixel per component
    contrast = np.zeros(count, np.float32)
    np.maximum.at(contrast, labels[inside], strokes.tophat[inside])
    area, side = stats[:, cv2.CC_STAT_AREA], np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    sharp = np.bincount(labels[strokes.sharp & inside], minlength=count)
    small = (area <= cfg.max_dot_area * scale**2) & (side <= cfg.max_dot_side * scale)
    small &= (peaks >= cfg.min_peak) & (contrast >= cfg.min_contrast) & (sharp >= cfg.min_sharp_share * area)
    small[0] = False
    ids = np.flatnonzero(small)
    return labels, ids, centroids[ids], area[ids].astype(np.float32), peaks[ids]


def near_pairs(points: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, of points [n, 2] within `reach` of each other (grid cells of `reach`)."""
    cells = np.floor(points / reach).astype(np.int64)
    width = int(cells[:, 1].max()) + 3 if len(points) else 1
    key = (cells[:, 0] + 1) * width + (cells[:, 1] + 1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    firsts, seconds = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            target = key + dx * width + dy
            lo, hi = np.searchsorted(sorted_key, target, "left"), np.searchsorted(sorted_key, target, "right")
            counts = hi - lo
            first = np.repeat(np.arange(len(points)), counts)
            run = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            firsts.append(first)
            seconds.append(order[np.repeat(lo, counts) + run])
    i, j = np.concatenate(firsts), np.concatenate(seconds)
    close = (i != j) & (np.hypot(*(points[i] - points[j]).T) <= reach)
    return i[close], j[close]


def triples(points: np.ndarray, areas: np.ndarray, peaks: np.ndarray, cfg: DotsConfig, scale: float):
    """Middle dots with two alike partners at equal distances in opposite directions.

    Returns (middle [t], partner_a [t], partner_b [t], direction bin over 180 degrees [t]).
    """
    reach = cfg.max_spacing * scale
    i, j = near_pairs(points, reach)
    distance = np.hypot(*(points[j] - points[i]).T)
    # Sorted (dot, distance) keys of every neighbour: how many candidates lie within r of a dot.
    stride = 2 * reach + 10
    neighbour_keys = np.sort(i * stride + distance)
    alike = (distance >= cfg.min_spacing * scale) & (np.abs(peaks[i] - peaks[j]) <= cfg.max_peak_difference)
    alike &= np.maximum(areas[i], areas[j]) <= cfg.max_area_ratio * np.minimum(areas[i], areas[j])
    i, j, distance = i[alike], j[alike], distance[alike]
    angle = np.arctan2(*(points[j] - points[i]).T[::-1])  # [-pi, pi]
    # Pair every edge of a middle dot with every other edge of it: grouped by middle, small groups.
    order = np.argsort(i, kind="stable")
    i, j, distance, angle = i[order], j[order], distance[order], angle[order]
    ends = np.searchsorted(i, i, "right")
    counts = ends - np.arange(len(i)) - 1  # edges after this one in its group
    first = np.repeat(np.arange(len(i)), counts)
    second = first + 1 + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    turn = np.abs(np.angle(np.exp(1j * (angle[first] - angle[second]))))  # 0..pi between the two edges
    d1, d2 = distance[first], distance[second]
    straight = turn >= np.pi - np.deg2rad(cfg.angle_tolerance_deg)
    even = np.abs(d1 - d2) <= cfg.spacing_tolerance * np.maximum(d1, d2) + 1
    # Isolated: nothing else bright as close as the partners (dots of a line have only each other).
    middle = i[first] * stride
    near = np.searchsorted(neighbour_keys, middle + cfg.isolation * np.maximum(d1, d2), "right")
    isolated = near - np.searchsorted(neighbour_keys, middle, "left") <= 2
    keep = straight & even & isolated
    first, second = first[keep], second[keep]
    direction = np.mod(angle[first], np.pi)
    bins = np.floor(direction / np.pi * ANGLE_BINS).astype(np.int64) % ANGLE_BINS
    return i[first], j[first], j[second], bins


def chained(n: int, middle: np.ndarray, a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Boolean [n]: dots in a run of at least four (two neighbouring middles in the same direction)."""
    edges_from = np.concatenate([middle, middle])
    edges_to = np.concatenate([a, b])
    edge_bins = np.concatenate([bins, bins])
    key = (edges_from * n + edges_to) * ANGLE_BINS + edge_bins
    supported = np.zeros(len(key), bool)
    for shift in (-1, 0, 1):  # directions one bin apart still match
        reverse = (edges_to * n + edges_from) * ANGLE_BINS + (edge_bins + shift) % ANGLE_BINS
        supported |= np.isin(reverse, key)
    good = np.zeros(n, bool)
    accepted_middles = np.unique(edges_from[supported])
    in_chain = np.isin(middle, accepted_middles)
    good[middle[in_chain]] = True
    good[a[in_chain]] = True
    good[b[in_chain]] = True
    return good


def dotted_mask(strokes: Strokes, region: np.ndarray, cfg: DotsConfig) -> np.ndarray:
    """Dots of dotted/dashed lines inside `region` (HxW bool) -> HxW uint8 0/255 (the dots' stroke pixels)."""
    scale = size_scale(region.shape)
    labels, ids, points, areas, peaks = dot_candidates(strokes, region, cfg, scale)
    mask = np.zeros(region.shape, np.uint8)
    if len(ids) < 4:
        return mask
    middle, a, b, bins = triples(points, areas, peaks, cfg, scale)
    good = chained(len(ids), middle, a, b, bins)
    keep = np.zeros(labels.max() + 1, bool)
    keep[ids[good]] = True
    mask[keep[labels]] = 255
    return mask
