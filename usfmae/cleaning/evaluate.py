"""Measures of cleaning quality used by the benchmark and the tests.

`readable_words` is the independent OCR pass: deliberately different from both pipelines' own
OCR (2x upscale, sparse-text segmentation, strict word filter), so a pipeline cannot pass by
fooling the same reader it used to find the text. `second_engine_words` reads with another engine
altogether (RapidOCR: PP-OCRv6 detection and recognition networks, not the cleaner's PP-OCRv5
detector), for the benchmark (optional dependency: `pip install usfmae[bench]`). `date_words` and `identifying_words` pick the
words that matter most among them: dates and times, and words of a DICOM file's identifying
header fields (patient, institution, physicians). `AnnotationTally` pools pixel recall inside and
outside the scan area and precision inside it over `usfmae.testing.annotated` samples.
"""

import functools
import os
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from usfmae.cleaning.ocr import Word, read_words

# Rule: a word is "readable" if it has at least 3 letters/digits and Tesseract's confidence >= 60.
MIN_ALNUM = 3
MIN_CONFIDENCE = 60.0
UPSCALE = 2.0
PSM_SPARSE_TEXT = 11
MIN_SECOND_SCORE = 0.5  # second_engine_words: RapidOCR's recognition score (0-1) of a text line


def readable_words(image: np.ndarray, tesseract_cmd: str = "tesseract", confirm: bool = False) -> list[str]:
    """Words an independent OCR pass still reads. image: HxWx3 RGB or HxW gray, uint8.

    confirm: keep only words read again when the crop around each (its height of margin on every
    side) is read on its own (the same letters and digits, or a run of 3+ of them containing or
    contained in them). Tesseract reads words into
    speckle on a full image (a different word from frame to frame, after any change elsewhere in
    the image); burned-in text reads the same in a crop.
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    enlarged = cv2.resize(gray, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_CUBIC)
    words = [
        w for w in read_words(enlarged, cmd=tesseract_cmd, psm=PSM_SPARSE_TEXT)
        if w.confidence >= MIN_CONFIDENCE and len(re.findall(r"[A-Za-z0-9]", w.text)) >= MIN_ALNUM
    ]
    if confirm:
        words = [w for w in words if read_again(enlarged, w, tesseract_cmd)]
    return [w.text for w in words]


@functools.lru_cache(maxsize=1)
def _rapidocr():
    from rapidocr import RapidOCR  # optional (usfmae[bench]); its wheel ships the networks

    return RapidOCR(params={"Global.log_level": "critical", "EngineConfig.onnxruntime.intra_op_num_threads": 1})


def second_engine_words(image: np.ndarray) -> list[str]:
    """Words RapidOCR (PP-OCRv6) reads in image (HxWx3 RGB or HxW gray, uint8): each word of a text line it
    recognises with score >= 0.5 that has at least 3 letters/digits (the rule of `readable_words`)."""
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    result = _rapidocr()(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    lines = zip(result.txts or (), result.scores or ())
    return [word for text, score in lines if score >= MIN_SECOND_SCORE for word in text.split()
            if len(re.findall(r"[A-Za-z0-9]", word)) >= MIN_ALNUM]


def _letters(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text).upper()


def read_again(enlarged: np.ndarray, word: Word, tesseract_cmd: str = "tesseract") -> bool:
    """Whether the crop around `word` (read on `enlarged`, HxW uint8) reads the same letters and digits."""
    pad = max(word.height, 8)
    y0, x0 = max(0, word.top - pad), max(0, word.left - pad)
    crop = enlarged[y0 : word.top + word.height + pad, x0 : word.left + word.width + pad]
    target = _letters(word.text)
    again = [_letters(w.text) for w in read_words(crop, cmd=tesseract_cmd, psm=PSM_SPARSE_TEXT)]
    # Containment either way: a crop can add a neighbouring word's letters or cut off one of its own.
    return any(len(a) >= MIN_ALNUM and (target in a or a in target) for a in again)


def mask_recall_precision(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pixel recall and precision of a predicted mask against a ground-truth overlay mask (both HxW)."""
    predicted, truth = predicted > 0, truth > 0
    hits = np.count_nonzero(predicted & truth)
    recall = hits / max(1, np.count_nonzero(truth))
    precision = hits / max(1, np.count_nonzero(predicted))
    return recall, precision


def mean_squared_error(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean squared difference of two uint8 images over the pixels in `where` (HxW), 0 if none."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if where is not None:
        diff = diff[where > 0]
    return float(np.mean(diff**2)) if diff.size else 0.0


def psnr_from_mse(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images (inf when identical)."""
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


# ---------------------------------------------------------------- real files

REAL_US_ENV = "USFMAE_REAL_US"


def real_us_folder(repo: str | Path) -> tuple[Path | None, str]:
    """The folder of real ultrasound files (`$USFMAE_REAL_US`, else <repo>/../shared/real_us) and a
    sentence saying where it was looked for; (None, reason) when it is not there (a user's clone)."""
    folder = Path(os.environ.get(REAL_US_ENV) or Path(repo).resolve().parent / "shared" / "real_us")
    if not folder.is_dir():
        return None, f"no real ultrasound files at {folder} (set ${REAL_US_ENV} to a folder of them)"
    return folder, f"real ultrasound files from {folder}"


# ---------------------------------------------------------------- names and dates

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DATE_OR_TIME = re.compile(r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}|\d{1,2}:\d{2}(:\d{2})?")
DAY_MONTH_YEAR = re.compile(r"\d{1,2}(" + "|".join(MONTHS) + r")\d{2,4}")  # "24-MAY-02" without its dashes
# DICOM fields naming a person, a place or a date (values split into words).
IDENTIFYING_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientNames", "InstitutionName", "InstitutionAddress",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "StationName", "AccessionNumber",
)
MIN_IDENTIFIER = 3  # shorter tokens ("MR", "DR") match too much by chance


def date_words(words: list[str]) -> list[str]:
    """Words that are dates, times or month names ("24-MAY-02", "11:51:02", "Jul", "2022/05/20")."""
    found = []
    for word in words:
        token = _letters(word)
        month = token[:3] in MONTHS and len(token) <= 4
        if DATE_OR_TIME.search(word) or month or DAY_MONTH_YEAR.fullmatch(token):
            found.append(word)
    return found


def dicom_identifiers(path: str | Path) -> set[str]:
    """Upper-case words (3+ letters/digits) of a DICOM file's identifying header fields; empty if not DICOM."""
    import pydicom  # only the benchmark and tests need headers

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - any unreadable header simply names nobody
        return set()
    tokens = set()
    for tag in IDENTIFYING_TAGS:
        value = ds.get(tag)
        for part in re.split(r"[\s^,/\\]+", str(value or "")):
            token = _letters(part)
            if len(token) >= MIN_IDENTIFIER:
                tokens.add(token)
    return tokens


def identifying_words(words: list[str], identifiers: set[str]) -> list[str]:
    """Words OCR read that contain one of the header's identifying tokens, or a 4+ character part of one
    (the ID "12975-20-2" is burned in, OCR splits it as "12975")."""
    found = []
    for word in words:
        token = _letters(word)
        if len(token) < MIN_IDENTIFIER:
            continue
        if any(ident in token or (len(token) >= 4 and token in ident) for ident in identifiers):
            found.append(word)
    return found


# ---------------------------------------------------------------- annotated synthetic scans


class AnnotationTally:
    """Pools pixel counts over `usfmae.testing.annotated` samples and their cleaning masks.

    recall per annotation kind inside and outside the scan area (of every pixel an annotation
    changed); precision inside the scan area, strict (mask pixels that are annotation pixels) and
    with a tolerance (also those within `tolerance` px of one, or visibly changed by one: the
    anti-aliased and JPEG halo inpainting is meant to repaint); and the share of each tissue kind
    (bright interfaces, reflectors; farther than `tolerance` from any annotation) that was masked.
    """

    def __init__(self, tolerance: int = 2) -> None:
        self.tolerance = tolerance
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name -> [hits, total]
        self.images = 0

    def _add(self, name: str, hits: int, total: int) -> None:
        self.counts[name][0] += hits
        self.counts[name][1] += total

    def add(self, mask: np.ndarray, sample) -> None:
        """mask: HxW (nonzero = replaced) of one sample (an `AnnotatedSample`)."""
        masked, scan = mask > 0, sample.sector_mask > 0
        truth = sample.overlay_mask > 0
        side = 2 * self.tolerance + 1
        near = (cv2.dilate(truth.astype(np.uint8), np.ones((side, side), np.uint8)) > 0) | (sample.changed_mask > 0)
        for kind, kind_mask in sample.annotation_masks.items():
            kind_mask = kind_mask > 0
            for where, inside in (("in", scan), ("out", ~scan)):
                pixels = kind_mask & inside
                self._add(f"recall_{where}/{kind}", np.count_nonzero(masked & pixels), np.count_nonzero(pixels))
                self._add(f"recall_{where}", np.count_nonzero(masked & pixels), np.count_nonzero(pixels))
        masked_in = masked & scan
        self._add("precision_in", np.count_nonzero(masked_in & truth), np.count_nonzero(masked_in))
        self._add("precision_in_tolerant", np.count_nonzero(masked_in & near), np.count_nonzero(masked_in))
        for kind, kind_mask in sample.tissue_masks.items():
            tissue = (kind_mask > 0) & ~near
            self._add(f"tissue_masked/{kind}", np.count_nonzero(masked & tissue), np.count_nonzero(tissue))
        self._add("scan_masked", np.count_nonzero(masked_in), np.count_nonzero(scan))
        self.images += 1

    def summary(self) -> dict:
        """{name: ratio} (rounded) for every pooled measure; recall per kind only where the kind occurred."""
        return {name: round(hits / total, 4) for name, (hits, total) in sorted(self.counts.items()) if total}
