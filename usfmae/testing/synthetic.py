"""Seeded synthetic B-mode ultrasound images with exact ground truth (numpy + OpenCV only).

Used by the demo, the tests and the benchmarks: nothing real is downloaded, yet the images carry the
things the pipeline must cope with (fan-shaped scan sector, speckle, a lesion to classify or segment,
burned-in text, calipers, coloured boxes and a colour bar) together with pixel-exact masks of them.

How one image is made (each step is a function below):
1. `_sample_fan`: fan-shaped sector, virtual apex above the top centre, random opening angle.
2. `_beam_geometry` / `_scan_conversion_maps`: the image is simulated in beam space
   (rows = depth samples, columns = beams) and scan-converted to the fan with `cv2.remap`, so speckle
   grains stretch laterally with depth as on a real curvilinear probe.
3. `_tissue_echogenicity`: wavy tissue layers with bright specular boundaries, smooth texture.
4. `_place_lesion` / `_lesion_contour`: smooth ellipse (label 0) or irregular spiculated outline
   (label 1), rasterised in image space (the lesion mask is exact there).
5. `_apply_lesion`: hypoechoic interior, then posterior acoustic enhancement or shadowing behind it.
6. `_depth_gain` / `_speckle_envelope` / `_log_compress`: attenuation, time-gain compensation,
   Rayleigh-like speckle (random complex scatterers blurred by the point-spread function), electronic
   noise floor and log compression to the display range.
7. `_draw_overlays`: text, calipers, boxes, colour bar drawn on separate layers whose coverage is the
   overlay mask, composited over the clean image (pixels outside the mask are never touched).

Each part draws from its own child of `np.random.SeedSequence(seed)`, so the clean image does not
depend on `overlays`, and changing `label` keeps the same anatomy, lesion position and speckle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from usfmae.constants import DEFAULT_IMAGE_SIZE

CLASS_NAMES = ("benign", "malignant")  # folder names of `write_labeled`; index = label
DEFAULT_LESION_SCALE = (0.035, 0.11)  # nominal lesion radius as a fraction of the shorter image side
MIN_SIDE = 64  # below this the fan, lesion and overlay text no longer fit


@dataclass
class SyntheticSample:
    """One generated image and its ground truth; all arrays share the image height and width."""

    image: np.ndarray  # [H, W, 3] uint8 RGB, clean image with overlays burned in (if requested)
    clean: np.ndarray  # [H, W, 3] uint8 RGB, the same image without overlays
    overlay_mask: np.ndarray  # [H, W] uint8 0/255, every pixel an overlay covers (antialiased edges too)
    lesion_mask: np.ndarray  # [H, W] uint8 0/255
    label: int  # 0 = round/smooth "benign-like", 1 = irregular/spiculated "malignant-like"
    lesion_radius: float  # nominal lesion radius in pixels
    sector_mask: np.ndarray  # [H, W] uint8 0/255, the scan fan


@dataclass(frozen=True)
class _Fan:
    """Scan sector in pixel coordinates: beams leave the (virtual) apex between +-half_angle."""

    apex_x: float
    apex_y: float
    r_near: float  # radius of the probe face arc
    r_far: float  # radius of the deepest arc
    half_angle: float  # radians, measured from straight down


# ---------------------------------------------------------------- geometry


def _sample_fan(rng: np.random.Generator, h: int, w: int, sector_angle: float | None) -> _Fan:
    """Fan inside the image with margins left for corner text and the colour bar."""
    degrees = rng.uniform(60.0, 90.0) if sector_angle is None else sector_angle
    half = np.deg2rad(degrees) / 2
    r_near = rng.uniform(0.05, 0.3) * min(h, w)
    top = 0.1 * h + r_near * (1 - np.cos(half))  # the probe-face corners stay below the top text row
    apex_y = top - r_near
    r_far = min(0.93 * h - apex_y, (0.44 * w) / np.sin(half))
    # Plain floats: numpy float64 scalars would silently promote the float32 arrays they touch.
    return _Fan(float((w - 1) / 2), float(apex_y), float(r_near), float(r_far), float(half))


def _beam_geometry(fan: _Fan, n_depth: int, n_beams: int) -> tuple[np.ndarray, np.ndarray]:
    """Image-space coordinates (x, y) of every beam-space sample, each [n_depth, n_beams] float32."""
    r = np.linspace(fan.r_near, fan.r_far, n_depth, dtype=np.float32)[:, None]
    theta = np.linspace(-fan.half_angle, fan.half_angle, n_beams, dtype=np.float32)[None, :]
    x, y = fan.apex_x + r * np.sin(theta), fan.apex_y + r * np.cos(theta)
    return x.astype(np.float32), y.astype(np.float32)


def _scan_conversion_maps(
    fan: _Fan, h: int, w: int, n_depth: int, n_beams: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`cv2.remap` maps from image pixels to beam space ([H, W] float32 each) and the sector mask."""
    dx = np.arange(w, dtype=np.float32)[None, :] - np.float32(fan.apex_x)  # [1, W]
    dy = np.arange(h, dtype=np.float32)[:, None] - np.float32(fan.apex_y)  # [H, 1]
    r = np.hypot(dx, dy)  # [H, W]
    theta = np.arctan2(dx, dy)  # angle from straight down
    beam = (theta + fan.half_angle) * ((n_beams - 1) / (2 * fan.half_angle))
    depth = (r - fan.r_near) * ((n_depth - 1) / (fan.r_far - fan.r_near))
    inside = (r >= fan.r_near) & (r <= fan.r_far) & (np.abs(theta) <= fan.half_angle)
    return beam.astype(np.float32), depth.astype(np.float32), inside.astype(np.uint8) * 255


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int, sigma: float) -> np.ndarray:
    """Smooth Gaussian random field [shape] float32: a coarse grid upsampled bicubically."""
    coarse = rng.normal(0.0, sigma, (cells, cells)).astype(np.float32)
    # Cubic to 8x the grid (smooth), then linear to full size: cubic straight from a tiny grid is slow.
    fine = cv2.resize(coarse, (8 * cells, 8 * cells), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(fine, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- tissue and lesion


def _tissue_echogenicity(rng: np.random.Generator, h: int, w: int, fan: _Fan) -> np.ndarray:
    """Mean backscatter power in image space [H, W] float32; 1.0 is ordinary soft tissue.

    Layers are separated by wavy boundaries y = f(x) (anatomy is not parallel to the probe face), so each
    boundary is a 1-D curve and the layer index a broadcast comparison: no per-layer masking passes.
    """
    top = fan.apex_y + fan.r_near
    span = fan.apex_y + fan.r_far - top
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)
    n_bounds = int(rng.integers(2, 5))
    depths = np.sort(rng.uniform(0.08, 0.85, n_bounds)).tolist()  # python floats keep arrays float32
    levels = (10 ** (rng.uniform(-9.0, 3.0, n_bounds + 1) / 10)).astype(np.float32)  # -9..+3 dB
    layer = np.zeros((h, w), np.uint8)  # index of the layer each pixel lies in
    specular = np.zeros((h, w), np.float32)
    striated = np.float32(1.0)  # becomes an [H, W] array only if a layer is striated
    for depth in depths:
        freq = rng.uniform(0.5, 2.5) * 2 * np.pi / span
        wave = rng.uniform(0.01, 0.05) * span * np.sin(freq * cols + rng.uniform(0, 2 * np.pi))
        boundary = top + depth * span + wave  # [W]
        below = rows - boundary  # [H, W] signed distance below the boundary, in pixels
        np.add(layer, below > 0, out=layer)
        curve = np.round(np.stack([cols, boundary], axis=1) * 16).astype(np.int32)
        cv2.polylines(specular, [curve], False, rng.uniform(1.0, 4.0), 1, cv2.LINE_AA, shift=4)
        if rng.random() < 0.35:  # muscle-like striations running parallel to the boundary
            period = rng.uniform(0.02, 0.05) * span
            striated = striated * (1 + 0.5 * np.where(below > 0, np.sin(below * (2 * np.pi / period)), 0))
    # Interfaces are bright specular lines a few pixels thick: drawn 1 px wide, then spread axially.
    specular = cv2.GaussianBlur(specular, (0, 0), sigmaX=0.7, sigmaY=rng.uniform(0.004, 0.012) * span)
    echo = levels[layer] * striated + 2.5 * specular
    return echo * np.exp(_smooth_field(rng, (h, w), 5, 0.35) + _smooth_field(rng, (h, w), 14, 0.2))


def _place_lesion(
    rng: np.random.Generator, fan: _Fan, side: int, lesion_scale: tuple[float, float]
) -> tuple[float, float, float]:
    """Lesion centre (x, y) and nominal radius, chosen so the whole outline stays inside the fan."""
    radius = rng.uniform(*lesion_scale) * side
    # Spicules reach at most ~1.9 radii out, plus a 3 px margin: extent = 2 radius + 3. Keep 2 extents
    # within 90% of the fan's depth range (small images, large lesions), and the radius at least 1.5 px.
    depth = fan.r_far - fan.r_near
    radius = max(1.5, min(radius, (0.45 * depth - 3) / 2))
    extent = min(2.0 * radius + 3, 0.45 * depth)
    lo, hi = fan.r_near + extent, fan.r_far - extent
    mid_lo, mid_hi = lo + 0.1 * (hi - lo), hi - 0.3 * (hi - lo)  # prefer mid depths
    r = rng.uniform(mid_lo, mid_hi)
    max_theta = max(0.0, fan.half_angle - np.arcsin(min(1.0, extent / r)))
    theta = rng.uniform(-max_theta, max_theta) * 0.8
    return fan.apex_x + r * np.sin(theta), fan.apex_y + r * np.cos(theta), float(radius)


def _lesion_contour(rng: np.random.Generator, label: int, radius: float, n_points: int = 360) -> np.ndarray:
    """Outline relative to the lesion centre [n_points, 2] float (x, y).

    Label 0: smooth ellipse, wider than tall, at most a faint macro-lobulation (stays convex-looking).
    Label 1: irregular outline (low harmonics plus micro-lobulation) with spicules whose length varies
    from subtle to marked, so small or mildly spiculated lesions are genuinely hard to tell apart.
    """
    phi = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    if label == 0:
        aspect = rng.uniform(1.0, 1.8)
        tilt = rng.uniform(-0.35, 0.35)
        rho = 1 + rng.uniform(0.0, 0.03) * np.cos(int(rng.integers(2, 5)) * phi + rng.uniform(0, 2 * np.pi))
    else:
        aspect = rng.uniform(0.7, 1.3)
        tilt = rng.uniform(-np.pi, np.pi)
        harmonics = np.arange(2, 9)[:, None]
        amps = rng.uniform(0.0, 0.1, (harmonics.size, 1)) / np.sqrt(harmonics - 1)
        rho = 1 + (amps * np.cos(harmonics * phi + rng.uniform(0, 2 * np.pi, (harmonics.size, 1)))).sum(0)
        n_spikes = int(rng.integers(5, 14))
        centres = rng.uniform(0, 2 * np.pi, (n_spikes, 1))
        widths = np.maximum(rng.uniform(0.05, 0.14, (n_spikes, 1)), 1.5 / radius)  # >= ~1.5 px wide
        lengths = rng.uniform(0.25, 0.85, (n_spikes, 1)) * rng.uniform(0.6, 1.0)
        gap = np.angle(np.exp(1j * (phi - centres)))  # wrapped angular distance to each spike
        rho = rho + (lengths * np.exp(-0.5 * (gap / widths) ** 2)).sum(0)
        rho = np.minimum(rho, 1.75)  # overlapping spicules must not leave the 2-radius placement margin
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    px, py = a * rho * np.cos(phi), b * rho * np.sin(phi)
    c, s = np.cos(tilt), np.sin(tilt)
    return np.stack([c * px - s * py, s * px + c * py], axis=1)


def _rasterise(contour: np.ndarray, h: int, w: int) -> np.ndarray:
    """Filled polygon [H, W] uint8 0/255, with 1/16 px vertex precision."""
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(contour * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    return mask


def _apply_lesion(rng: np.random.Generator, label: int, echo: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """Hypoechoic lesion plus posterior enhancement or shadowing; `lesion` is soft coverage in beam space.

    Only the beams through the lesion, from its top down, can change: work on that window of
    `echo` [n_depth, n_beams] (a tenth of the frame or less) and leave the rest untouched.
    """
    beams = np.flatnonzero(lesion.max(axis=0) > 0)
    if beams.size == 0:
        return echo
    top = int(np.flatnonzero(lesion.max(axis=1) > 0)[0])
    b0, b1 = max(int(beams[0]) - 8, 0), min(int(beams[-1]) + 9, echo.shape[1])  # margin for the blur below
    echo = echo.copy()
    window, cover = echo[top:, b0:b1], lesion[top:, b0:b1]  # views: writing `window` writes `echo`
    # Contrast relative to the tissue it replaces: cyst-like benign lesions darker and uniform,
    # malignant-like ones less dark and heterogeneous (a weak cue; the outline is the strong one).
    contrast_db = rng.uniform(-18.0, -9.0) if label == 0 else rng.uniform(-15.0, -7.0)
    surrounding = float((window * cover).sum() / max(float(cover.sum()), 1e-6))
    texture = np.exp(_smooth_field(rng, cover.shape, 8, 0.1 if label == 0 else 0.4))
    window[:] = window * (1 - cover) + (10 ** (contrast_db / 10) * surrounding) * texture * cover
    # Posterior features correlate with the label only loosely, as in real breast imaging.
    p_shadow = 0.15 if label == 0 else 0.65
    kind = rng.choice(["shadow", "enhance", "none"], p=[p_shadow, 0.85 - p_shadow, 0.15])
    if kind == "none":
        return echo
    behind = np.maximum.accumulate(cover, axis=0) - cover  # 1 below the lesion along each beam
    behind = cv2.GaussianBlur(behind, (0, 0), sigmaX=2.0, sigmaY=0.5)
    if kind == "shadow":
        window *= 1 - rng.uniform(0.5, 0.9) * behind
    else:
        travelled = np.cumsum(behind, axis=0) / echo.shape[0]  # depth fraction below the lesion
        window *= 1 + rng.uniform(0.6, 1.5) * behind * np.exp(-travelled / rng.uniform(0.1, 0.3))
    return echo


# ---------------------------------------------------------------- acoustics and display


def _depth_gain(rng: np.random.Generator, n_depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude attenuation and the (imperfect) time-gain compensation per depth row, each [n_depth, 1]."""
    depth = np.linspace(0.0, 1.0, n_depth, dtype=np.float32)
    alpha = rng.uniform(1.0, 2.5)
    knots = rng.uniform(0.75, 1.3, 6)  # the sonographer's TGC sliders
    tgc = np.interp(depth, np.linspace(0, 1, knots.size), knots) * np.exp(rng.uniform(0.4, 0.9) * alpha * depth)
    return np.exp(-alpha * depth)[:, None], tgc.astype(np.float32)[:, None]


def _speckle_envelope(rng: np.random.Generator, amplitude: np.ndarray, side: int) -> np.ndarray:
    """Rayleigh speckle: random complex scatterers times `amplitude`, blurred by the PSF, magnitude.

    amplitude: [n_depth, n_beams]. Scatterers are uniform 8-bit integers (several times cheaper to draw
    than normals); the PSF sums several of them, so the blurred field is close to circular Gaussian and
    its magnitude close to Rayleigh.
    """
    scale = np.sqrt(side / 256)  # bigger images resolve finer detail: grains grow slower than the side
    sigma_lateral = rng.uniform(1.6, 2.8) * scale  # in beams: grains widen with depth after scan conversion
    sigma_axial = rng.uniform(0.8, 1.3) * scale
    # int8 scatterers have std 256/sqrt(12); a unit-sum Gaussian PSF shrinks it by sqrt(4 pi sx sy).
    # Normalising both keeps the speckle level (and so the noise floor below) independent of image size.
    unit = np.sqrt(4 * np.pi * sigma_lateral * sigma_axial) / (256 / np.sqrt(12))
    noise_level = 0.05 * float(np.mean(amplitude)) / (256 / np.sqrt(12))
    parts = []
    for _ in ("in-phase", "quadrature"):  # planar [n_depth, n_beams] arrays: fast contiguous arithmetic
        scatter = rng.integers(-128, 128, amplitude.shape, dtype=np.int8).astype(np.float32) * amplitude
        echo = cv2.GaussianBlur(scatter, (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial) * np.float32(unit)
        # Electronic noise is white (not blurred by the PSF) and sets the floor in shadows and at depth.
        echo += rng.integers(-128, 128, amplitude.shape, dtype=np.int8).astype(np.float32) * np.float32(noise_level)
        parts.append(echo)
    return cv2.magnitude(*parts)


def _probe_ring_down(rng: np.random.Generator, n_depth: int) -> np.ndarray:
    """Bright reverberation just under the probe face, added to the echogenicity [n_depth, 1]."""
    depth = np.linspace(0.0, 1.0, n_depth, dtype=np.float32)
    return (rng.uniform(2.0, 6.0) * np.exp(-depth / rng.uniform(0.01, 0.03)))[:, None].astype(np.float32)


def _log_compress(rng: np.random.Generator, envelope: np.ndarray) -> np.ndarray:
    """Envelope to display brightness in [0, 1]: log compression over a random dynamic range (dB).

    The overall gain puts the median echo at a random mid-grey, as a sonographer's gain knob would.
    """
    median = float(np.median(envelope[::4, ::4])) + 1e-6  # subsampled: only a level is needed
    dynamic_range = rng.uniform(45.0, 60.0)
    db = 20 * np.log10(envelope / median + 1e-6)
    display = np.clip(rng.uniform(0.45, 0.6) + db / dynamic_range, 0.0, 1.0)
    return display ** rng.uniform(1.2, 1.8)  # post-processing grey map: darkens the mid-tones


# ---------------------------------------------------------------- overlays


_INSTITUTION_A = ["ST. MARY", "NORTHFIELD", "RIVERSIDE", "LAKEVIEW", "CENTRAL", "MERCY", "WESTGATE", "UNIVERSITY"]
_INSTITUTION_B = ["GENERAL HOSPITAL", "MEDICAL CENTER", "WOMEN'S CLINIC", "IMAGING", "HEALTH", "RADIOLOGY"]
_PROBES = ["C5-1", "C5-2", "L12-5", "L18-4", "C9-2", "14L5", "C1-6"]
_MARKERS = ["LT BREAST", "RT BREAST", "LT 2:00 3CMFN", "RT 10:00", "TRANS", "SAG", "LT LOBE", "ADNEXA"]
_WHITE, _GREY = (255, 255, 255), (190, 190, 190)
_COLOURS = [(255, 255, 0), (0, 255, 0), (0, 255, 255), (255, 200, 0)]  # yellow, green, cyan, amber (RGB)


def _random_texts(rng: np.random.Generator) -> dict[str, list[str]]:
    """Patient-like header, date/time, acquisition parameters and depth text, one list per corner."""
    digits = lambda n: "".join(str(d) for d in rng.integers(0, 10, n))  # noqa: E731
    date = f"{rng.integers(2005, 2025)}/{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}"
    time = f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    return {
        "top_left": [f"{rng.choice(_INSTITUTION_A)} {rng.choice(_INSTITUTION_B)}", f"ID {digits(4)}-{digits(4)}"],
        "top_right": [date, time],
        "bottom_left": [
            f"{rng.choice(_PROBES)} {rng.uniform(2, 15):.1f}MHz",
            f"GN {rng.integers(30, 80)} DR {rng.integers(45, 75)}",
        ],
        "bottom_right": [f"FR {rng.integers(8, 60)}Hz", f"MI {rng.uniform(0.2, 1.4):.1f}"],
    }


class _OverlayLayers:
    """Per-colour coverage layers ([H, W] uint8, 255 = opaque); antialiased drawing keeps edges soft."""

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.layers: dict[tuple[int, int, int], np.ndarray] = {}
        self.patches: list[tuple[tuple[int, int, int, int], np.ndarray]] = []  # opaque RGB blocks

    def __call__(self, colour: tuple[int, int, int]) -> np.ndarray:
        return self.layers.setdefault(tuple(int(c) for c in colour), np.zeros(self.shape, np.uint8))

    def composite(self, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Alpha-blend every layer over `clean` [H, W, 3]; return the image and the union mask."""
        image = clean.copy()
        mask = np.zeros(self.shape, np.uint8)
        for (x0, y0, x1, y1), rgb in self.patches:
            image[y0:y1, x0:x1] = np.round(rgb)
            mask[y0:y1, x0:x1] = 255
        for colour, coverage in self.layers.items():
            ys, xs = np.nonzero(coverage)  # blend only covered pixels: overlays are sparse
            alpha = coverage[ys, xs].astype(np.float32)[:, None] / 255
            pixels = image[ys, xs].astype(np.float32)
            blended = pixels + alpha * (np.asarray(colour, np.float32) - pixels)
            image[ys, xs] = np.round(blended).astype(np.uint8)
            mask[ys, xs] = 255
        return image, mask


def _draw_corner_text(rng: np.random.Generator, layers: _OverlayLayers, font_scale: float, thick: int) -> None:
    """Scanner header and footer text in the four corners (white or grey)."""
    h, w = layers.shape
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX]))
    scale = font_scale * (1.6 if font == cv2.FONT_HERSHEY_PLAIN else 1.0)  # PLAIN is drawn smaller
    margin = max(2, w // 64)
    for corner, lines in _random_texts(rng).items():
        colour = _WHITE if rng.random() < 0.7 else _GREY
        (_, line_h), base = cv2.getTextSize("Ag", font, scale, thick)
        step = line_h + base + 2
        for i, text in enumerate(lines):
            text_w = cv2.getTextSize(text, font, scale, thick)[0][0]
            x = margin if corner.endswith("left") else w - margin - text_w
            if corner.startswith("top"):
                y = margin + line_h + i * step
            else:
                y = h - margin - base - (len(lines) - 1 - i) * step
            cv2.putText(layers(colour), text, (x, y), font, scale, 255, thick, cv2.LINE_AA)


def _draw_depth_scale(
    rng: np.random.Generator, layers: _OverlayLayers, fan: _Fan, font_scale: float, thick: int
) -> None:
    """Tick dots and centimetre numbers along the right edge of the fan."""
    layer = layers(_WHITE if rng.random() < 0.6 else _GREY)
    px_per_cm = (fan.r_far - fan.r_near) / rng.uniform(3.0, 8.0)
    sin_t, cos_t = np.sin(fan.half_angle), np.cos(fan.half_angle)
    offset = 3 + layers.shape[1] / 128  # just outside the fan edge
    for cm, r in enumerate(np.arange(fan.r_near, fan.r_far + 1, px_per_cm)):
        x, y = fan.apex_x + r * sin_t + offset * cos_t, fan.apex_y + r * cos_t - offset * sin_t
        cv2.circle(layer, (int(round(x)), int(round(y))), max(1, thick), 255, -1, cv2.LINE_AA)
        if cm > 0:
            org = (int(x + 2 * offset), int(y + 4))
            cv2.putText(layer, str(cm), org, cv2.FONT_HERSHEY_SIMPLEX, 0.9 * font_scale, 255, thick, cv2.LINE_AA)


def _draw_calipers(
    rng: np.random.Generator, layers: _OverlayLayers, colour: tuple, centre: tuple[float, float],
    radius: float, font_scale: float, thick: int,
) -> None:
    """One or two caliper pairs ('+' or 'x') across the lesion joined by dotted lines, plus the reading."""
    layer = layers(colour)
    h, w = layers.shape
    arm = max(3, int(round(min(h, w) / 64)))
    crosses = rng.random() < 0.5
    angle = rng.uniform(0, np.pi)
    for k in range(int(rng.integers(1, 3))):
        direction = np.array([np.cos(angle + k * np.pi / 2), np.sin(angle + k * np.pi / 2)])
        half_len = radius * rng.uniform(0.9, 1.3)
        ends = [np.asarray(centre) + sign * half_len * direction for sign in (-1, 1)]
        for x, y in ends:
            x, y = int(round(x)), int(round(y))
            for dx, dy in ([(arm, arm), (arm, -arm)] if crosses else [(arm, 0), (0, arm)]):
                cv2.line(layer, (x - dx, y - dy), (x + dx, y + dy), 255, thick, cv2.LINE_AA)
        n_dots = max(2, int(2 * half_len / (2 * arm)))
        for t in np.linspace(0.15, 0.85, n_dots):
            x, y = ends[0] + t * (ends[1] - ends[0])
            cv2.circle(layer, (int(round(x)), int(round(y))), max(1, thick - 1), 255, -1, cv2.LINE_AA)
    org = (int(0.42 * w), h - max(2, w // 64) - 2)  # bottom centre, between the corner text blocks
    reading = f"D1 {rng.uniform(0.4, 3.5):.2f}cm"
    cv2.putText(layer, reading, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thick, cv2.LINE_AA)


def _draw_boxes_and_markers(
    rng: np.random.Generator, layers: _OverlayLayers, fan: _Fan, lesion_mask: np.ndarray,
    palette: list[tuple[int, int, int]], font_scale: float, thick: int,
) -> None:
    """ROI box around the lesion, a large zoom/Doppler box, body-marker text and the probe mark."""
    h, w = layers.shape
    pick = lambda: palette[rng.integers(len(palette))]  # noqa: E731
    if rng.random() < 0.6:
        x, y, box_w, box_h = cv2.boundingRect(lesion_mask)
        pad = int(rng.integers(3, 10))
        cv2.rectangle(layers(pick()), (x - pad, y - pad), (x + box_w + pad, y + box_h + pad), 255, thick, cv2.LINE_AA)
    if rng.random() < 0.25:
        x0, y0 = int(w * rng.uniform(0.2, 0.4)), int(h * rng.uniform(0.25, 0.45))
        cv2.rectangle(layers(pick()), (x0, y0), (w - x0, int(y0 + 0.35 * h)), 255, thick, cv2.LINE_AA)
    if rng.random() < 0.5:  # inside the fan, over the image
        org = (int(fan.apex_x - 0.15 * w), int(min(0.85 * h, fan.apex_y + 0.9 * fan.r_far)))
        marker = str(rng.choice(_MARKERS))
        cv2.putText(layers(_WHITE), marker, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thick, cv2.LINE_AA)
    if rng.random() < 0.7:  # probe orientation mark at the fan's upper-left corner
        x = fan.apex_x - fan.r_near * np.sin(fan.half_angle) - 0.02 * w
        y = fan.apex_y + fan.r_near * np.cos(fan.half_angle)
        cv2.circle(layers(palette[0]), (int(x), int(y)), max(2, min(h, w) // 100), 255, -1, cv2.LINE_AA)


def _draw_colour_bar(rng: np.random.Generator, layers: _OverlayLayers, colour: bool, left: bool) -> None:
    """Vertical colour (Doppler-like red/blue) or grey-map bar at the left or right image edge."""
    h, w = layers.shape
    bar_w, bar_h = max(4, w // 40), int(h * rng.uniform(0.2, 0.35))
    x0 = max(2, w // 64) if left else w - max(2, w // 64) - bar_w
    y0 = int(h * rng.uniform(0.25, 0.4))
    ramp = np.linspace(1.0, 0.0, bar_h, dtype=np.float32)[:, None, None]
    if colour:  # red (towards) through black to blue (away)
        up, down = np.clip(2 * ramp - 1, 0, 1), np.clip(1 - 2 * ramp, 0, 1)
        rgb = np.concatenate([255 * up, 80 * (up + down), 255 * down], axis=2)
    else:
        rgb = np.repeat(255 * ramp, 3, axis=2)
    layers.patches.append(((x0, y0, x0 + bar_w, y0 + bar_h), np.broadcast_to(rgb, (bar_h, bar_w, 3))))


def _draw_overlays(
    rng: np.random.Generator, clean: np.ndarray, fan: _Fan, centre: tuple[float, float], radius: float,
    lesion_mask: np.ndarray, colour: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Burn scanner annotations into `clean`; returns the annotated image and the exact overlay mask."""
    h, w = clean.shape[:2]
    layers = _OverlayLayers(h, w)
    side = min(h, w)
    font_scale, thick = max(0.3, rng.uniform(0.3, 0.42) * side / 256), max(1, int(round(side / 300)))
    palette = _COLOURS if colour else [_WHITE, _GREY]
    _draw_corner_text(rng, layers, font_scale, thick)
    depth_scale = rng.random() < 0.7
    if depth_scale:
        _draw_depth_scale(rng, layers, fan, font_scale, thick)
    if rng.random() < 0.7:
        _draw_calipers(rng, layers, palette[rng.integers(len(palette))], centre, radius, font_scale, thick)
    _draw_boxes_and_markers(rng, layers, fan, lesion_mask, palette, font_scale, thick)
    if rng.random() < 0.6:
        _draw_colour_bar(rng, layers, colour, left=depth_scale or rng.random() < 0.5)  # not over the scale
    return layers.composite(clean)


# ---------------------------------------------------------------- public API


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or a pair of ints, each at least MIN_SIDE."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2
    ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= MIN_SIDE for v in pair)
    if not ok:
        raise ValueError(f"size must be an int or (height, width) of ints >= {MIN_SIDE}, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_count(n: int, name: str) -> int:
    """n as a plain int; ValueError unless it is a non-negative integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    return int(n)


def _render_clean(
    anatomy: np.random.Generator, lesion_rng: np.random.Generator, speckle_rng: np.random.Generator,
    h: int, w: int, label: int, lesion_scale: tuple[float, float], sector_angle: float | None,
    extra_echo: Callable[[_Fan, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Fan, tuple[float, float], float]:
    """Grey B-mode image [H, W] uint8, lesion mask, sector mask, the fan, lesion centre and radius.

    extra_echo(fan, sector_mask) -> [H, W] float32 echogenicity added to the tissue before the
    acoustics (bright interfaces and reflectors of `usfmae.testing.annotated`); it must draw from its
    own random stream so the other parts stay what they are without it.
    """
    # Beam space is [H, W] too: one depth sample per row, one beam per column.
    fan = _sample_fan(anatomy, h, w, sector_angle)
    beam_x, beam_y = _beam_geometry(fan, h, w)
    map_beam, map_depth, sector_mask = _scan_conversion_maps(fan, h, w, h, w)
    tissue = _tissue_echogenicity(anatomy, h, w, fan)
    if extra_echo is not None:
        tissue = tissue + extra_echo(fan, sector_mask)
    ring_down = _probe_ring_down(anatomy, h)
    attenuation, tgc = _depth_gain(anatomy, h)

    cx, cy, radius = _place_lesion(lesion_rng, fan, min(h, w), lesion_scale)
    lesion_mask = _rasterise(_lesion_contour(lesion_rng, label, radius) + (cx, cy), h, w) & sector_mask
    soft_lesion = cv2.GaussianBlur(lesion_mask.astype(np.float32) / 255, (0, 0), 0.8)
    # One remap carries both image-space channels into beam space: [H, W, 2] -> [n_depth, n_beams, 2].
    beam = cv2.remap(cv2.merge([tissue, soft_lesion]), beam_x, beam_y, cv2.INTER_LINEAR)
    echo = _apply_lesion(lesion_rng, label, beam[..., 0] + ring_down, beam[..., 1].copy())

    envelope = _speckle_envelope(speckle_rng, np.sqrt(echo) * attenuation, min(h, w))
    display = _log_compress(speckle_rng, envelope * tgc).astype(np.float32)
    gray = cv2.remap(display, map_beam, map_depth, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gray = np.round(gray * 255).astype(np.uint8) & sector_mask  # black outside the fan
    return gray, lesion_mask, sector_mask, fan, (cx, cy), radius


def generate_ultrasound(
    seed: int,
    size: int | tuple[int, int] = 256,
    label: int | None = None,
    overlays: bool = True,
    lesion_scale: tuple[float, float] | None = None,
    color: bool = True,
    sector_angle: float | None = None,
) -> SyntheticSample:
    """One synthetic B-mode image with a lesion, deterministic in `seed`.

    size: side or (height, width). label: 0 benign-like, 1 malignant-like, None = drawn from the seed.
    lesion_scale: (low, high) nominal lesion radius as a fraction of the shorter side.
    color: coloured annotations (boxes, calipers, Doppler bar) if True, white/grey only if False.
    sector_angle: full opening angle of the fan in degrees (default: drawn from 60-90).
    """
    seed = _check_count(seed, "seed")
    h, w = _check_size(size)
    if label not in (None, 0, 1):
        raise ValueError(f"label must be 0, 1 or None, got {label!r}")
    low, high = DEFAULT_LESION_SCALE if lesion_scale is None else lesion_scale
    if not 0 < low <= high <= 0.25:
        raise ValueError(f"lesion_scale must satisfy 0 < low <= high <= 0.25, got {lesion_scale!r}")
    if sector_angle is not None and not 20 <= sector_angle <= 150:
        raise ValueError(f"sector_angle must be in [20, 150] degrees, got {sector_angle!r}")

    streams = np.random.SeedSequence(seed).spawn(4)
    anatomy, lesion_rng, speckle_rng, overlay_rng = (np.random.default_rng(s) for s in streams)
    drawn_label = int(anatomy.integers(2))  # always drawn, so an explicit label keeps the same anatomy
    label = drawn_label if label is None else int(label)
    gray, lesion_mask, sector_mask, fan, centre, radius = _render_clean(
        anatomy, lesion_rng, speckle_rng, h, w, label, (low, high), sector_angle
    )
    clean = np.repeat(gray[..., None], 3, axis=2)  # grey replicated to RGB
    if overlays:
        image, overlay_mask = _draw_overlays(overlay_rng, clean, fan, centre, radius, lesion_mask, color)
    else:
        image, overlay_mask = clean.copy(), np.zeros((h, w), np.uint8)
    return SyntheticSample(image, clean, overlay_mask, lesion_mask, label, radius, sector_mask)


def _item_seed(*keys: int) -> int:
    """Independent per-item seed derived from the corpus seed and the item's keys."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def _write_png(path: Path, array: np.ndarray) -> Path:
    """Write an RGB [H, W, 3] or single-channel [H, W] uint8 array as PNG (OpenCV wants BGR)."""
    pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write PNG {path}")
    return path


def write_corpus(
    out_dir: str | Path, n: int, seed: int = 0, size: int | tuple[int, int] = 256, overlays: bool = True
) -> list[Path]:
    """n unlabeled PNGs `out_dir/synth_000000.png`... (a pretraining corpus); returns their paths."""
    count, seed = _check_count(n, "n"), _check_count(seed, "seed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        sample = generate_ultrasound(_item_seed(seed, 0, i), size, overlays=overlays)
        paths.append(_write_png(out / f"synth_{i:06d}.png", sample.image))
    return paths


def write_labeled(
    out_dir: str | Path, n_per_class: int, seed: int = 0, size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
    overlays: bool = False,
) -> Path:
    """Folder-per-class dataset `out_dir/{benign,malignant}/<class>_00000.png`; returns `out_dir`."""
    count, seed = _check_count(n_per_class, "n_per_class"), _check_count(seed, "seed")
    out = Path(out_dir)
    for label, name in enumerate(CLASS_NAMES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            sample = generate_ultrasound(_item_seed(seed, 1, label, i), size, label=label, overlays=overlays)
            _write_png(out / name / f"{name}_{i:05d}.png", sample.image)
    return out


def write_segmentation(
    out_dir: str | Path, n: int, seed: int = 0, size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
    overlays: bool = False,
) -> Path:
    """Image/mask pairs `out_dir/images/seg_00000.png` and `out_dir/masks/seg_00000.png` (0/255 lesion)."""
    count, seed = _check_count(n, "n"), _check_count(seed, "seed")
    out = Path(out_dir)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sample = generate_ultrasound(_item_seed(seed, 2, i), size, overlays=overlays)
        _write_png(out / "images" / f"seg_{i:05d}.png", sample.image)
        _write_png(out / "masks" / f"seg_{i:05d}.png", sample.lesion_mask)
    return out
