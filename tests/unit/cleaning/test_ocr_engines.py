"""OCR engines: libtesseract in-process (tesserocr) and the tesseract binary read the same words."""

import sys

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from usfmae.cleaning import CleaningConfig, TesseractNotInstalledError, clean_image
from usfmae.cleaning import ocr


@pytest.fixture(scope="module")
def header():
    """The burned-in header of pydicom's real ultrasound JPEG 2000 scan, 2x, gray."""
    image = pydicom.dcmread(get_testdata_file("examples_jpeg2k.dcm")).pixel_array[:60]
    gray = image.max(axis=2)
    return np.ascontiguousarray(np.repeat(np.repeat(gray, 2, axis=0), 2, axis=1))


def test_auto_takes_the_in_process_engine_here_and_the_binary_with_a_timeout():
    assert ocr.resolve_engine("auto") == "api"
    assert ocr.resolve_engine("auto", timeout_s=5.0) == "cli"
    assert ocr.resolve_engine("cli") == "cli"
    with pytest.raises(ValueError, match="engine must be one of"):
        ocr.resolve_engine("gpu")


def iou(a: ocr.Word, b: ocr.Word) -> float:
    w = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    h = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    inter = max(w, 0) * max(h, 0)
    return inter / (a.width * a.height + b.width * b.height - inter)


def test_engines_find_the_same_words_in_the_same_places(header):
    """The in-process Tesseract and the binary (their versions may differ) may spell a word differently, but box
    the same words. Which words a build reads is not asserted: benchmarks/cleaning.py reports that."""
    confident = lambda words: [w for w in words if w.confidence >= 60 and sum(c.isalnum() for c in w.text) >= 3]  # noqa: E731
    api = confident(ocr.read_words(header, psm=11, engine="api"))
    cli = confident(ocr.read_words(header, psm=11, engine="cli"))
    assert len(api) >= 3  # the header holds ~20 words: an engine that reads none would make this vacuous
    for word in cli:
        assert max(iou(word, other) for other in api) > 0.7, word
    for word in api:
        assert max(iou(word, other) for other in cli) > 0.7, word


def test_handle_is_reused_and_blank_images_give_no_words():
    blank = np.zeros((40, 120), np.uint8)
    assert ocr.read_words(blank, psm=11, engine="api") == []
    first = ocr._api_handle("tesseract", "eng", 11)
    ocr.read_words(blank + 255, psm=11, engine="api")
    assert ocr._api_handle("tesseract", "eng", 11) is first


def test_fast_cleaning_gives_the_same_result_with_either_engine():
    image = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm")).pixel_array
    results = {}
    for engine in ("api", "cli"):
        cfg = CleaningConfig(mode="fast")
        cfg = cfg.model_copy(update={"text": cfg.text.model_copy(update={"engine": engine})})
        results[engine] = clean_image(image, cfg)
    assert results["api"].stats["ocr_words"] >= 1
    overlap = np.logical_and(results["api"].mask > 0, results["cli"].mask > 0).sum()
    assert overlap >= 0.9 * max((results["api"].mask > 0).sum(), (results["cli"].mask > 0).sum())


def test_api_without_tesserocr_says_how_to_install(monkeypatch, header):
    monkeypatch.setitem(sys.modules, "tesserocr", None)  # import tesserocr -> ImportError
    ocr._api_problem.cache_clear()
    try:
        with pytest.raises(TesseractNotInstalledError, match="pip install tesserocr"):
            ocr.read_words(header, engine="api")
        assert ocr.resolve_engine("auto") == "cli"  # auto falls back to the binary
    finally:
        ocr._api_problem.cache_clear()


def test_api_without_language_data_names_the_folder(monkeypatch, tmp_path, header):
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    ocr._api_problem.cache_clear()
    ocr.tessdata_dir.cache_clear()
    try:
        with pytest.raises(TesseractNotInstalledError, match=f"no eng.traineddata was found.*{tmp_path}"):
            ocr.read_words(header, engine="api")
    finally:
        ocr._api_problem.cache_clear()
        ocr.tessdata_dir.cache_clear()
