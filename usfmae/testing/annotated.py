"""Synthetic scans annotated the way sonographers and scanners annotate them, with one truth mask per kind.

`usfmae.testing.synthetic.generate_ultrasound` draws a lesion with a few overlays; this module draws
what a cleaner must remove inside the scan area and what it must leave alone, each with its own
pixel-exact mask, so recall can be reported per kind and inside/outside the scan, and precision
against tissue that looks like annotation:

annotations (ANNOTATION_KINDS)
    typed_text    words typed over the image (patient names, organ labels), white/grey/colour, some
                  with a black shadow or on a dark label box
    caliper       '+'/'x' ends joined by a dotted or dashed line, with end numbers
    cross         stand-alone measurement crosses
    dotted_line   cursor lines (M-mode/Doppler) from the probe face through the image
    roi_box       rectangular or fan-shaped region-of-interest boxes, or just their corners
    logo          orientation logos: a circled letter at the upper corner of the scan
    body_marker   a small pictogram (breast circle with probe bar) in a lower corner of the scan
    edge_label    short labels across the scan edge ("HR", "R", "TIB")
    depth_scale   ticks or dots every centimetre along an edge and depth numbers ("-5", "10")
    header        scanner text in the image corners (outside the scan)
tissue the cleaner must keep (TISSUE_KINDS)
    specular      long bright interfaces (fascia, capsules), near-saturated, a few pixels thick
    reflector     bright point reflectors (calcifications), some in clusters

Two scan geometries: a curvilinear fan (`synthetic`'s scan conversion) or a linear-probe
rectangle, where interfaces run almost parallel to the top edge as in thyroid or muscle scans.
Sizes follow a 480x640 scanner frame scaled to the image; `jpeg_quality` compresses the result as
many DICOM exports are. Every part draws from its own random stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from usfmae.testing.synthetic import (
    _apply_lesion,
    _check_count,
    _check_size,
    _depth_gain,
    _Fan,
    _lesion_contour,
    _log_compress,
    _probe_ring_down,
    _random_texts,
    _rasterise,
    _render_clean,
    _speckle_envelope,
    _tissue_echogenicity,
)

ANNOTATION_KINDS = (
    "typed_text", "caliper", "cross", "dotted_line", "roi_box", "logo", "body_marker", "edge_label", "depth_scale",
    "header",
)
TISSUE_KINDS = ("specular", "reflector")
GEOMETRIES = ("fan", "linear")
REFERENCE_SIDE = 480  # sizes below are chosen for a 480x640 frame and scaled with the shorter side
VISIBLE_CHANGE = 8  # grey levels: a smaller difference between image and clean is not visible

# Surnames typed into scans (a benchmark counts which ones OCR can still read after cleaning).
NAMES = ("SMITH", "GARCIA", "MULLER", "NGUYEN", "KOWALSKI", "JOHNSON", "ROSSI", "TANAKA", "OKAFOR", "LARSEN")
_LABELS = ["LT THYROID", "RT LOBE TRANS", "NODULE 2", "CYST", "LIVER", "GB", "RT KIDNEY SAG", "ISTHMUS", "AXILLA"]
_EDGE_LABELS = ["HR", "R", "L", "TIB", "LT", "RT", "A", "S"]
_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)
_COLOURS = [(255, 255, 0), (0, 255, 0), (0, 255, 255), (255, 200, 0), (255, 96, 255)]
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL)


@dataclass
class AnnotatedSample:
    """One annotated scan and its truth; every array is [H, W] (masks uint8 0/255) or [H, W, 3] uint8."""

    image: np.ndarray  # [H, W, 3] RGB with annotations (JPEG-compressed if asked)
    clean: np.ndarray  # [H, W, 3] RGB without annotations (compressed the same way)
    sector_mask: np.ndarray  # the scan area
    annotation_masks: dict[str, np.ndarray]  # kind -> pixels that kind changes (antialiased rims included)
    tissue_masks: dict[str, np.ndarray]  # kind -> bright tissue a cleaner must not mask
    geometry: str  # "fan" or "linear"
    typed_words: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)  # text, (x0, y0, x1, y1)

    def word_mask(self, text: str) -> np.ndarray:
        """[H, W] uint8 0/255: the typed_text pixels of the words typed as `text` (e.g. a surname in NAMES)."""
        inside = np.zeros(self.sector_mask.shape, np.uint8)
        for typed, (x0, y0, x1, y1) in self.typed_words:
            if text in typed.split():
                inside[max(y0, 0):y1, max(x0, 0):x1] = 255
        return inside & self.annotation_masks["typed_text"]

    @property
    def overlay_mask(self) -> np.ndarray:
        """Union of every annotation mask."""
        union = np.zeros(self.sector_mask.shape, np.uint8)
        for mask in self.annotation_masks.values():
            union |= mask
        return union

    @property
    def changed_mask(self) -> np.ndarray:
        """[H, W] uint8 0/255: the annotations plus every pixel they visibly changed (JPEG spreads colour and
        ringing a few pixels around them: masking those is not damage to the scan)."""
        changed = np.abs(self.image.astype(np.int16) - self.clean).max(axis=2) > VISIBLE_CHANGE
        return np.where(changed, 255, 0).astype(np.uint8) | self.overlay_mask


@dataclass(frozen=True)
class _Scan:
    """Where the scan is: a fan (apex, radii, half angle) or a rectangle (x0, y0, x1, y1)."""

    mask: np.ndarray  # [H, W] uint8 0/255
    fan: _Fan | None = None
    box: tuple[int, int, int, int] | None = None

    def edge(self, side: int, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Point on the left (side -1) or right (+1) edge at depth fraction t, and its outward unit normal."""
        if self.fan is not None:
            f = self.fan
            r = f.r_near + t * (f.r_far - f.r_near)
            point = np.array([f.apex_x + side * r * np.sin(f.half_angle), f.apex_y + r * np.cos(f.half_angle)])
            return point, np.array([side * np.cos(f.half_angle), -np.sin(f.half_angle)])
        x0, y0, x1, y1 = self.box
        return np.array([x1 if side > 0 else x0, y0 + t * (y1 - y0)], float), np.array([side, 0.0])

    def top(self) -> tuple[float, float, float]:
        """Centre x, y of the probe face and the depth of the scan in pixels."""
        if self.fan is not None:
            f = self.fan
            return f.apex_x, f.apex_y + f.r_near, f.r_far - f.r_near
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, float(y0), float(y1 - y0)

    def inner_points(self, rng: np.random.Generator, n: int, margin: int) -> np.ndarray:
        """n random points [n, 2] (x, y) at least `margin` pixels inside the scan."""
        inner = cv2.erode(self.mask, np.ones((2 * margin + 1,) * 2, np.uint8))
        ys, xs = np.nonzero(inner if inner.any() else self.mask)
        pick = rng.integers(len(xs), size=n)
        return np.stack([xs[pick], ys[pick]], axis=1).astype(float)


class _Layers:
    """Coverage layers ([H, W] uint8, 255 = opaque) per (kind, colour), composited in the order made."""

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.kind = "header"
        self.layers: dict[tuple[str, tuple[int, int, int]], np.ndarray] = {}
        self.words: list[tuple[str, tuple[int, int, int, int]]] = []  # typed text and its box, shadow included

    def __call__(self, colour: tuple[int, int, int]) -> np.ndarray:
        """The layer of the current kind in `colour` (drawn into with value 255)."""
        return self.layers.setdefault((self.kind, tuple(int(c) for c in colour)), np.zeros(self.shape, np.uint8))

    def composite(self, clean: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Alpha-blend every layer over clean [H, W, 3]; returns the image and one mask per kind."""
        image = clean.copy()
        masks = {kind: np.zeros(self.shape, np.uint8) for kind in ANNOTATION_KINDS}
        for (kind, colour), coverage in self.layers.items():
            ys, xs = np.nonzero(coverage)
            alpha = coverage[ys, xs].astype(np.float32)[:, None] / 255
            pixels = image[ys, xs].astype(np.float32)
            image[ys, xs] = np.round(pixels + alpha * (np.asarray(colour, np.float32) - pixels)).astype(np.uint8)
            masks[kind][ys, xs] = 255
        changed = (image != clean).any(axis=2)  # e.g. a black shadow on black background changes nothing
        for mask in masks.values():
            mask[~changed] = 0
        return image, masks


@dataclass(frozen=True)
class _Style:
    """How one scanner draws: text size and stroke width, colours, black shadows."""

    scale: float  # pixels per pixel of a 480-pixel-high frame
    font_scale: float
    thick: int
    palette: tuple[tuple[int, int, int], ...]
    shadow: bool

    def colour(self, rng: np.random.Generator) -> tuple[int, int, int]:
        return self.palette[int(rng.integers(len(self.palette)))]

    def px(self, value: float) -> int:
        """A length given for a 480-pixel frame, in this image's pixels (at least 1)."""
        return max(1, int(round(value * self.scale)))


def _sample_style(rng: np.random.Generator, side: int, color: bool) -> _Style:
    scale = side / REFERENCE_SIDE
    grey = int(rng.integers(160, 231))  # dim grey text is common and the hardest contrast over speckle
    palette = [_WHITE, _WHITE, (grey, grey, grey)] + (_COLOURS if color else [])
    thick = 2 if scale >= 1.2 and rng.random() < 0.5 else 1
    return _Style(scale, max(0.3, rng.uniform(0.35, 0.55) * scale), thick, tuple(palette), bool(rng.random() < 0.4))


def _font(rng: np.random.Generator, style: _Style) -> tuple[int, float]:
    """A Hershey font and the scale that gives this style's letter height (PLAIN draws smaller)."""
    font = int(rng.choice(_FONTS))
    return font, style.font_scale * (1.5 if font == cv2.FONT_HERSHEY_PLAIN else 1.0)


def _put_text(layers: _Layers, style: _Style, text: str, org: np.ndarray, colour: tuple[int, int, int],
              font: tuple[int, float]) -> None:
    """Draw text with its baseline-left at org, with a black shadow if the style has one."""
    x, y = int(round(org[0])), int(round(org[1]))
    if style.shadow:
        cv2.putText(layers(_BLACK), text, (x + 1, y + 1), *font, 255, style.thick, cv2.LINE_AA)
    cv2.putText(layers(colour), text, (x, y), *font, 255, style.thick, cv2.LINE_AA)


def _text_size(text: str, style: _Style, font: tuple[int, float]) -> tuple[int, int, int]:
    """Width, height above the baseline and depth below it, pixels."""
    (w, h), base = cv2.getTextSize(text, *font, style.thick)
    return w, h, base


def _cross(layer: np.ndarray, centre: np.ndarray, arm: int, diagonal: bool, thick: int) -> None:
    x, y = int(round(centre[0])), int(round(centre[1]))
    for dx, dy in ([(arm, arm), (arm, -arm)] if diagonal else [(arm, 0), (0, arm)]):
        cv2.line(layer, (x - dx, y - dy), (x + dx, y + dy), 255, thick, cv2.LINE_AA)


def _dots(layer: np.ndarray, start: np.ndarray, end: np.ndarray, spacing: float, radius: int, dash: int = 0) -> None:
    """Dots (dash 0) or dashes `dash` pixels long every `spacing` pixels from start to end."""
    length = float(np.hypot(*(end - start)))
    if length < 1:
        return
    direction = (end - start) / length
    for d in np.arange(spacing / 2, length - spacing / 4, spacing):
        p = start + d * direction
        if dash:
            a, b = p - direction * dash / 2, p + direction * dash / 2
            cv2.line(layer, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 255, radius, cv2.LINE_AA)
        else:
            cv2.circle(layer, tuple(np.round(p).astype(int)), radius, 255, -1, cv2.LINE_AA)


# ---------------------------------------------------------------- annotations inside the scan


def _draw_typed_text(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """One to three words typed over the image; a patient name in half of the images."""
    words = [str(rng.choice(_LABELS)) for _ in range(int(rng.integers(1, 3)))]
    if rng.random() < 0.5:
        words.append(f"{rng.choice(NAMES)} {chr(int(rng.integers(65, 91)))}")
    for word, centre in zip(words, scan.inner_points(rng, len(words), style.px(30))):
        colour, font = style.colour(rng), _font(rng, style)
        w, h, base = _text_size(word, style, font)
        org = centre + (-w / 2, h / 2)
        if rng.random() < 0.2:  # a dark label box behind the text
            x, y, pad = int(round(org[0])), int(round(org[1])), style.px(3)
            cv2.rectangle(layers((24, 24, 24)), (x - pad, y - h - pad), (x + w + pad, y + base + pad), 255, -1)
        _put_text(layers, style, word, org, colour, font)
        x, y, rim = int(round(org[0])), int(round(org[1])), style.thick + 2  # antialiasing and the shadow's offset
        layers.words.append((word, (x - rim, y - h - rim, x + w + rim, y + base + rim)))


def _draw_caliper_pairs(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """One or two measurements: '+'/'x' ends joined by dots or dashes, an end number beside each end."""
    pairs = scan.inner_points(rng, 4, style.px(20)).reshape(2, 2, 2)
    for k, (a, b) in enumerate(pairs[: int(rng.integers(1, 3))]):
        length = float(np.hypot(*(b - a)))
        if length < style.px(25):
            continue
        colour = style.colour(rng)
        layer = layers(colour)
        arm, diagonal = style.px(rng.uniform(3, 6)), bool(rng.random() < 0.4)
        for end in (a, b):
            _cross(layer, end, arm, diagonal, style.thick)
        kind = rng.random()
        direction = (b - a) / length
        inner_a, inner_b = a + direction * (arm + 2), b - direction * (arm + 2)
        if kind < 0.6:
            _dots(layer, inner_a, inner_b, style.px(rng.uniform(4, 8)), 1)
        elif kind < 0.8:
            _dots(layer, inner_a, inner_b, style.px(rng.uniform(6, 10)), 1, dash=style.px(3))
        if rng.random() < 0.5:
            _put_text(layers, style, str(k + 1), b + (arm + 2, -arm), colour, (cv2.FONT_HERSHEY_SIMPLEX,
                                                                               style.font_scale))


def _draw_crosses(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    layer = layers(style.colour(rng))
    diagonal = bool(rng.random() < 0.4)
    for point in scan.inner_points(rng, int(rng.integers(1, 5)), style.px(15)):
        _cross(layer, point, style.px(rng.uniform(3, 7)), diagonal, style.thick)


def _draw_cursor_line(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """A dotted cursor from the probe face to the bottom of the scan, along a beam for a fan."""
    x, y, depth = scan.top()
    if scan.fan is not None:
        theta = rng.uniform(-0.7, 0.7) * scan.fan.half_angle
        direction = np.array([np.sin(theta), np.cos(theta)])
        start = np.array([scan.fan.apex_x, scan.fan.apex_y]) + scan.fan.r_near * direction
    else:
        x0, _, x1, _ = scan.box
        start, direction = np.array([rng.uniform(x0 + 10, x1 - 10), y]), np.array([0.0, 1.0])
    end = start + direction * depth * rng.uniform(0.6, 0.98)
    layer = layers(style.colour(rng))
    _dots(layer, start, end, style.px(rng.uniform(4, 9)), style.thick)
    if rng.random() < 0.5:  # a Doppler sample gate: two short bars across the cursor
        mid, normal = start + (end - start) * rng.uniform(0.3, 0.8), np.array([-direction[1], direction[0]])
        for offset in (-style.px(4), style.px(4)):
            a, b = mid + direction * offset - normal * style.px(6), mid + direction * offset + normal * style.px(6)
            cv2.line(layer, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 255, style.thick, cv2.LINE_AA)


def _draw_roi_box(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """A rectangle, a fan-shaped box (two beams and two arcs), or only a rectangle's corners."""
    layer = layers(style.colour(rng))
    if scan.fan is not None and rng.random() < 0.5:
        f = scan.fan
        t0, t1 = sorted(rng.uniform(-0.8, 0.8, 2) * f.half_angle)
        r0 = f.r_near + rng.uniform(0.05, 0.4) * (f.r_far - f.r_near)
        r1 = r0 + rng.uniform(0.25, 0.5) * (f.r_far - f.r_near)
        r1 = min(r1, f.r_far - 4)
        centre = (int(round(f.apex_x * 16)), int(round(f.apex_y * 16)))
        for r in (r0, r1):
            axes = (int(round(r * 16)),) * 2
            cv2.ellipse(layer, centre, axes, 90, -np.rad2deg(t1), -np.rad2deg(t0), 255, style.thick, cv2.LINE_AA, 4)
        for t in (t0, t1):
            d = np.array([np.sin(t), np.cos(t)])
            a, b = np.array([f.apex_x, f.apex_y]) + r0 * d, np.array([f.apex_x, f.apex_y]) + r1 * d
            cv2.line(layer, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 255, style.thick, cv2.LINE_AA)
        return
    (x0, y0), (x1, y1) = np.sort(scan.inner_points(rng, 2, style.px(20)), axis=0).astype(int)
    if x1 - x0 < style.px(20) or y1 - y0 < style.px(15):
        x1, y1 = x0 + style.px(60), y0 + style.px(40)
    if rng.random() < 0.7:
        cv2.rectangle(layer, (x0, y0), (x1, y1), 255, style.thick, cv2.LINE_AA)
        return
    arm = style.px(8)
    for cx, cy, sx, sy in ((x0, y0, 1, 1), (x1, y0, -1, 1), (x0, y1, 1, -1), (x1, y1, -1, -1)):
        cv2.line(layer, (cx, cy), (cx + sx * arm, cy), 255, style.thick, cv2.LINE_AA)
        cv2.line(layer, (cx, cy), (cx, cy + sy * arm), 255, style.thick, cv2.LINE_AA)


def _draw_logo(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """A circled letter just inside or across the upper corner of the scan (left or right)."""
    side = -1 if rng.random() < 0.7 else 1
    point, normal = scan.edge(side, rng.uniform(0.0, 0.1))
    centre = point + normal * style.px(rng.uniform(-8, 6)) + np.array([0, style.px(6)])
    radius = style.px(rng.uniform(7, 11))
    c = (int(round(centre[0])), int(round(centre[1])))
    if rng.random() < 0.6:  # a filled disk in a flat dark grey or brand colour, a lighter ring
        fill = (60, 60, 60) if rng.random() < 0.6 else (120, 50, 40)
        cv2.circle(layers(fill), c, radius, 255, -1, cv2.LINE_AA)
    cv2.circle(layers(style.colour(rng)), c, radius, 255, 1, cv2.LINE_AA)
    letter = str(rng.choice(["P", "M", "L", "R"]))
    scale = radius / 14
    (w, h), _ = cv2.getTextSize(letter, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(layers(_WHITE), letter, (c[0] - w // 2, c[1] + h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, style.thick), cv2.LINE_AA)


def _draw_body_marker(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """Breast pictogram: a circle, a dot for the nipple and a thick bar for the probe, low in the scan."""
    side = -1 if rng.random() < 0.5 else 1
    point, normal = scan.edge(side, rng.uniform(0.75, 0.95))
    radius = style.px(rng.uniform(9, 15))
    centre = point - normal * (radius + style.px(rng.uniform(0, 20)))
    layer = layers(style.colour(rng))
    c = (int(round(centre[0])), int(round(centre[1])))
    cv2.circle(layer, c, radius, 255, 1, cv2.LINE_AA)
    cv2.circle(layer, c, max(1, radius // 6), 255, -1, cv2.LINE_AA)
    angle = rng.uniform(0, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)]) * radius * 0.7
    offset = np.array([-np.sin(angle), np.cos(angle)]) * radius * rng.uniform(-0.5, 0.5)
    a, b = centre + offset - d, centre + offset + d
    cv2.line(layer, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 255, style.px(3), cv2.LINE_AA)


def _draw_edge_labels(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """One or two short labels placed across a scan edge (half inside, half outside)."""
    for _ in range(int(rng.integers(1, 3))):
        side = -1 if rng.random() < 0.5 else 1
        point, normal = scan.edge(side, rng.uniform(0.2, 0.8))
        text, font = str(rng.choice(_EDGE_LABELS)), _font(rng, style)
        w, h, _ = _text_size(text, style, font)
        org = point + normal * style.px(rng.uniform(-6, 2)) - np.array([w / 2, -h / 2])
        _put_text(layers, style, text, org, style.colour(rng), font)


def _draw_depth_scale(rng: np.random.Generator, layers: _Layers, scan: _Scan, style: _Style) -> None:
    """Marks every centimetre along one edge (ticks or dots, inside or across it) and numbers every few cm."""
    side = 1 if rng.random() < 0.7 else -1
    _, _, depth = scan.top()
    cm = depth / rng.uniform(4, 16)
    inside = style.px(rng.uniform(2, 10)) * (1 if rng.random() < 0.6 else -1)  # >0: into the scan
    colour, font = style.colour(rng), (cv2.FONT_HERSHEY_SIMPLEX, style.font_scale)
    layer = layers(colour)
    ticks = rng.random() < 0.5
    every = int(rng.choice([1, 5])) if cm < style.px(20) else 1
    minus = rng.random() < 0.5
    for k in range(1, int(depth / cm) + 1):
        point, normal = scan.edge(side, k * cm / depth)
        p = point - normal * inside
        if ticks:
            a, b = p, p - normal * style.px(5)
            cv2.line(layer, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 255, style.thick, cv2.LINE_AA)
        else:
            cv2.circle(layer, tuple(np.round(p).astype(int)), max(1, style.thick), 255, -1, cv2.LINE_AA)
        if k % every == 0 and (every > 1 or k % 2 == 0 or depth / cm < 8):
            text = f"-{k}" if minus else str(k)
            org = p - normal * style.px(9) - np.array([style.px(6) if side < 0 else 0, -style.px(4)])
            if side < 0:
                org = org - np.array([_text_size(text, style, font)[0], 0])
            _put_text(layers, style, text, org, colour, font)


def _draw_header(rng: np.random.Generator, layers: _Layers, style: _Style) -> None:
    """Scanner text in the four image corners (institution, ID, date, settings)."""
    h, w = layers.shape
    font = int(rng.choice(_FONTS[:3]))
    margin = style.px(6)
    colour = _WHITE if rng.random() < 0.7 else style.palette[2]
    for corner, lines in _random_texts(rng).items():
        (_, line_h), base = cv2.getTextSize("Ag", font, style.font_scale, style.thick)
        step = line_h + base + 2
        for i, text in enumerate(lines):
            text_w = cv2.getTextSize(text, font, style.font_scale, style.thick)[0][0]
            x = margin if corner.endswith("left") else w - margin - text_w
            y = margin + line_h + i * step if corner.startswith("top") else h - margin - base - (len(lines) - 1 - i) * step
            cv2.putText(layers(colour), text, (x, y), font, style.font_scale, 255, style.thick, cv2.LINE_AA)


_DRAWERS = {  # kind -> (drawer, probability an image has it)
    "typed_text": (_draw_typed_text, 0.8),
    "caliper": (_draw_caliper_pairs, 0.7),
    "cross": (_draw_crosses, 0.4),
    "dotted_line": (_draw_cursor_line, 0.35),
    "roi_box": (_draw_roi_box, 0.4),
    "logo": (_draw_logo, 0.6),
    "body_marker": (_draw_body_marker, 0.35),
    "edge_label": (_draw_edge_labels, 0.5),
    "depth_scale": (_draw_depth_scale, 0.7),
}


def _draw_annotations(rng: np.random.Generator, clean: np.ndarray, scan: _Scan, color: bool
                      ) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple[str, tuple[int, int, int, int]]]]:
    h, w = clean.shape[:2]
    layers = _Layers(h, w)
    style = _sample_style(rng, min(h, w), color)
    layers.kind = "header"
    _draw_header(rng, layers, style)
    for kind, (drawer, probability) in _DRAWERS.items():
        if rng.random() < probability:
            layers.kind = kind
            drawer(rng, layers, scan, style)
    return *layers.composite(clean), layers.words


# ---------------------------------------------------------------- tissue that looks like annotation


def _confounders(rng: np.random.Generator, sector: np.ndarray, side: int, horizontal: bool
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Echogenicity [H, W] float32 of bright interfaces and point reflectors inside `sector`, and their masks.

    Interfaces are straight bright lines a pixel or two thick (before the point-spread function),
    nearly horizontal for a linear probe; reflectors are small bright disks, some in clusters.
    Amplitudes (10-40x ordinary tissue) bring them close to saturation after log compression.
    """
    h, w = sector.shape
    echo = np.zeros((h, w), np.float32)
    masks = {kind: np.zeros((h, w), np.uint8) for kind in TISSUE_KINDS}
    scan = _Scan(sector)
    scale = side / REFERENCE_SIDE
    for centre in scan.inner_points(rng, int(rng.integers(1, 4)), max(2, int(10 * scale))):
        angle = rng.uniform(-0.14, 0.14) if horizontal else rng.uniform(-0.5, 0.5)
        half = rng.uniform(0.15, 0.45) * w
        d = np.array([np.cos(angle), np.sin(angle)]) * half
        a, b = tuple(np.round((centre - d) * 16).astype(int)), tuple(np.round((centre + d) * 16).astype(int))
        line = np.zeros((h, w), np.float32)
        thick = int(rng.integers(1, 3))
        cv2.line(line, a, b, 1.0, thick, cv2.LINE_AA, shift=4)
        # Interfaces are not uniform: their strength varies slowly along them.
        strength = rng.uniform(10, 40) * (0.6 + 0.4 * rng.random((1, w)).astype(np.float32))
        echo += cv2.GaussianBlur(line, (0, 0), sigmaX=2.0 * scale, sigmaY=0.6 * scale) * strength
        cv2.line(masks["specular"], a, b, 255, thick + 2, cv2.LINE_8, shift=4)
    n_reflectors = int(rng.integers(3, 12))
    points = scan.inner_points(rng, n_reflectors, max(2, int(8 * scale)))
    cluster = rng.random(n_reflectors) < 0.5  # half of them gather round the first point
    points[cluster] = points[0] + rng.normal(0, 6 * scale, (int(cluster.sum()), 2))
    for x, y in points:
        radius = rng.uniform(0.7, 2.0) * scale
        dot = np.zeros((h, w), np.float32)
        cv2.circle(dot, (int(round(x * 16)), int(round(y * 16))), max(1, int(round(radius * 16))), 1.0, -1,
                   cv2.LINE_AA, shift=4)
        echo += dot * rng.uniform(20, 80)
        cv2.circle(masks["reflector"], (int(round(x)), int(round(y))), int(np.ceil(radius)) + 1, 255, -1)
    for mask in masks.values():
        mask &= sector
    return echo, masks


# ---------------------------------------------------------------- rendering


def _render_linear(anatomy: np.random.Generator, lesion_rng: np.random.Generator, speckle_rng: np.random.Generator,
                   confound_rng: np.random.Generator, h: int, w: int
                   ) -> tuple[np.ndarray, np.ndarray, _Scan, dict[str, np.ndarray]]:
    """Linear-probe scan: a rectangle whose beam space is the image itself; returns gray, sector, scan, tissue masks."""
    x0 = int(round(w * anatomy.uniform(0.06, 0.2)))
    y0, y1 = int(round(h * anatomy.uniform(0.08, 0.14))), int(round(h * anatomy.uniform(0.86, 0.96)))
    x1 = w - x0
    sector = np.zeros((h, w), np.uint8)
    sector[y0:y1, x0:x1] = 255
    # The tissue layers only use the fan's top and depth: a fan whose probe face is the rectangle's top edge.
    layout = _Fan((w - 1) / 2, y0 - 1.0, 1.0, float(y1 - y0), 0.5)
    tissue = _tissue_echogenicity(anatomy, h, w, layout)
    extra, tissue_masks = _confounders(confound_rng, sector, min(h, w), horizontal=True)
    tissue = (tissue + extra)[y0:y1, x0:x1]
    n_depth, n_beams = y1 - y0, x1 - x0
    ring_down = _probe_ring_down(anatomy, n_depth)
    attenuation, tgc = _depth_gain(anatomy, n_depth)
    # A smooth nodule, as calipers measure one.
    radius = lesion_rng.uniform(0.04, 0.1) * min(h, w)
    cx, cy = lesion_rng.uniform(0.25, 0.75) * n_beams, lesion_rng.uniform(0.3, 0.7) * n_depth
    lesion = _rasterise(_lesion_contour(lesion_rng, 0, radius) + (cx, cy), n_depth, n_beams)
    soft = cv2.GaussianBlur(lesion.astype(np.float32) / 255, (0, 0), 0.8)
    echo = _apply_lesion(lesion_rng, 0, tissue + ring_down, soft)
    envelope = _speckle_envelope(speckle_rng, np.sqrt(np.maximum(echo, 0)) * attenuation, min(h, w))
    display = _log_compress(speckle_rng, envelope * tgc)
    gray = np.zeros((h, w), np.uint8)
    gray[y0:y1, x0:x1] = np.round(display * 255).astype(np.uint8)
    return gray, sector, _Scan(sector, box=(x0, y0, x1, y1)), tissue_masks


def _render_fan(anatomy: np.random.Generator, lesion_rng: np.random.Generator, speckle_rng: np.random.Generator,
                confound_rng: np.random.Generator, h: int, w: int
                ) -> tuple[np.ndarray, np.ndarray, _Scan, dict[str, np.ndarray]]:
    """Curvilinear fan through `synthetic`'s scan conversion, with the confounders added to its tissue."""
    tissue_masks: dict[str, np.ndarray] = {}

    def extra_echo(fan: _Fan, sector: np.ndarray) -> np.ndarray:
        echo, masks = _confounders(confound_rng, sector, min(h, w), horizontal=False)
        tissue_masks.update(masks)
        return echo

    label = int(lesion_rng.integers(2))
    gray, _, sector, fan, _, _ = _render_clean(anatomy, lesion_rng, speckle_rng, h, w, label, (0.035, 0.11), None,
                                               extra_echo=extra_echo)
    return gray, sector, _Scan(sector, fan=fan), tissue_masks


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding at quality {quality} failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def generate_annotated(
    seed: int,
    size: int | tuple[int, int] = (480, 640),
    geometry: str | None = None,
    color: bool = True,
    jpeg_quality: int | None = None,
) -> AnnotatedSample:
    """One annotated scan with a truth mask per annotation and tissue kind, deterministic in `seed`.

    size: side or (height, width), at least 64. geometry: 'fan', 'linear' or None (drawn from the
    seed, fan 60%). color: coloured annotations too (else white and grey only). jpeg_quality:
    compress image and clean alike (1-100), as lossy DICOM exports are; None keeps them exact.
    """
    seed = _check_count(seed, "seed")
    h, w = _check_size(size)
    if geometry not in (None, *GEOMETRIES):
        raise ValueError(f"geometry must be one of {GEOMETRIES} or None, got {geometry!r}")
    if jpeg_quality is not None and not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100):
        raise ValueError(f"jpeg_quality must be an int in [1, 100] or None, got {jpeg_quality!r}")
    streams = np.random.SeedSequence([seed, 7]).spawn(5)
    anatomy, lesion_rng, speckle_rng, confound_rng, overlay_rng = (np.random.default_rng(s) for s in streams)
    drawn = "fan" if anatomy.random() < 0.6 else "linear"
    geometry = geometry or drawn
    render = _render_fan if geometry == "fan" else _render_linear
    gray, sector, scan, tissue_masks = render(anatomy, lesion_rng, speckle_rng, confound_rng, h, w)
    clean = np.repeat(gray[..., None], 3, axis=2)
    image, masks, words = _draw_annotations(overlay_rng, clean, scan, color)
    if jpeg_quality is not None:
        image, clean = _jpeg(image, jpeg_quality), _jpeg(clean, jpeg_quality)
    return AnnotatedSample(image, clean, sector, masks, tissue_masks, geometry, words)
