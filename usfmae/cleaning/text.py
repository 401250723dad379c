"""Fast text step: find candidate text regions, OCR all of them in one Tesseract call, mask what reads.

Burned-in text is drawn as thin bright strokes (`usfmae.cleaning.strokes`); joining nearby
strokes horizontally gives word and line boxes, and letters are told from speckle streaks by
their full brightness and upright strokes. Instead of OCR over the full image (the reference),
the candidate crops are enlarged, binarised (dark text on white, what Tesseract reads best) and
packed into one mosaic, so each image (or each batch of images) costs one small Tesseract call,
or none without candidates.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from usfmae.cleaning.config import TextConfig
from usfmae.cleaning.ocr import Word, read_words
from usfmae.cleaning.strokes import Strokes

# Pixels of a vertical stroke run; letters at 8 px and more have such runs, speckle streaks rarely.
VERTICAL_RUN = 4
# Letters closer than this (pixels) join into one word/line candidate.
LETTER_GAP = 7
# White margin around each crop in the mosaic, and the gap between crops (mosaic pixels).
MOSAIC_MARGIN = 12
# Pixels of context kept around a candidate when it is cropped for OCR.
CROP_PADDING = 3
MOSAIC_MAX_WIDTH = 1600


@dataclass(frozen=True)
class Box:
    """Axis-aligned box, pixel coordinates of the input image."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Placement:
    """Where a candidate's enlarged crop sits in the mosaic."""

    image: int  # index of the image in the batch
    box: Box  # crop in that image (candidate plus padding)
    left: int
    top: int
    scale: float


@dataclass(frozen=True)
class Hit:
    """A word OCR read and the candidate box (input-image coordinates) it lies in."""

    candidate: Box
    text: str


def candidate_boxes(strokes: np.ndarray, value: np.ndarray, sharp: np.ndarray, region: np.ndarray,
                    cfg: TextConfig) -> list[Box]:
    """Word/line boxes of strokes inside `region` (HxW bool), largest first, at most cfg.max_candidates.

    value: HxW uint8 max(R, G, B); sharp: HxW bool drawn-looking stroke pixels (`strokes.Strokes`).
    Letters have vertical strokes; speckle streaks (elongated sideways, the way ultrasound
    resolves tissue) have almost none, so a candidate needs a share of vertical-run pixels. Text
    is drawn in one flat bright value, bright speckle spreads just above the stroke threshold, so
    half of a candidate's strokes must reach cfg.candidate_core_value. Text is drawn with sharp
    edges, tissue (a bright interface broken into letter-sized pieces) is blurred by the
    point-spread function, so a share of the strokes must be sharp.
    """
    height = strokes.shape[0]
    strokes = (strokes & region).astype(np.uint8)
    vertical = cv2.morphologyEx(strokes, cv2.MORPH_OPEN, np.ones((VERTICAL_RUN, 1), np.uint8))
    joined = cv2.dilate(strokes, np.ones((3, LETTER_GAP), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    stroke_px = np.bincount(labels[strokes > 0], minlength=count)  # [count]
    vertical_px = np.bincount(labels[vertical > 0], minlength=count)
    core_px = np.bincount(labels[(strokes > 0) & (value >= cfg.candidate_core_value)], minlength=count)
    sharp_px = np.bincount(labels[(strokes > 0) & sharp], minlength=count)
    max_height = max(cfg.candidate_min_height, cfg.candidate_max_height_fraction * height)
    boxes = []
    for label in range(1, count):
        x, y, w, h, _ = stats[label]
        # The dilation added 1 px above and below; undo it before judging the height.
        plausible_size = cfg.candidate_min_height <= h - 2 <= max_height and 3 * w >= h
        upright = vertical_px[label] >= max(VERTICAL_RUN, cfg.min_vertical_share * stroke_px[label])
        flat_bright = 2 * core_px[label] >= stroke_px[label]  # median stroke value >= core value
        drawn = sharp_px[label] >= cfg.min_sharp_share * stroke_px[label]
        if plausible_size and upright and flat_bright and drawn:
            boxes.append((stroke_px[label], Box(int(x), int(y), int(w), int(h))))
    boxes.sort(key=lambda item: -item[0])
    return [box for _, box in boxes[: cfg.max_candidates]]


def padded(box: Box, pad: int, shape: tuple[int, int]) -> Box:
    """box grown by pad pixels on every side, clipped to an image of `shape` (H, W)."""
    x0, y0 = max(0, box.x - pad), max(0, box.y - pad)
    x1, y1 = min(shape[1], box.x + box.w + pad), min(shape[0], box.y + box.h + pad)
    return Box(x0, y0, x1 - x0, y1 - y0)


def binarised_crop(gray: np.ndarray, box: Box, scale: float) -> np.ndarray:
    """Enlarged crop with the (bright) text black on white. gray: HxW uint8."""
    crop = gray[box.y : box.y + box.h, box.x : box.x + box.w]
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    _, binary = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    return binary


def build_mosaic(
    grays: list[np.ndarray], boxes: list[list[Box]], scale: float
) -> tuple[np.ndarray, list[Placement]]:
    """Pack the enlarged binarised crops of a batch's candidates into rows of one white canvas.

    grays: per image HxW uint8; boxes: per image its candidate boxes. Returns canvas and placements.
    """
    crops = [
        (index, box, binarised_crop(gray, box, scale))
        for index, (gray, image_boxes) in enumerate(zip(grays, boxes))
        for box in image_boxes
    ]
    placements, left, top, row_height = [], MOSAIC_MARGIN, MOSAIC_MARGIN, 0
    for index, box, crop in crops:
        h, w = crop.shape
        if left > MOSAIC_MARGIN and left + w + MOSAIC_MARGIN > MOSAIC_MAX_WIDTH:
            left, top, row_height = MOSAIC_MARGIN, top + row_height + MOSAIC_MARGIN, 0
        placements.append(Placement(index, box, left, top, scale))
        # A gap as wide as the crop is tall keeps Tesseract from merging words of neighbouring crops.
        left += w + max(MOSAIC_MARGIN, h)
        row_height = max(row_height, h)
    width = max(p.left + crop.shape[1] for p, (_, _, crop) in zip(placements, crops)) + MOSAIC_MARGIN
    canvas = np.full((top + row_height + MOSAIC_MARGIN, width), 255, np.uint8)
    for placement, (_, _, crop) in zip(placements, crops):
        h, w = crop.shape
        canvas[placement.top : placement.top + h, placement.left : placement.left + w] = crop
    return canvas, placements


def locate(word: Word, placements: list[Placement]) -> Placement | None:
    """The placement whose crop holds the centre of a word read on the mosaic."""
    cx, cy = word.left + word.width / 2, word.top + word.height / 2
    for p in placements:
        if p.left <= cx < p.left + p.box.w * p.scale and p.top <= cy < p.top + p.box.h * p.scale:
            return p
    return None


def is_real_word(word: Word, cfg: TextConfig) -> bool:
    """Tesseract output worth masking; the fewer letters/digits a word has, the more confidence it needs.

    Short words are what Tesseract invents in speckle; a long word in a candidate that passed the
    brightness tests is text even when stray marks beside it drag its confidence down (">>PWR:").
    """
    alnum = sum(ch.isalnum() for ch in word.text)
    if alnum >= 3:
        return word.confidence >= cfg.long_word_confidence
    if alnum == 2:
        return word.confidence >= cfg.min_confidence
    return alnum == 1 and word.confidence >= cfg.single_char_confidence


def find_candidates(
    strokes: Strokes,
    region: np.ndarray,
    cfg: TextConfig,
    already_masked: np.ndarray | None = None,
) -> tuple[list[Box], np.ndarray]:
    """Padded candidate text boxes touching `region` (HxW bool), and the text strokes to mask if they read.

    Only strokes at cfg.candidate_peak_value or brighter are text strokes: text is drawn near
    full brightness, while the speckle grains that pass the stroke test mostly do not reach it,
    and would otherwise chain letters and speckle into one blob too tall to be a text line.
    Words are built from strokes up to a text line's height beyond the region, so a label across
    the scan's edge ("HR") is read whole. Strokes in `already_masked` (HxW uint8, e.g. coloured
    text the colour step caught) need no OCR. The strokes returned for masking are the sharp
    ones: bright speckle grains beside a word are blurred, and stay.
    """
    text_strokes = strokes.mask & (strokes.value >= cfg.candidate_peak_value)
    if already_masked is not None:
        text_strokes &= already_masked == 0
    shape = strokes.mask.shape
    reach = 2 * int(cfg.candidate_max_height_fraction * shape[0]) + 1
    near_region = cv2.dilate(region.astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0
    boxes = [
        padded(b, CROP_PADDING, shape)
        for b in candidate_boxes(text_strokes, strokes.value, strokes.sharp, near_region, cfg)
        if region[b.y : b.y + b.h, b.x : b.x + b.w].any()
    ]
    return boxes, text_strokes & strokes.sharp


def read_candidates(
    grays: list[np.ndarray], boxes: list[list[Box]], cfg: TextConfig
) -> tuple[list[list[Hit]], int]:
    """OCR every candidate of a batch of images in one Tesseract call.

    grays: per image HxW uint8; boxes: per image its candidates. Returns per image the words read
    (those `is_real_word` accepts) and the number of Tesseract calls made (0 or 1).
    """
    hits: list[list[Hit]] = [[] for _ in grays]
    if not any(boxes):
        return hits, 0
    mosaic, placements = build_mosaic(grays, boxes, cfg.ocr_upscale)
    words = read_words(
        mosaic,
        cmd=cfg.tesseract_cmd,
        language=cfg.language,
        psm=cfg.psm,
        timeout_s=cfg.timeout_s,
        single_thread=cfg.single_thread,
        engine=cfg.engine,
    )
    for word in words:
        placement = locate(word, placements) if is_real_word(word, cfg) else None
        if placement is not None:
            hits[placement.image].append(Hit(placement.box, word.text))
    return hits, 1


def mask_hits(hits: list[Hit], strokes: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """HxW uint8 mask of the candidates OCR read words in.

    strokes: HxW bool text strokes (from `find_candidates`). With cfg.mask_strokes only the strokes
    inside those candidates are masked, grown by cfg.box_padding to cover anti-aliased rims;
    otherwise the whole candidate boxes.
    """
    shape = strokes.shape
    boxes = np.zeros(shape, np.uint8)
    for hit in hits:
        box = padded(hit.candidate, cfg.box_padding, shape)
        boxes[box.y : box.y + box.h, box.x : box.x + box.w] = 255
    if not cfg.mask_strokes or not hits:
        return boxes
    side = 2 * cfg.box_padding + 1
    return cv2.dilate(np.where(strokes, boxes, 0).astype(np.uint8), np.ones((side, side), np.uint8))
