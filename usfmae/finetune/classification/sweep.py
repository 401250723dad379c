"""Recipe sweeps decided on a validation split: the fair way to compare encoders on one task.

Every arm of a comparison (a pretrained encoder, the same architecture from random init, a CNN from
scratch) gets the same search: each candidate recipe is trained on the training split and scored on
the validation split; the winner is chosen on validation alone, and only then is its test score read.
The test split never influences a choice: not the epoch, not the learning rate, not the probe's C.

    cell = finetune_cell(build, train, val, test, classes, cfg, out_dir, seed)  # one recipe, cached
    name = choose({"lr=1e-3": cell, "lr=3e-3": other})     # best validation score; ties go to the first
    probe = probe_sweep((x_tr, y_tr), (x_va, y_va), (x_te, y_te), classes, "malignant")

A cell is cached as <out_dir>/result.json together with the recipe it was trained with, so a killed
sweep re-runs only the cells it had not finished (and any whose recipe changed).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ...eval.probe import linear_probe_scores
from .config import FinetuneConfig
from .train import evaluate, metrics_from_scores, selection_score, train_one

RESULT_NAME = "result.json"
PROBE_CS = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths of the logistic-regression probe


def headline(metrics: dict) -> dict:
    """The figures a comparison reports, from classification_metrics: accuracy, AUROC, macro F1, the positive
    class's precision / recall / F1 (binary tasks, Table 2's figures) and precision / recall / F1 per class."""
    out = {"accuracy": metrics["accuracy"], "auroc": metrics.get("auroc"), "macro_f1": metrics["macro"]["f1"]}
    if "binary" in metrics:
        out.update({k: metrics["binary"][k] for k in ("f1", "precision", "recall")})
    out["per_class"] = {name: {k: row[k] for k in ("precision", "recall", "f1")}
                        for name, row in metrics["per_class"].items()}
    return out


def _write_json(path: Path, data: dict) -> None:
    """Write atomically (temp file then rename): a kill never leaves a half-written cell behind."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def finetune_cell(build: Callable[[], nn.Module], train_set: Dataset, val_set: Dataset, test_set: Dataset,
                  classes: list[str], cfg: FinetuneConfig, out_dir: str | Path, seed: int,
                  log: Callable[[str], None] = lambda message: None) -> dict:
    """Fine-tune one recipe; the epoch is the best on validation (cfg.select_on), the test is read there.

    build: makes the fresh classifier (called only when the cell is not cached). Returns and caches
    {"recipe", "val": headline, "val_score", "test": headline, "best_epoch" (1-based), "epochs",
    "train_images", "seconds"}. The best epoch's weights are kept only until the test is scored.
    """
    out_dir = Path(out_dir)
    recipe = {"config": cfg.model_dump(mode="json"), "seed": seed, "train_images": len(train_set),
              "val_images": len(val_set), "test_images": len(test_set)}
    cached = out_dir / RESULT_NAME
    if cached.is_file():
        result = json.loads(cached.read_text())
        if result.get("recipe") == recipe:
            return result
    t0 = time.time()
    model = build()
    run = train_one(model, train_set, val_set, classes, cfg.model_copy(update={"save_model": True}), out_dir,
                    log=log, seed=seed)
    best = out_dir / "best_model.pt"
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    test = evaluate(model, test_set, classes, cfg.positive_class, batch_size=cfg.batch_size)
    best.unlink()
    result = {"recipe": recipe, "val": headline(run.metrics), "val_score": selection_score(run.metrics, cfg.select_on),
              "test": headline(test), "best_epoch": run.best_epoch + 1, "epochs": len(run.history),
              "train_images": len(train_set), "seconds": round(time.time() - t0, 1)}
    _write_json(cached, result)
    return result


def choose(cells: dict[str, dict], key: str = "val_score") -> str:
    """Name of the cell with the highest validation score; ties go to the first in order."""
    if not cells:
        raise ValueError("choose: no cells to choose from")
    return max(cells, key=lambda name: (cells[name][key], -list(cells).index(name)))


def probe_sweep(train: tuple, val: tuple, test: tuple, classes: Sequence[str], positive_class: str | None,
                Cs: Sequence[float] = PROBE_CS, select_on: str = "macro_f1") -> dict:
    """Linear probe on frozen features, its C chosen on validation; test metrics at that C.

    train / val / test: (features [N, D], labels [N]). Returns {"C", "val_score", "grid": {C: validation
    score}, "val": headline, "test": headline}.
    """
    classes = list(classes)
    val_metrics = {}
    for C in Cs:
        scores = linear_probe_scores(train[0], train[1], val[0], len(classes), C=C)
        val_metrics[C] = metrics_from_scores(np.asarray(val[1]), scores, classes, positive_class)
    grid = {C: selection_score(m, select_on) for C, m in val_metrics.items()}
    best = max(grid, key=lambda C: (grid[C], -list(grid).index(C)))
    scores = linear_probe_scores(train[0], train[1], test[0], len(classes), C=best)
    return {"C": best, "val_score": grid[best], "grid": {str(C): v for C, v in grid.items()},
            "val": headline(val_metrics[best]),
            "test": headline(metrics_from_scores(np.asarray(test[1]), scores, classes, positive_class))}


def mean_std(values: Sequence[float | None]) -> dict:
    """{"mean", "std" (sample, ddof=1; 0 for one value), "n"} over the values that are not None."""
    kept = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if kept.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": round(float(kept.mean()), 4),
            "std": round(float(kept.std(ddof=1)), 4) if kept.size > 1 else 0.0, "n": int(kept.size)}
