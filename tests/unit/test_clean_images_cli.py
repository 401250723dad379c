"""preprocessing/clean_images.py: cleaned frame, mask and stats for every frame of every input kind."""

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from usfmae.commands import clean_images
from usfmae.io import iter_frames
from usfmae.testing.corpus import write_images, write_mixed_corpus

from helpers import REPO, run


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    """The real CLI (a subprocess) on every input kind, pydicom's ultrasound DICOMs and broken files included."""
    root = tmp_path_factory.mktemp("qa")
    write_mixed_corpus(root / "in", n_images=2, size=96)
    proc = run([sys.executable, REPO / "preprocessing/clean_images.py", "--input", root / "in", "--output",
                root / "out"])
    return root, proc


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_every_frame_gets_clean_image_mask_and_stats_at_original_size(qa):
    root, proc = qa
    expected = {  # input -> frame indices the readers yield (cine and video at 3 fps, volume slices)
        "dicom/examples_ybr_color.dcm": [0, 10, 20], "dicom/examples_jpeg2k.dcm": [0],
        "dicom/examples_palette.dcm": [0], "dicom/examples_rgb_color.dcm": [0],
        "video/loop.avi": [0, 10, 20], "volume/stack.nii.gz": [0, 1, 2, 3], "images/scan_0000.png": [0],
    }
    for rel, indices in expected.items():
        frames = list(iter_frames(root / "in" / rel))
        assert [f.index for f in frames] == indices
        for frame in frames:
            stem = root / "out" / rel / f"{frame.index:05d}"
            clean = read_rgb(stem.with_suffix(".clean.png"))
            mask = cv2.imread(str(stem.with_suffix(".mask.png")), cv2.IMREAD_UNCHANGED)
            stats = json.loads(stem.with_suffix(".json").read_text())
            assert clean.shape == frame.image.shape and mask.shape == frame.image.shape[:2]
            assert set(np.unique(mask)) <= {0, 255}
            assert stats["index"] == frame.index and stats["original_size"] == list(frame.image.shape[:2])
            assert {"mask_fraction", "ocr_words", "timings", "steps"} <= set(stats["stats"])
            changed = np.any(clean != frame.image, axis=2) & (mask == 0)
            assert not clean[changed].any()  # unmasked pixels are kept, or blacked out beyond the scan sector
    # pydicom's real scans carry burned-in text and boxes: cleaning must find something there
    stats = json.loads((root / "out/dicom/examples_jpeg2k.dcm/00000.json").read_text())["stats"]
    assert stats["mask_fraction"] > 0
    assert "16 frames from 14 inputs, 5 rejected" in proc.stdout


def test_report_lists_rejected_inputs_with_reasons(qa):
    root, _ = qa
    report = json.loads((root / "out/report.json").read_text())
    assert report["inputs_seen"] == 14 and report["frames"] == 16
    reasons = {r["input"]: r["reason"] for r in report["rejected"]}
    assert sorted(reasons) == ["broken/cut.dcm", "broken/empty.dcm", "broken/notes.txt", "broken/random.jpg",
                               "broken/truncated.png"]
    assert reasons["broken/empty.dcm"] == "empty file (0 bytes)" and "truncated" in reasons["broken/cut.dcm"]
    assert not (root / "out/broken/notes.txt").exists()


def test_config_file_and_overrides_switch_steps(tmp_path, capsys):
    write_images(tmp_path / "in", 1, 96, seed=11)  # scan_0000 has overlays
    frame = next(iter_frames(tmp_path / "in/scan_0000.png")).image
    cfg = tmp_path / "qa.yaml"
    cfg.write_text("cleaning:\n  text:\n    enabled: false\nreader:\n  video_fps: 1.0\n")
    assert clean_images.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "a"),
                              "--config", str(cfg)]) == 0
    stats = json.loads((tmp_path / "a/scan_0000.png/00000.json").read_text())["stats"]
    assert "text" not in stats["steps"] and stats["ocr_calls"] == 0
    assert clean_images.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "b"),
                              "--config", str(REPO / "configs/build_example.yaml"),
                              "--set", "cleaning.enabled=false"]) == 0
    assert np.array_equal(read_rgb(tmp_path / "b/scan_0000.png/00000.clean.png"), frame)
    assert not cv2.imread(str(tmp_path / "b/scan_0000.png/00000.mask.png"), cv2.IMREAD_UNCHANGED).any()
    capsys.readouterr()
    assert clean_images.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "c"),
                              "--set", "cleaning.moode=fast"]) == 2
    assert "cleaning.moode" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert clean_images.main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "d")]) == 2
    assert clean_images.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "e")]) == 2


def test_an_input_named_like_the_report_and_odd_names(tmp_path):
    """Issue 16 item 11: an image named report.json at the top of the input does not crash the tool;
    every input is read (frames) or rejected (reason), names that are not UTF-8 included."""
    paths = write_images(tmp_path / "in", 3, 96, seed=12)
    paths[0].rename(tmp_path / "in/report.json")
    paths[1].rename(tmp_path / "in" / os.fsdecode(b"caf\xe9 \n.png"))
    (tmp_path / "in/.hidden.png").write_bytes(b"x")
    (tmp_path / "in/empty.png").write_bytes(b"")
    assert clean_images.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["inputs_seen"] == len(report["read"]) + len(report["rejected"]) == 4
    assert sorted(r["input"] for r in report["read"]) == ["caf\\xe9 \\n.png", "report.json", "scan_0002.png"]
    assert report["rejected"] == [{"input": "empty.png", "reason": "empty file (0 bytes)"}]
    assert report["skipped"] == [{"path": ".hidden.png", "reason": "hidden file: not read (name starts with '.')"}]
    assert (tmp_path / "out/report.json~/00000.clean.png").is_file()
    assert (tmp_path / "out" / os.fsdecode(b"caf\xe9 \n.png") / "00000.mask.png").is_file()


def test_sheets_never_collide_with_an_input_folder_named_sheets(tmp_path):
    """With --sheet, an input folder named `sheets` holding `x.png.png` and a top-level input `x.png` would
    both claim out/sheets/x.png.png (a frame folder and a sheet file): the input's folder gets a '~'."""
    a, b = write_images(tmp_path / "in", 2, 96, seed=13)
    (tmp_path / "in/sheets").mkdir()
    a.rename(tmp_path / "in/sheets/x.png.png")
    b.rename(tmp_path / "in/x.png")
    args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--sheet"]
    assert clean_images.main(args) == 0
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert sorted(r["input"] for r in report["read"]) == ["sheets/x.png.png", "x.png"] and not report["rejected"]
    assert (tmp_path / "out/sheets~/x.png.png/00000.clean.png").is_file()
    assert (tmp_path / "out/sheets/x.png.png").is_file() and (tmp_path / "out/sheets/sheets/x.png.png.png").is_file()
