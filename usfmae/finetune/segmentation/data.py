"""Image + lesion-mask pairs for segmentation fine-tuning, and their joint augmentation.

Three layouts, each read into a list of (image path, mask path or tuple of mask paths) pairs:

- ``folder_pairs``: ``<root>/images/x.png`` with ``<root>/masks/x.png`` (same stem, any supported
  extension), which is what ``usfmae.testing.synthetic.write_segmentation`` writes.
- ``busbra_pairs``: BUS-BRA as distributed (Gómez-Flores et al., Med. Phys. 2024; Zenodo
  doi:10.5281/zenodo.8231412; see usfmae.finetune.adapters for licence and download). The archive
  unpacks to ``BUSBRA/``; pass that folder or its parent::

      BUSBRA/Images/bus_0001-l.png ...   one PNG per ID (ID = stem)
      BUSBRA/Masks/mask_0001-l.png ...   its lesion mask: the ID with 'bus_' replaced by 'mask_'
      BUSBRA/5-fold-cv.csv               ID, kFold (1..5): the official patient-level folds

- ``class_pairs``: a labelled folder (usfmae.finetune.labelled_folder): ``<root>/<class>/x.png`` with
  ``x_mask.png`` (and ``x_mask_1.png`` ... for more lesions, merged) beside it.

Masks are read as one channel; foreground is any value above 0 when the mask holds only 0 and 1,
else above 127 (0/255 masks, and JPEG masks whose edges ring). Every image must have its mask and
every mask its image, with the same size: anything else raises an error naming the files.

Augmentation uses torchvision.transforms.v2 on a ``tv_tensors.Image`` and a ``tv_tensors.Mask`` in one
call, so the same crop, flip and rotation reach both (masks are resampled with nearest neighbour).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...data.labelled import is_image_file, load_rgb
from ...data.transforms import normalize
from ...eval.folds import stratified_group_kfold
from ..adapters import _by_id, _descend, _read_table
from ..labelled_folder import FolderImage, scan_labelled_folder

Pair = tuple[Path, Path | tuple[Path, ...]]  # (image, mask or the masks of its lesions, merged)


# ---------------------------------------------------------------------------- layouts
def _images_by_stem(folder: Path) -> dict[str, Path]:
    """{stem: path} of the image files in `folder`; two files with one stem are an error."""
    if not folder.is_dir():
        raise FileNotFoundError(f"missing folder: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            if path.stem in found:
                raise ValueError(f"two files with stem {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = path
    return found


def _match(images: dict[str, Path], masks: dict[str, Path], mask_key: Callable[[str], str],
           image_dir: Path, mask_dir: Path) -> list[Pair]:
    """Pair each image with masks[mask_key(stem)]; unmatched files on either side are an error."""
    pairs = [(path, masks.get(mask_key(stem))) for stem, path in images.items()]
    no_mask = [str(image) for image, mask in pairs if mask is None]
    if no_mask:
        raise FileNotFoundError(f"{len(no_mask)} image(s) of {image_dir} have no mask in {mask_dir}: {no_mask[:5]}")
    used = {mask_key(stem) for stem in images}
    orphans = [str(path) for stem, path in masks.items() if stem not in used]
    if orphans:
        raise ValueError(f"{len(orphans)} mask(s) of {mask_dir} have no image in {image_dir}: {orphans[:5]}")
    if not pairs:
        raise ValueError(f"no images in {image_dir}")
    return pairs


def folder_pairs(root: str | Path, images: str = "images", masks: str = "masks") -> list[Pair]:
    """Pairs <root>/images/x.* with <root>/masks/x.* (same stem), sorted by stem."""
    root = Path(root)
    image_dir, mask_dir = root / images, root / masks
    return _match(_images_by_stem(image_dir), _images_by_stem(mask_dir), lambda stem: stem, image_dir, mask_dir)


def busbra_root(root: str | Path) -> Path:
    """The BUSBRA/ folder, given it or the folder that contains it."""
    return _descend(Path(root), "Masks", "BUSBRA")


def busbra_mask_id(image_id: str) -> str:
    """BUS-BRA's mask name for an image ID: bus_0001-l -> mask_0001-l."""
    if not image_id.startswith("bus_"):
        raise ValueError(f"BUS-BRA image IDs start with 'bus_', got {image_id!r}")
    return "mask_" + image_id.removeprefix("bus_")


def busbra_pairs(root: str | Path) -> list[Pair]:
    """BUS-BRA's Images/bus_XXXX-Y.png with Masks/mask_XXXX-Y.png, sorted by ID."""
    root = busbra_root(root)
    image_dir, mask_dir = root / "Images", root / "Masks"
    return _match(_images_by_stem(image_dir), _images_by_stem(mask_dir), busbra_mask_id, image_dir, mask_dir)


def busbra_folds(root: str | Path) -> dict[str, int]:
    """{image ID: official fold 1..5} from BUS-BRA's 5-fold-cv.csv."""
    path = busbra_root(root) / "5-fold-cv.csv"
    folds = {}
    for image_id, row in _by_id(_read_table(path, ["ID", "kFold"]), path).items():
        try:
            folds[image_id] = int(float(row["kFold"]))
        except ValueError:
            raise ValueError(f"{path}: ID {image_id} has non-integer kFold {row['kFold']!r}") from None
    return folds


def class_pairs(records: Sequence[FolderImage]) -> list[Pair]:
    """(image, its masks) of labelled-folder records; an image without a mask is an error naming it."""
    no_mask = [str(r.image) for r in records if not r.masks]
    if no_mask:
        raise FileNotFoundError(f"{len(no_mask)} image(s) have no <name>_mask.* beside them: {no_mask[:5]}")
    return [(r.image, r.masks if len(r.masks) > 1 else r.masks[0]) for r in records]


def detect_layout(root: str | Path) -> str:
    """'busbra' when root (or root/BUSBRA) holds Images/ and Masks/, 'pairs' with images/ + masks/, else 'classes'."""
    root = busbra_root(root)
    if (root / "Images").is_dir() and (root / "Masks").is_dir():
        return "busbra"
    return "pairs" if (Path(root) / "images").is_dir() else "classes"


def find_pairs(root: str | Path, layout: str = "auto", groups_csv: str | Path | None = None) -> list[Pair]:
    """Pairs of `root` in `layout` ('auto', 'pairs', 'busbra' or 'classes')."""
    if layout == "auto":
        layout = detect_layout(root)
    if groups_csv is not None and layout != "classes":
        raise ValueError(f"groups applies to the 'classes' layout (a labelled folder); {root} is '{layout}'")
    if layout == "busbra":
        return busbra_pairs(root)
    if layout == "pairs":
        return folder_pairs(root)
    if layout == "classes":
        return class_pairs(scan_labelled_folder(root, groups_csv))
    raise ValueError(f"layout must be 'auto', 'pairs', 'busbra' or 'classes', got {layout!r}")


def group_holdout(records: Sequence[FolderImage], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, val) of a labelled folder: fold 1 of a stratified group k-fold, k = round(1 / val_fraction), so
    no group (patient, cine) is on both sides."""
    k = max(2, round(1 / val_fraction))
    train_idx, val_idx = stratified_group_kfold([r.label for r in records], [r.group for r in records], k, seed)[0]
    pairs = class_pairs(records)
    return [pairs[i] for i in train_idx], [pairs[i] for i in val_idx]


def holdout(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, val): a seeded random hold-out of round(n * val_fraction) pairs (at least 1 each side)."""
    n = len(pairs)
    if n < 2:
        raise ValueError(f"a hold-out split needs at least 2 image/mask pairs, got {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    val = set(order[:n_val].tolist())
    return [p for i, p in enumerate(pairs) if i not in val], [p for i, p in enumerate(pairs) if i in val]


# ---------------------------------------------------------------------------- reading
def load_mask(path: str | Path) -> np.ndarray:
    """A mask file as bool [H, W] (True = lesion); ValueError naming the file when it cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot decode mask {path}: {error}") from error
    if array.ndim == 3:  # RGB(A) masks: a pixel is lesion if any colour channel is
        array = array[..., :3].max(axis=2)
    if array.ndim != 2:
        raise ValueError(f"mask {path} has shape {array.shape}, expected [H, W] or [H, W, C]")
    return array > (0 if array.max() <= 1 else 127)


def load_masks(masks: Path | tuple[Path, ...]) -> np.ndarray:
    """One mask, or the union of several lesion masks of one image (same size, else an error naming both)."""
    if not isinstance(masks, tuple):
        return load_mask(masks)
    merged = load_mask(masks[0])
    for path in masks[1:]:
        other = load_mask(path)
        if other.shape != merged.shape:
            raise ValueError(f"lesion masks {masks[0]} ({merged.shape[1]}x{merged.shape[0]}) and {path} "
                             f"({other.shape[1]}x{other.shape[0]}) differ in size")
        merged |= other
    return merged


class SegmentationPairs(Dataset):
    """(image [3, S, S] float normalised, mask [1, S, S] float 0/1, index) from image/mask pairs.

    `transform` takes and returns (tv_tensors.Image uint8 [3, H, W], tv_tensors.Mask uint8 [1, H, W]);
    see joint_transform. The index points back into `pairs` (for writing predictions under their names).
    """

    def __init__(self, pairs: Sequence[Pair], transform: Callable | None = None):
        if not pairs:
            raise ValueError("SegmentationPairs needs at least one image/mask pair")
        self.pairs = [(Path(image), tuple(map(Path, mask)) if isinstance(mask, tuple) else Path(mask))
                      for image, mask in pairs]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The pair at `index` decoded, before any transform; sizes must agree."""
        image_path, mask_path = self.pairs[index]
        image = np.array(load_rgb(image_path))  # [H, W, 3] uint8 (a writable copy for torch)
        mask = load_masks(mask_path)  # [H, W] bool
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} "
                             f"is {mask.shape[1]}x{mask.shape[0]}")
        return (tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
                tv_tensors.Mask(torch.from_numpy(mask).to(torch.uint8).unsqueeze(0)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).float(), index


# ---------------------------------------------------------------------------- joint augmentation
def joint_transform(train: bool, image_size: int, crop_scale: tuple[float, float] = (0.6, 1.0),
                    rotation: float = 15.0, hflip: float = 0.5, vflip: float = 0.0,
                    normalise: bool = True) -> v2.Compose:
    """(Image uint8 [3, H, W], Mask uint8 [1, H, W]) -> (Image float [3, S, S], Mask uint8 [1, S, S]).

    Training: rotation in [-rotation, rotation] (zero fill), RandomResizedCrop(S, crop_scale), flips;
    evaluation: resize to S x S. v2 applies every random draw to both, nearest-neighbour on the mask.
    normalise=False stops at float pixels in [0, 1] (for tests and figures).
    """
    if train:
        ops = [v2.RandomRotation(degrees=rotation, fill=0),
               v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
               v2.RandomHorizontalFlip(hflip),
               v2.RandomVerticalFlip(vflip)]
    else:
        ops = [v2.Resize((image_size, image_size), antialias=True)]
    # Only the image becomes float (scaled to [0, 1]); the mask keeps its 0/1 values.
    ops.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if normalise:
        ops.append(normalize())
    return v2.Compose(ops)
