"""One 16-bit scan, two paths: what pretraining and fine-tuning hand the encoder must agree.

Pretraining: reader -> cleaning -> shard sample (run_local) -> stream decode -> resize -> normalize_batch.
Fine-tuning: FolderDataset (load_rgb) -> evaluation transform. Same size, no augmentation, so the only
difference allowed is one uint8 step (rounding).
"""

import json

import cv2
import numpy as np
import torch
import webdataset as wds

from usfmae.constants import IMAGENET_STD
from usfmae.data.stream import decode_image, stack_images
from usfmae.data.transforms import denormalize, normalize_batch, pretrain_transform
from usfmae.data.labelled import FolderDataset, transforms_for
from usfmae.io import iter_frames
from usfmae.shards.build import run_local
from usfmae.shards.config import BuildConfig

SIZE = 32
OFF = {"enabled": False}
NO_CLEANING = {step: OFF for step in ("text", "colour", "grayscale", "lines", "dots", "crosses", "fills", "border",
                                      "sector")}


def scan_16bit() -> np.ndarray:
    """[SIZE, SIZE] uint16 speckle-like texture spanning 1000..40000 (not the full 16-bit range)."""
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.random((SIZE, SIZE)), (5, 5), 0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return (1000 + texture * 39000).round().astype(np.uint16)


def pretraining_input(folder, out) -> torch.Tensor:
    cfg = BuildConfig.model_validate({"datasets": [{"name": "deep", "path": str(folder)}], "output": str(out),
                                      "salt": "s", "shard_size": 4, "image_size": SIZE, "cleaning": NO_CLEANING})
    report = run_local(cfg)
    assert report["samples"] == 1, report
    shards = [str(out / s["name"]) for s in json.loads((out / "manifest.json").read_text())["shards"]]
    (sample,) = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
    image = pretrain_transform(SIZE, "none")(decode_image(sample))
    return normalize_batch(stack_images([image]))[0]  # [3, S, S], as the trainer normalises a batch


def test_same_16_bit_scan_reaches_the_encoder_with_the_same_intensities(tmp_path):
    pixels = scan_16bit()
    for folder in (tmp_path / "pre", tmp_path / "ft" / "class_a"):
        folder.mkdir(parents=True)
        assert cv2.imwrite(str(folder / "scan.png"), pixels)
    pretrain = pretraining_input(tmp_path / "pre", tmp_path / "shards")
    finetune, _ = FolderDataset(tmp_path / "ft", transforms_for(train=False, image_size=SIZE))[0]
    assert finetune.shape == pretrain.shape == (3, SIZE, SIZE)
    # In [0, 1] pixel units the two agree to one uint8 step; the stretch used the whole 8-bit range.
    pre01, ft01 = denormalize(pretrain[None])[0], denormalize(finetune[None])[0]
    assert (pre01 - ft01).abs().max().item() <= 1 / 255 + 1e-6
    assert pre01.min().item() == 0.0 and pre01.max().item() == 1.0
    assert (pretrain - finetune).abs().max().item() <= 1 / (255 * min(IMAGENET_STD)) + 1e-5


def test_a_16_bit_png_in_a_shard_decodes_as_the_readers_read_it(tmp_path):
    # Shards from other tools may hold 16-bit PNGs: the stream converts them by the same rule as the readers.
    pixels = scan_16bit()
    ok, png = cv2.imencode(".png", pixels)
    (tmp_path / "scan.png").write_bytes(png.tobytes())
    (frame,) = list(iter_frames(tmp_path / "scan.png"))
    assert np.array_equal(decode_image({"__key__": "k", "png": png.tobytes()}), frame.image)
