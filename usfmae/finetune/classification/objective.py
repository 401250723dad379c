"""What fine-tuning minimises: (class-weighted) cross-entropy on hard or mixed targets, and the mixer."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup

from .config import FinetuneConfig


def class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights [C], N / (C * count_c): 1 for every class of a balanced set."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


class ClassificationLoss(nn.Module):
    """Cross-entropy on class indices [N] or soft targets [N, C] (mixup/cutmix), optionally class-weighted.

    Soft targets use the weighted mean -sum_c w_c t_c log p_c / sum_c w_c t_c over the batch, which
    reduces to PyTorch's weighted cross-entropy when the targets are one-hot.
    """

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)
        log_p = F.log_softmax(logits.float(), dim=-1)  # [N, C]
        w = torch.ones_like(log_p[0]) if self.weight is None else self.weight
        per_sample = -(target * w * log_p).sum(-1)  # [N]
        return per_sample.sum() / (target * w).sum().clamp(min=1e-12)


def build_mixup(cfg: FinetuneConfig, num_classes: int) -> Mixup | None:
    """timm's Mixup/CutMix batch mixer (it also applies label smoothing to the soft targets), or None."""
    if not cfg.mixing:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob, switch_prob=0.5,
                 mode="batch", label_smoothing=cfg.label_smoothing, num_classes=num_classes)


def build_loss(cfg: FinetuneConfig, train_targets: Sequence[int], num_classes: int) -> ClassificationLoss:
    """The loss for cfg: smoothing moves into the mixer when batches are mixed."""
    weight = class_weights(train_targets, num_classes) if cfg.class_weighted else None
    return ClassificationLoss(weight, 0.0 if cfg.mixing else cfg.label_smoothing)
