"""detect_kind (content before extension), list_inputs, and the metadata hashes."""

import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from usfmae.io import content_key, detect_kind, hamming, list_inputs, perceptual_hash, source_hash


def test_detect_by_content_and_extension(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png)
    dicom = tmp_path / "IM0001"
    shutil.copy(get_testdata_file("examples_rgb_color.dcm"), dicom)
    disguised = tmp_path / "scan.png"  # a DICOM named like a PNG: content wins
    shutil.copy(get_testdata_file("examples_rgb_color.dcm"), disguised)
    avi = tmp_path / "clip"
    writer = cv2.VideoWriter(str(avi) + ".avi", cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (8, 8))
    writer.write(np.zeros((8, 8, 3), np.uint8))
    writer.release()
    (tmp_path / "clip.avi").rename(avi)
    text = tmp_path / "README"
    text.write_text("hello")
    expected = {png: "image", dicom: "dicom", disguised: "dicom", avi: "video", text: None}
    assert {p: detect_kind(p) for p in expected} == expected


@pytest.mark.parametrize("name, kind", [("x.JPG", "image"), ("x.jpeg", "image"), ("x.bmp", "image"),
                                        ("x.TIFF", "image"), ("x.mp4", "video"), ("x.avi", "video"),
                                        ("x.dcm", "dicom"), ("x.nii", "volume"), ("x.nii.gz", "volume"),
                                        ("x.mhd", "volume"), ("x.mha", "volume"), ("x.txt", None),
                                        ("x.raw", None), ("x.gz", None)])
def test_extension_decides_when_content_says_nothing(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(b"")
    assert detect_kind(path) == kind


def test_list_inputs_sorted_recursive_skips_hidden(tmp_path):
    for rel in ["b/2.png", "b/10.png", "a.png", ".hidden.png", ".git/x.png", "c/.DS_Store", "c/d/e.dcm",
                "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rels = [p.relative_to(tmp_path).as_posix() for p in list_inputs(tmp_path)]
    assert rels == ["a.png", "b/10.png", "b/2.png", "c/d/e.dcm", "notes.txt"]
    assert list_inputs(tmp_path) == list_inputs(tmp_path)


def test_list_inputs_requires_a_directory(tmp_path):
    with pytest.raises(NotADirectoryError, match="missing"):
        list_inputs(tmp_path / "missing")


def test_content_key_depends_on_pixels_and_shape():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    key = content_key(image)
    assert len(key) == 32 and int(key, 16) >= 0
    assert content_key(image.copy()) == key
    assert content_key(image.reshape(3, 2, 3)) != key  # same bytes, other shape
    changed = image.copy()
    changed[0, 0, 0] += 1
    assert content_key(changed) != key


def test_source_hash_is_salted_and_path_free():
    a = source_hash("site/patient_17/scan.dcm", salt="s3cret")
    assert a == source_hash("site\\patient_17\\scan.dcm", salt="s3cret")  # separator-independent
    assert a != source_hash("site/patient_17/scan.dcm", salt="other")
    assert "patient" not in a and len(a) == 32
    with pytest.raises(ValueError, match="salt"):
        source_hash("x.png", salt="")


def test_perceptual_hash_near_duplicates_are_close():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (21, 21), 0)
    noisy = np.clip(base.astype(int) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    other = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (21, 21), 0)
    h = perceptual_hash(base)
    assert 0 <= h < 2**64
    assert hamming(h, perceptual_hash(noisy)) <= 4
    assert hamming(h, perceptual_hash(other)) > 16
    assert hamming(0b1011, 0b0001) == 2
