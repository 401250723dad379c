"""Segmentation fine-tuning parts: metrics, loss, mask layouts, joint augmentation, model shapes and loading."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from usfmae.checkpoint import save_safetensors
from usfmae.finetune.segmentation.config import SegmentationConfig
from usfmae.finetune.segmentation.data import (SegmentationPairs, busbra_pairs, find_pairs, folder_pairs, holdout,
                                      joint_transform, load_mask)
from usfmae.finetune.segmentation.run import split_pairs
from usfmae.finetune.segmentation.metrics import binarize, dice_iou, segmentation_metrics
from usfmae.finetune.segmentation.train import DiceBCELoss
from usfmae.finetune.segmentation.model import build_segmenter
from usfmae.model import create_model


# ---------------------------------------------------------------------------- metrics
def test_dice_iou_hand_computed():
    pred = np.array([[1, 1, 0], [0, 0, 0]], bool)
    true = np.array([[1, 0, 0], [1, 0, 0]], bool)
    # |P ∩ T| = 1, |P| = 2, |T| = 2: Dice 2/4, IoU 1/3
    assert dice_iou(pred, true) == pytest.approx((0.5, 1 / 3))
    assert dice_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == (1.0, 1.0)  # nothing to find
    assert dice_iou(np.zeros((2, 2), bool), np.eye(2, dtype=bool)) == (0.0, 0.0)
    assert dice_iou(np.eye(2, dtype=bool), np.eye(2, dtype=bool)) == (1.0, 1.0)


def test_segmentation_metrics_means_and_pooled():
    a_pred = np.array([[1, 1, 0], [0, 0, 0]], bool)
    a_true = np.array([[1, 0, 0], [1, 0, 0]], bool)  # Dice 1/2, IoU 1/3
    b_pred = np.ones((2, 2), bool)
    b_true = np.array([[1, 1], [0, 0]], bool)  # inter 2, |P| 4, |T| 2: Dice 4/6, IoU 2/4
    m = segmentation_metrics([a_pred, b_pred], [a_true, b_true], names=["a", "b"])
    assert m["dice"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["iou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert m["dice_pooled"] == pytest.approx(2 * 3 / (6 + 4))  # counts summed first
    assert m["iou_pooled"] == pytest.approx(3 / (6 + 4 - 3))
    assert [row["name"] for row in m["per_image"]] == ["a", "b"]
    assert m["per_image"][1]["pred_pixels"] == 4 and m["per_image"][1]["true_pixels"] == 2


def test_binarize_threshold_and_shape_errors():
    probs = np.array([0.49, 0.5, 0.51, 0.0])
    assert binarize(probs).tolist() == [False, True, True, False]
    assert binarize(probs, 0.75).tolist() == [False, False, False, False]
    with pytest.raises(ValueError, match="shape"):
        dice_iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="predictions"):
        segmentation_metrics([np.zeros((2, 2), bool)], [])


def test_dice_bce_loss_rewards_the_right_mask():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 3:7] = 1
    loss = DiceBCELoss()
    right, wrong = loss(20 * (2 * target - 1), target), loss(-20 * (2 * target - 1), target)
    assert right.item() < 0.01 < 1.5 < wrong.item()
    # Only BCE: equals torch's BCE-with-logits.
    logits = torch.randn(2, 1, 8, 8)
    bce_only = DiceBCELoss(dice_weight=0.0)(logits, target)
    assert bce_only.item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item())


# ---------------------------------------------------------------------------- layouts and reading
def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def test_folder_pairs_match_by_stem_and_name_missing_files(tmp_path):
    for stem in ("b", "a"):
        _png(tmp_path / "images" / f"{stem}.png", np.zeros((8, 8, 3)))
        _png(tmp_path / "masks" / f"{stem}.png", np.zeros((8, 8)))
    pairs = folder_pairs(tmp_path)
    assert [(i.name, m.name) for i, m in pairs] == [("a.png", "a.png"), ("b.png", "b.png")]
    _png(tmp_path / "images" / "c.png", np.zeros((8, 8, 3)))
    with pytest.raises(FileNotFoundError, match="c.png"):
        folder_pairs(tmp_path)
    (tmp_path / "images" / "c.png").unlink()
    _png(tmp_path / "masks" / "d.png", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="d.png"):
        folder_pairs(tmp_path)


def _busbra(root, ids, folds):
    base = root / "BUSBRA"
    for image_id, fold in zip(ids, folds):
        _png(base / "Images" / f"{image_id}.png", np.full((6, 6), 90))
        _png(base / "Masks" / f"{image_id.replace('bus_', 'mask_')}.png", np.pad(np.full((2, 2), 255), 2))
    rows = "\n".join(f"{i},{f}" for i, f in zip(ids, folds))
    (base / "5-fold-cv.csv").write_text(f"ID,kFold\n{rows}\n")
    return base


def test_busbra_layout_pairs_and_official_fold(tmp_path):
    ids = ["bus_0001-l", "bus_0001-r", "bus_0002-l", "bus_0003-s"]
    _busbra(tmp_path, ids, [1, 1, 2, 3])
    pairs = busbra_pairs(tmp_path)  # the parent of BUSBRA/ works as well as BUSBRA/ itself
    assert [(i.stem, m.stem) for i, m in pairs] == [(i, i.replace("bus_", "mask_")) for i in ids]
    assert find_pairs(tmp_path / "BUSBRA") == pairs  # auto-detected layout
    train, val = split_pairs(SegmentationConfig(data=str(tmp_path), fold=1))
    assert [p[0].stem for p in val] == ["bus_0001-l", "bus_0001-r"]
    assert [p[0].stem for p in train] == ["bus_0002-l", "bus_0003-s"]
    (tmp_path / "BUSBRA" / "Masks" / "mask_0003-s.png").unlink()
    with pytest.raises(FileNotFoundError, match="bus_0003-s"):
        busbra_pairs(tmp_path)


def test_fold_needs_busbra_and_holdout_is_seeded(tmp_path):
    for i in range(10):
        _png(tmp_path / "images" / f"{i}.png", np.zeros((8, 8, 3)))
        _png(tmp_path / "masks" / f"{i}.png", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="BUS-BRA"):
        split_pairs(SegmentationConfig(data=str(tmp_path), fold=2))
    pairs = folder_pairs(tmp_path)
    train, val = holdout(pairs, 0.3, seed=5)
    assert len(val) == 3 and len(train) == 7 and not set(train) & set(val)
    assert holdout(pairs, 0.3, seed=5) == (train, val)
    assert holdout(pairs, 0.3, seed=6) != (train, val)


def test_load_mask_conventions_and_errors(tmp_path):
    mask = np.zeros((5, 5), np.uint8)
    mask[1:3, 2:4] = 1
    assert load_mask(_png(tmp_path / "m01.png", mask)).tolist() == (mask == 1).tolist()  # 0/1 masks
    assert load_mask(_png(tmp_path / "m255.png", mask * 255)).tolist() == (mask == 1).tolist()  # 0/255
    noisy = mask * 250 + 3  # JPEG-like ringing around 0 stays background
    assert load_mask(_png(tmp_path / "noisy.png", noisy)).tolist() == (mask == 1).tolist()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="bad.png"):
        load_mask(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        load_mask(tmp_path / "gone.png")


def test_image_and_mask_of_different_sizes_are_an_error(tmp_path):
    image = _png(tmp_path / "images" / "x.png", np.zeros((8, 8, 3)))
    mask = _png(tmp_path / "masks" / "x.png", np.zeros((8, 9)))
    with pytest.raises(ValueError, match="x.png"):
        SegmentationPairs([(image, mask)])[0]


# ---------------------------------------------------------------------------- joint augmentation
def _l_shape(side: int = 64) -> np.ndarray:
    """An asymmetric L-shaped lesion, off centre: any flip or rotation moves it visibly."""
    mask = np.zeros((side, side), bool)
    mask[10:40, 12:22] = True
    mask[30:40, 12:45] = True
    return mask


def test_joint_augmentation_keeps_image_and_mask_aligned():
    mask = _l_shape()
    image = tv_tensors.Image(torch.from_numpy(np.repeat(mask[None] * 255, 3, 0).astype(np.uint8)))
    target = tv_tensors.Mask(torch.from_numpy(mask[None].astype(np.uint8)))
    aug = joint_transform(True, 48, crop_scale=(0.5, 1.0), rotation=40, hflip=0.5, vflip=0.5, normalise=False)
    plain = torch.from_numpy(mask[None])
    moved = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_mask = aug(image, target)
        assert out_image.shape == (3, 48, 48) and out_mask.shape == (1, 48, 48)
        assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {0, 1}  # nearest: no blending
        drawn = out_image[0] > 0.5  # the image's own copy of the lesion after the transform
        disagree = (drawn != out_mask[0].bool()).float().mean().item()
        assert disagree < 0.03, f"seed {seed}: image and mask disagree on {disagree:.1%} of pixels"
        resized = torch.nn.functional.interpolate(plain[None].float(), size=(48, 48))[0, 0].bool()
        moved += (resized != out_mask[0].bool()).float().mean().item() > 0.05
    assert moved >= 6  # the augmentation really moves things, so the agreement above means something


def test_separately_augmented_pairs_would_disagree():
    """The check above can fail: the same transform drawn twice (two draws) misaligns image and mask."""
    mask = _l_shape()
    image = tv_tensors.Image(torch.from_numpy(np.repeat(mask[None] * 255, 3, 0).astype(np.uint8)))
    target = tv_tensors.Mask(torch.from_numpy(mask[None].astype(np.uint8)))
    aug = joint_transform(True, 48, crop_scale=(0.5, 1.0), rotation=40, hflip=0.5, vflip=0.5, normalise=False)
    worst = 0.0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image = aug(image)
        out_mask = aug(target)
        worst = max(worst, ((out_image[0] > 0.5) != out_mask[0].bool()).float().mean().item())
    assert worst > 0.05


def test_dataset_items_are_normalised_images_and_binary_masks(tmp_path):
    mask = _l_shape(40)
    image = _png(tmp_path / "images" / "x.png", np.repeat(mask[..., None] * 200, 3, 2))
    mask_path = _png(tmp_path / "masks" / "x.png", mask * 255)
    x, y, index = SegmentationPairs([(image, mask_path)], joint_transform(False, 32))[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() < -1  # ImageNet-normalised
    assert y.shape == (1, 32, 32) and set(y.unique().tolist()) == {0.0, 1.0} and index == 0


# ---------------------------------------------------------------------------- model
def test_segmenter_shapes_and_encoder_weights(tmp_path):
    mae = create_model("mae_vit_tiny_patch8")
    path = save_safetensors(mae.state_dict(), tmp_path / "m.safetensors",
                            {"format": "usfmae-mae", "preset": "mae_vit_tiny_patch8", "model_overrides": {}})
    model, report = build_segmenter(str(path), decoder_widths=[32, 16])
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(model.encoder.blocks[1].attn.qkv.weight, mae.blocks[1].attn.qkv.weight)
    assert torch.equal(model.encoder.norm.weight, mae.norm.weight)
    assert len(model.decoder.stages) == 3  # 8x8 grid -> 64x64: log2(8) doublings
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 64, 64)
    # Another input size: position embeddings are resampled, the output follows the input.
    bigger, report = build_segmenter(str(path), image_size=96)
    assert any("pos_embed" in line for line in report.adapted)
    assert bigger(torch.randn(1, 3, 96, 96)).shape == (1, 1, 96, 96)


def test_segmenter_without_checkpoint_needs_a_preset():
    model, report = build_segmenter(None, preset="mae_vit_tiny_patch8", decoder_widths=[16])
    assert report is None and model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
