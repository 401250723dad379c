"""Annotation removal: `clean_image` / `clean_images` run the reference (paper) or the fast pipeline.

The fast pipeline, each change behind a switch in `CleaningConfig`:
    sector       find the scan fan/rectangle; everything outside is filled with black (no inpainting)
    colour       the reference's HSV k-means, fitted on a pixel sample, inside the sector only
    strokes      one map of thin bright overlay strokes (and which look drawn) for the steps below
    text         candidate text regions not already masked -> one OCR call on a mosaic of them
                 (one call per batch of images; none when no image has candidates)
    detector     text regions a detection network (PP-OCRv5 DB, onnxruntime) finds inside the sector:
                 their glyph pixels (text the stroke tests or Tesseract miss)
    grayscale    the reference's edge contours, kept only where they hold bright overlay strokes
    lines        long thin straight lines with a drawn profile (boxes, cursors, bars), not tissue
    dots         dotted and dashed lines: chains of alike, evenly spaced dots
    crosses      measurement crosses and caliper ends ('+', 'x')
    fills        flat-coloured shapes (logo disks, label boxes, grey bars) and what they hold
    border       marks on the black margin between the scan and the sector's edge
    morphology   closing, small enclosed holes filled, then (instead of the reference's opening,
                 which erases thin strokes) growth
    inpaint      Navier-Stokes inpainting of the masked pixels inside the sector
"""

import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from usfmae.cleaning import border, colour, contours, crosses, detector, dots, fills, lines, reference, text
from usfmae.cleaning.config import CleaningConfig, MorphologyConfig, size_scale
from usfmae.cleaning.image import to_rgb_uint8
from usfmae.cleaning.reference import clean_reference
from usfmae.cleaning.result import CleanResult, StepLog
from usfmae.cleaning.sector import detect_sector
from usfmae.cleaning.strokes import Strokes, find_strokes


def clean_image(image: np.ndarray, cfg: CleaningConfig | None = None, source: str = "image") -> CleanResult:
    """Remove burned-in text and annotations from one image.

    image: HxWx3 RGB or HxW gray, any integer or float type (see `to_rgb_uint8`). Returns the
    cleaned HxWx3 uint8 RGB image at the input resolution, the HxW uint8 0/255 mask of replaced
    pixels and stats (mask_fraction, ocr_words, ocr_calls, per-step timings in seconds, steps run).
    `source` names the input in error messages (e.g. the file path).
    """
    return clean_images([image], cfg, [source])[0]


def clean_images(
    images: list[np.ndarray], cfg: CleaningConfig | None = None, sources: list[str] | None = None
) -> list[CleanResult]:
    """`clean_image` over a batch. The fast pipeline makes one Tesseract call for the whole batch,
    which spreads the ~0.07 s process start-up over its images (e.g. one Ray `map_batches` batch)."""
    cfg = cfg or CleaningConfig()
    sources = sources or [f"image {i}" for i in range(len(images))]
    if len(sources) != len(images):
        raise ValueError(f"got {len(images)} images but {len(sources)} source names")
    if not cfg.enabled:
        return [passthrough(image, source) for image, source in zip(images, sources)]
    if cfg.mode == "reference":
        return [clean_reference(image, cfg, source) for image, source in zip(images, sources)]
    work = [find_annotations(to_rgb_uint8(image, source), cfg) for image, source in zip(images, sources)]
    if cfg.text.enabled and cfg.text.candidate_regions:
        read_text_of_batch(work, cfg)
    return [finish(item, cfg) for item in work]


def passthrough(image: np.ndarray, source: str) -> CleanResult:
    rgb = to_rgb_uint8(image, source)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    return CleanResult(rgb, mask, StepLog().stats("disabled", mask))


@dataclass(eq=False)
class Work:
    """One image between the steps of the fast pipeline."""

    image: np.ndarray  # HxWx3 uint8 RGB
    region: np.ndarray  # HxW bool, the scan sector (all True when none was found or the step is off)
    mask: np.ndarray  # HxW uint8 0/255, annotation found so far
    candidates: list[text.Box]
    strokes: Strokes  # the stroke map every overlay step shares
    text_strokes: np.ndarray | None  # HxW bool, the drawn strokes of text candidates (masked if they read)
    log: StepLog


def find_annotations(image: np.ndarray, cfg: CleaningConfig) -> Work:
    """Every step before OCR: sector, colour, strokes, text candidates (or full-image OCR if so switched)."""
    log = StepLog()
    region = np.ones(image.shape[:2], bool)
    if cfg.sector.enabled:
        with log.step("sector"):
            sector = detect_sector(image, cfg.sector, cfg.strokes)
            if sector is not None:
                region = sector > 0
    mask = np.zeros(image.shape[:2], np.uint8)
    if cfg.colour.enabled:
        with log.step("colour"):
            mask |= colour.colour_mask(image, region, cfg.colour)
    with log.step("strokes"):
        strokes = find_strokes(image, cfg.strokes)
    candidates, text_strokes = [], None
    if cfg.text.enabled:
        with log.step("text"):
            if cfg.text.candidate_regions:
                candidates, text_strokes = text.find_candidates(strokes, region, cfg.text, already_masked=mask)
            else:
                mask |= reference.text_mask(image, cfg.text, log)
    return Work(image, region, mask, candidates, strokes, text_strokes, log)


def read_text_of_batch(work: list[Work], cfg: CleaningConfig) -> None:
    """One OCR call over all candidates of the batch; its time is shared by the images that had any."""
    start = time.perf_counter()
    grays = [cv2.cvtColor(item.image, cv2.COLOR_RGB2GRAY) for item in work]
    hits, calls = text.read_candidates(grays, [item.candidates for item in work], cfg.text)
    readers = [item for item in work if item.candidates] or work
    share = (time.perf_counter() - start) / len(readers)
    for item, image_hits in zip(work, hits):
        if image_hits:
            item.mask |= text.mask_hits(image_hits, item.text_strokes, cfg.text)
        item.log.ocr_words += len(image_hits)
        if item in readers:
            item.log.timings["text"] = item.log.timings.get("text", 0.0) + share
            item.log.ocr_calls += calls  # calls shared by the batch are counted for each image using them


def scan_steps(item: Work, cfg: CleaningConfig) -> list[tuple[str, bool, Callable[[], np.ndarray]]]:
    """(name, enabled, mask maker) of every step that looks for annotations inside the sector, in order."""
    image, region, strokes = item.image, item.region, item.strokes
    return [
        ("detector", cfg.detector.enabled, lambda: detector.detected_text_mask(image, region, strokes.sharp, cfg.detector)),
        ("grayscale", cfg.grayscale.enabled, lambda: contours.grayscale_mask(image, region, strokes.mask, cfg.grayscale)),
        ("lines", cfg.lines.enabled, lambda: lines.line_mask(strokes, region, cfg.lines)),
        ("dots", cfg.dots.enabled, lambda: dots.dotted_mask(strokes, region, cfg.dots)),
        ("crosses", cfg.crosses.enabled, lambda: crosses.cross_mask(strokes, region, cfg.crosses)),
        ("fills", cfg.fills.enabled,
         lambda: fills.fill_mask(image, strokes.value, region, cfg.sector.background_max, cfg.fills)),
        ("border", cfg.border.enabled and cfg.sector.enabled,  # the margin exists only around a found sector
         lambda: border.island_mask(image, strokes, region, cfg.sector, cfg.strokes, cfg.border)),
    ]


def fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """mask with its enclosed unmasked holes of at most max_area pixels filled (a ring's letter, a glyph's eye)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == 0).astype(np.uint8), 4, cv2.CV_32S)
    x, y, w, h, area = stats.T
    height, width = mask.shape
    enclosed = (x > 0) & (y > 0) & (x + w < width) & (y + h < height) & (area <= max_area)
    enclosed[0] = False
    return np.where(enclosed[labels], 255, mask).astype(np.uint8)


def refine_mask(mask: np.ndarray, cfg: MorphologyConfig) -> np.ndarray:
    """Closing joins broken strokes and small holes are filled; the opening is optional as it erases strokes
    thinner than the kernel."""
    if not cfg.fast_skip_opening:
        mask = reference.refine_mask(mask, cfg)
    else:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((cfg.kernel, cfg.kernel), np.uint8))
    if cfg.max_hole_px:
        mask = fill_small_holes(mask, cfg.max_hole_px * size_scale(mask.shape) ** 2)
    if cfg.grow_px:
        mask = cv2.dilate(mask, np.ones((2 * cfg.grow_px + 1,) * 2, np.uint8))
    return mask


def finish(item: Work, cfg: CleaningConfig) -> CleanResult:
    """Every step after OCR: the in-sector detectors, mask clean-up, outside fill, inpainting."""
    image, region, mask, log = item.image, item.region, item.mask, item.log
    for name, enabled, make in scan_steps(item, cfg):
        if enabled:
            with log.step(name):
                mask |= make()
    if cfg.morphology.enabled:
        with log.step("morphology"):
            mask = refine_mask(mask, cfg.morphology)
    mask[~region] = 0
    scan_mask_fraction = np.count_nonzero(mask) / max(1, np.count_nonzero(region))
    cleaned = image.copy()
    outside_marks = np.zeros_like(mask)
    if cfg.sector.enabled:
        # Outside the scan there is only background and annotation: black it out, no inpainting needed.
        outside_marks[~region & (item.strokes.value > cfg.sector.background_max)] = 255
        cleaned[~region] = 0
    if cfg.inpaint.enabled:
        with log.step("inpaint"):
            cleaned = reference.inpaint(cleaned, mask, cfg.inpaint)
    mask |= outside_marks
    stats = log.stats("fast", mask)
    stats["scan_fraction"] = float(np.count_nonzero(region)) / region.size
    stats["scan_mask_fraction"] = float(scan_mask_fraction)
    return CleanResult(cleaned, mask, stats, None if region.all() else region)
