"""Contact sheets for reviewing cleaning: one row per frame, original | mask | cleaned.

A person checking a new site's data wants to see in seconds what the cleaner took away. The mask
panel shows the original at half brightness, inpainted pixels in red and everything outside the
scan area (blacked out) tinted blue: a wrongly erased tissue interface stands out as red over
anatomy, a missed label as bright text without red, a scan edge cut off as blue over tissue.
`SheetBuilder` keeps at most `max_rows` rows spread over a long input while its frames stream
past, so memory stays bounded whatever the cine length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from usfmae.cleaning.result import CleanResult

PANEL_WIDTH = 400  # pixels per panel: a caliper stays visible, hundreds of sheets stay small
GAP = 4  # gutter between panels and rows, pixels
GUTTER = 64  # its gray level
CAPTION_HEIGHT = 18
INPAINTED = np.array([255, 0, 0], np.uint8)  # RGB red
OUTSIDE_TINT = np.array([0, 40, 160], np.uint8)  # RGB blue, added to the dimmed outside


def panel(image: np.ndarray, width: int = PANEL_WIDTH) -> np.ndarray:
    """image HxWx3 uint8 resized to `width` (aspect kept)."""
    scale = width / image.shape[1]
    height = max(1, int(round(image.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    return cv2.resize(image, (width, height), interpolation=interpolation)


def mask_view(original: np.ndarray, result: CleanResult) -> np.ndarray:
    """The original at half brightness, outside the scan tinted blue, inpainted pixels red -> HxWx3 uint8."""
    view = original // 2
    masked = result.mask > 0
    if result.scan is not None:
        outside = ~result.scan
        view[outside] = np.minimum(view[outside].astype(np.uint16) + OUTSIDE_TINT, 255).astype(np.uint8)
        masked &= result.scan
    view[masked] = INPAINTED
    return view


def caption(text: str, width: int) -> np.ndarray:
    """A strip CAPTION_HEIGHT x width x 3 with `text` in white on dark gray."""
    strip = np.full((CAPTION_HEIGHT, width, 3), 40, np.uint8)
    cv2.putText(strip, text, (4, CAPTION_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def sheet_row(original: np.ndarray, result: CleanResult, label: str = "") -> np.ndarray:
    """One captioned row: original | mask | cleaned, each PANEL_WIDTH wide. original: HxWx3 uint8 RGB."""
    panels = [panel(original), panel(mask_view(original, result)), panel(result.image)]
    gap = np.full((panels[0].shape[0], GAP, 3), GUTTER, np.uint8)
    body = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    inside = result.stats.get("scan_mask_fraction")
    replaced = f"{100 * inside:.1f}% of the scan inpainted (red)" if inside is not None else (
        f"{100 * result.stats['mask_fraction']:.1f}% inpainted (red)")
    outside = ", outside the scan blacked out (blue)" if result.scan is not None else ""
    text = f"{label}  original | {replaced}{outside} | cleaned".strip()
    return np.concatenate([caption(text, body.shape[1]), body], axis=0)


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Rows (same width) one under another with a gutter between them -> HxWx3 uint8."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    gutter = np.full((GAP, rows[0].shape[1], 3), GUTTER, np.uint8)
    parts = [rows[0]]
    for row in rows[1:]:
        parts += [gutter, row]
    return np.concatenate(parts, axis=0)


@dataclass
class SheetBuilder:
    """Collects rows of a streamed input and keeps at most `max_rows` of them, spread over its length.

    Rows are added in frame order; whenever 2 * max_rows are held, every other one is dropped and
    from then on only every `stride`-th frame is rendered, so a long video ends with rows spread
    over its whole length and at most 2 * max_rows rows in memory.
    """

    max_rows: int = 6
    stride: int = 1
    seen: int = 0
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, original: np.ndarray, result: CleanResult, label: str = "") -> None:
        """Offer one frame (original HxWx3 uint8 RGB and its cleaning result); rendered only if kept."""
        keep = self.seen % self.stride == 0
        self.seen += 1
        if not keep:
            return
        self.rows.append(sheet_row(original, result, label))
        if len(self.rows) >= 2 * self.max_rows:
            self.rows, self.stride = self.rows[::2], self.stride * 2

    def render(self) -> np.ndarray | None:
        """The sheet (HxWx3 uint8 RGB) with at most max_rows evenly spaced rows, or None if no frame came."""
        if not self.rows:
            return None
        picks = np.unique(np.linspace(0, len(self.rows) - 1, min(self.max_rows, len(self.rows))).round().astype(int))
        return stack_rows([self.rows[i] for i in picks])
