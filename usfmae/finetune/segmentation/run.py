"""Segmentation fine-tuning wiring: config -> data split -> model -> training -> outputs (its command line is
`usfmae finetune --task segmentation`, usfmae/commands/finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ...eval.folds import seed_everything
from .config import SegmentationConfig
from ..labelled_folder import scan_labelled_folder
from .data import (Pair, SegmentationPairs, busbra_folds, detect_layout, find_pairs, group_holdout, holdout,
                   joint_transform)
from .model import build_segmenter
from .train import train_segmentation


def split_pairs(cfg: SegmentationConfig) -> tuple[list[Pair], list[Pair]]:
    """(train, val) pairs: val_data if given, else BUS-BRA's official fold, else a seeded hold-out (group-aware
    for a labelled folder)."""
    if cfg.data is None:
        raise ValueError("no data: give data (images/ + masks/ folders, or BUS-BRA's BUSBRA/ folder)")
    layout = detect_layout(cfg.data) if cfg.layout == "auto" else cfg.layout
    if layout == "classes" and cfg.val_data is None and cfg.fold is None:
        return group_holdout(scan_labelled_folder(cfg.data, cfg.groups), cfg.val_fraction, cfg.seed)
    pairs = find_pairs(cfg.data, cfg.layout, cfg.groups)
    if cfg.val_data is not None:
        return pairs, find_pairs(cfg.val_data, cfg.layout)
    if cfg.fold is not None:
        if layout != "busbra":
            raise ValueError(f"fold={cfg.fold} needs BUS-BRA's layout (official folds); {cfg.data} is '{layout}'")
        folds = busbra_folds(cfg.data)
        missing = [str(image) for image, _ in pairs if image.stem not in folds]
        if missing:
            raise ValueError(f"{len(missing)} BUS-BRA image(s) are not in 5-fold-cv.csv: {missing[:5]}")
        val = [p for p in pairs if folds[p[0].stem] == cfg.fold]
        return [p for p in pairs if folds[p[0].stem] != cfg.fold], val
    return holdout(pairs, cfg.val_fraction, cfg.seed)


def run_segmentation(cfg: SegmentationConfig, log: Callable[[str], None] = print) -> dict:
    """Train and evaluate as cfg says; writes the run's files and returns metrics.json's content."""
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)

    # Step 1: model (the seed fixes the decoder's initialisation), then its input size.
    model, report = build_segmenter(cfg.checkpoint, cfg.preset, cfg.image_size, cfg.decoder_widths, cfg.drop_path)
    loading = str(report) if report is not None else "encoder: random init (no checkpoint)"
    log(loading)
    size = model.encoder.patch_embed.img_size[0] if cfg.image_size is None else cfg.image_size

    # Step 2: data, augmented jointly (image and mask) for training.
    train_pairs, val_pairs = split_pairs(cfg)
    aug = dict(crop_scale=cfg.crop_scale, rotation=cfg.rotation, hflip=cfg.hflip, vflip=cfg.vflip)
    train_set = SegmentationPairs(train_pairs, joint_transform(cfg.augment, size, **aug))
    val_set = SegmentationPairs(val_pairs, joint_transform(False, size))
    log(f"[seg] {len(train_set)} train / {len(val_set)} val pairs, input {size}px, seed {cfg.seed}")

    # Step 3: train, keep the best validation Dice; write the summary beside the run's other files.
    result = train_segmentation(model, train_set, val_set, cfg, out, log)
    summary = {**result.metrics, "loading": loading, "train_images": len(train_set), "val_images": len(val_set),
               "input_size": size, "seed": cfg.seed}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    log(f"[seg] best epoch {summary['best_epoch']}: Dice {summary['dice']:.4f}, IoU {summary['iou']:.4f} "
        f"(pooled Dice {summary['dice_pooled']:.4f})")
    return summary

