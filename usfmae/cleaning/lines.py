"""Fast line step: long thin straight overlay lines at any angle, told from tissue by their profile.

Region-of-interest boxes, cursor lines, scale bars and measurement bars are longer than the
reference's contour area limit (2000 px), so it leaves them in. Candidates are straight runs of
overlay-stroke pixels (`cv2.HoughLinesP`, at least `min_length_fraction` of the shorter side), but
bright tissue interfaces (fascia, capsules, the skin line of a linear probe) form such runs too.
A drawn line is told from them by the brightness profile across it, sampled every 2 px along:

    sharp     it rises from the background to its value within a pixel or two on BOTH sides
              (a tissue interface is blurred by the point-spread function: its steepest step is a
              third of its contrast or less; a scan's edge is dark on one side only)
    contrast  it stands at least `min_contrast` above both sides
    flat      its value barely changes along it (tissue brightness varies with the speckle)
"""

import cv2
import numpy as np

from usfmae.cleaning.config import LinesConfig
from usfmae.cleaning.strokes import Strokes

# Profile offsets across the line, pixels: the peak is looked for within +-PEAK_REACH, the
# background at SIDE_NEAR..SIDE_FAR pixels beyond the peak on each side.
PEAK_REACH = 1
SIDE_NEAR, SIDE_FAR = 3, 5
OFFSETS = np.arange(-(PEAK_REACH + SIDE_FAR), PEAK_REACH + SIDE_FAR + 1, dtype=np.float32)  # [K]
SAMPLE_STEP = 2.0  # pixels between profiles along a line


def candidate_segments(strokes: np.ndarray, region: np.ndarray, cfg: LinesConfig) -> np.ndarray:
    """Straight runs of stroke pixels inside `region` (both HxW bool) -> [N, 4] float32 (x0, y0, x1, y1)."""
    candidates = (strokes & region).astype(np.uint8) * 255
    length = max(3, int(round(cfg.min_length_fraction * min(strokes.shape))))
    found = cv2.HoughLinesP(candidates, 1, np.pi / 180, max(3, length // 2), minLineLength=length, maxLineGap=2)
    return np.zeros((0, 4), np.float32) if found is None else found.reshape(-1, 4).astype(np.float32)


def profiles(value: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brightness across every segment every SAMPLE_STEP px along it.

    value: HxW uint8; segments: [N, 4]. Returns profiles [S, K] float32 (K = len(OFFSETS), bilinear)
    and the segment index of each of the S samples [S].
    """
    start, end = segments[:, :2], segments[:, 2:]
    length = np.hypot(*(end - start).T)  # [N]
    direction = (end - start) / np.maximum(length, 1e-6)[:, None]
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    counts = np.maximum(1, (length // SAMPLE_STEP).astype(int) + 1)
    owner = np.repeat(np.arange(len(segments)), counts)  # [S]
    along = np.concatenate([np.linspace(0, lg, n) for lg, n in zip(length, counts)])  # [S]
    centre = start[owner] + along[:, None] * direction[owner]  # [S, 2]
    points = centre[:, None, :] + OFFSETS[None, :, None] * normal[owner][:, None, :]  # [S, K, 2]
    sampled = cv2.remap(value.astype(np.float32), points[..., 0].astype(np.float32),
                        points[..., 1].astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled, owner


def drawn_samples(profile: np.ndarray, cfg: LinesConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which profiles [S, K] look drawn (sharp, contrasted on both sides), and their peak values [S]."""
    middle = len(OFFSETS) // 2
    window = profile[:, middle - PEAK_REACH : middle + PEAK_REACH + 1]
    peak_at = middle - PEAK_REACH + window.argmax(axis=1)  # [S]
    rows = np.arange(len(profile))
    peak = profile[rows, peak_at]
    ok = np.ones(len(profile), bool)
    for sign in (-1, 1):
        side = np.mean([profile[rows, peak_at + sign * k] for k in range(SIDE_NEAR, SIDE_FAR + 1)], axis=0)
        contrast = peak - side
        # Steepest one-pixel step between the peak and the side, as a share of the contrast.
        steepest = np.max([profile[rows, peak_at + sign * k] - profile[rows, peak_at + sign * (k + 1)]
                           for k in range(SIDE_NEAR)], axis=0)
        ok &= (contrast >= cfg.min_contrast) & (steepest >= cfg.min_steepness * np.maximum(contrast, 1))
    return ok, peak


def verified(value: np.ndarray, segments: np.ndarray, cfg: LinesConfig) -> np.ndarray:
    """Boolean [N]: segments whose profiles look drawn along most of their length, at a flat value."""
    if len(segments) == 0:
        return np.zeros(0, bool)
    profile, owner = profiles(value, segments)
    ok, peak = drawn_samples(profile, cfg)
    share = np.bincount(owner, weights=ok, minlength=len(segments)) / np.bincount(owner, minlength=len(segments))
    keep = share >= cfg.min_drawn_share
    for index in np.flatnonzero(keep):
        peaks = peak[(owner == index) & ok]
        low, high = np.percentile(peaks, [10, 90])
        keep[index] = high - low <= cfg.max_value_spread
    return keep


def line_mask(strokes: Strokes, region: np.ndarray, cfg: LinesConfig) -> np.ndarray:
    """Drawn straight lines inside `region` (HxW bool) -> HxW uint8 0/255.

    Each verified segment is drawn 1 + 2 * dilate_px pixels wide, covering a 1-2 px line and its
    anti-aliased rims.
    """
    segments = candidate_segments(strokes.mask, region, cfg)
    mask = np.zeros(region.shape, np.uint8)
    for x0, y0, x1, y1 in segments[verified(strokes.value, segments, cfg)]:
        cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1 + 2 * cfg.dilate_px)
    mask[~region] = 0
    return mask
