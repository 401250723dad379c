"""Labelled image datasets for fine-tuning, and the paper's fine-tuning transforms.

Two layouts, both exposing ``samples`` [(path, label_index)], ``classes`` and ``targets``:

- ``FolderDataset``: one sub-folder per class (class names sorted, as torchvision's ImageFolder).
- ``CsvDataset``: a CSV with header ``path,label`` and optionally ``fold`` or ``split``, which is
  what ``usfmae.finetune.adapters`` writes for BUS-BRA, MMOTU-2D and GIST514-DB.

Images are loaded with PIL as RGB (grayscale scans are replicated to 3 channels). A file that
cannot be decoded raises an error naming it; nothing is skipped silently.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from usfmae.constants import DEFAULT_IMAGE_SIZE
from usfmae.data.transforms import normalize
from usfmae.io.intensity import to_rgb
from usfmae.io.kinds import IMAGE_EXTENSIONS


# A lesion mask beside its image in a class folder: <name>_mask.png, and <name>_mask_1.png ... for more lesions.
MASK_NAME = re.compile(r"^(?P<image>.+)_mask(?:_(?P<index>\d+))?$")


def is_image_file(path: Path) -> bool:
    """True for visible files with a supported image extension (any letter case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def is_mask_file(path: Path) -> bool:
    """True for an image file named as a lesion mask (MASK_NAME): not a sample of a class folder."""
    return is_image_file(path) and MASK_NAME.match(path.stem) is not None


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully and return it as an RGB PIL image.

    Raises FileNotFoundError for a missing file and ValueError naming the file when it is not a
    decodable image (corrupt, truncated, empty, wrong format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # PIL decodes lazily: force it here so truncation fails at this line
            if image.mode in ("I", "F") or image.mode.startswith("I;16"):
                # 16-bit and float: the readers' rule, so pretraining and fine-tuning see the same pixels
                # (PIL's own RGB conversion would clip them).
                image = Image.fromarray(to_rgb(np.asarray(image)))
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error


class LabelledImages(Dataset):
    """(image, label_index) pairs from a fixed sample list; the base of both layouts."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable | None = None):
        self.samples = samples
        self.classes = classes
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


class FolderDataset(LabelledImages):
    """``root/<class name>/**/<image>``: classes are the sub-folders in sorted order; lesion masks beside the
    images (``<name>_mask.png``, ``<name>_mask_1.png``: usfmae.finetune.labelled_folder) are not samples."""

    def __init__(self, root: str | Path, transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise ValueError(f"no class sub-folders in {root}: expected root/<class name>/<images>")
        samples = []
        for index, class_dir in enumerate(class_dirs):
            images = sorted(p for p in class_dir.rglob("*") if is_image_file(p) and not is_mask_file(p))
            if not images:
                raise ValueError(f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)})")
            samples.extend((str(p), index) for p in images)
        super().__init__(samples, [p.name for p in class_dirs], transform)
        self.root = root


def _class_list(labels: list[str], csv_path: Path) -> list[str]:
    """Stable class list: integer labels 0..max keep their index, names are sorted."""
    if all(label.lstrip("-").isdigit() for label in labels):
        values = sorted({int(label) for label in labels})
        if values[0] < 0:
            raise ValueError(f"{csv_path}: integer labels must be >= 0, got {values[0]}")
        return [str(i) for i in range(values[-1] + 1)]
    return sorted(set(labels))


class CsvDataset(LabelledImages):
    """Images listed in a CSV with header ``path,label[,fold|split]`` (extra columns are ignored).

    Relative paths are resolved against ``root`` when given, else the CSV's folder. Labels are
    names or integer indices; the class list is built from the whole file before any selection
    (names sorted; integers 0..max keep their value), so it is the same for every fold. Pass
    ``classes`` to fix the order instead (e.g. a dataset's official class order); integer labels
    then index into it.

    Selection: with a ``split`` column, ``split="train"`` keeps the rows whose split is "train".
    With a ``fold`` column, ``fold=f, split="val"`` keeps the rows of fold f and
    ``fold=f, split="train"`` every other row (cross-validation). No selection keeps all rows.
    ``groups`` holds each kept sample's fold or split value (None without such a column), and
    ``group_column`` names that column ("fold", "split" or None).
    """

    def __init__(self, csv_path: str | Path, root: str | Path | None = None, transform: Callable | None = None,
                 fold: int | str | None = None, split: str | None = None, classes: Sequence[str] | None = None):
        csv_path = Path(csv_path)
        rows, group_column = self._read_rows(csv_path)
        base = Path(root) if root is not None else csv_path.parent

        # Step 1: class list from every row, so the label indices do not depend on the fold.
        labels = [row["label"] for _, row in rows]
        class_names = [str(c) for c in classes] if classes is not None else _class_list(labels, csv_path)
        class_to_idx = {name: i for i, name in enumerate(class_names)}

        # Step 2: keep the requested fold / split.
        keep = self._selector(group_column, fold, split, csv_path)

        # Step 3: resolve paths and labels; fail on the first missing file or unknown label.
        samples, groups = [], []
        for line, row in rows:
            group = row.get(group_column) if group_column else None
            if not keep(group):
                continue
            path = Path(row["path"])
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise FileNotFoundError(f"{csv_path} line {line}: image not found: {path}")
            samples.append((str(path), self._label_index(row["label"], class_to_idx, f"{csv_path} line {line}")))
            groups.append(group)
        if not samples:
            raise ValueError(f"{csv_path}: no rows selected (fold={fold!r}, split={split!r})")
        super().__init__(samples, class_names, transform)
        self.csv_path = csv_path
        self.groups = groups
        self.group_column = group_column

    @staticmethod
    def _label_index(label: str, class_to_idx: dict[str, int], where: str) -> int:
        """A label is a class name, or an integer index into the class list."""
        if label in class_to_idx:
            return class_to_idx[label]
        if label.isdigit() and int(label) < len(class_to_idx):
            return int(label)
        raise ValueError(f"{where}: label {label!r} is neither a class in {list(class_to_idx)} nor an index")

    @staticmethod
    def _read_rows(csv_path: Path) -> tuple[list[tuple[int, dict]], str | None]:
        """Rows as (line number, {column: stripped value}), and the fold/split column if any."""
        if not csv_path.is_file():
            raise FileNotFoundError(f"CSV file not found: {csv_path}")
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = {"path", "label"} - set(header)
            if missing:
                raise ValueError(f"{csv_path}: header {header} lacks column(s) {sorted(missing)}; "
                                 "expected path,label[,fold|split]")
            if "fold" in header and "split" in header:
                raise ValueError(f"{csv_path}: has both 'fold' and 'split' columns; keep one")
            reader.fieldnames = header
            rows = []
            for row in reader:
                values = {key: (value or "").strip() for key, value in row.items() if key is not None}
                if not any(values.values()):
                    continue  # blank line
                if not values.get("path") or not values.get("label"):
                    raise ValueError(f"{csv_path} line {reader.line_num}: empty path or label")
                rows.append((reader.line_num, values))
        if not rows:
            raise ValueError(f"{csv_path}: no data rows")
        group_column = "fold" if "fold" in header else "split" if "split" in header else None
        return rows, group_column

    @staticmethod
    def _selector(group_column: str | None, fold, split, csv_path: Path) -> Callable[[str | None], bool]:
        """A predicate on a row's fold/split value implementing the selection rules above."""
        if fold is None and split is None:
            return lambda group: True
        if group_column == "split":
            if fold is not None:
                raise ValueError(f"{csv_path} has a 'split' column: select with split=, not fold=")
            return lambda group: group == split
        if group_column == "fold":
            if fold is None or split not in ("train", "val"):
                raise ValueError(f"{csv_path} has a 'fold' column: select with fold=<id> and "
                                 f"split='train' or 'val', got fold={fold!r}, split={split!r}")
            wanted = str(fold)
            return (lambda group: group == wanted) if split == "val" else (lambda group: group != wanted)
        raise ValueError(f"{csv_path} has no 'fold' or 'split' column to select fold={fold!r}, split={split!r}")


AUGMENTATIONS = ("paper", "light", "none")


def transforms_for(train: bool, image_size: int = DEFAULT_IMAGE_SIZE, augment: str = "paper") -> T.Compose:
    """Fine-tuning transforms: PIL RGB image -> normalised [3, S, S] tensor.

    Evaluation (train=False, or augment="none"): resize to S x S and normalise.
    augment="paper" (§2.4, §2.6): RandomResizedCrop(S, scale=(0.5, 2.0)), horizontal and vertical
    flips (p=0.5 each), random rotation by 0-90 degrees, then ImageNet normalisation.
    augment="light": horizontal flip and RandomResizedCrop(S, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
    no rotation and no vertical flip: for tiny inputs, where a half-area crop can cut a lesion of a
    few pixels away and a rotation's black corners or an upside-down depth axis drown the cues.

    On scale=(0.5, 2.0): torchvision accepts it. Its RandomResizedCrop draws an area fraction
    uniformly from the range and an aspect ratio from (3/4, 4/3), and only accepts a crop that fits
    inside the image; it retries up to 10 times and otherwise falls back to the whole image (a
    centre crop when the aspect ratio is extreme). Draws above 1.0 never fit, so the crops actually
    taken cover 50-100% of the image, and the image is never zoomed out or padded; the upper bound
    of 2.0 only shifts probability onto more retries. We keep the paper's values as written.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    normalise = [T.ToImage(), T.ToDtype(torch.float32, scale=True), normalize()]  # == ToTensor + Normalize
    if not train or augment == "none":
        return T.Compose([T.Resize((image_size, image_size)), *normalise])
    if augment == "light":
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
            T.RandomHorizontalFlip(p=0.5),
            *normalise,
        ])
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.5, 2.0)),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomVerticalFlip(p=0.5),
        T.RandomRotation(degrees=(0.0, 90.0)),
        *normalise,
    ])
