"""One segmentation fine-tuning run: Dice + BCE loss, AdamW, keep the best validation-Dice epoch.

    result = train_segmentation(model, train_set, val_set, cfg, out_dir)

Writes into out_dir: history.json (one record per epoch), metrics.json (the best epoch's Dice/IoU, per
image and pooled), masks/<image stem>.png (the best epoch's predictions for the validation images,
0/255 at each image's original size) and, if cfg.save_model, best_model.pt. Validation metrics are
computed at each image's original resolution: probabilities are resized back bilinearly before the
threshold, as a reader comparing against the dataset's own masks would do. One process (CPU or one GPU).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from ...optim import lr_at, param_groups
from .config import SegmentationConfig
from .data import SegmentationPairs, load_masks
from .metrics import binarize, segmentation_metrics
from .model import SegmentationViT


@dataclass
class SegResult:
    metrics: dict  # segmentation_metrics of the best epoch, plus best_epoch
    best_epoch: int  # 0-based
    history: list[dict]
    probs: list[np.ndarray]  # best epoch's validation probabilities [H_i, W_i], original sizes


class DiceBCELoss(nn.Module):
    """dice_weight x (1 - soft Dice, averaged over images) + bce_weight x BCE-with-logits.

    Soft Dice per image: (2 sum(p t) + 1) / (sum(p) + sum(t) + 1); the +1 keeps images without a
    lesion from dividing by zero and rewards predicting nothing there.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target [N, 1, H, W] (target 0/1 float) -> scalar loss."""
        probs = torch.sigmoid(logits).flatten(1)  # [N, H*W]
        flat = target.flatten(1)
        dice = (2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)  # [N]
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.dice_weight * (1 - dice.mean()) + self.bce_weight * bce


def build_optimizer(model: SegmentationViT, cfg: SegmentationConfig) -> torch.optim.AdamW:
    """AdamW: decoder at lr, encoder at lr x encoder_lr_scale (frozen: absent); no decay on 1-D
    parameters (biases, norms) and the ViT's tokens and position embeddings."""
    groups = param_groups(model.decoder, cfg.weight_decay)
    if not cfg.freeze_encoder:
        groups += param_groups(model.encoder, cfg.weight_decay, lr_scale=cfg.encoder_lr_scale)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def predict(model: nn.Module, dataset: SegmentationPairs, batch_size: int, device: torch.device,
            num_workers: int = 0) -> list[np.ndarray]:
    """Foreground probabilities of every image in dataset order, resized back to its original size."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = [np.zeros(0)] * len(dataset)
    for images, _, indices in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        probs = torch.sigmoid(model(images.to(device)).float())[:, 0].cpu().numpy()  # [B, S, S]
        for prob, index in zip(probs, indices.tolist()):
            out[index] = cv2.resize(prob, image_size(dataset.pairs[index][0]), interpolation=cv2.INTER_LINEAR)
    model.train(was_training)
    return out


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.size


def evaluate(model: nn.Module, dataset: SegmentationPairs, threshold: float, batch_size: int,
             device: torch.device, num_workers: int = 0) -> tuple[dict, list[np.ndarray]]:
    """(segmentation_metrics at original resolution, probabilities) of `model` on `dataset`."""
    probs = predict(model, dataset, batch_size, device, num_workers)
    targets = [load_masks(mask) for _, mask in dataset.pairs]
    names = [image.stem for image, _ in dataset.pairs]
    return segmentation_metrics([binarize(p, threshold) for p in probs], targets, names), probs


def _train_epoch(model, loader, opt, criterion, cfg: SegmentationConfig, epoch: int, steps_per_epoch: int,
                 device: torch.device) -> float:
    """One pass over the training set; returns the mean loss. The lr is set per step."""
    model.train()
    if cfg.freeze_encoder:
        model.encoder.eval()  # no drop-path noise in a frozen encoder
    total_steps, warmup = cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
    losses = []
    for i, (images, masks, _) in enumerate(loader):
        lr = lr_at(epoch * steps_per_epoch + i, total_steps, cfg.lr, cfg.min_lr, warmup)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss = criterion(model(images.to(device)), masks.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite segmentation loss {loss.item()} at epoch {epoch + 1}, step {i}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.clip_grad)
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def write_masks(out_dir: Path, dataset: SegmentationPairs, probs: list[np.ndarray], threshold: float) -> Path:
    """Predicted masks as 0/255 PNGs named after their images; returns the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for (image, _), prob in zip(dataset.pairs, probs):
        path = out_dir / f"{image.stem}.png"
        if not cv2.imwrite(str(path), binarize(prob, threshold).astype(np.uint8) * 255):
            raise OSError(f"could not write mask PNG {path}")
    return out_dir


def train_segmentation(model: SegmentationViT, train_set: SegmentationPairs, val_set: SegmentationPairs,
                       cfg: SegmentationConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                       device: torch.device | str | None = None) -> SegResult:
    """Fine-tune `model`, keep the epoch of best mean validation Dice, write its outputs into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)

    # Step 1: loader, loss, optimizer.
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_set) > cfg.batch_size,
                        num_workers=cfg.num_workers, generator=generator)
    criterion = DiceBCELoss(cfg.dice_weight, cfg.bce_weight)
    opt = build_optimizer(model, cfg)

    # Step 2: epochs; the best validation Dice's weights stay in memory.
    history, best = [], None
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        train_loss = _train_epoch(model, loader, opt, criterion, cfg, epoch, len(loader), device)
        metrics, probs = evaluate(model, val_set, cfg.threshold, cfg.batch_size, device, cfg.num_workers)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_dice": metrics["dice"],
                  "val_iou": metrics["iou"], "seconds": time.perf_counter() - start}
        history.append(record)
        log(f"[seg] epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.4f}, val Dice {metrics['dice']:.4f}, "
            f"IoU {metrics['iou']:.4f} ({record['seconds']:.1f}s)")
        if best is None or metrics["dice"] > best[1]["dice"]:
            best = (epoch, metrics, probs, copy.deepcopy(model.state_dict()))

    # Step 3: the best epoch's outputs.
    best_epoch, metrics, probs, state = best
    model.load_state_dict(state)
    metrics = {**metrics, "best_epoch": best_epoch + 1}
    (out / "history.json").write_text(json.dumps(history, indent=1))
    if cfg.save_masks:
        write_masks(out / "masks", val_set, probs, cfg.threshold)
    if cfg.save_model:
        torch.save(state, out / "best_model.pt")
    return SegResult(metrics, best_epoch, history, probs)
