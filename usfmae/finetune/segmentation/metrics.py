"""Binary segmentation metrics, in numpy only: Dice and IoU per image, their means, and pooled figures.

    Dice = 2|P ∩ T| / (|P| + |T|)        IoU = |P ∩ T| / |P ∪ T|

A prediction is foreground where its probability is >= the threshold (0.5 by default). An image whose
prediction and ground truth are both empty scores 1 on both (nothing to find, nothing found); the
pooled figures sum the counts over all images first, so large lesions weigh more there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def binarize(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Probabilities -> bool foreground (probability >= threshold)."""
    return np.asarray(probs) >= threshold


def _counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """(intersection, |pred|, |target|) of two bool arrays of one shape."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {target.shape}")
    return int(np.logical_and(pred, target).sum()), int(pred.sum()), int(target.sum())


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(Dice, IoU) of one binary prediction against its ground truth; (1, 1) when both are empty."""
    inter, p, t = _counts(pred, target)
    if p + t == 0:
        return 1.0, 1.0
    return 2.0 * inter / (p + t), inter / (p + t - inter)


def segmentation_metrics(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                         names: Sequence[str] | None = None) -> dict:
    """Per-image Dice and IoU, their means, and pooled Dice/IoU, from bool masks (each pair one shape).

    Images may differ in size between pairs. Plain Python values only (ready for JSON).
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} ground-truth masks")
    if not len(preds):
        raise ValueError("no masks to score")
    names = list(names) if names is not None else [str(i) for i in range(len(preds))]
    per_image, inter, p_sum, t_sum = [], 0, 0, 0
    for name, pred, target in zip(names, preds, targets):
        dice, iou = dice_iou(pred, target)
        i, p, t = _counts(pred, target)
        inter, p_sum, t_sum = inter + i, p_sum + p, t_sum + t
        per_image.append({"name": name, "dice": dice, "iou": iou, "pred_pixels": p, "true_pixels": t})
    dices = np.array([row["dice"] for row in per_image])
    ious = np.array([row["iou"] for row in per_image])
    pooled_dice = 2.0 * inter / (p_sum + t_sum) if p_sum + t_sum else 1.0
    pooled_iou = inter / (p_sum + t_sum - inter) if p_sum + t_sum else 1.0
    return {"dice": float(dices.mean()), "iou": float(ious.mean()),
            "dice_std": float(dices.std()), "iou_std": float(ious.std()),
            "dice_pooled": pooled_dice, "iou_pooled": pooled_iou,
            "num_images": len(per_image), "per_image": per_image}
