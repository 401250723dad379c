"""The text-detection network (usfmae.cleaning.detector): text the Tesseract path misses, judged on drawn pixels.

Synthetic cases draw a text line with a known pixel mask on a flat band across a linear-probe scan (a
header bar or screen panel the scan area takes in), where the band is too large to be a fill and the
glyphs too dim or too small for the stroke and OCR steps. Real files (../shared/real_us) are judged on
probe boxes read off the image, never on what an OCR build reads (that is the benchmark's job).
"""

import threading

import cv2
import numpy as np
import pytest

from usfmae import netguard
from usfmae.cleaning import CleaningConfig, clean_image
from usfmae.cleaning.detector import detected_text_mask, model_path
from usfmae.cleaning.evaluate import real_us_folder
from usfmae.cleaning.image import to_rgb_uint8
from usfmae.cleaning.strokes import find_strokes
from usfmae.io import iter_frames
from usfmae.testing.annotated import generate_annotated

from helpers import REPO

TEXT = "STUDY 2024-05-17 JONES"


def without_detector() -> CleaningConfig:
    cfg = CleaningConfig()
    cfg.detector.enabled = False
    return cfg


def banded_scan(size: tuple[int, int], text_value: int, band_value: int, font_scale: float):
    """(RGB image, [H, W] bool glyph truth, [H, W] bool scan) of a linear scan at `size` (H, W) with a flat band
    across its full width, a third of the way down, holding TEXT in gray `text_value`."""
    sample = generate_annotated(3, size=(480, 640), geometry="linear")
    image = cv2.resize(sample.clean, size[::-1], interpolation=cv2.INTER_CUBIC)
    scan = cv2.resize(sample.sector_mask, size[::-1], interpolation=cv2.INTER_NEAREST) > 0
    ys, xs = np.nonzero(scan)
    x0, y0 = int(xs.min()), int(ys.min() + 0.3 * (ys.max() - ys.min()))
    band_h = int(0.08 * size[0])
    image[y0 : y0 + band_h, x0 : xs.max()] = band_value
    ink = np.zeros(size, np.uint8)
    cv2.putText(ink, TEXT, (x0 + 4, y0 + int(0.75 * band_h)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255,
                max(1, int(1.5 * font_scale)), cv2.LINE_AA)
    alpha = ink[..., None] / 255.0
    image = (image * (1 - alpha) + text_value * alpha).astype(np.uint8)
    return image, ink > 127, scan


CASES = {
    "dim low-contrast glyphs, 480x640": ((480, 640), 120, 50, 0.45),
    "small grey text on a 1920x1080 capture": ((1080, 1920), 140, 30, 0.7),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_detector_masks_text_the_tesseract_path_misses(case):
    image, truth, scan = banded_scan(*CASES[case])
    before = clean_image(image, without_detector()).mask > 0
    after = clean_image(image, CleaningConfig()).mask > 0
    assert np.count_nonzero(before & truth) < 0.2 * np.count_nonzero(truth), "the other steps already find it"
    assert np.count_nonzero(after & truth) > 0.9 * np.count_nonzero(truth)
    # Nothing of the scan more than 3 px from a glyph is added (the band and the tissue stay).
    far = (cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0) & scan
    assert np.count_nonzero(after & ~before & far) < 1e-3 * np.count_nonzero(scan)


def test_scans_without_text_get_no_mask():
    cfg = CleaningConfig()
    for seed in range(40, 44):
        sample = generate_annotated(seed, size=(360, 480))
        sharp = find_strokes(sample.clean, cfg.strokes).sharp
        assert not detected_text_mask(sample.clean, sample.sector_mask > 0, sharp, cfg.detector).any(), seed


def test_weights_ship_in_the_wheel_and_nothing_is_downloaded(tmp_path, monkeypatch):
    path = model_path()
    assert path.is_file() and "site-packages" in path.parts, path
    log = tmp_path / "blocked.jsonl"
    monkeypatch.setenv(netguard.LOG_ENV, str(log))
    image, truth, _ = banded_scan(*CASES["dim low-contrast glyphs, 480x640"])
    masks = []
    netguard.install()
    try:  # a new thread builds its own onnxruntime session from the file, under the guard
        worker = threading.Thread(target=lambda: masks.append(clean_image(image, CleaningConfig()).mask))
        worker.start()
        worker.join()
    finally:
        netguard.uninstall()
    assert masks and np.count_nonzero((masks[0] > 0) & truth) > 0.9 * np.count_nonzero(truth)
    assert not log.exists() or netguard.read_log(log) == []


FOLDER, REASON = real_us_folder(REPO)
real = pytest.mark.skipif(FOLDER is None, reason=REASON)


def first_frame(name: str) -> np.ndarray:
    return to_rgb_uint8(next(iter(iter_frames(FOLDER / name))).image)


@real
def test_header_text_inside_the_aloka_scan_area_is_masked():
    """The Aloka dual view's "*WESTWAY MEDICAL* / ULTRASOUND" header sits on a grey bar the scan area takes in."""
    image = first_frame("dicomtestfiles__gdcm-US-ALOKA-16.dcm")
    result = clean_image(image, CleaningConfig())
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for x0, y0, x1, y1 in ((60, 0, 250, 11), (100, 11, 215, 23)):  # the two header lines
        crop = gray[y0:y1, x0:x1]
        glyphs = crop > np.median(crop) + 40
        assert glyphs.sum() > 100 and result.scan[y0:y1, x0:x1][glyphs].all()
        assert (result.mask[y0:y1, x0:x1][glyphs] > 0).all()
        assert result.image[y0:y1, x0:x1].max() < 80  # no glyph left brighter than the bar around it


@real
@pytest.mark.parametrize("name", ["covidus__Vir_prospective_file1.mp4", "covidus__Reg_pat1Image_132943.mpeg"])
def test_lung_cines_without_text_gain_no_mask(name):
    for frame in list(iter_frames(FOLDER / name))[:3]:
        image = to_rgb_uint8(frame.image)
        with_detector = clean_image(image, CleaningConfig()).mask
        assert np.array_equal(with_detector, clean_image(image, without_detector()).mask), frame.index
