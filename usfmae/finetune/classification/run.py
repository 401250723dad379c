"""A whole fine-tuning job: data -> protocol folds -> one train_one per fold -> pooled metrics and outputs.

    summary = run_finetune(cfg, env)       # what launch/finetune.py calls on every rank

Each fold builds a fresh classifier from cfg (same checkpoint, fresh head), seeded by the fold runner.
Out-of-fold predictions of all folds are pooled into the top-level metrics; per-fold metrics with
their mean and std sit beside them (usfmae.finetune.classification.outputs documents the files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ...data.labelled import transforms_for
from ...eval.folds import FoldSpec, run_folds
from ...eval.metrics import format_table
from ..distributed import DistEnv, barrier
from .config import FinetuneConfig
from .models import build_classifier
from .outputs import write_run
from .protocol import adapt_raw, open_labelled, plan_folds, positive_class, subset
from .train import headline_f1, metrics_from_scores, train_one


def resolve_data(cfg: FinetuneConfig, env: DistEnv) -> Path:
    """cfg.data, or the CSV that cfg.dataset's adapter makes from cfg.raw (rank 0 writes it)."""
    if cfg.raw is not None:
        out_csv = Path(cfg.output_dir) / f"{cfg.dataset}.csv"
        if env.is_main:
            adapt_raw(cfg, cfg.output_dir)
        barrier(env)
        return out_csv
    if cfg.data is None:
        raise ValueError("no data: give data (a class-folder tree or a CSV) or dataset + raw")
    return Path(cfg.data)


def run_finetune(cfg: FinetuneConfig, env: DistEnv | None = None, log: Callable[[str], None] = print) -> dict:
    """Run cfg's protocol; rank 0 writes the outputs. Returns the summary (metrics.json's content)."""
    env = env or DistEnv()
    say = log if env.is_main else (lambda message: None)
    out = Path(cfg.output_dir)

    # Step 1: data, classes, the binary task's positive class, and the folds.
    data_path = resolve_data(cfg, env)
    data = open_labelled(data_path, cfg)
    classes = list(data.classes)
    cfg = cfg.model_copy(update={"positive_class": positive_class(cfg, classes)})
    protocol, specs = plan_folds(cfg, data)
    counts = np.bincount(data.targets, minlength=len(classes)).tolist()
    say(f"[finetune] {len(data)} images, {len(classes)} classes {dict(zip(classes, counts))}; protocol {protocol}: "
        + ", ".join(f"{s.name} {s.train_idx.size}/{s.val_idx.size}" for s in specs) + " (train/val)")

    # Step 2: one fine-tuning run per fold, each from a fresh model.
    predictions: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    loading: list[str] = []

    def train_eval(spec: FoldSpec) -> dict:
        model, size, summary = build_classifier(cfg, len(classes))
        if not loading:
            loading.append(summary)
            say(summary)
        train_set = subset(data, spec.train_idx, transforms_for(True, size, cfg.augment))
        val_set = subset(data, spec.val_idx, transforms_for(False, size))
        fold_dir = out / spec.name if len(specs) > 1 else out
        say(f"[finetune] {spec.name}: {len(train_set)} train / {len(val_set)} val images, seed {spec.seed}, "
            f"input {size}px, {env.world_size} process(es)")
        result = train_one(model, train_set, val_set, classes, cfg, fold_dir, say, env, seed=spec.seed)
        predictions.append((spec.name, spec.val_idx, result.y_true, result.scores))
        say(f"[finetune] {spec.name}: best epoch {result.best_epoch + 1}, F1 {headline_f1(result.metrics):.4f}")
        return {**result.metrics, "best_epoch": result.best_epoch}

    folds = run_folds(specs, train_eval)

    # Step 3: pool the out-of-fold predictions; record protocol and seeds beside the per-fold figures.
    y = np.concatenate([p[2] for p in predictions])
    scores = np.concatenate([p[3] for p in predictions])
    summary = {
        **metrics_from_scores(y, scores, classes, cfg.positive_class),
        "model": cfg.model,
        "dataset": cfg.dataset or data_path.stem,
        "data": str(data_path),
        "protocol": protocol,
        "seed": cfg.seed,
        "world_size": env.world_size,
        "loading": loading[0],
        **folds,
    }
    if len(specs) == 1:
        summary.update(best_epoch=folds["folds"][0]["metrics"]["best_epoch"],
                       n_train=int(specs[0].train_idx.size), n_val=int(specs[0].val_idx.size))
    if env.is_main:
        table = write_run(out, summary, data.samples, predictions)
        say(format_table(summary))
        say("\n" + table)
        key = "binary.f1" if "binary" in summary else "micro.f1"
        figure = (f"{folds['mean'][key]:.4f} ± {folds['std'][key]:.4f} over {len(specs)} folds "
                  f"(pooled {headline_f1(summary):.4f})" if len(specs) > 1
                  else f"{headline_f1(summary):.4f} (best epoch {summary['best_epoch'] + 1})")
        say(f"[finetune] F1 {figure}; wrote {out / 'metrics.json'}")
    barrier(env)
    return summary

