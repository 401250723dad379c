"""The labelled-folder adapter on tiny generated folders: masks beside images, group-aware folds, clear errors."""

import csv

import numpy as np
import pytest
from PIL import Image

from usfmae.data.labelled import CsvDataset, FolderDataset
from usfmae.finetune.classification.config import FinetuneConfig
from usfmae.finetune.classification.protocol import plan_folds
from usfmae.finetune.labelled_folder import adapt_labelled_folder, scan_labelled_folder
from usfmae.finetune.segmentation.config import SegmentationConfig
from usfmae.finetune.segmentation.data import SegmentationPairs, find_pairs
from usfmae.finetune.segmentation.run import split_pairs


def _png(path, size=(12, 10), box=None):
    """A gray PNG; box = (x0, y0, x1, y1) drawn at 255 (a lesion mask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full(size[::-1], 0 if box else 90, np.uint8)
    if box:
        array[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(array).save(path)
    return path


def _folder(root, patients=6, per_patient=2):
    """benign/ and malignant/, `per_patient` near-duplicate scans per patient, each with a mask; patient 0 of each
    class has a second lesion (_mask_1). Returns the groups CSV (path,group)."""
    rows = []
    for label in ("benign", "malignant"):
        for patient in range(patients):
            for shot in range(per_patient):
                name = f"{label[0]}{patient}_{shot}"
                _png(root / label / f"{name}.png")
                _png(root / label / f"{name}_mask.png", box=(1, 1, 4, 4))
                if patient == 0:
                    _png(root / label / f"{name}_mask_1.png", box=(6, 5, 9, 8))
                rows.append((f"{label}/{name}.png", f"{label}-patient{patient}"))
    groups = root.parent / "groups.csv"
    with groups.open("w", newline="") as stream:
        csv.writer(stream).writerows([("path", "group"), *rows])
    return groups


def test_scan_finds_images_masks_and_groups(tmp_path):
    groups = _folder(tmp_path / "data")
    records = scan_labelled_folder(tmp_path / "data", groups)
    assert len(records) == 24 and {r.label for r in records} == {"benign", "malignant"}
    first = next(r for r in records if r.image.name == "b0_0.png")
    assert [m.name for m in first.masks] == ["b0_0_mask.png", "b0_0_mask_1.png"] and first.group == "benign-patient0"
    assert len(FolderDataset(tmp_path / "data")) == 24  # masks are not samples


def test_folds_keep_groups_whole_and_classes_balanced(tmp_path):
    groups = _folder(tmp_path / "data")
    out = adapt_labelled_folder(tmp_path / "data", tmp_path / "task.csv", groups, k=3, seed=1)
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    fold_of_patient = {}
    for row in rows:
        patient = row["path"].rsplit("_", 1)[0]
        assert fold_of_patient.setdefault(patient, row["fold"]) == row["fold"]  # never straddles folds
    for fold in "123":
        assert sorted(r["label"] for r in rows if r["fold"] == fold) == ["benign"] * 4 + ["malignant"] * 4
    assert len(CsvDataset(out, fold=1, split="train")) == 16


def test_classification_and_segmentation_accept_the_folder(tmp_path):
    groups = _folder(tmp_path / "data")
    data = FolderDataset(tmp_path / "data")
    protocol, specs = plan_folds(FinetuneConfig(protocol="kfold", folds=3, groups=str(groups)), data)
    assert protocol == "kfold-grouped-3" and len(specs) == 3
    patient = [p.rsplit("/", 1)[-1].rsplit("_", 1)[0] for p, _ in data.samples]
    for spec in specs:
        assert not {patient[i] for i in spec.train_idx} & {patient[i] for i in spec.val_idx}

    cfg = SegmentationConfig(data=str(tmp_path / "data"), groups=str(groups), val_fraction=0.25)
    train, val = split_pairs(cfg)
    assert len(train) + len(val) == 24
    assert not {i.name.rsplit("_", 1)[0] for i, _ in train} & {i.name.rsplit("_", 1)[0] for i, _ in val}
    pairs = find_pairs(tmp_path / "data")
    merged = next(i for i, (image, _) in enumerate(pairs) if image.name == "b0_0.png")
    _, mask = SegmentationPairs(pairs).load(merged)
    assert int(mask.sum()) == 9 + 9  # both lesions, merged


def test_errors_name_the_file(tmp_path):
    root = tmp_path / "data"
    groups = _folder(root, patients=2, per_patient=1)
    _png(root / "benign" / "orphan_mask.png", box=(1, 1, 2, 2))
    with pytest.raises(FileNotFoundError, match="orphan_mask.png has no image"):
        scan_labelled_folder(root)
    (root / "benign" / "orphan_mask.png").unlink()

    _png(root / "malignant" / "m1_0_mask.png", size=(20, 10), box=(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"m1_0_mask.png is 20x10 but its image .*m1_0.png is 12x10"):
        scan_labelled_folder(root)
    _png(root / "malignant" / "m1_0_mask.png", box=(1, 1, 2, 2))

    (root / "benign" / "b1_0_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) have no <name>_mask.*b1_0.png"):
        find_pairs(root)

    with groups.open("a") as stream:
        stream.write("benign/ghost.png,p9\n")
    with pytest.raises(FileNotFoundError, match=r"groups.csv line 6: 'benign/ghost.png' is not an image"):
        scan_labelled_folder(root, groups)
    with groups.open("w") as stream:
        stream.write("path,group\nb0_0.png,p1\n")
    with pytest.raises(ValueError, match=r"groups.csv: 3 image\(s\) of .* have no group"):
        scan_labelled_folder(root, groups)
    with pytest.raises(ValueError, match="is a CSV"):
        plan_folds(FinetuneConfig(groups=str(groups)), CsvDataset(adapt_labelled_folder(root, tmp_path / "t.csv", k=2)))
