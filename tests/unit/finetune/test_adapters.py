"""Each adapter on a tiny fixture that mirrors its dataset's official layout."""

import csv
import json

import pytest
from PIL import Image

from usfmae.finetune.adapters import (
    ADAPTERS,
    MMOTU_CLASSES,
    adapt_busbra,
    adapt_gist514,
    adapt_mmotu,
)
from usfmae.data.labelled import CsvDataset


def _png(path, value=100, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (12, 10), value).save(path, format=fmt)
    return path


def _read(csv_path):
    with open(csv_path, newline="") as stream:
        return list(csv.DictReader(stream))


# ---------------------------------------------------------------- BUS-BRA

BUSBRA_ROWS = [  # ID, Case, Pathology, kFold
    ("bus_0001-l", "1", "benign", 1),
    ("bus_0001-r", "1", "benign", 1),
    ("bus_0002-l", "2", "malignant", 2),
    ("bus_0003-s", "3", "malignant", 3),
    ("bus_0004-l", "4", "benign", 2),
]


def _busbra(tmp_path, rows=BUSBRA_ROWS, fold_pathology=None):
    root = tmp_path / "BUSBRA"
    for image_id, *_ in rows:
        _png(root / "Images" / f"{image_id}.png")
        _png(root / "Masks" / f"mask_{image_id.removeprefix('bus_')}.png", value=255)
    with open(root / "bus_data.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height", "Side", "BBOX"])
        for image_id, case, pathology, _ in rows:
            writer.writerow([image_id, case, "fibroadenoma", pathology, "4", "GE", "12", "10", "left", "[1, 1, 5, 5]"])
    with open(root / "5-fold-cv.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["ID", "Pathology", "kFold"])
        for image_id, _, pathology, fold in rows:
            writer.writerow([image_id, (fold_pathology or {}).get(image_id, pathology), fold])
    return root


def test_busbra_writes_official_folds(tmp_path):
    root = _busbra(tmp_path)
    # The parent of BUSBRA/ (how the archive unpacks) works as well as BUSBRA/ itself.
    out = adapt_busbra(tmp_path, tmp_path / "out" / "busbra.csv")
    rows = _read(out)
    assert [r["path"] for r in rows] == [f"../BUSBRA/Images/{r[0]}.png" for r in BUSBRA_ROWS]
    assert [r["label"] for r in rows] == [r[2] for r in BUSBRA_ROWS]
    assert [int(r["fold"]) for r in rows] == [r[3] for r in BUSBRA_ROWS]
    assert adapt_busbra(root, tmp_path / "b2.csv").read_text().count("\n") == len(BUSBRA_ROWS) + 1

    val = CsvDataset(out, fold=2, split="val")
    assert val.classes == ["benign", "malignant"]
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in val.samples) == ["bus_0002-l.png", "bus_0004-l.png"]


def test_busbra_errors_name_the_problem(tmp_path):
    root = _busbra(tmp_path)
    (root / "5-fold-cv.csv").rename(root / "elsewhere.csv")
    with pytest.raises(FileNotFoundError, match="5-fold-cv.csv"):
        adapt_busbra(root, tmp_path / "x.csv")
    (root / "elsewhere.csv").rename(root / "5-fold-cv.csv")
    (root / "Images" / "bus_0003-s.png").unlink()
    with pytest.raises(FileNotFoundError, match="bus_0003-s.png"):
        adapt_busbra(root, tmp_path / "x.csv")


def test_busbra_inconsistent_files(tmp_path):
    root = _busbra(tmp_path, fold_pathology={"bus_0002-l": "benign"})
    with pytest.raises(ValueError, match="bus_0002-l"):
        adapt_busbra(root, tmp_path / "x.csv")
    other = _busbra(tmp_path / "other")
    with open(other / "5-fold-cv.csv", "a", newline="") as stream:
        stream.write("bus_9999-l,benign,5\n")
    with pytest.raises(ValueError, match="bus_9999-l"):
        adapt_busbra(other, tmp_path / "y.csv")
    (other / "bus_data.csv").write_text("ID,Case\nbus_0001-l,1\n")
    with pytest.raises(ValueError, match="Pathology"):
        adapt_busbra(other, tmp_path / "z.csv")


# ---------------------------------------------------------------- MMOTU-2D

def _mmotu(tmp_path, train_lines, val_lines):
    root = tmp_path / "MMOTU" / "OTU_2d"
    for name in ["1.JPG", "2.JPG", "3.JPG", "10.JPG", "11.JPG"]:
        _png(root / "images" / name, fmt="JPEG")
        _png(root / "annotations" / name.replace(".JPG", "_binary.PNG"), value=255)
    (root / "train_cls.txt").write_text("".join(f"{line}\n" for line in train_lines))
    (root / "val_cls.txt").write_text("".join(f"{line}\n" for line in val_lines))
    return root


def test_mmotu_writes_official_split_with_class_names(tmp_path):
    root = _mmotu(tmp_path, ["1.JPG 0", "2.JPG 7", "", "3 5"], ["10.JPG 3", "11.jpg 7"])
    out = adapt_mmotu(root.parent, tmp_path / "mmotu.csv")  # MMOTU/ (parent of OTU_2d) is accepted
    rows = _read(out)
    assert [(r["path"].rsplit("/", 1)[-1], r["label"], r["split"]) for r in rows] == [
        ("1.JPG", "chocolate cyst", "train"),
        ("2.JPG", "high grade serous cystadenocarcinoma", "train"),
        ("3.JPG", "normal ovary", "train"),
        ("10.JPG", "theca cell tumor", "val"),
        ("11.JPG", "high grade serous cystadenocarcinoma", "val"),
    ]
    val = CsvDataset(out, split="val", classes=MMOTU_CLASSES)
    assert val.targets == [3, 7]
    assert len(CsvDataset(out, split="train", classes=MMOTU_CLASSES)) == 3


@pytest.mark.parametrize(
    "train, val, error, message",
    [
        (["1.JPG 8"], ["10.JPG 0"], ValueError, r"train_cls.txt line 1"),
        (["1.JPG"], ["10.JPG 0"], ValueError, r"train_cls.txt line 1"),
        (["1.JPG 0"], ["99.JPG 0"], FileNotFoundError, r"val_cls.txt line 1: image '99.JPG'"),
        (["1.JPG 0"], ["1.JPG 0"], ValueError, "both"),
        (["1.JPG 0"], [], ValueError, "val_cls.txt: no entries"),
    ],
)
def test_mmotu_bad_lists(tmp_path, train, val, error, message):
    root = _mmotu(tmp_path, train, val)
    with pytest.raises(error, match=message):
        adapt_mmotu(root, tmp_path / "x.csv")


def test_mmotu_missing_list_file(tmp_path):
    root = _mmotu(tmp_path, ["1.JPG 0"], ["10.JPG 0"])
    (root / "val_cls.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val_cls.txt"):
        adapt_mmotu(root, tmp_path / "x.csv")


# ---------------------------------------------------------------- GIST514-DB

def _gist_folders(tmp_path, n_gist=6, n_leio=9):
    root = tmp_path / "GIST514-DB"
    for i in range(n_gist):
        _png(root / "gist" / f"g{i:02d}.jpg", fmt="JPEG")
    for i in range(n_leio):
        _png(root / "Leiomyoma" / f"l{i:02d}.png")
    return root


def test_gist514_folder_layout_stratified_folds(tmp_path):
    root = _gist_folders(tmp_path)
    out = adapt_gist514(root, tmp_path / "gist.csv", seed=0)
    rows = _read(out)
    assert len(rows) == 15
    assert {r["label"] for r in rows} == {"GIST", "leiomyoma"}
    for label, count in (("GIST", 6), ("leiomyoma", 9)):
        per_fold = [sum(r["label"] == label and r["fold"] == str(f) for r in rows) for f in range(1, 6)]
        assert sum(per_fold) == count and max(per_fold) - min(per_fold) <= 1
    # Same seed, same folds; another seed, other folds.
    assert _read(adapt_gist514(root, tmp_path / "again.csv", seed=0)) == rows
    assert [r["fold"] for r in _read(adapt_gist514(root, tmp_path / "s1.csv", seed=1))] != [r["fold"] for r in rows]
    ds = CsvDataset(out, fold=1, split="val")
    assert ds.classes == ["GIST", "leiomyoma"] and len(ds) == 3


def test_gist514_coco_release_layout(tmp_path):
    root = tmp_path / "usd514-db" / "usd514_jpeg_roi"
    images, annotations = [], []
    for i in range(10):
        name = f"case{i:03d}.jpg"
        _png(root / "images" / name, fmt="JPEG")
        images.append({"id": i + 1, "file_name": name, "width": 12, "height": 10})
        category = 2 if i < 4 else 1
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": category,
                            "segmentation": [[1, 1, 5, 1, 5, 5]], "bbox": [1, 1, 4, 4], "area": 8, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "leiomyoma"}, {"id": 2, "name": "GIST"}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "all_anno_crop.json").write_text(json.dumps(coco))
    rows = _read(adapt_gist514(root.parent, tmp_path / "gist.csv", seed=3))
    assert [r["label"] for r in rows] == ["GIST"] * 4 + ["leiomyoma"] * 6
    assert sorted({r["fold"] for r in rows}) == ["1", "2", "3", "4", "5"]

    coco["annotations"].append(dict(annotations[0], id=99, category_id=1))
    (root / "annotations" / "all_anno_crop.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="case000.jpg"):
        adapt_gist514(root, tmp_path / "x.csv")
    (root / "annotations" / "all_anno_crop.json").unlink()
    with pytest.raises(FileNotFoundError, match="all_anno_crop.json"):
        adapt_gist514(root, tmp_path / "x.csv")


def test_gist514_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        adapt_gist514(tmp_path / "nowhere", tmp_path / "x.csv")
    root = _gist_folders(tmp_path)
    _png(root / "schwannoma" / "s.png")
    with pytest.raises(ValueError, match="2 classes"):
        adapt_gist514(root, tmp_path / "x.csv")


def test_registry_names_every_adapter():
    assert ADAPTERS == {"busbra": adapt_busbra, "mmotu": adapt_mmotu, "gist514": adapt_gist514}
