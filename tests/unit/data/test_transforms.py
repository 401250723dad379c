"""Pretraining augmentations: the fused warp against torchvision, parameter draws, normalisation on the device."""

import random

import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from usfmae.constants import IMAGENET_MEAN, IMAGENET_STD
from usfmae.testing.synthetic import generate_ultrasound
from usfmae.data.transforms import (CROP_RATIO, CROP_SCALE, ROTATION, AugmentParams, FusedAugment, denormalize,
                                    draw_params, fused_warp, normalize_batch, pretrain_transform, to_chw)


class TorchRandom:
    """The random.Random calls draw_params makes, answered by torch's global RNG the way torchvision draws."""

    def uniform(self, a, b):
        return torch.empty(1).uniform_(a, b).item()

    def random(self):
        return torch.rand(1).item()

    def randint(self, a, b):
        return torch.randint(a, b + 1, size=(1,)).item()


def scan(size=64, seed=0, blur=2.0) -> np.ndarray:
    """A synthetic RGB scan, blurred so that comparisons measure geometry, not resampling of speckle."""
    img = generate_ultrasound(seed, size, overlays=False).image
    return cv2.GaussianBlur(img, (0, 0), blur) if blur else img


def asymmetric(h=40, w=48) -> np.ndarray:
    """Distinct value at every pixel: any wrong flip, rotation sense or offset shows."""
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


def torchvision_reference(image: np.ndarray, p: AugmentParams, size: int, rotate=InterpolationMode.BILINEAR):
    """torchvision's functional ops with the same parameters, in the v2 composition's order, as float."""
    x = to_chw(image).float()
    x = F.rotate(x, p.angle, rotate)
    x = F.horizontal_flip(x) if p.hflip else x
    x = F.vertical_flip(x) if p.vflip else x
    return F.resized_crop(x, *p.crop, [size, size], antialias=True)


def test_parameters_are_drawn_exactly_as_torchvision_draws_them():
    rot, rrc = v2.RandomRotation(ROTATION), v2.RandomResizedCrop(32, scale=CROP_SCALE, ratio=CROP_RATIO)
    dummy = torch.zeros(3, 50, 70, dtype=torch.uint8)  # non-square: the fallback and offsets both matter
    fallbacks = 0
    for seed in range(300):
        torch.manual_seed(seed)
        mine = draw_params(TorchRandom(), 50, 70)
        torch.manual_seed(seed)  # v2.Compose's draws, in its order
        angle = rot.make_params([dummy])["angle"]
        hflip, vflip = torch.rand(1).item() < 0.5, torch.rand(1).item() < 0.5
        c = rrc.make_params([dummy])
        assert mine == AugmentParams(angle, hflip, vflip, (c["top"], c["left"], c["height"], c["width"]))
        fallbacks += mine.crop == (0, 3, 50, 64)  # central crop at ratio 4/3 after 10 misses
    assert fallbacks > 0  # scale up to 2.0 makes torchvision fall back often; we must too


def test_fused_draws_cover_torchvision_ranges_and_follow_the_seed():
    aug = FusedAugment(32)
    torch.manual_seed(5)
    draws = [aug.params(64, 64) for _ in range(400)]
    torch.manual_seed(5)
    assert draws == [aug.params(64, 64) for _ in range(400)]  # reproducible from torch's seed
    angles = np.array([d.angle for d in draws])
    assert 0 <= angles.min() < 10 and 80 < angles.max() <= 90
    assert 0.4 < np.mean([d.hflip for d in draws]) < 0.6 and 0.4 < np.mean([d.vflip for d in draws]) < 0.6
    areas = np.array([d.crop[2] * d.crop[3] for d in draws]) / 64**2
    assert areas.min() >= 0.45 and areas.max() <= 1.0  # crops never exceed the image (torchvision semantics)


@pytest.mark.parametrize("seed", range(12))
def test_fused_warp_matches_torchvision_composition(seed):
    image = scan(64, seed)
    p = draw_params(random.Random(seed), 64, 64)
    mine = to_chw(fused_warp(image, p, 64)).float()
    ref = torchvision_reference(image, p, 64)
    diff = (mine - ref).abs()
    # same geometry: within a fraction of a gray level on average; single pixels differ at the black
    # border left by the rotation (bilinear on both sides of it) and by one vs two resamplings
    assert diff.mean() < 0.5 and torch.quantile(diff, 0.99) < 3  # (one pixel off in the crop: ~4.5)
    # the library's torchvision path rotates with nearest neighbour (torchvision's default): looser
    nearest = torchvision_reference(image, p, 64, InterpolationMode.NEAREST)
    assert (mine - nearest).abs().mean() < 1.6


def test_fused_warp_antialiases_crops_larger_than_the_output():
    image = scan(128, 3, blur=0)  # raw speckle: aliasing would show
    for seed in range(6):
        p = draw_params(random.Random(seed), 128, 128)
        mine = to_chw(fused_warp(image, p, 48)).float()
        ref = torchvision_reference(image, p, 48)
        assert (mine - ref).abs().mean() < 2.5


def test_flip_rotation_and_crop_semantics_are_exact():
    img = asymmetric(40, 48)
    full = (0, 0, 40, 48)

    def warp(angle=0.0, h=False, v=False, crop=full, size=None):
        return fused_warp(img, AugmentParams(angle, h, v, crop), size or crop[2])

    square = asymmetric(40, 40)
    assert np.array_equal(fused_warp(square, AugmentParams(0.0, False, False, (0, 0, 40, 40)), 40), square)
    assert np.array_equal(fused_warp(square, AugmentParams(0.0, True, False, (0, 0, 40, 40)), 40), square[:, ::-1])
    assert np.array_equal(fused_warp(square, AugmentParams(0.0, False, True, (0, 0, 40, 40)), 40), square[::-1])
    # counter-clockwise, as torchvision (and np.rot90) turn
    rot = fused_warp(square, AugmentParams(90.0, False, False, (0, 0, 40, 40)), 40)
    assert np.abs(rot.astype(int) - np.rot90(square).astype(int)).max() <= 1
    assert torch.equal(F.rotate(to_chw(square), 90.0), to_chw(np.ascontiguousarray(np.rot90(square))))
    # a crop the size of the output is a plain sub-array: top, left, height, width as torchvision orders them
    assert np.array_equal(warp(crop=(7, 3, 20, 20)), img[7:27, 3:23])
    # flips apply to the rotated image before the crop: crop of the flipped image, not flip of the crop
    assert np.array_equal(warp(h=True, crop=(7, 3, 20, 20)), img[:, ::-1][7:27, 3:23])
    assert np.array_equal(warp(v=True, crop=(2, 10, 20, 20)), img[::-1][2:22, 10:30])
    # and torchvision agrees on all of it
    p = AugmentParams(0.0, True, True, (5, 9, 24, 24))
    assert torch.equal(to_chw(fused_warp(img, p, 24)).float(), torchvision_reference(img, p, 24))


def test_gray_stays_one_channel_and_colour_three():
    gray = scan(64)[..., 0].copy()
    torch.manual_seed(0)
    for kind in ("fused", "torchvision", "none"):
        t = pretrain_transform(32, kind)
        g, c = t(gray), t(scan(64))
        assert g.shape == (1, 32, 32) and c.shape == (3, 32, 32) and g.dtype == c.dtype == torch.uint8
    with pytest.raises(ValueError, match="fused, torchvision, none"):
        pretrain_transform(32, "paper")


def test_normalize_batch_replicates_gray_and_round_trips():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = normalize_batch(x)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and torch.allclose(out, (x / 255 - mean) / std, atol=1e-5)
    assert torch.allclose(denormalize(out), x / 255, atol=1e-6)
    gray = x[:, :1]
    assert torch.allclose(normalize_batch(gray), normalize_batch(gray.expand(-1, 3, -1, -1).contiguous()))
    assert normalize_batch(gray, torch.bfloat16).dtype == torch.bfloat16
    assert gray.shape[1] == 1  # the input is not modified
    with pytest.raises(ValueError, match="uint8"):
        normalize_batch(out)
    with pytest.raises(ValueError, match="floating-point output dtype"):
        normalize_batch(x, torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_normalize_batch_rounds_once_to_each_training_dtype(dtype):
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    x[0, :, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)  # the extremes
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    exact = (x.double() / 255 - mean.double()) / std.double()
    out = normalize_batch(x, dtype)
    assert out.dtype == dtype and out.shape == (2, 3, 8, 8)
    # float32 arithmetic (terms up to ~2.6) rounded once to the dtype: within its rounding of the result
    eps = torch.finfo(dtype).eps
    assert torch.allclose(out.double(), exact, rtol=eps, atol=4 * eps)


def test_normalize_batch_builds_its_constants_once_per_device():
    from usfmae.data import transforms

    from syncutil import SyncRecorder

    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    normalize_batch(x)
    with SyncRecorder() as rec:  # later batches: no tensor built from Python data, no copy to the device
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            normalize_batch(x, dtype)
    assert rec.calls == []
    normalize_batch(x.to("meta"), torch.bfloat16)  # another device gets its own constants
    assert {torch.device("cpu"), torch.device("meta")} <= set(transforms._NORMALIZE_CONSTANTS)
