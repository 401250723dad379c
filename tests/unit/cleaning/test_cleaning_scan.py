"""Annotations inside the scan area, and tissue that looks like them, on usfmae.testing.annotated scans.

One test per failure class of real scanner data (issue 13), on synthetic scans with pixel truth,
so they run without the real files. Seeds here are held out: the cleaner was developed on 0-29.
"""

import cv2
import numpy as np
import pytest

from usfmae.cleaning import CleaningConfig, clean_image
from usfmae.cleaning.evaluate import AnnotationTally
from usfmae.testing.annotated import generate_annotated

SIZE = (360, 480)
SEEDS = range(500, 508)


@pytest.fixture(scope="module")
def cleaned():
    """(sample, fast result) for a few held-out scans, fans and linear probes mixed."""
    pairs = []
    for seed in SEEDS:
        sample = generate_annotated(seed, size=SIZE)
        pairs.append((sample, clean_image(sample.image, CleaningConfig())))
    return pairs


@pytest.fixture(scope="module")
def scores(cleaned):
    tally = AnnotationTally()
    for sample, result in cleaned:
        tally.add(result.mask, sample)
    return tally.summary()


def test_annotations_inside_the_scan_are_found(scores):
    assert scores["recall_in"] > 0.75
    assert scores["recall_out"] > 0.9


@pytest.mark.parametrize("kind", ["caliper", "cross", "dotted_line", "typed_text"])
def test_each_kind_inside_the_scan_is_found(scores, kind):
    assert scores[f"recall_in/{kind}"] > 0.6, kind


def test_tissue_is_left_alone(scores):
    assert scores["precision_in_tolerant"] > 0.95
    assert scores["tissue_masked/specular"] < 0.02  # bright interfaces are not erased as lines
    assert scores["tissue_masked/reflector"] < 0.05


def test_fast_finds_more_in_the_scan_than_the_reference(cleaned, scores):
    tally = AnnotationTally()
    for sample, _ in cleaned[:4]:
        tally.add(clean_image(sample.image, CleaningConfig(mode="reference")).mask, sample)
    assert scores["recall_in"] > tally.summary()["recall_in"] + 0.1


@pytest.mark.parametrize("seed,name", [(501, "KOWALSKI"), (505, "TANAKA")])
def test_typed_name_is_masked_and_inpainted(seed, name):
    """Held-out 480x640 scans with a surname typed over the tissue (white; green), judged on the generator's
    pixel truth: every pixel of the name is masked and repainted from the tissue around it. What OCR still reads
    depends on the tesseract build; benchmarks/cleaning.py counts that ("names_read")."""
    sample = generate_annotated(seed, size=(480, 640))
    assert any(name in typed.split() for typed, _ in sample.typed_words)
    name_px = sample.word_mask(name) > 0
    assert name_px.sum() > 200
    result = clean_image(sample.image)
    assert (result.mask[name_px] > 0).mean() > 0.98
    assert (result.image[name_px] != sample.image[name_px]).any(axis=1).mean() > 0.98  # repainted, not kept
    clean, typed, inpainted = (a[name_px].astype(np.float32).mean(axis=0) for a in (sample.clean, sample.image,
                                                                                    result.image))
    assert np.abs(typed - clean).max() > 40  # the name stands out from the tissue under it ...
    assert np.abs(inpainted - clean).max() < 20  # ... and after cleaning no longer does


def test_jpeg_compressed_scans_keep_precision():
    tally = AnnotationTally()
    for seed in (600, 601, 602):
        sample = generate_annotated(seed, size=SIZE, jpeg_quality=75)
        tally.add(clean_image(sample.image).mask, sample)
    scores = tally.summary()
    assert scores["recall_in"] > 0.5 and scores["precision_in_tolerant"] > 0.9


def test_drawn_line_is_masked_but_a_tissue_interface_is_not():
    """A white 1-px line and a PSF-blurred bright interface of the same length over speckle."""
    rng = np.random.default_rng(0)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, (200, 300)).astype(np.float32), (0, 0), 1.5, sigmaY=0.8)
    gray = np.clip(60 * speckle / speckle.mean(), 0, 255)
    interface = np.zeros_like(gray)
    cv2.line(interface, (40, 60), (260, 64), 1.0, 1)
    gray += 170 * cv2.GaussianBlur(interface, (0, 0), sigmaX=2.0, sigmaY=1.2) / 0.26
    image = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    cv2.line(image, (40, 140), (260, 140), (255, 255, 255), 1)
    result = clean_image(image, CleaningConfig())
    drawn = result.mask[138:143, 50:250] > 0
    tissue = result.mask[56:69, 50:250] > 0
    assert drawn.mean() > 0.5 and tissue.mean() < 0.02
