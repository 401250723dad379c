"""Pretraining augmentations (the paper's, listed below) and the one place ImageNet normalisation is applied.

The loader works on uint8 pixels end to end: a transform maps a decoded image (numpy [H, W] gray or
[H, W, 3] RGB) to a uint8 tensor [C, S, S] (C = 1 or 3), batches stay uint8, and `normalize_batch`
turns a batch into normalised float [B, 3, S, S] once, on the training device (4x fewer bytes to copy
to the GPU than float32, and no per-image float pass on the CPU).

The paper's augmentations (random rotation 0-90 degrees, horizontal and vertical flips with p=0.5,
RandomResizedCrop(S, scale=(0.5, 2.0))) exist in two implementations, chosen by `data.augment`:
  fused        the default: parameters drawn exactly as torchvision draws them, then rotation, flips and
               crop folded into one affine map and applied with one bilinear cv2.warpAffine
  torchvision  the torchvision v2 composition itself (nearest-neighbour rotation, then an antialiased
               bilinear resized crop), slower
and `none` only resizes to S x S.
"""

import math
import random
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from ..constants import IMAGENET_MEAN, IMAGENET_STD

AUGMENTS = ("fused", "torchvision", "none")
ROTATION = (0.0, 90.0)  # degrees, counter-clockwise as in torchvision
FLIP_P = 0.5
CROP_SCALE = (0.5, 2.0)  # fraction of the image area; torchvision caps the crop at the image itself
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's default aspect-ratio range


# ---------------------------------------------------------------------------- normalisation
def normalize() -> v2.Normalize:
    """Per-image normalisation of a float [3, H, W] in [0, 1] (fine-tuning pipelines)."""
    return v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


# Per device: (scale [1, 3, 1, 1] = 1 / (255 std), shift [1, 3, 1, 1] = -mean / std), float32. Built from
# Python lists once per device, because building them every batch is a host-to-device copy, which waits for
# the device (a synchronisation per step).
_NORMALIZE_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalize_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    constants = _NORMALIZE_CONSTANTS.get(device)
    if constants is None:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        constants = _NORMALIZE_CONSTANTS[device] = (1 / (255 * std)).to(device), (-mean / std).to(device)
    return constants


def normalize_batch(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, C, H, W] (C = 3, or 1 for gray, replicated) -> normalised [B, 3, H, W] of `dtype`
    (float32, bfloat16 or float16), on whatever device `x` is on.

    One fused kernel: x / (255 std) - mean / std computed in float32 and rounded once to `dtype`, written
    straight into the output (no float32 intermediate); the constants are cached per device.
    """
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"normalize_batch expects uint8 [B, 1|3, H, W], got {x.dtype} {list(x.shape)}")
    if not dtype.is_floating_point:
        raise ValueError(f"normalize_batch needs a floating-point output dtype, got {dtype}")
    scale, shift = _normalize_constants(x.device)
    out = torch.empty(x.shape[0], 3, *x.shape[2:], dtype=dtype, device=x.device)
    return torch.addcmul(shift, x.expand(-1, 3, -1, -1), scale, out=out)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] normalised -> [0, 1] pixels (for image grids)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def to_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] or [H, W, C] array -> [C, H, W] tensor view (no copy)."""
    return torch.from_numpy(image[..., None] if image.ndim == 2 else image).permute(2, 0, 1)


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class AugmentParams:
    """One draw of the paper's augmentations, in torchvision's terms."""
    angle: float  # degrees, counter-clockwise about the image centre, canvas size kept
    hflip: bool
    vflip: bool
    crop: tuple[int, int, int, int]  # (top, left, height, width) on the rotated, flipped image


def resized_crop_params(rng: random.Random, height: int, width: int, scale=CROP_SCALE,
                        ratio=CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop draws them, step for step: up to 10 tries of
    a uniform area fraction and a log-uniform aspect ratio, the first that fits wins (offsets uniform),
    else the central crop at the nearest allowed ratio."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            return top, rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_params(rng: random.Random, height: int, width: int) -> AugmentParams:
    """The draws of v2.Compose([RandomRotation((0, 90)), RandomHorizontalFlip(), RandomVerticalFlip(),
    RandomResizedCrop(S, scale=(0.5, 2.0))]) in the same order and distributions (rotation keeps the
    canvas, so the crop is drawn on the input size)."""
    angle = rng.uniform(*ROTATION)
    hflip = rng.random() < FLIP_P
    vflip = rng.random() < FLIP_P
    return AugmentParams(angle, hflip, vflip, resized_crop_params(rng, height, width))


# ---------------------------------------------------------------------------- the fused warp
def fused_matrix(height: int, width: int, size: int, p: AugmentParams) -> np.ndarray:
    """2x3 map from output pixel (u, v) to source pixel (x, y) of rotate -> flips -> resized crop.

    Composed backwards from the output, in pixel-centre coordinates: the resize with align_corners=False
    (x = left + (u + 0.5) w / S - 0.5), undo the vertical then the horizontal flip, undo the
    counter-clockwise rotation about the centre ((W - 1) / 2, (H - 1) / 2), as torchvision's tensor rotate.
    """
    top, left, h, w = p.crop
    m = np.array([[w / size, 0, left + 0.5 * w / size - 0.5], [0, h / size, top + 0.5 * h / size - 0.5], [0, 0, 1]])
    if p.vflip:
        m = np.array([[1, 0, 0], [0, -1, height - 1], [0, 0, 1]]) @ m
    if p.hflip:
        m = np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]]) @ m
    cx, cy = (width - 1) / 2, (height - 1) / 2
    c, s = math.cos(math.radians(p.angle)), math.sin(math.radians(p.angle))
    rotate_back = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1]])
    return (rotate_back @ m)[:2]


def fused_warp(image: np.ndarray, p: AugmentParams, size: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> the augmented [S, S] or [S, S, 3], one bilinear resampling.

    Shards store images at the training size, so the crop (never larger than the image) is only ever
    enlarged. When it must shrink (larger stored images), the whole image is first reduced with area
    averaging so the bilinear warp does not alias, as torchvision's antialiased resize would.
    """
    height, width = image.shape[:2]
    m = fused_matrix(height, width, size, p)
    shrink = max(p.crop[2], p.crop[3]) / size
    if shrink > 1:
        image = cv2.resize(image, (max(1, round(width / shrink)), max(1, round(height / shrink))),
                           interpolation=cv2.INTER_AREA)
        sx, sy = image.shape[1] / width, image.shape[0] / height
        m = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]) @ np.vstack([m, [0, 0, 1]])
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class FusedAugment:
    """The paper's augmentations as one cv2.warpAffine: uint8 [H, W(, 3)] array -> uint8 [C, S, S].

    Each image's parameters come from a Python RNG seeded by one draw from torch's global generator, which
    the stream seeds per batch, so the augmentations are reproducible and a resumed run repeats them
    (one torch draw instead of torchvision's ~8 scalar draws, which cost more than the warp itself).
    """

    def __init__(self, size: int):
        self.size = size

    def params(self, height: int, width: int) -> AugmentParams:
        return draw_params(random.Random(int(torch.randint(2**62, (1,)))), height, width)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return to_chw(fused_warp(image, self.params(*image.shape[:2]), self.size))


class TorchvisionAugment:
    """The same augmentations with torchvision's v2 transforms on the uint8 tensor (torch's global RNG)."""

    def __init__(self, size: int):
        self.size = size
        self.ops = v2.Compose([v2.RandomRotation(degrees=ROTATION), v2.RandomHorizontalFlip(FLIP_P),
                               v2.RandomVerticalFlip(FLIP_P),
                               v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True)])

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.ops(to_chw(image))


class Resize:
    """No augmentation: resize to S x S (area averaging to shrink, bilinear to enlarge)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.shape[:2] != (self.size, self.size):
            shrink = image.shape[0] * image.shape[1] > self.size * self.size
            image = cv2.resize(image, (self.size, self.size),
                               interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return to_chw(image)


def pretrain_transform(image_size: int, augment: str = "fused") -> Callable[[np.ndarray], torch.Tensor]:
    """Decoded uint8 image -> uint8 [C, S, S]; `augment` is one of AUGMENTS (see the module docstring)."""
    kinds = {"fused": FusedAugment, "torchvision": TorchvisionAugment, "none": Resize}
    if augment not in kinds:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    return kinds[augment](image_size)
