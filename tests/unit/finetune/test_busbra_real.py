"""BUS-BRA as released (../shared/real_sets/busbra): the adapter reads it as it is; skipped where it is absent."""

import csv
from collections import Counter

from helpers import real_set
from PIL import Image

from usfmae.finetune.adapters import adapt_busbra, read_busbra
from usfmae.finetune.segmentation.data import SegmentationPairs


def test_read_busbra_release_sizes_roles_and_patients():
    records, report = read_busbra(real_set("busbra"))
    assert report["images"] == 1875 and report["patients"] == 1064 and report["folds"] == [1, 2, 3, 4, 5]
    assert Counter(r.label for r in records) == {"benign": 1268, "malignant": 607}
    # The 4 rows whose bus_data.csv size is wrong: the record keeps the file's own size.
    assert report["size_differs_from_csv"] == ["bus_0856-l", "bus_0857-r", "bus_0912-l", "bus_0990-l"]
    odd = next(r for r in records if r.id == "bus_0856-l")
    with Image.open(odd.image) as image:
        assert odd.size == image.size == (387, 353)
    for k in range(1, 6):  # run k: fold k is its test set; no patient has scans on both sides
        roles = Counter(r.roles[k - 1] for r in records)
        assert roles["test"] == sum(r.fold == k for r in records) and roles["val"] > 250 and roles["train"] > 1100
        test_patients = {r.patient for r in records if r.roles[k - 1] == "test"}
        assert not test_patients & {r.patient for r in records if r.roles[k - 1] != "test"}


def test_adapt_busbra_release_writes_official_folds(tmp_path):
    out = adapt_busbra(real_set("busbra"), tmp_path / "busbra.csv")
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert Counter(row["fold"] for row in rows) == {"1": 376, "2": 385, "3": 366, "4": 365, "5": 383}
    assert (tmp_path / rows[0]["path"]).resolve().is_file()


def test_busbra_release_masks_load_with_their_images():
    records, _ = read_busbra(real_set("busbra"))
    pairs = SegmentationPairs([(r.image, r.mask) for r in records[:3]])
    for i in range(3):
        image, mask = pairs.load(i)
        assert image.shape[1:] == mask.shape[1:] and 0 < int(mask.sum()) < mask.numel()
