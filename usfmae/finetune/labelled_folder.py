"""A labelled folder of one's own scans, the layout users bring: classification and segmentation both read it.

    <root>/<class>/<name>.png          an image (any supported extension, sub-folders allowed); classes sorted
    <root>/<class>/<name>_mask.png     optional lesion mask, same size as the image
    <root>/<class>/<name>_mask_1.png   more lesions of the same image: merged (union) with _mask.png
    groups.csv (anywhere)              optional, columns path,group: path relative to <root> (benign/a.png)
                                       or a bare file name when it is unique; group = patient / study / video id

With a group CSV every image must be listed and every listed path must exist, so near-duplicate images (frames
of one cine, both breasts of one patient) are tied to one group and never straddle a split: folds come from
``stratified_group_kfold``. Without one, each image is its own group.

    records = scan_labelled_folder("data/my_task", groups_csv="data/my_task_groups.csv")
    adapt_labelled_folder("data/my_task", "data/my_task.csv", groups_csv=..., k=5)   # path,label,fold for CsvDataset
    python launch/finetune.py --data data/my_task --set groups=data/my_task_groups.csv ...          # classification
    python launch/finetune.py --task segmentation --data data/my_task --set groups=... ...            # segmentation
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.labelled import MASK_NAME, is_image_file
from ..eval.folds import stratified_group_kfold
from .adapters import _read_table, _require, _write_csv


@dataclass(frozen=True)
class FolderImage:
    """One image of a labelled folder: its class, lesion masks (possibly none) and group id."""

    image: Path
    label: str
    masks: tuple[Path, ...]
    group: str


def _size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; ValueError naming the file when it is not an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _class_files(class_dir: Path) -> tuple[list[Path], dict[Path, list[Path]]]:
    """(images, {image: its masks}) of one class folder; a mask without its image is an error naming it."""
    files = sorted(p for p in class_dir.rglob("*") if is_image_file(p))
    images = [p for p in files if not MASK_NAME.match(p.stem)]
    by_stem = {(p.parent, p.stem): p for p in images}
    masks: dict[Path, list[Path]] = {p: [] for p in images}
    for path in files:
        match = MASK_NAME.match(path.stem)
        if match is None:
            continue
        image = by_stem.get((path.parent, match["image"]))
        if image is None:
            raise FileNotFoundError(f"mask {path} has no image {match['image']}.* beside it")
        masks[image].append(path)
    return images, masks


def read_groups(groups_csv: str | Path, root: Path, images: Sequence[Path]) -> dict[Path, str]:
    """{image: group} from a path,group CSV; unknown paths, ambiguous names and unlisted images are errors."""
    groups_csv = Path(groups_csv)
    rows = _read_table(groups_csv, ["path", "group"])
    by_relative = {p.relative_to(root).as_posix(): p for p in images}
    by_name: dict[str, list[Path]] = {}
    for p in images:
        by_name.setdefault(p.name, []).append(p)
    out: dict[Path, str] = {}
    for line, row in enumerate(rows, start=2):
        key = Path(row["path"]).as_posix()
        image = by_relative.get(key)
        if image is None:
            named = by_name.get(key, [])
            if len(named) > 1:
                raise ValueError(f"{groups_csv} line {line}: {key!r} names {len(named)} images "
                                 f"({', '.join(str(p) for p in named[:3])}); give the path relative to {root}")
            if not named:
                raise FileNotFoundError(f"{groups_csv} line {line}: {key!r} is not an image of {root}")
            image = named[0]
        if not row["group"]:
            raise ValueError(f"{groups_csv} line {line}: empty group for {key!r}")
        if image in out and out[image] != row["group"]:
            raise ValueError(f"{groups_csv} line {line}: {key!r} is in groups {out[image]!r} and {row['group']!r}")
        out[image] = row["group"]
    unlisted = [str(p.relative_to(root)) for p in images if p not in out]
    if unlisted:
        raise ValueError(f"{groups_csv}: {len(unlisted)} image(s) of {root} have no group: {unlisted[:5]}")
    return out


def scan_labelled_folder(root: str | Path, groups_csv: str | Path | None = None,
                         check_masks: bool = True) -> list[FolderImage]:
    """Every image of `root` (class sub-folders, sorted), with its masks and group.

    check_masks: read each mask's size from its header and require the image's (error naming both files).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"labelled folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"no class sub-folders in {root}: expected {root}/<class name>/<images>")
    found: list[tuple[Path, str, list[Path]]] = []
    for class_dir in class_dirs:
        images, masks = _class_files(class_dir)
        if not images:
            raise ValueError(f"class folder {class_dir} has no images")
        found += [(image, class_dir.name, masks[image]) for image in images]
    if check_masks:
        for image, _, masks in found:
            for mask in masks:
                if _size(mask) != _size(image):
                    raise ValueError(f"mask {mask} is {'x'.join(map(str, _size(mask)))} but its image {image} is "
                                     f"{'x'.join(map(str, _size(image)))}")
    groups = read_groups(groups_csv, root, [f[0] for f in found]) if groups_csv else {}
    return [FolderImage(image, label, tuple(masks), groups.get(image, image.relative_to(root).as_posix()))
            for image, label, masks in found]


def group_folds(records: Sequence[FolderImage], k: int, seed: int) -> np.ndarray:
    """Fold number 1..k of each record: stratified by class, whole groups per fold."""
    labels = [r.label for r in records]
    fold_of = np.empty(len(records), dtype=np.int64)
    for fold, (_, val_idx) in enumerate(stratified_group_kfold(labels, [r.group for r in records], k, seed), start=1):
        fold_of[val_idx] = fold
    return fold_of


def adapt_labelled_folder(root: str | Path, out_csv: str | Path, groups_csv: str | Path | None = None,
                          k: int = 5, seed: int = 0) -> Path:
    """A labelled folder -> path,label,fold (group-aware stratified folds 1..k) for CsvDataset."""
    records = scan_labelled_folder(_require(Path(root), "labelled folder"), groups_csv)
    return _write_csv(out_csv, [(r.image, r.label, int(f)) for r, f in zip(records, group_folds(records, k, seed))],
                      "fold")
