"""Tests of the seeded synthetic ultrasound generator (usfmae.testing.synthetic)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from usfmae.testing.synthetic import (
    CLASS_NAMES,
    SyntheticSample,
    _item_seed,
    generate_ultrasound,
    write_corpus,
    write_labeled,
    write_segmentation,
)

ARRAYS = ("image", "clean", "overlay_mask", "lesion_mask", "sector_mask")


def _solidity(mask: np.ndarray) -> float:
    """Area of the lesion outline over the area of its convex hull (1.0 for a convex shape)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    return cv2.contourArea(contour) / cv2.contourArea(cv2.convexHull(contour))


def _read_rgb(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.ndim == 3 else pixels


def test_same_seed_gives_identical_sample():
    a, b = generate_ultrasound(7), generate_ultrasound(7)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.label, a.lesion_radius) == (b.label, b.lesion_radius)


def test_different_seeds_give_different_images():
    a, b = generate_ultrasound(1), generate_ultrasound(2)
    assert not np.array_equal(a.clean, b.clean)
    assert not np.array_equal(a.lesion_mask, b.lesion_mask)


@pytest.mark.parametrize("size, shape", [(256, (256, 256)), (128, (128, 128)), ((192, 320), (192, 320))])
def test_shapes_and_dtypes(size, shape):
    s = generate_ultrasound(3, size)
    assert isinstance(s, SyntheticSample)
    assert s.image.shape == s.clean.shape == (*shape, 3)
    for name in ARRAYS:
        array = getattr(s, name)
        assert array.dtype == np.uint8, name
        assert array.shape[:2] == shape, name
    for name in ("overlay_mask", "lesion_mask", "sector_mask"):
        assert set(np.unique(getattr(s, name))) <= {0, 255}, name
    assert s.label in (0, 1)
    assert isinstance(s.lesion_radius, float) and s.lesion_radius > 0


def test_clean_is_grey_and_black_outside_the_sector():
    for seed in range(5):
        s = generate_ultrasound(seed)
        outside = s.sector_mask == 0
        assert outside.mean() > 0.2  # a fan, not a full frame
        assert not s.clean[outside].any()
        assert s.clean[~outside].mean() > 30  # the fan itself holds echoes
        np.testing.assert_array_equal(s.clean[..., 0], s.clean[..., 1])
        np.testing.assert_array_equal(s.clean[..., 0], s.clean[..., 2])


def test_overlay_mask_marks_exactly_the_changed_pixels():
    for seed in range(10):
        s = generate_ultrasound(seed, overlays=True)
        mask = s.overlay_mask > 0
        assert mask.sum() > 100, seed
        changed = (s.image != s.clean).any(axis=2)
        near_mask = cv2.dilate(s.overlay_mask, np.ones((3, 3), np.uint8)) > 0
        assert changed[near_mask].sum() >= 0.95 * changed.sum(), seed
        assert changed[mask].mean() > 0.5, seed  # the mask is not padded with untouched pixels


def test_no_overlays_gives_empty_mask_and_image_equal_to_clean():
    s = generate_ultrasound(4, overlays=False)
    assert not s.overlay_mask.any()
    np.testing.assert_array_equal(s.image, s.clean)


def test_clean_image_does_not_depend_on_overlays():
    with_overlays, without = generate_ultrasound(5, overlays=True), generate_ultrasound(5, overlays=False)
    np.testing.assert_array_equal(with_overlays.clean, without.clean)
    np.testing.assert_array_equal(with_overlays.lesion_mask, without.lesion_mask)


def test_color_false_draws_only_grey_overlays():
    coloured = 0
    for seed in range(10):
        grey = generate_ultrasound(seed, color=False).image
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
        image = generate_ultrasound(seed, color=True).image
        coloured += int((image[..., 0] != image[..., 2]).any())
    assert coloured >= 5  # colour=True does produce coloured boxes, calipers or bars


def test_lesion_is_inside_the_sector_and_hypoechoic():
    ratios = []
    for seed in range(20):
        s = generate_ultrasound(seed, overlays=False)
        lesion = s.lesion_mask > 0
        assert lesion.any()
        assert not (lesion & (s.sector_mask == 0)).any()
        core = cv2.erode(s.lesion_mask, np.ones((3, 3), np.uint8)) > 0
        ring = (cv2.dilate(s.lesion_mask, np.ones((15, 15), np.uint8)) > 0) & ~lesion & (s.sector_mask > 0)
        ratios.append(s.clean[core, 0].mean() / s.clean[ring, 0].mean())
    assert max(ratios) < 0.95  # every lesion darker than the tissue around it (shadowing included)
    assert np.mean(ratios) < 0.75


def test_lesion_scale_sets_the_radius():
    for seed in range(10):
        s = generate_ultrasound(seed, 256, lesion_scale=(0.05, 0.06), overlays=False)
        assert 0.05 * 256 <= s.lesion_radius <= 0.06 * 256
        if s.label == 0:  # ellipse with semi-axes r*sqrt(q), r/sqrt(q): area pi r^2
            assert abs((s.lesion_mask > 0).sum() / (np.pi * s.lesion_radius**2) - 1) < 0.15


@pytest.mark.parametrize("size", [64, 96])
def test_largest_lesions_fit_small_images(size):
    for seed in range(40):  # every seed's lesion, the largest scale included, fits in the fan
        s = generate_ultrasound(seed, size, lesion_scale=(0.12, 0.25), overlays=False)
        lesion = s.lesion_mask > 0
        assert lesion.any() and not (lesion & (s.sector_mask == 0)).any()


def test_sector_angle_controls_the_fan_width():
    def aspect(angle: float) -> float:  # width over height of the fan's bounding box
        _, _, width, height = cv2.boundingRect(generate_ultrasound(0, sector_angle=angle, overlays=False).sector_mask)
        return width / height

    assert aspect(100) > 1.5 * aspect(40)


def test_both_labels_are_drawn_and_explicit_labels_are_kept():
    assert {generate_ultrasound(seed, 64, overlays=False).label for seed in range(20)} == {0, 1}
    assert generate_ultrasound(0, label=1).label == 1
    assert generate_ultrasound(0, label=0).label == 0


def test_label_decides_the_lesion_shape():
    round_ = [_solidity(generate_ultrasound(s, label=0, overlays=False).lesion_mask) for s in range(25)]
    irregular = [_solidity(generate_ultrasound(s, label=1, overlays=False).lesion_mask) for s in range(25)]
    assert min(round_) > 0.95
    assert max(irregular) < 0.95
    assert np.median(irregular) < 0.85


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"seed": 1.5}, {"size": 16}, {"size": (256, 0)}, {"size": "big"}, {"label": 2},
     {"lesion_scale": (0.2, 0.1)}, {"lesion_scale": (0.0, 0.1)}, {"sector_angle": 5}],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        generate_ultrasound(**{"seed": 0, **kwargs})


def test_write_corpus(tmp_path):
    paths = write_corpus(tmp_path / "corpus", 3, seed=5, size=128)
    assert [p.name for p in paths] == ["synth_000000.png", "synth_000001.png", "synth_000002.png"]
    assert sorted((tmp_path / "corpus").iterdir()) == paths
    for i, path in enumerate(paths):  # RGB round trip: cv2 wrote BGR
        np.testing.assert_array_equal(_read_rgb(path), generate_ultrasound(_item_seed(5, 0, i), 128).image)
    again = write_corpus(tmp_path / "again", 3, seed=5, size=128)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    assert write_corpus(tmp_path / "empty", 0) == []
    with pytest.raises(ValueError):
        write_corpus(tmp_path / "bad", -1)
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(OSError, match="a_file"):
        write_corpus(tmp_path / "a_file", 1)


def test_write_labeled(tmp_path):
    root = write_labeled(tmp_path / "labeled", 2, seed=1, size=96)
    assert root == tmp_path / "labeled"
    assert sorted(p.name for p in root.iterdir()) == sorted(CLASS_NAMES) == ["benign", "malignant"]
    for name in CLASS_NAMES:
        files = sorted((root / name).glob("*.png"))
        assert [f.name for f in files] == [f"{name}_00000.png", f"{name}_00001.png"]
        for f in files:
            assert _read_rgb(f).shape == (96, 96, 3)
    benign = _read_rgb(root / "benign" / "benign_00000.png")
    malignant = _read_rgb(root / "malignant" / "malignant_00000.png")
    assert not np.array_equal(benign, malignant)


def test_write_segmentation(tmp_path):
    root = write_segmentation(tmp_path / "seg", 3, seed=2, size=96)
    images = sorted(p.name for p in (root / "images").glob("*.png"))
    masks = sorted(p.name for p in (root / "masks").glob("*.png"))
    assert images == masks == ["seg_00000.png", "seg_00001.png", "seg_00002.png"]
    for name in images:
        image, mask = _read_rgb(root / "images" / name), _read_rgb(root / "masks" / name)
        assert image.shape == (96, 96, 3) and mask.shape == (96, 96)
        assert set(np.unique(mask)) == {0, 255}
        assert image[mask > 0].mean() < image[(mask == 0) & (image[..., 0] > 0)].mean()  # hypoechoic
