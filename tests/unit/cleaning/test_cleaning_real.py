"""Cleaning on real scanner files (../shared/real_us, or $USFMAE_REAL_US): one test per failure class of issue 13.

The files stay in ../shared (never copied here); every test skips with the reason when the folder
is absent, as in a user's clone. Probe boxes (x0, y0, x1, y1) point at one annotation of a named
file, read off the image; the cleaner knows nothing about them.
"""

from pathlib import Path

import numpy as np
import pytest

from usfmae.cleaning import CleaningConfig, clean_image
from usfmae.cleaning.evaluate import real_us_folder
from usfmae.io import ReadError, iter_frames, list_inputs

from helpers import REPO

FOLDER, REASON = real_us_folder(REPO)
pytestmark = pytest.mark.skipif(FOLDER is None, reason=REASON)

PALETTE = "orthanc__Implicit-vr-us-palette.dcm"  # Philips: caliper, circled "P" logo
ECHO = "fodicom__DIRW0007.dcm"  # Acuson: "HR" label across the sector edge, dotted edges, bright walls
DOPPLER = "orthanc__TransferSyntaxes_1.2.840.10008.1.2.4.50.dcm"  # ATL: depth numbers "-5", "-10"
GRABBED = "vitalecho__frame_screenshot_W640H480PS60.png"  # frame grabber: circled "P" logo, dotted edge
LINEAR = "dcm4che__YBR_422.dcm"  # Esaote linear probe: bright skin line across the top of the scan
# Lung scans without annotations: a linear H.264 cine, and a convex MPEG-2 cine whose fan corners are
# cut off by the frame.
CONTROLS = ("covidus__Vir_prospective_file1.mp4", "covidus__Reg_pat1Image_132943.mpeg")


def first_frame(name: str) -> np.ndarray:
    return next(iter(iter_frames(FOLDER / name))).image


def readable_files() -> list[Path]:
    """Every input the readers accept (a rejected one is the readers' business, tests/unit/io/test_readers_*)."""
    files = []
    for path in list_inputs(FOLDER):
        try:
            next(iter(iter_frames(path)))
        except (ReadError, StopIteration):
            continue
        files.append(path)
    return files


@pytest.fixture(scope="module")
def first_frames():
    """(name, first frame, fast result) of every readable file."""
    out = []
    for path in readable_files():
        frame = first_frame(path.name)
        out.append((path.name, frame, clean_image(frame, CleaningConfig())))
    return out


def probe_max(image: np.ndarray, box: tuple[int, int, int, int]) -> int:
    x0, y0, x1, y1 = box
    return int(image[y0:y1, x0:x1].max())


def test_everything_outside_the_scan_is_blacked_out(first_frames):
    """Header text (names, dates, settings) sits outside the scan on these files: none of it survives. What an
    OCR pass reads before and after cleaning depends on the tesseract build; benchmarks/cleaning.py counts it."""
    found = 0
    for name, frame, result in first_frames:
        if result.scan is not None:
            found += 1
            assert not result.image[~result.scan].any(), name
    assert found >= len(first_frames) // 2


def test_caliper_and_its_dotted_line_are_removed():
    frame = first_frame(PALETTE)
    caliper = (300, 230, 330, 312)  # two '+' ends and 1-px dots between them, drawn at 255 over tissue
    assert probe_max(frame, caliper) == 255
    assert probe_max(clean_image(frame).image, caliper) < 160


# The grabbed frame's logo is a blurred dark-blue disk with little colour: its letter goes, a faint
# ghost of the disk stays (colour.min_chroma trades it against JPEG colour bleed around marks).
@pytest.mark.parametrize("name,logo,left", [(PALETTE, (344, 86, 372, 110), 80), (GRABBED, (354, 50, 373, 69), 130)])
def test_orientation_logo_is_removed(name, logo, left):
    frame = first_frame(name)
    assert probe_max(frame, logo) > 180
    assert probe_max(clean_image(frame).image, logo) < left


@pytest.mark.parametrize("name,label", [(ECHO, (444, 188, 464, 208)), (DOPPLER, (552, 272, 585, 293))])
def test_sector_edge_label_and_depth_number_are_removed(name, label):
    frame = first_frame(name)
    assert probe_max(frame, label) > 180
    assert probe_max(clean_image(frame).image, label) < 60


@pytest.mark.parametrize("name,interface", [(LINEAR, (200, 80, 790, 88)), (ECHO, (205, 338, 255, 354))])
def test_bright_tissue_interfaces_are_not_masked(name, interface):
    frame = first_frame(name)
    x0, y0, x1, y1 = interface
    assert np.median(frame[y0:y1, x0:x1].max(axis=(0, 2))) > 100  # a bright interface crosses every column
    assert np.mean(clean_image(frame).mask[y0:y1, x0:x1] > 0) < 0.02


@pytest.mark.parametrize("name", CONTROLS)
def test_scan_without_annotations_is_left_alone(name):
    """Nothing to remove: hardly a pixel changes, dim far-field corners cut by the frame edge included."""
    try:
        fractions = [clean_image(frame.image).stats["mask_fraction"] for frame in iter_frames(FOLDER / name)]
    except ReadError as err:
        pytest.skip(f"the readers of this checkout reject it: {err.reason}")
    assert np.mean(fractions) < 0.01 and max(fractions) < 0.06


def test_every_scan_keeps_most_of_its_pixels(first_frames):
    for name, _, result in first_frames:
        assert result.stats["scan_mask_fraction"] < 0.35, name  # colour Doppler is masked too, as in the paper
