"""usfmae.testing.annotated: annotated synthetic scans with a truth mask per annotation and tissue kind."""

import numpy as np
import pytest

from usfmae.testing.annotated import ANNOTATION_KINDS, NAMES, TISSUE_KINDS, generate_annotated
from usfmae.testing.synthetic import _render_clean

SIZE = (240, 320)
SEEDS = range(12)


@pytest.fixture(scope="module")
def samples():
    return [generate_annotated(seed, size=SIZE) for seed in SEEDS]


def test_same_seed_same_sample():
    a, b = generate_annotated(5, size=SIZE), generate_annotated(5, size=SIZE)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.clean, b.clean)
    assert all(np.array_equal(a.annotation_masks[k], b.annotation_masks[k]) for k in ANNOTATION_KINDS)
    assert not np.array_equal(a.image, generate_annotated(6, size=SIZE).image)


def test_every_kind_occurs_and_masks_mark_exactly_what_changed(samples):
    seen = set()
    for s in samples:
        assert set(s.annotation_masks) == set(ANNOTATION_KINDS) and set(s.tissue_masks) == set(TISSUE_KINDS)
        changed = (s.image != s.clean).any(axis=2)
        assert np.array_equal(s.overlay_mask > 0, changed)  # uncompressed: truth is every changed pixel
        seen |= {kind for kind, mask in s.annotation_masks.items() if mask.any()}
        for mask in (*s.annotation_masks.values(), *s.tissue_masks.values(), s.sector_mask):
            assert mask.shape == SIZE and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert seen == set(ANNOTATION_KINDS)


def test_annotations_over_the_scan_lie_inside_it(samples):
    for kind in ("typed_text", "caliper", "cross", "dotted_line", "roi_box"):
        inside = sum(np.count_nonzero((s.annotation_masks[kind] > 0) & (s.sector_mask > 0)) for s in samples)
        total = sum(np.count_nonzero(s.annotation_masks[kind]) for s in samples)
        assert total > 0 and inside / total > 0.95, kind
    header_inside = sum(np.count_nonzero((s.annotation_masks["header"] > 0) & (s.sector_mask > 0)) for s in samples)
    header = sum(np.count_nonzero(s.annotation_masks["header"]) for s in samples)
    assert header_inside < 0.05 * header  # the corner text stays in the corners (at small sizes it can touch the scan)


def test_tissue_confounders_are_bright_scan_pixels(samples):
    for s in samples:
        gray = s.clean[:, :, 0].astype(float)
        scan = s.sector_mask > 0
        for kind in TISSUE_KINDS:
            mask = s.tissue_masks[kind] > 0
            assert mask.any() and not (mask & ~scan).any(), kind
        specular = s.tissue_masks["specular"] > 0
        assert gray[specular].mean() > gray[scan].mean() + 20


def test_linear_geometry_is_a_rectangle_and_fan_is_not():
    linear = generate_annotated(3, size=SIZE, geometry="linear")
    ys, xs = np.nonzero(linear.sector_mask)
    assert linear.geometry == "linear"
    assert np.count_nonzero(linear.sector_mask) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fan = generate_annotated(3, size=SIZE, geometry="fan")
    ys, xs = np.nonzero(fan.sector_mask)
    assert fan.geometry == "fan"
    assert np.count_nonzero(fan.sector_mask) < 0.9 * (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_jpeg_keeps_the_truth_and_marks_the_halo_as_changed():
    exact, lossy = generate_annotated(4, size=SIZE), generate_annotated(4, size=SIZE, jpeg_quality=60)
    assert not np.array_equal(exact.image, lossy.image)
    assert all(np.array_equal(exact.annotation_masks[k], lossy.annotation_masks[k]) for k in ANNOTATION_KINDS)
    assert np.count_nonzero(lossy.changed_mask) > np.count_nonzero(lossy.overlay_mask)


def test_grey_only_option_draws_no_colour():
    s = generate_annotated(7, size=SIZE, color=False)
    pixels = s.image[s.overlay_mask > 0].astype(int)
    assert (pixels.max(axis=1) - pixels.min(axis=1)).max() <= 2


def test_names_are_typed_into_some_scans(samples):
    # The typed-text truth of a scan with a surname covers its letters (the benchmark reads them back).
    assert all(name.isupper() for name in NAMES)
    assert sum(s.annotation_masks["typed_text"].any() for s in samples) >= len(samples) // 2


def test_typed_words_boxes_hold_every_typed_pixel(samples):
    named = 0
    for s in samples:
        typed, boxes = s.annotation_masks["typed_text"] > 0, np.zeros(s.sector_mask.shape, bool)
        for _, (x0, y0, x1, y1) in s.typed_words:
            boxes[max(y0, 0):y1, max(x0, 0):x1] = True
        assert not (typed & ~boxes).any()
        for name in {w for text, _ in s.typed_words for w in text.split()} & set(NAMES):
            named += 1
            word = s.word_mask(name) > 0
            assert word.any() and not (word & ~typed).any()
    assert named >= 2


def test_extra_echo_hook_adds_only_what_it_returns():
    # generate_ultrasound renders without the hook; a hook adding nothing renders the same image,
    # so the lesion generator's outputs are what they were before annotated scans existed.
    def render(extra_echo=None):
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(11).spawn(3)]
        return _render_clean(*rngs, 96, 128, 1, (0.035, 0.11), None, extra_echo=extra_echo)[0]

    def band(fan, sector):  # a bright interface across rows 60-61
        echo = np.zeros(sector.shape, np.float32)
        echo[60:62] = 30
        return echo

    plain = render()
    assert np.array_equal(plain, render(lambda fan, sector: np.zeros(sector.shape, np.float32)))
    bright = render(band)
    assert bright[58:64, 40:90].mean() > plain[58:64, 40:90].mean() + 30


@pytest.mark.parametrize("kwargs", [{"geometry": "convex"}, {"jpeg_quality": 0}, {"jpeg_quality": 101},
                                    {"size": 10}, {"seed": -1}])
def test_bad_arguments_raise(kwargs):
    args = {"seed": 0, "size": SIZE, **kwargs}
    with pytest.raises(ValueError):
        generate_annotated(**args)
