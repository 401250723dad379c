"""One fine-tuning run: train on a split, keep the best validation-F1 epoch, report its metrics.

Works in one process or under DDP (torchrun / deepspeed launcher): the training set is split across
ranks by a DistributedSampler (batch_size is per process), gradients are averaged by DDP, the
validation set is split across ranks and its predictions gathered, so every rank sees the same
metrics and takes the same early-stopping decision. Rank 0 alone writes files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ...eval.metrics import classification_metrics
from ...optim import lr_at as schedule_lr
from ...optim import param_groups
from ..distributed import DistEnv, gather_objects
from .config import FinetuneConfig
from .objective import build_loss, build_mixup


@dataclass
class RunResult:
    metrics: dict  # classification_metrics of the best epoch's validation predictions
    best_epoch: int  # 0-based
    history: list[dict]
    y_true: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [N_val] at the best epoch
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [N_val, C] softmax, best epoch


def lr_at(epoch_float: float, cfg: FinetuneConfig) -> float:
    """The shared schedule (usfmae.optim.lr_at) in epochs: warmup_epochs, then cosine to min_lr at the last."""
    return schedule_lr(epoch_float, cfg.epochs, cfg.lr, cfg.min_lr, cfg.warmup_epochs)


def targets_of(dataset: Dataset) -> list[int]:
    """Class index of every sample, without decoding images (datasets expose `targets`)."""
    if isinstance(dataset, Subset):
        parent = targets_of(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    return list(dataset.targets)


def build_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW without decay on biases, norms and tokens; layer-wise lr decay on ViTs only."""
    layer_decay = cfg.layer_decay if isinstance(model, VisionTransformer) else None
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay, layer_decay), lr=cfg.lr)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, env: DistEnv, batch_size: int,
            num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(true labels [N], softmax scores [N, C]) over the whole dataset, each rank scoring every
    world_size-th sample; the result is identical on every rank and in dataset order."""
    was_training = model.training
    model.eval()
    mine = list(range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(Subset(dataset, mine), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    ys, scores = [], []
    for x, y in loader:
        scores.append(torch.softmax(model(x.to(env.device)).float(), dim=-1).cpu().numpy())
        ys.append(y.numpy())
    model.train(was_training)
    parts = gather_objects((mine, ys, scores), env)
    order = np.concatenate([np.asarray(idx, dtype=np.int64) for idx, _, _ in parts])
    y_all = np.concatenate([a for _, y, _ in parts for a in y])
    s_all = np.concatenate([a for _, _, s in parts for a in s])
    inverse = np.argsort(order)
    return y_all[inverse], s_all[inverse]


def metrics_from_scores(y_true: np.ndarray, scores: np.ndarray, classes: list[str],
                        positive_class: str | None) -> dict:
    """classification_metrics of argmax predictions; positive class only for binary tasks."""
    pos = positive_class if len(classes) == 2 else None
    return classification_metrics(y_true, scores.argmax(1), len(classes), class_names=classes,
                                  positive_class=pos, y_score=scores)


def evaluate(model: nn.Module, dataset: Dataset, classes: list[str], positive_class: str | None,
             env: DistEnv | None = None, batch_size: int = 64) -> dict:
    """Metrics of `model` on `dataset` (see metrics_from_scores)."""
    y, scores = predict(model, dataset, env or DistEnv(), batch_size)
    return metrics_from_scores(y, scores, classes, positive_class)


def headline_f1(metrics: dict) -> float:
    """Binary F1 of the positive class for 2 classes, micro F1 otherwise (the paper's Table 2 figures)."""
    return metrics["binary"]["f1"] if "binary" in metrics else metrics["micro"]["f1"]


def selection_score(metrics: dict, select_on: str) -> float:
    """The validation figure that ranks epochs (FinetuneConfig.select_on)."""
    return metrics["macro"]["f1"] if select_on == "macro_f1" else headline_f1(metrics)


def _train_epoch(ddp_model, loader, opt, criterion, mixup, cfg, epoch, env) -> tuple[float, int]:
    """One pass over this rank's share of the training set; returns (summed loss, samples)."""
    ddp_model.train()
    total, n = 0.0, 0
    steps = max(1, len(loader))
    for i, (x, y) in enumerate(loader):
        x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
        if mixup is not None:
            if len(y) % 2:  # timm's batch mixer pairs samples; the odd one out waits for the next epoch
                x, y = x[:-1], y[:-1]
            if len(y) == 0:
                continue
            x, y = mixup(x, y)
        lr = lr_at(epoch + i / steps, cfg)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss = criterion(ddp_model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch + 1}, step {i + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_(ddp_model.parameters(), cfg.clip_grad)
        opt.step()
        total, n = total + loss.item() * len(x), n + len(x)
    return total, n


def train_one(model: nn.Module, train_set: Dataset, val_set: Dataset, classes: list[str], cfg: FinetuneConfig,
              out_dir: Path, log: Callable[[str], None] = print, env: DistEnv | None = None,
              seed: int | None = None) -> RunResult:
    """Fine-tune `model` in place; return the validation metrics and predictions of the best epoch.

    seed: shuffling seed of this run (default cfg.seed). Writes history.json (and best_model.pt when
    cfg.save_model) into out_dir on rank 0.
    """
    env = env or DistEnv(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    seed = cfg.seed if seed is None else seed
    out_dir = Path(out_dir)
    model.to(env.device)

    # Step 1: optimizer on the bare model (its parameter names drive decay and layer groups), then DDP.
    opt = build_optimizer(model, cfg)
    ddp_model = model
    if env.distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None)
    criterion = build_loss(cfg, targets_of(train_set), len(classes)).to(env.device)
    mixup = build_mixup(cfg, len(classes))

    # Step 2: each rank draws its share of a seeded permutation every epoch.
    sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        persistent_workers=cfg.num_workers > 0, pin_memory=env.device.type == "cuda")

    # Step 3: train, validate every epoch, keep the best F1 (cfg.select_on) and stop when it has not improved
    # for a while.
    best: RunResult | None = None
    history: list[dict] = []
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        t0 = time.time()
        local = _train_epoch(ddp_model, loader, opt, criterion, mixup, cfg, epoch, env)
        loss_sum, count = map(sum, zip(*gather_objects(local, env)))
        y, scores = predict(model, val_set, env, cfg.batch_size, cfg.num_workers)
        metrics = metrics_from_scores(y, scores, classes, cfg.positive_class)
        f1 = headline_f1(metrics)
        history.append({"epoch": epoch, "train_loss": loss_sum / max(count, 1), "val_f1": f1,
                        "val_macro_f1": metrics["macro"]["f1"], "val_accuracy": metrics["accuracy"],
                        "val_auroc": metrics.get("auroc"),
                        "lr": lr_at(epoch + 1, cfg), "seconds": round(time.time() - t0, 2)})
        if env.is_main:
            log(f"[finetune] epoch {epoch + 1}/{cfg.epochs} loss {history[-1]['train_loss']:.4f} "
                f"val F1 {f1:.4f} acc {metrics['accuracy']:.4f}")
        if best is None or selection_score(metrics, cfg.select_on) > selection_score(best.metrics, cfg.select_on):
            best = RunResult(metrics, epoch, history, y, scores)
            if cfg.save_model and env.is_main:
                torch.save(model.state_dict(), out_dir / "best_model.pt")
        elif cfg.patience and epoch - best.best_epoch >= cfg.patience:
            if env.is_main:
                log(f"[finetune] early stop: no better validation {cfg.select_on} for {cfg.patience} epochs")
            break
    if env.is_main:
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    best.history = history
    return best
