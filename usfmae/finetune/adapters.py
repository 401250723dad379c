"""Turn the downstream datasets' official layouts into the CSV that ``CsvDataset`` reads.

Each adapter reads a dataset as its authors distribute it and writes ``path,label,fold`` or
``path,label,split`` (paths relative to the CSV's folder), then returns the CSV path. Nothing is
downloaded: fetch the data yourself, read its licence, and point the adapter at the folder. A
wrong layout raises FileNotFoundError / ValueError naming the file that is missing or malformed.

BUS-BRA (Gómez-Flores et al., Med. Phys. 51(4), 2024), benign vs malignant, official 5 folds.
    Download: Zenodo, "BUS-BRA: A breast ultrasound dataset with BI-RADS categories"
    (doi:10.5281/zenodo.8231412; code at github.com/wgomezf/BUS-BRA). Licence: CC BY 4.0 as far as
    we know (check the record); cite the paper. Expected layout (the archive unpacks to BUSBRA/;
    pass that folder or its parent)::

        BUSBRA/Images/bus_0001-l.png ...   one PNG per ID (ID = file stem, e.g. bus_0001-l)
        BUSBRA/bus_data.csv                columns include ID and Pathology (benign|malignant)
        BUSBRA/5-fold-cv.csv               columns include ID and kFold (1..5); may repeat Pathology
                                           and valid_1..valid_5 (1 train, 0 validation, NaN test)
        BUSBRA/Masks/mask_0001-l.png ...   lesion masks (read_busbra; segmentation)
        (10-fold-cv.csv: not used)

    Assumptions: the official partition is the kFold column of 5-fold-cv.csv (patient-level, as
    published: fold sizes 376/385/366/365/383); fold f is the test set of run f, and valid_f splits
    the other four folds into training (1) and validation (0). Labels come from bus_data.csv;
    where 5-fold-cv.csv also has Pathology the two must agree. Every ID must be in both files.
    Image sizes are read from the PNGs: bus_data.csv's Width/Height are wrong for 4 rows.

MMOTU-2D (Zhao et al., arXiv:2207.06799, 2022), subset OTU_2d, 8 classes, official split
    1,000 train / 469 val. Download: linked from github.com/cv516Buaa/MMOTU_DS2Net (figshare).
    Licence: CC BY 4.0 as far as we know; cite the paper. Expected layout (pass OTU_2d or its
    parent)::

        OTU_2d/images/1.JPG ...
        OTU_2d/train_cls.txt   lines "<image file name> <class index 0..7>"
        OTU_2d/val_cls.txt     same format
        (annotations/, train.txt, val.txt: segmentation, not used)

    Class index order, from the dataset paper: see ``MMOTU_CLASSES``. Written labels are those
    names; pass ``classes=MMOTU_CLASSES`` to CsvDataset to keep the official index order.

GIST514-DB (He et al., "Query2", Comput. Biol. Med. 152, 2023), GIST vs leiomyoma, 514 images,
    no stated split: the project assigns a seeded stratified 5-fold (folds 1..5). Download: Google
    Drive folder linked from github.com/howardchina/query2. Licence: CC BY-NC-SA 4.0 as far as we
    know (non-commercial). Two layouts are accepted::

        <root>/GIST/*.jpg, <root>/leiomyoma/*.jpg          folder per class (any letter case)
        usd514_jpeg_roi/images/*.jpg                       the authors' release: COCO annotations,
        usd514_jpeg_roi/annotations/all_anno_crop.json     image label = its lesions' category

    The release also carries the authors' detection splits (``*_anno_crop_split_{0..4}.json``);
    they are not used, since the USF-MAE paper does not say it used them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from usfmae.data.labelled import FolderDataset, is_image_file
from usfmae.eval.folds import stratified_kfold
from usfmae.finetune.registry import DOWNSTREAM

BUSBRA_CLASSES = DOWNSTREAM["busbra"].classes
MMOTU_CLASSES = DOWNSTREAM["mmotu"].classes
GIST514_CLASSES = DOWNSTREAM["gist514"].classes


def _require(path: Path, what: str) -> Path:
    """Return path if it exists, else raise naming it and what it should be."""
    if not path.exists():
        raise FileNotFoundError(f"missing {what}: {path}")
    return path


def _descend(root: Path, marker: str, child: str) -> Path:
    """Accept either the dataset folder or the folder that contains it (as the archive unpacks)."""
    root = Path(root)
    if not (root / marker).exists() and (root / child / marker).exists():
        return root / child
    return root


def _write_csv(out_csv: str | Path, rows: Sequence[tuple[Path, str, object]], group_column: str) -> Path:
    """Write path,label,<group_column>; paths relative to the CSV's folder so both can move together."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    base = out_csv.parent.resolve()
    with out_csv.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", group_column])
        for path, label, group in rows:
            writer.writerow([os.path.relpath(Path(path).resolve(), base), label, group])
    return out_csv


def _read_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """CSV rows as dicts of stripped strings; raise naming the file if a column is missing."""
    with _require(path, "CSV file").open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        reader.fieldnames = header
        rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    rows = [row for row in rows if any(row.values())]
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return rows


def _by_id(rows: list[dict[str, str]], path: Path) -> dict[str, dict[str, str]]:
    """Index rows by ID (a trailing .png is dropped); duplicate IDs are an error."""
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        key = row["ID"].removesuffix(".png")
        if key in table:
            raise ValueError(f"{path}: duplicate ID {key!r}")
        table[key] = row
    return table


@dataclass(frozen=True)
class BusbraImage:
    """One BUS-BRA scan as released: its files, label, patient, official fold, and size from the PNG itself."""

    id: str
    image: Path
    mask: Path | None  # Masks/mask_XXXX-y.png (None when the release has no Masks/ folder)
    label: str  # benign | malignant
    patient: str  # bus_data.csv's Case
    fold: int  # kFold of 5-fold-cv.csv, 1..5: the test fold of official run `fold`
    size: tuple[int, int]  # (width, height) read from the PNG header
    roles: tuple[str, ...] | None  # roles[k - 1]: "train" | "val" | "test" in official run k; None without valid_k


def _busbra_roles(row: dict[str, str], fold: int, path: Path) -> tuple[str, ...] | None:
    """The valid_k columns of 5-fold-cv.csv: 1 = train, 0 = validation, NaN = the run's test fold."""
    keys = sorted((k for k in row if k.startswith("valid_")), key=lambda k: int(k.removeprefix("valid_")))
    if not keys:
        return None
    roles = []
    for k, key in enumerate(keys, start=1):
        role = {"1": "train", "0": "val", "nan": "test", "": "test"}.get(row[key].lower())
        if role is None or (role == "test") != (k == fold):
            raise ValueError(f"{path}: ID {row['ID']} has {key}={row[key]!r} with kFold {fold}; expected NaN exactly "
                             "in its own fold's column, else 1 (train) or 0 (validation)")
        roles.append(role)
    return tuple(roles)


def read_busbra(root: str | Path) -> tuple[list[BusbraImage], dict]:
    """Every scan of a BUS-BRA release (sorted by ID) and a report of what was read.

    Sizes come from the PNG headers: bus_data.csv's Width/Height disagree with the file for 4 of the
    1875 rows of the public release; those IDs are listed under report["size_differs_from_csv"].
    """
    root = _descend(Path(root), "5-fold-cv.csv", "BUSBRA")
    images = _require(root / "Images", "BUS-BRA image folder (Images/)")
    masks = root / "Masks" if (root / "Masks").is_dir() else None
    data_csv, folds_csv = root / "bus_data.csv", root / "5-fold-cv.csv"
    labels = _by_id(_read_table(data_csv, ["ID", "Pathology"]), data_csv)
    folds = _by_id(_read_table(folds_csv, ["ID", "kFold"]), folds_csv)

    # Step 1: the two files must describe the same images.
    only_data, only_folds = sorted(labels.keys() - folds.keys()), sorted(folds.keys() - labels.keys())
    if only_data or only_folds:
        raise ValueError(f"{data_csv.name} and {folds_csv.name} list different IDs: "
                         f"only in {data_csv.name}: {only_data[:5]}, only in {folds_csv.name}: {only_folds[:5]}")

    # Step 2: one record per image, label from bus_data.csv checked against the fold file, size from the PNG.
    records, size_differs = [], []
    for image_id in sorted(labels):
        row, fold_row = labels[image_id], folds[image_id]
        label = row["Pathology"].lower()
        if label not in BUSBRA_CLASSES:
            raise ValueError(f"{data_csv}: ID {image_id} has Pathology {label!r}, expected one of {BUSBRA_CLASSES}")
        if fold_row.get("Pathology") and fold_row["Pathology"].lower() != label:
            raise ValueError(f"ID {image_id}: Pathology {label!r} in {data_csv.name} but "
                             f"{fold_row['Pathology']!r} in {folds_csv.name}")
        try:
            fold = int(float(fold_row["kFold"]))
        except ValueError:
            raise ValueError(f"{folds_csv}: ID {image_id} has non-integer kFold {fold_row['kFold']!r}") from None
        image = _require(images / f"{image_id}.png", f"BUS-BRA image for ID {image_id}")
        try:
            with Image.open(image) as header:
                size = header.size
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read BUS-BRA image {image}: {error}") from error
        if row.get("Width") and row.get("Height") and (row["Width"], row["Height"]) != tuple(map(str, size)):
            size_differs.append(image_id)
        mask = None
        if masks is not None:
            mask = _require(masks / ("mask_" + image_id.removeprefix("bus_") + ".png"), f"BUS-BRA mask for ID {image_id}")
        records.append(BusbraImage(image_id, image, mask, label, row.get("Case") or image_id, fold, size,
                                   _busbra_roles(fold_row, fold, folds_csv)))
    report = {"root": str(root), "images": len(records), "patients": len({r.patient for r in records}),
              "folds": sorted({r.fold for r in records}), "size_differs_from_csv": size_differs}
    return records, report


def adapt_busbra(root: str | Path, out_csv: str | Path) -> Path:
    """BUS-BRA -> path,label,fold with labels benign|malignant and the official kFold 1..5."""
    records, _ = read_busbra(root)
    return _write_csv(out_csv, [(r.image, r.label, r.fold) for r in records], "fold")


def _read_cls_list(path: Path, images: Path, num_classes: int) -> list[tuple[Path, int]]:
    """Parse '<image name> <class index>' lines; names match case-insensitively, extension optional."""
    files = [file for file in images.iterdir() if is_image_file(file)]
    by_name = {file.name.lower(): file for file in files}
    by_stem = {file.stem.lower(): file for file in files}
    entries = []
    with _require(path, "MMOTU class list").open(encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= num_classes:
                raise ValueError(f"{path} line {line_number}: expected '<image name> <class 0..{num_classes - 1}>', "
                                 f"got {line.strip()!r}")
            name, index = fields[0], int(fields[1])
            image = by_name.get(name.lower()) or (None if Path(name).suffix else by_stem.get(name.lower()))
            if image is None:
                raise FileNotFoundError(f"{path} line {line_number}: image {name!r} not found in {images}")
            entries.append((image, index))
    if not entries:
        raise ValueError(f"{path}: no entries")
    return entries


def adapt_mmotu(root: str | Path, out_csv: str | Path) -> Path:
    """MMOTU-2D (OTU_2d) -> path,label,split with the 8 class names and the official train/val."""
    root = _descend(Path(root), "train_cls.txt", "OTU_2d")
    images = _require(root / "images", "MMOTU image folder (images/)")
    train = _read_cls_list(root / "train_cls.txt", images, len(MMOTU_CLASSES))
    val = _read_cls_list(root / "val_cls.txt", images, len(MMOTU_CLASSES))
    overlap = sorted({p.name for p, _ in train} & {p.name for p, _ in val})
    if overlap:
        raise ValueError(f"images listed in both train_cls.txt and val_cls.txt of {root}: {overlap[:5]}")
    rows = [(p, MMOTU_CLASSES[i], "train") for p, i in train] + [(p, MMOTU_CLASSES[i], "val") for p, i in val]
    return _write_csv(out_csv, rows, "split")


def _canonical_gist_label(name: str) -> str:
    """Folder or category names GIST / leiomyoma in any case map to GIST514_CLASSES spelling."""
    for canonical in GIST514_CLASSES:
        if name.strip().lower() == canonical.lower():
            return canonical
    return name


def _gist514_from_coco(root: Path) -> list[tuple[Path, str]]:
    """Image labels from the authors' COCO file: each image takes its lesions' category."""
    annotation_path = root / "annotations" / "all_anno_crop.json"
    try:
        coco = json.loads(annotation_path.read_text(encoding="utf-8"))
        categories = {c["id"]: _canonical_gist_label(c["name"]) for c in coco["categories"]}
        image_files = {im["id"]: im["file_name"] for im in coco["images"]}
        labels: dict[int, set[str]] = {}
        for annotation in coco["annotations"]:
            labels.setdefault(annotation["image_id"], set()).add(categories[annotation["category_id"]])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{annotation_path}: not a COCO annotation file ({error!r})") from error
    samples = []
    for image_id, file_name in sorted(image_files.items(), key=lambda item: item[1]):
        found = labels.get(image_id, set())
        if len(found) != 1:
            raise ValueError(f"{annotation_path}: image {file_name!r} has lesion categories {sorted(found)}; "
                             "expected exactly one")
        samples.append((_require(root / "images" / file_name, "GIST514-DB image"), found.pop()))
    return samples


def adapt_gist514(root: str | Path, out_csv: str | Path, seed: int = 0, k: int = 5) -> Path:
    """GIST514-DB -> path,label,fold with a seeded stratified k-fold (folds numbered 1..k)."""
    root = _descend(Path(root), "annotations", "usd514_jpeg_roi")
    if not root.is_dir():
        raise FileNotFoundError(f"missing GIST514-DB folder: {root}")

    # Step 1: labelled images from whichever layout is present.
    if (root / "annotations").is_dir():
        _require(root / "annotations" / "all_anno_crop.json", "GIST514-DB annotation file")
        samples = _gist514_from_coco(root)
    else:
        folders = FolderDataset(root)
        samples = [(Path(path), _canonical_gist_label(folders.classes[label])) for path, label in folders.samples]
    classes = sorted({label for _, label in samples})
    if len(classes) != 2:
        raise ValueError(f"GIST514-DB at {root} should have 2 classes (GIST, leiomyoma), found {classes}")

    # Step 2: stratified folds over the label indices, 1-based like BUS-BRA's kFold.
    label_index = np.array([classes.index(label) for _, label in samples])
    fold_of = np.empty(len(samples), dtype=np.int64)
    for fold, (_, val_idx) in enumerate(stratified_kfold(label_index, k=k, seed=seed), start=1):
        fold_of[val_idx] = fold
    rows = [(path, label, int(fold)) for (path, label), fold in zip(samples, fold_of)]
    return _write_csv(out_csv, rows, "fold")


ADAPTERS: dict[str, Callable[..., Path]] = {
    "busbra": adapt_busbra,
    "mmotu": adapt_mmotu,
    "gist514": adapt_gist514,
}
assert set(ADAPTERS) == set(DOWNSTREAM), "every downstream dataset of the registry has an adapter"
