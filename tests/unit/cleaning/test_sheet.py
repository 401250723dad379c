"""Contact sheets (usfmae.cleaning.sheet) and `clean_images.py --sheet`: original | mask | cleaned per input."""

import cv2
import numpy as np

from usfmae.cleaning import CleaningConfig, clean_image
from usfmae.cleaning.result import CleanResult
from usfmae.cleaning.sheet import CAPTION_HEIGHT, GAP, INPAINTED, PANEL_WIDTH, SheetBuilder, mask_view, sheet_row
from usfmae.commands import clean_images
from usfmae.testing.corpus import write_cine_avi, write_images
from usfmae.testing.synthetic import generate_ultrasound


def fake_result(shape=(60, 80), scan: bool = True) -> CleanResult:
    mask = np.zeros(shape, np.uint8)
    mask[10:20, 10:20] = 255  # inpainted
    mask[:, 70:] = 255  # beyond the scan: blacked out
    region = np.ones(shape, bool)
    region[:, 70:] = False
    stats = {"mask_fraction": 0.2, "scan_mask_fraction": 100 / region.sum()}
    return CleanResult(np.zeros(shape + (3,), np.uint8), mask, stats, region if scan else None)


def test_mask_view_marks_inpainted_red_and_outside_blue():
    original = np.full((60, 80, 3), 100, np.uint8)
    view = mask_view(original, fake_result())
    assert (view[15, 15] == INPAINTED).all()
    assert view[30, 75, 2] > view[30, 75, 0]  # outside the scan: tinted blue, not red
    assert (view[40, 40] == 50).all()  # elsewhere the original at half brightness
    unscanned = mask_view(original, fake_result(scan=False))
    assert (unscanned[30, 75] == INPAINTED).all()  # without a scan area every masked pixel is red


def test_row_has_three_panels_and_a_caption():
    row = sheet_row(np.zeros((60, 80, 3), np.uint8), fake_result(), "frame 7")
    assert row.shape == (CAPTION_HEIGHT + 60 * PANEL_WIDTH // 80, 3 * PANEL_WIDTH + 2 * GAP, 3)


def test_builder_keeps_few_rows_spread_over_a_long_input():
    builder = SheetBuilder(max_rows=4)
    original, result = np.zeros((60, 80, 3), np.uint8), fake_result()
    for index in range(100):
        builder.add(original, result, f"frame {index}")
        assert len(builder.rows) < 2 * builder.max_rows  # memory stays bounded
    sheet = builder.render()
    row_height = CAPTION_HEIGHT + 60 * PANEL_WIDTH // 80
    assert sheet.shape[0] == 4 * row_height + 3 * GAP
    assert builder.stride > 8  # later frames were sampled sparsely, so rows span the whole input
    assert SheetBuilder().render() is None


def test_real_cleaning_result_renders():
    sample = generate_ultrasound(3, size=(120, 160))
    result = clean_image(sample.image, CleaningConfig())
    builder = SheetBuilder()
    builder.add(sample.image, result, "frame 0")
    sheet = builder.render()
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 3 * PANEL_WIDTH + 2 * GAP
    assert (sheet == INPAINTED).all(axis=2).any() or not (result.mask[result.scan] > 0).any()


def test_clean_images_writes_a_sheet_per_input(tmp_path):
    write_images(tmp_path / "in", 2, 96, seed=11)
    frames = [generate_ultrasound(seed, size=96).image for seed in range(3)]
    write_cine_avi(tmp_path / "in" / "loop.avi", [frames[i // 10] for i in range(30)])  # 30 fps: 3 frames at 3 fps
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert clean_images.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--sheet",
                              "--set", "cleaning.text.enabled=false"]) == 0
    sheets = sorted(p.relative_to(tmp_path / "out" / "sheets").as_posix()
                    for p in (tmp_path / "out" / "sheets").rglob("*.png"))
    assert sheets == ["loop.avi.png", "scan_0000.png.png", "scan_0001.png.png"]  # none for the rejected input
    video = cv2.imread(str(tmp_path / "out" / "sheets" / "loop.avi.png"))
    row_height = CAPTION_HEIGHT + PANEL_WIDTH  # 96x96 frames
    assert video.shape == (3 * row_height + 2 * GAP, 3 * PANEL_WIDTH + 2 * GAP, 3)  # 3 frames at 3 fps
    assert clean_images.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "plain"),
                              "--set", "cleaning.text.enabled=false"]) == 0
    assert not (tmp_path / "plain" / "sheets").exists()  # sheets only when asked for
